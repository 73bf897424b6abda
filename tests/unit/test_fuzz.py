"""Fuzzing every format's parsers and builders with hypothesis: any input ends in a result or a GatewayError (400 or
502), never another exception. The @example corpus keeps inputs that once mattered."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation import media
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, gemini, openai

FORMATS = {"openai": openai, "anthropic": anthropic, "gemini": gemini}
FIELDS = [
    "model", "messages", "role", "content", "type", "text", "image_url", "url", "tools", "tool_calls", "function",
    "name", "arguments", "parameters", "tool_call_id", "tool_choice", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "include_usage", "temperature", "top_p", "top_k", "stop", "stop_sequences", "system", "source",
    "data", "media_type", "input", "id", "tool_use_id", "is_error", "thinking", "signature", "contents", "parts",
    "inlineData", "mimeType", "functionCall", "functionResponse", "args", "response", "systemInstruction",
    "generationConfig", "maxOutputTokens", "toolConfig", "functionCallingConfig", "mode", "thoughtSignature",
    "response_format", "json_schema", "schema", "n", "candidateCount", "output_config", "reasoning_effort", "user",
    "metadata", "choices", "message", "finish_reason", "usage", "candidates", "finishReason", "usageMetadata",
    "stop_reason", "delta", "index", "error",
]  # fmt: skip
ROLES = ["user", "assistant", "system", "developer", "tool", "model", "function", ""]
TYPES = ["text", "image", "image_url", "tool_use", "tool_result", "thinking", "document", "file", "function"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(ROLES + TYPES + ["", "{}", '{"a":1}', "data:image/png;base64,AAAA", "%%%"]), st.text(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6)),
    max_leaves=40,
)
requests = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)

CORPUS = [
    {"model": "m", "messages": [{"role": "tool", "content": None}]},
    {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{"}}]}]},
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
    {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": []}}]}]},
    {"contents": [{"parts": [{"inlineData": {"data": None}}]}]},
    {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
]


def _only_gateway_errors(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except GatewayError as err:
        assert 400 <= err.status < 600
        return None


@pytest.mark.parametrize("client", list(FORMATS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=requests)
def test_parse_then_build_never_crashes(client: str, body: dict) -> None:
    for extra in CORPUS:
        _round(client, extra)
    _round(client, body)


def _round(client: str, body: dict) -> None:
    req = _only_gateway_errors(FORMATS[client].parse_request, orjson.dumps(body), model="m", stream=False)
    if req is None:
        return
    assert isinstance(req, c.Request)
    for provider, fmt in FORMATS.items():
        _only_gateway_errors(media.plan, req, provider, media.FetchPolicy())
        if provider == "anthropic":
            out = _only_gateway_errors(fmt.build_request, req, model="x", default_max_tokens=100)
        else:
            out = _only_gateway_errors(fmt.build_request, req, model="x")
        if out is not None:
            orjson.loads(out)


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(max_examples=300, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps)), status=st.integers(100, 599))
@example(body=b"<html>500</html>", status=500)
@example(body=b'{"error": null}', status=429)
@example(body=b"\xff\xfe", status=400)
def test_provider_side_parsers_never_crash(fmt: str, body: bytes, status: int) -> None:
    mod = FORMATS[fmt]
    resp = _only_gateway_errors(mod.parse_response, body)
    if resp is not None:
        for client in FORMATS.values():
            _only_gateway_errors(client.build_response, resp, model="m")
    err = mod.parse_error(status, body)  # must never raise: it is the error path
    assert isinstance(err, GatewayError)
    for client in FORMATS.values():
        orjson.loads(client.build_error(err, request_id="r"))
    dec = mod.StreamDecoder()
    events = _only_gateway_errors(dec.feed, body) or []
    events += _only_gateway_errors(dec.close) or []
    enc = openai.StreamEncoder(model="m", include_usage=True)
    for ev in events:
        assert isinstance(ev, c.MessageStart | c.TextDelta | c.ThinkingDelta | c.ToolCallStart | c.ToolCallDelta
                          | c.Finish | c.UsageUpdate | c.StreamError)  # fmt: skip
        if isinstance(ev, c.StreamError):
            enc.error(ev.error)
        else:
            _only_gateway_errors(enc.encode, ev)
