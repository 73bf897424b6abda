"""Governance when Redis goes away: one gateway failing open, one failing closed, both on one real ``redis-server``
that is frozen (SIGSTOP: connections hang) and killed (SIGKILL: connections refused) mid-run, then started again.

Requests must keep flowing (fail_open) or get a clear 503 (fail_closed) without waiting past the Redis timeout, and the
circuit breaker must let traffic use Redis again once it is back.

Every request asks Redis here (``max_lease: 1``, and no token or money limit): with leases a worker would first use
the requests it had reserved, which ``test_governance.py::test_redis_leased_requests_outlast_an_outage`` covers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS, Gateway, start_gateway, stop_gateway
from tests.redis_server import RedisServer, needs_redis

pytestmark = needs_redis

KEY = "gw-faults-key"
TIMEOUT_MS = 100
# What a request may take beyond the Redis timeout here (Envoy, the service and the mock on 2 busy cores)
SLACK_S = 0.6


def _config(on_failure: str) -> str:
    return f"""
version: "1.0"
timeout: "6s"
models:
  - {{name: "{MODELS["openai"]}", provider: "openai"}}
auth:
  api_keys:
    - {{name: team, key_env: GOV_FAULTS_KEY}}
governance:
  store: redis
  on_failure: {on_failure}
  redis: {{timeout: {TIMEOUT_MS}ms, breaker_failures: 2, breaker_cooldown: 300ms, max_lease: 1}}
  limits:
    - {{key: team, requests_per_minute: 100000}}
"""


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateways(mocks: dict, redis: RedisServer) -> Iterator[dict[str, Gateway]]:  # type: ignore[type-arg]
    env: dict[str, str | None] = {"GOV_FAULTS_KEY": KEY, "AI_GATEWAY_REDIS_URL": redis.url}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        opened = start_gateway(Path(a), mocks, _config("fail_open"), workers=1, extra_env=env)
        try:
            closed = start_gateway(Path(b), mocks, _config("fail_closed"), workers=1, extra_env=env)
        except Exception:
            stop_gateway(opened)
            raise
        yield {"open": opened, "closed": closed}
        stop_gateway(opened)
        stop_gateway(closed)


def _send(gw: Gateway) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.post(
        f"{gw.url}/openai/v1/chat/completions",
        json={"model": MODELS["openai"], "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    return r, time.monotonic() - t0


def _metric(gw: Gateway, prefix: str) -> float:
    total = 0.0
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _redis_counted(redis: RedisServer) -> int:
    """Requests counted in Redis by now (the key's request counter of the current minute)."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return sum(int(client.get(k) or 0) for k in client.scan_iter(match="ai-gateway:c|team|*"))
    finally:
        client.close()


def _until(what: str, cond, deadline: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.05)


def _outage(gateways: dict[str, Gateway]) -> None:
    """While Redis cannot answer: fail_open admits, fail_closed refuses with a clear 503; neither waits."""
    for _ in range(6):
        r, took = _send(gateways["open"])
        assert r.status_code == 200, r.text
        assert took < TIMEOUT_MS / 1000 + SLACK_S, took
        r, took = _send(gateways["closed"])
        assert r.status_code == 503, r.text
        assert "limits store is unreachable" in r.json()["error"]["message"]
        assert r.headers["retry-after"] == "1"
        assert took < TIMEOUT_MS / 1000 + SLACK_S, took


def _recovered(gateways: dict[str, Gateway], redis: RedisServer) -> None:
    _until("fail_closed admits again", lambda: _send(gateways["closed"])[0].status_code == 200)
    before = _redis_counted(redis)

    def counted_again() -> bool:  # requests go on (admitted) until the breaker lets one try Redis again
        assert _send(gateways["open"])[0].status_code == 200
        return _redis_counted(redis) > before

    _until("fail_open counts in Redis again", counted_again)
    for gw in gateways.values():
        _until("breaker closed", lambda gw=gw: _metric(gw, "proxy_governance_breaker_open") == 0)


def test_redis_frozen_then_back(gateways: dict[str, Gateway], redis: RedisServer) -> None:
    for gw in gateways.values():
        assert _send(gw)[0].status_code == 200
    counted = _redis_counted(redis)
    assert counted >= 2
    redis.freeze()
    try:
        _outage(gateways)
        for gw in gateways.values():
            assert _metric(gw, "proxy_governance_store_failures_total") >= 6
            assert _metric(gw, "proxy_governance_breaker_open") == 1
        assert "governance store (redis) did not answer a check: timeout" in gateways["open"].log_text()
    finally:
        redis.thaw()
    _recovered(gateways, redis)


def test_redis_killed_then_restarted(gateways: dict[str, Gateway], redis: RedisServer) -> None:
    redis.kill()
    try:
        _outage(gateways)
    finally:
        redis.start()
    _recovered(gateways, redis)
