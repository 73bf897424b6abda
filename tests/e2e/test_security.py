"""Gateway keys, per-key model allow-lists, rate limits per key and per model, through the real Envoy."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as gerrors
from google.genai import types as gtypes

from tests.conftest import KEYS, MODELS, Gateway, free_port, gateway_config, start_gateway, stop_gateway

TEAM_KEY = "gw-team-a-secret-1"  # may use gpt-* and claude-test, 3 requests per minute
CI_KEY = "gw-ci-secret-2"  # any model, the per-key default of 100 per minute


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def security_config() -> str:
    return (
        gateway_config(free_port())
        + f"""
  - name: "limited-model"
    provider: "openai"
auth:
  api_keys:
    - name: "team-a"
      sha256: "{_sha(TEAM_KEY)}"
      models: ["gpt-*", "claude-test"]
      requests_per_minute: 3
    - "sha256:{_sha(CI_KEY)}"
rate_limits:
  per_key: 100
  per_model:
    limited-model: 2
"""
    )


@pytest.fixture(scope="module")
def secured(mocks: dict) -> Iterator[Gateway]:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, security_config(), workers=1)
        yield gw
        stop_gateway(gw)


def _openai(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key=key, max_retries=0)


def _anthropic(gw: Gateway, key: str, **kw: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gw.url}/anthropic", api_key=key, max_retries=0, **kw)


def _gemini(gw: Gateway, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=f"{gw.url}/gemini"))


def _ask(client: str, gw: Gateway, key: str, model: str) -> str:
    if client == "openai":
        r = _openai(gw, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        return r.choices[0].message.content or ""
    if client == "anthropic":
        r2 = _anthropic(gw, key).messages.create(
            model=model, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
        return r2.content[0].text  # type: ignore[union-attr]
    cl = _gemini(gw, key)
    return cl.models.generate_content(model=model, contents="hi").text or ""


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_wrong_key_is_401_and_each_sdk_raises(secured: Gateway, client: str) -> None:
    before = len(secured.mocks["gemini"].requests)
    if client == "openai":
        with pytest.raises(openai.AuthenticationError):
            _ask(client, secured, "wrong-key", MODELS["gemini"])
    elif client == "anthropic":
        with pytest.raises(anthropic.AuthenticationError):
            _ask(client, secured, "wrong-key", MODELS["gemini"])
    else:
        with pytest.raises(gerrors.ClientError) as info:
            _ask(client, secured, "wrong-key", MODELS["gemini"])
        assert info.value.code == 401
    assert len(secured.mocks["gemini"].requests) == before


def test_no_key_gets_401_with_native_bodies(secured: Gateway) -> None:
    body = {"model": MODELS["gemini"], "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(secured.url + "/openai/v1/chat/completions", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(secured.url + "/anthropic/v1/messages", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(secured.url + f"/gemini/v1beta/models/{MODELS['gemini']}:generateContent", json={"contents": []})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = httpx.get(secured.url + "/openai/v1/models")
    assert r.status_code == 401
    assert httpx.get(secured.url + "/health").status_code == 200  # probes need no key


@pytest.mark.parametrize("client", ["openai", "anthropic", "gemini"])
def test_valid_key_in_each_format_and_never_forwarded(secured: Gateway, client: str) -> None:
    assert _ask(client, secured, CI_KEY, MODELS["gemini"]).endswith("hi")
    got = secured.mocks["gemini"].last()
    assert got.headers["x-goog-api-key"] == KEYS["gemini"]
    assert CI_KEY not in str(got.headers) and CI_KEY not in got.path
    assert not any(h.startswith("x-ai-gateway") for h in got.headers)


def test_alternative_headers(secured: Gateway) -> None:
    """Anthropic takes x-api-key as well as Authorization: Bearer; Gemini takes ?key= as well as x-goog-api-key."""
    body = {"model": MODELS["openai"], "max_tokens": 20, "messages": [{"role": "user", "content": "x-api-key"}]}
    r = httpx.post(secured.url + "/anthropic/v1/messages", json=body,
                   headers={"x-api-key": CI_KEY, "anthropic-version": "2023-06-01"})  # fmt: skip
    assert r.status_code == 200 and r.json()["content"][0]["text"].endswith("x-api-key")
    r1 = anthropic.Anthropic(base_url=f"{secured.url}/anthropic", auth_token=CI_KEY, max_retries=0).messages.create(
        model=MODELS["openai"], max_tokens=20, messages=[{"role": "user", "content": "bearer"}]
    )
    assert r1.content[0].text.endswith("bearer")  # type: ignore[union-attr]
    r2 = httpx.post(
        secured.url + f"/gemini/v1beta/models/{MODELS['openai']}:generateContent?key={CI_KEY}",
        json={"contents": [{"role": "user", "parts": [{"text": "query key"}]}]},
    )
    assert r2.status_code == 200
    assert CI_KEY not in secured.mocks["openai"].last().path


def test_model_allow_list_is_403(secured: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError, match="may not use model"):
        _ask("openai", secured, TEAM_KEY, MODELS["gemini"])
    with pytest.raises(anthropic.PermissionDeniedError):
        _ask("anthropic", secured, TEAM_KEY, MODELS["gemini"])


def test_rate_limits_per_key_and_per_model(secured: Gateway) -> None:
    # team-a: 3 per minute (the 403 above does not count: refused before Envoy's limiter).
    statuses = []
    for _ in range(5):
        r = httpx.post(secured.url + "/openai/v1/chat/completions", headers={"authorization": f"Bearer {TEAM_KEY}"},
                       json={"model": MODELS["openai"], "messages": [{"role": "user", "content": "rl"}]})  # fmt: skip
        statuses.append(r.status_code)
    assert statuses.count(200) <= 3 and statuses[-1] == 429
    with pytest.raises(openai.RateLimitError):
        _ask("openai", secured, TEAM_KEY, MODELS["openai"])
    with pytest.raises(anthropic.RateLimitError):
        _ask("anthropic", secured, TEAM_KEY, MODELS["anthropic"])
    with pytest.raises(gerrors.ClientError) as info:
        _ask("gemini", secured, TEAM_KEY, MODELS["openai"])
    assert info.value.code == 429
    # Another key is not affected by team-a's limit, but a model's own limit applies to everyone.
    assert _ask("openai", secured, CI_KEY, MODELS["openai"]).endswith("hi")
    codes = [
        httpx.post(secured.url + "/openai/v1/chat/completions", headers={"authorization": f"Bearer {CI_KEY}"},
                   json={"model": "limited-model", "messages": [{"role": "user", "content": "m"}]}).status_code
        for _ in range(3)
    ]  # fmt: skip
    assert codes == [200, 200, 429]
