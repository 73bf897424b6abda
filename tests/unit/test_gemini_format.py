"""Unit tests for the Gemini generateContent format module, checked against recorded payloads and google-genai."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from google import genai
from google.genai import _api_client, errors, types
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
from extproc.translation.formats import gemini as g
from tests.mocks.providers import MockProvider
from tests.paths import KONG

CHUNKS = KONG / "unit" / "streaming-chunk-formats"


def body(obj: Any) -> bytes:
    return orjson.dumps(obj)


def parse(obj: Any, **kw: Any) -> Request:
    return g.parse_request(body(obj), model=kw.pop("model", "gemini-2.5-flash"), **kw)


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model_turn(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def built(req: Request, model: str = "gemini-2.5-flash") -> dict[str, Any]:
    return orjson.loads(g.build_request(req, model=model))


def invalid_of(obj: Any) -> GatewayError:
    with pytest.raises(GatewayError) as ei:
        g.parse_request(obj if isinstance(obj, bytes) else body(obj), model="m")
    assert ei.value.status == 400 and ei.value.type == "invalid_request"
    return ei.value


# ---------------------------------------------------------------------------------------------------------------------
# google-genai harness: feed our bytes to the real SDK client (no network)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch):
    """A google-genai client whose transport returns canned bytes and records what the SDK sent."""
    state: dict[str, Any] = {}

    def fake_request(self, http_request, http_options=None, stream=False):
        state["url"] = http_request.url
        state["sent"] = http_request.data
        reply = state["reply"]
        if stream:
            return _api_client.HttpResponse({}, response_stream=httpx.Response(200, content=reply))
        return _api_client.HttpResponse({}, response_stream=[reply.decode()])

    monkeypatch.setattr(_api_client.BaseApiClient, "_request", fake_request)
    client = genai.Client(api_key="test-key")
    return client, state


# ---------------------------------------------------------------------------------------------------------------------
# Paths, auth
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            ("v1beta", "gemini-2.0-flash", "generateContent", False, False),
        ),
        ("/v1/models/gemini-2.5-pro:generateContent?key=K", ("v1", "gemini-2.5-pro", "generateContent", False, False)),
        (
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=K",
            ("v1beta", "gemini-2.0-flash", "streamGenerateContent", True, True),
        ),
        ("/v1beta/models/m:streamGenerateContent", ("v1beta", "m", "streamGenerateContent", True, False)),
        ("/v1beta/models/m:streamGenerateContent?alt=json", ("v1beta", "m", "streamGenerateContent", True, False)),
        ("/v1beta/models/m:streamGenerateContent?$alt=sse", ("v1beta", "m", "streamGenerateContent", True, True)),
        ("/v1beta/models/m:countTokens", ("v1beta", "m", "countTokens", False, False)),
        ("/v1beta/models/my%2Dmodel:generateContent", ("v1beta", "my-model", "generateContent", False, False)),
    ],
)
def test_parse_path(path: str, expected: tuple[str, str, str, bool, bool]) -> None:
    assert g.parse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/m:generateContent",
        "/v1alpha/models/m:generateContent",
        "/v1beta/models/m",
        "/v1beta/tunedModels/m:generateContent",
        "/v1beta/models/m:predict",  # (embedContent and batchEmbedContents are served: embeddings)
        "/v1beta/models",
        "",
    ],
)
def test_parse_path_not_found(path: str) -> None:
    with pytest.raises(GatewayError) as ei:
        g.parse_path(path)
    assert ei.value.status == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/../admin:generateContent",
        "/v1beta/models/a/b:generateContent",
        "/v1beta/models/..%2Fadmin:generateContent",
        "/v1beta/models/a%2fb:generateContent",
        "/v1beta/models/a%00b:generateContent",
        "/v1beta/models/a%5Cb:generateContent",
        "/v1beta/models/a\x01b:generateContent",
        "/v1beta/models/a\tb:generateContent",
        "/v1beta/models/%2E%2E:generateContent",
        "/v1beta/models/a%3Ab:generateContent",
        "/v1beta/models/a:b:generateContent",
        "/v1beta/models/:generateContent",
    ],
)
def test_parse_path_rejects_bad_model(path: str) -> None:
    with pytest.raises(GatewayError) as ei:
        g.parse_path(path)
    assert ei.value.status == 400


def test_passthrough_paths_drop_the_client_key() -> None:
    ep = g.route("POST", "/gemini/v1beta/models/m:streamGenerateContent", "key=CLIENT&alt=sse&y=1")
    assert ep is not None and ep.stream and ep.opts["sse"]
    assert g.passthrough_path(ep, model="up", path="", query="key=CLIENT&alt=sse&y=1") == (
        "/v1beta/models/up:streamGenerateContent?alt=sse"
    )


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_pass_through_path_is_the_path_the_sdk_calls(sdk, api_version: str) -> None:
    """Same-format requests go upstream on the path google-genai itself calls for that API version and method.
    (upstream_path, CREDENTIAL, EXTRA_HEADERS: tests/unit/test_upstream_requests.py.)"""
    _, state = sdk
    client = genai.Client(api_key="k", http_options=types.HttpOptions(api_version=api_version))
    state["reply"] = orjson.dumps({"candidates": []})
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    url = httpx.URL(state["url"])
    assert url.raw_path.decode() == g.pass_through_path(api_version, "gemini-2.5-flash", "generateContent", False)
    state["reply"] = b""
    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    url = httpx.URL(state["url"])
    assert url.raw_path.decode() == g.pass_through_path(api_version, "gemini-2.5-flash", "streamGenerateContent", True)
    # Without SSE (the REST API's JSON-array stream, which the SDK does not use): the same path, no alt parameter.
    assert g.pass_through_path(api_version, "m", "streamGenerateContent", False) == (
        f"/{api_version}/models/m:streamGenerateContent"
    )


def test_sdk_paths_parse(sdk) -> None:
    """The paths google-genai calls (v1 by default) parse, after the gateway's /gemini prefix."""
    client, state = sdk
    state["reply"] = orjson.dumps({"candidates": []})
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    path = "/" + state["url"].split("/", 3)[3]
    assert g.parse_path(path) == ("v1", "gemini-2.5-flash", "generateContent", False, False)
    state["reply"] = b""
    list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    path = "/" + state["url"].split("/", 3)[3]
    assert g.parse_path(path) == ("v1", "gemini-2.5-flash", "streamGenerateContent", True, True)


# ---------------------------------------------------------------------------------------------------------------------
# parse_request (client side)
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_request_fixture_basic_chat() -> None:
    req = g.parse_request((KONG / "native/gemini/request/basic-chat.json").read_bytes(), model="gemini-pro")
    assert req.model == "gemini-pro"
    assert req.messages == [Message("user", [Text("What is 1 + 1?")])]
    assert req.max_tokens == 256
    assert not req.stream and not req.include_usage


def test_parse_request_fixture_multimodal_snake_case() -> None:
    req = g.parse_request((KONG / "native/gemini/request/basic-multimodal.json").read_bytes(), model="m", stream=True)
    assert req.stream and req.include_usage
    text, img = req.messages[0].parts
    assert text == Text("Tell me about this animal?")
    assert isinstance(img, Image) and img.media_type == "image/jpeg" and img.data.startswith("iVBORw0KGgo")


def test_parse_request_fixture_with_functions() -> None:
    req = g.parse_request((KONG / "native/gemini/request/with-functions.json").read_bytes(), model="m")
    assert req.system == [Text(req.system[0].text)] and req.system[0].text.startswith("You are a helpful lighting")
    assert [t.name for t in req.tools] == ["enable_lights", "set_light_color", "stop_lights"]
    assert req.tools[0].parameters is None
    assert req.tools[1].parameters == {
        "type": "object",
        "properties": {
            "rgb_hex": {
                "type": "string",
                "description": "The light color as a 6-digit hex string, e.g. ff0000 for red.",
            }
        },
        "required": ["rgb_hex"],
    }
    assert req.tool_choice == ToolChoice("auto")
    assert req.messages[0].parts == [Text("Turn on the lights please. Also set them to orange.")]


def test_parse_request_fixture_chatter() -> None:
    raw = orjson.loads((KONG / "native/gemini/request/with-functions-and-chatter.json").read_bytes())
    # The fixture uses role "assistant", which the real API refuses ("use a valid role: user, model").
    err = invalid_of(raw)
    assert "contents[1].role" in err.message
    for c in raw["contents"]:
        if c["role"] == "assistant":
            c["role"] = "model"
    req = g.parse_request(body(raw), model="m")
    roles = [m.role for m in req.messages]
    assert roles == ["user", "assistant", "user", "user", "assistant", "user"]
    assert req.messages[1].parts == [
        Text("Sure! I will turn them on now."),
        ToolCall(id="call_1_1", name="enable_lights", arguments="{}"),
    ]
    assert req.messages[2].parts == [
        ToolResult(tool_call_id="call_1_1", name="enable_lights", content=[Text('{"content":{"success":true}}')])
    ]
    assert req.messages[4].parts[1] == ToolCall(id="call_4_1", name="set_light_color", arguments='{"rgb_hex":"FFA500"}')
    assert req.messages[5].parts[0].tool_call_id == "call_4_1"


def test_parse_request_parts() -> None:
    req = parse(
        {
            "contents": [
                {
                    "parts": [
                        {"text": "look"},
                        {"inlineData": {"mimeType": "image/png", "data": "AAA="}},
                        {"inlineData": {"mimeType": "application/pdf", "data": "JVBE", "displayName": "a.pdf"}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://generativelanguage/files/x"}},
                        {"file_data": {"file_uri": "gs://b/doc"}},
                        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://x/f"}},
                        {"text": ""},
                    ]
                },
                model_turn(
                    {"text": "hmm", "thought": True, "thoughtSignature": "c2ln"},
                    {"text": "answer", "thoughtSignature": "dropped"},
                    {"thoughtSignature": "bare"},
                ),
            ]
        }
    )
    assert req.messages[0].role == "user"
    assert req.messages[0].parts == [
        Text("look"),
        Image(media_type="image/png", data="AAA="),
        Document(media_type="application/pdf", data="JVBE", name="a.pdf"),
        Image(media_type="image/jpeg", url="https://generativelanguage/files/x"),
        Document(url="gs://b/doc"),
        Document(media_type="application/pdf", url="https://x/f"),
    ]
    assert req.messages[1] == Message("assistant", [Thinking("hmm", signature="c2ln"), Text("answer")])


def test_parse_request_function_call_ids_and_signatures() -> None:
    req = parse(
        {
            "contents": [
                user({"text": "go"}),
                model_turn(
                    {"functionCall": {"name": "a", "args": {"x": 1}, "id": "given"}, "thoughtSignature": "U0lH"},
                    {"function_call": {"name": "b"}},
                ),
                user(
                    {"functionResponse": {"name": "b", "response": {"output": "B"}}},
                    {"functionResponse": {"name": "a", "id": "given", "response": {"output": {"k": [1]}}}},
                ),
            ]
        }
    )
    calls = req.messages[1].parts
    assert calls == [
        ToolCall(id="given", name="a", arguments='{"x":1}', signature="U0lH"),
        ToolCall(id="call_1_1", name="b", arguments="{}"),
    ]
    assert req.messages[2].parts == [
        ToolResult(tool_call_id="call_1_1", name="b", content=[Text("B")]),
        ToolResult(tool_call_id="given", name="a", content=[Text('{"k":[1]}')]),
    ]


def test_parse_request_parallel_same_name_pairs_in_order() -> None:
    req = parse(
        {
            "contents": [
                user({"text": "weather?"}),
                model_turn(
                    {"functionCall": {"name": "w", "args": {"c": "Paris"}}},
                    {"functionCall": {"name": "w", "args": {"c": "Rome"}}},
                ),
                {
                    "role": "function",  # the legacy v1beta role for function responses
                    "parts": [
                        {"functionResponse": {"name": "w", "response": {"result": "sunny"}}},
                        {"functionResponse": {"name": "w", "response": {"error": "boom"}}},
                    ],
                },
                model_turn({"functionCall": {"name": "w", "args": {}}}),
                user({"functionResponse": {"name": "w", "response": {"t": 1, "u": 2}}}),
            ]
        }
    )
    first, second = req.messages[2].parts
    assert (first.tool_call_id, first.content, first.is_error) == ("call_1_0", [Text("sunny")], False)
    assert (second.tool_call_id, second.content, second.is_error) == ("call_1_1", [Text("boom")], True)
    assert req.messages[4].parts == [ToolResult("call_3_0", "w", [Text('{"t":1,"u":2}')])]


def test_parse_request_function_response_images() -> None:
    req = parse(
        {
            "contents": [
                model_turn({"functionCall": {"name": "shot"}}),
                user(
                    {
                        "functionResponse": {
                            "name": "shot",
                            "response": {},
                            "parts": [
                                {"inlineData": {"mimeType": "image/png", "data": "QQ=="}},
                                {"fileData": {"mimeType": "image/png", "fileUri": "https://f"}},
                            ],
                        }
                    }
                ),
            ]
        }
    )
    assert req.messages[1].parts[0].content == [
        Text("{}"),
        Image(media_type="image/png", data="QQ=="),
        Image(media_type="image/png", url="https://f"),
    ]


@pytest.mark.parametrize(
    "contents",
    [
        [user({"functionResponse": {"name": "x", "response": {}}})],
        [model_turn({"functionCall": {"name": "a"}}), user({"functionResponse": {"name": "b", "response": {}}})],
        [
            model_turn({"functionCall": {"name": "a"}}),
            user({"functionResponse": {"name": "a", "response": {}}}, {"functionResponse": {"name": "a"}}),
        ],
        # A later model turn replaces the pending calls of an earlier one.
        [
            model_turn({"functionCall": {"name": "a"}}),
            user({"text": "never mind"}),
            model_turn({"text": "ok"}),
            user({"functionResponse": {"name": "a", "response": {}}}),
        ],
    ],
)
def test_parse_request_unmatched_function_response(contents: list[Any]) -> None:
    err = invalid_of({"contents": contents})
    assert "answers no earlier functionCall" in err.message


def test_parse_request_consecutive_model_contents_share_a_turn() -> None:
    req = parse(
        {
            "contents": [
                model_turn({"functionCall": {"name": "a"}}),
                model_turn({"functionCall": {"name": "b"}}),
                user({"functionResponse": {"name": "a", "response": {}}}, {"functionResponse": {"name": "b"}}),
            ]
        }
    )
    assert [p.tool_call_id for p in req.messages[2].parts] == ["call_0_0", "call_1_0"]


def test_parse_request_system_instruction_forms() -> None:
    c = [user({"text": "hi"})]
    assert parse({"contents": c, "systemInstruction": {"parts": [{"text": "a"}, {"text": "b"}]}}).system == [
        Text("a"),
        Text("b"),
    ]
    assert parse({"contents": c, "system_instruction": {"role": "user", "parts": {"text": "s"}}}).system == [Text("s")]
    assert parse({"contents": c, "systemInstruction": "plain"}).system == [Text("plain")]
    err = invalid_of({"contents": c, "systemInstruction": {"parts": [{"inlineData": {"mimeType": "a", "data": ""}}]}})
    assert "text parts" in err.message


def test_parse_request_tools_openapi_schema_to_json_schema() -> None:
    params = {
        "type": "OBJECT",
        "properties": {
            "name": {"type": "STRING", "description": "n", "nullable": True},
            "kind": {"type": "STRING", "format": "enum", "enum": ["a", "b"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3, "min_items": 1},
            "either": {"anyOf": [{"type": "INTEGER"}, {"type": "NUMBER"}], "nullable": True},
            "obj": {"type": "OBJECT", "properties": {}, "propertyOrdering": ["x"], "example": {"x": 1}},
        },
        "required": ["name"],
        "propertyOrdering": ["name", "kind"],
    }
    req = parse(
        {
            "contents": [user({"text": "x"})],
            "tools": [
                {"functionDeclarations": [{"name": "f", "description": "d", "parameters": params}]},
                {"function_declarations": [{"name": "g", "parametersJsonSchema": {"type": "object", "x-any": True}}]},
                {"functionDeclarations": [{"name": "h", "parameters_json_schema": {"$ref": "#/x"}}]},
            ],
        }
    )
    assert req.tools[0] == Tool(
        "f",
        "d",
        {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"], "description": "n"},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "minItems": 1},
                "either": {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "null"}]},
                "obj": {"type": "object", "properties": {}},
            },
            "required": ["name"],
        },
    )
    assert req.tools[1] == Tool("g", None, {"type": "object", "x-any": True})
    assert req.tools[2].parameters == {"$ref": "#/x"}


@pytest.mark.parametrize(
    ("tool", "name"),
    [
        ({"googleSearch": {}}, "googleSearch"),
        ({"google_search": {}}, "googleSearch"),
        ({"codeExecution": {}}, "codeExecution"),
        ({"urlContext": {}}, "urlContext"),
        ({"googleSearchRetrieval": {}}, "googleSearchRetrieval"),
        ({"googleMaps": {}}, "googleMaps"),
        ({"fileSearch": {}}, "fileSearch"),
        ({"computerUse": {}}, "computerUse"),
    ],
)
def test_parse_request_builtin_tools_rejected(tool: dict[str, Any], name: str) -> None:
    err = invalid_of({"contents": [user({"text": "x"})], "tools": [tool]})
    assert err.message == f"Gemini built-in tool {name} is not supported across providers"


@pytest.mark.parametrize(
    ("fcc", "expected"),
    [
        ({"mode": "AUTO"}, ToolChoice("auto")),
        ({"mode": "auto"}, ToolChoice("auto")),
        ({"mode": "VALIDATED"}, ToolChoice("auto")),
        ({"mode": "NONE"}, ToolChoice("none")),
        ({"mode": "ANY"}, ToolChoice("required")),
        ({"mode": "ANY", "allowedFunctionNames": ["f"]}, ToolChoice("tool", "f")),
        ({"mode": "ANY", "allowed_function_names": ["f", "g"]}, ToolChoice("required")),
        ({}, None),
    ],
)
def test_parse_request_tool_config(fcc: dict[str, Any], expected: ToolChoice | None) -> None:
    req = parse({"contents": [user({"text": "x"})], "toolConfig": {"functionCallingConfig": fcc}})
    assert req.tool_choice == expected


def test_parse_request_generation_config_camel() -> None:
    req = parse(
        {
            "contents": [user({"text": "x"})],
            "generationConfig": {
                "temperature": 0.3,
                "topP": 0.9,
                "topK": 40,
                "maxOutputTokens": 100,
                "stopSequences": ["END"],
                "candidateCount": 2,
                "seed": 7,
                "presencePenalty": 0.1,
                "frequencyPenalty": -0.2,
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True, "thinkingLevel": "HIGH"},
                "responseModalities": ["TEXT"],
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "cachedContent": "cachedContents/abc",
            "labels": {"a": "b"},
        }
    )
    assert (req.temperature, req.top_p, req.top_k, req.max_tokens) == (0.3, 0.9, 40, 100)
    assert (req.stop, req.n, req.seed, req.presence_penalty, req.frequency_penalty) == (["END"], 2, 7, 0.1, -0.2)
    assert req.response_format == ResponseFormat("json_object")
    assert (req.thinking_budget, req.reasoning_effort) == (1024, "high")


def test_parse_request_generation_config_snake_and_schemas() -> None:
    req = parse(
        {
            "contents": [user({"text": "x"})],
            "generation_config": {
                "top_p": 0.5,
                "top_k": 3.0,
                "max_output_tokens": "64",
                "stop_sequences": [],
                "response_mime_type": "application/json",
                "response_schema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}},
                "thinking_config": {"thinking_budget": -1, "thinking_level": "low"},
            },
        }
    )
    assert (req.top_p, req.top_k, req.max_tokens) == (0.5, 3, 64)
    assert req.response_format == ResponseFormat(
        "json_schema", {"type": "object", "properties": {"a": {"type": "integer"}}}
    )
    assert (req.thinking_budget, req.reasoning_effort) == (-1, "low")
    req = parse(
        {
            "contents": [user({"text": "x"})],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "additionalProperties": False},
                "responseSchema": {"type": "STRING"},
                "thinkingConfig": {"thinkingBudget": 0, "thinkingLevel": "XHIGH"},
            },
        }
    )
    assert req.response_format == ResponseFormat("json_schema", {"type": "object", "additionalProperties": False})
    assert (req.thinking_budget, req.reasoning_effort) == (0, "high")
    req = parse({"contents": [user({"text": "x"})], "generationConfig": {"responseMimeType": "text/plain"}})
    assert req.response_format is None


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"contents": []},
        {"contents": None},
        {"contents": "hi"},
        {"contents": [user()]},
        {"contents": [{"role": "user"}]},
        {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
        {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
        {"contents": [user({"text": ""})]},
        {"contents": [user({"text": 5})]},
        {"contents": [user({"executableCode": {"code": "x"}})]},
        {"contents": [user({"inlineData": {"data": "x"}})]},
        {"contents": [user({"inlineData": "x"})]},
        {"contents": [user({"fileData": {"mimeType": "image/png"}})]},
        {"contents": [user({"functionCall": {"name": "f"}})]},
        {"contents": [model_turn({"functionCall": {"name": ""}})]},
        {"contents": [model_turn({"functionCall": {"name": "f", "args": [1]}})]},
        {"contents": [model_turn({"functionResponse": {"name": "f"}})]},
        {"contents": [user({"text": "x"})], "tools": [{"functionDeclarations": [{"description": "no name"}]}]},
        {"contents": [user({"text": "x"})], "tools": [{"functionDeclarations": [{"name": "f", "parameters": 1}]}]},
        {"contents": [user({"text": "x"})], "tools": [{"weird": {}}]},
        {"contents": [user({"text": "x"})], "tools": "x"},
        {"contents": [user({"text": "x"})], "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}},
        {"contents": [user({"text": "x"})], "toolConfig": {"functionCallingConfig": {"allowedFunctionNames": "f"}}},
        {"contents": [user({"text": "x"})], "generationConfig": {"temperature": "hot"}},
        {"contents": [user({"text": "x"})], "generationConfig": {"temperature": True}},
        {"contents": [user({"text": "x"})], "generationConfig": {"maxOutputTokens": 1.5}},
        {"contents": [user({"text": "x"})], "generationConfig": {"stopSequences": "END"}},
        {"contents": [user({"text": "x"})], "generationConfig": {"thinkingConfig": {"thinkingLevel": "MAX"}}},
        {"contents": [user({"text": "x"})], "generationConfig": "x"},
        [1, 2],
        "string",
        None,
    ],
)
def test_parse_request_invalid(obj: Any) -> None:
    invalid_of(obj)


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b"nul", b'{"contents": [}'])
def test_parse_request_bad_json(raw: bytes) -> None:
    invalid_of(raw)


# ---------------------------------------------------------------------------------------------------------------------
# build_request (provider side)
# ---------------------------------------------------------------------------------------------------------------------
def test_build_request_full() -> None:
    req = Request(
        model="x",
        system=[Text("be nice"), Text("")],
        messages=[
            Message("user", [Text("hi"), Image(media_type="image/png", data="QUFB")]),
            Message(
                "assistant",
                [
                    Thinking("hmm", signature="anthropic-sig"),
                    Text("calling"),
                    ToolCall("call_1", "get", '{"q":"x"}', signature="U0lH"),
                    ToolCall("call_2", "get", ""),
                ],
            ),
            Message(
                "user",
                [
                    ToolResult("call_1", "get", [Text('{"temp": 20}'), Image(media_type="image/jpeg", data="QkJC")]),
                    ToolResult("call_2", "get", [Text("plain text")]),
                    ToolResult("call_3", "get", [Text("failed")], is_error=True),
                    Text("and then?"),
                ],
            ),
            Message("assistant", [Thinking("only thinking")]),
            Message("user", [Text("next")]),
        ],
        max_tokens=50,
        temperature=0.2,
        top_p=0.8,
        top_k=5,
        stop=["X"],
        tools=[Tool("get", "Get things", {"type": "object", "properties": {"q": {"type": "string"}}}), Tool("bare")],
        tool_choice=ToolChoice("tool", "get"),
        parallel_tool_calls=False,
        n=1,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format=ResponseFormat("json_schema", {"type": "object"}, name="n", strict=True),
        user="u",
    )
    out = built(req)
    assert out == {
        "contents": [
            {"role": "user", "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "QUFB"}}]},
            {
                "role": "model",
                "parts": [
                    {"text": "calling"},
                    {"functionCall": {"name": "get", "args": {"q": "x"}}, "thoughtSignature": "U0lH"},
                    {"functionCall": {"name": "get", "args": {}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get", "response": {"temp": 20}}},
                    {"functionResponse": {"name": "get", "response": {"output": "plain text"}}},
                    {"functionResponse": {"name": "get", "response": {"error": "failed"}}},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "QkJC"}},
                    {"text": "and then?"},
                ],
            },
            {"role": "user", "parts": [{"text": "next"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be nice"}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get",
                        "description": "Get things",
                        "parametersJsonSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
                    },
                    {"name": "bare"},
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get"]}},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.8,
            "topK": 5,
            "maxOutputTokens": 50,
            "stopSequences": ["X"],
            "candidateCount": 1,
            "seed": 3,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object"},
        },
    }
    # Everything validates against the SDK's own types (camelCase aliases).
    for content in out["contents"]:
        types.Content.model_validate(content)
    types.GenerationConfig.model_validate(out["generationConfig"])
    types.Tool.model_validate(out["tools"][0])
    types.ToolConfig.model_validate(out["toolConfig"])


def test_build_request_minimal_sets_only_given_keys() -> None:
    out = built(Request(model="x", messages=[Message("user", [Text("hi")])], tool_choice=ToolChoice("required")))
    assert out == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(
    ("choice", "fcc"),
    [
        (ToolChoice("auto"), {"mode": "AUTO"}),
        (ToolChoice("none"), {"mode": "NONE"}),
        (ToolChoice("required"), {"mode": "ANY"}),
        (ToolChoice("tool", "f"), {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_build_request_tool_choice(choice: ToolChoice, fcc: dict[str, Any]) -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], tools=[Tool("f")], tool_choice=choice)
    assert built(req)["toolConfig"] == {"functionCallingConfig": fcc}


@pytest.mark.parametrize(
    ("model", "budget", "effort", "expected"),
    [
        ("gemini-2.5-flash", 2048, None, {"thinkingBudget": 2048, "includeThoughts": True}),
        ("gemini-2.5-flash", 0, None, {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", 2048, "high", {"thinkingBudget": 2048, "includeThoughts": True}),
        ("gemini-2.5-pro", None, "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("models/gemini-2.0-flash", None, "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3-pro-preview", None, "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
        ("gemini-3-flash", None, "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
        ("gemini-flash-latest", None, "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ],
)
def test_build_request_thinking(model: str, budget: int | None, effort: str | None, expected: dict[str, Any]) -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], thinking_budget=budget, reasoning_effort=effort)
    cfg = built(req, model)["generationConfig"]["thinkingConfig"]
    assert cfg == expected
    types.ThinkingConfig.model_validate(cfg)


def test_build_request_response_format_json_object() -> None:
    req = Request(model="x", messages=[Message("user", [Text("hi")])], response_format=ResponseFormat("json_object"))
    assert built(req)["generationConfig"] == {"responseMimeType": "application/json"}
    req.response_format = ResponseFormat("text")
    assert "generationConfig" not in built(req)


def test_build_request_media() -> None:
    req = Request(
        model="x",
        messages=[
            Message(
                "user",
                [
                    Image(url="https://generativelanguage.googleapis.com/v1beta/files/abc", media_type="image/png"),
                    Image(url="gs://bucket/x.jpg"),
                    Image(url="data:image/webp;base64,UklGRg=="),
                    Image(data="iVBORw0K"),
                    Image(data="/9j/4AAQ"),
                    Document(media_type="application/pdf", data="JVBERi0"),
                    Document(data="JVBERi0"),
                    Document(url="https://f/doc.pdf", media_type="application/pdf"),
                ],
            )
        ],
    )
    assert built(req)["contents"][0]["parts"] == [
        {
            "fileData": {
                "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc",
                "mimeType": "image/png",
            }
        },
        {"fileData": {"fileUri": "gs://bucket/x.jpg"}},
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0"}},
        {"fileData": {"fileUri": "https://f/doc.pdf", "mimeType": "application/pdf"}},
    ]


@pytest.mark.parametrize("args", ["{bad", "[1]", "null", '"s"'])
def test_build_request_invalid_tool_arguments(args: str) -> None:
    req = Request(model="x", messages=[Message("assistant", [ToolCall("c", "f", args)])])
    with pytest.raises(GatewayError) as ei:
        g.build_request(req, model="m")
    assert ei.value.status == 400


def test_build_request_tool_result_without_name() -> None:
    req = Request(model="x", messages=[Message("user", [ToolResult("c", None, [Text("r")])])])
    with pytest.raises(GatewayError) as ei:
        g.build_request(req, model="m")
    assert ei.value.status == 400 and "name" in ei.value.message


def test_build_request_tool_result_text_shapes() -> None:
    def resp(content: list[Any], is_error: bool = False) -> dict[str, Any]:
        req = Request(model="x", messages=[Message("user", [ToolResult("c", "f", content, is_error)])])
        return built(req)["contents"][0]["parts"][0]["functionResponse"]["response"]

    assert resp([Text("a"), Text("b")]) == {"output": "a\nb"}
    assert resp([]) == {"output": ""}
    assert resp([Text("[1, 2]")]) == {"output": "[1, 2]"}
    assert resp([Text("{not json")]) == {"output": "{not json"}
    assert resp([Text('{"a": 1}')], is_error=True) == {"error": '{"a": 1}'}


def test_request_round_trip_through_canonical() -> None:
    original = {
        "contents": [
            user({"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "QUFB"}}),
            model_turn(
                {"text": "calling"},
                {"functionCall": {"name": "f", "args": {"a": [1, {"b": None}]}}, "thoughtSignature": "S"},
            ),
            user({"functionResponse": {"name": "f", "response": {"output": "done"}}}),
            user({"functionResponse": {"name": "f", "response": {"x": 1}}}) | {"parts": [{"text": "more"}]},
        ],
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object"}}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "NONE"}},
        "generationConfig": {"temperature": 1.0, "maxOutputTokens": 5, "stopSequences": ["a"]},
    }
    assert orjson.loads(g.build_request(parse(original), model="m")) == original


def test_build_request_from_sdk_sent_body(sdk) -> None:
    """What google-genai sends parses, and builds back to an equivalent body."""
    client, state = sdk
    state["reply"] = orjson.dumps({"candidates": []})
    client.models.generate_content(
        model="gemini-2.5-flash",
        contents=[
            types.Content(
                role="user", parts=[types.Part(text="hi"), types.Part.from_bytes(data=b"abc", mime_type="image/png")]
            ),
            types.Content(
                role="model",
                parts=[types.Part(function_call=types.FunctionCall(name="f", args={"a": 1}), thought_signature=b"sig")],
            ),
            types.Content(role="user", parts=[types.Part.from_function_response(name="f", response={"r": 2})]),
        ],
        config=types.GenerateContentConfig(
            system_instruction="sys",
            temperature=0.5,
            max_output_tokens=10,
            thinking_config=types.ThinkingConfig(thinking_budget=100, include_thoughts=True),
            response_mime_type="application/json",
            response_json_schema={"type": "object"},
            tools=[
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(name="f", description="d", parameters_json_schema={"type": "object"}),
                        types.FunctionDeclaration(
                            name="g",
                            parameters=types.Schema(
                                type="OBJECT", properties={"x": types.Schema(type="STRING", nullable=True)}
                            ),
                        ),
                    ]
                )
            ],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["f"])
            ),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        ),
    )
    sent = state["sent"]
    req = g.parse_request(sent if isinstance(sent, bytes) else orjson.dumps(sent), model="gemini-2.5-flash")
    assert req.system == [Text("sys")]
    assert req.messages[0].parts == [Text("hi"), Image(media_type="image/png", data="YWJj")]
    assert req.messages[1].parts == [ToolCall("call_1_0", "f", '{"a":1}', signature="c2ln")]
    assert req.messages[2].parts == [ToolResult("call_1_0", "f", [Text('{"r":2}')])]
    assert req.tools == [
        Tool("f", "d", {"type": "object"}),
        Tool("g", None, {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}),
    ]
    assert req.tool_choice == ToolChoice("tool", "f")
    assert (req.temperature, req.max_tokens, req.thinking_budget) == (0.5, 10, 100)
    assert req.response_format == ResponseFormat("json_schema", {"type": "object"})
    out = built(req)
    assert out["contents"][1]["parts"][0] == {
        "functionCall": {"name": "f", "args": {"a": 1}},
        "thoughtSignature": "c2ln",
    }
    assert out["contents"][2]["parts"][0] == {"functionResponse": {"name": "f", "response": {"r": 2}}}


# ---------------------------------------------------------------------------------------------------------------------
# parse_response (provider side)
# ---------------------------------------------------------------------------------------------------------------------
def test_parse_response_fixtures() -> None:
    r = g.parse_response((KONG / "gemini/llm-v1-chat/responses/good.json").read_bytes())
    assert r.parts == [Text("Everything is okay.")]
    assert (r.finish_reason, r.model, r.id) == ("stop", "gemini-1.5-flash-002", "")
    assert r.usage == Usage(input_tokens=2, output_tokens=11)

    r = g.parse_response((KONG / "gemini/llm-v1-chat/responses/fails_safety.json").read_bytes())
    assert (r.parts, r.finish_reason, r.usage) == ([], "content_filter", Usage(input_tokens=319))

    r = g.parse_response((KONG / "unit/real-responses/gemini/llm-v1-chat.json").read_bytes())
    assert r.parts[0].text.startswith("Ah, vous voulez savoir le double de ce résultat")
    assert r.usage == Usage(input_tokens=14, output_tokens=128)

    r = g.parse_response((KONG / "gemini/request-transformer/response-in-json.json").read_bytes())
    assert isinstance(r.parts[0], Text)


def test_parse_response_thoughts_calls_usage() -> None:
    raw = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "thinking...", "thought": True, "thoughtSignature": "T1"},
                        {"text": "Let me check."},
                        {"functionCall": {"name": "get", "args": {"q": "x"}}, "thoughtSignature": "S1"},
                        {"functionCall": {"name": "get", "args": {"q": "y"}, "id": "fc_2"}},
                        {"executableCode": {"code": "print(1)"}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 60,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 155,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }
    r = g.parse_response(body(raw))
    assert (r.id, r.model, r.finish_reason) == ("resp-1", "gemini-2.5-flash", "tool_calls")
    thinking, text, call1, call2 = r.parts
    assert thinking == Thinking("thinking...", signature="T1")
    assert text == Text("Let me check.")
    assert call1.id.startswith("call_") and len(call1.id) == 37
    assert (call1.name, call1.arguments, call1.signature) == ("get", '{"q":"x"}', "S1")
    assert call2 == ToolCall("fc_2", "get", '{"q":"y"}')
    assert r.usage == Usage(input_tokens=105, output_tokens=50, cached_tokens=60, reasoning_tokens=30)
    assert g.parse_response(body(raw)).parts[2].id != call1.id


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
        (None, "stop"),
    ],
)
def test_parse_response_finish_reasons(reason: str | None, expected: str) -> None:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": "x"}]}}
    if reason:
        cand["finishReason"] = reason
    assert g.parse_response(body({"candidates": [cand]})).finish_reason == expected


def test_parse_response_prompt_blocked() -> None:
    raw = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9}}
    r = g.parse_response(body(raw))
    assert (r.parts, r.finish_reason, r.usage) == ([], "content_filter", Usage(input_tokens=9))


@pytest.mark.parametrize(
    "raw",
    [b"", b"<html>oops</html>", b"[]", b'"x"', b'{"foo": "bar"}', b'{"candidates": "x"}', b'{"candidates": [1]}'],
)
def test_parse_response_invalid(raw: bytes) -> None:
    with pytest.raises(GatewayError) as ei:
        g.parse_response(raw)
    assert (ei.value.status, ei.value.type) == (502, "server_error")


def test_parse_response_bad_upstream_fixture() -> None:
    with pytest.raises(GatewayError):
        g.parse_response((KONG / "openai/llm-v1-chat/responses/bad_upstream_response.json").read_bytes())


# ---------------------------------------------------------------------------------------------------------------------
# build_response (client side), read back by google-genai
# ---------------------------------------------------------------------------------------------------------------------
def test_build_response_shape() -> None:
    resp = Response(
        id="msg_1",
        model="claude-x",
        parts=[
            Thinking("hmm", signature="sig"),
            Thinking("", redacted="opaque"),
            Text("Hello"),
            ToolCall("toolu_1", "get", '{"a":1}', signature="GS"),
        ],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=10, output_tokens=7, cached_tokens=4, reasoning_tokens=3),
    )
    out = orjson.loads(g.build_response(resp, model="my-alias"))
    assert out == {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "hmm", "thought": True, "thoughtSignature": "sig"},
                        {"text": "Hello"},
                        {"functionCall": {"name": "get", "args": {"a": 1}, "id": "toolu_1"}, "thoughtSignature": "GS"},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 17,
        },
        "modelVersion": "my-alias",
        "responseId": "msg_1",
    }


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, MockProvider]]:
    started = {kind: MockProvider(kind, "k").start() for kind in ("openai", "anthropic", "gemini")}
    yield started
    for m in started.values():
        m.stop()


@pytest.mark.parametrize(
    ("situation", "prompt", "tools"),
    [
        ("stop", "hi", False),
        ("length", "LENGTH", False),
        ("tool_calls", "weather", True),
        ("content_filter", "REFUSE", False),
    ],
)
def test_build_response_finish_is_what_gemini_itself_says(
    providers: dict[str, MockProvider], situation: str, prompt: str, tools: bool
) -> None:
    """Each provider (the strict mocks) answers the same situation; whatever provider answered, a Gemini client gets
    the finishReason Gemini itself gives for that situation."""
    from extproc.translation.formats import anthropic as an
    from extproc.translation.formats import openai as oa

    weather = Tool("get_weather", "Weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    req = Request(
        model="m", messages=[Message("user", [Text(prompt)])], max_tokens=50, tools=[weather] if tools else []
    )
    answers = {}
    for kind, mod in (("openai", oa), ("anthropic", an), ("gemini", g)):
        credential = (mod.CREDENTIAL.header, mod.CREDENTIAL.prefix + "k")  # what Envoy injects
        headers = [credential, *mod.EXTRA_HEADERS, ("content-type", "application/json")]
        url = providers[kind].base_url + mod.upstream_path(model="m", stream=False)
        r = httpx.post(url, content=mod.build_request(req, model="m"), headers=headers)
        assert r.status_code == 200, r.text
        answers[kind] = mod.parse_response(r.content)
        assert answers[kind].finish_reason == situation, (kind, answers[kind])
    gemini_says = orjson.loads(r.content)["candidates"][0]["finishReason"]  # the Gemini mock answered last
    for kind, resp in answers.items():
        out = orjson.loads(g.build_response(resp, model="m"))
        assert out["candidates"][0]["finishReason"] == gemini_says, kind


def test_build_response_without_usage_has_no_usage_metadata() -> None:
    out = orjson.loads(g.build_response(Response(id="", model="m", finish_reason="stop"), model="m"))
    assert out["responseId"] and "usageMetadata" not in out


def test_build_response_bad_arguments() -> None:
    resp = Response(id="r", model="m", parts=[Text("a"), ToolCall("c", "f", '{"x":')], finish_reason="tool_calls")
    with pytest.raises(GatewayError) as ei:
        g.build_response(resp, model="m")
    assert ei.value.status == 502
    # Cut at the token limit: the unfinished call is dropped, the rest goes out.
    resp.finish_reason = "length"
    out = orjson.loads(g.build_response(resp, model="m"))
    assert out["candidates"][0]["content"]["parts"] == [{"text": "a"}]


def test_build_response_read_by_sdk(sdk) -> None:
    client, state = sdk
    resp = Response(
        id="rid",
        model="m",
        parts=[Text("Hi "), Text("there"), ToolCall("c1", "f", '{"k":"v"}', signature="U0lH")],
        finish_reason="tool_calls",
        usage=Usage(input_tokens=3, output_tokens=5, reasoning_tokens=2),
    )
    state["reply"] = g.build_response(resp, model="gemini-2.5-flash")
    r = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert r.response_id == "rid" and r.model_version == "gemini-2.5-flash"
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.function_calls[0].name == "f" and r.function_calls[0].args == {"k": "v"} and r.function_calls[0].id == "c1"
    assert r.candidates[0].content.parts[2].thought_signature == b"SIG"
    assert r.usage_metadata.prompt_token_count == 3
    assert r.usage_metadata.candidates_token_count == 3
    assert r.usage_metadata.thoughts_token_count == 2
    assert r.usage_metadata.total_token_count == 8


def test_response_round_trip_through_canonical() -> None:
    raw = orjson.loads((KONG / "gemini/llm-v1-chat/responses/good.json").read_bytes())
    out = orjson.loads(g.build_response(g.parse_response(body(raw)), model="gemini-1.5-flash-002"))
    assert out["candidates"][0]["content"] == raw["candidates"][0]["content"]
    assert out["usageMetadata"] == raw["usageMetadata"]


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("etype", "status", "grpc", "sdk_cls"),
    [
        ("invalid_request", 400, "INVALID_ARGUMENT", errors.ClientError),
        ("auth", 401, "UNAUTHENTICATED", errors.ClientError),
        ("permission", 403, "PERMISSION_DENIED", errors.ClientError),
        ("not_found", 404, "NOT_FOUND", errors.ClientError),
        ("unknown_model", 404, "NOT_FOUND", errors.ClientError),
        ("request_too_large", 413, "INVALID_ARGUMENT", errors.ClientError),
        ("rate_limit", 429, "RESOURCE_EXHAUSTED", errors.ClientError),
        ("server_error", 500, "INTERNAL", errors.ServerError),
        ("network", 502, "UNAVAILABLE", errors.ServerError),
        ("overloaded", 503, "UNAVAILABLE", errors.ServerError),
        ("timeout", 504, "DEADLINE_EXCEEDED", errors.ServerError),
    ],
)
def test_build_error(etype: str, status: int, grpc: str, sdk_cls: type) -> None:
    raw = g.build_error(GatewayError(etype, "went wrong", status), request_id="req-42")
    out = orjson.loads(raw)
    assert out == {
        "error": {
            "code": status,
            "message": "went wrong",
            "status": grpc,
            "details": [{"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": "req-42"}],
        }
    }
    with pytest.raises(sdk_cls) as ei:
        errors.APIError.raise_error(status, out, None)
    assert (ei.value.code, ei.value.status, ei.value.message) == (status, grpc, "went wrong")
    # parse_error reads our own envelope back: the type follows the status string, the status is kept.
    back = g.parse_error(status, raw)
    assert (back.status, back.message, back.code) == (status, "went wrong", grpc)
    assert back.type == {
        "unknown_model": "not_found",
        "request_too_large": "invalid_request",
        "network": "overloaded",
    }.get(etype, etype)


def test_build_error_without_request_id() -> None:
    out = orjson.loads(g.build_error(GatewayError("weird", "x", 418), request_id=None))
    assert out == {"error": {"code": 418, "message": "x", "status": "INVALID_ARGUMENT"}}


def test_parse_error_google_bodies() -> None:
    key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "x"}
            ],
        }
    }
    e = g.parse_error(400, body(key))
    assert (e.type, e.status, e.code, e.message) == ("auth", 400, "INVALID_ARGUMENT", key["error"]["message"])

    quota = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.2s"},
            ],
        }
    }
    e = g.parse_error(429, body(quota))
    assert (e.type, e.status, e.retry_after) == ("rate_limit", 429, "38")

    e = g.parse_error(404, body({"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}}))
    assert (e.type, e.message) == ("not_found", "models/x is not found")
    e = g.parse_error(503, body([{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}]))
    assert (e.type, e.status) == ("overloaded", 503)
    e = g.parse_error(500, body({"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}))
    assert (e.type, e.status) == ("server_error", 500)
    e = g.parse_error(409, body({"error": {"code": 409, "status": "ABORTED"}}))
    assert (e.type, e.status, e.message) == ("invalid_request", 409, "provider returned HTTP 409")


def test_parse_error_non_json() -> None:
    html = (KONG / "openai/llm-v1-chat/responses/internal_server_error.html").read_bytes()
    e = g.parse_error(500, html)
    assert (e.type, e.status, e.message) == ("server_error", 500, "provider returned HTTP 500 with a non-JSON body")
    e = g.parse_error(502, b"")
    assert (e.type, e.status, e.message) == ("network", 502, "provider returned HTTP 502 with an empty body")
    e = g.parse_error(400, b'{"foo": 1}')
    assert (e.type, e.status) == ("invalid_request", 400)


# ---------------------------------------------------------------------------------------------------------------------
# StreamEncoder (client side)
# ---------------------------------------------------------------------------------------------------------------------
def sse_frames(raw: bytes) -> list[dict[str, Any]]:
    assert raw.endswith(b"\r\n\r\n")
    frames = raw.split(b"\r\n\r\n")[:-1]
    assert all(f.startswith(b"data: ") for f in frames)
    return [orjson.loads(f[6:]) for f in frames]


def encode_all(enc: g.StreamEncoder, events: list[Any]) -> bytes:
    return b"".join(enc.encode(e) for e in events) + enc.finish()


TOOL_EVENTS: list[Any] = [
    MessageStart(id="resp-9", model="gpt-x"),
    ThinkingDelta("plan", signature=None),
    ThinkingDelta("", signature="VFM="),
    TextDelta("Hel"),
    TextDelta("lo"),
    TextDelta(""),
    ToolCallStart(0, "call_a", "get", signature="U0lH"),
    ToolCallDelta(0, '{"q":'),
    ToolCallDelta(0, '"x"}'),
    ToolCallStart(1, "call_b", "put"),
    ToolCallDelta(1, ""),
    Finish("tool_calls"),
    UsageUpdate(Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2)),
]


def test_stream_encoder_sse() -> None:
    enc = g.StreamEncoder(model="alias", include_usage=False)
    assert enc.media_type == "text/event-stream"
    frames = sse_frames(encode_all(enc, TOOL_EVENTS))
    parts = [f["candidates"][0]["content"]["parts"] for f in frames]
    assert parts == [
        [{"text": "plan", "thought": True}],
        [{"text": "", "thought": True, "thoughtSignature": "VFM="}],
        [{"text": "Hel"}],
        [{"text": "lo"}],
        [{"functionCall": {"name": "get", "args": {"q": "x"}, "id": "call_a"}, "thoughtSignature": "U0lH"}],
        [{"functionCall": {"name": "put", "args": {}, "id": "call_b"}}],
    ]
    assert all(f["modelVersion"] == "alias" and f["responseId"] == "resp-9" for f in frames)
    assert all(f["candidates"][0]["content"]["role"] == "model" for f in frames)
    assert [f["candidates"][0].get("finishReason") for f in frames] == [None] * 5 + ["STOP"]
    assert frames[-1]["usageMetadata"] == {
        "promptTokenCount": 10,
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 2,
        "totalTokenCount": 15,
    }
    assert "usageMetadata" not in frames[0]
    assert enc.finish() == b"" and enc.encode(TextDelta("late")) == b""


def test_stream_encoder_text_final_chunk_and_usage_after_finish() -> None:
    enc = g.StreamEncoder(model="m")
    raw = encode_all(enc, [TextDelta("a"), Finish("length"), UsageUpdate(Usage(input_tokens=1, output_tokens=2))])
    frames = sse_frames(raw)
    assert frames[0]["responseId"] == frames[1]["responseId"] != ""
    assert frames[1]["candidates"][0] == {
        "content": {"parts": [{"text": ""}], "role": "model"},
        "finishReason": "MAX_TOKENS",
        "index": 0,
    }
    assert frames[1]["usageMetadata"]["totalTokenCount"] == 3


def test_stream_encoder_json_array_mode() -> None:
    enc = g.StreamEncoder(model="m", sse=False)
    assert enc.media_type == "application/json"
    first = enc.encode(TextDelta("a"))
    assert first.startswith(b"[{")
    second = enc.encode(TextDelta("b"))
    assert second.startswith(b",\r\n{")
    raw = first + second + enc.finish()
    assert raw.endswith(b"]")
    items = orjson.loads(raw)
    assert [i["candidates"][0]["content"]["parts"][0]["text"] for i in items] == ["a", "b", ""]
    # A stream with no content is still a valid array.
    assert len(orjson.loads(g.StreamEncoder(model="m", sse=False).finish())) == 1


def test_stream_encoder_errors() -> None:
    err = GatewayError("rate_limit", "slow down", 429)
    enc = g.StreamEncoder(model="m")
    raw = enc.encode(TextDelta("a")) + enc.error(err)
    frames = sse_frames(raw)
    assert frames[-1] == {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    assert enc.finish() == b"" and enc.error(err) == b""

    enc = g.StreamEncoder(model="m", sse=False)
    items = orjson.loads(enc.error(err))
    assert items == [{"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}]
    enc = g.StreamEncoder(model="m", sse=False)
    items = orjson.loads(enc.encode(TextDelta("x")) + enc.encode(StreamError(err)))
    assert items[1]["error"]["code"] == 429

    # Invalid tool-call JSON from the provider ends the stream with an error.
    enc = g.StreamEncoder(model="m")
    raw = encode_all(enc, [ToolCallStart(0, "c", "f"), ToolCallDelta(0, "{oops"), TextDelta("after")])
    assert sse_frames(raw)[-1]["error"]["code"] == 502
    # ... unless the output was cut at the token limit: then the call is dropped.
    enc = g.StreamEncoder(model="m")
    raw = encode_all(enc, [ToolCallStart(0, "c", "f"), ToolCallDelta(0, '{"a'), Finish("length")])
    assert sse_frames(raw)[-1]["candidates"][0]["content"]["parts"] == [{"text": ""}]


def test_stream_encoder_read_by_sdk(sdk) -> None:
    client, state = sdk
    state["reply"] = encode_all(g.StreamEncoder(model="gemini-2.5-flash"), TOOL_EVENTS)
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    texts = "".join(p.text for c in chunks for p in c.candidates[0].content.parts if p.text and not p.thought)
    assert texts == "Hello"
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert [(fc.name, fc.args, fc.id) for fc in calls] == [("get", {"q": "x"}, "call_a"), ("put", {}, "call_b")]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count == 15


def test_stream_encoder_error_raises_in_sdk(sdk) -> None:
    client, state = sdk
    enc = g.StreamEncoder(model="m")
    state["reply"] = enc.encode(TextDelta("partial")) + enc.error(GatewayError("overloaded", "busy", 503))
    seen: list[str] = []
    with pytest.raises(errors.ServerError) as ei:
        for chunk in client.models.generate_content_stream(model="m", contents="hi"):
            seen.append(chunk.text)
    assert seen == ["partial"] and ei.value.code == 503 and ei.value.status == "UNAVAILABLE"


# ---------------------------------------------------------------------------------------------------------------------
# StreamDecoder (provider side)
# ---------------------------------------------------------------------------------------------------------------------
def decode(chunks: list[bytes], sse: bool = True) -> list[Any]:
    dec = g.StreamDecoder(sse=sse)
    events: list[Any] = []
    for c in chunks:
        events.extend(dec.feed(c))
    events.extend(dec.close())
    return events


def normalized(events: list[Any]) -> list[Any]:
    """Generated tool-call ids are random: replace them by their order of appearance."""
    out: list[Any] = []
    for e in events:
        if isinstance(e, ToolCallStart) and e.id.startswith("call_") and len(e.id) == 37:
            e = ToolCallStart(e.index, f"gen_{e.index}", e.name, e.signature)
        elif isinstance(e, StreamError):
            e = ("StreamError", e.error.type, e.error.message, e.error.status)
        out.append(e)
    return out


def full_kong_array_stream() -> bytes:
    return (CHUNKS / "partial-json-beginning/input.bin").read_bytes() + (
        CHUNKS / "partial-json-end/input.bin"
    ).read_bytes()


def test_stream_decoder_kong_array_stream() -> None:
    events = decode([full_kong_array_stream()], sse=False)
    assert events[0] == MessageStart(id="", model="")
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(texts) == 6 and texts[0] == "The" and texts[-1].startswith(" not a limit.")
    usages = [e.usage for e in events if isinstance(e, UsageUpdate)]
    assert usages[-1] == Usage(input_tokens=6, output_tokens=547)
    assert events[-1] == Finish("stop")
    assert sum(isinstance(e, Finish) for e in events) == 1


@pytest.mark.parametrize("folder", ["partial-json-split", "partial-json-split-three-parts"])
def test_stream_decoder_kong_split_fixtures(folder: str) -> None:
    parts = sorted((CHUNKS / folder).glob("input-*.bin"))
    events = decode([p.read_bytes() for p in parts], sse=False)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == (CHUNKS / folder / "expected-output.bin").read_text()
    # These captures stop before the closing "]": the stream is truncated.
    assert isinstance(events[-1], StreamError) and events[-1].error.status == 502
    events = decode([p.read_bytes() for p in parts] + [b"\n]"], sse=False)
    assert events[-1] == Finish("stop")


def test_stream_decoder_truncated_array() -> None:
    events = decode([(CHUNKS / "partial-json-beginning/input.bin").read_bytes()], sse=False)
    assert sum(isinstance(e, TextDelta) for e in events) == 4
    assert isinstance(events[-1], StreamError) and events[-1].error.type == "network"
    events = decode([full_kong_array_stream()[:-40]], sse=False)
    assert isinstance(events[-1], StreamError)


def sse(*objs: Any) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\r\n\r\n" for o in objs)


SSE_TOOL_STREAM = sse(
    {
        "candidates": [
            {"content": {"parts": [{"text": "Thinking about it", "thought": True}], "role": "model"}, "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc123",
    },
    {
        "candidates": [{"content": {"parts": [{"text": "I'll look that up. "}], "role": "model"}, "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4, "thoughtsTokenCount": 9},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc123",
    },
    {
        "candidates": [
            {
                "content": {
                    "parts": [
                        {"functionCall": {"name": "search", "args": {"q": 'é "quoted"'}}, "thoughtSignature": "U0lH"},
                        {"functionCall": {"name": "search", "args": {"q": "b"}, "id": "given-id"}},
                    ],
                    "role": "model",
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 12,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 9,
            "cachedContentTokenCount": 8,
            "totalTokenCount": 41,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "abc123",
    },
)


def test_stream_decoder_sse_tool_stream() -> None:
    events = normalized(decode([SSE_TOOL_STREAM]))
    assert events == [
        MessageStart(id="abc123", model="gemini-2.5-flash"),
        ThinkingDelta("Thinking about it"),
        UsageUpdate(Usage(input_tokens=12)),
        TextDelta("I'll look that up. "),
        UsageUpdate(Usage(input_tokens=12, output_tokens=13, reasoning_tokens=9)),
        ToolCallStart(0, "gen_0", "search", signature="U0lH"),
        ToolCallDelta(0, '{"q":"é \\"quoted\\""}'),
        ToolCallStart(1, "given-id", "search"),
        ToolCallDelta(1, '{"q":"b"}'),
        UsageUpdate(Usage(input_tokens=12, output_tokens=29, cached_tokens=8, reasoning_tokens=9)),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("reason", "expected"), [("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("OTHER", "stop")]
)
def test_stream_decoder_finish_reasons(reason: str, expected: str) -> None:
    raw = sse({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]})
    assert decode([raw])[-1] == Finish(expected)


def test_stream_decoder_prompt_blocked() -> None:
    raw = sse({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}})
    assert decode([raw]) == [MessageStart("", ""), UsageUpdate(Usage(input_tokens=4)), Finish("content_filter")]


def test_stream_decoder_in_stream_error() -> None:
    raw = sse(
        {"candidates": [{"content": {"parts": [{"text": "x"}]}}]},
        {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}},
        {"candidates": [{"content": {"parts": [{"text": "ignored"}]}, "finishReason": "STOP"}]},
    )
    events = decode([raw])
    assert events[:2] == [MessageStart("", ""), TextDelta("x")]
    assert isinstance(events[2], StreamError) and len(events) == 3
    assert (events[2].error.type, events[2].error.status, events[2].error.message) == (
        "overloaded",
        503,
        "The model is overloaded.",
    )
    # Array mode: the error element the API writes when it fails mid-stream.
    events = decode(
        [b'[{"candidates": []}\r\n,{"error": {"code": 429, "message": "q", "status": "RESOURCE_EXHAUSTED"}}]'], False
    )
    assert isinstance(events[-1], StreamError) and events[-1].error.type == "rate_limit"


def test_stream_decoder_ended_early_and_garbage() -> None:
    raw = sse({"candidates": [{"content": {"parts": [{"text": "x"}]}}]})
    events = decode([raw])
    assert isinstance(events[-1], StreamError) and events[-1].error.status == 502
    events = decode([raw + b'data: {"candidates": [{"con'])
    assert isinstance(events[-1], StreamError) and events[-1].error.message == "provider stream ended early"
    events = decode([b"data: not json\r\n\r\n"])
    assert len(events) == 1 and events[0].error.type == "server_error"
    events = decode([b"data: [1]\r\n\r\n"])
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert normalized(decode([b""])) == [("StreamError", "network", "provider stream ended early", 502)]


def test_stream_decoder_last_event_without_blank_line() -> None:
    raw = b'data: {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}'
    assert decode([raw]) == [MessageStart("", ""), TextDelta("x"), Finish("stop")]


def test_stream_round_trip_encoder_to_decoder() -> None:
    for sse_mode in (True, False):
        raw = encode_all(g.StreamEncoder(model="alias", sse=sse_mode), TOOL_EVENTS)
        events = decode([raw], sse=sse_mode)
        assert events[0] == MessageStart("resp-9", "alias")
        assert [e for e in events if isinstance(e, ThinkingDelta)] == [ThinkingDelta("plan"), ThinkingDelta("", "VFM=")]
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello"
        assert [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta)] == [
            ToolCallStart(0, "call_a", "get", "U0lH"),
            ToolCallDelta(0, '{"q":"x"}'),
            ToolCallStart(1, "call_b", "put"),
            ToolCallDelta(1, "{}"),
        ]
        assert events[-2:] == [
            UsageUpdate(Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2)),
            Finish("tool_calls"),
        ]


def _cuts(data: bytes) -> st.SearchStrategy[list[bytes]]:
    def split(points: list[int]) -> list[bytes]:
        points = sorted(set(points))
        bounds = [0, *points, len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds)]

    return st.lists(st.integers(0, len(data)), max_size=40).map(split)


@given(st.data())
def test_stream_decoder_cut_anywhere_equals_whole(data: st.DataObject) -> None:
    streams = [
        (full_kong_array_stream(), False),
        (
            b"".join(p.read_bytes() for p in sorted((CHUNKS / "partial-json-split-three-parts").glob("input-*.bin"))),
            False,
        ),
        (SSE_TOOL_STREAM, True),
        (SSE_TOOL_STREAM.replace(b"\r\n", b"\n"), True),
        (encode_all(g.StreamEncoder(model="m", sse=False), TOOL_EVENTS), False),
        (encode_all(g.StreamEncoder(model="m"), TOOL_EVENTS), True),
    ]
    raw, sse_mode = data.draw(st.sampled_from(streams))
    pieces = data.draw(_cuts(raw))
    assert b"".join(pieces) == raw
    assert normalized(decode(pieces, sse=sse_mode)) == normalized(decode([raw], sse=sse_mode))


def test_stream_decoder_one_byte_at_a_time() -> None:
    for raw, sse_mode in ((full_kong_array_stream(), False), (SSE_TOOL_STREAM, True)):
        pieces = [raw[i : i + 1] for i in range(len(raw))]
        assert normalized(decode(pieces, sse=sse_mode)) == normalized(decode([raw], sse=sse_mode))


RICH_REQUEST: dict[str, Any] = {
    "contents": [
        user({"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "QQ=="}}),
        model_turn({"text": "t", "thought": True}, {"functionCall": {"name": "f", "args": {"a": 1}, "id": "x"}}),
        user(
            {
                "functionResponse": {
                    "name": "f",
                    "id": "x",
                    "response": {"output": 1},
                    "parts": [{"inlineData": {"mimeType": "image/png", "data": "QQ=="}}],
                }
            },
            {"fileData": {"mimeType": "application/pdf", "fileUri": "u"}},
        ),
    ],
    "systemInstruction": {"parts": [{"text": "s"}]},
    "tools": [
        {
            "functionDeclarations": [
                {"name": "f", "parameters": {"type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {}}}}},
                {"name": "g", "parametersJsonSchema": {"type": "object"}},
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
    "generationConfig": {
        "temperature": 1,
        "stopSequences": ["x"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "anyOf": [{"type": "STRING"}], "nullable": True},
        "thinkingConfig": {"thinkingBudget": 5, "thinkingLevel": "LOW"},
    },
}


def test_rich_request_parses() -> None:
    req = g.parse_request(orjson.dumps(RICH_REQUEST), model="m")
    assert req.messages[2].parts[0].tool_call_id == "x"
    assert req.response_format.schema == {"type": ["object", "null"], "anyOf": [{"type": "string"}]}
    assert req.messages[2].parts[0].content == [Text("1"), Image(media_type="image/png", data="QQ==")]
