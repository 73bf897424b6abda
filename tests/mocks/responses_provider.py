"""A strict mock of OpenAI's Responses API (``POST /v1/responses`` and its stored-response endpoints).

Like the other mock providers (``tests/mocks/providers.py``) it is a stdlib ThreadingHTTPServer on 127.0.0.1 in a
daemon thread, answers errors in the real error envelope, and produces deterministic answers driven by the request:

    default            one ``message`` item "Hello from mock responses. You said: {text}", usage input 11 / output 7
    function tools     a ``function_call`` to the first declared (or the forced) tool with {"city": "Paris"};
                       "PARALLEL" adds {"city": "Tokyo"}
    tool outputs       when the input ends in ``function_call_output`` items: text "Tool results: r1 | r2"
    reasoning          (``reasoning.effort`` set and not "none") a ``reasoning`` item first, with a summary when
                       ``reasoning.summary`` is set and ``encrypted_content`` when ``include`` asks for
                       ``reasoning.encrypted_content``; usage reports REASONING_TOKENS reasoning tokens
    JSON output        (``text.format`` json_schema / json_object) the text is a JSON value built from the schema
    ERROR <status>     that status with OpenAI's error body (429 adds retry-after: 7)
    SLEEP <seconds>    sleep before answering
    LENGTH             ``status: incomplete``, ``incomplete_details.reason: max_output_tokens``
    REFUSE             a ``refusal`` content part instead of text
    HTML500            500 with an HTML page
    BADJSON            200 with truncated JSON (streams: one event with truncated JSON data)
    STREAMERROR        streams: 3 events, then an ``error`` event, clean end (what OpenAI sends when it fails mid-way)
    FAILSTREAM         streams: 3 events, then ``response.failed`` with ``error.code: server_error``
    DROPSTREAM         streams: 2 events, then the connection is closed without ``response.completed``
    SLOWSTREAM         0.3 s between stream events

Validation follows the real API and the installed ``openai`` SDK's request types: every field of the body and of every
input item, content part and tool is checked against the SDK's TypedDicts (``response_create_params``,
``response_input_item_param``, ``tool_param``): unknown parameters, missing required ones, wrong types and values not
in a ``Literal`` are refused with OpenAI's messages and codes. On top of the types, as the API does:

- a ``function_call_output`` must answer a ``function_call`` earlier in the conversation (input or the previous
  responses), and every ``function_call`` in the input needs its output;
- ``reasoning`` items must carry ``encrypted_content`` this mock issued (else 400 ``invalid_encrypted_content``) or
  name a stored item; ``item_reference`` must name a stored item;
- ``previous_response_id`` must name a stored response (else 400 ``previous_response_not_found``);
- ``max_output_tokens`` >= 16, ``temperature`` 0..2, ``top_p`` 0..1, ``stream_options`` only with ``stream``.

Responses are stored unless ``store`` is false (the API's default is true): ``GET``/``DELETE /v1/responses/{id}``
and ``GET /v1/responses/{id}/input_items`` serve them. ``POST /v1/responses/input_tokens`` counts COUNT_TOKENS.
Streams use the real event grammar (``event:`` lines, ``sequence_number``, ``output_index``, ``content_index``,
``item_id``, ``obfuscation`` on deltas unless ``stream_options.include_obfuscation`` is false).
"""

from __future__ import annotations

import base64
import collections.abc
import contextlib
import hashlib
import hmac
import re
import socket
import threading
import time
import types
import typing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import typing_extensions
from openai.types.responses import input_token_count_params, response_create_params

__all__ = ["COUNT_TOKENS", "REASONING_TOKENS", "ResponsesMock", "encrypted_for"]

USAGE_IN = 11
USAGE_OUT = 7
REASONING_TOKENS = 3
COUNT_TOKENS = 5
THINKING_TEXT = "Let me think about this."
_SECRET = b"mock-responses-reasoning-key"
_SLOW_STREAM_DELAY = 0.3
_MAGIC_ERROR = re.compile(r"\bERROR (\d{3})\b")
_MAGIC_SLEEP = re.compile(r"\bSLEEP (\d+(?:\.\d+)?)\b")
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_FN_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def encrypted_for(item_id: str, text: str) -> str:
    """The ``encrypted_content`` this mock issues for a reasoning item (verifiable, like OpenAI's, only by it)."""
    payload = orjson.dumps({"id": item_id, "text": text})
    mac = hmac.new(_SECRET, payload, hashlib.sha256).digest()[:12]
    return "gAAAAAB" + base64.urlsafe_b64encode(mac + payload).decode()


def _verify_encrypted(value: str) -> bool:
    if not value.startswith("gAAAAAB"):
        return False
    try:
        raw = base64.urlsafe_b64decode(value[7:])
    except ValueError:
        return False
    mac, payload = raw[:12], raw[12:]
    return hmac.compare_digest(mac, hmac.new(_SECRET, payload, hashlib.sha256).digest()[:12])


@dataclass
class Received:
    """One request exactly as the mock received it (the same fields as the other mocks' ``Received``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    raw: bytes
    status: int | None = None
    stream_started_at: float | None = None
    stream_finished_at: float | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        etype: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype
        self.param = param
        self.code = code
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------------------------------------
# Validation against the SDK's TypedDicts
# ---------------------------------------------------------------------------------------------------------------------
_HINTS: dict[type, dict[str, tuple[Any, bool]]] = {}
_SEQ = (list, collections.abc.Iterable, collections.abc.Sequence)


def _fields(td: type) -> dict[str, tuple[Any, bool]]:
    """A TypedDict's fields: name -> (type, required). ``Required[...]`` is read from the hints themselves: with
    postponed annotations the class's ``__required_keys__`` does not know it."""
    found = _HINTS.get(td)
    if found is None:
        hints = typing_extensions.get_type_hints(td, include_extras=True)
        found = {}
        for name, tp in hints.items():
            origin = typing_extensions.get_origin(tp)
            required = origin is typing_extensions.Required or origin is getattr(typing, "Required", None)
            if origin in (typing_extensions.Required, typing_extensions.NotRequired):
                tp = typing_extensions.get_args(tp)[0]
            found[name] = (tp, required)
        _HINTS[td] = found
    return found


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing_extensions.is_typeddict(tp)


def _tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _expected(tp: Any) -> str:
    tp = _strip(tp)
    origin = typing_extensions.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if origin in _SEQ or _is_seq(tp):
        return "an array"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing_extensions.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        kinds = []
        for a in typing_extensions.get_args(tp):
            if a is type(None):
                continue
            e = _expected(a)
            if e not in kinds:
                kinds.append(e)
        return "one of " + " or ".join(kinds)
    return "an object"


def _strip(tp: Any) -> Any:
    while typing_extensions.get_origin(tp) is typing_extensions.Annotated:
        tp = typing_extensions.get_args(tp)[0]
    return tp


def _is_seq(tp: Any) -> bool:
    origin = typing_extensions.get_origin(tp) or tp
    return getattr(origin, "__name__", "") == "SequenceNotStr"


def _invalid_type(path: str, tp: Any, v: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{path}': expected {_expected(tp)}, but got {_tname(v)} instead.",
        param=path,
        code="invalid_type",
    )


def _check(v: Any, tp: Any, path: str) -> None:
    """``v`` must be a value of the SDK type ``tp`` (unknown object keys refused)."""
    tp = _strip(tp)
    if tp is Any or tp is object:
        return
    if tp is type(None):
        if v is not None:
            raise _invalid_type(path, tp, v)
        return
    if tp is str:
        if not isinstance(v, str):
            raise _invalid_type(path, tp, v)
        return
    if tp is bool:
        if not isinstance(v, bool):
            raise _invalid_type(path, tp, v)
        return
    if tp is int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise _invalid_type(path, tp, v)
        return
    if tp is float:
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise _invalid_type(path, tp, v)
        return
    origin = typing_extensions.get_origin(tp)
    args = typing_extensions.get_args(tp)
    if origin is typing.Literal:
        if v not in args or isinstance(v, bool) != any(isinstance(a, bool) for a in args):
            allowed = ", ".join(f"'{a}'" for a in args)
            raise ApiError(
                400,
                f"Invalid value: '{v}'. Supported values are: {allowed}.",
                param=path,
                code="invalid_value",
            )
        return
    if origin in (typing.Union, types.UnionType):
        _check_union(v, args, path)
        return
    if _is_typeddict(tp):
        _check_obj(v, tp, path)
        return
    if origin in _SEQ or _is_seq(tp):
        if not isinstance(v, list):
            raise _invalid_type(path, tp, v)
        inner = args[0] if args else Any
        for i, item in enumerate(v):
            _check(item, inner, f"{path}[{i}]")
        return
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(v, dict):
            raise _invalid_type(path, tp, v)
        return
    if isinstance(tp, type) and not isinstance(v, tp):  # a plain class we do not know: be lenient on unknown
        raise _invalid_type(path, tp, v)


def _check_union(v: Any, members: tuple[Any, ...], path: str) -> None:
    if v is None:
        if type(None) in members:
            return
        raise _invalid_type(path, typing.Union[members], v)  # noqa: UP007
    members = tuple(m for m in members if m is not type(None))
    dicts = [m for m in (_strip(m) for m in members) if _is_typeddict(m)]
    if isinstance(v, dict) and dicts:
        kind = v.get("type")
        # The member whose ``type`` literal names this object decides (discriminated unions)
        named = [m for m in dicts if kind is not None and kind in _literal_values(m, "type")]
        candidates = named or [m for m in dicts if "type" not in v or not _literal_values(m, "type")]
        if not candidates:
            if "type" in v:
                values = sorted({x for m in dicts for x in _literal_values(m, "type")})
                allowed = ", ".join(f"'{x}'" for x in values)
                raise ApiError(
                    400,
                    f"Invalid value: '{kind}'. Supported values are: {allowed}.",
                    param=f"{path}.type",
                    code="invalid_value",
                )
            candidates = dicts
        first: ApiError | None = None
        for m in candidates:
            try:
                _check_obj(v, m, path)
                return
            except ApiError as e:
                first = first or e
        assert first is not None
        raise first
    first = None
    for m in members:
        if _is_typeddict(_strip(m)):
            continue
        try:
            _check(v, m, path)
            return
        except ApiError as e:
            if first is None and _same_kind(v, m):
                first = e  # the member of the value's own kind says best what is wrong inside it
    raise first or _invalid_type(path, typing.Union[members], v)  # noqa: UP007


def _same_kind(v: Any, tp: Any) -> bool:
    tp = _strip(tp)
    origin = typing_extensions.get_origin(tp)
    if origin is typing.Literal:
        return any(type(a) is type(v) for a in typing_extensions.get_args(tp))
    if origin in _SEQ or _is_seq(tp):
        return isinstance(v, list)
    return isinstance(tp, type) and isinstance(v, tp)


def _literal_values(td: type, key: str) -> tuple[Any, ...]:
    f = _fields(td).get(key)
    if f is None:
        return ()
    tp = _strip(f[0])
    if typing_extensions.get_origin(tp) in (typing.Union, types.UnionType):
        out: tuple[Any, ...] = ()
        for a in typing_extensions.get_args(tp):
            if typing_extensions.get_origin(a) is typing.Literal:
                out += typing_extensions.get_args(a)
        return out
    return typing_extensions.get_args(tp) if typing_extensions.get_origin(tp) is typing.Literal else ()


def _check_obj(v: Any, td: type, path: str) -> None:
    if not isinstance(v, dict):
        raise _invalid_type(path, td, v)
    fields = _fields(td)
    prefix = f"{path}." if path else ""
    for key in v:
        if key not in fields:
            where = f"{prefix}{key}"
            raise ApiError(400, f"Unknown parameter: '{where}'.", param=where, code="unknown_parameter")
    for key, (tp, required) in fields.items():
        if key not in v:
            if required:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{prefix}{key}'.",
                    param=f"{prefix}{key}",
                    code="missing_required_parameter",
                )
            continue
        _check(v[key], tp, f"{prefix}{key}")


# ---------------------------------------------------------------------------------------------------------------------
# The conversation the request describes
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class _Conv:
    body: dict
    model: str
    stream: bool
    items: list[dict]  # the full conversation: stored history, then this request's input items
    input_items: list[dict]  # this request's own input items (normalised), for storage
    last_user_text: str = ""
    tool_results: list[str] | None = None
    tool_names: list[str] = field(default_factory=list)
    forced_tool: str | None = None
    thinking: bool = False
    summary: bool = False
    encrypted: bool = False
    json_schema: dict | None = None
    json: bool = False
    obfuscation: bool = True
    store: bool = True


@dataclass
class _Answer:
    text: str | None
    calls: list[tuple[str, dict]]
    finish: str  # stop | length | tool | refusal
    thinking: bool = False


@dataclass
class _Stored:
    response: dict
    input_items: list[dict]
    conversation: list[dict]  # every item so far (history + input + output), for previous_response_id


def _sample(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "mock"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _sample(schema[key][0])
    if "$ref" in schema:
        return {}
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object" or "properties" in schema:
        return {k: _sample(v) for k, v in (schema.get("properties") or {}).items()}
    return {"array": [], "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(t, "mock")


def _split(s: str, n: int) -> list[str]:
    if not s:
        return [s]
    n = max(1, min(n, len(s)))
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


def _flag(text: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", text) is not None


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        )
    return ""


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return _message_text(output)


# ---------------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
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
        self.server.mock._dispatch(self, raw)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    def send_body(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        self.wfile.write(head + body)
        self.wfile.flush()

    def start_stream(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
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

    def __init__(self, mock: ResponsesMock) -> None:
        self.mock = mock
        self.conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)


_STORED_PATH = re.compile(r"^/v1/responses/([^/]+)(/input_items)?$")
_FOREIGN = ("x-api-key", "x-goog-api-key", "api-key")


class ResponsesMock:
    """A strict fake of OpenAI's Responses API. See the module docstring for what drives its answers."""

    kind = "responses"

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Received] = []
        self.stored: dict[str, _Stored] = {}
        self._items: dict[str, dict] = {}  # stored output/input items by id (item_reference, reasoning by id)
        self._lock = threading.Lock()
        self._seq = 0
        self._server: _Server | None = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # ---- public API
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ResponsesMock:
        if self._server is None:
            self._server = _Server(self)
            self.port = self._server.server_address[1]
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name=f"mock-responses-{self.port}",
            )
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
                raise AssertionError("mock responses received no request")
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> ResponsesMock:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ResponsesMock(port={self.port})"

    # ---- dispatch
    def _dispatch(self, h: _Handler, raw: bytes) -> None:
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
            self._auth(headers, parse_qs(url.query))
            path = url.path
            if path == "/v1/responses" and h.command == "POST":
                conv = self._validate(raw)
                self._answer(h, rec, conv, seq)
            elif path == "/v1/responses/input_tokens" and h.command == "POST":
                self._count(raw)
                rec.status = 200
                body_out = orjson.dumps({"object": "response.input_tokens", "input_tokens": COUNT_TOKENS})
                h.send_body(200, body_out, "application/json", self._id_headers(seq))
            elif (m := _STORED_PATH.match(path)) and h.command in ("GET", "DELETE"):
                self._stored_endpoint(h, rec, m.group(1), bool(m.group(2)), h.command, seq)
            else:
                raise ApiError(404, f"Invalid URL ({h.command} {path})")
        except ApiError as e:
            rec.status = e.status
            headers_out = {**e.headers, **self._id_headers(seq)}
            err = {"error": {"message": e.message, "type": e.etype, "param": e.param, "code": e.code}}
            h.send_body(e.status, orjson.dumps(err), "application/json", headers_out)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    @staticmethod
    def _id_headers(seq: int) -> dict[str, str]:
        return {"x-request-id": f"req_mock{seq:06d}", "openai-processing-ms": "1"}

    def _auth(self, headers: dict[str, str], query: dict) -> None:
        for name in _FOREIGN:
            if name in headers:
                raise ApiError(400, f"foreign credential header {name}")
        if "key" in query:
            raise ApiError(400, "foreign credential header key (query parameter)")
        auth = headers.get("authorization")
        if not auth:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if auth != f"Bearer {self.api_key}":
            shown = auth.removeprefix("Bearer ")
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    # ---- stored responses
    def _stored_endpoint(self, h: _Handler, rec: Received, rid: str, items: bool, method: str, seq: int) -> None:
        with self._lock:
            found = self.stored.get(rid)
            if found is not None and method == "DELETE":
                del self.stored[rid]
        if found is None:
            raise ApiError(404, f"Response with id '{rid}' not found.", param="response_id")
        if method == "DELETE":
            out: dict = {"id": rid, "object": "response.deleted", "deleted": True}
        elif items:
            data = [{**it, "id": it.get("id") or f"msg_in_{i}"} for i, it in enumerate(found.input_items)]
            data.reverse()  # the API lists newest first by default
            out = {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else "",
                "last_id": data[-1]["id"] if data else "",
                "has_more": False,
            }
        else:
            out = found.response
        rec.status = 200
        h.send_body(200, orjson.dumps(out), "application/json", self._id_headers(seq))

    # ---- validation
    def _load(self, raw: bytes) -> dict:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid type for body: expected an object.", code="invalid_type")
        return body

    def _count(self, raw: bytes) -> None:
        body = self._load(raw)
        _check_obj(body, input_token_count_params.InputTokenCountParams, "")

    def _validate(self, raw: bytes) -> _Conv:
        body = self._load(raw)
        td = (
            response_create_params.ResponseCreateParamsStreaming
            if body.get("stream") is True
            else response_create_params.ResponseCreateParamsNonStreaming
        )
        _check_obj(_without_extras(body), td, "")
        if "model" not in body:
            raise _missing("model")
        for key, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
            v = body.get(key)
            if v is not None and not lo <= v <= hi:
                below = v < lo
                raise ApiError(
                    400,
                    f"Invalid '{key}': decimal {'below minimum' if below else 'above maximum'} value. Expected a value "
                    f"{'>=' if below else '<='} {lo if below else hi}, but got {v} instead.",
                    param=key,
                    code="decimal_below_min_value" if below else "decimal_above_max_value",
                )
        mot = body.get("max_output_tokens")
        if mot is not None and mot < 16:
            raise ApiError(
                400,
                f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got {mot} "
                "instead.",
                param="max_output_tokens",
                code="integer_below_min_value",
            )
        if body.get("stream_options") is not None and not body.get("stream"):
            raise ApiError(
                400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
            )
        history: list[dict] = []
        prev = body.get("previous_response_id")
        if prev is not None:
            with self._lock:
                stored = self.stored.get(prev)
            if stored is None:
                raise ApiError(
                    400,
                    f"Previous response with id '{prev}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = list(stored.conversation)
        raw_input = body.get("input")
        if raw_input is None:
            raise _missing("input")
        items = [{"type": "message", "role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        items = [self._resolve(it, i) for i, it in enumerate(items)]
        conv_items = history + items
        self._pairing(conv_items, len(history))
        tools = body.get("tools") or []
        names: list[str] = []
        for i, t in enumerate(tools):
            if t.get("type") == "function":
                if not _FN_NAME.match(t["name"]):
                    raise ApiError(
                        400,
                        f"Invalid 'tools[{i}].name': string does not match pattern. Expected a string that matches "
                        "the pattern '^[a-zA-Z0-9_-]+$'.",
                        param=f"tools[{i}].name",
                        code="invalid_value",
                    )
                names.append(t["name"])
        tc = body.get("tool_choice")
        forced = None
        if tc == "none":
            names = []
        elif isinstance(tc, dict) and tc.get("type") == "function":
            if tc["name"] not in names:
                raise ApiError(
                    400,
                    f"Tool choice '{tc['name']}' not found in 'tools' parameter.",
                    param="tool_choice",
                    code="invalid_value",
                )
            forced = tc["name"]
        text_cfg = body.get("text") or {}
        fmt = text_cfg.get("format") or {}
        reasoning = body.get("reasoning") or {}
        effort = reasoning.get("effort")
        conv = _Conv(
            body=body,
            model=body["model"],
            stream=body.get("stream") is True,
            items=conv_items,
            input_items=items,
            tool_names=names,
            forced_tool=forced,
            thinking=effort is not None and effort != "none",
            summary=reasoning.get("summary") is not None,
            encrypted="reasoning.encrypted_content" in (body.get("include") or []),
            json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
            json=fmt.get("type") in ("json_schema", "json_object"),
            obfuscation=(body.get("stream_options") or {}).get("include_obfuscation") is not False,
            store=body.get("store") is not False,
        )
        # The last user text, and the tool outputs at the end of the conversation
        outputs: list[str] = []
        for it in reversed(conv_items):
            kind = it.get("type", "message")
            if kind == "function_call_output":
                outputs.append(_output_text(it.get("output")))
                continue
            if kind == "message" and it.get("role") == "user":
                conv.last_user_text = _message_text(it.get("content"))
            break
        if outputs:
            conv.tool_results = list(reversed(outputs))
            for it in reversed(conv_items):
                if it.get("type", "message") == "message" and it.get("role") == "user":
                    conv.last_user_text = _message_text(it.get("content"))
                    break
        return conv

    def _resolve(self, item: dict, i: int) -> dict:
        """``item_reference`` and id-only ``reasoning`` items are looked up among stored items."""
        kind = item.get("type")
        if kind == "item_reference" or (kind is None and set(item) == {"id"}):
            with self._lock:
                found = self._items.get(item["id"])
            if found is None:
                raise ApiError(404, f"Item with id '{item['id']}' not found.", param=f"input[{i}]")
            return found
        if kind == "reasoning":
            enc = item.get("encrypted_content")
            if enc is not None:
                if not _verify_encrypted(enc):
                    raise ApiError(
                        400,
                        f"The encrypted content for item {item['id']} could not be verified.",
                        param=f"input[{i}].encrypted_content",
                        code="invalid_encrypted_content",
                    )
            else:
                with self._lock:
                    known = item["id"] in self._items
                if not known:
                    raise ApiError(
                        404,
                        f"Item with id '{item['id']}' not found. Items are not persisted when `store` is set to "
                        "false. Try again with `store` set to true, or remove this item from your input.",
                        param=f"input[{i}]",
                    )
        return item

    @staticmethod
    def _pairing(items: list[dict], first_new: int) -> None:
        calls: dict[str, int] = {}
        answered: set[str] = set()
        for i, it in enumerate(items):
            kind = it.get("type")
            if kind == "function_call":
                calls[it["call_id"]] = i
            elif kind == "function_call_output":
                cid = it.get("call_id")
                if cid not in calls:
                    raise ApiError(
                        400,
                        f"No tool call found for function call output with call_id {cid}.",
                        param=f"input[{max(i - first_new, 0)}]",
                    )
                answered.add(cid)
        for cid, i in calls.items():
            if cid not in answered and i >= first_new:
                raise ApiError(400, f"No tool output found for function call {cid}.", param="input")

    # ---- answering
    def _decide(self, conv: _Conv) -> _Answer:
        text = conv.last_user_text
        finish = "length" if _flag(text, "LENGTH") else "stop"
        if _flag(text, "REFUSE"):
            return _Answer("I'm sorry, I can't help with that.", [], "refusal", conv.thinking)
        if conv.tool_results is not None:
            return _Answer("Tool results: " + " | ".join(conv.tool_results), [], finish, conv.thinking)
        if conv.tool_names:
            name = conv.forced_tool or conv.tool_names[0]
            calls = [(name, self._args(conv, name, "Paris"))]
            if _flag(text, "PARALLEL") and conv.body.get("parallel_tool_calls") is not False:
                calls.append((name, self._args(conv, name, "Tokyo")))
            return _Answer(None, calls, "tool", conv.thinking)
        if conv.json:
            value = _sample(conv.json_schema) if conv.json_schema is not None else {"answer": "mock"}
            return _Answer(orjson.dumps(value).decode(), [], finish, conv.thinking)
        reply = f"Hello from mock responses. You said: {text}"
        if _flag(text, "HUGE"):
            reply = "x" * 200_000
        return _Answer(reply, [], finish, conv.thinking)

    @staticmethod
    def _args(conv: _Conv, name: str, city: str) -> dict:
        """{"city": ...}, plus sample values for the other properties the tool's schema requires."""
        tool = next((t for t in conv.body.get("tools") or () if t.get("name") == name), {})
        schema = tool.get("parameters") or {}
        sample = _sample(schema) if schema.get("properties") else {}
        return {**(sample if isinstance(sample, dict) else {}), "city": city}

    def _output(self, conv: _Conv, ans: _Answer, seq: int) -> list[dict]:
        out: list[dict] = []
        if ans.thinking:
            rid = f"rs_mock{seq:06d}"
            item: dict[str, Any] = {"id": rid, "type": "reasoning", "summary": []}
            if conv.summary:
                item["summary"] = [{"type": "summary_text", "text": THINKING_TEXT}]
            if conv.encrypted:
                item["encrypted_content"] = encrypted_for(rid, THINKING_TEXT)
            out.append(item)
        if ans.text is not None:
            part = (
                {"type": "refusal", "refusal": ans.text}
                if ans.finish == "refusal"
                else {"type": "output_text", "text": ans.text, "annotations": [], "logprobs": []}
            )
            status = "incomplete" if ans.finish == "length" else "completed"
            out.append(
                {"id": f"msg_mock{seq:06d}", "type": "message", "status": status, "role": "assistant",
                 "content": [part]}
            )  # fmt: skip
        for i, (name, args) in enumerate(ans.calls):
            out.append(
                {"id": f"fc_mock{seq:06d}_{i}", "type": "function_call", "status": "completed",
                 "arguments": orjson.dumps(args).decode(), "call_id": f"call_mock_{i + 1}", "name": name}
            )  # fmt: skip
        return out

    def _response(self, conv: _Conv, seq: int, status: str, output: list[dict], usage: dict | None) -> dict:
        b = conv.body
        text = b.get("text") or {}
        reasoning = b.get("reasoning") or {}
        return {
            "id": f"resp_mock{seq:06d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "max_tool_calls": b.get("max_tool_calls"),
            "model": conv.model,
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": b.get("previous_response_id"),
            "prompt_cache_key": b.get("prompt_cache_key"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "safety_identifier": b.get("safety_identifier"),
            "service_tier": "default",
            "store": conv.store,
            "temperature": b.get("temperature", 1.0),
            "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity", "medium")},
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools") or [],
            "top_logprobs": 0,
            "top_p": b.get("top_p", 1.0),
            "truncation": b.get("truncation", "disabled"),
            "usage": usage,
            "user": b.get("user"),
            "metadata": b.get("metadata") or {},
        }

    @staticmethod
    def _usage(thinking: bool) -> dict:
        return {
            "input_tokens": USAGE_IN,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": USAGE_OUT,
            "output_tokens_details": {"reasoning_tokens": REASONING_TOKENS if thinking else 0},
            "total_tokens": USAGE_IN + USAGE_OUT,
        }

    def _store(self, conv: _Conv, response: dict) -> None:
        if not conv.store:
            return
        with self._lock:
            self.stored[response["id"]] = _Stored(response, conv.input_items, conv.items + response["output"])
            for it in response["output"]:
                self._items[it["id"]] = it

    def _answer(self, h: _Handler, rec: Received, conv: _Conv, seq: int) -> None:
        text = conv.last_user_text
        m = _MAGIC_SLEEP.search(text)
        if m:
            time.sleep(float(m.group(1)))
        m = _MAGIC_ERROR.search(text)
        if m:
            raise _magic_error(int(m.group(1)), conv.model)
        if _flag(text, "HTML500"):
            rec.status = 500
            page = b"<!DOCTYPE html>\n<html><body><h1>500 Internal Server Error</h1></body></html>\n"
            h.send_body(500, page, "text/html; charset=utf-8")
            return
        ans = self._decide(conv)
        output = self._output(conv, ans, seq)
        status = "incomplete" if ans.finish == "length" else "completed"
        final = self._response(conv, seq, status, output, self._usage(ans.thinking))
        rec.status = 200
        if not conv.stream:
            self._store(conv, final)
            data = orjson.dumps(final)
            if _flag(text, "BADJSON"):
                data = data[: len(data) // 2]
            h.send_body(200, data, "application/json", self._id_headers(seq))
            return
        events = self._events(conv, seq, final)
        if _flag(text, "BADJSON"):
            events = [events[0][: len(events[0]) // 2] + b"\n\n"]
        elif _flag(text, "STREAMERROR"):
            n = len(events[:3])
            err = {"type": "error", "sequence_number": n, "code": "server_error", "param": None,
                   "message": "The server had an error while processing your request (mock STREAMERROR)."}  # fmt: skip
            events = [*events[:3], _sse("error", err)]
        elif _flag(text, "FAILSTREAM"):
            failed = {**final, "status": "failed", "output": [], "usage": None,
                      "error": {"code": "server_error", "message": "The model failed (mock FAILSTREAM)."}}  # fmt: skip
            events = [*events[:3], _sse("response.failed", {"type": "response.failed", "sequence_number": 3,
                                                            "response": failed})]  # fmt: skip
        else:
            self._store(conv, final)
        slow = _flag(text, "SLOWSTREAM")
        dropping = _flag(text, "DROPSTREAM")
        h.start_stream(self._id_headers(seq))
        try:
            for i, ev in enumerate(events):
                if i and slow:
                    time.sleep(_SLOW_STREAM_DELAY)
                if dropping and i == 2:
                    rec.stream_finished_at = time.monotonic()
                    h.drop()
                    return
                h.write_chunk(ev)
                if i == 0:
                    rec.stream_started_at = time.monotonic()
            rec.stream_finished_at = time.monotonic()
            h.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _events(self, conv: _Conv, seq: int, final: dict) -> list[bytes]:
        out: list[bytes] = []
        n = 0

        def ev(kind: str, **fields: Any) -> None:
            nonlocal n
            obj = {"type": kind, "sequence_number": n, **fields}
            if conv.obfuscation and "delta" in fields:
                obj["obfuscation"] = "x" * (n % 7 + 1)
            out.append(_sse(kind, obj))
            n += 1

        start = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
        ev("response.created", response=start)
        ev("response.in_progress", response=start)
        for oi, item in enumerate(final["output"]):
            iid = item["id"]
            kind = item["type"]
            if kind == "reasoning":
                ev("response.output_item.added", output_index=oi, item={**item, "summary": []})
                for si, part in enumerate(item["summary"]):
                    ev("response.reasoning_summary_part.added", item_id=iid, output_index=oi, summary_index=si,
                       part={"type": "summary_text", "text": ""})  # fmt: skip
                    for piece in _split(part["text"], 3):
                        ev("response.reasoning_summary_text.delta", item_id=iid, output_index=oi, summary_index=si,
                           delta=piece)  # fmt: skip
                    ev("response.reasoning_summary_text.done", item_id=iid, output_index=oi, summary_index=si,
                       text=part["text"])  # fmt: skip
                    ev("response.reasoning_summary_part.done", item_id=iid, output_index=oi, summary_index=si,
                       part=part)  # fmt: skip
            elif kind == "message":
                ev("response.output_item.added", output_index=oi,
                   item={**item, "status": "in_progress", "content": []})  # fmt: skip
                for ci, part in enumerate(item["content"]):
                    if part["type"] == "refusal":
                        ev("response.content_part.added", item_id=iid, output_index=oi, content_index=ci,
                           part={"type": "refusal", "refusal": ""})  # fmt: skip
                        for piece in _split(part["refusal"], 3):
                            ev("response.refusal.delta", item_id=iid, output_index=oi, content_index=ci, delta=piece)
                        ev("response.refusal.done", item_id=iid, output_index=oi, content_index=ci,
                           refusal=part["refusal"])  # fmt: skip
                    else:
                        ev("response.content_part.added", item_id=iid, output_index=oi, content_index=ci,
                           part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})  # fmt: skip
                        for piece in _split(part["text"], 4):
                            ev("response.output_text.delta", item_id=iid, output_index=oi, content_index=ci,
                               delta=piece, logprobs=[])  # fmt: skip
                        ev("response.output_text.done", item_id=iid, output_index=oi, content_index=ci,
                           text=part["text"], logprobs=[])  # fmt: skip
                    ev("response.content_part.done", item_id=iid, output_index=oi, content_index=ci, part=part)
            elif kind == "function_call":
                ev("response.output_item.added", output_index=oi,
                   item={**item, "status": "in_progress", "arguments": ""})  # fmt: skip
                for piece in _split(item["arguments"], 3):
                    ev("response.function_call_arguments.delta", item_id=iid, output_index=oi, delta=piece)
                ev("response.function_call_arguments.done", item_id=iid, output_index=oi, arguments=item["arguments"])
            ev("response.output_item.done", output_index=oi, item=item)
        done = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        ev(done, response=final)
        return out


# Accepted by the real API though the SDK's request types do not list them, seen from real clients (recorded under
# tests/fixtures/clients/): top-level ``client_metadata``, an ``id`` on input messages and ``content: null`` on
# reasoning items (Codex CLI); function tools without ``strict`` (the Vercel AI SDK; the types mark it required).
_EXTRA_TOP = ("client_metadata",)


def _without_extras(body: dict) -> dict:
    out = {k: v for k, v in body.items() if k not in _EXTRA_TOP}
    items = out.get("input")
    if isinstance(items, list):
        out["input"] = [_item_without_extras(it) for it in items]
    tools = out.get("tools")
    if isinstance(tools, list):
        out["tools"] = [
            {"strict": None, **t} if isinstance(t, dict) and t.get("type") == "function" else t for t in tools
        ]
    return out


def _item_without_extras(it: Any) -> Any:
    if not isinstance(it, dict):
        return it
    kind = it.get("type", "message")
    if kind == "message" and it.get("role") != "assistant":
        return {k: v for k, v in it.items() if k != "id"}
    if kind == "reasoning" and it.get("content", 0) is None:
        return {k: v for k, v in it.items() if k != "content"}
    return it


def _missing(key: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{key}'.", param=key, code="missing_required_parameter")


def _sse(kind: str, obj: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _magic_error(status: int, model: str) -> ApiError:
    headers = {"retry-after": "7"} if status == 429 else {}
    msgs = {
        400: ("Invalid request (mock ERROR 400).", "invalid_request_error", None),
        401: ("Incorrect API key provided: sk-mock***. You can find your API key at "
              "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
        403: ("You are not allowed to sample from this model", "invalid_request_error", None),
        404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        429: (f"Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used 3, "
              "Requested 1. Please try again in 7s.", "requests", "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    }  # fmt: skip
    msg, etype, code = msgs.get(status, (f"mock error {status}", "server_error" if status >= 500 else
                                         "invalid_request_error", None))  # fmt: skip
    return ApiError(status, msg, etype=etype, code=code, headers=headers)
