"""Fuzzing the Responses format with hypothesis, as ``test_fuzz.py`` does the others: any request body ends in a
canonical Request or a 4xx GatewayError, any provider body or stream in a Response/events or a GatewayError; then
every other format builds what was parsed. ``AI_GATEWAY_FUZZ_EXAMPLES`` sets the examples per test (default 60)."""

from __future__ import annotations

import os

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, gemini, openai
from extproc.translation.formats import responses as fmt
from extproc.translation.formats.contract import StreamOptions

EXAMPLES = int(os.environ.get("AI_GATEWAY_FUZZ_EXAMPLES", "60"))
FIELDS = [
    "model",
    "input",
    "instructions",
    "type",
    "role",
    "content",
    "text",
    "image_url",
    "file_data",
    "file_url",
    "filename",
    "detail",
    "call_id",
    "name",
    "arguments",
    "output",
    "namespace",
    "id",
    "summary",
    "encrypted_content",
    "tools",
    "parameters",
    "strict",
    "description",
    "tool_choice",
    "mode",
    "max_output_tokens",
    "temperature",
    "top_p",
    "reasoning",
    "effort",
    "format",
    "schema",
    "include",
    "store",
    "stream",
    "metadata",
    "previous_response_id",
    "parallel_tool_calls",
    "status",
    "usage",
    "input_tokens",
    "output_tokens",
    "incomplete_details",
    "reason",
    "delta",
    "item",
    "output_index",
    "response",
    "error",
    "message",
    "code",
]
KINDS = [
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
    "item_reference",
    "input_text",
    "input_image",
    "input_file",
    "output_text",
    "refusal",
    "summary_text",
    "reasoning_text",
    "function",
    "namespace",
    "web_search",
    "json_schema",
    "json_object",
    "user",
    "assistant",
    "system",
    "developer",
    "response.completed",
    "response.output_text.delta",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "error",
    "response.failed",
    "incomplete",
    "completed",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([*KINDS, "", "{}", "data:image/png;base64,AAAA", "YWlndy1yMS57fQ", "call_1", "%%%"]),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS), inner, max_size=6)),
    max_leaves=40,
)
requests = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
OTHERS = {"openai": openai, "anthropic": anthropic, "gemini": gemini}


def _only_gateway_errors(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except GatewayError as err:
        assert 400 <= err.status < 600
        return None


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=requests)
@example(body={"model": "m", "input": [{"type": "function_call_output", "call_id": None}]})
@example(body={"model": "m", "input": [{"type": "reasoning", "encrypted_content": "YWlndy1yMS57fQ"}]})
@example(body={"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}], "tools": [{}]})
def test_parse_request_never_crashes(body: dict) -> None:
    req = _only_gateway_errors(fmt.parse_request, orjson.dumps(body))
    if req is None:
        return
    assert isinstance(req, c.Request)
    for name, other in OTHERS.items():
        kw = {"default_max_tokens": 100} if name == "anthropic" else {}
        out = _only_gateway_errors(other.build_request, req, model="x", **kw)
        if out is not None:
            orjson.loads(out)
    orjson.loads(fmt.build_request(req, model="x"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps)), status=st.integers(100, 599))
@example(body=b'{"output": [{"type": "function_call"}]}', status=200)
@example(
    body=b'data: {"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call"}}\n\n',
    status=200,
)
def test_provider_side_never_crashes(body: bytes, status: int) -> None:
    resp = _only_gateway_errors(fmt.parse_response, body)
    if resp is not None:
        orjson.loads(fmt.build_response(resp, model="m"))
        for other in OTHERS.values():
            _only_gateway_errors(other.build_response, resp, model="m")
    err = fmt.parse_error(status, body)
    assert isinstance(err, GatewayError)
    orjson.loads(fmt.build_error(err, request_id="r"))
    dec = fmt.StreamDecoder()
    events = _only_gateway_errors(dec.feed, body) or []
    events += _only_gateway_errors(dec.close) or []
    enc = fmt.StreamEncoder(StreamOptions(model="m"))
    for ev in events:
        _only_gateway_errors(enc.encode, ev)
    enc.finish()
