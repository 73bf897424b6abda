"""Fixture tests for the fidelity mappings: model listing, URL media fetching (plan / fetch / substitute), schema
dialects, reasoning and signatures, tool choice, stop reasons, several candidates, token counting routes."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import orjson
import pytest

from extproc.core import catalog
from extproc.core.config import build_config
from extproc.core.exchange import Exchange, Forward, Gateway, Reply
from extproc.translation import canonical as c
from extproc.translation import media, schemas
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, gemini, openai, registry
from extproc.transport import fetch

# The formats these fidelity cases are written for.
FORMATS = {name: registry.get(name) for name in ("openai", "anthropic", "gemini")}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 8).decode()


def cfg(**extra: Any) -> Any:
    data = {
        "version": "1",
        "models": [
            {"name": "gpt-x", "provider": "openai"},
            {"name": "claude-x", "provider": "anthropic", "description": "Claude"},
            {"name": "gem-x", "provider": "gemini", "target_model": "gemini-2.5-flash"},
        ],
        **extra,
    }
    return build_config(data, "test.yaml", {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"})


def infos() -> list[Any]:
    return catalog.model_infos(cfg())


def exchange(config: Any = None) -> Exchange:
    return Exchange(Gateway(config or cfg()))


def headers(ex: Exchange, path: str, method: str = "GET") -> Forward | Reply:
    return ex.on_request_headers({":method": method, ":path": path, "x-request-id": "r1"}, method == "GET")


# ------------------------------------------------------------------------------------------------------- models
def test_openai_model_list_and_get() -> None:
    ex = exchange()
    reply = headers(ex, "/openai/v1/models")
    assert isinstance(reply, Reply) and reply.status == 200
    body = orjson.loads(reply.body)
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["gpt-x", "claude-x", "gem-x"]
    assert body["data"][1] == {"id": "claude-x", "object": "model", "created": 0, "owned_by": "anthropic"}
    one = headers(exchange(), "/openai/v1/models/gem-x")
    assert isinstance(one, Reply) and orjson.loads(one.body)["id"] == "gem-x"
    missing = headers(exchange(), "/openai/v1/models/nope")
    assert isinstance(missing, Reply) and missing.status == 404
    assert orjson.loads(missing.body)["error"]["code"] == "model_not_found"
    post = headers(exchange(), "/openai/v1/models", "POST")
    assert isinstance(post, Reply) and post.status == 405


def test_anthropic_model_list_pages() -> None:
    page1 = orjson.loads(registry.get("anthropic").list_models(infos(), None, "limit=2"))
    assert [m["id"] for m in page1["data"]] == ["gpt-x", "claude-x"] and page1["has_more"] is True
    assert page1["data"][1] == {
        "type": "model",
        "id": "claude-x",
        "display_name": "Claude",
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "active",
    }
    page2 = orjson.loads(registry.get("anthropic").list_models(infos(), None, f"limit=2&after_id={page1['last_id']}"))
    assert [m["id"] for m in page2["data"]] == ["gem-x"] and page2["has_more"] is False
    before = orjson.loads(registry.get("anthropic").list_models(infos(), None, "before_id=gem-x&limit=1"))
    assert [m["id"] for m in before["data"]] == ["claude-x"] and before["has_more"] is True
    reply = headers(exchange(), "/anthropic/v1/models/nope")
    assert isinstance(reply, Reply) and reply.status == 404
    assert orjson.loads(reply.body)["error"]["type"] == "not_found_error"


def test_gemini_model_list_pages_and_get() -> None:
    body = orjson.loads(registry.get("gemini").list_models(infos(), None, "pageSize=2"))
    assert [m["name"] for m in body["models"]] == ["models/gpt-x", "models/claude-x"]
    assert body["nextPageToken"] == "2"
    last = orjson.loads(registry.get("gemini").list_models(infos(), None, "pageSize=2&pageToken=2"))
    assert [m["name"] for m in last["models"]] == ["models/gem-x"] and "nextPageToken" not in last
    assert "countTokens" in last["models"][0]["supportedGenerationMethods"]
    assert "countTokens" not in body["models"][0]["supportedGenerationMethods"]
    for path in ("/gemini/v1beta/models/gem-x", "/gemini/v1/models/gem-x"):
        reply = headers(exchange(), path)
        assert isinstance(reply, Reply) and orjson.loads(reply.body)["name"] == "models/gem-x"
    reply = headers(exchange(), "/gemini/v1beta/models/nope")
    assert isinstance(reply, Reply) and orjson.loads(reply.body)["error"]["status"] == "NOT_FOUND"
    assert registry.get("gemini").route("POST", "/gemini/v1beta/models/x:generateContent", "").kind == "generate"


# ------------------------------------------------------------------------------------------------------- token counting
def test_count_tokens_passes_through_or_is_translated_between_formats_that_count() -> None:
    ex = exchange()
    assert not isinstance(headers(ex, "/anthropic/v1/messages/count_tokens", "POST"), Reply)
    fwd = ex.on_request_body(b'{"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}')
    assert isinstance(fwd, Forward) and (":path", "/v1/messages/count_tokens") in fwd.set_headers
    ex = exchange()
    headers(ex, "/anthropic/v1/messages/count_tokens", "POST")
    refused = ex.on_request_body(b'{"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]}')
    assert isinstance(refused, Reply) and refused.status == 400 and b"token counting" in refused.body
    ex = exchange()
    headers(ex, "/gemini/v1beta/models/gem-x:countTokens", "POST")
    fwd = ex.on_request_body(b'{"contents": [{"parts": [{"text": "x"}]}]}')
    assert isinstance(fwd, Forward)
    assert (":path", "/v1beta/models/gemini-2.5-flash:countTokens") in fwd.set_headers
    # Between the formats that can count, the request is translated (Gemini client, Anthropic provider) ...
    ex = exchange()
    headers(ex, "/gemini/v1beta/models/claude-x:countTokens", "POST")
    fwd = ex.on_request_body(b'{"contents": [{"parts": [{"text": "x"}]}]}')
    assert isinstance(fwd, Forward) and (":path", "/v1/messages/count_tokens") in fwd.set_headers
    assert orjson.loads(fwd.body or b"") == {"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}
    answer = ex.on_response_headers({":status": "200", "content-type": "application/json"})
    assert answer.response_body_mode is None
    out = ex.on_response_body(b'{"input_tokens": 7}')
    assert orjson.loads(out.body or b"") == {"totalTokens": 7}
    # ... and the other way (Anthropic client, Gemini provider).
    ex = exchange()
    headers(ex, "/anthropic/v1/messages/count_tokens", "POST")
    fwd = ex.on_request_body(
        b'{"model": "gem-x", "system": "be brief", "messages": [{"role": "user", "content": "x"}]}'
    )
    assert isinstance(fwd, Forward) and (":path", "/v1beta/models/gemini-2.5-flash:countTokens") in fwd.set_headers
    sent = orjson.loads(fwd.body or b"")["generateContentRequest"]
    assert sent["model"] == "models/gemini-2.5-flash" and sent["systemInstruction"]["parts"] == [{"text": "be brief"}]
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    out = ex.on_response_body(b'{"totalTokens": 12, "promptTokensDetails": []}')
    assert orjson.loads(out.body or b"") == {"input_tokens": 12}


# ------------------------------------------------------------------------------------------------------- fetching
POLICY = media.FetchPolicy(enabled=True, allow_hosts=("img.example.com", "*.cdn.example"), max_bytes=64)


def url_request(*parts: c.Part) -> c.Request:
    return c.Request(model="m", messages=[c.Message("user", [c.Text("look"), *parts])])


@pytest.mark.parametrize(
    ("part", "provider", "needs"),
    [
        (c.Image(url="https://img.example.com/a.png"), "openai", False),
        (c.Image(url="https://img.example.com/a.png"), "anthropic", False),
        (c.Image(url="https://img.example.com/a.png"), "gemini", True),
        (c.Image(url="https://generativelanguage.googleapis.com/v1beta/files/abc"), "gemini", False),
        (c.Document(url="https://img.example.com/a.pdf"), "openai", True),
        (c.Document(url="https://img.example.com/a.pdf"), "anthropic", False),
        (c.Image(data=PNG, media_type="image/png"), "gemini", False),
    ],
)
def test_plan_lists_what_the_provider_needs_inline(part: c.Part, provider: str, needs: bool) -> None:
    assert media.plan(url_request(part), registry.get(provider), POLICY) == ([part.url] if needs else [])  # type: ignore[union-attr]


def test_plan_refuses_clearly() -> None:
    img = c.Image(url="https://img.example.com/a.png")
    with pytest.raises(GatewayError, match="does not fetch URLs") as info:
        media.plan(url_request(img), registry.get("gemini"), media.FetchPolicy())
    assert info.value.status == 400
    with pytest.raises(GatewayError, match=r"not in image_fetch\.allow_hosts"):
        media.plan(url_request(c.Image(url="https://evil.internal/a.png")), registry.get("gemini"), POLICY)
    with pytest.raises(GatewayError, match="only https"):
        media.plan(url_request(c.Image(url="http://img.example.com/a.png")), registry.get("gemini"), POLICY)
    with pytest.raises(GatewayError, match="only be read by Gemini"):
        media.plan(
            url_request(c.Image(url="https://generativelanguage.googleapis.com/f/1")), registry.get("openai"), POLICY
        )
    with pytest.raises(GatewayError, match="scheme 'gs:'"):
        media.plan(url_request(c.Image(url="gs://bucket/a.png")), registry.get("anthropic"), POLICY)
    assert POLICY.host_allowed("a.cdn.example") and not POLICY.host_allowed("cdn.example")


def test_substitute_inlines_fetched_bytes_in_tool_results_too() -> None:
    img = c.Image(url="https://img.example.com/a.png")
    nested = c.Image(url="https://img.example.com/a.png")
    req = url_request(img)
    req.messages.append(c.Message("user", [c.ToolResult("t1", "f", [nested])]))
    media.substitute(req, {"https://img.example.com/a.png": media.Fetched("image/png", PNG)})
    assert img == nested == c.Image(media_type="image/png", data=PNG)
    body = orjson.loads(gemini.build_request(req, model="gemini-2.5-flash"))
    assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}


def _transport(routes: dict[str, httpx.Response]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return routes.get(str(request.url), httpx.Response(404))

    return httpx.MockTransport(handler)


def test_fetch_all_limits_and_redirects() -> None:
    png = base64.b64decode(PNG)
    routes = {
        "https://img.example.com/a.png": httpx.Response(200, content=png, headers={"content-type": "image/png"}),
        "https://img.example.com/big": httpx.Response(200, content=b"x" * 100, headers={"content-type": "image/png"}),
        "https://img.example.com/r": httpx.Response(302, headers={"location": "https://evil.internal/x"}),
        "https://img.example.com/r2": httpx.Response(302, headers={"location": "/a.png"}),
        "https://img.example.com/html": httpx.Response(200, content=b"<p>", headers={"content-type": "text/html"}),
    }

    def run(url: str) -> Any:
        return asyncio.run(fetch.fetch_all([url], POLICY, transport=_transport(routes)))

    got = run("https://img.example.com/a.png")
    assert got == {"https://img.example.com/a.png": media.Fetched("image/png", PNG)}
    assert run("https://img.example.com/r2")["https://img.example.com/r2"].data == PNG
    for url, words in [("big", "max_bytes"), ("r", "allow_hosts"), ("missing", "HTTP 404")]:
        err = run(f"https://img.example.com/{url}")
        assert isinstance(err, GatewayError) and words in err.message and err.status == 400
    err = run("https://img.example.com/html")
    assert isinstance(err, GatewayError) and "served as 'text/html'" in err.message


def test_exchange_holds_the_request_while_fetching() -> None:
    config = cfg(image_fetch={"enabled": True, "allow_hosts": ["img.example.com"]})
    ex = exchange(config)
    headers(ex, "/openai/v1/chat/completions", "POST")
    body = orjson.dumps(
        {
            "model": "gem-x",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://img.example.com/a"}}]}
            ],
        }
    )
    action = ex.on_request_body(body)
    assert isinstance(action, media.FetchMedia) and action.urls == ["https://img.example.com/a"]
    fwd = ex.on_fetched({"https://img.example.com/a": media.Fetched("image/png", PNG)})
    assert isinstance(fwd, Forward) and fwd.body is not None
    assert orjson.loads(fwd.body)["contents"][0]["parts"][0]["inlineData"] == {"mimeType": "image/png", "data": PNG}
    ex2 = exchange(config)
    headers(ex2, "/openai/v1/chat/completions", "POST")
    assert isinstance(ex2.on_request_body(body), media.FetchMedia)
    failed = ex2.on_fetched(GatewayError("invalid_request", "too big", 400))
    assert isinstance(failed, Reply) and failed.status == 400
    ex3 = exchange()  # fetching off: a clear 400 before anything is sent
    headers(ex3, "/openai/v1/chat/completions", "POST")
    refused = ex3.on_request_body(body)
    assert isinstance(refused, Reply) and refused.status == 400 and b"image_fetch" in refused.body


def test_image_fetch_config_is_checked() -> None:
    with pytest.raises(Exception, match="allow_hosts"):
        cfg(image_fetch={"enabled": True})
    with pytest.raises(Exception, match="unknown field"):
        cfg(image_fetch={"enabled": False, "hosts": []})
    assert cfg().image_fetch.enabled is False


# ------------------------------------------------------------------------------------------------------- images/docs
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_base64_image_media_type_both_ways(provider: str) -> None:
    req = url_request(c.Image(media_type="image/webp", data=PNG))
    body = orjson.loads(FORMATS[provider].build_request(req, model="m"))
    if provider == "openai":
        assert body["messages"][0]["content"][1]["image_url"]["url"] == f"data:image/webp;base64,{PNG}"
    elif provider == "anthropic":
        assert body["messages"][0]["content"][1]["source"] == {
            "type": "base64",
            "media_type": "image/webp",
            "data": PNG,
        }
    else:
        assert body["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/webp", "data": PNG}}
    back = FORMATS[provider].parse_request(orjson.dumps(body), model="m")
    assert back.messages[0].parts[1] == c.Image(media_type="image/webp", data=PNG)


def test_documents_clear_400s() -> None:
    with pytest.raises(GatewayError, match="PDF documents only"):
        openai.build_request(url_request(c.Document(media_type="application/msword", data="AAAA")), model="m")
    with pytest.raises(GatewayError, match="PDF and text documents"):
        anthropic.build_request(url_request(c.Document(media_type="application/msword", data="AAAA")), model="m")
    with pytest.raises(GatewayError, match="JPEG, PNG"):
        anthropic.build_request(url_request(c.Image(media_type="image/heic", data="AAAA")), model="m")
    text = base64.b64encode(b"a,b").decode()
    body = orjson.loads(openai.build_request(url_request(c.Document(media_type="text/csv", data=text)), model="m"))
    assert body["messages"][0]["content"][1] == {"type": "text", "text": "a,b"}


# ------------------------------------------------------------------------------------------------------- schemas
def test_schema_for_anthropic() -> None:
    src = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "description": "count"},
            "tags": {"type": "array", "items": {"type": "string", "format": "color"}, "minItems": 3},
            "maybe": {"type": ["string", "null"]},
            "kind": {"oneOf": [{"const": "a"}, {"type": "object", "properties": {}}]},
        },
        "required": ["n"],
    }
    assert schemas.for_anthropic(src) == {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "description": "count\n\n{minimum: 1}"},
            "tags": {
                "type": "array",
                "items": {"type": "string", "description": "{format: color}"},
                "description": "{minItems: 3}",
            },
            "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "kind": {"anyOf": [{"const": "a"}, {"type": "object", "properties": {}, "additionalProperties": False}]},
        },
        "additionalProperties": False,
        "required": ["n"],
    }


def test_schema_for_gemini() -> None:
    src = {"$schema": "x", "type": "object", "properties": {"k": {"const": 1}, "u": {"oneOf": [{"type": "string"}]}}}
    assert schemas.for_gemini(src) == {
        "type": "object",
        "properties": {"k": {"enum": [1]}, "u": {"anyOf": [{"type": "string"}]}},
    }


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_structured_output_out(provider: str) -> None:
    req = url_request()
    req.response_format = c.ResponseFormat("json_schema", {"type": "object", "properties": {}}, "out")
    body = orjson.loads(FORMATS[provider].build_request(req, model="m"))
    if provider == "openai":
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object", "properties": {}}},
        }
    elif provider == "anthropic":
        schema = {"type": "object", "properties": {}, "additionalProperties": False}
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    else:
        gc = body["generationConfig"]
        assert gc == {
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "object", "properties": {}},
        }


def test_gemini_enum_mime_type_is_refused() -> None:
    body = {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"responseMimeType": "text/x.enum"}}
    with pytest.raises(GatewayError, match="not supported across providers"):
        gemini.parse_request(orjson.dumps(body), model="m")


# ------------------------------------------------------------------------------------------------------- reasoning
@pytest.mark.parametrize(
    ("model", "effort", "budget", "thinking", "out_effort"),
    [
        ("claude-opus-4-6", "high", None, {"type": "adaptive"}, "high"),
        ("claude-sonnet-4-5", "high", None, {"type": "enabled", "budget_tokens": 16384}, None),
        ("claude-opus-4-6", "none", None, {"type": "disabled"}, None),
        ("claude-opus-4-6", None, -1, {"type": "adaptive"}, None),
        ("claude-sonnet-4-5", None, -1, {"type": "enabled", "budget_tokens": 8192}, None),
        ("claude-opus-4-6", None, 512, {"type": "enabled", "budget_tokens": 1024}, None),
        ("claude-opus-4-6", "xhigh", 0, {"type": "disabled"}, "xhigh"),
    ],
)
def test_anthropic_thinking_plan(
    model: str, effort: str | None, budget: int | None, thinking: dict[str, Any], out_effort: str | None
) -> None:
    req = url_request()
    req.reasoning_effort, req.thinking_budget, req.max_tokens = effort, budget, 32000
    body = orjson.loads(anthropic.build_request(req, model=model))
    assert body["thinking"] == thinking
    assert body.get("output_config", {}).get("effort") == out_effort


def test_anthropic_thinking_dropped_when_the_tool_turn_lost_its_signature() -> None:
    req = c.Request(
        model="m",
        messages=[
            c.Message("user", [c.Text("q")]),
            c.Message("assistant", [c.ToolCall("t1", "f", "{}")]),
            c.Message("user", [c.ToolResult("t1", "f", [c.Text("r")])]),
        ],
        reasoning_effort="high",
    )
    assert "thinking" not in orjson.loads(anthropic.build_request(req, model="claude-opus-4-6"))
    req.messages[1].parts.insert(0, c.Thinking("hm", "c2ln-_"))
    body = orjson.loads(anthropic.build_request(req, model="claude-opus-4-6"))
    assert body["thinking"] == {"type": "adaptive"}
    assert body["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hm", "signature": "c2ln+/"}


@pytest.mark.parametrize(
    ("model", "effort", "budget", "expected"),
    [
        ("gemini-2.5-flash", "high", None, {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-3-pro", "xhigh", None, {"thinkingLevel": "HIGH", "includeThoughts": True}),
        ("gemini-2.5-flash", "none", None, {"thinkingBudget": 0}),
        ("gemini-3-pro", None, -1, {"thinkingBudget": -1, "includeThoughts": True}),
    ],
)
def test_gemini_thinking_config(model: str, effort: str | None, budget: int | None, expected: dict[str, Any]) -> None:
    req = url_request()
    req.reasoning_effort, req.thinking_budget = effort, budget
    assert orjson.loads(gemini.build_request(req, model=model))["generationConfig"]["thinkingConfig"] == expected


def test_openai_thinking_blocks_round_trip() -> None:
    resp = c.Response(
        id="r", model="m", parts=[c.Thinking("why", "SIG"), c.Thinking(redacted="opaque"), c.ToolCall("t", "f", "{}")]
    )
    msg = orjson.loads(openai.build_response(resp, model="m"))["choices"][0]["message"]
    assert msg["reasoning_content"] == "why"
    assert msg["thinking_blocks"] == [
        {"type": "thinking", "thinking": "why", "signature": "SIG"},
        {"type": "redacted_thinking", "data": "opaque"},
    ]
    msg["content"] = None
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "q"}, msg, {"role": "tool", "tool_call_id": "t", "content": "r"}],
    }
    parts = openai.parse_request(orjson.dumps(body)).messages[1].parts
    assert parts[:2] == [c.Thinking("why", "SIG"), c.Thinking(redacted="opaque")]


def test_reasoning_usage_mapped() -> None:
    usage = c.Usage(input_tokens=10, output_tokens=8, reasoning_tokens=3)
    resp = c.Response(id="r", model="m", parts=[c.Text("x")], usage=usage)
    assert orjson.loads(openai.build_response(resp, model="m"))["usage"]["completion_tokens_details"] == {
        "reasoning_tokens": 3
    }
    assert orjson.loads(anthropic.build_response(resp, model="m"))["usage"]["output_tokens_details"] == {
        "thinking_tokens": 3
    }
    meta = orjson.loads(gemini.build_response(resp, model="m"))["usageMetadata"]
    assert (meta["candidatesTokenCount"], meta["thoughtsTokenCount"]) == (5, 3)


# ------------------------------------------------------------------------------------------------------- tool choice
def test_openai_allowed_tools_restricts_the_tool_list() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b", "c")]
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [tools[0], tools[2]]}}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": choice}
    req = openai.parse_request(orjson.dumps(body))
    assert [t.name for t in req.tools] == ["a", "c"] and req.tool_choice == c.ToolChoice("required")


def test_gemini_any_with_several_names_restricts_the_tool_list() -> None:
    decls = [{"name": n} for n in ("a", "b", "c")]
    fcc = {"mode": "ANY", "allowedFunctionNames": ["b", "c"]}
    body = {
        "contents": [{"parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": decls}],
        "toolConfig": {"functionCallingConfig": fcc},
    }
    req = gemini.parse_request(orjson.dumps(body), model="m")
    assert [t.name for t in req.tools] == ["b", "c"] and req.tool_choice == c.ToolChoice("required")


@pytest.mark.parametrize(
    ("choice", "parallel", "oa", "an", "ge"),
    [
        (c.ToolChoice("auto"), None, "auto", {"type": "auto"}, {"mode": "AUTO"}),
        (c.ToolChoice("none"), None, "none", {"type": "none"}, {"mode": "NONE"}),
        (
            c.ToolChoice("required"),
            False,
            "required",
            {"type": "any", "disable_parallel_tool_use": True},
            {"mode": "ANY"},
        ),
        (
            c.ToolChoice("tool", "f"),
            None,
            {"type": "function", "function": {"name": "f"}},
            {"type": "tool", "name": "f"},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice_out(choice: c.ToolChoice, parallel: bool | None, oa: Any, an: Any, ge: Any) -> None:
    req = url_request()
    req.tools, req.tool_choice, req.parallel_tool_calls = [c.Tool("f")], choice, parallel
    assert orjson.loads(openai.build_request(req, model="m"))["tool_choice"] == oa
    assert orjson.loads(anthropic.build_request(req, model="m"))["tool_choice"] == an
    assert orjson.loads(gemini.build_request(req, model="m"))["toolConfig"]["functionCallingConfig"] == ge


# ------------------------------------------------------------------------------------------------------- stop reasons
@pytest.mark.parametrize(
    ("reason", "seq", "oa", "an", "ge"),
    [
        ("stop", None, "stop", "end_turn", "STOP"),
        ("stop", "END", "stop", "stop_sequence", "STOP"),
        ("length", None, "length", "max_tokens", "MAX_TOKENS"),
        ("content_filter", None, "content_filter", "refusal", "SAFETY"),
    ],
)
def test_finish_reasons_out(reason: str, seq: str | None, oa: str, an: str, ge: str) -> None:
    resp = c.Response(id="r", model="m", parts=[c.Text("x")], finish_reason=reason, stop_sequence=seq)
    assert orjson.loads(openai.build_response(resp, model="m"))["choices"][0]["finish_reason"] == oa
    out = orjson.loads(anthropic.build_response(resp, model="m"))
    assert (out["stop_reason"], out["stop_sequence"]) == (an, seq)
    assert orjson.loads(gemini.build_response(resp, model="m"))["candidates"][0]["finishReason"] == ge
    for fmt, name in ((openai, "openai"), (anthropic, "anthropic"), (gemini, "gemini")):
        kwargs = {"sse": True} if name == "gemini" else {}
        enc = fmt.StreamEncoder(model="m", include_usage=False, **kwargs)
        data = enc.encode(c.TextDelta("x")) + enc.encode(c.Finish(reason, seq)) + enc.finish()
        assert {"openai": oa, "anthropic": an, "gemini": ge}[name].encode() in data


@pytest.mark.parametrize(
    ("provider", "raw", "expected"),
    [
        ("openai", {"finish_reason": "content_filter"}, "content_filter"),
        ("openai", {"finish_reason": "length"}, "length"),
        ("anthropic", {"stop_reason": "refusal"}, "content_filter"),
        ("anthropic", {"stop_reason": "max_tokens"}, "length"),
        ("gemini", {"finishReason": "SAFETY"}, "content_filter"),
        ("gemini", {"finishReason": "PROHIBITED_CONTENT"}, "content_filter"),
        ("gemini", {"finishReason": "MAX_TOKENS"}, "length"),
    ],
)
def test_finish_reasons_in(provider: str, raw: dict[str, Any], expected: str) -> None:
    if provider == "openai":
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, **raw}]}
    elif provider == "anthropic":
        body = {"type": "message", "content": [{"type": "text", "text": "x"}], **raw}
    else:
        body = {"candidates": [{"content": {"parts": [{"text": "x"}]}, **raw}]}
    assert FORMATS[provider].parse_response(orjson.dumps(body)).finish_reason == expected


# ------------------------------------------------------------------------------------------------------- candidates
def test_candidates_openai_to_gemini_and_back() -> None:
    body = {
        "id": "x",
        "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "finish_reason": "length"},
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
        ],
    }
    resp = openai.parse_response(orjson.dumps(body))
    assert resp.parts == [c.Text("a")] and resp.candidates == [c.Candidate([c.Text("b")], "length")]
    out = orjson.loads(gemini.build_response(resp, model="m"))
    assert [(k["index"], k["content"]["parts"], k["finishReason"]) for k in out["candidates"]] == [
        (0, [{"text": "a"}], "STOP"),
        (1, [{"text": "b"}], "MAX_TOKENS"),
    ]
    back = gemini.parse_response(orjson.dumps(out))
    again = orjson.loads(openai.build_response(back, model="m"))
    assert [(ch["index"], ch["message"]["content"], ch["finish_reason"]) for ch in again["choices"]] == [
        (0, "a", "stop"),
        (1, "b", "length"),
    ]


def test_n_refused_where_it_cannot_map() -> None:
    req = url_request()
    req.n = 2
    with pytest.raises(GatewayError, match="n > 1"):
        anthropic.build_request(req, model="m")
    req.stream = True
    for fmt in (openai, gemini):
        with pytest.raises(GatewayError, match="cannot be streamed"):
            fmt.build_request(req, model="m")
    req.stream = False
    assert orjson.loads(gemini.build_request(req, model="m"))["generationConfig"]["candidateCount"] == 2
    assert orjson.loads(openai.build_request(req, model="m"))["n"] == 2


def test_upper_case_schema_types_become_json_schema_types() -> None:
    """Gemini takes OpenAPI-style type names in JSON Schema; only type keywords change, never a property called
    "type", and every place a sub-schema can be is visited."""
    schema = {
        "type": "OBJECT",
        "properties": {
            "type": {"type": "STRING", "enum": ["OBJECT"]},
            "items": {"type": "ARRAY", "items": {"type": "INTEGER"}},
            "either": {"anyOf": [{"type": "NUMBER"}, {"type": ["BOOLEAN", "NULL"]}]},
        },
        "$defs": {"x": {"type": "TYPE_UNSPECIFIED", "description": "any"}},
        "additionalProperties": {"type": "STRING"},
    }
    assert schemas.with_lowercase_types(schema) == {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["OBJECT"]},
            "items": {"type": "array", "items": {"type": "integer"}},
            "either": {"anyOf": [{"type": "number"}, {"type": ["boolean", "null"]}]},
        },
        "$defs": {"x": {"description": "any"}},
        "additionalProperties": {"type": "string"},
    }
