"""The OpenAI Responses API format module, both directions, against the official SDK's types, recorded real traffic
(pydantic-ai's cassettes of api.openai.com) and what real clients send (tests/fixtures/clients)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent, response_create_params

from extproc.translation import canonical as c
from extproc.translation.errors import GatewayError
from extproc.translation.formats import responses as fmt
from extproc.translation.formats.contract import COUNT_TOKENS, GENERATE, LOCAL, StreamOptions
from tests.mocks import responses_provider as mock

ROOT = Path(__file__).resolve().parents[2]
CASSETTES = ROOT / "tests" / "fixtures" / "recorded" / "pydantic-ai" / "models" / "cassettes" / "test_openai_responses"
CLIENTS = ROOT / "tests" / "fixtures" / "clients"
EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


def cassette(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((CASSETTES / name).read_text())["interactions"]


def recorded_requests(client: str) -> list[dict[str, Any]]:
    return json.loads((CLIENTS / client / "requests.json").read_text())["requests"]


def parse(**fields: Any) -> c.Request:
    body = {"model": "gpt-test", "input": "hi"}
    body.update(fields)
    return fmt.parse_request(orjson.dumps(body))


def bad(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        fmt.parse_request(orjson.dumps({"model": "m", **body}))
    assert 400 <= info.value.status < 500
    orjson.loads(fmt.build_error(info.value, request_id="req_1"))
    return info.value


def sdk_valid(body: dict[str, Any]) -> None:
    """A request body the SDK's request types accept (checked by the strict mock's validator, not by this module)."""
    td = (
        response_create_params.ResponseCreateParamsStreaming
        if body.get("stream")
        else (response_create_params.ResponseCreateParamsNonStreaming)
    )
    mock._check_obj(body, td, "")


def sse_events(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        obj = json.loads(lines["data"])
        assert lines["event"] == obj["type"]
        out.append(obj)
    return out


def assemble(events: list[dict[str, Any]]) -> Any:
    """The SDK's own stream accumulator over our events: every event must validate and the grammar must hold."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for i, obj in enumerate(events):
        assert obj["sequence_number"] == i
        for _ in state.handle_event(EVENTS.validate_python(obj)):
            pass
    return events[-1]


# ---------------------------------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------------------------------
def test_routes() -> None:
    assert fmt.route("POST", "/openai/v1/responses", "").kind == GENERATE
    assert fmt.route("POST", "/openai/v1/responses/input_tokens", "").kind == COUNT_TOKENS
    get = fmt.route("GET", "/openai/v1/responses/resp_1", "")
    assert (get.kind, get.op, get.resource_id) == (LOCAL, "get", "resp_1")
    assert fmt.route("DELETE", "/openai/v1/responses/resp_1", "").op == "delete"
    assert fmt.route("GET", "/openai/v1/responses/resp_1/input_items", "").op == "input_items"
    assert fmt.route("POST", "/openai/v1/responses/resp_1", "").methods == ("GET", "DELETE")  # the exchange 405s
    assert fmt.route("POST", "/openai/v1/chat/completions", "") is None
    assert fmt.route("GET", "/openai/v1/responses/a/b/c", "") is None
    assert fmt.route("POST", "/openai/v1/responses/resp_1/cancel", "") is None
    assert fmt.client_credential({"authorization": "Bearer k-1"}, "") == "k-1"
    assert fmt.request_model(fmt.route("POST", "/openai/v1/responses", ""), {"model": "x", "stream": True}) == (
        "x",
        True,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Client side: requests in
# ---------------------------------------------------------------------------------------------------------------------
def test_string_input_instructions_and_settings() -> None:
    req = parse(
        instructions="Be brief.",
        max_output_tokens=300,
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        safety_identifier="user-1",
        text={
            "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True},
            "verbosity": "low",
        },
        reasoning={"effort": "high", "summary": "detailed"},
        stream=True,
        store=False,
        include=["reasoning.encrypted_content"],
        metadata={"k": "v"},
    )
    assert req.system == [c.Text("Be brief.")]
    assert req.messages == [c.Message("user", [c.Text("hi")])]
    assert (req.max_tokens, req.temperature, req.top_p, req.parallel_tool_calls) == (300, 0.5, 0.9, False)
    assert req.user == "user-1" and req.stream and req.verbosity == "low"
    assert req.response_format == c.ResponseFormat("json_schema", {"type": "object"}, "w", True)
    assert (req.reasoning_effort, req.reasoning_summary) == ("high", "detailed")
    assert req.echo is not None and req.echo["store"] is False and req.echo["encrypted"] is True
    assert req.echo["id"].startswith("resp_") and req.echo["metadata"] == {"k": "v"}


def test_items_make_turns_and_pair_calls() -> None:
    req = parse(
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"},
                    {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    {"type": "input_file", "file_url": "https://example.com/b.pdf"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "calling", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_2__thought__c2ln", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "call_2__thought__c2ln",
                "output": [{"type": "input_text", "text": "rainy"}],
            },
            {"role": "system", "content": "late system"},
            {"role": "user", "content": "thanks"},
        ]
    )
    assert req.system == [c.Text("dev"), c.Text("late system")]
    user, assistant, results, last = req.messages
    assert user.parts == [
        c.Text("look"),
        c.Image("image/png", "iVBORw0KGgo="),
        c.Image(url="https://example.com/cat.png"),
        c.Document("application/pdf", "JVBERi0=", name="a.pdf"),
        c.Document(url="https://example.com/b.pdf"),
    ]
    assert assistant.parts == [
        c.Text("calling"),
        c.ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
        c.ToolCall("call_2", "get_weather", "{}", "c2ln"),
    ]
    assert results.parts == [
        c.ToolResult("call_1", "get_weather", [c.Text("sunny")]),
        c.ToolResult("call_2", "get_weather", [c.Text("rainy")]),
    ]
    assert last == c.Message("user", [c.Text("thanks")])


def test_tools_namespaces_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object"},
            "strict": True,
            "description": "Weather",
        },
        {
            "type": "namespace",
            "name": "agents",
            "description": "sub-agents",
            "tools": [{"type": "function", "name": "spawn", "parameters": {"type": "object"}, "strict": False}],
        },
    ]
    req = parse(tools=tools, tool_choice={"type": "function", "name": "get_weather"})
    assert req.tools == [
        c.Tool("get_weather", "Weather", {"type": "object"}, True),
        c.Tool("agents__spawn", None, {"type": "object"}, False, "agents"),
    ]
    assert req.tool_choice == c.ToolChoice("tool", "get_weather")
    allowed = parse(
        tools=tools,
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "get_weather"}],
        },
    )
    assert [t.name for t in allowed.tools] == ["get_weather"] and allowed.tool_choice == c.ToolChoice("required")
    # a call to a namespaced tool in the history keeps the flattened name
    hist = parse(
        tools=tools,
        input=[
            {"type": "function_call", "call_id": "c1", "name": "spawn", "namespace": "agents", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    )
    assert hist.messages[0].parts == [c.ToolCall("c1", "agents__spawn", "{}")]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"input": [{"type": "function_call_output", "call_id": "x", "output": "y"}]}, "input[0]", "No tool call"),
        (
            {"input": [{"type": "function_call", "call_id": "x", "name": "f", "arguments": "{}"}]},
            "input",
            "No tool out",
        ),
        ({"input": [{"type": "bogus"}]}, "input[0].type", "bogus"),
        (
            {"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
            "input[0].content[0].type",
            "output_text",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
            "output_text",
        ),
        ({"input": [{"role": "critic", "content": "x"}]}, "input[0].role", "critic"),
        (
            {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
            "input_text",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
            "input[0].content[0].file_id",
            "file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png,xx"}]}]},
            "input[0].content[0].image_url",
            "base64",
        ),
        ({"input": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}]}, "input[0].type", "OpenAI"),
        ({"input": []}, "input", "non-empty"),
        ({"input": 5}, "input", "string"),
        ({"input": ["x"]}, "input[0]", "object"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "web_search"),
        ({"tools": [{"type": "custom", "name": "apply_patch"}]}, "tools[0].type", "custom"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "name"),
        (
            {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
            "tool_choice",
            "not found",
        ),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice", "OpenAI-hosted"),
        ({"temperature": 3}, "temperature", "between"),
        ({"max_output_tokens": "many"}, "max_output_tokens", "integer"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "effort"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", "name"),
        ({"background": True}, "background", "OpenAI"),
        ({"conversation": "conv_1"}, "conversation", "OpenAI"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "not found"),
        ({"model": 5}, "model", "string"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(body: dict[str, Any], param: str, words: str) -> None:
    body = {"input": "hi", **body}
    err = bad(body)
    assert err.param == param
    assert words.lower() in err.message.lower()


def test_bad_json_and_non_objects() -> None:
    for raw in (b"{", b"[]", b'"x"', b"\xff"):
        with pytest.raises(GatewayError) as info:
            fmt.parse_request(raw)
        assert info.value.status == 400


def test_every_recorded_client_request_parses() -> None:
    """What Codex, the Agents SDK, the AI SDK and pydantic-ai really sent; only Codex's default built-in
    ``web_search`` tool is refused (providers other than OpenAI cannot run it)."""
    seen = 0
    for client in ("codex", "agents-sdk", "ai-sdk", "pydantic-ai"):
        for rec in recorded_requests(client):
            body = rec["body"]
            if any(t.get("type") == "web_search" for t in body.get("tools") or ()):
                with pytest.raises(GatewayError, match="web_search"):
                    fmt.parse_request(body)
                continue
            req = fmt.parse_request(body)
            seen += 1
            assert req.messages, client
            if client == "codex":
                assert any(t.namespace == "multi_agent_v1" for t in req.tools)
                assert req.stream and req.echo["store"] is False and req.echo["encrypted"]
    assert seen >= 40


# ---------------------------------------------------------------------------------------------------------------------
# Client side: answers out, checked by the SDK's own models
# ---------------------------------------------------------------------------------------------------------------------
def answer(parts: list[c.Part], finish: str = "stop") -> c.Response:
    return c.Response("msg_up", "upstream", parts, finish, usage=c.Usage(11, 7, cached_tokens=2, reasoning_tokens=3))


def test_build_response_is_a_valid_sdk_response() -> None:
    req = parse(
        tools=[
            {
                "type": "namespace",
                "name": "ns",
                "description": "d",
                "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": None}],
            }
        ],
        instructions="sys",
        metadata={"a": "b"},
    )
    resp = answer(
        [
            c.Thinking("pondering", "sig-1"),
            c.Text("Hello"),
            c.Text(" world"),
            c.ToolCall("call_1", "ns__f", '{"x":1}', "gsig"),
        ],
        "tool_calls",
    )
    body = orjson.loads(fmt.build_response(resp, model="client-model", request=req))
    r = SDKResponse.model_validate(body)
    assert r.id == req.echo["id"] and r.model == "client-model" and r.status == "completed"
    assert r.instructions == "sys" and r.metadata == {"a": "b"}
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    assert r.output[0].summary[0].text == "pondering" and r.output[0].encrypted_content is None  # not asked for
    assert r.output_text == "Hello world"
    call = r.output[2]
    assert (call.name, call.namespace, call.call_id, call.arguments) == ("f", "ns", "call_1__thought__gsig", '{"x":1}')
    assert r.usage.input_tokens == 11 and r.usage.input_tokens_details.cached_tokens == 2
    assert r.usage.output_tokens_details.reasoning_tokens == 3 and r.usage.total_tokens == 18


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_incomplete_answers(finish: str, reason: str) -> None:
    r = SDKResponse.model_validate(orjson.loads(fmt.build_response(answer([c.Text("cut")], finish), model="m")))
    assert r.status == "incomplete" and r.incomplete_details.reason == reason


def test_signed_reasoning_survives_the_round_trip_through_a_responses_client() -> None:
    """Anthropic signed and redacted thinking, and a Gemini signature, come back exactly as the next turn's input."""
    req = parse(include=["reasoning.encrypted_content"], tools=[{"type": "function", "name": "f", "parameters": {}}])
    thoughts = [c.Thinking("step 1", "EqQB+sig/1=="), c.Thinking(redacted="opaque=="), c.Thinking("gem", "Z2Vt")]
    resp = answer([*thoughts, c.ToolCall("toolu_1", "f", "{}")], "tool_calls")
    out = orjson.loads(fmt.build_response(resp, model="m", request=req))["output"]
    assert all(o["encrypted_content"] for o in out if o["type"] == "reasoning")
    nxt = fmt.parse_request(
        {
            "model": "m",
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
            "input": [
                {"role": "user", "content": "q"},
                *out,
                {"type": "function_call_output", "call_id": "toolu_1", "output": "r"},
            ],
        }
    )
    assert nxt.messages[1].parts == [*thoughts, c.ToolCall("toolu_1", "f", "{}")]


def test_foreign_or_summary_only_reasoning() -> None:
    body = {
        "model": "m",
        "input": [
            {"role": "user", "content": "q"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "a"}],
                "encrypted_content": "gAAAAABforeign",
            },
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "b"}]},
            {"type": "reasoning", "id": "rs_3", "summary": []},
            {"role": "assistant", "content": "answer"},
        ],
    }
    assert fmt.parse_request(body).messages[1].parts == [c.Thinking("b"), c.Text("answer")]


def test_error_shape() -> None:
    err = GatewayError("unknown_model", "model 'x' is not configured", 404, param="model")
    body = orjson.loads(fmt.build_error(err, request_id="req_9"))
    assert body == {
        "error": {
            "message": "model 'x' is not configured",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
            "request_id": "req_9",
        }
    }


# ---------------------------------------------------------------------------------------------------------------------
# Client side: streams out
# ---------------------------------------------------------------------------------------------------------------------
STREAM = [
    c.MessageStart("msg_up", "upstream", c.Usage(input_tokens=11)),
    c.ThinkingDelta("Let me "),
    c.ThinkingDelta("think."),
    c.ThinkingDelta(signature="EqQB+sig/1=="),
    c.TextDelta("Hel"),
    c.TextDelta("lo"),
    c.ToolCallStart(0, "call_a", "ns__f", "gsig"),
    c.ToolCallDelta(0, '{"city": '),
    c.ToolCallStart(1, "call_b", "g"),
    c.ToolCallDelta(0, '"Paris"}'),
    c.ToolCallDelta(1, "{}"),
    c.Finish("tool_calls"),
    c.UsageUpdate(c.Usage(input_tokens=11, output_tokens=7, reasoning_tokens=3)),
]


def stream_request(**extra: Any) -> c.Request:
    tools = [
        {
            "type": "namespace",
            "name": "ns",
            "description": "d",
            "tools": [{"type": "function", "name": "f", "parameters": {}, "strict": None}],
        },
        {"type": "function", "name": "g", "parameters": {}, "strict": None},
    ]
    return parse(tools=tools, stream=True, **extra)


def encode(events: list[c.Event], req: c.Request, *, finish: bool = True) -> tuple[bytes, fmt.StreamEncoder]:
    enc = fmt.StreamEncoder(StreamOptions(model="client-model"), request=req)
    out = b"".join(enc.encode(e) for e in events)
    return (out + enc.finish() if finish else out), enc


def test_stream_grammar_validates_and_assembles_with_the_sdk() -> None:
    req = stream_request(include=["reasoning.encrypted_content"])
    data, enc = encode(STREAM, req)
    events = sse_events(data)
    last = assemble(events)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 4
    final = SDKResponse.model_validate(last["response"])
    assert final.id == req.echo["id"] == events[0]["response"]["id"]
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert final.output[0].summary[0].text == "Let me think."
    assert fmt.unpack_thinking(final.output[0].encrypted_content) == c.Thinking("Let me think.", "EqQB+sig/1==")
    assert final.output_text == "Hello"
    assert (final.output[2].name, final.output[2].namespace, final.output[2].arguments) == (
        "f",
        "ns",
        '{"city": "Paris"}',
    )
    assert final.output[2].call_id == "call_a__thought__gsig" and final.output[3].arguments == "{}"
    assert final.usage.output_tokens_details.reasoning_tokens == 3
    # deltas add up to their .done events, and indexes are those of their items
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == next(e["text"] for e in events if e["type"] == "response.output_text.done")
    for e in events:
        if "item_id" in e:
            assert final.output[e["output_index"]].id == e["item_id"]
    assert enc.final is not None and enc.final["output"][0]["encrypted_content"]


def test_stream_hides_encrypted_content_unless_included() -> None:
    data, enc = encode(STREAM, stream_request())
    assert b"encrypted_content" not in data
    assert enc.final["output"][0]["encrypted_content"]  # kept for the gateway's store


@pytest.mark.parametrize(("reason", "kind"), [("length", "response.incomplete"), ("stop", "response.completed")])
def test_stream_end_states(reason: str, kind: str) -> None:
    events = sse_events(encode([c.TextDelta("x"), c.Finish(reason)], parse())[0])
    assert events[-1]["type"] == kind
    assemble(events)


def test_stream_error_is_an_error_event_and_response_failed() -> None:
    data, enc = encode(STREAM[:5], stream_request(), finish=False)
    data += enc.error(GatewayError("overloaded", "Overloaded", 529))
    data += enc.finish()  # nothing after the failure
    events = sse_events(data)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "Overloaded"
    failed = SDKResponse.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error"
    assemble(events)


def test_raw_reasoning_and_redacted_thinking_streams() -> None:
    events = sse_events(
        encode(
            [
                c.ThinkingDelta("raw ", raw=True),
                c.ThinkingDelta("cot", raw=True),
                c.ThinkingDelta(redacted="xx"),
                c.TextDelta("ok"),
            ],
            parse(include=["reasoning.encrypted_content"]),
        )[0]
    )
    assert "response.reasoning_text.delta" in [e["type"] for e in events]
    final = SDKResponse.model_validate(assemble(events)["response"])
    assert final.output[0].content[0].text == "raw cot"
    assert fmt.unpack_thinking(final.output[1].encrypted_content) == c.Thinking(redacted="xx")


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: requests out (checked against the SDK's request types), answers and streams in (recorded traffic)
# ---------------------------------------------------------------------------------------------------------------------
def test_build_request_is_valid_for_the_sdk_types() -> None:
    req = c.Request(
        model="x",
        system=[c.Text("sys")],
        messages=[
            c.Message("user", [c.Text("hi"), c.Image("image/png", "iVBO"), c.Document("application/pdf", "JVBE")]),
            c.Message("assistant", [c.Thinking("unsigned"), c.Text("calling"), c.ToolCall("call_1", "f", "{}")]),
            c.Message("user", [c.ToolResult("call_1", "f", [c.Text("r")]), c.Text("more")]),
        ],
        max_tokens=5,
        temperature=0.3,
        tools=[c.Tool("f", None, {"type": "object"})],
        tool_choice=c.ToolChoice("tool", "f"),
        parallel_tool_calls=False,
        stream=True,
        reasoning_effort="low",
        response_format=c.ResponseFormat("json_schema", {"type": "object"}, "out", True),
        verbosity="high",
        user="u",
    )
    body = orjson.loads(fmt.build_request(req, model="gpt-5-codex"))
    sdk_valid(body)
    assert body["instructions"] == "sys" and body["store"] is False and body["max_output_tokens"] == 16
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["tools"][0]["strict"] is False and body["tool_choice"] == {"type": "function", "name": "f"}
    assert [i.get("type", i.get("role")) for i in body["input"]] == [
        "user",
        "assistant",
        "function_call",
        "function_call_output",
        "user",
    ]
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True},
        "verbosity": "high",
    }


def test_recorded_non_streaming_answers_and_reasoning_replay() -> None:
    """OpenAI's reasoning item, turned into a Thinking signature for another client, is replayed on the next turn
    exactly as pydantic-ai replayed it to the real API (which accepted it)."""
    turn1, turn2 = cassette("test_openai_responses_thinking_with_tool_calls.yaml")
    resp = fmt.parse_response(orjson.dumps(turn1["response"]["parsed_body"]))
    thinking, call = resp.parts
    assert isinstance(thinking, c.Thinking) and isinstance(call, c.ToolCall)
    assert resp.finish_reason == "tool_calls" and resp.usage.reasoning_tokens > 0
    sent = turn2["request"]["parsed_body"]["input"]
    req = c.Request(
        model="gpt-5",
        messages=[
            c.Message("user", [c.Text(sent[0]["content"])]),
            c.Message("assistant", resp.parts),
            c.Message("user", [c.ToolResult(call.id, call.name, [c.Text(sent[3]["output"])])]),
        ],
    )
    body = orjson.loads(fmt.build_request(req, model="gpt-5"))
    sdk_valid(body)
    reasoning = body["input"][1]
    assert (reasoning["id"], reasoning["encrypted_content"]) == (sent[1]["id"], sent[1]["encrypted_content"])
    assert body["input"][2]["call_id"] == sent[2]["call_id"] and body["input"][2]["arguments"] == sent[2]["arguments"]
    final = fmt.parse_response(orjson.dumps(turn2["response"]["parsed_body"]))
    assert final.finish_reason == "stop" and final.parts[-1].text


@pytest.mark.parametrize(
    "name",
    [
        "test_openai_responses_model_thinking_part.yaml",
        "test_openai_responses_model_simple_response_with_tool_call.yaml",
    ],
)
def test_recorded_answers_parse(name: str) -> None:
    for turn in cassette(name):
        body = turn["response"]["parsed_body"]
        resp = fmt.parse_response(orjson.dumps(body))
        texts = "".join(p.text for p in resp.parts if isinstance(p, c.Text))
        expected = "".join(
            p["text"]
            for o in body["output"]
            if o["type"] == "message"
            for p in o["content"]
            if p["type"] == "output_text"
        )
        assert texts == expected
        assert resp.usage.input_tokens == body["usage"]["input_tokens"]
        calls = [o for o in body["output"] if o["type"] == "function_call"]
        assert [p.id for p in resp.parts if isinstance(p, c.ToolCall)] == [o["call_id"] for o in calls]


def test_recorded_error() -> None:
    (turn,) = cassette("test_openai_responses_model_http_error.yaml")
    err = fmt.parse_error(400, orjson.dumps(turn["response"]["parsed_body"]))
    assert (err.type, err.status, err.param, err.code) == (
        "invalid_request",
        400,
        "temperature",
        "decimal_below_min_value",
    )


STREAMS = [
    "test_openai_responses_thinking_part_iter.yaml",
    "test_openai_responses_streaming_usage.yaml",
    "test_openai_responses_stream.yaml",
]


def recorded_streams() -> list[tuple[str, bytes]]:
    out = []
    for name in STREAMS:
        for i, turn in enumerate(cassette(name)):
            body = turn["response"].get("body", {}).get("string")
            if body:
                out.append((f"{name}#{i}", body.encode()))
    return out


def decode(data: bytes, cuts: list[int]) -> list[c.Event]:
    dec = fmt.StreamDecoder()
    events: list[c.Event] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += dec.feed(data[prev:cut])
        prev = cut
    return events + dec.close()


@pytest.mark.parametrize(("name", "data"), recorded_streams(), ids=lambda v: v if isinstance(v, str) else "")
def test_recorded_streams_decode_whole_and_split_anywhere(name: str, data: bytes) -> None:
    whole = decode(data, [])
    rng = random.Random(name)
    for _ in range(25):
        assert decode(data, rng.sample(range(1, len(data)), min(40, len(data) - 1))) == whole
    assert decode(data, list(range(1, len(data), max(1, len(data) // 2000)))) == whole
    assert isinstance(whole[0], c.MessageStart) and isinstance(whole[-1], c.Finish)
    assert not any(isinstance(e, c.StreamError) for e in whole)
    # what the events carry equals the completed response the provider sent at the end
    completed = next(e for e in sse_events_loose(data) if e.get("type") == "response.completed")["response"]
    text = "".join(e.text for e in whole if isinstance(e, c.TextDelta))
    assert text == "".join(p["text"] for o in completed["output"] if o["type"] == "message" for p in o["content"])
    calls = [o for o in completed["output"] if o["type"] == "function_call"]
    args: dict[int, str] = {}
    for e in whole:
        if isinstance(e, c.ToolCallDelta):
            args[e.index] = args.get(e.index, "") + e.arguments
    assert [args.get(i, "") for i in range(len(calls))] == [o["arguments"] for o in calls]
    # OpenAI encrypts reasoning afresh each time it writes the item (added, done, completed): all are valid; the
    # decoder keeps the one of output_item.done
    done = [e["item"] for e in sse_events_loose(data) if e.get("type") == "response.output_item.done"]
    reasoning = [(o["id"], o["encrypted_content"]) for o in done if o["type"] == "reasoning" and o["encrypted_content"]]
    sigs = [fmt.unpack_reasoning_item(e.signature) for e in whole if isinstance(e, c.ThinkingDelta) and e.signature]
    assert sigs == reasoning
    usage = [e for e in whole if isinstance(e, c.UsageUpdate)][-1].usage
    assert usage.input_tokens == completed["usage"]["input_tokens"]


def sse_events_loose(data: bytes) -> list[dict[str, Any]]:
    out = []
    for block in data.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
    return out


def test_recorded_reasoning_stream_to_a_client_stream() -> None:
    """Real OpenAI reasoning summaries streamed to a Responses client's encoder: the SDK accepts every event."""
    (turn,) = cassette("test_openai_responses_thinking_part_iter.yaml")
    events = decode(turn["response"]["body"]["string"].encode(), [])
    out = sse_events(encode(events, parse(stream=True))[0])
    final = SDKResponse.model_validate(assemble(out)["response"])
    assert final.output[0].type == "reasoning" and final.output[0].summary[0].text.startswith("**Providing")


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (
            {"type": "error", "code": "server_error", "message": "boom", "param": None, "sequence_number": 3},
            "server_error",
        ),
        (
            {
                "type": "response.failed",
                "sequence_number": 3,
                "response": {"status": "failed", "error": {"code": "rate_limit_exceeded", "message": "slow down"}},
            },
            "rate_limit",
        ),
    ],
)
def test_in_stream_errors(event: dict[str, Any], kind: str) -> None:
    data = (
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"r",'
        b'"model":"m"}}\n\n' + b"event: x\ndata: " + orjson.dumps(event) + b"\n\n"
    )
    events = decode(data, [])
    assert isinstance(events[-1], c.StreamError) and events[-1].error.type == kind
    assert len([e for e in events if isinstance(e, c.StreamError)]) == 1


def test_stream_that_stops_early_is_an_error() -> None:
    start = b'data: {"type":"response.created","response":{"id":"r"}}\n\n'
    delta = b'data: {"type":"response.output_text.delta","output_index":0,"delta":"x"}\n\n'
    events = decode(start + delta, [])
    assert events[-2] == c.TextDelta("x")
    assert isinstance(events[-1], c.StreamError) and events[-1].error.type == "network"
    cut = decode(start + delta[:30], [])  # cut inside an event: its half is not JSON
    assert isinstance(cut[-1], c.StreamError) and len([e for e in cut if isinstance(e, c.StreamError)]) == 1


def test_decoder_takes_content_from_done_events_when_a_server_sends_no_deltas() -> None:
    evs = [
        {"type": "response.created", "response": {"id": "r", "model": "m"}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": ""},
        },
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "function_call", "id": "fc", "call_id": "c1", "name": "f", "arguments": '{"a":1}'},
        },
        {"type": "response.output_text.done", "output_index": 1, "content_index": 0, "text": "done text"},
        {
            "type": "response.completed",
            "response": {"status": "completed", "usage": {"input_tokens": 1, "output_tokens": 2}},
        },
    ]
    data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in evs)
    events = decode(data, [])
    assert c.ToolCallDelta(0, '{"a":1}') in events and c.TextDelta("done text") in events
    assert events[-1] == c.Finish("tool_calls")


# ---------------------------------------------------------------------------------------------------------------------
# Pass-through and packing helpers
# ---------------------------------------------------------------------------------------------------------------------
def test_passthrough_body_changes_only_the_model() -> None:
    raw = b'{"model": "alias", "input": "hi", "unknown": {"x": [1, "y"]}}'
    out, filt = fmt.passthrough_body(raw, orjson.loads(raw), model="gpt-5-codex", stream=False)
    assert filt is None and out == b'{"model": "gpt-5-codex", "input": "hi", "unknown": {"x": [1, "y"]}}'
    same, _ = fmt.passthrough_body(raw, orjson.loads(raw), model="alias", stream=False)
    assert same is raw
    dup = b'{"model": "a", "input": "hi", "model": "b"}'  # a provider might read the first: both say what was checked
    out, _ = fmt.passthrough_body(dup, orjson.loads(dup), model="b-up", stream=False)
    assert out == b'{"model": "b-up", "input": "hi", "model": "b-up"}'


@given(
    text=st.text(max_size=50), sig=st.none() | st.text(min_size=1, max_size=50), red=st.none() | st.text(max_size=30)
)
@settings(max_examples=100, deadline=None)
def test_packing_is_lossless(text: str, sig: str | None, red: str | None) -> None:
    part = c.Thinking(text, sig, red)
    assert fmt.unpack_thinking(fmt.pack_thinking(part)) == part
    packed = fmt.pack_reasoning_item("rs_" + text, sig or "")
    assert fmt.unpack_reasoning_item(packed) == ("rs_" + text, sig or "")
    # the google-genai SDK re-encodes signatures as URL-safe base64 with padding: still unpacks
    padded = packed + "=" * (-len(packed) % 4)
    assert fmt.unpack_reasoning_item(padded) == ("rs_" + text, sig or "")
    assert fmt.unpack_thinking("gAAAAABnot-ours") is None and fmt.unpack_reasoning_item("EqQB+sig") is None
