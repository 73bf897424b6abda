"""Golden translation tests: loading cases, driving the exchange, normalising and comparing (README.md here).

A case is a folder ``tests/golden/<client>-<provider>/<case>/`` (its pair's ``pair.yaml`` one level up):

- ``case.yaml``: what the case is, the gateway config (model, alias, provider), the client path, the stream flag, and
  where the provider answer came from (``provider_answer``).
- ``client_request.json``: the client's request body, sent as these exact bytes.
- the provider answer (``provider_answer.file``): ``provider_response.json``, or a stream as raw bytes
  (``provider_stream.sse``, ``provider_stream.json`` for Gemini's JSON-array stream).
- expected, written by the regenerate switch and reviewed: ``upstream_request.json`` (the body the gateway sends
  upstream), ``client_response.json`` / ``client_stream.sse`` / ``client_stream.json`` (what the client gets) and
  ``wire.json`` (the upstream method, path and headers; the client's status and headers).

Every call into ``extproc.core.exchange`` is in ``run_exchange``: when the Exchange API changes, only that function
changes.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import random
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extproc.core.config import build_config
from extproc.core.exchange import Exchange, Gateway, Reply
from tests.paths import ROOT

GOLDEN = Path(__file__).resolve().parent
RECORDED = ROOT / "tests" / "fixtures" / "recorded"
REGEN_ENV = "AI_GATEWAY_GOLDEN"

CLIENT_REQUEST = "client_request.json"
UPSTREAM_REQUEST = "upstream_request.json"
WIRE = "wire.json"
CLIENT_OUTPUTS = ("client_response.json", "client_stream.sse", "client_stream.json")

# The provider keys the gateway config reads (fake; they show where each provider's key goes).
ENV = {
    "OPENAI_API_KEY": "sk-golden-openai",
    "ANTHROPIC_API_KEY": "sk-ant-golden",
    "GEMINI_API_KEY": "golden-gemini-key",
    "GROQ_API_KEY": "gsk-golden",
}
REQUEST_ID = "req-golden-0001"


def regenerating() -> bool:
    return os.environ.get(REGEN_ENV) == "regen"


# ---------------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    dir: Path
    pair: str
    name: str
    meta: dict[str, Any]  # pair.yaml, then case.yaml on top

    @property
    def id(self) -> str:
        return f"{self.pair}/{self.name}"

    @property
    def client(self) -> str:
        return self.meta["client"]

    @property
    def provider(self) -> str:
        return self.meta["provider"]

    @property
    def answer(self) -> dict[str, Any]:
        return self.meta["provider_answer"]

    @property
    def stream(self) -> bool:
        return bool(self.meta.get("stream", False))

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def pairs() -> list[Path]:
    return sorted(p.parent for p in GOLDEN.glob("*/pair.yaml"))


def load_cases() -> list[Case]:
    out = []
    for pair_dir in pairs():
        pair = load_yaml(pair_dir / "pair.yaml")
        for case_yaml in sorted(pair_dir.glob("*/case.yaml")):
            meta = {**pair, **load_yaml(case_yaml)}
            out.append(Case(case_yaml.parent, pair_dir.name, case_yaml.parent.name, meta))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The one adapter between the goldens and the product
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What left the gateway: the upstream request (None if the gateway answered itself) and the client's answer."""

    upstream_headers: dict[str, str] | None
    upstream_body: bytes | None
    client_status: int
    client_headers: dict[str, str]
    client_body: bytes


def _apply(headers: dict[str, str], set_headers: list[tuple[str, str]], remove: list[str]) -> dict[str, str]:
    """Envoy's header mutation: removals, then sets (overwriting)."""
    out = {k: v for k, v in headers.items() if k not in remove}
    for k, v in set_headers:
        out[k] = v
    return out


def run_exchange(
    config: dict[str, Any],
    request_headers: dict[str, str],
    request_body: bytes,
    response_status: int,
    response_headers: dict[str, str],
    response_chunks: list[bytes],
    empty_last_chunk: bool = False,
) -> Outcome:
    """One request through ``Exchange`` phase by phase, as Envoy's ext_proc filter drives it with our bootstrap's
    processing mode (request headers SEND, request body BUFFERED, response headers SEND, response body BUFFERED
    unless the service switches it to STREAMED or NONE). ``response_chunks`` are the provider's body as it arrives
    (one element for a buffered body); ``empty_last_chunk`` ends a streamed body with an empty end-of-stream chunk
    instead of marking the last data chunk end-of-stream (Envoy does both)."""
    ex = Exchange(Gateway(build_config({"version": "1", **config}, "golden.yaml", ENV)))
    first = ex.on_request_headers(dict(request_headers), end_of_stream=not request_body)
    if isinstance(first, Reply):
        return Outcome(None, None, first.status, dict(first.headers), first.body)
    upstream = _apply(request_headers, first.set_headers, first.remove_headers)
    action = ex.on_request_body(request_body)
    if isinstance(action, Reply):
        return Outcome(None, None, action.status, dict(action.headers), action.body)
    if not hasattr(action, "set_headers"):  # media.FetchMedia: no golden case enables image_fetch
        raise AssertionError(f"the exchange asked to fetch media: {action!r}")
    upstream = _apply(upstream, action.set_headers, action.remove_headers)
    upstream_body = request_body if action.body is None else action.body

    headers = {":status": str(response_status), **response_headers}
    fwd = ex.on_response_headers(dict(headers))
    client_headers = _apply(headers, fwd.set_headers, fwd.remove_headers)
    whole = b"".join(response_chunks)
    if fwd.response_body_mode == "NONE":  # the body goes to the client without the service seeing it
        return Outcome(upstream, upstream_body, response_status, client_headers, whole)
    if fwd.response_body_mode == "STREAMED":
        outputs = []
        last = len(response_chunks) - 1
        for i, chunk in enumerate(response_chunks):
            step = ex.on_response_body(chunk, end_of_stream=i == last and not empty_last_chunk)
            outputs.append(chunk if step.body is None else step.body)  # header mutations are too late here
        if empty_last_chunk:
            step = ex.on_response_body(b"", end_of_stream=True)
            outputs.append(b"" if step.body is None else step.body)
        status = int(client_headers.get(":status", response_status))
        return Outcome(upstream, upstream_body, status, client_headers, b"".join(outputs))
    step = ex.on_response_body(whole, end_of_stream=True)  # BUFFERED: the whole body at once
    client_headers = _apply(client_headers, step.set_headers, step.remove_headers)
    body = whole if step.body is None else step.body
    return Outcome(upstream, upstream_body, int(client_headers[":status"]), client_headers, body)


# ---------------------------------------------------------------------------------------------------------------------
# Normalisation: the only values not compared as they are
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Drawn:
    """Random ids and clock readings the product made during one run."""

    uuids: list[str] = field(default_factory=list)
    t0: int = 0
    t1: int = 0


@contextmanager
def recording_randomness() -> Iterator[Drawn]:
    """Record every ``uuid.uuid4()`` the product draws (its only source of generated ids) and the wall-clock window
    of the run (its only source of timestamps)."""
    drawn = Drawn(t0=int(time.time()))
    real = uuid.uuid4

    def tracked() -> uuid.UUID:
        u = real()
        drawn.uuids.append(u.hex)
        return u

    uuid.uuid4 = tracked  # type: ignore[assignment]
    try:
        yield drawn
    finally:
        uuid.uuid4 = real  # type: ignore[assignment]
        drawn.t1 = int(time.time()) + 1


_TEN_DIGITS = re.compile(rb"(?<![\w.\-])\d{10}(?![\w.])")


def normalise(data: bytes, drawn: Drawn) -> bytes:
    """The one normalisation (README): a value the gateway generated is replaced by a placeholder, nothing else.

    - an id made from the N-th ``uuid4()`` of the run (its hex, or a prefix of at least 16 hex digits of it, as the
      product truncates) becomes ``<uuid:N>``;
    - a 10-digit integer inside the run's wall-clock window (a Unix ``created`` timestamp) becomes ``"<now>"`` (a JSON
      string: a golden file says where the clock was read).
    """
    for n, hexid in enumerate(drawn.uuids, 1):
        data = re.sub(re.escape(hexid[:16].encode()) + rb"[0-9a-f]{0,16}", b"<uuid:%d>" % n, data)

    def clock(m: re.Match[bytes]) -> bytes:
        return b'"<now>"' if drawn.t0 <= int(m.group()) <= drawn.t1 else m.group()

    return _TEN_DIGITS.sub(clock, data)


# ---------------------------------------------------------------------------------------------------------------------
# Comparison: JSON semantically and strictly; SSE line by line
# ---------------------------------------------------------------------------------------------------------------------
def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality where key order does not matter but types do (1, 1.0 and true are three different values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _diff(expected: str, actual: str, what: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), f"expected {what}", f"actual {what}", lineterm="", n=2
    )
    return "\n".join(list(lines)[:80])


def assert_json_equal(expected: bytes, actual: bytes, what: str) -> None:
    exp, act = json.loads(expected), json.loads(actual)
    if not strict_equal(exp, act):
        s_exp = json.dumps(exp, indent=2, sort_keys=True, ensure_ascii=False)
        s_act = json.dumps(act, indent=2, sort_keys=True, ensure_ascii=False)
        raise AssertionError(f"{what} differs:\n{_diff(s_exp, s_act, what) or '(types differ: int/float/bool)'}")


_DATA = re.compile(rb"^data: ?")


def _sse_lines(raw: bytes) -> list[tuple[bytes, Any]]:
    """Each line with its terminator kept; a ``data:`` line's payload parsed as JSON when it is JSON."""
    out: list[tuple[bytes, Any]] = []
    for line in raw.splitlines(keepends=True):
        body = line.rstrip(b"\r\n")
        m = _DATA.match(body)
        if m is None:
            out.append((line, None))
            continue
        payload = body[m.end() :]
        try:
            value: Any = ("json", json.loads(payload))
        except ValueError:
            value = ("text", payload)
        out.append((m.group() + b"<payload>" + line[len(body) :], value))
    return out


def assert_sse_equal(expected: bytes, actual: bytes, what: str) -> None:
    """Same lines, same terminators, same field names; ``data:`` JSON payloads compared semantically and strictly."""
    exp, act = _sse_lines(expected), _sse_lines(actual)
    for i, (e, a) in enumerate(zip(exp, act, strict=False)):
        same = e[0] == a[0] and (
            e[1] == a[1] if e[1] is None or e[1][0] == "text" else a[1] is not None and strict_equal(e[1], a[1])
        )
        if not same:
            raise AssertionError(f"{what}: line {i + 1} differs\nexpected: {_show(e)}\nactual:   {_show(a)}")
    if len(exp) != len(act):
        extra = act[len(exp) :] or exp[len(act) :]
        raise AssertionError(f"{what}: {len(act)} lines, expected {len(exp)}; first extra: {_show(extra[0])}")


def _show(line: tuple[bytes, Any]) -> str:
    frame, value = line
    if value is None:
        return repr(frame)
    payload = json.dumps(value[1], ensure_ascii=False) if value[0] == "json" else repr(value[1])
    return repr(frame).replace("<payload>", payload)


def assert_output_equal(name: str, expected: bytes, actual: bytes) -> None:
    if name.endswith(".sse"):
        assert_sse_equal(expected, actual, name)
    else:
        assert_json_equal(expected, actual, name)


def render_json(raw: bytes) -> bytes:
    """How an expected JSON file is written: parsed and pretty-printed for review (compared semantically anyway)."""
    return pretty(json.loads(raw)).encode()


# ---------------------------------------------------------------------------------------------------------------------
# Provider answers and where they came from
# ---------------------------------------------------------------------------------------------------------------------
def _cassette(source: str, file: str) -> dict[str, Any]:
    return load_yaml(RECORDED / source / file)


def recorded_bytes(ref: dict[str, Any]) -> bytes:
    """The provider answer a recording holds, as the golden stores it (``README.md`` here lists the derivations):

    - ``pydantic-ai`` VCR cassettes: a stream is ``response.body.string`` (the raw body); a JSON answer is
      ``response.parsed_body`` (the cassette stores the decoded JSON), pretty-printed;
    - ``envoy-ai-gateway`` go-vcr cassettes: ``response.body``, the body text as recorded;
    - ``kong`` fixtures: the file itself, or the files in order when they are recorded network chunks of one body.
    """
    source = ref["source"]
    if source == "kong":  # one file, or network chunks recorded as separate files (concatenated in order)
        return b"".join((RECORDED / source / f).read_bytes() for f in ref.get("files") or [ref["file"]])
    file = ref["file"]
    it = _cassette(source, file)["interactions"][ref["interaction"]]["response"]
    if source == "pydantic-ai":
        if "parsed_body" in it:
            return pretty(it["parsed_body"]).encode()
        raw = it["body"]["string"]
        return raw if isinstance(raw, bytes) else raw.encode()
    if source == "envoy-ai-gateway":
        return it["body"].encode()
    raise ValueError(f"unknown recording source {source!r}")


def recorded_request(ref: dict[str, Any]) -> Any:
    """The request a recording's answer was given to (decoded JSON), for cases whose client request is it."""
    it = _cassette(ref["source"], ref["file"])["interactions"][ref["interaction"]]["request"]
    if "parsed_body" in it:
        return it["parsed_body"]
    return json.loads(it["body"])


def sse_events(raw: bytes) -> list[bytes]:
    """Split a stream after each blank line (LF or CRLF framing), keeping every byte."""
    parts = re.split(rb"(\r\n\r\n|\n\n)", raw)
    events = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    if parts[-1]:
        events.append(parts[-1])
    return events


# ---------------------------------------------------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------------------------------------------------
def request_headers(case: Case, body: bytes) -> dict[str, str]:
    headers = {
        ":method": "POST",
        ":path": case.meta["path"],
        ":scheme": "http",
        ":authority": "gateway.golden",
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-request-id": REQUEST_ID,
    }
    headers.update(case.meta.get("request_headers") or {})
    return headers


def splits(case: Case, body: bytes) -> list[tuple[str, list[bytes], bool]]:
    """The ways a provider body is cut into chunks: first as recorded (``provider_answer.chunks``: byte lengths of
    the recorded network reads; otherwise one chunk per event, as providers flush), then whole, byte by byte,
    after every CR (splitting CRLF), inside every multi-byte character, and at seeded random points."""
    if not case.stream:
        return [("whole", [body], False)]
    lengths = case.answer.get("chunks")
    if lengths:
        assert sum(lengths) == len(body), "provider_answer.chunks must add up to the body length"
        recorded, pos = [], 0
        for n in lengths:
            recorded.append(body[pos : pos + n])
            pos += n
    else:
        recorded = sse_events(body) if body.lstrip()[:1] != b"[" else [body]
    out = [
        ("recorded", recorded, False),
        ("whole", [body], True),
        ("bytes", [body[i : i + 1] for i in range(len(body))], False),
    ]
    crs = [i + 1 for i, b in enumerate(body) if b == 0x0D]
    mid_char = [i for i, b in enumerate(body) if 0x80 <= b < 0xC0]  # continuation bytes: cut before each
    for label, cuts in (("cr", crs), ("utf8", mid_char)):
        if cuts:
            out.append((label, _cut(body, cuts), False))
    rng = random.Random(f"{case.id}:{len(body)}")
    for k in range(3):
        cuts = sorted(rng.sample(range(1, max(len(body), 2)), min(len(body) - 1, 5 + 20 * k)))
        out.append((f"random{k}", _cut(body, cuts), k == 1))
    return out


def _cut(body: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


@dataclass
class Result:
    upstream_body: bytes | None
    wire: dict[str, Any]
    client_name: str
    client_body: bytes


def client_output_name(case: Case, headers: dict[str, str]) -> str:
    ctype = headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        return "client_stream.sse"
    return "client_stream.json" if case.stream and int(headers.get(":status", "200")) < 300 else "client_response.json"


def run_case(case: Case) -> tuple[Result, list[tuple[str, bytes]]]:
    """Run the case once per split; returns the first run's result and every run's (label, normalised client body)."""
    body = case.read(CLIENT_REQUEST)
    answer = case.read(case.answer["file"])
    resp_headers = {"content-type": case.answer["content_type"]}
    first: Result | None = None
    bodies = []
    for label, chunks, empty_last in splits(case, answer):
        with recording_randomness() as drawn:
            out = run_exchange(
                case.meta["config"],
                request_headers(case, body),
                body,
                int(case.answer.get("status", 200)),
                resp_headers,
                chunks,
                empty_last,
            )
        _check_lengths(out)
        client_body = normalise(out.client_body, drawn)
        bodies.append((label, client_body))
        if first is None:
            wire: dict[str, Any] = {}
            if out.upstream_headers is not None:
                up = out.upstream_headers
                wire["upstream"] = {
                    "method": up.get(":method"),
                    "path": up.get(":path"),
                    "headers": {k: v for k, v in sorted(up.items()) if not k.startswith(":")},
                }
            wire["client"] = {
                "status": out.client_status,
                "headers": {
                    k: normalise(v.encode(), drawn).decode()
                    for k, v in sorted(out.client_headers.items())
                    if not k.startswith(":")
                },
            }
            upstream_body = None if out.upstream_body is None else normalise(out.upstream_body, drawn)
            first = Result(upstream_body, wire, client_output_name(case, out.client_headers), client_body)
    assert first is not None
    return first, bodies


def _check_lengths(out: Outcome) -> None:
    """A content-length the gateway leaves on a message must be its body's length."""
    if out.upstream_headers is not None and "content-length" in out.upstream_headers:
        assert int(out.upstream_headers["content-length"]) == len(out.upstream_body or b""), "upstream content-length"
    if "content-length" in out.client_headers:
        assert int(out.client_headers["content-length"]) == len(out.client_body), "client content-length"
