"""Every client format x every provider type through the real Envoy, driven by the official SDKs (non-streaming)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import FAMILY_MODELS, KEYS, MODELS, Gateway
from tests.e2e.sdk import CLIENT_KEY, FINISH, ask, tool_round_trip

CLIENTS = ("openai", "anthropic", "gemini")
PROVIDERS = ("openai", "anthropic", "gemini")
PAIRS = [(c, p) for c in CLIENTS for p in PROVIDERS]
AUTH_HEADER = {"openai": "authorization", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}


def received(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the provider got, in one vocabulary: system prompt, sampling, stop sequences."""
    if provider == "openai":
        msgs = body["messages"]
        system = msgs[0]["content"] if msgs and msgs[0]["role"] in ("system", "developer") else None
        stop = body.get("stop")
        return {
            "system": system,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_tokens": body.get("max_completion_tokens", body.get("max_tokens")),
            "stop": [stop] if isinstance(stop, str) else stop,
        }
    if provider == "anthropic":
        system = body.get("system")
        if isinstance(system, list):
            system = "".join(b["text"] for b in system)
        return {
            "system": system,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_tokens": body.get("max_tokens"),
            "stop": body.get("stop_sequences"),
        }
    gc = body.get("generationConfig", {})
    si = body.get("systemInstruction")
    return {
        "system": "".join(p["text"] for p in si["parts"]) if si else None,
        "temperature": gc.get("temperature"),
        "top_p": gc.get("topP"),
        "max_tokens": gc.get("maxOutputTokens"),
        "stop": gc.get("stopSequences"),
    }


def assert_clean_auth(provider: str, headers: dict[str, str]) -> None:
    """The provider's own key in its own header; the client's credential nowhere."""
    want = f"Bearer {KEYS[provider]}" if provider == "openai" else KEYS[provider]
    assert headers.get(AUTH_HEADER[provider]) == want
    for name, value in headers.items():
        assert CLIENT_KEY not in value, f"client credential leaked upstream in {name}"
    for other, name in AUTH_HEADER.items():
        if other != provider:
            assert name not in headers, f"{name} must not reach {provider}"


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_text_with_system_and_sampling(gateway: Gateway, client: str, provider: str) -> None:
    mock = gateway.mocks[provider]
    ans = ask(
        client,
        gateway.url,
        MODELS[provider],
        "hi there",
        system="You are terse.",
        temperature=0.5,
        top_p=0.9,
        max_tokens=100,
        stop=["END"],
    )
    assert ans.text == f"Hello from mock {provider}. You said: hi there"
    assert ans.finish == FINISH[client]["stop"]
    assert (ans.input_tokens, ans.output_tokens) == (11, 7)
    got = mock.last()
    assert received(provider, got.body) == {
        "system": "You are terse.",
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 100,
        "stop": ["END"],
    }
    model_seen = got.body.get("model") if provider != "gemini" else got.path.split("/models/")[1].split(":")[0]
    assert model_seen == MODELS[provider]
    assert_clean_auth(provider, got.headers)


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_tool_round_trip(gateway: Gateway, client: str, provider: str) -> None:
    first, second = tool_round_trip(client, gateway.url, MODELS[provider])
    assert first.tool_calls == [("get_weather", {"city": "Paris"})]
    assert first.finish == FINISH[client]["tool_calls"]
    assert "sunny in Paris" in second.text
    assert second.finish == FINISH[client]["stop"]
    assert_clean_auth(provider, gateway.mocks[provider].last().headers)


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_parallel_tool_results(gateway: Gateway, client: str, provider: str) -> None:
    first, second = tool_round_trip(client, gateway.url, MODELS[provider], parallel=True)
    assert first.tool_calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert "sunny in Paris" in second.text and "sunny in Tokyo" in second.text
    assert second.text.index("Paris") < second.text.index("Tokyo")


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_length_finish(gateway: Gateway, client: str, provider: str) -> None:
    ans = ask(client, gateway.url, MODELS[provider], "LENGTH please", max_tokens=5)
    assert ans.finish == FINISH[client]["length"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_alias_sends_target_model(gateway: Gateway, client: str, provider: str) -> None:
    alias = f"alias-{provider}"
    ans = ask(client, gateway.url, alias, "hello alias")
    assert "hello alias" in ans.text
    got = gateway.mocks[provider].last()
    target = {"openai": "gpt-upstream-name", "anthropic": "claude-upstream-name", "gemini": "gemini-upstream-name"}
    model_seen = got.body.get("model") if provider != "gemini" else got.path.split("/models/")[1].split(":")[0]
    assert model_seen == target[provider]


# Real model names of each family: their catalog entries shape the request, and the mocks apply the families' real
# rules (a request the real API would refuse fails here). What each family keeps of temperature 0.5 and top_p 0.9:
FAMILY_SAMPLING = {
    "gpt-4o-mini": (0.5, 0.9),
    "gpt-5-mini": (None, None),  # reasoning models take only the default
    "claude-haiku-4-5": (0.5, None),  # temperature xor top_p: temperature wins
    "claude-opus-4-8": (None, None),  # Opus 4.7 and later take no sampling parameter
    "gemini-2.5-flash": (0.5, 0.9),
    "gemini-3-flash-preview": (0.5, 0.9),
}
FAMILY_PAIRS = [(c, p, m) for c in CLIENTS for p, models in FAMILY_MODELS.items() for m in models]


@pytest.mark.parametrize(("client", "provider", "model"), FAMILY_PAIRS)
def test_family_models(gateway: Gateway, client: str, provider: str, model: str) -> None:
    mock = gateway.mocks[provider]
    sampling = {"temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "stop": ["END"]}
    if client == provider and FAMILY_SAMPLING[model] != (0.5, 0.9):
        # Same format: the client's own bytes go up unshaped (it speaks the provider's API), and get its answer.
        with pytest.raises(Exception, match="temperature") as err:
            ask(client, gateway.url, model, "hi there", system="You are terse.", **sampling)
        assert getattr(err.value, "status_code", None) == 400
        sampling = {"max_tokens": 100, "stop": ["END"]}
    ans = ask(client, gateway.url, model, "hi there", system="You are terse.", **sampling)
    assert ans.text == f"Hello from mock {provider}. You said: hi there"
    got = received(provider, mock.last().body)
    if "temperature" in sampling:
        assert (got["temperature"], got["top_p"]) == FAMILY_SAMPLING[model]
    assert (got["system"], got["max_tokens"], got["stop"]) == ("You are terse.", 100, ["END"])
    first, second = tool_round_trip(client, gateway.url, model)
    assert first.tool_calls == [("get_weather", {"city": "Paris"})]
    assert "sunny in Paris" in second.text
