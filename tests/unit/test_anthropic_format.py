"""Unit tests for the Anthropic Messages format module, both directions.

The official ``anthropic`` SDK is used as the oracle where it can be: it produces request bodies (through a mock
transport) and consumes the gateway's responses, streams and errors.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.translation.canonical import (
    Document,
    Finish,
    Image,
    Message,
    MessageStart,
    Request,
    Response,
    ResponseFormat,
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageUpdate,
)
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic as fmt
from extproc.translation.sse import SSEParser
from tests.paths import KONG

RESPONSES = KONG / "anthropic" / "llm-v1-chat" / "responses"

MINIMAL_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


# ---------------------------------------------------------------------------------------------------------------------
# SDK harness: a real anthropic client over a mock transport
# ---------------------------------------------------------------------------------------------------------------------
def _client(handler: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://gw",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def _sdk_body(**kwargs: Any) -> bytes:
    """The exact body the SDK sends for ``messages.create(**kwargs)``."""
    seen: dict[str, bytes] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen["body"] = request.content
        return httpx2.Response(200, json=MINIMAL_MESSAGE)

    _client(handler).messages.create(**kwargs)
    return seen["body"]


def _sdk_message(body: bytes) -> anthropic.types.Message:
    return _client(
        lambda r: httpx2.Response(200, content=body, headers={"content-type": "application/json"})
    ).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])


def _sdk_stream(body: bytes) -> tuple[list[Any], anthropic.types.Message]:
    """Feed SSE bytes to the SDK's high-level stream helper: the raw events and the accumulated final message."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with _client(handler).messages.stream(
        model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        events = list(stream)
        return events, stream.get_final_message()


def _frames(body: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    p = SSEParser()
    return [(e.event, orjson.loads(e.data)) for e in p.feed(body) + p.close()]


def _check_grammar(body: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """Anthropic's stream grammar: message_start first, blocks opened in index order and never overlapping, deltas
    only into the open block, message_delta then message_stop last."""
    frames = _frames(body)
    assert frames[0][0] == "message_start"
    assert frames[-1][0] == "message_stop"
    assert frames[-2][0] == "message_delta"
    open_idx: int | None = None
    next_idx = 0
    for name, data in frames:
        assert name == data["type"]
        if name == "content_block_start":
            assert open_idx is None, "blocks overlap"
            assert data["index"] == next_idx
            open_idx = next_idx
            next_idx += 1
        elif name == "content_block_delta":
            assert data["index"] == open_idx, "delta outside the open block"
        elif name == "content_block_stop":
            assert data["index"] == open_idx
            open_idx = None
        elif name in ("message_delta", "message_stop"):
            assert open_idx is None
    return frames


# ---------------------------------------------------------------------------------------------------------------------
# Realistic provider streams (Kong has no Anthropic SSE fixture; event grammar as in the SDK's RawMessageStreamEvent)
# ---------------------------------------------------------------------------------------------------------------------
TOOL_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5-20250929","stop_sequence":null,"usage":{"input_tokens":472,'
    b'"output_tokens":2,"cache_creation_input_tokens":0,"cache_read_input_tokens":100},"content":[],'
    b'"stop_reason":null}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay, let\'s check"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" the weather \xc3\xa9\xe2\x82\xac."}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    b'"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":"{\\"location\\":"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    b'"partial_json":" \\"San Francisco, CA\\"}"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use",'
    b'"id":"toolu_02","name":"get_time","input":{}}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":2}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    b'"usage":{"output_tokens":89}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

TOOL_STREAM_EVENTS = [
    MessageStart(
        id="msg_014p7gG3wDgGV9EUtLvnow3U",
        model="claude-sonnet-4-5-20250929",
        usage=Usage(input_tokens=572, output_tokens=0, cached_tokens=100),
    ),
    TextDelta("Okay, let's check"),
    TextDelta(" the weather é€."),
    ToolCallStart(index=0, id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather"),
    ToolCallDelta(0, '{"location":'),
    ToolCallDelta(0, ' "San Francisco, CA"}'),
    ToolCallStart(index=1, id="toolu_02", name="get_time"),
    ToolCallDelta(1, "{}"),
    Finish("tool_calls"),
    UsageUpdate(Usage(input_tokens=0, output_tokens=89, cached_tokens=100)),
]

THINKING_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_01think","type":"message","role":"assistant",'
    b'"model":"claude-opus-4-1","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":50,"output_tokens":1,"cache_creation_input_tokens":20}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" step by step."}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAh=="}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"EmwKAhgB"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"42"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":2}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},'
    b'"usage":{"input_tokens":50,"output_tokens":120,"cache_creation_input_tokens":20,'
    b'"output_tokens_details":{"thinking_tokens":100}}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

THINKING_STREAM_EVENTS = [
    MessageStart(id="msg_01think", model="claude-opus-4-1", usage=Usage(input_tokens=70, cache_creation_tokens=20)),
    ThinkingDelta(text="Let me think"),
    ThinkingDelta(text=" step by step."),
    ThinkingDelta(signature="EqQBCgIYAh=="),
    ThinkingDelta(redacted="EmwKAhgB"),
    TextDelta("42"),
    Finish("stop", "END"),
    UsageUpdate(Usage(input_tokens=70, output_tokens=120, cache_creation_tokens=20, reasoning_tokens=100)),
]


def _norm(events: list[Any]) -> list[Any]:
    """GatewayError has no __eq__: compare StreamErrors by their fields."""
    return [
        ("StreamError", e.error.type, e.error.message, e.error.status) if isinstance(e, StreamError) else e
        for e in events
    ]


def _decode(body: bytes, cuts: list[int] | None = None) -> list[Any]:
    d = fmt.StreamDecoder()
    out: list[Any] = []
    prev = 0
    for c in [*(cuts or []), len(body)]:
        out += d.feed(body[prev:c])
        prev = c
    return _norm(out + d.close())


# ---------------------------------------------------------------------------------------------------------------------
# Small provider-side helpers (the upstream path and headers: tests/unit/test_upstream_requests.py)
# ---------------------------------------------------------------------------------------------------------------------
def test_rewrite_model_keeps_everything_else() -> None:
    body = b'{"max_tokens":5,"model":"alias","messages":[{"role":"user","content":"hi"}],"future_field":{"x":[1,2.5]}}'
    # Only the model value's bytes change: key order, number spelling and unknown fields stay as the client sent them.
    assert fmt.rewrite_model(body, "claude-real") == body.replace(b'"alias"', b'"claude-real"')
    spaced = b'{ "model" : "alias" ,"temperature": 1.50, "tools": [{"input_schema": {"properties": {"model": {}}}}]}'
    assert fmt.rewrite_model(spaced, "c") == spaced.replace(b'"alias"', b'"c"', 1)
    with pytest.raises(GatewayError):
        fmt.rewrite_model(b"[1]", "x")


# ---------------------------------------------------------------------------------------------------------------------
# parse_request
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_request_sdk_full_body() -> None:
    body = _sdk_body(
        model="claude-test-model",
        max_tokens=2048,
        system=[
            {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use metric."},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                        "title": "doc",
                    },
                    {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "need tool", "signature": "sig=="},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris", "n": [1, 2]},
                    },
                    {"type": "tool_use", "id": "call_2__thought__gemsig", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2__thought__gemsig",
                        "content": [
                            {"type": "text", "text": "noon"},
                            {"type": "image", "source": {"type": "url", "url": "https://x/c.png"}},
                        ],
                        "is_error": True,
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
        # SDK 2.x has no typed sampling parameters any more: older clients and extra_body still send them
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 40},
        stop_sequences=["END"],
        tools=[
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"type": "custom", "name": "get_time", "input_schema": {"type": "object"}},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        metadata={"user_id": "user-123"},
        thinking={"type": "enabled", "budget_tokens": 1024},
        output_config={"effort": "medium", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    )
    req = fmt.parse_request(body)
    assert req.model == "claude-test-model"
    assert req.max_tokens == 2048
    assert req.system == [Text("Be terse."), Text("Use metric.")]
    assert req.messages[0] == Message(
        "user",
        [
            Text("Weather here?"),
            Image(media_type="image/png", data="iVBORw0KGgo="),
            Image(url="https://example.com/a.jpg"),
            Document(media_type="application/pdf", data="JVBERi0=", name="doc"),
            Document(url="https://example.com/a.pdf"),
            Text("plain words"),
        ],
    )
    assert req.messages[1] == Message(
        "assistant",
        [
            Thinking(text="need tool", signature="sig=="),
            Thinking(redacted="opaque"),
            Text("Checking."),
            ToolCall("toolu_1", "get_weather", '{"city":"Paris","n":[1,2]}'),
            ToolCall("call_2", "get_time", "{}", signature="gemsig"),
        ],
    )
    assert req.messages[2] == Message(
        "user",
        [
            ToolResult("toolu_1", "get_weather", [Text("18C")]),
            ToolResult("call_2", "get_time", [Text("noon"), Image(url="https://x/c.png")], is_error=True),
            Text("And tomorrow?"),
        ],
    )
    assert (req.temperature, req.top_p, req.top_k, req.stop) == (0.3, 0.9, 40, ["END"])
    assert req.tools == [
        Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}),
        Tool("get_time", None, {"type": "object"}),
    ]
    assert req.tool_choice == ToolChoice("required")
    assert req.parallel_tool_calls is False
    assert req.user == "user-123"
    assert req.thinking_budget == 1024
    assert req.reasoning_effort == "medium"
    assert req.response_format == ResponseFormat(type="json_schema", schema={"type": "object"})
    assert req.stream is False


def test_parse_request_minimal_and_stream_flag() -> None:
    req = fmt.parse_request(_sdk_body(model="c", max_tokens=1, messages=[{"role": "user", "content": "hi"}]))
    assert req == Request(model="c", max_tokens=1, messages=[Message("user", [Text("hi")])])
    body = b'{"model":"c","max_tokens":1,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
    assert fmt.parse_request(body).stream is True
    body = b'{"model":"c","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}'
    assert fmt.parse_request(body, stream=True).stream is True
    # max_tokens=0 is documented by the SDK (prompt-cache pre-warming)
    assert fmt.parse_request(body.replace(b'"max_tokens":1', b'"max_tokens":0')).max_tokens == 0


def test_parse_request_system_role_messages_and_kong_input() -> None:
    """The SDK's MessageParam includes a system role; Kong's chat input uses it. Both fold into Request.system."""
    data = orjson.loads((KONG / "unit" / "requests" / "llm-v1-chat.json").read_bytes())
    data.update(model="claude-2.1", max_tokens=512, temperature=0.5)
    req = fmt.parse_request(orjson.dumps(data))
    assert req.system == [Text("You are a mathematician.")]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    expected = orjson.loads((KONG / "unit" / "expected-requests" / "anthropic" / "llm-v1-chat.json").read_bytes())
    built = orjson.loads(fmt.build_request(req, model="claude-2.1"))
    expected.pop("stream")  # only keys that are set: stream false is omitted
    assert built == expected


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, "auto", None, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", None, False),
        ({"type": "auto", "disable_parallel_tool_use": False}, "auto", None, None),
        ({"type": "any"}, "required", None, None),
        ({"type": "tool", "name": "f"}, "tool", "f", None),
        ({"type": "tool", "name": "f", "disable_parallel_tool_use": True}, "tool", "f", False),
        ({"type": "none"}, "none", None, None),
    ],
)
def test_parse_tool_choice(choice: dict[str, Any], mode: str, name: str | None, parallel: bool | None) -> None:
    body = _sdk_body(
        model="c",
        max_tokens=5,
        messages=[{"role": "user", "content": "x"}],
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice=choice,
    )
    req = fmt.parse_request(body)
    assert req.tool_choice == ToolChoice(mode, name)
    assert req.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("thinking", "budget"),
    [
        ({"type": "enabled", "budget_tokens": 2000}, 2000),
        ({"type": "disabled"}, 0),
        ({"type": "adaptive"}, -1),
        ({"type": "adaptive", "display": "omitted"}, -1),
    ],
)
def test_parse_thinking(thinking: dict[str, Any], budget: int | None) -> None:
    body = _sdk_body(model="c", max_tokens=4000, messages=[{"role": "user", "content": "x"}], thinking=thinking)
    assert fmt.parse_request(body).thinking_budget == budget


@pytest.mark.parametrize(
    ("effort", "canonical"),
    [("low", "low"), ("medium", "medium"), ("high", "high"), ("xhigh", "xhigh"), ("max", "max")],
)
def test_parse_effort(effort: str, canonical: str) -> None:
    body = _sdk_body(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}], output_config={"effort": effort}
    )
    assert fmt.parse_request(body).reasoning_effort == canonical


def _body(**over: Any) -> bytes:
    data: dict[str, Any] = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    data.update(over)
    return orjson.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "JSON object"),
        (_body(max_tokens=...), "max_tokens", "max_tokens"),
        (_body(max_tokens="10"), "max_tokens", "max_tokens"),
        (_body(max_tokens=-1), "max_tokens", "max_tokens"),
        (_body(max_tokens=True), "max_tokens", "max_tokens"),
        (_body(model=...), "model", "model"),
        (_body(model=5), "model", "model"),
        (_body(messages=[]), "messages", "non-empty"),
        (_body(messages="hi"), "messages", "non-empty"),
        (_body(messages=[{"role": "tool", "content": "x"}]), "messages.0.role", "'user' or 'assistant'"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages.0.content", "string or a list"),
        (_body(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages.0.content.0.type", "'video'"),
        (_body(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages.0.content.0.type", "required"),
        (
            _body(
                messages=[
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}
                ]
            ),
            "messages.0.content.0.tool_use_id",
            "matches no tool_use",
        ),
        (
            _body(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]),
            "messages.0.content.0",
            "assistant",
        ),
        (
            _body(
                messages=[
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "{}"}]}
                ]
            ),
            "messages.0.content.0.input",
            "object",
        ),
        (
            _body(
                messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]}]
            ),
            "messages.0.content.0.source.type",
            "not supported",
        ),
        (
            _body(
                messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]
            ),
            "messages.0.content.0.source.media_type",
            "media_type",
        ),
        (_body(system=5), "system", "system"),
        (_body(system=[{"type": "image"}]), "system.0", "text block"),
        (_body(temperature=1.5), "temperature", "between 0 and 1"),
        (_body(top_p="x"), "top_p", "top_p"),
        (_body(top_k=1.5), "top_k", "top_k"),
        (_body(stop_sequences="END"), "stop_sequences", "list of strings"),
        (
            _body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
            "tools.0",
            "server tool 'web_search_20250305' is not supported across providers",
        ),
        (_body(tools=[{"name": "f"}]), "tools.0.input_schema", "input_schema"),
        (_body(tool_choice={"type": "sometimes"}), "tool_choice.type", "tool_choice"),
        (_body(tool_choice={"type": "tool"}), "tool_choice.name", "name"),
        (_body(thinking={"type": "enabled", "budget_tokens": 100}), "thinking.budget_tokens", "1024"),
        (_body(thinking={"type": "enabled", "budget_tokens": 2000}), "thinking.budget_tokens", "less than max_tokens"),
        (_body(thinking={"type": "sometimes"}), "thinking.type", "thinking.type"),
        (_body(output_config={"effort": "extreme"}), "output_config.effort", "effort"),
        (_body(output_config={"format": {"type": "json_object"}}), "output_config.format", "json_schema"),
        (_body(metadata={"user_id": 5}), "metadata.user_id", "user_id"),
        (_body(stream="yes"), "stream", "boolean"),
    ],
)
def test_parse_request_errors(body: bytes, param: str | None, needle: str) -> None:
    with pytest.raises(GatewayError) as ei:
        fmt.parse_request(body)
    err = ei.value
    assert (err.type, err.status) == ("invalid_request", 400)
    assert err.param == param
    assert needle in err.message


def test_tool_result_must_follow_its_tool_use() -> None:
    """A tool_use appearing only later does not satisfy an earlier tool_result."""
    body = _body(
        messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        ]
    )
    with pytest.raises(GatewayError):
        fmt.parse_request(body)


# ---------------------------------------------------------------------------------------------------------------------
# build_request
# ---------------------------------------------------------------------------------------------------------------------
def _full_request() -> Request:
    return Request(
        model="gpt-4o",
        system=[Text("Be terse."), Text("Use metric.")],
        messages=[
            Message(
                "user", [Text("Look:"), Image(media_type="image/jpeg", data="/9j/4AA="), Image(url="https://x/y.png")]
            ),
            Message(
                "assistant",
                [
                    Thinking(text="foreign reasoning"),  # no signature: came from another provider, dropped
                    Thinking(text="mine", signature="sig"),
                    Thinking(redacted="opaque"),
                    Text(""),
                    ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                    ToolCall("call_2", "get_time", "", signature="gem"),
                ],
            ),
            # OpenAI shape: one tool message per result, then a user text: merged, results first
            Message("user", [ToolResult("call_1", "get_weather", [Text("18C")])]),
            Message("user", [Text("thanks"), ToolResult("call_2", "get_time", [Text("a"), Text("b")], is_error=True)]),
            Message("assistant", [Thinking(text="only foreign thinking")]),  # empty after dropping: skipped
            Message(
                "user",
                [Document(media_type="application/pdf", data="JVBERi0=", name="spec"), Document(url="https://x/d.pdf")],
            ),
        ],
        max_tokens=None,
        temperature=1.7,
        top_p=0.8,
        top_k=20,
        stop=["END"],
        tools=[
            Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}}),
            Tool("get_time"),
        ],
        tool_choice=ToolChoice("auto"),
        parallel_tool_calls=False,
        stream=True,
        user="u-1",
        response_format=ResponseFormat(type="json_schema", schema={"type": "object"}, name="out"),
        reasoning_effort="minimal",
        n=1,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )


def test_build_request_full() -> None:
    out = orjson.loads(fmt.build_request(_full_request(), model="claude-sonnet-4-5"))
    assert out == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "Be terse.\n\nUse metric.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AA="}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "mine", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "thanks"},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                        "title": "spec",
                    },
                    {"type": "document", "source": {"type": "url", "url": "https://x/d.pdf"}},
                ],
            },
        ],
        "stop_sequences": ["END"],
        "tools": [
            {
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "u-1"},
        "stream": True,
        # claude-sonnet-4-5 predates adaptive thinking: reasoning effort becomes a budget; sampling is left out then.
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {}, "additionalProperties": False},
            }
        },
    }


def test_build_request_is_accepted_by_the_sdk_types() -> None:
    """The body the gateway builds parses back as an Anthropic request (our own parser mirrors the API's checks)."""
    body = fmt.build_request(_full_request(), model="claude")
    req = fmt.parse_request(body)
    assert req.model == "claude"
    assert req.messages[2].parts[0] == ToolResult("call_1", "get_weather", [Text("18C")])


def test_build_request_minimal_only_set_keys() -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], max_tokens=50)
    assert orjson.loads(fmt.build_request(req, model="claude")) == {
        "model": "claude",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert (
        orjson.loads(
            fmt.build_request(
                Request(model="x", messages=[Message("user", [Text("hi")])]), model="c", default_max_tokens=99
            )
        )["max_tokens"]
        == 99
    )


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (ToolChoice("tool", "f"), False, {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
        (ToolChoice("none"), False, {"type": "none"}),
        (ToolChoice("none"), True, {"type": "none"}),
    ],
)
def test_build_tool_choice(choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    req = Request(
        model="x",
        messages=[Message("user", [Text("hi")])],
        tools=[Tool("f")],
        tool_choice=choice,
        parallel_tool_calls=parallel,
    )
    out = orjson.loads(fmt.build_request(req, model="c"))
    assert out.get("tool_choice") == expected


def test_build_request_tool_choice_needs_tools() -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], tool_choice=ToolChoice("none"))
    assert "tool_choice" not in orjson.loads(fmt.build_request(req, model="c"))


def test_build_request_thinking() -> None:
    base = {"model": "x", "messages": [Message("user", [Text("hi")])], "temperature": 0.2, "top_k": 5, "top_p": 0.5}
    out = orjson.loads(fmt.build_request(Request(**base, thinking_budget=8000), model="c"))
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert out["max_tokens"] == 8000 + 4096  # budget must stay below max_tokens
    assert not {"temperature", "top_k", "top_p"} & out.keys()  # refused by Anthropic while thinking
    out = orjson.loads(fmt.build_request(Request(**base, thinking_budget=2000, max_tokens=3000), model="c"))
    assert out["max_tokens"] == 3000
    out = orjson.loads(fmt.build_request(Request(**base, thinking_budget=0), model="c"))
    assert out["thinking"] == {"type": "disabled"}
    assert out["temperature"] == 0.2
    assert "thinking" not in orjson.loads(fmt.build_request(Request(**base), model="c"))


def test_build_request_json_object_and_text_formats_are_dropped() -> None:
    for rf in (ResponseFormat(type="json_object"), ResponseFormat(type="text")):
        req = Request(model="x", messages=[Message("user", [Text("hi")])], response_format=rf)
        assert "output_config" not in orjson.loads(fmt.build_request(req, model="c"))


def test_build_request_text_document_and_tool_result_blocks() -> None:
    req = Request(
        model="x",
        messages=[
            Message("assistant", [ToolCall("t1", "f", "{}")]),
            Message(
                "user",
                [
                    ToolResult("t1", "f", [Image(media_type="image/png", data="AAA="), Text("")]),
                    Document(media_type="text/plain", data="aGVsbG8="),
                ],
            ),
            Message("assistant", [ToolCall("t2", "f", "{}")]),
            Message("user", [ToolResult("t2", "f", [])]),
        ],
    )
    out = orjson.loads(fmt.build_request(req, model="c"))
    assert out["messages"][1]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "t1",
            "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}}],
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}},
    ]
    assert out["messages"][3]["content"] == [{"type": "tool_result", "tool_use_id": "t2"}]


@pytest.mark.parametrize(
    "part",
    [
        ToolCall("t", "f", "{not json"),
        ToolCall("t", "f", "[1, 2]"),
        Image(data="AAA="),
        Image(),
        Document(),
        Document(media_type="text/plain", data="%%%"),
    ],
)
def test_build_request_errors(part: Any) -> None:
    req = Request(model="x", messages=[Message("assistant", [part])])
    with pytest.raises(GatewayError) as ei:
        fmt.build_request(req, model="c")
    assert (ei.value.type, ei.value.status) == ("invalid_request", 400)


def test_build_request_round_trip() -> None:
    body = _sdk_body(
        model="c",
        max_tokens=4000,
        system="sys",
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
        ],
        tools=[
            {
                "name": "f",
                "description": "d",
                "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
            }
        ],
        tool_choice={"type": "tool", "name": "f"},
        stop_sequences=["x"],
        extra_body={"temperature": 0.5},
        thinking={"type": "disabled"},
        metadata={"user_id": "u"},
        output_config={"effort": "high"},
    )
    assert orjson.loads(fmt.build_request(fmt.parse_request(body), model="c")) == orjson.loads(body)


# ---------------------------------------------------------------------------------------------------------------------
# parse_response
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_response_kong_mock_good() -> None:
    resp = fmt.parse_response((RESPONSES / "good.json").read_bytes())
    assert resp.parts == [Text("The sum of 1 + 1 is 2.")]
    assert resp.model == "claude-2.1"
    assert resp.finish_reason == "stop"
    assert resp.stop_sequence is None  # the mock's "stop_sequence": "string" is ignored with end_turn
    assert resp.usage == Usage()
    assert resp.id == ""


def test_parse_response_kong_edge_cases() -> None:
    assert fmt.parse_response((RESPONSES / "no_usage_response.json").read_bytes()).usage is None
    assert fmt.parse_response((RESPONSES / "malformed_usage_response.json").read_bytes()).usage == Usage()
    real = fmt.parse_response((KONG / "unit" / "real-responses" / "anthropic" / "llm-v1-chat.json").read_bytes())
    assert (real.finish_reason, real.stop_sequence) == ("stop", None)
    assert real.parts[0].text.startswith("You cannot divide by zero")
    full = fmt.parse_response((KONG / "anthropic" / "request-transformer" / "response-in-json.json").read_bytes())
    assert full.id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert full.usage == Usage(input_tokens=10, output_tokens=25)
    assert orjson.loads(full.parts[0].text)["persons"][0]["name"] == "Kong A"


def test_parse_response_blocks_usage_and_stop_sequence() -> None:
    body = orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-4-1",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Let me check", "citations": None},
                {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "x", "n": 2}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            ],
            "stop_reason": "stop_sequence",
            "stop_sequence": "###",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 30,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 5,
                "output_tokens_details": {"thinking_tokens": 12},
            },
        }
    )
    resp = fmt.parse_response(body)
    assert resp == Response(
        id="msg_1",
        model="claude-opus-4-1",
        parts=[
            Thinking(text="hmm", signature="sig"),
            Thinking(redacted="opaque"),
            Text("Let me check"),
            ToolCall("toolu_9", "lookup", '{"q":"x","n":2}'),
        ],
        finish_reason="stop",
        stop_sequence="###",
        usage=Usage(
            input_tokens=115, output_tokens=30, cached_tokens=100, cache_creation_tokens=5, reasoning_tokens=12
        ),
    )


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_parse_response_stop_reasons(stop: str | None, reason: str) -> None:
    assert fmt.parse_response(orjson.dumps({**MINIMAL_MESSAGE, "stop_reason": stop})).finish_reason == reason


@pytest.mark.parametrize(
    "body",
    [
        (RESPONSES / "bad_upstream_response.json").read_bytes(),
        (RESPONSES / "internal_server_error.html").read_bytes(),
        (RESPONSES / "bad_request.json").read_bytes(),
        b"",
        b"[]",
        b'{"type":"error","error":{"type":"api_error","message":"x"}}',
        b'{"content":[{"no_type":1}]}',
        b'{"content":[5]}',
        b'{"content":"text"}',
    ],
)
def test_parse_response_not_a_message(body: bytes) -> None:
    with pytest.raises(GatewayError) as ei:
        fmt.parse_response(body)
    assert (ei.value.type, ei.value.status) == ("server_error", 502)


# ---------------------------------------------------------------------------------------------------------------------
# build_response (checked through the SDK)
# ---------------------------------------------------------------------------------------------------------------------
def test_build_response_through_sdk() -> None:
    resp = Response(
        id="chatcmpl-1",
        model="gpt-4o",
        parts=[
            Thinking(text="reasoned", signature="s1"),
            Thinking(text="foreign"),
            Thinking(redacted="opaque"),
            Text("Calling."),
            ToolCall("call_1", "f", '{"a":[1,2]}'),
            ToolCall("fc_2", "g", "", signature="gemsig"),
        ],
        finish_reason="tool_calls",
        usage=Usage(
            input_tokens=120, output_tokens=40, cached_tokens=100, cache_creation_tokens=5, reasoning_tokens=10
        ),
    )
    msg = _sdk_message(fmt.build_response(resp, model="claude-alias"))
    assert msg.id == "chatcmpl-1"
    assert msg.model == "claude-alias"
    assert msg.stop_reason == "tool_use"
    assert msg.stop_sequence is None
    c = msg.content
    assert (c[0].type, c[0].thinking, c[0].signature) == ("thinking", "reasoned", "s1")
    assert (c[1].type, c[1].thinking, c[1].signature) == ("thinking", "foreign", "")
    assert (c[2].type, c[2].data) == ("redacted_thinking", "opaque")
    assert (c[3].type, c[3].text) == ("text", "Calling.")
    assert (c[4].type, c[4].id, c[4].name, c[4].input) == ("tool_use", "call_1", "f", {"a": [1, 2]})
    assert (c[5].id, c[5].input) == ("fc_2__thought__gemsig", {})
    u = msg.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        15,
        40,
        100,
        5,
    )
    assert u.output_tokens_details.thinking_tokens == 10
    # and it parses back to the same canonical content (ids carry the thought signature for the client)
    back = fmt.parse_response(fmt.build_response(resp, model="m"))
    assert back.usage == resp.usage
    assert back.parts[3:5] == resp.parts[3:5]


@pytest.mark.parametrize(
    ("reason", "stop_sequence", "parts", "stop_reason", "out_sequence"),
    [
        ("stop", None, [Text("x")], "end_turn", None),
        ("stop", "END", [Text("x")], "stop_sequence", "END"),
        ("length", "END", [Text("x")], "max_tokens", None),
        ("tool_calls", None, [ToolCall("a", "f")], "tool_use", None),
        ("stop", None, [ToolCall("a", "f")], "tool_use", None),  # Gemini says STOP when it calls functions
        ("content_filter", None, [], "refusal", None),
    ],
)
def test_build_response_stop_reasons(
    reason: str, stop_sequence: str | None, parts: list[Any], stop_reason: str, out_sequence: str | None
) -> None:
    out = orjson.loads(
        fmt.build_response(
            Response(id="", model="", parts=parts, finish_reason=reason, stop_sequence=stop_sequence), model="m"
        )
    )
    assert (out["stop_reason"], out["stop_sequence"]) == (stop_reason, out_sequence)
    assert out["id"].startswith("msg_")
    assert out["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_build_response_bad_tool_arguments() -> None:
    cut = Response(id="x", model="m", parts=[ToolCall("a", "f", '{"q": "trunc')], finish_reason="length")
    assert orjson.loads(fmt.build_response(cut, model="m"))["content"][0]["input"] == {}
    bad = Response(id="x", model="m", parts=[ToolCall("a", "f", "not json")], finish_reason="tool_calls")
    with pytest.raises(GatewayError) as ei:
        fmt.build_response(bad, model="m")
    assert ei.value.status == 502


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gtype", "status", "atype", "exc"),
    [
        ("invalid_request", 400, "invalid_request_error", anthropic.BadRequestError),
        ("auth", 401, "authentication_error", anthropic.AuthenticationError),
        ("permission", 403, "permission_error", anthropic.PermissionDeniedError),
        ("not_found", 404, "not_found_error", anthropic.NotFoundError),
        ("unknown_model", 404, "not_found_error", anthropic.NotFoundError),
        ("request_too_large", 413, "request_too_large", anthropic.APIStatusError),
        ("rate_limit", 429, "rate_limit_error", anthropic.RateLimitError),
        ("server_error", 500, "api_error", anthropic.InternalServerError),
        ("network", 502, "api_error", anthropic.InternalServerError),
        ("overloaded", 503, "overloaded_error", anthropic.InternalServerError),
        ("overloaded", 529, "overloaded_error", anthropic.OverloadedError),
        ("timeout", 504, "timeout_error", anthropic.InternalServerError),
    ],
)
def test_build_error_sdk_raises(gtype: str, status: int, atype: str, exc: type[Exception]) -> None:
    err = GatewayError(gtype, f"boom {gtype}", status)
    body = fmt.build_error(err, request_id="req_123")
    assert orjson.loads(body) == {
        "type": "error",
        "error": {"type": atype, "message": f"boom {gtype}"},
        "request_id": "req_123",
    }
    client = _client(lambda r: httpx2.Response(status, content=body, headers={"content-type": "application/json"}))
    with pytest.raises(exc) as ei:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert ei.value.status_code == status
    assert ei.value.type == atype
    assert ei.value.api_message == f"boom {gtype}"


def test_parse_error_fixtures_and_bodies() -> None:
    e = fmt.parse_error(400, (RESPONSES / "bad_request.json").read_bytes())
    assert (e.type, e.message, e.status, e.code) == ("invalid_request", "Invalid request", 400, "invalid_request_error")
    e = fmt.parse_error(401, (RESPONSES / "unauthorized.json").read_bytes())
    assert (e.type, e.message, e.status) == ("auth", "Invalid API Key", 401)
    e = fmt.parse_error(500, (RESPONSES / "internal_server_error.html").read_bytes())
    assert (e.type, e.status) == ("server_error", 500)
    assert e.message == "provider returned HTTP 500 with non-JSON body"
    e = fmt.parse_error(502, b"")
    assert (e.type, e.status) == ("network", 502)
    e = fmt.parse_error(500, (RESPONSES / "bad_upstream_response.json").read_bytes())
    assert (e.type, e.status) == ("server_error", 500)
    real = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHo"}'
    e = fmt.parse_error(529, real)
    assert (e.type, e.message, e.status) == ("overloaded", "Overloaded", 529)
    e = fmt.parse_error(
        400,
        b'{"type":"error","error":{"type":"invalid_request_error","message":"m","details":{"error_code":"prefill_not_supported"}}}',
    )
    assert e.code == "prefill_not_supported"
    e = fmt.parse_error(418, b'{"error":{"type":"teapot_error"}}')
    assert (e.type, e.status, e.message) == ("invalid_request", 418, "provider error teapot_error")
    e = fmt.parse_error(402, b'{"type":"error","error":{"type":"billing_error","message":"pay"}}')
    assert (e.type, e.status) == ("permission", 402)


# ---------------------------------------------------------------------------------------------------------------------
# StreamDecoder
# ---------------------------------------------------------------------------------------------------------------------
def test_decoder_tool_stream() -> None:
    assert _decode(TOOL_STREAM) == TOOL_STREAM_EVENTS


def test_decoder_thinking_stream() -> None:
    assert _decode(THINKING_STREAM) == THINKING_STREAM_EVENTS


def test_decoder_crlf_and_no_space() -> None:
    crlf = TOOL_STREAM.replace(b"\n", b"\r\n").replace(b"data: ", b"data:")
    assert _decode(crlf) == TOOL_STREAM_EVENTS


@given(data=st.data())
def test_decoder_split_anywhere(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from([TOOL_STREAM, THINKING_STREAM, TOOL_STREAM.replace(b"\n", b"\r\n")]))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=40)))
    assert _decode(body, cuts) == _decode(body)


def test_decoder_byte_by_byte() -> None:
    assert _decode(THINKING_STREAM, list(range(len(THINKING_STREAM)))) == THINKING_STREAM_EVENTS


def test_decoder_error_event() -> None:
    body = TOOL_STREAM[: TOOL_STREAM.index(b"event: content_block_stop")] + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    events = _decode(body)
    assert events[-1] == ("StreamError", "overloaded", "Overloaded", 529)
    assert sum(1 for e in events if isinstance(e, tuple)) == 1  # no extra "ended early" error after it


def test_decoder_ended_early() -> None:
    body = TOOL_STREAM[: TOOL_STREAM.index(b"event: message_stop")]
    events = _decode(body)
    assert events[:-1] == TOOL_STREAM_EVENTS
    assert events[-1] == ("StreamError", "network", "provider stream ended early", 502)


def test_decoder_garbage_data() -> None:
    events = _decode(b"event: message_start\ndata: {oops\n\n")
    assert events == [
        ("StreamError", "server_error", "provider sent an invalid stream: invalid JSON in message_start event", 502)
    ]
    events = _decode(b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":5}\n\n')
    assert events[0][0] == "StreamError" and events[0][3] == 502
    assert len(events) == 1


def _sse(obj: dict[str, Any]) -> bytes:
    return b"event: " + obj["type"].encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def test_decoder_ignores_unknown_events_and_initial_block_content() -> None:
    body = b"".join(
        _sse(e)
        for e in [
            {
                "type": "message_start",
                "message": {"id": "m", "model": "c", "usage": {"input_tokens": 3, "output_tokens": 1}},
            },
            {"type": "future_event"},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "pre"}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {}}},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
            },
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
            },
            {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
            {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}},
            {"type": "message_stop"},
            {"type": "content_block_start", "index": 3, "content_block": {"type": "text", "text": "after stop"}},
        ]
    )
    assert _decode(body) == [
        MessageStart("m", "c", Usage(input_tokens=3)),
        TextDelta("pre"),
        ToolCallStart(0, "t", "f"),
        ToolCallDelta(0, '{"a":1}'),
        Finish("length"),
        UsageUpdate(Usage(output_tokens=7)),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# StreamEncoder
# ---------------------------------------------------------------------------------------------------------------------
def _encode(events: list[Any], model: str = "claude-alias") -> bytes:
    enc = fmt.StreamEncoder(model=model, include_usage=False)
    return b"".join(enc.encode(e) for e in events) + enc.finish()


def test_encoder_relays_a_decoded_stream_to_the_sdk() -> None:
    body = _encode(TOOL_STREAM_EVENTS)
    _check_grammar(body)
    _, msg = _sdk_stream(body)
    assert msg.id == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert msg.model == "claude-alias"
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[0].text == "Okay, let's check the weather é€."
    assert (msg.content[1].id, msg.content[1].name, msg.content[1].input) == (
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "get_weather",
        {"location": "San Francisco, CA"},
    )
    assert msg.content[2].input == {}
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (472, 100, 89)
    # decode(encode(x)) == x, modulo the model name the client asked for
    again = _decode(body)
    assert again[0] == MessageStart(
        "msg_014p7gG3wDgGV9EUtLvnow3U", "claude-alias", Usage(input_tokens=572, cached_tokens=100)
    )
    assert again[1:-1] == [TextDelta("Okay, let's check"), *TOOL_STREAM_EVENTS[2:-1]]
    assert again[-1] == UsageUpdate(Usage(input_tokens=572, output_tokens=89, cached_tokens=100))


def test_encoder_thinking_to_sdk() -> None:
    body = _encode(THINKING_STREAM_EVENTS)
    _check_grammar(body)
    _, msg = _sdk_stream(body)
    c = msg.content
    assert (c[0].type, c[0].thinking, c[0].signature) == ("thinking", "Let me think step by step.", "EqQBCgIYAh==")
    assert (c[1].type, c[1].data) == ("redacted_thinking", "EmwKAhgB")
    assert (c[2].type, c[2].text) == ("text", "42")
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    assert (msg.usage.input_tokens, msg.usage.cache_creation_input_tokens, msg.usage.output_tokens) == (50, 20, 120)
    assert msg.usage.output_tokens_details.thinking_tokens == 100
    assert _decode(body)[1:] == THINKING_STREAM_EVENTS[1:]


def test_encoder_openai_style_order_usage_after_finish_and_no_message_start() -> None:
    """OpenAI providers: no MessageStart with usage, tool calls one after another, usage chunk after finish."""
    events = [
        ToolCallStart(0, "call_a", "f"),
        ToolCallDelta(0, '{"x"'),
        ToolCallDelta(0, ":1}"),
        ToolCallStart(1, "call_b", "g", signature="gs"),
        ToolCallDelta(1, "{}"),
        Finish("tool_calls"),
        UsageUpdate(Usage(input_tokens=30, output_tokens=9, cached_tokens=10)),
    ]
    body = _encode(events)
    frames = _check_grammar(body)
    assert frames[0][1]["message"]["id"].startswith("msg_")
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 0
    _, msg = _sdk_stream(body)
    assert [(b.id, b.input) for b in msg.content] == [("call_a", {"x": 1}), ("call_b__thought__gs", {})]
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (20, 10, 9)
    # usage before finish gives the same bytes apart from the generated id
    swapped = _encode([*events[:-2], events[-1], events[-2]])
    assert frames[1:] == _frames(swapped)[1:]


def test_encoder_tool_fragments_out_of_order() -> None:
    """Fragments of a call not started yet wait for its start; fragments for a closed block are never sent into it."""
    events = [
        ToolCallDelta(1, '{"early":'),  # call 1 has not started: held
        ToolCallStart(0, "a", "f"),
        ToolCallDelta(0, '{"k":'),
        ToolCallStart(1, "b", "g"),  # closes call 0's block, opens 1 and flushes what was held
        ToolCallDelta(1, "true}"),
        ToolCallDelta(0, '"v"}'),  # call 0's block is closed: dropped, not sent into it
        ToolCallStart(1, "b", "g"),  # a repeated start is ignored
        ToolCallDelta(2, "{}"),  # never started: dropped at the end
        TextDelta("done"),
        Finish("tool_calls"),
    ]
    frames = _check_grammar(_encode(events))
    deltas = [
        (d["index"], d["delta"]["partial_json"])
        for n, d in frames
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    ]
    assert deltas == [(0, '{"k":'), (1, '{"early":'), (1, "true}")]
    starts = [d["content_block"]["type"] for n, d in frames if n == "content_block_start"]
    assert starts == ["tool_use", "tool_use", "text"]


def test_encoder_text_interleaved_with_thinking_never_overlaps() -> None:
    events = [
        MessageStart("msg_x", "prov", Usage(input_tokens=5)),
        ThinkingDelta(text="a"),
        TextDelta("b"),
        ThinkingDelta(text="c"),
        ThinkingDelta(signature="sig"),
        TextDelta(""),
        ThinkingDelta(),
        TextDelta("d"),
        ToolCallStart(0, "t", "f"),
        TextDelta("e"),
        Finish("stop"),
    ]
    frames = _check_grammar(_encode(events))
    starts = [d["content_block"]["type"] for n, d in frames if n == "content_block_start"]
    assert starts == ["thinking", "text", "thinking", "text", "tool_use", "text"]
    assert frames[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert frames[0][1]["message"]["id"] == "msg_x"


@pytest.mark.parametrize(
    ("finish", "stop_reason", "stop_sequence"),
    [
        (Finish("stop"), "end_turn", None),
        (Finish("stop", "###"), "stop_sequence", "###"),
        (Finish("length"), "max_tokens", None),
        (Finish("content_filter"), "refusal", None),
        (Finish("tool_calls"), "tool_use", None),
        (None, "end_turn", None),
    ],
)
def test_encoder_finish_reasons(finish: Finish | None, stop_reason: str, stop_sequence: str | None) -> None:
    events: list[Any] = [TextDelta("x")] + ([finish] if finish else [])
    frames = _check_grammar(_encode(events))
    assert frames[-2][1]["delta"] == {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    assert frames[-2][1]["usage"] == {"output_tokens": 0}


def test_encoder_finish_idempotent_and_empty_stream() -> None:
    enc = fmt.StreamEncoder(model="m")
    body = enc.finish()
    frames = _check_grammar(body)
    assert [n for n, _ in frames] == ["message_start", "message_delta", "message_stop"]
    assert enc.finish() == b""
    assert enc.encode(TextDelta("late")) == b""
    assert enc.error(GatewayError("network", "x", 502)) == b""


def test_encoder_error_raises_in_sdk() -> None:
    enc = fmt.StreamEncoder(model="m")
    body = enc.encode(MessageStart("msg_1", "p")) + enc.encode(TextDelta("partial"))
    body += enc.encode(StreamError(GatewayError("overloaded", "Overloaded", 529)))
    assert enc.finish() == b""
    assert _frames(body)[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    with pytest.raises(anthropic.APIStatusError) as ei:
        _sdk_stream(body)
    assert ei.value.type == "overloaded_error"
    assert ei.value.api_message == "Overloaded"
    # an error before anything else is sent still raises
    with pytest.raises(anthropic.APIStatusError):
        _sdk_stream(fmt.StreamEncoder(model="m").error(GatewayError("rate_limit", "slow down", 429)))


_events = st.lists(
    st.one_of(
        st.builds(TextDelta, st.text(max_size=5)),
        st.builds(ThinkingDelta, st.text(max_size=5), st.none() | st.text(max_size=3), st.none() | st.text(max_size=3)),
        st.builds(ToolCallStart, st.integers(0, 3), st.text("abc", min_size=1, max_size=3), st.just("f")),
        st.builds(ToolCallDelta, st.integers(0, 3), st.sampled_from(["", "{", '"a"', ":1", "}"])),
        st.builds(Finish, st.sampled_from(["stop", "length", "tool_calls", "content_filter"])),
        st.builds(UsageUpdate, st.builds(Usage, st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))),
    ),
    max_size=25,
)


@given(events=_events, start=st.booleans())
def test_encoder_any_event_order_keeps_the_grammar(events: list[Any], start: bool) -> None:
    body = _encode(([MessageStart("msg_p", "p")] if start else []) + events)
    _check_grammar(body)
    decoded = _decode(body)
    assert not any(isinstance(e, tuple) for e in decoded)  # no StreamError: the SDK-side decoder accepts it
