"""The Responses API through a real Envoy: the official ``openai`` SDK (``client.responses``) against every provider
type, Chat/Anthropic/Gemini clients against a Responses-only provider, the gateway's conversation store, and bad
input. Real agent clients (Codex CLI, the Agents SDK, the AI SDK) are in ``test_responses_agents.py``.

Providers: the strict mocks of ``tests/mocks`` (OpenAI Chat Completions, Anthropic, Gemini) and the strict Responses
mock (``tests/mocks/responses_provider.py``) as an OpenAI provider with ``api: responses``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest
from google import genai
from google.genai import types as gtypes

from tests.conftest import KEYS, OPEN_CAPS, Gateway, start_gateway, stop_gateway
from tests.mocks.providers import ANTHROPIC_THINKING_SIGNATURES, MockProvider
from tests.mocks.responses_provider import COUNT_TOKENS, ResponsesMock

TEAM_A = "gw-key-team-a-0123456789"
TEAM_B = "gw-key-team-b-0123456789"
# client model name -> the mock that serves it
MODELS = {"gpt-test": "openai", "claude-test": "anthropic", "gemini-test": "gemini", "codex-test": "responses"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER,
        "strict": False,
    }
]


def config(responses_url: str, data_dir: Path) -> str:
    return f"""
version: "1.0"
timeout: "10s"
providers:
  - name: "oai-responses"
    type: "openai"
    api: "responses"
    base_url: "{responses_url}"
    api_key_env: "OPENAI_API_KEY"
models:
  - name: "gpt-test"
    provider: "openai"
    capabilities: {OPEN_CAPS["openai"]}
  - name: "claude-test"
    provider: "anthropic"
    capabilities: {OPEN_CAPS["anthropic"]}
  - name: "gemini-test"
    provider: "gemini"
    capabilities: {OPEN_CAPS["gemini"]}
  - name: "codex-test"
    provider: "oai-responses"
    capabilities: {OPEN_CAPS["openai"]}
  - name: "codex-alias"
    provider: "oai-responses"
    target_model: "gpt-5-codex"
responses:
  data_dir: "{data_dir}"
  retention: "1h"
  max_bytes: 2000000
auth:
  api_keys:
    - name: "team-a"
      key_env: "TEAM_A_KEY"
    - name: "team-b"
      key_env: "TEAM_B_KEY"
"""


@pytest.fixture(scope="module")
def rmock() -> Iterator[ResponsesMock]:
    m = ResponsesMock(KEYS["openai"]).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def rgw(mocks: dict[str, MockProvider], rmock: ResponsesMock) -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="ai-gateway-responses-") as tmp:
        gw = start_gateway(
            Path(tmp),
            mocks,
            config(rmock.base_url, Path(tmp) / "data"),
            extra_env={"TEAM_A_KEY": TEAM_A, "TEAM_B_KEY": TEAM_B},
        )
        gw.mocks = {**mocks, "responses": rmock}  # type: ignore[dict-item]
        yield gw
        stop_gateway(gw)


def oa(gw: Gateway, key: str = TEAM_A) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key=key, max_retries=0, timeout=20)


def upstream(gw: Gateway, model: str) -> Any:
    return gw.mocks[MODELS[model]].last()


# ---------------------------------------------------------------------------------------------------------------------
# The official SDK against every provider type
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", list(MODELS))
def test_create(rgw: Gateway, model: str) -> None:
    r = oa(rgw).responses.create(model=model, input="Hello there", instructions="Be brief.", max_output_tokens=100)
    assert r.status == "completed" and r.model == model
    assert "Hello from mock" in r.output_text and "Hello there" in r.output_text
    assert r.usage.input_tokens == 11 and r.usage.output_tokens == 7 and r.usage.total_tokens == 18
    sent = upstream(rgw, model)
    if model == "claude-test":
        assert sent.body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
        assert sent.body["max_tokens"] == 100
    elif model == "codex-test":  # pass-through: the client's bytes
        assert sent.body == {
            "model": "codex-test",
            "input": "Hello there",
            "instructions": "Be brief.",
            "max_output_tokens": 100,
        }
        assert sent.headers["authorization"] == f"Bearer {KEYS['openai']}"


@pytest.mark.parametrize("model", list(MODELS))
def test_stream(rgw: Gateway, model: str) -> None:
    with oa(rgw).responses.stream(model=model, input="Stream please") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and "Stream please" in deltas
    assert final.usage.output_tokens == 7


class Weather(pydantic.BaseModel):
    city: str
    temperature: float


@pytest.mark.parametrize("model", list(MODELS))
def test_parse_structured_output(rgw: Gateway, model: str) -> None:
    r = oa(rgw).responses.parse(model=model, input="Weather as JSON", text_format=Weather)
    assert isinstance(r.output_parsed, Weather)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_round_trip(rgw: Gateway, model: str, streamed: bool) -> None:
    client = oa(rgw)
    first_input: list[Any] = [{"role": "user", "content": "What is the weather in Paris? PARALLEL"}]
    if streamed:
        with client.responses.stream(model=model, input=first_input, tools=TOOLS) as s:
            first = s.get_final_response()
    else:
        first = client.responses.create(model=model, input=first_input, tools=TOOLS)
    calls = [o for o in first.output if o.type == "function_call"]
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Paris", "Tokyo"]
    outputs = [
        {"type": "function_call_output", "call_id": c.call_id, "output": f"sunny in {json.loads(c.arguments)['city']}"}
        for c in calls
    ]
    items = first_input + [o.model_dump(exclude_none=True) for o in first.output] + outputs
    second = client.responses.create(model=model, input=items, tools=TOOLS, store=False)
    assert "sunny in Paris" in second.output_text and "sunny in Tokyo" in second.output_text


@pytest.mark.parametrize("model", list(MODELS))
def test_previous_response_id(rgw: Gateway, model: str) -> None:
    client = oa(rgw)
    first = client.responses.create(model=model, input="Remember the word sesame", instructions="first")
    second = client.responses.create(model=model, input="Which word?", previous_response_id=first.id)
    assert second.previous_response_id == first.id and "Which word?" in second.output_text
    sent = upstream(rgw, model).body
    if model == "codex-test":  # OpenAI keeps its own conversations: the id goes through unchanged
        assert sent["previous_response_id"] == first.id and sent["input"] == "Which word?"
        return
    text = json.dumps(sent)
    assert "Remember the word sesame" in text and first.output_text in text and "Which word?" in text
    assert "first" not in json.dumps(sent.get("system", ""))  # instructions are not carried over (as on OpenAI)
    third = client.responses.create(model=model, input="And now?", previous_response_id=second.id)
    assert "Remember the word sesame" in json.dumps(upstream(rgw, model).body) and third.status == "completed"


def test_tool_loop_with_previous_response_id_and_thinking(rgw: Gateway) -> None:
    """Anthropic's signed thinking kept by the gateway and replayed on the next turn (the mock refuses otherwise)."""
    client = oa(rgw)
    first = client.responses.create(
        model="claude-test",
        input="Weather in Paris?",
        tools=TOOLS,
        reasoning={"effort": "low", "summary": "auto"},
        max_output_tokens=4000,
    )
    assert [o.type for o in first.output] == ["reasoning", "function_call"]
    assert first.output[0].encrypted_content is None  # not asked for: the gateway keeps it
    call = first.output[1]
    second = client.responses.create(
        model="claude-test",
        tools=TOOLS,
        previous_response_id=first.id,
        max_output_tokens=4000,
        reasoning={"effort": "low"},
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert "sunny" in second.output_text
    sent = rgw.mocks["anthropic"].last().body
    turn = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert turn["content"][0] == {
        "type": "thinking",
        "thinking": "Let me think about this.",
        "signature": ANTHROPIC_THINKING_SIGNATURES[0],
    }


def test_stateless_reasoning_round_trip_with_encrypted_content(rgw: Gateway) -> None:
    """store: false + include encrypted_content (Codex's way): the signature travels inside the client's items."""
    client = oa(rgw)
    first = client.responses.create(
        model="claude-test",
        input="Weather in Paris?",
        tools=TOOLS,
        store=False,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        max_output_tokens=4000,
    )
    rs, call = first.output
    assert rs.encrypted_content
    with pytest.raises(openai.BadRequestError):  # not stored: there is nothing to continue
        client.responses.create(model="claude-test", input="x", previous_response_id=first.id)
    items = [
        {"role": "user", "content": "Weather in Paris?"},
        rs.model_dump(exclude_none=True),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = client.responses.create(
        model="claude-test", input=items, tools=TOOLS, store=False, reasoning={"effort": "low"}, max_output_tokens=4000
    )
    assert "sunny" in second.output_text


# ---------------------------------------------------------------------------------------------------------------------
# Other clients to a Responses-only provider
# ---------------------------------------------------------------------------------------------------------------------
def test_chat_client_to_a_responses_provider(rgw: Gateway) -> None:
    client = oa(rgw)
    r = client.chat.completions.create(
        model="codex-alias", messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "Hi"}]
    )
    assert "Hi" in r.choices[0].message.content and r.usage.prompt_tokens == 11
    sent = rgw.mocks["responses"].last()
    assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-5-codex"
    assert sent.body["instructions"] == "sys" and sent.body["store"] is False
    chunks = list(
        client.chat.completions.create(
            model="codex-test",
            messages=[{"role": "user", "content": "Yo"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert "Yo" in text and chunks[-1].usage.completion_tokens == 7
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    first = client.chat.completions.create(
        model="codex-test", tools=tools, messages=[{"role": "user", "content": "Weather?"}]
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments)["city"] == "Paris"
    second = client.chat.completions.create(
        model="codex-test",
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert second.choices[0].message.content == "Tool results: sunny"


def test_anthropic_client_thinking_round_trip_to_a_responses_provider(rgw: Gateway) -> None:
    """OpenAI's encrypted reasoning rides in the Anthropic thinking signature and is replayed to OpenAI (the mock
    verifies the encrypted content it issued)."""
    client = anthropic.Anthropic(base_url=f"{rgw.url}/anthropic", api_key=TEAM_A, max_retries=0)
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]
    first = client.messages.create(
        model="codex-test",
        max_tokens=4000,
        tools=tools,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    thinking, call = first.content
    assert thinking.type == "thinking" and thinking.signature and call.type == "tool_use"
    sent = rgw.mocks["responses"].last().body
    assert sent["reasoning"]["effort"] == "low" and sent["include"] == ["reasoning.encrypted_content"]
    second = client.messages.create(
        model="codex-test",
        max_tokens=4000,
        tools=tools,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
        ],
    )
    assert second.content[-1].text == "Tool results: sunny"
    replayed = rgw.mocks["responses"].last().body["input"][1]
    assert replayed["type"] == "reasoning" and replayed["encrypted_content"].startswith("gAAAAAB")
    with client.messages.stream(
        model="codex-test",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": "Hi"}],
    ) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.content[0].signature


def test_gemini_client_to_a_responses_provider(rgw: Gateway) -> None:
    client = genai.Client(api_key=TEAM_A, http_options=gtypes.HttpOptions(base_url=f"{rgw.url}/gemini"))
    r = client.models.generate_content(model="codex-test", contents="Hi from Gemini")
    assert "Hi from Gemini" in r.text and r.usage_metadata.prompt_token_count == 11
    text = "".join(ch.text or "" for ch in client.models.generate_content_stream(model="codex-test", contents="Go"))
    assert "Go" in text


# ---------------------------------------------------------------------------------------------------------------------
# The gateway's conversation store
# ---------------------------------------------------------------------------------------------------------------------
def test_stored_endpoints_and_key_scoping(rgw: Gateway) -> None:
    a, b = oa(rgw), oa(rgw, TEAM_B)
    first = a.responses.create(
        model="claude-test",
        input=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
        ],
    )
    got = a.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text
    items = a.responses.input_items.list(first.id)
    assert [i.content[0].text for i in items.data] == ["two", "one"]  # newest first, as OpenAI lists them
    assert [i.content[0].text for i in a.responses.input_items.list(first.id, order="asc").data] == ["one", "two"]
    for call in (
        lambda: b.responses.retrieve(first.id),
        lambda: b.responses.input_items.list(first.id),
        lambda: b.responses.delete(first.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as info:
        b.responses.create(model="claude-test", input="x", previous_response_id=first.id)
    assert info.value.body["code"] == "previous_response_not_found"
    a.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(first.id)
    resp = httpx.post(f"{rgw.url}/openai/v1/responses/{first.id}", headers={"authorization": f"Bearer {TEAM_A}"})
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "invalid_request_error"


def test_store_false_keeps_nothing(rgw: Gateway) -> None:
    client = oa(rgw)
    r = client.responses.create(model="gemini-test", input="ephemeral", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_conversation_moves_from_a_kept_one_to_openai(rgw: Gateway) -> None:
    """A conversation the gateway kept (Claude) continued on the Responses provider: sent with its history."""
    client = oa(rgw)
    first = client.responses.create(model="claude-test", input="Remember sesame")
    client.responses.create(model="codex-test", input="Which word?", previous_response_id=first.id)
    sent = rgw.mocks["responses"].last().body
    assert "previous_response_id" not in sent
    assert "Remember sesame" in json.dumps(sent["input"]) and sent["input"][-1]["content"][0]["text"] == "Which word?"


def test_count_input_tokens(rgw: Gateway) -> None:
    """Passed through to a Responses provider, translated to Anthropic's and Gemini's counters, refused (400) where
    the provider cannot count (Chat Completions)."""
    client = oa(rgw)
    for model in ("codex-test", "claude-test", "gemini-test"):
        counted = client.responses.input_tokens.count(model=model, input="hi", instructions="sys")
        assert counted.input_tokens == COUNT_TOKENS and counted.object == "response.input_tokens"
    sent = rgw.mocks["anthropic"].last()
    assert sent.path == "/v1/messages/count_tokens" and sent.body["system"] in (
        "sys",
        [{"type": "text", "text": "sys"}],
    )
    with pytest.raises(openai.BadRequestError, match="token counting"):
        client.responses.input_tokens.count(model="gpt-test", input="hi")


# ---------------------------------------------------------------------------------------------------------------------
# Bad input and provider errors: 4xx in the Responses error shape, never a 5xx
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, 400, "No tool call"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]}, 400, "No tool output"),
        ({"input": [{"type": "mystery"}]}, 400, "mystery"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]}, 400, "output_text"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, 400, "not found"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "web_search"),
        ({"input": [{"type": "item_reference", "id": "msg_unknown"}]}, 400, "not found"),
        ({"input": "x" * 2_100_000}, 400, "store: false"),
        ({"input": "x", "temperature": "hot"}, 400, "temperature"),
    ],
)
def test_bad_input(rgw: Gateway, body: dict[str, Any], status: int, words: str) -> None:
    resp = httpx.post(
        f"{rgw.url}/openai/v1/responses",
        json={"model": "claude-test", **body},
        headers={"authorization": f"Bearer {TEAM_A}"},
        timeout=20,
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code", "request_id"} and words.lower() in err["message"].lower()


def test_provider_errors_reach_the_sdk(rgw: Gateway) -> None:
    client = oa(rgw)
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="claude-test", input="ERROR 429")
    with pytest.raises(openai.RateLimitError):  # pass-through keeps OpenAI's own envelope
        client.responses.create(model="codex-test", input="ERROR 429")
    with client.responses.stream(model="claude-test", input="STREAMERROR") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-2:] == ["error", "response.failed"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{rgw.url}/openai/v1", api_key="wrong", max_retries=0).responses.create(
            model="claude-test", input="x"
        )
