"""Governance, without Envoy: windows, prices, plans, answers, config, the in-process store, the circuit breaker, and
the Redis store against a real ``redis-server`` (two stores standing for two replicas)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from pathlib import Path

import pytest

from extproc.core import governance as g
from extproc.core.config import ConfigError, build_config
from extproc.translation.canonical import Usage
from extproc.transport.governor import Breaker, MemoryStore, RedisStore
from tests.redis_server import RedisServer, needs_redis

# 2026-12-05 13:45:30 UTC, a Saturday
NOW = dt.datetime(2026, 12, 5, 13, 45, 30, tzinfo=dt.UTC).timestamp()


def _epoch(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[arg-type, misc]


def settings(limits: list[dict], prices: dict | None = None, **more: object) -> g.Settings:  # type: ignore[type-arg]
    raw = {"limits": limits, "prices": prices or {"m": {"input": 1, "output": 2}}, **more}
    return g.parse(raw, {"URL": "redis://x", "ADMIN": "adm"}, {"a", "b"}, lambda where, msg: ConfigError(where + msg))


# ------------------------------------------------------------------------------------------------------------ windows
def test_windows_are_fixed_utc_minute_day_iso_week_and_month() -> None:
    assert g.window("minute", NOW) == (f"m{int(NOW) // 60}", _epoch(2026, 12, 5, 13, 46))
    assert g.window("day", NOW) == ("d20261205", _epoch(2026, 12, 6))
    assert g.window("week", NOW) == ("w20261130", _epoch(2026, 12, 7))  # Monday 30 November to Monday 7 December
    assert g.window("month", NOW) == ("M202612", _epoch(2027, 1, 1))  # across the year's end
    last = _epoch(2026, 12, 31, 23, 59, 59)
    assert g.window("day", last)[1] == g.window("month", last)[1] == _epoch(2027, 1, 1)


# ------------------------------------------------------------------------------------------------------------ prices
def test_cached_input_and_reasoning_are_priced_separately() -> None:
    price = g.Price(input=3.0, output=15.0, cached_input=0.3, reasoning=20.0)
    u = Usage(input_tokens=1000, output_tokens=500, cached_tokens=400, reasoning_tokens=100)
    # 600 x 3 + 400 x 0.3 + 400 x 15 + 100 x 20 = 1800 + 120 + 6000 + 2000 micro-USD
    assert price.micro_usd(u) == 9920
    assert g.Price(1, 2, 1, 2).micro_usd(Usage(input_tokens=1)) == 1  # rounded up, never free by rounding


def test_price_defaults_and_globs() -> None:
    s = settings([], prices={"claude-*": {"input": 3, "output": 15}, "m": {"input": 1, "output": 2, "reasoning": 9}})
    p = s.price("claude-sonnet-4-5")
    assert p is not None and (p.cached_input, p.reasoning) == (3.0, 15.0)
    assert s.price("gpt-x") is None
    assert s.price("m") == g.Price(1.0, 2.0, 1.0, 9.0)


# ------------------------------------------------------------------------------------------------------------ plans
def test_plan_selectors_each_key_each_model_and_shared() -> None:
    s = settings(
        [
            {"key": "*", "requests_per_minute": 5},  # each key on its own
            {"key": "a", "model": "*", "total_tokens_per_day": 100},  # key a, each model on its own
            {"model": "m", "requests_per_minute": 50},  # everyone together on model m
            {"key": "b", "requests_per_minute": 1},  # only key b
        ]
    )
    pa = g.plan(s, "a", "m", NOW)
    assert pa is not None
    names = [(c.name.split("|")[1:4], c.limit, c.own) for c in pa.counters]
    assert names == [
        (["a", "*all", "0"], 5, True),
        (["*all", "m", "0"], 50, False),
        (["a", "m", "3"], 100, True),
    ]
    pa2 = g.plan(s, "a", "other", NOW)
    assert pa2 is not None and [c.name.split("|")[2] for c in pa2.counters] == ["*all", "other"]
    pb = g.plan(s, "b", "x", NOW)
    assert pb is not None and [c.limit for c in pb.counters] == [1]  # b's own rule and "*" name one counter: lower
    assert g.plan(settings([{"key": "b", "requests_per_minute": 1}]), "a", "m", NOW) is None


def test_charges_are_the_answers_tokens_and_cost() -> None:
    s = settings([{"key": "a", "input_tokens_per_minute": 10, "output_tokens_per_day": 10, "total_tokens_per_day": 9,
                   "requests_per_minute": 3, "budget": {"usd": 1, "period": "week"}}])  # fmt: skip
    p = g.plan(s, "a", "m", NOW)
    assert p is not None
    got = {c.kind: n for (name, n, _), c in zip(g.charges(p, Usage(11, 7), 25), p.counters[1:], strict=True)}
    assert got == {g.INPUT: 11, g.OUTPUT: 7, g.TOTAL: 18, g.COST: 25}
    assert g.charges(p, None, 0) == []


# ------------------------------------------------------------------------------------------------------------ answers
def _checked(limits: list[dict], values: list[int], refused: int, key: str = "a") -> g.Plan:  # type: ignore[type-arg]
    p = g.plan(settings(limits), key, "m", NOW)
    assert p is not None
    p.values, p.refused = values, refused
    return p


def test_refusal_names_the_keys_limit_and_its_formats_headers() -> None:
    p = _checked([{"key": "a", "requests_per_minute": 10, "total_tokens_per_minute": 40}], [10, 54], 0)
    err, headers = g.refusal(p, "openai", NOW)
    assert (err.status, err.type, err.retry_after) == (429, "rate_limit", "30")
    assert "gateway key 'a'" in err.message and "10 requests per minute" in err.message
    assert dict(headers) == {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s",
        "x-ratelimit-limit-tokens": "40", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "30s",
    }  # fmt: skip
    _, headers = g.refusal(p, "anthropic", NOW)
    assert dict(headers)["anthropic-ratelimit-requests-reset"] == "2026-12-05T13:46:00Z"
    assert dict(headers)["anthropic-ratelimit-tokens-remaining"] == "0"
    assert g.refusal(p, "gemini", NOW)[1] == []


def test_budget_refusal_never_shows_spend() -> None:
    p = _checked([{"model": "m", "budget": {"usd": 5, "period": "month"}}], [7_123_456], 0)
    err, _ = g.refusal(p, "openai", NOW)
    assert err.code == "insufficient_quota" and err.status == 429
    assert "the gateway's shared limit" in err.message and "$5.00 per month" in err.message
    assert "2027-01-01T00:00:00Z" in err.message
    assert "7.12" not in err.message and "'a'" not in err.message
    assert g.budget_headers(p) == []  # a shared budget's room would tell a key what others spent


def test_budget_headers_show_the_keys_own_tightest_budget() -> None:
    p = _checked([{"key": "a", "budget": {"usd": 5, "period": "day"}},
                  {"key": "*", "budget": {"usd": 2, "period": "month"}}], [1_000_000, 1_500_000], -1)  # fmt: skip
    assert dict(g.budget_headers(p)) == {g.BUDGET_KEY: "0.500000", g.BUDGET_RESET_KEY: "2027-01-01T00:00:00Z"}


def test_envoy_adds_the_budget_headers_only_when_a_key_has_a_budget_of_its_own(tmp_path: Path) -> None:
    """The service hands the values over as dynamic metadata; Envoy's virtual host turns them into the headers
    (the e2e test reads them on a real answer). No own budget: no formatter on any answer."""
    from extproc.core.address import Address
    from extproc.core.contract import BUDGET_HEADER, BUDGET_RESET_HEADER, METADATA_NAMESPACE
    from extproc.ops.credentials import prepare
    from extproc.ops.envoy_config import render

    def vhost(limits: list[dict], headers: bool = True) -> dict:  # type: ignore[type-arg]
        raw = {"version": "1", "models": [{"name": "m", "provider": "openai"}],
               "auth": {"api_keys": [{"name": "a", "key_env": "KA"}]},
               "governance": {"prices": {"m": {"input": 1, "output": 2}}, "limits": limits,
                              "budget_headers": headers}}  # fmt: skip
        env = {"KA": "ka", "OPENAI_API_KEY": "sk"}
        cfg = build_config(raw, "t.yaml", env)
        files, _ = prepare(tmp_path, cfg, env)
        b = render(cfg, listen=Address(host="127.0.0.1", port=18080), admin=Address(host="127.0.0.1", port=18081),
                   extproc=[Address(path=str(tmp_path / "x.sock"))], credentials=files)  # fmt: skip
        hcm = b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return hcm["route_config"]["virtual_hosts"][0]  # type: ignore[no-any-return]

    own = vhost([{"key": "a", "budget": {"usd": 5, "period": "day"}}])
    added = {h["header"]["key"]: h["header"]["value"] for h in own["response_headers_to_add"]}
    assert added == {BUDGET_HEADER: f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{g.BUDGET_KEY})%",
                     BUDGET_RESET_HEADER: f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{g.BUDGET_RESET_KEY})%"}  # fmt: skip
    assert "response_headers_to_add" not in vhost([{"budget": {"usd": 5, "period": "day"}}])  # shared: never shown
    assert "response_headers_to_add" not in vhost([{"key": "a", "requests_per_minute": 5}])
    assert "response_headers_to_add" not in vhost([{"key": "a", "budget": {"usd": 5, "period": "day"}}], False)
    assert not g.parse({}, {}, set(), None).budget_headers  # asked for, never by default


# ------------------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ({"limits": [{"key": "a"}]}, "names no limit"),
        ({"limits": [{"key": "zz", "requests_per_minute": 1}]}, "no gateway key named 'zz'"),
        ({"limits": [{"requests_per_minute": 0}]}, "positive integer"),
        ({"limits": [{"budget": {"usd": 1}}]}, "a budget needs prices"),
        ({"limits": [{"model": "x", "budget": {"usd": 1}}], "prices": {"m": {"input": 1, "output": 1}}}, "no price"),
        ({"limits": [{"budget": {"usd": 1, "period": "year"}}], "prices": {}}, "day, week or month"),
        ({"prices": {"m": {"input": 1}}}, "input, output"),
        ({"store": "redis"}, "AI_GATEWAY_REDIS_URL is not set"),
        ({"on_failure": "maybe"}, "fail_open"),
        ({"redis": {"timeout": "0s"}}, "greater than zero"),
        ({"redis": {"max_lease": 0}}, "max_lease: expected a positive integer"),
        ({"redis": {"view_ttl": "-1s"}}, "view_ttl"),
        ({"redis": {"view_ttl": True}}, "view_ttl"),
        ({"budget_headers": "yes"}, "budget_headers: expected true or false"),
        ({"admin_key_env": "NOPE"}, "NOPE is not set"),
        ({"limit": []}, "unknown field 'limit'"),
    ],
)
def test_config_faults_are_named(raw: dict, fault: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=fault):
        g.parse(raw, {}, {"a"}, lambda where, msg: ConfigError(f"{where}: {msg}"))


def test_config_section_in_the_gateway_config() -> None:
    cfg = build_config(
        {"version": "1", "models": [{"name": "m", "provider": "openai"}],
         "governance": {"store": "redis", "redis": {"url_env": "R", "timeout": "5ms", "breaker_cooldown": "1s",
                                                     "max_lease": 1, "view_ttl": 0},
                        "admin_key_env": "ADM", "on_failure": "fail_closed", "prices": {"m": {"input": 1, "output": 2}},
                        "limits": [{"key": "*", "requests_per_minute": 3}]}},
        "f.yaml", {"R": "redis://h:6379", "ADM": "adm"},
    )  # fmt: skip
    s = cfg.governance
    assert (s.store, s.on_failure, s.redis.timeout, s.redis.breaker_cooldown) == ("redis", "fail_closed", 0.005, 1.0)
    assert (s.redis.max_lease, s.redis.view_ttl) == (1, 0.0)  # every check asks Redis
    assert (g.RedisSettings().max_lease, g.RedisSettings().view_ttl) == (100, 1.0)
    assert s.admin_digest == hashlib.sha256(b"adm").digest() and s.is_admin("adm") and not s.is_admin("ad")
    assert not build_config({"version": "1"}, "f.yaml", {}).governance.enabled


def test_usage_endpoint_request() -> None:
    s = settings([], admin_key_env="ADMIN")
    with pytest.raises(g.GatewayError) as info:
        g.usage_request(s, {"authorization": "Bearer nope"}, "", NOW)
    assert info.value.status == 401
    got = g.usage_request(s, {"authorization": "Bearer adm"}, "key=a&from=2026-12-01&to=2026-12-03", NOW)
    assert got == g.ServeUsage("a", ("2026-12-01", "2026-12-02", "2026-12-03"))
    assert g.usage_request(s, {"authorization": "bearer adm"}, "", NOW).days == ("2026-12-05",)
    with pytest.raises(g.GatewayError, match="before"):
        g.usage_request(s, {"authorization": "Bearer adm"}, "from=2026-12-03&to=2026-12-01", NOW)
    with pytest.raises(g.GatewayError) as info:
        g.usage_request(settings([]), {"authorization": "Bearer adm"}, "", NOW)
    assert info.value.status == 404


# ------------------------------------------------------------------------------------------------------------ stores
def test_memory_store_admits_exactly_the_limit_and_tokens_until_over() -> None:
    clock = [NOW]
    store = MemoryStore(clock=lambda: clock[0])

    def check(s: g.Settings) -> int:
        p = g.plan(s, "a", "m", clock[0])
        assert p is not None and store.check(p)
        if p.refused < 0:
            store.charge(g.charges(p, Usage(11, 7), 0), "a", g.day_id(clock[0]), [], 400)
        return p.refused

    requests = settings([{"key": "a", "requests_per_minute": 3}])
    assert [check(requests) for _ in range(4)] == [-1, -1, -1, 0]  # 3 of 3, then refused by counter 0
    clock[0] += 60  # the next minute: a fresh window
    assert check(requests) == -1
    tokens = settings([{"key": "b", "requests_per_minute": 10}, {"key": "a", "total_tokens_per_minute": 40}])
    # 0, 18, 36 tokens before each (under 40: admitted), then 54: refused by the token counter (index 0: no
    # request counter applies to key a in this config)
    assert [check(tokens) for _ in range(4)] == [-1, -1, -1, 0]


def test_memory_store_usage_report() -> None:
    store = MemoryStore(clock=lambda: NOW)
    store.charge([], "a", "2026-12-05", g.usage_fields("m", "openai", Usage(11, 7, cached_tokens=2), 25_000), 400)
    store.charge([], "a", "2026-12-05", g.usage_fields("m", "openai", Usage(11, 7), 25_000), 400)
    store.charge([], "b", "2026-12-04", g.usage_fields("m", "openai", Usage(1, 1), 1), 400)
    report = g.usage_report("a", store.usage(["2026-12-04", "2026-12-05"]))
    (a,) = report["keys"]
    assert (a["key"], a["requests"], a["cost_usd"]) == ("a", 2, 0.05)
    assert a["models"] == [{"model": "m", "provider": "openai", "requests": 2, "input_tokens": 22, "output_tokens": 14,
                            "cached_tokens": 2, "reasoning_tokens": 0, "cost_usd": 0.05}]  # fmt: skip
    assert [k["key"] for k in g.usage_report(None, store.usage(["2026-12-04", "2026-12-05"]))["keys"]] == ["a", "b"]


def test_breaker_opens_lets_one_probe_through_and_closes() -> None:
    now = [0.0]
    changes: list[bool] = []
    b = Breaker(failures=2, cooldown=1.0, clock=lambda: now[0])
    b.on_change = changes.append
    assert b.allow()
    b.failure()
    assert b.allow() and not b.is_open
    b.failure()
    assert b.is_open and not b.allow() and changes == [True]
    now[0] = 1.5
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()  # the probe failed: open again for a cooldown
    assert not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.success()
    assert not b.is_open and b.allow() and changes == [True, False]


# ------------------------------------------------------------------------------------------------------------ redis
@pytest.fixture(scope="module")
def redis() -> object:
    server = RedisServer().start()
    yield server
    server.stop()


def _failures() -> tuple[list[tuple[str, str]], object]:
    seen: list[tuple[str, str]] = []
    return seen, lambda op, reason: seen.append((op, reason))


@needs_redis
def test_redis_two_replicas_64_concurrent_admit_exactly_50(redis: RedisServer) -> None:
    s = settings([{"key": "a", "requests_per_minute": 50}])

    async def run() -> list[int]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:")
        stores = [RedisStore(redis.url, rs, on_failure) for _ in range(2)]  # type: ignore[arg-type]
        now = time.time()
        plans = [g.plan(s, "a", "m", now, rs.key_prefix) for _ in range(64)]

        async def one(i: int) -> int:
            p = plans[i]
            assert p is not None and await stores[i % 2].check(p)
            return p.refused

        try:
            return list(await asyncio.gather(*(one(i) for i in range(64))))
        finally:
            for st in stores:
                await st.close()
            assert seen == []

    refused = asyncio.run(run())
    assert refused.count(-1) == 50 and refused.count(0) == 14


@needs_redis
def test_redis_charges_are_batched_and_counted(redis: RedisServer) -> None:
    s = settings([{"key": "a", "total_tokens_per_minute": 40}])

    async def run() -> list[int]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:")
        store = RedisStore(redis.url, rs, on_failure)  # type: ignore[arg-type]
        out = []
        try:
            for _ in range(4):
                p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
                assert p is not None and await store.check(p)
                out.append(p.refused)
                if p.refused < 0:
                    store.charge(g.charges(p, Usage(11, 7), 0), "a", "2026-12-05",
                                 g.usage_fields("m", "openai", Usage(11, 7), 3), 400)  # fmt: skip
                    await store.flush()
            days = await store.usage(["2026-12-05"], "a")
            assert days["2026-12-05"]["a"]["m|openai|input_tokens"] == 33
        finally:
            await store.close()
        assert seen == []
        return out

    assert asyncio.run(run()) == [-1, -1, -1, 0]


@needs_redis
def test_redis_frozen_check_returns_within_the_timeout(redis: RedisServer) -> None:
    s = settings([{"key": "a", "requests_per_minute": 5}])

    async def run() -> tuple[bool, float, list[tuple[str, str]]]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=0.05, key_prefix="frozen:")
        store = RedisStore(redis.url, rs, on_failure)  # type: ignore[arg-type]
        p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
        assert p is not None and await store.check(p)  # connected, then
        redis.freeze()
        try:
            t0 = time.monotonic()
            answered = await store.check(p)
            took = time.monotonic() - t0
        finally:
            redis.thaw()
        await store.client.close()
        return answered, took, seen

    answered, took, seen = asyncio.run(run())
    assert not answered and took < 0.05 + 0.1 and seen == [("check", "timeout")]


def _evalsha_calls(redis: RedisServer) -> int:
    """EVALSHA calls Redis has run so far (``INFO commandstats``, read with redis-py: not the product's client)."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def _redis_value(redis: RedisServer, name: str) -> int:
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return int(client.get(name) or 0)
    finally:
        client.close()


@needs_redis
def test_redis_leases_admit_from_one_call_in_many_and_never_past_the_limit(redis: RedisServer) -> None:
    """Two workers, 1000 requests per minute: each reserves requests in leases (1/64 of what is left, at most
    ``max_lease``, one at a time near the limit) and admits from them; together exactly 1000 of 1100, with far
    fewer Redis calls than requests."""
    s = settings([{"key": "a", "requests_per_minute": 1000}])

    async def run() -> tuple[list[int], int]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:", max_lease=100)
        stores = [RedisStore(redis.url, rs, on_failure) for _ in range(2)]  # type: ignore[arg-type]
        out = []
        try:
            for i in range(1100):
                p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
                assert p is not None and await stores[i % 2].check(p)
                out.append(p.refused)
        finally:
            for st in stores:
                await st.close()
        assert seen == []
        name = g.plan(s, "a", "m", time.time(), rs.key_prefix).counters[0].name  # type: ignore[union-attr]
        return out, _redis_value(redis, name)

    if 60 - time.time() % 60 < 10:  # one window for all of it
        time.sleep(60 - time.time() % 60 + 0.1)
    before = _evalsha_calls(redis)
    refused, counted = asyncio.run(run())
    calls = _evalsha_calls(redis) - before
    assert refused.count(-1) == 1000 and refused[-100:] == [0] * 100
    assert counted == 1000  # every leased request was used: none left to give back
    # far fewer than one call per request (leases of up to 15, shrinking to 1 as the limit nears; 100 refusals ask)
    assert calls < 450, calls


@needs_redis
def test_redis_unused_leased_requests_go_back(redis: RedisServer) -> None:
    s = settings([{"key": "a", "requests_per_minute": 100000}])

    async def run() -> tuple[int, int]:
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:", max_lease=50)
        store = RedisStore(redis.url, rs, lambda op, reason: None)
        name = ""
        for _ in range(5):
            p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
            assert p is not None and await store.check(p) and p.refused == -1
            name = p.counters[0].name
        held = _redis_value(redis, name)
        await store.close()  # (or a second without use: the sweep)
        return held, _redis_value(redis, name)

    held, after = asyncio.run(run())
    assert held == 1 + 50  # the first asked for one (nothing seen yet), the second for a lease of 50
    assert after == 5  # the 46 not used went back


@needs_redis
def test_redis_leased_requests_outlast_an_outage(redis: RedisServer) -> None:
    """While Redis is frozen a worker admits the requests it had reserved (counted in Redis: no limit is passed),
    then a check that must ask fails within the timeout (fail_open / fail_closed decide)."""
    s = settings([{"key": "a", "requests_per_minute": 100000}])

    async def run() -> tuple[int, bool, float]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=0.05, key_prefix=f"t{time.monotonic_ns()}:", max_lease=20)
        store = RedisStore(redis.url, rs, on_failure)  # type: ignore[arg-type]
        for _ in range(2):  # one, then a lease of 20
            p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
            assert p is not None and await store.check(p)
        redis.freeze()
        try:
            local = 0
            while True:
                p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
                assert p is not None
                if not store.local(p):
                    break
                local += 1
            t0 = time.monotonic()
            answered = await store.ask(p)
            took = time.monotonic() - t0
        finally:
            redis.thaw()
        store.client.reset()
        assert seen == [("check", "timeout")]
        return local, answered, took

    local, answered, took = asyncio.run(run())
    assert local == 19 and not answered and took < 0.05 + 0.1


@needs_redis
def test_redis_views_follow_what_other_workers_charge(redis: RedisServer) -> None:
    """A token counter: a worker admits alone on its view of it; Redis's client tracking drops that view as soon as
    another worker's charge changes the counter, so the next check asks Redis and sees it over."""
    s = settings([{"key": "a", "total_tokens_per_minute": 100}])

    async def run() -> None:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:")
        a, b = (RedisStore(redis.url, rs, on_failure) for _ in range(2))  # type: ignore[arg-type]
        try:

            def plan() -> g.Plan:
                p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
                assert p is not None
                return p

            p = plan()
            assert await a.check(p) and p.refused == -1
            a.charge(g.charges(p, Usage(40, 20), 0), "a", "2026-12-05", [], 400)
            await a.flush()  # 60 in Redis
            p = plan()
            assert not b.local(p)  # nothing read yet: asks
            assert await b.ask(p) and p.refused == -1 and p.values == [60]
            assert b.client.tracking
            before = _evalsha_calls(redis)
            for _ in range(20):  # decided alone on the view (60 of 100)
                p = plan()
                assert b.local(p) and p.refused == -1 and p.values == [60]
            assert _evalsha_calls(redis) == before
            a.charge(g.charges(p, Usage(30, 20), 0), "a", "2026-12-05", [], 400)
            await a.flush()  # 110 in Redis: b is told
            deadline = time.monotonic() + 5
            while p.counters[0].name in b.views:
                assert time.monotonic() < deadline, "no invalidation from Redis"
                await asyncio.sleep(0.01)
            p = plan()
            assert not b.local(p)
            assert await b.ask(p) and p.refused == 0 and p.values == [110]
            p = plan()
            assert b.local(p) and p.refused == 0  # over, as far as it knows: refused without asking
        finally:
            await a.close()
            await b.close()
        assert seen == []

    asyncio.run(run())


# ------------------------------------------------------------------------------------------------------------ resp
def test_resp_replies_parsed_from_redis_bytes() -> None:
    from extproc.transport.resp import RespError, encode, parse

    wire = b"*4\r\n:-1\r\n:12\r\n$3\r\nabc\r\n$-1\r\n+OK\r\n-NOSCRIPT No matching script\r\n*0\r\n"
    value, i = parse(wire, 0)
    assert value == [-1, 12, b"abc", None]
    value, i = parse(wire, i)
    assert value == "OK"
    value, i = parse(wire, i)
    assert isinstance(value, RespError) and str(value).startswith("NOSCRIPT")
    assert parse(wire, i) == ([], len(wire))
    assert parse(b"*2\r\n:1\r\n", 0)[1] == 0  # incomplete: nothing consumed
    assert parse(b"$5\r\nab", 0)[1] == 0
    assert encode(("EVALSHA", "ab", 1, "k")) == b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\nk\r\n"
    # RESP3 (the examples of Redis's protocol spec): a push, a map (flat), null, booleans, a double, a verbatim string
    from extproc.transport.resp import Push

    wire = (b">2\r\n$10\r\ninvalidate\r\n*1\r\n$3\r\nkey\r\n%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n_\r\n"
            b"#t\r\n#f\r\n,1.23\r\n=15\r\ntxt:Some string\r\n~1\r\n:7\r\n")  # fmt: skip
    value, i = parse(wire, 0)
    assert type(value) is Push and value == [b"invalidate", [b"key"]]
    values = []
    while i < len(wire):
        value, i = parse(wire, i)
        values.append(value)
    assert values == [["first", 1, "second", 2], None, True, False, 1.23, b"Some string", [7]]


@needs_redis
def test_resp_client_password_db_pipelining_and_a_caller_that_gave_up() -> None:
    from extproc.transport.resp import RespClient, RespError

    server = RedisServer()
    server.extra = ["--requirepass", "s3cr:et"]
    server.start()

    async def run() -> None:
        with pytest.raises(RespError, match="NOAUTH"):
            await RespClient(server.url).call("GET", "x")
        client = RespClient(f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/3")
        await client.call("SET", "k", "v")
        # 200 calls in flight on one connection, each gets its own reply
        got = await asyncio.gather(*(client.call("INCR", "n") for _ in range(200)))
        assert sorted(got) == list(range(1, 201))
        # a caller that gives up does not shift the replies of the next ones
        slow = asyncio.ensure_future(client.call("DEBUG", "SLEEP", "0.2"))
        await asyncio.sleep(0)
        slow.cancel()
        assert await client.call("GET", "k") == b"v"
        await client.close()
        other = RespClient(f"redis://default:s3cr%3Aet@127.0.0.1:{server.port}/0")  # user and password
        assert await other.call("GET", "k") is None  # db 0, not 3
        await other.close()

    try:
        asyncio.run(run())
    finally:
        server.stop()


@needs_redis
def test_resp_client_over_a_unix_socket() -> None:
    from extproc.transport.resp import RespClient

    server = RedisServer()
    sock = server.dir / "redis.sock"
    server.extra = ["--unixsocket", str(sock), "--requirepass", "pw"]
    server.start()

    async def run() -> None:
        client = RespClient(f"unix://{sock}?db=2&password=pw")
        await client.call("SET", "k", "on-the-socket")
        await client.close()
        tcp = RespClient(f"redis://:pw@127.0.0.1:{server.port}/2")
        assert await tcp.call("GET", "k") == b"on-the-socket"
        await tcp.close()

    try:
        asyncio.run(run())
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------------------ deploy
def test_compose_redis_service_and_the_services_url_meet_on_one_socket() -> None:
    from tests.unit.test_deploy import compose

    services = compose()["services"]
    redis, extproc = services["redis"], services["extproc"]
    cmd = redis["command"]
    sock = cmd[cmd.index("--unixsocket") + 1]
    assert cmd[cmd.index("--port") + 1] == "0"  # no TCP listener at all
    assert redis["network_mode"] == extproc["network_mode"] == "none"
    assert extproc["environment"]["AI_GATEWAY_REDIS_URL"] == f"${{AI_GATEWAY_REDIS_URL:-unix://{sock}}}"
    volume = next(v.split(":")[0] for v in redis["volumes"] if v.split(":")[1] == str(Path(sock).parent))
    assert f"{volume}:{Path(sock).parent}" in extproc["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "-s", sock, "ping"]
    assert redis["profiles"] == ["governance"]  # only with --profile governance


def test_k8s_redis_secret_example_is_what_the_deployment_reads() -> None:
    from tests.unit.test_deploy import DEPLOY, k8s_docs, k8s_validate, load_docs

    (secret,) = load_docs(DEPLOY / "k8s" / "redis-secret.example.yaml")
    k8s_validate(secret)
    (deploy,) = [d for d in k8s_docs() if d["kind"] == "Deployment"]
    (extproc,) = [c for c in deploy["spec"]["template"]["spec"]["initContainers"] if c["name"] == "extproc"]
    ref = extproc["env"][0]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "url") and ref["optional"] is True
    assert secret["stringData"]["url"].startswith("rediss://")


# ---------------------------------------------------------------------------------------------------- request path
class _CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.charged: list[str] = []

    def check(self, plan: g.Plan) -> bool:
        self.checks += 1
        return super().check(plan)

    def charge(self, charges, key, day, fields, retention_days):  # type: ignore[no-untyped-def]
        self.charged.append(key)
        super().charge(charges, key, day, fields, retention_days)


def _exchange(proc: object, model: str = "gpt-test") -> object:
    """Request headers and body of one OpenAI request through the servicer; the body's answer."""
    import orjson
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from extproc.transport.servicer import ProcessCall

    call = ProcessCall(proc)  # type: ignore[arg-type]
    msg = pb.ProcessingRequest()
    for k, v in ((":method", "POST"), (":path", "/openai/v1/chat/completions"), ("content-length", "50")):
        msg.request_headers.headers.headers.add(key=k, raw_value=v.encode())
    proc.handle(call, msg)  # type: ignore[attr-defined]
    body = pb.ProcessingRequest()
    body.request_body.body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    body.request_body.end_of_stream = True
    answer = proc.handle(call, body)  # type: ignore[attr-defined]
    call.end()
    return answer


def test_no_limits_no_store_call_on_the_request_path() -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from extproc.core.exchange import Gateway
    from extproc.transport.governor import Governor
    from extproc.transport.servicer import ExtProc

    base = {"version": "1", "models": [{"name": "gpt-test", "provider": "openai"}]}
    # no governance section: the worker makes no governor at all (server.serve), nothing is planned
    assert not build_config(base, "f", {}).governance.enabled
    # prices only: spend is recorded when an answer ends, but no request waits for a check
    cfg = build_config({**base, "governance": {"prices": {"gpt-test": {"input": 1, "output": 1}}}}, "f", {})
    gov = Governor(cfg.governance, {})
    store = gov.store = _CountingStore()
    proc = ExtProc(Gateway(cfg), governor=gov)
    assert isinstance(_exchange(proc), pb.ProcessingResponse)
    assert store.checks == 0 and store.charged == ["anonymous"]
    # a limit that applies: checked (synchronously in the in-process store) before forwarding
    cfg = build_config({**base, "governance": {"limits": [{"requests_per_minute": 1}]}}, "f", {})
    gov = Governor(cfg.governance, {})
    store = gov.store = _CountingStore()
    proc = ExtProc(Gateway(cfg), governor=gov)
    assert isinstance(_exchange(proc), pb.ProcessingResponse) and store.checks == 1
    refused = _exchange(proc)
    assert isinstance(refused, pb.ProcessingResponse) and refused.immediate_response.status.code == 429
    assert store.checks == 2 and store.charged == ["anonymous"]  # the refused request is not charged


@needs_redis
def test_redis_store_reloads_its_script_when_redis_forgot_it(redis: RedisServer) -> None:
    import redis as redis_py

    s = settings([{"key": "a", "requests_per_minute": 5}])

    async def run() -> list[int]:
        seen, on_failure = _failures()
        rs = g.RedisSettings(timeout=2.0, key_prefix=f"t{time.monotonic_ns()}:")
        store = RedisStore(redis.url, rs, on_failure)  # type: ignore[arg-type]
        out = []
        try:
            for i in range(3):
                if i == 1:  # on the live connection: EVALSHA answers NOSCRIPT, the store loads it and sends again
                    other = redis_py.Redis.from_url(redis.url)
                    other.script_flush()
                    other.close()
                p = g.plan(s, "a", "m", time.time(), rs.key_prefix)
                assert p is not None and await store.check(p)
                out.append(p.values[0])
        finally:
            await store.close()
        assert seen == []
        return out

    assert asyncio.run(run()) == [1, 2, 3]
