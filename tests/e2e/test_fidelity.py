"""Fidelity beyond chat text, through the real gateway with the official SDKs: model listing, images, structured
output, reasoning with signatures across a tool loop, tool choice, stop reasons, several candidates, token counting."""

from __future__ import annotations

import base64
import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as gerrors
from google.genai import types as gtypes

from tests.conftest import MODELS, Gateway
from tests.e2e.sdk import WEATHER_TOOL, anthropic_client, gemini_client, openai_client
from tests.mocks.providers import ANTHROPIC_THINKING_SIGNATURES, GEMINI_THOUGHT_SIGNATURES
from tests.paths import RECORDED_CLIENTS

CLIENTS = ("openai", "anthropic", "gemini")
PROVIDERS = ("openai", "anthropic", "gemini")
PAIRS = [(c, p) for c in CLIENTS for p in PROVIDERS]
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
TIME_TOOL = {"name": "get_time", "description": "Time in a city", "parameters": WEATHER_TOOL["parameters"]}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}


# ------------------------------------------------------------------------------------------------------- model list
def test_models_list_openai(gateway: Gateway) -> None:
    cl = openai_client(gateway.url)
    ids = [m.id for m in cl.models.list()]
    assert MODELS["anthropic"] in ids and "alias-gemini" in ids
    m = cl.models.retrieve(MODELS["gemini"])
    assert (m.id, m.object, m.owned_by) == (MODELS["gemini"], "model", "gemini")
    with pytest.raises(openai.NotFoundError):
        cl.models.retrieve("no-such-model")


def test_models_list_anthropic(gateway: Gateway) -> None:
    cl = anthropic_client(gateway.url)
    ids = [m.id for m in cl.models.list(limit=3)]  # pages through has_more / after_id
    assert MODELS["openai"] in ids and "dead-model" in ids and len(ids) == len(set(ids))
    assert cl.models.retrieve(MODELS["openai"]).id == MODELS["openai"]
    with pytest.raises(anthropic.NotFoundError):
        cl.models.retrieve("no-such-model")


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_models_list_gemini(gateway: Gateway, version: str) -> None:
    cl = gemini_client(gateway.url, api_version=version)
    names = [m.name for m in cl.models.list(config={"page_size": 3})]
    assert f"models/{MODELS['anthropic']}" in names and len(names) == len(set(names))
    got = cl.models.get(model=MODELS["gemini"])
    assert got.name == f"models/{MODELS['gemini']}" and "countTokens" in (got.supported_actions or [])
    with pytest.raises(gerrors.ClientError) as info:
        cl.models.get(model="no-such-model")
    assert info.value.code == 404


# ------------------------------------------------------------------------------------------------------- images
def _image_request(client: str, url: str, model: str, image: dict[str, str]) -> str:
    """One user turn with text + an image ({"data", "media_type"} or {"url"}); returns the answer text."""
    if client == "openai":
        src = image.get("url") or f"data:{image['media_type']};base64,{image['data']}"
        r = openai_client(url).chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": src}}],
                }
            ],
        )
        return r.choices[0].message.content or ""
    if client == "anthropic":
        source: dict[str, Any] = (
            {"type": "url", "url": image["url"]}
            if "url" in image
            else {"type": "base64", "media_type": image["media_type"], "data": image["data"]}
        )
        r2 = anthropic_client(url).messages.create(
            model=model,
            max_tokens=100,
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "describe"}, {"type": "image", "source": source}]}
            ],  # type: ignore[list-item]
        )
        return "".join(b.text for b in r2.content if b.type == "text")
    part = (
        gtypes.Part.from_uri(file_uri=image["url"], mime_type="image/png")
        if "url" in image
        else gtypes.Part.from_bytes(data=base64.b64decode(image["data"]), mime_type=image["media_type"])
    )
    cl = gemini_client(url)
    r3 = cl.models.generate_content(
        model=model, contents=[gtypes.Content(role="user", parts=[gtypes.Part(text="describe"), part])]
    )
    return r3.text or ""


def _received_image(provider: str, body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(media type, base64 data, url) of the image the provider got."""
    if provider == "openai":
        part = body["messages"][-1]["content"][1]["image_url"]["url"]
        if part.startswith("data:"):
            head, _, data = part.partition(",")
            return head[5:].split(";")[0], data, None
        return None, None, part
    if provider == "anthropic":
        src = body["messages"][-1]["content"][1]["source"]
        return src.get("media_type"), src.get("data"), src.get("url")
    part = body["contents"][-1]["parts"][1]
    blob = part.get("inlineData") or part.get("inline_data")
    if blob:
        return blob.get("mimeType") or blob.get("mime_type"), blob["data"], None
    return None, None, (part.get("fileData") or part.get("file_data"))["fileUri"]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_base64_image_keeps_media_type(gateway: Gateway, client: str, provider: str) -> None:
    text = _image_request(client, gateway.url, MODELS[provider], {"media_type": "image/png", "data": PNG})
    assert "describe" in text
    media, data, url = _received_image(provider, gateway.mocks[provider].last().body)
    assert media == "image/png" and url is None
    assert base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_") == base64.b64decode(PNG)


@pytest.mark.parametrize(("client", "provider"), [(c, p) for c in ("openai", "anthropic") for p in PROVIDERS])
def test_url_image(gateway: Gateway, client: str, provider: str) -> None:
    image = {"url": "https://images.example.com/cat.png"}
    if provider == "gemini":  # Gemini reads only Google-hosted URIs: the gateway does not fetch by default
        exc = openai.BadRequestError if client == "openai" else anthropic.BadRequestError
        with pytest.raises(exc, match="does not fetch URLs"):
            _image_request(client, gateway.url, MODELS[provider], image)
        return
    _image_request(client, gateway.url, MODELS[provider], image)
    assert _received_image(provider, gateway.mocks[provider].last().body)[2] == image["url"]


def test_url_image_fetched_when_enabled(mocks: dict) -> None:  # type: ignore[type-arg]
    """With image_fetch enabled for the host, a URL image reaches a Gemini provider as inlineData (with the served
    media type); a host not on the allow-list and an oversized image stay a clear 400."""
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    from tests.conftest import free_port, gateway_config, start_gateway, stop_gateway

    png = base64.b64decode(PNG)

    class Images(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = png if self.path == "/cat.png" else png * 100
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fetch_cfg = 'image_fetch:\n  enabled: true\n  allow_http: true\n  max_bytes: 1000\n  allow_hosts: ["127.0.0.1"]\n'
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()) + fetch_cfg, workers=1)
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            for client in ("openai", "anthropic"):
                _image_request(client, gw.url, MODELS["gemini"], {"url": f"{base}/cat.png"})
                media, data, url = _received_image("gemini", mocks["gemini"].last().body)
                assert (media, url) == ("image/png", None)
                assert base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_") == png
            with pytest.raises(openai.BadRequestError, match="max_bytes"):
                _image_request("openai", gw.url, MODELS["gemini"], {"url": f"{base}/big.png"})
            with pytest.raises(openai.BadRequestError, match="allow_hosts"):
                _image_request(
                    "openai", gw.url, MODELS["gemini"], {"url": f"http://localhost:{server.server_port}/cat.png"}
                )
        finally:
            stop_gateway(gw)
            server.shutdown()


# ------------------------------------------------------------------------------------------------- structured output
def _structured(client: str, url: str, model: str) -> str:
    if client == "openai":
        r = openai_client(url).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "weather as JSON"}],
            response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}},
        )
        return r.choices[0].message.content or ""
    if client == "anthropic":
        r2 = anthropic_client(url).messages.create(
            model=model,
            max_tokens=200,
            messages=[{"role": "user", "content": "weather as JSON"}],
            output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
        )
        return "".join(b.text for b in r2.content if b.type == "text")
    cfg = gtypes.GenerateContentConfig(response_mime_type="application/json", response_json_schema=SCHEMA)
    cl = gemini_client(url)
    return cl.models.generate_content(model=model, contents="weather as JSON", config=cfg).text or ""


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_structured_output(gateway: Gateway, client: str, provider: str) -> None:
    assert json.loads(_structured(client, gateway.url, MODELS[provider])) == {"city": "mock", "temp": 1}
    body = gateway.mocks[provider].last().body
    if provider == "openai":
        assert body["response_format"]["json_schema"]["schema"]["properties"]["temp"] == {"type": "integer"}
    elif provider == "anthropic":
        assert body["output_config"]["format"]["schema"]["additionalProperties"] is False
    else:
        gc = body.get("generationConfig") or body.get("generation_config")
        assert (gc.get("responseMimeType") or gc.get("response_mime_type")) == "application/json"


def test_gemini_response_schema_is_converted(gateway: Gateway) -> None:
    schema = gtypes.Schema(type="OBJECT", properties={"city": gtypes.Schema(type="STRING")}, required=["city"])
    cfg = gtypes.GenerateContentConfig(response_mime_type="application/json", response_schema=schema)
    cl = gemini_client(gateway.url)
    r = cl.models.generate_content(model=MODELS["anthropic"], contents="x", config=cfg)
    assert json.loads(r.text or "") == {"city": "mock"}
    sent = gateway.mocks["anthropic"].last().body["output_config"]["format"]["schema"]
    assert sent["properties"]["city"]["type"] == "string" and sent["additionalProperties"] is False


# ------------------------------------------------------------------------------------------------------- reasoning
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_gemini_cli_router_request_with_upper_case_schema_types(gateway: Gateway, provider: str) -> None:
    """Gemini CLI 0.61's model-router request, byte for byte as recorded: its ``responseJsonSchema`` says ``OBJECT``,
    ``STRING``, ``INTEGER`` (Gemini accepts that). Towards OpenAI and Anthropic the schema arrives as JSON Schema with
    lower-case types and its properties where they were."""
    recorded = (RECORDED_CLIENTS / "gemini-cli" / "router-request.json").read_bytes()
    url = f"{gateway.url}/gemini/v1beta/models/{MODELS[provider]}:generateContent"
    r = httpx.post(url, content=recorded, headers={"content-type": "application/json", "x-goog-api-key": "k"})
    assert r.status_code == 200, r.text[:500]
    body = gateway.mocks[provider].last().body
    if provider == "openai":
        schema = body["response_format"]["json_schema"]["schema"]
    else:
        schema = body["output_config"]["format"]["schema"]
    assert schema["type"] == "object"
    assert schema["properties"]["complexity_reasoning"]["type"] == "string"
    assert schema["properties"]["complexity_score"]["type"] == "integer"
    assert schema["required"] == ["complexity_reasoning", "complexity_score"]


def _thinking_tool_loop(client: str, url: str, model: str) -> tuple[str, str, int]:
    """Turn one with reasoning on and a tool; turn two answers the call, echoing the assistant turn the way the SDK
    hands it back. Returns (reasoning text of turn one, final text, reasoning tokens of turn one)."""
    if client == "openai":
        cl = openai_client(url)
        tools = [{"type": "function", "function": WEATHER_TOOL}]
        messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        r1 = cl.chat.completions.create(model=model, messages=messages, tools=tools, reasoning_effort="high")  # type: ignore[arg-type]
        msg = r1.choices[0].message
        echoed = msg.model_dump(exclude_none=True)  # keeps reasoning_content and thinking_blocks (extra fields)
        echoed.pop("annotations", None)
        messages.append(echoed)
        for tc in msg.tool_calls or []:
            messages.append({"role": "tool", "tool_call_id": tc.id, "content": "sunny"})
        r2 = cl.chat.completions.create(model=model, messages=messages, tools=tools, reasoning_effort="high")  # type: ignore[arg-type]
        details = r1.usage.completion_tokens_details if r1.usage else None
        reasoning = getattr(msg, "reasoning_content", None) or ""
        return reasoning, r2.choices[0].message.content or "", (details.reasoning_tokens or 0) if details else 0
    if client == "anthropic":
        acl = anthropic_client(url)
        atools = [{"name": "get_weather", "description": "w", "input_schema": WEATHER_TOOL["parameters"]}]
        am: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
        thinking = {"type": "enabled", "budget_tokens": 2048}
        a1 = acl.messages.create(model=model, max_tokens=4096, messages=am, tools=atools, thinking=thinking)  # type: ignore[arg-type]
        am.append({"role": "assistant", "content": a1.content})
        am.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": b.id, "content": "sunny"}
                    for b in a1.content
                    if b.type == "tool_use"
                ],
            }
        )
        a2 = acl.messages.create(model=model, max_tokens=4096, messages=am, tools=atools, thinking=thinking)  # type: ignore[arg-type]
        reasoning = "".join(b.thinking for b in a1.content if b.type == "thinking")
        details = a1.usage.output_tokens_details
        return (
            reasoning,
            "".join(b.text for b in a2.content if b.type == "text"),
            details.thinking_tokens if details else 0,
        )
    gcl = gemini_client(url)
    cfg = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**WEATHER_TOOL)])],
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
        thinking_config=gtypes.ThinkingConfig(include_thoughts=True, thinking_budget=2048),
    )
    contents: list[Any] = [gtypes.Content(role="user", parts=[gtypes.Part(text="Weather in Paris?")])]
    g1 = gcl.models.generate_content(model=model, contents=contents, config=cfg)
    cand = g1.candidates[0]
    contents.append(cand.content)
    contents.append(
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part.from_function_response(name=fc.name or "", response={"output": "sunny"})
                for fc in g1.function_calls or []
            ],
        )
    )
    g2 = gcl.models.generate_content(model=model, contents=contents, config=cfg)
    reasoning = "".join(p.text or "" for p in cand.content.parts or [] if p.thought)
    um = g1.usage_metadata
    return reasoning, g2.text or "", (um.thoughts_token_count or 0) if um else 0


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_reasoning_signatures_survive_a_tool_loop(gateway: Gateway, client: str, provider: str) -> None:
    mock = gateway.mocks[provider]
    reasoning, final, reasoning_tokens = _thinking_tool_loop(client, gateway.url, MODELS[provider])
    assert "Tool results: " in final and "sunny" in final
    assert reasoning_tokens == 3
    if provider != "openai":  # OpenAI's Chat Completions returns no reasoning text
        assert reasoning == "Let me think about this."
    body = mock.last().body
    if provider == "anthropic":
        assistant = body["messages"][-2]["content"]
        assert assistant[0]["type"] == "thinking" and assistant[0]["signature"] == ANTHROPIC_THINKING_SIGNATURES[0]
        assert body.get("thinking", {}).get("type") in ("enabled", "adaptive")
    if provider == "gemini":
        assert mock.last().thought_signatures[-1] in GEMINI_THOUGHT_SIGNATURES


def test_openai_client_dropping_thinking_still_works_with_anthropic(gateway: Gateway) -> None:
    """A client that does not echo thinking_blocks: turn two goes without thinking rather than being refused."""
    cl = openai_client(gateway.url)
    tools = [{"type": "function", "function": WEATHER_TOOL}]
    messages: list[Any] = [{"role": "user", "content": "Weather?"}]
    r1 = cl.chat.completions.create(model=MODELS["anthropic"], messages=messages, tools=tools, reasoning_effort="low")  # type: ignore[arg-type]
    tc = r1.choices[0].message.tool_calls[0]  # type: ignore[index]
    messages.append({"role": "assistant", "tool_calls": [tc.model_dump(exclude_none=True)]})
    messages.append({"role": "tool", "tool_call_id": tc.id, "content": "rain"})
    r2 = cl.chat.completions.create(model=MODELS["anthropic"], messages=messages, tools=tools, reasoning_effort="low")  # type: ignore[arg-type]
    assert "rain" in (r2.choices[0].message.content or "")
    assert "thinking" not in gateway.mocks["anthropic"].last().body


@pytest.mark.parametrize("provider", PROVIDERS)
def test_reasoning_streamed_to_anthropic_client(gateway: Gateway, provider: str) -> None:
    cl = anthropic_client(gateway.url)
    with cl.messages.stream(
        model=MODELS[provider],
        max_tokens=4096,
        messages=[{"role": "user", "content": "think"}],
        thinking={"type": "enabled", "budget_tokens": 2048},
    ) as s:
        final = s.get_final_message()
    kinds = [b.type for b in final.content]
    if provider == "openai":
        assert kinds == ["text"]
        return
    assert kinds == ["thinking", "text"] and final.content[0].thinking == "Let me think about this."  # type: ignore[union-attr]
    if provider == "anthropic":
        assert final.content[0].signature == ANTHROPIC_THINKING_SIGNATURES[0]  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------------- tool choice
def _forced_tool(client: str, url: str, model: str) -> list[str]:
    """Two tools declared, the second forced by name; returns the names called."""
    if client == "openai":
        tools = [{"type": "function", "function": WEATHER_TOOL}, {"type": "function", "function": TIME_TOOL}]
        r = openai_client(url).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "time?"}],
            tools=tools,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            parallel_tool_calls=False,
        )
        return [tc.function.name for tc in r.choices[0].message.tool_calls or []]  # type: ignore[union-attr]
    if client == "anthropic":
        tools2 = [
            {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
            for t in (WEATHER_TOOL, TIME_TOOL)
        ]
        r2 = anthropic_client(url).messages.create(
            model=model,
            max_tokens=100,
            messages=[{"role": "user", "content": "time?"}],
            tools=tools2,  # type: ignore[arg-type]
            tool_choice={"type": "tool", "name": "get_time", "disable_parallel_tool_use": True},
        )
        return [b.name for b in r2.content if b.type == "tool_use"]
    cfg = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(**t) for t in (WEATHER_TOOL, TIME_TOOL)])],
        tool_config=gtypes.ToolConfig(
            function_calling_config=gtypes.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_time"])
        ),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    cl = gemini_client(url)
    r3 = cl.models.generate_content(model=model, contents="time?", config=cfg)
    return [fc.name or "" for fc in r3.function_calls or []]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_named_tool_choice(gateway: Gateway, client: str, provider: str) -> None:
    assert _forced_tool(client, gateway.url, MODELS[provider]) == ["get_time"]
    body = gateway.mocks[provider].last().body
    if provider == "openai":
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    elif provider == "anthropic":
        assert body["tool_choice"]["type"] == "tool" and body["tool_choice"]["name"] == "get_time"
        if client != "gemini":  # Gemini has no parallel switch
            assert body["tool_choice"]["disable_parallel_tool_use"] is True
    else:
        fcc = body["toolConfig"]["functionCallingConfig"]
        assert fcc == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}


# ------------------------------------------------------------------------------------------------------- stop reasons
REFUSED = {"openai": "content_filter", "anthropic": "refusal", "gemini": "SAFETY"}


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_refusal_finish(gateway: Gateway, client: str, provider: str) -> None:
    from tests.e2e.sdk import ask

    assert ask(client, gateway.url, MODELS[provider], "REFUSE this").finish == REFUSED[client]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_length_finish_streamed(gateway: Gateway, client: str, provider: str) -> None:
    from tests.e2e.sdk import FINISH, stream

    assert stream(client, gateway.url, MODELS[provider], "LENGTH please").finish == FINISH[client]["length"]


def test_stop_sequence_reaches_anthropic_client(gateway: Gateway) -> None:
    r = anthropic_client(gateway.url).messages.create(
        model=MODELS["anthropic"], max_tokens=50, messages=[{"role": "user", "content": "STOPSEQ"}]
    )
    assert (r.stop_reason, r.stop_sequence) == ("stop_sequence", "END")


# ------------------------------------------------------------------------------------------------------- candidates
def test_openai_n_from_gemini(gateway: Gateway) -> None:
    r = openai_client(gateway.url).chat.completions.create(
        model=MODELS["gemini"], messages=[{"role": "user", "content": "two"}], n=2
    )
    assert [c.index for c in r.choices] == [0, 1] and r.choices[1].message.content.endswith("(#1)")  # type: ignore[union-attr]
    assert gateway.mocks["gemini"].last().body["generationConfig"]["candidateCount"] == 2


def test_gemini_candidates_from_openai(gateway: Gateway) -> None:
    cfg = gtypes.GenerateContentConfig(candidate_count=2)
    cl = gemini_client(gateway.url)
    r = cl.models.generate_content(model=MODELS["openai"], contents="two", config=cfg)
    assert len(r.candidates or []) == 2 and gateway.mocks["openai"].last().body["n"] == 2


def test_n_refused_for_anthropic_provider(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        openai_client(gateway.url).chat.completions.create(
            model=MODELS["anthropic"], messages=[{"role": "user", "content": "two"}], n=2
        )


# ------------------------------------------------------------------------------------------------------- token counting
def test_anthropic_count_tokens(gateway: Gateway) -> None:
    cl = anthropic_client(gateway.url)
    msgs = [{"role": "user", "content": "count me"}]
    assert cl.messages.count_tokens(model=MODELS["anthropic"], messages=msgs).input_tokens == 5  # type: ignore[arg-type]
    assert gateway.mocks["anthropic"].last().path == "/v1/messages/count_tokens"
    with pytest.raises(anthropic.BadRequestError, match="token counting"):
        cl.messages.count_tokens(model=MODELS["openai"], messages=msgs)  # type: ignore[arg-type]
    # A Gemini-served model counts through Gemini's countTokens, system prompt included.
    counted = cl.messages.count_tokens(model=MODELS["gemini"], system="short", messages=msgs)  # type: ignore[arg-type]
    assert counted.input_tokens == 5
    sent = gateway.mocks["gemini"].last()
    assert sent.path.endswith(f"/models/{MODELS['gemini']}:countTokens")
    inner = sent.body["generateContentRequest"]
    assert inner["contents"] == [{"role": "user", "parts": [{"text": "count me"}]}]
    assert inner["systemInstruction"]["parts"] == [{"text": "short"}]


def test_gemini_count_tokens(gateway: Gateway) -> None:
    cl = gemini_client(gateway.url)
    assert cl.models.count_tokens(model="alias-gemini", contents="count me").total_tokens == 5
    assert gateway.mocks["gemini"].last().path.endswith("/models/gemini-upstream-name:countTokens")
    with pytest.raises(gerrors.ClientError, match="token counting"):
        cl.models.count_tokens(model=MODELS["openai"], contents="count me")
    # An Anthropic-served model counts through Anthropic's count_tokens.
    assert cl.models.count_tokens(model=MODELS["anthropic"], contents="count me").total_tokens == 5
    sent = gateway.mocks["anthropic"].last()
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.body == {"model": MODELS["anthropic"], "messages": [{"role": "user", "content": "count me"}]}
