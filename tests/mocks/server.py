"""What the three mock providers share: an HTTP/1.1 server on 127.0.0.1, the answer each request gets (driven by the
magic words of tests/mocks/providers.py), streaming, and checking a body against the official SDK's request types.

Each provider module (openai_api, anthropic_api, gemini_api) supplies a ``ProviderApi``: its routes, credentials,
request validation, error envelope and response bodies. ``MockServer`` does the rest.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from pydantic import ValidationError

USAGE_IN = 11
USAGE_OUT = 7
REASONING_TOKENS = 3
COUNT_TOKENS = 5
THINKING_TEXT = "Let me think about this."
# Pacing of the SLOWSTREAM and LONGSTREAM magic words: these sleeps are the behaviour under test (a provider that
# produces slowly), not synchronisation.
SLOW_STREAM_DELAY = 0.3
LONG_STREAM_SECONDS = 8.0
# How long a held DROPSTREAM waits for the test to say "cut now" before cutting anyway.
HOLD_DROP_TIMEOUT = 30.0


@dataclass
class Received:
    """One request exactly as the mock received it."""

    method: str
    path: str  # including the query string
    headers: dict[str, str]  # lower-case names
    body: dict | None
    raw: bytes
    status: int | None = None  # status the mock answered
    stream_started_at: float | None = None  # time.monotonic() when the first stream event was written
    stream_finished_at: float | None = None  # time.monotonic() after the last event (or the drop)
    thought_signatures: list[str] = field(default_factory=list)  # Gemini: thoughtSignature values of the request


@dataclass
class Fault:
    """A failure the test makes this mock show, whatever the request says (``MockServer.set_fault``): after the
    request is received and checked, sleep ``sleep`` seconds, then cut the connection (``drop``) or answer ``status``
    with the provider's own error (as the ERROR magic word does; 429 adds retry-after: 7), else answer normally. Each
    request is hit with probability ``rate``; ``times`` limits how many are (None: until cleared)."""

    status: int | None = None
    sleep: float = 0.0
    drop: bool = False
    rate: float = 1.0
    times: int | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        etype: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: list | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.details = details


@dataclass
class Conv:
    """What the validator extracted from a request: enough to decide the answer."""

    model: str
    stream: bool
    include_usage: bool = False
    last_user_text: str = ""
    tool_results: list[str] | None = None  # set when the last user turn carries tool results
    tool_names: list[str] = field(default_factory=list)  # declared function tools (empty if tool choice is none)
    stop_sequences: list[str] = field(default_factory=list)
    sse: bool = True  # Gemini streams: SSE framing (?alt=sse) or one JSON array
    thinking: bool = False  # reasoning asked for
    json_schema: dict | None = None  # structured output schema
    json: bool = False  # JSON output asked for
    forced_tool: str | None = None  # the tool the request forces
    n: int = 1  # candidates asked for
    count_tokens: bool = False
    embed: Any = None  # an embeddings request: what tests/mocks/embeddings.py answers


@dataclass
class Answer:
    text: str | None
    calls: list[tuple[str, dict]]
    finish: str  # stop | length | tool | stop_sequence | refusal
    thinking: bool = False


# --------------------------------------------------------------------------------------------------------------
# small helpers


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def split(s: str, n: int) -> list[str]:
    """Split s into up to n non-empty pieces of similar length."""
    if not s:
        return [s]
    n = max(1, min(n, len(s)))
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def b64ok(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    t = s.strip()
    try:
        if "-" in t or "_" in t:
            base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
        else:
            base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def camel(k: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k)


def snake(k: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", k).lower()


def flag(text: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", text) is not None


def sample(schema: Any) -> Any:
    """A JSON value that matches a (simple) JSON Schema."""
    if not isinstance(schema, dict):
        return "mock"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return sample(schema[key][0])
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    t = t.lower() if isinstance(t, str) else t
    if t == "object" or "properties" in schema:
        return {k: sample(v) for k, v in (schema.get("properties") or {}).items()}
    return {"array": [], "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(t, "mock")


def reject_foreign_credentials(headers: dict[str, str], names: tuple[str, ...], allowed: dict[str, str]) -> None:
    """Credentials meant for another provider must never arrive here (the gateway strips client credentials).
    ``allowed`` maps a header name to the one value of it this provider takes as its own."""
    for name in names:
        if name in headers and headers[name] != allowed.get(name):
            raise ApiError(400, f"foreign credential header {name}")


# --------------------------------------------------------------------------------------------------------------
# the official SDKs' request types


class SdkTypeError(Exception):
    """A body the official SDK's request types refuse: where, and what they say."""

    def __init__(self, loc: str, message: str, type_name: str) -> None:
        super().__init__(f"{loc}: {message}" if loc else message)
        self.loc = loc
        self.message = message
        self.type_name = type_name


def _best_error(err: ValidationError, prefix: tuple[Any, ...]) -> tuple[str, str]:
    """The most telling of pydantic's errors: for a union it reports every member; the one that got deepest into the
    value is the member the body meant."""
    errors = err.errors(include_url=False)
    best = max(errors, key=lambda e: len(e["loc"]))
    loc = ".".join(str(x) for x in (*prefix, *best["loc"]) if not str(x)[:1].isupper())  # drop union member names
    return loc, best["msg"]


def check_sdk_types(validate: Callable[[], Any], type_name: str) -> None:
    """Run a pydantic validation of a request body against an SDK type, including the lazily checked parts.

    The openai and anthropic request types are TypedDicts whose lists are ``Iterable[...]``: pydantic checks their items
    only while they are iterated, so every iterator in the result is drained here."""
    try:
        result = validate()
    except ValidationError as err:
        raise SdkTypeError(*_best_error(err, ()), type_name) from None
    _drain(result, (), type_name)


def _drain(value: Any, path: tuple[Any, ...], type_name: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _drain(v, (*path, k), type_name)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _drain(v, (*path, i), type_name)
    elif isinstance(value, Iterator):
        i = 0
        while True:
            try:
                item = next(value)
            except StopIteration:
                return
            except ValidationError as err:  # its locations start with the item's index
                raise SdkTypeError(*_best_error(err, path), type_name) from None
            _drain(item, (*path, i), type_name)
            i += 1


# --------------------------------------------------------------------------------------------------------------
# what each provider module supplies


class ProviderApi:
    """One provider's wire protocol. The methods raise ``ApiError`` to answer with the provider's error envelope."""

    kind = ""
    stop_sequence_finish = False  # does the API report "stopped at a stop sequence" as its own finish reason?
    stream_content_type = "text/event-stream"  # what a streamed answer says it is (Bedrock: an AWS event stream)

    def base_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def route(self, method: str, path: str) -> str:
        """The endpoint a request is for (a name the other methods understand), or a 404 ApiError."""
        raise NotImplementedError

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        raise NotImplementedError

    def bad_json(self) -> ApiError:
        """What the API answers a body that is not a JSON object."""
        raise NotImplementedError

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        raise NotImplementedError

    def error_body(self, e: ApiError, seq: int) -> dict:
        raise NotImplementedError

    def magic_error(self, status: int, model: str) -> ApiError:
        raise NotImplementedError

    def id_headers(self, seq: int) -> dict[str, str]:
        raise NotImplementedError

    def count_tokens_body(self) -> dict:
        raise NotImplementedError

    def embed_body(self, conv: Conv) -> dict:
        """The answer to an embeddings request (``conv.embed``)."""
        raise NotImplementedError

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        """The non-streaming answer."""
        raise NotImplementedError

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        """The streaming answer, one framed SSE event each."""
        raise NotImplementedError

    def unframed(self, events: list[bytes]) -> bytes:
        """A stream the client asked for without SSE framing (Gemini without ?alt=sse)."""
        raise NotImplementedError

    def stream_error_event(self) -> bytes:
        """What the provider sends when it fails after the stream started (e.g. overloaded mid-generation)."""
        raise NotImplementedError

    def first_text_event(self, events: list[bytes]) -> int:
        """Index of the first event that carries answer text (DROPSTREAM cuts the stream right after it)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------
# HTTP plumbing

_MAGIC_ERROR = re.compile(r"\bERROR (\d{3})\b")
_MAGIC_SLEEP = re.compile(r"\bSLEEP (\d+(?:\.\d+)?)\b")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # No Nagle: headers, body and every stream event go out at once (else ~40 ms delayed-ACK stalls).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.conns.discard(self.connection)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _any(self) -> None:
        raw = self._read_body()
        self.server.mock.dispatch(self, raw)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    def send_body(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # one write for head + body (what end_headers() would do, plus the body)
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        self.wfile.write(head + body)
        self.wfile.flush()

    def start_stream(self, headers: dict[str, str], content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, mock: MockServer) -> None:
        self.mock = mock
        self.conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)


class MockServer:
    """A strict fake of one provider API on a free port of 127.0.0.1, in a daemon thread."""

    def __init__(self, api: ProviderApi, api_key: str) -> None:
        self.api = api
        self.kind = api.kind
        self.api_key = api_key
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._drop_gates: list[threading.Event] = []
        self._fault: Fault | None = None
        self._random = random.Random(1234)
        self._server: _Server | None = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # ---- public API

    @property
    def base_url(self) -> str:
        return self.api.base_url(self.port)

    def start(self) -> MockServer:
        if self._server is None:
            self._server = _Server(self)
            self.port = self._server.server_address[1]
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                name=f"mock-{self.kind}-{self.port}",
            )  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        if self._thread is not None:
            srv.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        for c in list(srv.conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        srv.server_close()

    def last(self) -> Received:
        with self._lock:
            if not self.requests:
                raise AssertionError(f"mock {self.kind} received no request")
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def set_fault(self, fault: Fault | None) -> None:
        """Fail the requests that follow as ``fault`` says (None: answer normally again)."""
        with self._lock:
            self._fault = fault

    def _take_fault(self) -> Fault | None:
        with self._lock:
            f = self._fault
            if f is None or (f.rate < 1.0 and self._random.random() >= f.rate):
                return None
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    self._fault = None
            return f

    def hold_drop(self) -> threading.Event:
        """The next DROPSTREAM stream stops after its first text event and waits, connection open, until the returned
        event is set (the test saw the text arrive); then the connection is cut."""
        gate = threading.Event()
        with self._lock:
            self._drop_gates.append(gate)
        return gate

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MockProvider({self.kind!r}, port={self.port})"

    # ---- request handling

    def dispatch(self, h: _Handler, raw: bytes) -> None:
        url = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        body = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        rec = Received(method=h.command, path=h.path, headers=headers, body=body, raw=raw)
        with self._lock:
            self.requests.append(rec)
            self._seq += 1
            seq = self._seq
        try:
            conv = self._validate(h.command, url.path, parse_qs(url.query), headers, body, rec)
            self._answer(h, rec, conv, seq)
        except ApiError as e:
            rec.status = e.status
            headers = {**e.headers, **self.api.id_headers(seq)}
            h.send_body(e.status, dumps(self.api.error_body(e, seq)), "application/json", headers)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _validate(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: dict | None,
        rec: Received,
    ) -> Conv:  # fmt: skip
        endpoint = self.api.route(method, path)
        self.api.authenticate(headers, query, self.api_key)
        if body is None:
            raise self.api.bad_json()
        return self.api.validate(endpoint, body, query, rec)

    # ---- answering

    def _decide(self, conv: Conv) -> Answer:
        ans = self._decide_content(conv)
        ans.thinking = conv.thinking
        return ans

    def _decide_content(self, conv: Conv) -> Answer:
        text = conv.last_user_text
        if flag(text, "LENGTH"):
            full = f"Hello from mock {self.kind}. You said: {text}"
            return Answer(full[:24], [], "length")
        if flag(text, "REFUSE"):
            return Answer("I can't help with that.", [], "refusal")
        if flag(text, "HUGE"):  # a 200 KB answer, for response-size limits
            return Answer("x" * 200_000, [], "stop")
        if conv.tool_results is not None:
            return Answer("Tool results: " + " | ".join(conv.tool_results), [], "stop")
        if conv.tool_names:
            name = conv.forced_tool or conv.tool_names[0]
            calls = [(name, {"city": "Paris"})]
            if flag(text, "PARALLEL"):
                calls.append((name, {"city": "Tokyo"}))
            return Answer(None, calls, "tool")
        if conv.json:
            value = sample(conv.json_schema) if conv.json_schema else {"answer": "mock"}
            return Answer(dumps(value).decode(), [], "stop")
        finish = "stop_sequence" if flag(text, "STOPSEQ") and self.api.stop_sequence_finish else "stop"
        return Answer(f"Hello from mock {self.kind}. You said: {text}", [], finish)

    def _answer(self, h: _Handler, rec: Received, conv: Conv, seq: int) -> None:
        fault = self._take_fault()
        if fault is not None:
            if fault.sleep:
                time.sleep(fault.sleep)  # a provider that hangs: the behaviour under test
            if fault.drop:
                h.drop()
                return
            if fault.status is not None:
                raise self.api.magic_error(fault.status, conv.model)
        text = conv.last_user_text
        m = _MAGIC_SLEEP.search(text)
        if m:  # a provider slow to answer: the sleep is the behaviour under test
            time.sleep(float(m.group(1)))
        m = _MAGIC_ERROR.search(text)
        if m:
            raise self.api.magic_error(int(m.group(1)), conv.model)
        if flag(text, "HTML200"):  # a captive portal or misrouted proxy answering 200 with a web page
            rec.status = 200
            h.send_body(200, b"<!DOCTYPE html><html><body>Please sign in</body></html>", "text/html")
            return
        if flag(text, "HTML500"):
            rec.status = 500
            page = (
                b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
                b"<body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></body></html>\n"
            )
            h.send_body(500, page, "text/html; charset=utf-8")
            return
        if conv.count_tokens:
            rec.status = 200
            h.send_body(200, dumps(self.api.count_tokens_body()), "application/json", self.api.id_headers(seq))
            return
        if conv.embed is not None:
            rec.status = 200
            h.send_body(200, dumps(self.api.embed_body(conv)), "application/json", self.api.id_headers(seq))
            return
        ans = self._decide(conv)
        rec.status = 200
        if not conv.stream:
            data = dumps(self.api.full(conv, ans, seq))
            if flag(text, "BADJSON"):
                data = data[: len(data) // 2]
            h.send_body(200, data, "application/json", self.api.id_headers(seq))
            return
        events = self.api.events(conv, ans, seq)
        if not conv.sse:
            h.send_body(200, self.api.unframed(events), "application/json", self.api.id_headers(seq))
            return
        if flag(text, "BADJSON"):
            events = [events[0][: len(events[0]) // 2] + b"\n\n"]
        if flag(text, "STREAMERROR"):
            events = [*events[:2], self.api.stream_error_event()]
        slow = flag(text, "SLOWSTREAM")
        long_stream = flag(text, "LONGSTREAM")
        cut_after = self.api.first_text_event(events) if flag(text, "DROPSTREAM") else None
        h.start_stream(self.api.id_headers(seq), self.api.stream_content_type)
        try:
            for i, ev in enumerate(events):
                if i and slow:
                    time.sleep(SLOW_STREAM_DELAY)  # pacing: the behaviour under test
                elif i and long_stream:
                    time.sleep(LONG_STREAM_SECONDS / max(len(events) - 1, 1))  # pacing: the behaviour under test
                h.write_chunk(ev)
                if i == 0:
                    rec.stream_started_at = time.monotonic()
                if i == cut_after:
                    with self._lock:
                        gate = self._drop_gates.pop(0) if self._drop_gates else None
                    if gate is not None:
                        gate.wait(HOLD_DROP_TIMEOUT)
                    rec.stream_finished_at = time.monotonic()
                    h.drop()
                    return
            rec.stream_finished_at = time.monotonic()
            h.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
