"""Governance across replicas: two gateways (two launchers, two workers each) sharing one real ``redis-server``.

The official SDKs are the clients; the strict mocks answer with usage 11 input / 7 output tokens. Each test uses keys
of its own, so counters never mix. Request and token limits count per UTC minute (fixed windows): a test of them first
makes sure enough of the current minute is left (``fresh_minute``), so a window boundary cannot split its requests.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as gerrors
from google.genai import types as gtypes

from tests.conftest import MODELS, Gateway, start_gateway, stop_gateway
from tests.redis_server import RedisServer, needs_redis

pytestmark = needs_redis

ADMIN = "admin-credential-for-usage"
KEYS = {
    "rpm": "gw-rpm-key-1",  # 10 requests per minute
    "tpm": "gw-tpm-key-2",  # 40 tokens per minute (3 answers of 18)
    "budget": "gw-budget-key-3",  # $0.06 per day at $0.025 per answer: 3 answers
    "stream": "gw-stream-key-4",  # no limit but a large budget: charged, never refused
    "conc": "gw-conc-key-5",  # 50 requests per minute
    "cut": "gw-cut-key-6",  # a stream cut short: charged what was counted
}
# USD per million tokens: 11 input x 1000 + 7 output x 2000 = 25_000 micro-USD = $0.025 per mock answer
PRICE_IN, PRICE_OUT = 1000, 2000
COST = (11 * PRICE_IN + 7 * PRICE_OUT) / 1_000_000


def governance_config(on_failure: str = "fail_open", timeout: str = "200ms") -> str:
    keys = "\n".join(f"    - {{name: {name}, key_env: GOV_KEY_{name.upper()}}}" for name in KEYS)
    prices = "\n".join(f"    {m}: {{input: {PRICE_IN}, output: {PRICE_OUT}}}" for m in MODELS.values())
    return f"""
version: "1.0"
timeout: "6s"
models:
  - {{name: "{MODELS["openai"]}", provider: "openai"}}
  - {{name: "{MODELS["anthropic"]}", provider: "anthropic"}}
  - {{name: "{MODELS["gemini"]}", provider: "gemini"}}
auth:
  api_keys:
{keys}
governance:
  store: redis
  on_failure: {on_failure}
  redis: {{timeout: {timeout}, breaker_failures: 2, breaker_cooldown: 300ms}}
  admin_key_env: GOV_ADMIN
  budget_headers: true
  prices:
{prices}
  limits:
    - {{key: rpm, requests_per_minute: 10}}
    - {{key: tpm, total_tokens_per_minute: 40}}
    - {{key: budget, budget: {{usd: 0.06, period: day}}}}
    - {{key: stream, budget: {{usd: 100, period: month}}}}
    - {{key: conc, requests_per_minute: 50}}
    - {{key: cut, budget: {{usd: 100, period: month}}}}
"""


def _env(redis: RedisServer) -> dict[str, str | None]:
    env: dict[str, str | None] = {f"GOV_KEY_{n.upper()}": v for n, v in KEYS.items()}
    env.update(GOV_ADMIN=ADMIN, AI_GATEWAY_REDIS_URL=redis.url)
    return env


def fresh_minute(need: float = 20.0) -> None:
    """Wait for the next UTC minute when less than ``need`` seconds of this one are left (fixed windows)."""
    while 60 - time.time() % 60 < need:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(mocks: dict, redis: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        one = start_gateway(Path(a), mocks, governance_config(), extra_env=_env(redis))
        try:
            two = start_gateway(Path(b), mocks, governance_config(), extra_env=_env(redis))
        except Exception:
            stop_gateway(one)
            raise
        yield one, two
        stop_gateway(one)
        stop_gateway(two)


def _usage(gw: Gateway, key: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{gw.url}/usage", params={"key": key}, headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    got = r.json()["keys"]
    return got[0] if got else {"requests": 0, "cost_usd": 0.0, "models": []}


def _wait_charged(gw: Gateway, key: str, requests: int, deadline: float = 10.0) -> dict:  # type: ignore[type-arg]
    """Poll the usage endpoint until ``requests`` answers of ``key`` were charged (charges are batched)."""
    end = time.monotonic() + deadline
    while True:
        got = _usage(gw, key)
        if got["requests"] >= requests or time.monotonic() > end:
            return got
        time.sleep(0.05)


def _openai(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key=key, max_retries=0, timeout=30)


def _anthropic(gw: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gw.url}/anthropic", api_key=key, max_retries=0, timeout=30)


def _gemini(gw: Gateway, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=gtypes.HttpOptions(base_url=f"{gw.url}/gemini", timeout=30_000))


def _ask(client: str, gw: Gateway, key: str) -> None:
    """One request of ``client``'s SDK for the model of the same format (raises the SDK's error on a refusal)."""
    if client == "openai":
        _openai(gw, key).chat.completions.create(model=MODELS["openai"], messages=[{"role": "user", "content": "hi"}])
    elif client == "anthropic":
        _anthropic(gw, key).messages.create(
            model=MODELS["anthropic"], max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
    else:
        cl = _gemini(gw, key)  # kept: the SDK closes its HTTP client when the Client is collected
        cl.models.generate_content(model=MODELS["gemini"], contents="hi")


def _refused(client: str, gw: Gateway, key: str) -> tuple[int, dict[str, str], str]:
    """The SDK's error for a refused request: status, headers, message."""
    with pytest.raises((openai.RateLimitError, anthropic.RateLimitError, gerrors.ClientError)) as info:
        _ask(client, gw, key)
    err = info.value
    if isinstance(err, gerrors.ClientError):
        assert err.code == 429 and err.status == "RESOURCE_EXHAUSTED", err
        return 429, {}, err.message or ""
    assert isinstance(err, openai.RateLimitError | anthropic.RateLimitError)
    return err.status_code, dict(err.response.headers), str(err)


def test_requests_per_minute_hold_across_two_gateways(pair: tuple[Gateway, Gateway]) -> None:
    fresh_minute()
    clients = ["openai", "anthropic", "gemini"]
    for i in range(10):  # alternating gateways and formats: 10 successes in all
        _ask(clients[i % 3], pair[i % 2], KEYS["rpm"])
    for gw in pair:
        status, headers, message = _refused("openai", gw, KEYS["rpm"])
        assert status == 429 and "'rpm'" in message and "10 requests per minute" in message
        assert headers["x-ratelimit-limit-requests"] == "10"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert 1 <= int(headers["retry-after"]) <= 60
        status, headers, message = _refused("anthropic", gw, KEYS["rpm"])
        assert status == 429 and "10 requests per minute" in message
        assert headers["anthropic-ratelimit-requests-limit"] == "10"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert "retry-after" in headers
        status, _, message = _refused("gemini", gw, KEYS["rpm"])
        assert "10 requests per minute" in message
    assert _wait_charged(pair[0], "rpm", 10)["requests"] == 10  # refused requests are never charged
    refused_lines = [ln for ln in pair[0].log_text().splitlines() if '"status_code":429' in ln]
    assert refused_lines and all('"key":"rpm"' in ln and '"error_type":"rate_limit"' in ln for ln in refused_lines)


def test_token_limit_stops_a_key_after_the_reported_usage_passes_it(pair: tuple[Gateway, Gateway]) -> None:
    fresh_minute()
    admitted = 0
    for i in range(6):
        try:
            _ask("openai", pair[i % 2], KEYS["tpm"])
        except openai.RateLimitError as err:
            assert "40 tokens per minute" in str(err)
            assert err.response.headers["x-ratelimit-limit-tokens"] == "40"
            assert err.response.headers["x-ratelimit-remaining-tokens"] == "0"
            break
        admitted += 1
        _wait_charged(pair[0], "tpm", admitted)  # the next check sees this answer's tokens
    # 0, 18, 36 tokens used before each of the first three: under 40, admitted; 54 before the fourth: refused
    assert admitted == 3
    for client in ("anthropic", "gemini"):  # every format is refused now, on both gateways
        for gw in pair:
            assert _refused(client, gw, KEYS["tpm"])[0] == 429


def test_budget_stops_a_key_at_the_price_tables_cost(pair: tuple[Gateway, Gateway]) -> None:
    admitted = 0
    for i in range(6):
        try:
            _ask("anthropic", pair[i % 2], KEYS["budget"])
        except anthropic.RateLimitError as err:
            text = str(err)
            assert "'budget'" in text and "$0.06 per day" in text, text
            assert "0.075" not in text  # never the spend
            break
        admitted += 1
        _wait_charged(pair[1], "budget", admitted)
    # spent before each: 0, 0.025, 0.05 (under 0.06: admitted), then 0.075: refused
    assert admitted == 3
    got = _usage(pair[0], "budget")
    assert got["cost_usd"] == pytest.approx(3 * COST)
    with pytest.raises(openai.RateLimitError) as info:
        _ask("openai", pair[0], KEYS["budget"])
    assert info.value.code == "insufficient_quota"


def test_streamed_answer_is_charged_its_streamed_usage(pair: tuple[Gateway, Gateway]) -> None:
    # OpenAI client, Anthropic model: the usage comes from Anthropic's stream events, translated on the fly
    stream = _openai(pair[0], KEYS["stream"]).chat.completions.create(
        model=MODELS["anthropic"], messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text
    # Anthropic client, Anthropic model: passed through, read on the side
    with _anthropic(pair[1], KEYS["stream"]).messages.stream(
        model=MODELS["anthropic"], max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == 7
    got = _wait_charged(pair[0], "stream", 2)
    (model,) = got["models"]
    assert (model["model"], model["provider"]) == (MODELS["anthropic"], "anthropic")
    assert (model["requests"], model["input_tokens"], model["output_tokens"]) == (2, 22, 14)
    assert model["cost_usd"] == pytest.approx(2 * COST)
    # own budget left, on the key's own answers
    r = _openai(pair[1], KEYS["stream"]).chat.completions.with_raw_response.create(
        model=MODELS["openai"], messages=[{"role": "user", "content": "hi"}]
    )
    assert float(r.headers["x-ai-gateway-budget-remaining-usd"]) == pytest.approx(100 - 2 * COST, abs=1e-6)


def test_concurrent_requests_admit_exactly_the_limit(pair: tuple[Gateway, Gateway]) -> None:
    fresh_minute()
    body = {"model": MODELS["openai"], "messages": [{"role": "user", "content": "hi"}]}

    async def one(client: httpx.AsyncClient, gw: Gateway) -> int:
        r = await client.post(f"{gw.url}/openai/v1/chat/completions", json=body,
                              headers={"authorization": f"Bearer {KEYS['conc']}"})  # fmt: skip
        return r.status_code

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(one(client, pair[i % 2]) for i in range(64)))

    statuses = asyncio.run(burst())
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 14


def test_usage_endpoint_needs_the_admin_credential(pair: tuple[Gateway, Gateway]) -> None:
    gw = pair[0]
    assert httpx.get(f"{gw.url}/usage").status_code == 401
    assert httpx.get(f"{gw.url}/usage", headers={"authorization": f"Bearer {KEYS['rpm']}"}).status_code == 401
    r = httpx.get(f"{gw.url}/usage", params={"from": "2000-01-01", "to": "2000-01-02"},
                  headers={"authorization": f"Bearer {ADMIN}"})  # fmt: skip
    assert r.status_code == 200 and r.json()["keys"] == []
    assert httpx.post(f"{gw.url}/usage", headers={"authorization": f"Bearer {ADMIN}"}).status_code == 405


def test_spend_in_metrics_and_log_by_key_name(pair: tuple[Gateway, Gateway]) -> None:
    gw = pair[0]
    _ask("openai", gw, KEYS["stream"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = httpx.get(f"{gw.url}/metrics").text.splitlines()
        cost = [ln for ln in lines if ln.startswith("proxy_cost_usd_total{") and 'key="stream"' in ln]
        if any(f'model="{MODELS["openai"]}"' in ln for ln in cost):
            break
        time.sleep(0.1)
    line = next(ln for ln in cost if f'model="{MODELS["openai"]}"' in ln)
    assert 'provider="openai"' in line and float(line.rsplit(" ", 1)[1]) >= COST
    text = "\n".join(lines) + gw.log_text()
    assert all(secret not in text for secret in KEYS.values())
    assert '"key":"stream"' in gw.log_text() and '"cost_usd":0.025' in gw.log_text()


def test_a_stream_cut_short_is_charged_what_was_counted(pair: tuple[Gateway, Gateway]) -> None:
    """The provider cuts the stream after its first text: the input tokens its first event reported are charged."""
    gate = pair[0].mocks["anthropic"].hold_drop()  # the mock cuts once the client has text
    got = ""
    with pytest.raises(openai.APIConnectionError):
        stream = _openai(pair[0], KEYS["cut"]).chat.completions.create(
            model=MODELS["anthropic"], messages=[{"role": "user", "content": "DROPSTREAM"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                got += chunk.choices[0].delta.content
                gate.set()
    assert got and gate.is_set()
    charged = _wait_charged(pair[1], "cut", 1)  # read through the other gateway: it is in Redis
    (model,) = charged["models"]
    assert (model["requests"], model["input_tokens"]) == (1, 11)  # Anthropic's message_start: 11 input tokens
    assert model["output_tokens"] < 7 and model["cost_usd"] == pytest.approx(
        (11 * PRICE_IN + model["output_tokens"] * PRICE_OUT) / 1_000_000
    )
