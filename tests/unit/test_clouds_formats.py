"""The clouds' format variants, pure: Azure OpenAI (a recorded real answer, content filters, its errors), Vertex AI's
envelopes and two error shapes, Bedrock Converse requests checked against botocore's own service model, and Bedrock's
binary event streams decoded from any split point, with CRC and exception frames."""

from __future__ import annotations

import base64
import json

import botocore.session
import orjson
import pytest
import yaml
from botocore.validate import ParamValidator
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation import canonical as c
from extproc.translation.formats import anthropic, azure, bedrock, bedrock_anthropic, vertex, vertex_anthropic
from extproc.translation.formats.contract import COUNT_TOKENS
from tests.mocks.bedrock_api import event, exception, frame
from tests.paths import ROOT

CASSETTES = ROOT / "tests" / "fixtures" / "recorded" / "envoy-ai-gateway" / "cassettes"
_BEDROCK = botocore.session.get_session().get_service_model("bedrock-runtime")


def _recorded(name: str) -> dict:
    return yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())["interactions"][0]


# ----------------------------------------------------------------------------------------------------------- Azure
def test_azure_recorded_answer() -> None:
    got = _recorded("azure-chat-basic")
    assert "/openai/deployments/gpt-5-nano/chat/completions" in got["request"]["url"]
    resp = azure.parse_response(got["response"]["body"].encode())
    assert resp.parts and isinstance(resp.parts[0], c.Text) and resp.parts[0].text.startswith("Hi there!")
    assert resp.finish_reason == "stop"
    assert resp.usage == c.Usage(8, 271, reasoning_tokens=192)


def test_azure_paths() -> None:
    assert (
        azure.upstream_path(model="gpt-4o prod/x", stream=True)
        == "/openai/deployments/gpt-4o%20prod%2Fx/chat/completions"
    )
    with pytest.raises(Exception, match="cannot count"):
        azure.upstream_path(model="m", stream=False, kind=COUNT_TOKENS)


def test_azure_stream_skips_the_prompt_filter_chunk() -> None:
    first = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}  # fmt: skip
    chunk = {"id": "chatcmpl-1", "model": "gpt-4o", "object": "chat.completion.chunk", "created": 1,
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None,
                          "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]}  # fmt: skip
    stop = {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}
    raw = b"".join(b"data: " + orjson.dumps(x) + b"\n\n" for x in (first, chunk, stop)) + b"data: [DONE]\n\n"
    dec = azure.stream_decoder(azure.StreamOptions())
    events = [e for i in range(0, len(raw), 7) for e in dec.feed(raw[i : i + 7])] + dec.close()
    assert events[0] == c.MessageStart("chatcmpl-1", "gpt-4o")
    assert c.TextDelta("Hi") in events and events[-1] == c.Finish("content_filter")


def test_azure_errors() -> None:
    body = orjson.dumps({"error": {"code": "content_filter", "message": "The response was filtered", "status": 400,
                                   "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                                       "hate": {"filtered": False, "severity": "safe"},
                                       "violence": {"filtered": True, "severity": "medium"}}}}})  # fmt: skip
    err = azure.parse_error(400, body)
    assert (err.type, err.status, err.code) == ("invalid_request", 400, "content_filter")
    assert err.message.endswith("(Azure content filter: violence (medium))")
    err = azure.parse_error(404, b'{"error":{"code":"DeploymentNotFound","message":"The API deployment ..."}}')
    assert (err.type, err.status) == ("unknown_model", 404)
    err = azure.parse_error(401, b'{"statusCode": 401, "message": "Unauthorized. Access token is missing"}')
    assert (err.type, err.status) == ("auth", 401) and "Access token" in err.message


# ---------------------------------------------------------------------------------------------------------- Vertex
def _req() -> c.Request:
    return c.Request("m", messages=[c.Message("user", [c.Text("hi")])], max_tokens=50)


def test_vertex_paths() -> None:
    assert vertex.upstream_path(model="gemini-2.5-flash", stream=True) == (
        "/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert vertex.upstream_path(model="g", stream=False, kind=COUNT_TOKENS) == "/publishers/google/models/g:countTokens"
    assert vertex_anthropic.upstream_path(model="claude-x@2025", stream=True) == (
        "/publishers/anthropic/models/claude-x@2025:streamRawPredict"
    )


def test_vertex_claude_envelope() -> None:
    body = orjson.loads(vertex_anthropic.build_request(_req(), model="claude-x@1"))
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    raw = b'{"model":"alias","max_tokens":5,"messages":[],"unknown_field":{"kept":true}}'
    sent, _ = vertex_anthropic.passthrough_body(raw, orjson.loads(raw), model="claude-x@1", stream=False)
    assert orjson.loads(sent) == {"max_tokens": 5, "messages": [], "unknown_field": {"kept": True},
                                  "anthropic_version": "vertex-2023-10-16"}  # fmt: skip
    count = orjson.loads(vertex_anthropic.build_count_request(_req(), model="claude-x@1"))
    assert count["model"] == "claude-x@1" and count["anthropic_version"] == "vertex-2023-10-16"


def test_vertex_claude_two_error_shapes() -> None:
    google = b'{"error":{"code":429,"message":"Quota exceeded for aiplatform","status":"RESOURCE_EXHAUSTED"}}'
    err = vertex_anthropic.parse_error(429, google)
    assert (err.type, err.status, err.message) == ("rate_limit", 429, "Quota exceeded for aiplatform")
    claude = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    err = vertex_anthropic.parse_error(529, claude)
    assert (err.type, err.message) == ("overloaded", "Overloaded")


def test_vertex_refuses_gemini_api_files() -> None:
    part = c.Image("image/png", url="https://generativelanguage.googleapis.com/v1beta/files/abc")
    assert isinstance(vertex.fetches_url(part), str)


# --------------------------------------------------------------------------------------------- Bedrock: requests
def _rich() -> c.Request:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    pdf = base64.b64encode(b"%PDF-1.4").decode()
    return c.Request(
        "m",
        system=[c.Text("Be terse.")],
        messages=[
            c.Message("user", [c.Text("look"), c.Image("image/png", png),
                               c.Document("application/pdf", pdf, name="r.pdf")]),
            c.Message("assistant", [c.Thinking("hmm", signature="sig"),
                                    c.ToolCall("t1", "get_weather", '{"city":"Paris"}')]),
            c.Message("user", [c.ToolResult("t1", "get_weather", [c.Text("sunny")])]),
            c.Message("user", [c.Text("and now?")]),  # merged with the tool result turn: roles alternate
        ],
        max_tokens=3000,
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop=["END"],
        tools=[c.Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})],
        tool_choice=c.ToolChoice("tool", "get_weather"),
        response_format=c.ResponseFormat("json_schema", {"type": "object"}, "answer"),
    )  # fmt: skip


@pytest.mark.parametrize("model", ["us.anthropic.claude-sonnet-4-5-20250929-v1:0", "amazon.nova-pro-v1:0",
                                   "meta.llama3-70b-instruct-v1:0"])  # fmt: skip
def test_bedrock_converse_request_matches_botocore_model(model: str) -> None:
    body = orjson.loads(bedrock.build_request(_rich(), model=model))
    for op in ("Converse", "ConverseStream"):
        report = ParamValidator().validate({"modelId": model, **body}, _BEDROCK.operation_model(op).input_shape)
        assert not report.has_errors(), report.generate_report()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][2]["content"][0]["toolResult"] == {"toolUseId": "t1", "content": [{"text": "sunny"}]}
    assert body["messages"][0]["content"][2]["document"]["name"] == "r"
    assert body["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    assert json.loads(body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"]) == {"type": "object"}
    assert body["inferenceConfig"] == {"maxTokens": 3000, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    extra = body.get("additionalModelRequestFields", {})
    assert extra == (
        {"top_k": 40} if "claude" in model else {"inferenceConfig": {"topK": 40}} if "nova" in model else {}
    )


def test_bedrock_thinking_for_claude_only() -> None:
    req = _req()
    req.reasoning_effort = "low"
    req.temperature = 0.5
    body = orjson.loads(bedrock.build_request(req, model="anthropic.claude-3-7-sonnet-20250219-v1:0"))
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert body["inferenceConfig"] == {"maxTokens": 3072}  # room for the budget; no sampling while thinking
    assert "additionalModelRequestFields" not in orjson.loads(bedrock.build_request(req, model="amazon.nova-pro-v1:0"))


def test_bedrock_paths_encode_the_model_id() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0"
    assert bedrock.upstream_path(model=arn, stream=True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-x-v1%3A0"
        "/converse-stream"
    )
    assert bedrock_anthropic.upstream_path(model="anthropic.c-v2:0", stream=False) == "/model/anthropic.c-v2%3A0/invoke"
    assert bedrock_anthropic.upstream_path(model="a:0", stream=False, kind=COUNT_TOKENS) == "/model/a%3A0/count-tokens"


def test_bedrock_claude_invoke_envelope() -> None:
    req = _req()
    req.stream = True
    body = orjson.loads(bedrock_anthropic.build_request(req, model="anthropic.c-v2:0"))
    assert body["anthropic_version"] == "bedrock-2023-05-31" and "model" not in body and "stream" not in body
    count = orjson.loads(bedrock_anthropic.build_count_request(_req(), model="anthropic.c-v2:0"))
    inner = json.loads(count["input"]["invokeModel"]["body"])
    assert inner["anthropic_version"] == "bedrock-2023-05-31"
    report = ParamValidator().validate({"modelId": "x", **count}, _BEDROCK.operation_model("CountTokens").input_shape)
    assert not report.has_errors(), report.generate_report()


@pytest.mark.parametrize(
    ("status", "message", "want"),
    [
        (403, "The request signature we calculated does not match the signature you provided.", ("auth", 401)),
        (403, "The security token included in the request is invalid.", ("auth", 401)),
        (403, "Missing Authentication Token", ("auth", 401)),
        (403, "You don't have access to the model with the specified model ID.", ("permission", 403)),
        (400, "The provided model identifier is invalid.", ("unknown_model", 404)),
        (400, "Malformed input request", ("invalid_request", 400)),
        (429, "Too many requests, please wait before trying again.", ("rate_limit", 429)),
        (503, "Bedrock is unable to process your request.", ("overloaded", 503)),
    ],
)
def test_bedrock_errors(status: int, message: str, want: tuple[str, int]) -> None:
    err = bedrock.parse_error(status, orjson.dumps({"message": message}))
    assert (err.type, err.status) == want and err.message == message


# ------------------------------------------------------------------------------------------- Bedrock: event streams
def _converse_stream() -> bytes:
    frames = [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "think"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "s1"}}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hello "}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "wörld"}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tu1", "name": "f"}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"city"'}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": ':"Paris"}'}}}),
        event("contentBlockStop", {"contentBlockIndex": 2}),
        event("messageStop", {"stopReason": "tool_use"}),
        event("metadata", {"usage": {"inputTokens": 10, "outputTokens": 5, "cacheReadInputTokens": 3}}),
    ]
    return b"".join(frames)


_WANT = [
    c.ThinkingDelta("think"),
    c.ThinkingDelta(signature="s1"),
    c.TextDelta("Hello "),
    c.TextDelta("wörld"),
    c.ToolCallStart(0, "tu1", "f"),
    c.ToolCallDelta(0, '{"city"'),
    c.ToolCallDelta(0, ':"Paris"}'),
    c.Finish("tool_calls"),
    c.UsageUpdate(c.Usage(13, 5, cached_tokens=3)),
]


def _decode(dec: object, data: bytes, cuts: list[int]) -> list[c.Event]:
    out: list[c.Event] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        out.extend(dec.feed(data[prev:cut]))  # type: ignore[attr-defined]
        prev = cut
    return out + dec.close()  # type: ignore[attr-defined]


@given(st.lists(st.integers(min_value=0, max_value=len(_converse_stream())), max_size=40))
def test_bedrock_event_stream_any_split(cuts: list[int]) -> None:
    events = _decode(bedrock.stream_decoder(bedrock.StreamOptions()), _converse_stream(), cuts)
    assert isinstance(events[0], c.MessageStart)
    assert events[1:] == _WANT


def test_bedrock_event_stream_every_single_split_point() -> None:
    data = _converse_stream()
    for cut in range(len(data) + 1):
        assert _decode(bedrock.stream_decoder(bedrock.StreamOptions()), data, [cut])[1:] == _WANT


@pytest.mark.parametrize("where", ["prelude", "headers", "payload", "message crc"])
def test_bedrock_event_stream_crc_checked(where: str) -> None:
    good = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})
    pos = {"prelude": 2, "headers": 15, "payload": len(good) - 10, "message crc": len(good) - 1}[where]
    bad = bytearray(good)
    bad[pos] ^= 0x01
    dec = bedrock.StreamDecoder()
    events = dec.feed(event("messageStart", {"role": "assistant"}) + bytes(bad) + good)
    assert isinstance(events[-1], c.StreamError) and events[-1].error.status == 502
    assert not any(isinstance(e, c.TextDelta) for e in events), "nothing of a corrupt frame, nor after it"
    assert dec.feed(good) == [] and dec.close() == []


def test_bedrock_exception_frame() -> None:
    dec = bedrock.StreamDecoder()
    events = dec.feed(event("messageStart", {"role": "assistant"}) + exception("throttlingException", "Slow down"))
    err = events[-1]
    assert isinstance(err, c.StreamError) and (err.error.type, err.error.status, err.error.message) == (
        "rate_limit", 429, "Slow down",
    )  # fmt: skip


def test_bedrock_stream_cut_short() -> None:
    dec = bedrock.StreamDecoder()
    data = _converse_stream()
    events = dec.feed(data[: len(data) // 2]) + dec.close()
    assert isinstance(events[-1], c.StreamError) and events[-1].error.type == "network"


def _claude_chunks() -> tuple[bytes, list[dict]]:
    sse = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
                                              "content": [], "stop_reason": None, "stop_sequence": None,
                                              "usage": {"input_tokens": 9, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 4}},
        {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 9}},
    ]  # fmt: skip
    frames = b"".join(event("chunk", {"bytes": base64.b64encode(orjson.dumps(e)).decode()}) for e in sse)
    return frames, sse


def test_bedrock_claude_stream_as_anthropic_sse() -> None:
    """An Anthropic client's pass-through stream: each chunk becomes the SSE event it carries (the official
    anthropic SDK's event types read them back), usage read on the way."""
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    frames, sse = _claude_chunks()
    filt = bedrock_anthropic.SseFromEventStream()
    out = b"".join(filt.feed(frames[i : i + 13]) for i in range(0, len(frames), 13)) + filt.close()
    blocks = [b for b in out.decode().split("\n\n") if b]
    assert len(blocks) == len(sse)
    adapter: TypeAdapter[object] = TypeAdapter(RawMessageStreamEvent)
    for block, want in zip(blocks, sse, strict=True):
        name, data = block.split("\n")
        assert name == f"event: {want['type']}"
        adapter.validate_json(data[len("data: ") :])
    assert filt.usage == c.Usage(9, 4)


def test_bedrock_claude_stream_translated() -> None:
    frames, _ = _claude_chunks()
    dec = bedrock_anthropic.stream_decoder(bedrock_anthropic.StreamOptions())
    events = _decode(dec, frames, [5, 77, 300])
    assert c.TextDelta("Hi") in events and c.Finish("stop") in events
    dec = bedrock_anthropic.StreamDecoder()
    assert isinstance(dec.feed(exception("modelStreamErrorException", "boom"))[-1], c.StreamError)


def test_bedrock_frame_helper_is_what_botocore_reads() -> None:
    """The mock's frame writer against botocore's own reader (so the tests' streams are real event streams)."""
    from botocore.eventstream import EventStreamBuffer

    buf = EventStreamBuffer()
    buf.add_data(frame({":event-type": "x", "k": "värde"}, b"{}"))
    (msg,) = list(buf)
    assert msg.headers == {":event-type": "x", "k": "värde"} and msg.payload == b"{}"


def test_anthropic_version_not_sent_to_bedrock_as_header() -> None:
    assert bedrock_anthropic.EXTRA_HEADERS == [] and anthropic.EXTRA_HEADERS != []


# ------------------------------------------------------------------------------------------------------ hostile input
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_NAMES = "input model dimensions encoding_format content requests parts text taskType outputDimensionality output"
_KEYS = st.sampled_from([*_NAMES.split(), "message", "embeddings", "predictions"])


@given(st.dictionaries(_KEYS, _JSON, max_size=5))
def test_embed_requests_never_crash(data: dict) -> None:
    """Any JSON body: an embeddings request or a 400, never another exception."""
    from extproc.translation.errors import GatewayError
    from extproc.translation.formats import gemini, openai

    for fmt in (openai, gemini):
        try:
            fmt.parse_embed_request(data, model="m")
        except GatewayError as err:
            assert err.status == 400


@given(st.binary(max_size=300) | _JSON.map(orjson.dumps) | st.dictionaries(_KEYS, _JSON, max_size=4).map(orjson.dumps))
def test_cloud_answers_never_crash(body: bytes) -> None:
    """Any answer body: parsed, or a GatewayError (502 for a broken 2xx); errors of any shape keep their status."""
    from extproc.translation.errors import GatewayError

    for fmt in (azure, vertex, vertex_anthropic, bedrock, bedrock_anthropic):
        for parse in (fmt.parse_response, fmt.parse_embed_response):
            try:
                parse(body)
            except GatewayError as err:
                assert err.status in (400, 502)
        assert fmt.parse_error(418, body).status in (418, 401, 404)


@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_event_stream_garbage_never_crashes(data: bytes, cuts: list[int]) -> None:
    """Bytes that are not an event stream (or a valid one with garbage after it): events and at most one error, no
    exception, and nothing after the error."""
    for dec in (bedrock.StreamDecoder(), bedrock_anthropic.StreamDecoder()):
        events = _decode(dec, _converse_stream()[:40] + data, [c % (len(data) + 41) for c in cuts])
        errors = [i for i, e in enumerate(events) if isinstance(e, c.StreamError)]
        assert len(errors) <= 1 and (not errors or errors[0] == len(events) - 1)
