"""Unit tests for the OpenAI Chat Completions format module, both directions, against the official SDK's types."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

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
from extproc.translation.formats import openai as fmt
from tests.paths import KONG

OPENAI = KONG / "openai" / "llm-v1-chat"
STREAM_BIN = KONG / "unit" / "streaming-chunk-formats" / "text-event-stream" / "input.bin"
STREAM_FRAME = KONG / "unit" / "real-stream-frames" / "openai" / "llm-v1-chat.txt"


def req_bytes(**fields: Any) -> bytes:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return orjson.dumps(body)


def parse(**fields: Any) -> Request:
    return fmt.parse_request(req_bytes(**fields))


def bad(body: bytes, param: str | None = "unset") -> GatewayError:
    with pytest.raises(GatewayError) as info:
        fmt.parse_request(body)
    err = info.value
    assert err.type == "invalid_request" and err.status == 400
    if param != "unset":
        assert err.param == param
    return err


def sdk_client(handler: Any) -> openai.OpenAI:
    transport = httpx2.MockTransport(handler)
    return openai.OpenAI(
        api_key="k", base_url="http://gw/v1", http_client=httpx2.Client(transport=transport), max_retries=0
    )


# ---------------------------------------------------------------------------------------------------------------------
# parse_request
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_fixture_good() -> None:
    req = fmt.parse_request((OPENAI / "requests" / "good.json").read_bytes(), model="gpt-4o")
    assert req.model == "gpt-4o"
    assert req.system and isinstance(req.system[0], Text)
    assert [m.role for m in req.messages] == ["user"]
    assert not req.stream


def test_parse_fixture_multi_turn() -> None:
    req = fmt.parse_request((KONG / "unit" / "requests" / "llm-v1-chat.json").read_bytes(), model="m")
    assert req.system == [Text("You are a mathematician.")]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert req.messages[-1].parts == [Text("Why can't you divide by zero?")]


def test_parse_fixture_multimodal_url() -> None:
    req = fmt.parse_request((OPENAI / "requests" / "good_multi_modal.json").read_bytes(), model="m")
    parts = req.messages[0].parts
    assert parts[0] == Text("What's in this image?")
    assert isinstance(parts[1], Image) and parts[1].url and parts[1].url.startswith("https://upload")


def test_parse_fixture_stream_with_functions() -> None:
    req = fmt.parse_request((OPENAI / "requests" / "good-stream-with-functions.json").read_bytes(), model="m")
    assert req.stream and req.n == 1 and req.temperature == 0.7
    assert [t.name for t in req.tools] == ["add", "multiply"]
    assert req.tools[0].description == "Adds a and b." and req.tools[0].parameters["required"] == ["a", "b"]
    assert not req.include_usage


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tool_choice_auto.json", ToolChoice("auto")),
        ("tool_choice_none.json", ToolChoice("none")),
        ("tool_choice_required.json", ToolChoice("required")),
        ("tool_choice_object_function.json", ToolChoice("tool", "my_function")),
    ],
)
def test_parse_fixture_tool_choice(name: str, expected: ToolChoice) -> None:
    req = fmt.parse_request((OPENAI / "requests" / name).read_bytes(), model="m")
    assert req.tool_choice == expected


def test_parse_fixture_tool_turns() -> None:
    req = fmt.parse_request((KONG / "native" / "target" / "target-openai-complete.json").read_bytes())
    assert req.model == "gemini-1.5-pro"
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "user", "assistant", "user"]
    assistant = req.messages[1].parts
    assert assistant == [
        Text("Sure! I will turn them on now."),
        ToolCall("tooluse_12j842hSE-_gkri61ab2A", "enable_lights", "{}"),
    ]
    assert req.messages[2].parts == [
        ToolResult("tooluse_12j842hSE-_gkri61ab2A", "enable_lights", [Text('{"success":true}')])
    ]
    assert req.tools[1].parameters["required"] == ["rgb_hex"]


def test_parse_fixture_bad_request() -> None:
    bad((OPENAI / "requests" / "bad_request.json").read_bytes(), param="messages")


def test_parse_system_and_developer_anywhere_keep_order() -> None:
    req = parse(
        messages=[
            {"role": "system", "content": "a"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]},
            {"role": "assistant", "content": "ok"},
        ]
    )
    assert req.system == [Text("a"), Text("b"), Text("c")]
    assert [m.role for m in req.messages] == ["user", "assistant"]


def test_parse_user_parts() -> None:
    req = parse(
        messages=[
            {
                "role": "user",
                "name": "bob",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg==", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {
                        "type": "file",
                        "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                    },
                    {"type": "file", "file": {"file_data": "aGVsbG8=", "filename": "notes.txt"}},
                ],
            }
        ]
    )
    assert req.messages[0].parts == [
        Text("look"),
        Image(media_type="image/webp", data="UklGRg=="),
        Image(url="https://x/y.png"),
        Document(media_type="application/pdf", data="JVBERi0=", name="a.pdf"),
        Document(media_type="text/plain", data="aGVsbG8=", name="notes.txt"),
    ]


@pytest.mark.parametrize(
    ("part", "param", "words"),
    [
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file.file_id", "file_id"),
        ({"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}, "messages[0].content[0]", "audio"),
        ({"type": "video"}, "messages[0].content[0].type", "video"),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,abc"}},
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        ({"type": "image_url", "image_url": {}}, "messages[0].content[0].image_url.url", "url"),
        ({"type": "text", "text": 5}, "messages[0].content[0].text", "text"),
        ({"type": "refusal", "refusal": "no"}, "messages[0].content[0].type", "refusal"),
    ],
)
def test_parse_user_part_errors(part: dict[str, Any], param: str, words: str) -> None:
    err = bad(req_bytes(messages=[{"role": "user", "content": [part]}]), param=param)
    assert words in err.message


def test_parse_assistant_variants() -> None:
    req = parse(
        messages=[
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "reasoning_content": "hmm",
                "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "r"}],
                "tool_calls": [
                    {"id": "c1__thought__SIG", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1__thought__SIG", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "next"},
            {"role": "assistant", "content": None, "refusal": "I can't"},
        ]
    )
    assert req.messages[1].parts == [
        Thinking("hmm"),
        Text("a"),
        Text("r"),
        ToolCall("c1", "f", '{"x":1}', "SIG"),
        ToolCall("c2", "g", "{}"),
    ]
    assert req.messages[2] == Message(
        "user", [ToolResult("c1", "f", [Text("one")]), ToolResult("c2", "g", [Text("two")])]
    )
    assert req.messages[3].parts == [Text("next")]
    assert req.messages[4].parts == [Text("I can't")]


def test_parse_assistant_empty_string_dropped_and_null_rejected() -> None:
    req = parse(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}])
    assert [m.role for m in req.messages] == ["user"]
    bad(req_bytes(messages=[{"role": "assistant", "content": None}]), param="messages[0].content")


def test_parse_tool_result_without_call() -> None:
    err = bad(req_bytes(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}]))
    assert err.param == "messages[0].tool_call_id" and "nope" in err.message
    bad(req_bytes(messages=[{"role": "tool", "content": "x"}]), param="messages[0].tool_call_id")


def test_parse_legacy_functions() -> None:
    req = parse(
        messages=[
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}},
            {"role": "function", "name": "f", "content": "42"},
        ],
        functions=[{"name": "f", "description": "d", "parameters": {"type": "object"}}],
        function_call={"name": "f"},
    )
    call = req.messages[1].parts[0]
    assert isinstance(call, ToolCall) and call.name == "f" and call.arguments == '{"a":1}'
    assert req.messages[2].parts == [ToolResult(call.id, "f", [Text("42")])]
    assert req.tools == [Tool("f", "d", {"type": "object"})]
    assert req.tool_choice == ToolChoice("tool", "f")
    assert parse(function_call="none").tool_choice == ToolChoice("none")
    bad(req_bytes(messages=[{"role": "function", "name": "f", "content": "x"}]), param="messages[0].name")


def test_parse_params() -> None:
    req = parse(
        max_completion_tokens=100,
        max_tokens=5,
        temperature=1,
        top_p=0.5,
        stop="END",
        n=2,
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=-0.2,
        user="u1",
        reasoning_effort="high",
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True},
        logit_bias={"1": 2},
        metadata={"k": "v"},
    )
    assert (req.max_tokens, req.temperature, req.top_p, req.stop) == (100, 1.0, 0.5, ["END"])
    assert (req.n, req.seed, req.presence_penalty, req.frequency_penalty) == (2, 7, 0.1, -0.2)
    assert (req.user, req.reasoning_effort, req.parallel_tool_calls) == ("u1", "high", False)
    assert req.stream and req.include_usage
    assert parse(max_tokens=5, stop=["a", "b"]).max_tokens == 5
    assert parse(stop=["a", "b"]).stop == ["a", "b"]
    assert parse(temperature=None).temperature is None


def test_parse_model_and_stream_from_kwargs() -> None:
    body = orjson.dumps({"messages": [{"role": "user", "content": "x"}]})
    req = fmt.parse_request(body, model="from-path", stream=True)
    assert req.model == "from-path" and req.stream
    bad(body, param="model")
    assert fmt.parse_request(req_bytes(), model="other").model == "gpt-4o"


def test_parse_response_formats() -> None:
    assert parse(response_format={"type": "text"}).response_format == ResponseFormat("text")
    assert parse(response_format={"type": "json_object"}).response_format == ResponseFormat("json_object")
    rf = parse(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": {"type": "object"}, "strict": True},
        }
    ).response_format
    assert rf == ResponseFormat("json_schema", {"type": "object"}, "n", True)
    bad(req_bytes(response_format={"type": "yaml"}), param="response_format.type")
    bad(req_bytes(response_format={"type": "json_schema", "json_schema": {}}), param="response_format.json_schema")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}, "messages[0].content[0]"),
        ({"messages": ["x"]}, "messages[0]"),
        ({"model": 5}, "model"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"stop": [1]}, "stop"),
        ({"tools": {}}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice.allowed_tools"),
        ({"tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
        ({"stream_options": {"include_usage": 1}}, "include_usage"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "custom"}]}]},
            "messages[0].tool_calls[0].type",
        ),
        ({"messages": [{"role": "assistant", "tool_calls": [{"id": 1, "function": {}}]}]}, "messages[0].tool_calls[0]"),
    ],
)
def test_parse_validation(fields: dict[str, Any], param: str) -> None:
    bad(req_bytes(**fields), param=param)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'"x"', b"\xff\xfe"])
def test_parse_not_an_object(body: bytes) -> None:
    bad(body)


# ---------------------------------------------------------------------------------------------------------------------
# build_request
# ---------------------------------------------------------------------------------------------------------------------
def rich_request() -> Request:
    return Request(
        model="client-model",
        system=[Text("be nice"), Text("be brief")],
        messages=[
            Message("user", [Text("hi"), Image(media_type="image/jpeg", data="AAA"), Image(url="http://i/x.png")]),
            Message(
                "assistant",
                [
                    Thinking("secret", signature="s"),
                    Text("calling"),
                    ToolCall("c1", "f", '{"a":1}', "SIG"),
                    ToolCall("c2", "g"),
                ],
            ),
            Message(
                "user",
                [
                    ToolResult("c1", "f", [Text("r1"), Image(media_type="image/png", data="IMG")]),
                    ToolResult("c2", "g", [Text("r2a"), Text("r2b")], is_error=True),
                    Text("and now?"),
                    Document(media_type="application/pdf", data="PDF", name="a.pdf"),
                ],
            ),
        ],
        max_tokens=50,
        temperature=0.2,
        top_k=5,
        stop=["x"],
        tools=[Tool("f", "does f", {"type": "object"}), Tool("g")],
        tool_choice=ToolChoice("tool", "f"),
        parallel_tool_calls=True,
        stream=True,
        response_format=ResponseFormat("json_schema", {"type": "object"}, None, True),
        seed=3,
    )


def test_build_request_shape() -> None:
    body = orjson.loads(fmt.build_request(rich_request(), model="gpt-4.1"))
    assert body["model"] == "gpt-4.1"
    msgs = body["messages"]
    assert msgs[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "be nice"}, {"type": "text", "text": "be brief"}],
    }
    assert msgs[1]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAA"}}
    assert msgs[1]["content"][2] == {"type": "image_url", "image_url": {"url": "http://i/x.png"}}
    assert msgs[2] == {
        "role": "assistant",
        "content": "calling",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
            {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ],
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": "r1"}
    assert msgs[4] == {
        "role": "tool",
        "tool_call_id": "c2",
        "content": [{"type": "text", "text": "r2a"}, {"type": "text", "text": "r2b"}],
    }
    assert msgs[5] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,IMG"}},
            {"type": "text", "text": "and now?"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,PDF", "filename": "a.pdf"}},
        ],
    }
    assert len(msgs) == 6
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body and "top_k" not in body
    assert body["stop"] == ["x"] and body["temperature"] == 0.2 and body["seed"] == 3
    assert body["tools"] == [
        {"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "g"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["parallel_tool_calls"] is True
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}, "strict": True},
    }
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_build_request_minimal_no_nulls() -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], tool_choice=ToolChoice("none"))
    body = orjson.loads(fmt.build_request(req, model="gpt-4o"))
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_build_request_tool_only_assistant_and_modes() -> None:
    req = Request(
        model="x",
        messages=[Message("user", [Text("q")]), Message("assistant", [ToolCall("c", "f")])],
        tools=[Tool("f")],
        tool_choice=ToolChoice("required"),
        response_format=ResponseFormat("json_object"),
        reasoning_effort="low",
    )
    body = orjson.loads(fmt.build_request(req, model="m"))
    assert body["messages"][1] == {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert body["tool_choice"] == "required" and body["response_format"] == {"type": "json_object"}
    assert body["reasoning_effort"] == "low"


@pytest.mark.parametrize(("budget", "effort"), [(0, None), (1024, "low"), (5000, "medium"), (30000, "high")])
def test_build_request_thinking_budget(budget: int, effort: str | None) -> None:
    req = Request(model="x", messages=[Message("user", [Text("q")])], thinking_budget=budget)
    assert orjson.loads(fmt.build_request(req, model="m")).get("reasoning_effort") == effort


def test_build_request_document_url_refused() -> None:
    req = Request(model="x", messages=[Message("user", [Document(url="http://d/x.pdf")])])
    with pytest.raises(GatewayError) as info:
        fmt.build_request(req, model="m")
    assert info.value.status == 400


def test_build_then_parse_round_trip() -> None:
    req = rich_request()
    back = fmt.parse_request(fmt.build_request(req, model="gpt-4.1"))
    assert back.system == req.system
    assert back.messages[0] == req.messages[0]
    assert back.messages[1].parts == [Text("calling"), ToolCall("c1", "f", '{"a":1}'), ToolCall("c2", "g")]
    assert back.messages[2].parts == [
        ToolResult("c1", "f", [Text("r1")]),
        ToolResult("c2", "g", [Text("r2a"), Text("r2b")]),
    ]
    assert back.messages[3].parts == [
        Image(media_type="image/png", data="IMG"),
        Text("and now?"),
        Document(media_type="application/pdf", data="PDF", name="a.pdf"),
    ]
    assert (back.max_tokens, back.stop, back.tool_choice, back.seed) == (50, ["x"], ToolChoice("tool", "f"), 3)


# ---------------------------------------------------------------------------------------------------------------------
# rewrite_model
# ---------------------------------------------------------------------------------------------------------------------
def test_rewrite_model_keeps_other_bytes() -> None:
    body = (
        b'{"tools":[{"function":{"parameters":{"properties":{"model":{"type":"string"}}}}}],'
        b' "messages":[{"role":"user","content":"\\"model\\": \\"x\\""}],  "model" : "alias", "x": 1.50}'
    )
    out = fmt.rewrite_model(body, "gpt-4o")
    assert out == body.replace(b'"alias"', b'"gpt-4o"')


def test_rewrite_model_fallbacks() -> None:
    assert orjson.loads(fmt.rewrite_model(b'{"messages":[]}', "m")) == {"messages": [], "model": "m"}
    assert orjson.loads(fmt.rewrite_model(b'{"mod\\u0065l":"a"}', "m")) == {"model": "m"}
    with pytest.raises(GatewayError):
        fmt.rewrite_model(b"nope", "m")


# ---------------------------------------------------------------------------------------------------------------------
# parse_response
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_response_fixtures() -> None:
    resp = fmt.parse_response((KONG / "unit" / "real-responses" / "openai" / "llm-v1-chat.json").read_bytes())
    assert resp.id == "chatcmpl-8Ugx63a79wKACVkaBbKnR2C2HPcxT" and resp.model == "gpt-4-0613"
    assert resp.created == 1702325640 and resp.finish_reason == "stop"
    assert isinstance(resp.parts[0], Text) and resp.parts[0].text.startswith("Dividing by zero")
    assert resp.usage == Usage(130, 139)
    good = fmt.parse_response((OPENAI / "responses" / "good.json").read_bytes())
    assert good.parts == [Text("The sum of 1 + 1 is 2.")] and good.usage == Usage(25, 12)


def test_parse_response_tools_reasoning_usage_details() -> None:
    body = {
        "id": "x",
        "model": "m",
        "created": 5,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "think",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": {"b": 2}}},
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 20},
        },
    }
    resp = fmt.parse_response(orjson.dumps(body))
    assert resp.parts == [Thinking("think"), ToolCall("c1", "f", '{"a":1}'), ToolCall("c2", "g", '{"b":2}')]
    assert resp.finish_reason == "tool_calls"
    assert resp.usage == Usage(100, 50, 40, 10, 20)


@pytest.mark.parametrize(
    ("message", "reason", "expected_reason", "parts"),
    [
        ({"content": None, "refusal": "no way"}, "stop", "content_filter", [Text("no way")]),
        ({"content": "x"}, "length", "length", [Text("x")]),
        ({"content": "x"}, "content_filter", "content_filter", [Text("x")]),
        ({"content": "x"}, None, "stop", [Text("x")]),
        (
            {"content": None, "function_call": {"name": "f", "arguments": "{}"}},
            "function_call",
            "tool_calls",
            [ToolCall("call_f", "f", "{}")],
        ),
        (
            {"content": None, "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
            "stop",
            "tool_calls",
            [ToolCall("c", "f", "{}")],
        ),
    ],
)
def test_parse_response_finish(message: dict[str, Any], reason: str | None, expected_reason: str, parts: list) -> None:
    body = {
        "id": "i",
        "model": "m",
        "choices": [{"message": {"role": "assistant", **message}, "finish_reason": reason}],
    }
    resp = fmt.parse_response(orjson.dumps(body))
    assert resp.finish_reason == expected_reason and resp.parts == parts


@pytest.mark.parametrize(
    "body",
    [
        (OPENAI / "responses" / "bad_upstream_response.json").read_bytes(),
        (OPENAI / "responses" / "internal_server_error.html").read_bytes(),
        b"",
        b"[]",
        b'{"choices": []}',
        b'{"choices": [{"finish_reason": "stop"}]}',
        b'{"choices": [{"message": {"tool_calls": [{"function": 5}]}}]}',
    ],
)
def test_parse_response_invalid(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        fmt.parse_response(body)
    assert info.value.status == 502 and info.value.type == "server_error"


# ---------------------------------------------------------------------------------------------------------------------
# build_response
# ---------------------------------------------------------------------------------------------------------------------
def test_build_response_text_validates_with_sdk() -> None:
    resp = Response(id="msg_1", model="claude", parts=[Text("a"), Text("b")], usage=Usage(10, 5, 3, 2, 1), created=9)
    body = orjson.loads(fmt.build_response(resp, model="my-alias"))
    cc = ChatCompletion.model_validate(body)
    assert cc.id == "msg_1" and cc.model == "my-alias" and cc.created == 9 and cc.object == "chat.completion"
    assert cc.choices[0].message.content == "ab" and cc.choices[0].finish_reason == "stop"
    assert body["choices"][0]["message"]["refusal"] is None and body["choices"][0]["logprobs"] is None
    assert cc.usage is not None and cc.usage.total_tokens == 15
    assert cc.usage.prompt_tokens_details.cached_tokens == 3
    assert cc.usage.prompt_tokens_details.cache_write_tokens == 2
    assert cc.usage.completion_tokens_details.reasoning_tokens == 1


def test_build_response_tool_calls_thinking_and_generated_id() -> None:
    resp = Response(
        id="",
        model="g",
        parts=[
            Thinking("plan"),
            Thinking("", redacted="xx"),
            ToolCall("c1", "f", '{"a":1}', "SIG"),
            ToolCall("c2", "g"),
        ],
        finish_reason="tool_calls",
    )
    body = orjson.loads(fmt.build_response(resp, model="m"))
    cc = ChatCompletion.model_validate(body)
    msg = body["choices"][0]["message"]
    assert cc.id.startswith("chatcmpl-") and len(cc.id) > 12
    assert msg["content"] is None and msg["reasoning_content"] == "plan"
    assert [c["id"] for c in msg["tool_calls"]] == ["c1__thought__SIG", "c2"]
    assert cc.choices[0].message.tool_calls[0].function.arguments == '{"a":1}'
    assert cc.choices[0].finish_reason == "tool_calls" and "usage" not in body
    # and the id comes back apart on the next turn
    assert fmt.split_tool_id("c1__thought__SIG") == ("c1", "SIG")  # re-exported from the canonical model


def test_build_response_empty_message_has_empty_content() -> None:
    body = orjson.loads(fmt.build_response(Response(id="i", model="m", finish_reason="length"), model="m"))
    assert body["choices"][0]["message"]["content"] == "" and body["choices"][0]["finish_reason"] == "length"


def test_build_response_through_sdk() -> None:
    resp = Response(id="i", model="m", parts=[Text("hello")], usage=Usage(1, 2))

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=fmt.build_response(resp, model="m"), headers={"content-type": "application/json"}
        )

    out = sdk_client(handler).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert out.choices[0].message.content == "hello" and out.usage.completion_tokens == 2


# ---------------------------------------------------------------------------------------------------------------------
# build_error / parse_error
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gtype", "status", "otype", "code", "exc"),
    [
        ("invalid_request", 400, "invalid_request_error", None, openai.BadRequestError),
        ("auth", 401, "authentication_error", None, openai.AuthenticationError),
        ("permission", 403, "permission_error", None, openai.PermissionDeniedError),
        ("not_found", 404, "not_found_error", None, openai.NotFoundError),
        ("unknown_model", 404, "invalid_request_error", "model_not_found", openai.NotFoundError),
        ("request_too_large", 413, "invalid_request_error", "request_too_large", openai.APIStatusError),
        ("rate_limit", 429, "rate_limit_error", None, openai.RateLimitError),
        ("server_error", 500, "server_error", None, openai.InternalServerError),
        ("network", 502, "server_error", None, openai.InternalServerError),
        ("overloaded", 503, "server_error", None, openai.InternalServerError),
        ("timeout", 504, "timeout_error", None, openai.InternalServerError),
    ],
)
def test_build_error(gtype: str, status: int, otype: str, code: str | None, exc: type[Exception]) -> None:
    err = GatewayError(gtype, "went wrong", param="messages" if gtype == "invalid_request" else None)
    assert err.status == status
    body = orjson.loads(fmt.build_error(err, request_id="req-1"))
    assert body == {
        "error": {
            "message": "went wrong",
            "type": otype,
            "param": err.param,
            "code": code,
            "request_id": "req-1",
        }
    }

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=fmt.build_error(err, request_id="r"))

    with pytest.raises(exc) as info:
        sdk_client(handler).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.message.endswith("went wrong") or "went wrong" in str(info.value)
    assert info.value.type == otype


def test_build_error_own_code_wins() -> None:
    body = orjson.loads(fmt.build_error(GatewayError("unknown_model", "m?", code="custom"), request_id=None))
    assert body["error"]["code"] == "custom" and body["error"]["request_id"] is None


def test_parse_error_fixtures() -> None:
    err = fmt.parse_error(400, (OPENAI / "responses" / "bad_request.json").read_bytes())
    assert (err.type, err.status, err.message, err.code) == (
        "invalid_request",
        400,
        "'messages' is a required property",
        None,
    )
    err = fmt.parse_error(401, (OPENAI / "responses" / "unauthorized.json").read_bytes())
    assert (err.type, err.status, err.code) == ("auth", 401, "invalid_api_key")
    err = fmt.parse_error(500, (OPENAI / "responses" / "internal_server_error.html").read_bytes())
    assert (err.type, err.status) == ("server_error", 500) and "non-JSON" in err.message


@pytest.mark.parametrize(
    ("status", "body", "gtype", "code"),
    [
        (
            404,
            {"error": {"message": "no", "type": "invalid_request_error", "code": "model_not_found"}},
            "unknown_model",
            "model_not_found",
        ),
        (
            429,
            {"error": {"message": "slow", "type": "requests", "code": "rate_limit_exceeded"}},
            "rate_limit",
            "rate_limit_exceeded",
        ),
        (500, {"error": {"message": "x", "type": "rate_limit_error"}}, "rate_limit", None),
        (503, {"error": "plain string"}, "overloaded", None),
        (400, {"detail": "fastapi style"}, "invalid_request", None),
        (418, [{"error": {"message": "list", "code": 7}}], "invalid_request", "7"),
        (502, None, "network", None),
    ],
)
def test_parse_error_shapes(status: int, body: Any, gtype: str, code: str | None) -> None:
    raw = b"" if body is None else orjson.dumps(body)
    err = fmt.parse_error(status, raw)
    assert (err.type, err.status, err.code) == (gtype, status, code)
    assert err.message


# ---------------------------------------------------------------------------------------------------------------------
# StreamEncoder
# ---------------------------------------------------------------------------------------------------------------------
def frames(data: bytes) -> list[Any]:
    out = []
    for block in data.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: ")
        payload = block[6:]
        out.append(payload.decode() if payload == b"[DONE]" else orjson.loads(payload))
    return out


def tool_events() -> list[Any]:
    return [
        MessageStart("msg_1", "provider-model", Usage(input_tokens=11)),
        ThinkingDelta("hmm"),
        ThinkingDelta("", signature="sig"),
        TextDelta("Hi"),
        ToolCallStart(0, "c1", "f", signature="SIG"),
        ToolCallDelta(0, '{"a":'),
        ToolCallDelta(0, "1}"),
        ToolCallStart(1, "c2", "g"),
        ToolCallDelta(1, "{}"),
        Finish("tool_calls"),
        UsageUpdate(Usage(output_tokens=7, reasoning_tokens=2)),
    ]


def test_stream_encoder_with_usage() -> None:
    enc = fmt.StreamEncoder(model="alias", include_usage=True, created=123)
    assert enc.media_type == "text/event-stream"
    data = b"".join(enc.encode(e) for e in tool_events()) + enc.finish()
    assert data.endswith(b"data: [DONE]\n\n")
    fs = frames(data)
    assert fs[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(f) for f in fs[:-1]]
    assert {c.id for c in chunks} == {"msg_1"} and {c.model for c in chunks} == {"alias"}
    assert {c.created for c in chunks} == {123}
    assert all("usage" in f and f["usage"] is None for f in fs[:-2])
    assert fs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert fs[1]["choices"][0]["delta"] == {"reasoning_content": "hmm"}
    assert fs[2]["choices"][0]["delta"] == {
        "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]
    }
    assert fs[3]["choices"][0]["delta"] == {"content": "Hi"}
    assert fs[4]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "c1__thought__SIG", "type": "function", "function": {"name": "f", "arguments": ""}}
    ]
    assert fs[5]["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": '{"a":'}}]
    assert fs[9]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls", "logprobs": None}
    assert fs[10]["choices"] == [] and fs[10]["usage"]["prompt_tokens"] == 11
    assert fs[10]["usage"]["completion_tokens"] == 7 and fs[10]["usage"]["total_tokens"] == 18
    assert fs[10]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}
    assert len(fs) == 12
    assert enc.finish() == b"" and enc.encode(TextDelta("late")) == b""


def test_stream_encoder_without_usage_and_synthesized_start() -> None:
    enc = fmt.StreamEncoder(model="m")
    data = enc.encode(TextDelta("a")) + enc.encode(UsageUpdate(Usage(1, 1))) + enc.finish()
    fs = frames(data)
    assert fs[0]["id"].startswith("chatcmpl-") and fs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert fs[1]["choices"][0]["delta"] == {"content": "a"}
    assert fs[2]["choices"][0]["finish_reason"] == "stop"
    assert fs[3] == "[DONE]" and len(fs) == 4
    assert all("usage" not in f for f in fs[:-1])


def test_stream_encoder_error() -> None:
    enc = fmt.StreamEncoder(model="m", request_id="rq")
    data = enc.encode(TextDelta("a")) + enc.encode(StreamError(GatewayError("overloaded", "busy")))
    fs = frames(data)
    assert fs[-2] == {
        "error": {"message": "busy", "type": "server_error", "param": None, "code": None, "request_id": "rq"}
    }
    assert fs[-1] == "[DONE]"
    assert enc.finish() == b"" and enc.error(GatewayError("server_error", "x")) == b""


def test_stream_encoder_through_sdk() -> None:
    enc = fmt.StreamEncoder(model="alias", include_usage=True)
    body = b"".join(enc.encode(e) for e in tool_events()) + enc.finish()

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = sdk_client(handler)
    chunks = list(
        client.chat.completions.create(
            model="alias",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
        if tc.index == 0
    )
    assert text == "Hi" and args == '{"a":1}'
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7

    enc = fmt.StreamEncoder(model="alias")
    body = enc.encode(TextDelta("a")) + enc.error(GatewayError("server_error", "mid-stream failure"))
    with pytest.raises(openai.APIError, match="mid-stream failure"):
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))


# ---------------------------------------------------------------------------------------------------------------------
# StreamDecoder
# ---------------------------------------------------------------------------------------------------------------------
def decode(data: bytes, cuts: list[int] | None = None) -> list[Any]:
    dec = fmt.StreamDecoder()
    events: list[Any] = []
    prev = 0
    for cut in sorted(cuts or []):
        events += dec.feed(data[prev:cut])
        prev = cut
    events += dec.feed(data[prev:])
    return events + dec.close()


def test_decoder_recorded_stream() -> None:
    events = decode(STREAM_BIN.read_bytes())
    assert events == [
        MessageStart("chatcmpl-9hQFArK1oMZcRwaIa86RGwrjVNmeY", "gpt-4-0613"),
        TextDelta("2"),
        Finish("stop"),
    ]


def test_decoder_recorded_single_frame_then_early_end() -> None:
    events = decode(STREAM_FRAME.read_bytes())
    assert events[:2] == [MessageStart("chatcmpl-991aYb1iD8OSD54gcxZxv8uazlTZy", "gpt-4-0613"), TextDelta("the answer")]
    assert isinstance(events[2], StreamError) and events[2].error.type == "network" and events[2].error.status == 502
    assert len(events) == 3


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    obj: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    obj["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    obj.update(extra)
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


TOOL_STREAM = b"".join(
    [
        b": keep-alive\n\n",
        chunk({"role": "assistant", "content": None}, usage=None),
        chunk({"reasoning_content": "think "}),
        chunk({"content": "Hé"}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}
                ]
            }
        ),
        chunk({}, "tool_calls"),
        chunk(
            None,
            usage={
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 2},
                "completion_tokens_details": {"reasoning_tokens": 1},
            },
        ),
        b"data: [DONE]\r\n\r\n",
    ]
)
TOOL_EVENTS = [
    MessageStart("chatcmpl-1", "gpt-4o"),
    ThinkingDelta("think "),
    TextDelta("Hé"),
    ToolCallStart(0, "call_a", "f"),
    ToolCallDelta(0, '{"x":'),
    ToolCallDelta(0, "1}"),
    ToolCallStart(1, "call_b", "g"),
    ToolCallDelta(1, "{}"),
    Finish("tool_calls"),
    UsageUpdate(Usage(9, 4, 2, 0, 1)),
]


def test_decoder_tool_stream() -> None:
    assert decode(TOOL_STREAM) == TOOL_EVENTS


@given(data=st.data())
def test_decoder_split_anywhere(data: st.DataObject) -> None:
    for stream in (TOOL_STREAM, STREAM_BIN.read_bytes()):
        whole = decode(stream)
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
        assert decode(stream, cuts) == whole


def test_decoder_byte_by_byte() -> None:
    assert decode(TOOL_STREAM, list(range(len(TOOL_STREAM)))) == TOOL_EVENTS


def test_decoder_stop_after_tool_calls_becomes_tool_calls_and_usage_on_finish_chunk() -> None:
    stream = chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}) + chunk(
        {}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    )
    events = decode(stream)  # no [DONE] but finished: no error
    assert events[-2:] == [Finish("tool_calls"), UsageUpdate(Usage(1, 2))]


def test_decoder_legacy_and_indexless_tool_calls_and_refusal() -> None:
    stream = (
        chunk({"function_call": {"name": "f", "arguments": ""}})
        + chunk({"function_call": {"arguments": "{}"}})
        + chunk({"tool_calls": [{"id": "x1", "function": {"name": "g", "arguments": "{"}}]})
        + chunk({"tool_calls": [{"function": {"arguments": "}"}}]})
        + chunk({"refusal": "nope"}, "stop")
        + b"data: [DONE]\n\n"
    )
    events = decode(stream)
    assert events[1:] == [
        ToolCallStart(0, "call_0", "f"),
        ToolCallDelta(0, "{}"),
        ToolCallStart(1, "x1", "g"),
        ToolCallDelta(1, "{"),
        ToolCallDelta(1, "}"),
        TextDelta("nope"),
        Finish("content_filter"),
    ]


def test_decoder_in_stream_error() -> None:
    stream = chunk({"content": "a"}) + b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'
    events = decode(stream)
    err = events[-1]
    assert isinstance(err, StreamError) and err.error.message == "overloaded" and err.error.status == 500
    assert len([e for e in events if isinstance(e, StreamError)]) == 1


def test_decoder_invalid_json_and_after_done() -> None:
    events = decode(b"data: {nope\n\n")
    assert len(events) == 1 and isinstance(events[0], StreamError) and events[0].error.status == 502
    assert decode(b"data: [DONE]\n\n" + chunk({"content": "late"})) == []
    assert isinstance(decode(b"")[0], StreamError)


def test_decoder_feeds_encoder_end_to_end() -> None:
    enc = fmt.StreamEncoder(model="alias", include_usage=True)
    dec = fmt.StreamDecoder()
    out = b"".join(enc.encode(e) for e in dec.feed(TOOL_STREAM) + dec.close()) + enc.finish()
    again = decode(out)
    assert again[0] == MessageStart("chatcmpl-1", "alias")
    assert again[1:] == TOOL_EVENTS[1:]
