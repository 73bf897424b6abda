"""Governance: request, token and budget limits per gateway key and model, prices, and spend (pure).

The ``governance`` section of the config names the limits (``limits[]``), the price table (``prices``), the store the
counters live in (``store: memory`` in the worker, or ``store: redis`` shared by every replica) and what to do when
that store cannot answer (``on_failure``). This module decides; the store (``transport/governance_store.py``) counts.

For one request, ``plan`` gives the counters that apply to its key and model (``Counter``: a name in the store, a
limit, a fixed window). Before the request is forwarded the store checks them all at once, atomically: a request
counter admits the request if one more fits under its limit (and counts it); a token or money counter admits it if it
is not already over (tokens are known only when the answer ends). When the answer ends, ``charges`` says what to add:
the tokens the provider reported (or counted so far when a stream was cut) and their cost from the price table.

Windows are fixed and aligned on UTC: a minute (``epoch // 60``), a day, an ISO week (from Monday) and a calendar
month. Counter names carry their window, and expire a little after it ends.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import functools
import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import Any

from extproc.core.contract import BUDGET_KEY, BUDGET_RESET_KEY
from extproc.translation.canonical import Usage
from extproc.translation.errors import GatewayError

MEMORY, REDIS = "memory", "redis"
FAIL_OPEN, FAIL_CLOSED = "fail_open", "fail_closed"
MICRO = 1_000_000  # money is counted in micro-USD (integers: atomic INCRBY, no float drift)

# Counter kinds
REQUESTS, INPUT, OUTPUT, TOTAL, COST = range(5)
_KIND_WORDS = {REQUESTS: "requests", INPUT: "input tokens", OUTPUT: "output tokens", TOTAL: "tokens", COST: "USD"}
_TOKEN_FIELDS = {
    "input_tokens_per_minute": (INPUT, "minute"),
    "output_tokens_per_minute": (OUTPUT, "minute"),
    "total_tokens_per_minute": (TOTAL, "minute"),
    "input_tokens_per_day": (INPUT, "day"),
    "output_tokens_per_day": (OUTPUT, "day"),
    "total_tokens_per_day": (TOTAL, "day"),
}
PERIODS = ("minute", "day", "week", "month")
_PERIOD_SECONDS = {"minute": 60, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}
_RULE_FIELDS = ("key", "model", "requests_per_minute", *_TOKEN_FIELDS, "budget")
_PRICE_FIELDS = ("input", "output", "cached_input", "reasoning")
ALL = "*"  # a selector counting each key (or model) separately


@dataclass(slots=True, frozen=True)
class Price:
    """USD per million tokens. ``cached_input`` defaults to ``input``, ``reasoning`` to ``output``."""

    input: float
    output: float
    cached_input: float
    reasoning: float

    def micro_usd(self, u: Usage) -> int:
        """The cost of ``u`` in micro-USD (rounded up: a request never costs nothing by rounding). Input tokens
        include the cached ones, output tokens the reasoning ones (the canonical model's convention)."""
        cached = min(u.cached_tokens, u.input_tokens)
        reasoning = min(u.reasoning_tokens, u.output_tokens)
        per_million = (
            (u.input_tokens - cached) * self.input
            + cached * self.cached_input
            + (u.output_tokens - reasoning) * self.output
            + reasoning * self.reasoning
        )
        return math.ceil(per_million - 1e-9)  # USD per million tokens x tokens = micro-USD


@dataclass(slots=True, frozen=True)
class Rule:
    """One ``limits[]`` entry. ``key``/``model``: a name (only that one), ``*`` (each one counted on its own) or None
    (all together)."""

    key: str | None
    model: str | None
    limits: tuple[tuple[int, str, int], ...]  # (kind, period, limit); money limits in micro-USD

    def matches(self, key: str, model: str) -> bool:
        return (self.key in (None, ALL) or self.key == key) and (
            self.model in (None, ALL) or fnmatch.fnmatchcase(model, self.model)
        )

    def scope(self, key: str, model: str) -> tuple[str, str]:
        """The counters' names for this key and model: shared ones are named by the selector, not by the key."""
        k = "*all" if self.key is None else key
        m = "*all" if self.model is None else (model if self.model == ALL else self.model)
        return k, m

    @property
    def own(self) -> bool:
        """Counts one key's use only (its spend may be shown to that key)."""
        return self.key is not None


@dataclass(slots=True, frozen=True)
class RedisSettings:
    url_env: str = "AI_GATEWAY_REDIS_URL"
    timeout: float = 0.02  # seconds, per call on the request path
    breaker_failures: int = 3  # consecutive failures that open the circuit breaker
    breaker_cooldown: float = 2.0  # seconds the breaker stays open before one call tries again
    key_prefix: str = "ai-gateway:"
    # Decisions a worker may take without Redis (docs/governance.md, "Leases and views"): requests it may reserve
    # at once for a request counter far from its limit (1: every request asks Redis), and how old its view of a token
    # or money counter (kept exact by Redis's client tracking) may be for it to admit alone (0: always ask Redis).
    max_lease: int = 100
    view_ttl: float = 1.0


@dataclass(slots=True, frozen=True)
class Settings:
    rules: tuple[Rule, ...] = ()
    prices: dict[str, Price] = field(default_factory=dict)
    store: str = MEMORY
    on_failure: str = FAIL_OPEN
    redis: RedisSettings = field(default_factory=RedisSettings)
    admin_digest: bytes | None = None  # sha256 of the admin credential for GET /usage
    usage_retention_days: int = 400
    budget_headers: bool = False  # a key's own remaining budget on its answers (Envoy adds the headers: ~5 % CPU)

    @property
    def enabled(self) -> bool:
        return bool(self.rules or self.prices)

    def price(self, model: str) -> Price | None:
        p = self.prices.get(model)
        if p is None:
            for pattern, candidate in self.prices.items():
                if fnmatch.fnmatchcase(model, pattern):
                    return candidate
        return p

    def is_admin(self, presented: str | None) -> bool:
        if self.admin_digest is None or not presented:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest(),
                                   self.admin_digest)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- windows
def window(period: str, now: float) -> tuple[str, float]:
    """The fixed UTC window holding ``now``: its id (part of counter names) and when it ends (epoch seconds)."""
    if period == "minute":
        m = int(now // 60)
        return f"m{m}", (m + 1) * 60.0
    day = _dt.datetime.fromtimestamp(now, _dt.UTC).date()
    if period == "day":
        end = day + _dt.timedelta(days=1)
        return f"d{day:%Y%m%d}", _epoch(end)
    if period == "week":
        start = day - _dt.timedelta(days=day.weekday())
        return f"w{start:%Y%m%d}", _epoch(start + _dt.timedelta(days=7))
    first = day.replace(day=1)
    nxt = (first + _dt.timedelta(days=32)).replace(day=1)
    return f"M{first:%Y%m}", _epoch(nxt)


_WINDOWS: dict[str, tuple[float, float, str]] = {}  # period -> (start of validity, window end, window id)


def current_window(period: str, now: float) -> tuple[str, float]:
    """``window``, remembered until the window ends (a plan asks for it on every checked request)."""
    hit = _WINDOWS.get(period)
    if hit is not None and hit[0] <= now < hit[1]:
        return hit[2], hit[1]
    wid, end = window(period, now)
    start = now - now % 60 if period == "minute" else now  # (valid from now on: a clock going back misses)
    _WINDOWS[period] = (start, end, wid)
    return wid, end


def _epoch(day: _dt.date) -> float:
    return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.UTC).timestamp()


_DAY: list[Any] = [0.0, 0.0, ""]  # start, end, id of the last day asked for


def day_id(now: float) -> str:
    """The UTC day of ``now`` (``GET /usage``'s granularity), remembered until it ends."""
    if not _DAY[0] <= now < _DAY[1]:
        day = _dt.datetime.fromtimestamp(now, _dt.UTC).date()
        start = _epoch(day)
        _DAY[:] = [start, start + 86400.0, f"{day:%Y-%m-%d}"]
    return str(_DAY[2])


# ---------------------------------------------------------------------------------------------------------- plans
@dataclass(slots=True)
class Counter:
    name: str  # the store's key, window included
    kind: int
    period: str
    limit: int
    ttl: int  # seconds the store keeps it (its window and a minute more)
    reset: float  # epoch seconds when its window ends
    own: bool  # one key's own counter


@dataclass(slots=True)
class Plan:
    """The counters one request is checked against and charged to."""

    counters: list[Counter]
    key: str
    model: str
    # Filled in when checked: values after the check, the counter that refused (or -1), whether the store answered
    values: list[int] = field(default_factory=list)
    refused: int = -1
    memo: dict[str, Any] = field(default_factory=dict)  # shared by the plans of one key, model and window (stores)


def plan(settings: Settings, key: str, model: str, now: float, prefix: str = "") -> Plan | None:
    """The counters for a request of ``key`` for ``model``; None when no limit applies (no store call at all)."""
    counters: dict[str, Counter] = {}
    for rule in settings.rules:
        if not rule.matches(key, model):
            continue
        k, m = rule.scope(key, model)
        for kind, period, limit in rule.limits:
            wid, reset = current_window(period, now)
            name = f"{prefix}c|{k}|{m}|{kind}|{wid}"
            found = counters.get(name)
            if found is not None:  # the same counter named twice: counted once, the lower limit holds
                found.limit = min(found.limit, limit)
                continue
            ttl = _PERIOD_SECONDS[period] + 60  # fixed: the name changes with the window anyway
            counters[name] = Counter(name, kind, period, limit, ttl, reset, rule.own)
    if not counters:
        return None
    ordered = sorted(counters.values(), key=lambda c: c.kind != REQUESTS)  # request counters first (the script's)
    return Plan(ordered, key, model)


def charges(p: Plan, usage: Usage | None, cost: int) -> list[tuple[str, int, int]]:
    """(counter name, amount, ttl) to add when the answer ended: its tokens and cost."""
    u = usage or Usage()
    amounts = {INPUT: u.input_tokens, OUTPUT: u.output_tokens, TOTAL: u.input_tokens + u.output_tokens, COST: cost}
    out = []
    for c in p.counters:
        if c.kind != REQUESTS:
            n = amounts[c.kind]
            if n > 0:
                out.append((c.name, n, c.ttl))
    return out


def usage_fields(model: str, provider: str, usage: Usage | None, cost: int) -> list[tuple[str, int]]:
    """What a finished request adds to its key's usage of the day (``GET /usage``)."""
    u = usage or Usage()
    names = _field_names(model, provider)
    amounts = (1, u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens, cost)
    return list(zip(names, amounts, strict=True))


@functools.lru_cache(maxsize=1024)  # the same few models and providers on every answer
def _field_names(model: str, provider: str) -> tuple[str, ...]:
    base = f"{model}|{provider}|"
    return tuple(base + f for f in ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
                                    "cost_micro_usd"))  # fmt: skip


def usage_report(key: str | None, days: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """``GET /usage``'s JSON from ``{day: {key: {field: n}}}``: per key, per model and provider, and per day."""
    keys: dict[str, Any] = {}
    for day in sorted(days):
        for name, fields in days[day].items():
            if key is not None and name != key:
                continue
            entry = keys.setdefault(name, {"key": name, "requests": 0, "cost_usd": 0.0, "models": {}, "days": {}})
            for fname, n in fields.items():
                model, provider, what = fname.split("|", 2)
                m = entry["models"].setdefault(
                    f"{model}|{provider}",
                    {"model": model, "provider": provider, "requests": 0, "input_tokens": 0, "output_tokens": 0,
                     "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": 0.0},
                )  # fmt: skip
                d = entry["days"].setdefault(day, {"requests": 0, "cost_usd": 0.0})
                if what == "cost_micro_usd":
                    m["cost_usd"] += n / MICRO
                    d["cost_usd"] += n / MICRO
                    entry["cost_usd"] += n / MICRO
                else:
                    m[what] += n
                    if what == "requests":
                        d["requests"] += n
                        entry["requests"] += n
    out = []
    for entry in keys.values():
        entry["models"] = sorted(entry["models"].values(), key=lambda m: (m["model"], m["provider"]))
        entry["cost_usd"] = round(entry["cost_usd"], 6)
        for m in entry["models"]:
            m["cost_usd"] = round(m["cost_usd"], 6)
        for d in entry["days"].values():
            d["cost_usd"] = round(d["cost_usd"], 6)
        out.append(entry)
    return {"keys": sorted(out, key=lambda e: e["key"])}


def parse_day(value: str, where: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(value[:10])
    except ValueError:
        raise GatewayError("invalid_request", f"'{where}' must be a date (YYYY-MM-DD)", 400, param=where) from None


def days_between(frm: str, to: str, now: float, limit: int = 400) -> list[str]:
    """The UTC days of a ``GET /usage`` query (``from``/``to`` inclusive; defaults: today)."""
    today = _dt.datetime.fromtimestamp(now, _dt.UTC).date()
    start = parse_day(frm, "from") if frm else today
    end = parse_day(to, "to") if to else today
    if end < start:
        raise GatewayError("invalid_request", "'to' is before 'from'", 400, param="to")
    if (end - start).days >= limit:
        raise GatewayError("invalid_request", f"at most {limit} days at a time", 400, param="from")
    return [f"{start + _dt.timedelta(days=i):%Y-%m-%d}" for i in range((end - start).days + 1)]


# ---------------------------------------------------------------------------------------------------------- answers
def _reset_text(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"


@functools.lru_cache(maxsize=256)  # window ends: the same few for every answer
def _rfc3339(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(math.ceil(epoch), _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refusal(p: Plan, fmt: str, now: float) -> tuple[GatewayError, list[tuple[str, str]]]:
    """The 429 for a refused plan, in words naming the key's own limit (never another key's spend), and the
    rate-limit headers of the client's format."""
    c = p.counters[p.refused]
    retry = max(1, math.ceil(c.reset - now))
    who = f"gateway key '{p.key}'" if c.own else "the gateway's shared limit"
    scope = f" for model '{p.model}'"
    if c.kind == COST:
        msg = (
            f"{who} has used its budget of ${c.limit / MICRO:.2f} per {c.period}{scope}; "
            f"it renews at {_rfc3339(c.reset)}"
        )
        err = GatewayError("rate_limit", msg, 429, code="insufficient_quota", retry_after=str(retry))
    else:
        msg = f"{who} is over its limit of {c.limit} {_KIND_WORDS[c.kind]} per {c.period}{scope}; retry in {retry} s"
        err = GatewayError("rate_limit", msg, 429, code="rate_limit_exceeded", retry_after=str(retry))
    return err, rate_headers(p, fmt, now)


def _tightest(p: Plan, kinds: tuple[int, ...]) -> tuple[int, int, float] | None:
    """(limit, remaining, reset) of the counter of these kinds with the least room left."""
    best: tuple[int, int, float] | None = None
    for c, v in zip(p.counters, p.values, strict=False):
        if c.kind in kinds:
            room = max(0, c.limit - v)
            if best is None or room < best[1]:
                best = (c.limit, room, c.reset)
    return best


def rate_headers(p: Plan, fmt: str, now: float) -> list[tuple[str, str]]:
    """OpenAI's ``x-ratelimit-*`` (reset as a duration) or Anthropic's ``anthropic-ratelimit-*`` (reset as RFC 3339)
    for the request and token counters of a checked plan; Gemini has none (``retry-after`` only)."""
    out: list[tuple[str, str]] = []
    if fmt in ("openai", "responses"):
        for word, kinds in (("requests", (REQUESTS,)), ("tokens", (TOTAL, INPUT, OUTPUT))):
            t = _tightest(p, kinds)
            if t is not None:
                out += [(f"x-ratelimit-limit-{word}", str(t[0])), (f"x-ratelimit-remaining-{word}", str(t[1])),
                        (f"x-ratelimit-reset-{word}", _reset_text(t[2] - now))]  # fmt: skip
    elif fmt == "anthropic":
        for word, kinds in (("requests", (REQUESTS,)), ("tokens", (TOTAL,)), ("input-tokens", (INPUT,)),
                            ("output-tokens", (OUTPUT,))):  # fmt: skip
            t = _tightest(p, kinds)
            if t is not None:
                out += [(f"anthropic-ratelimit-{word}-limit", str(t[0])),
                        (f"anthropic-ratelimit-{word}-remaining", str(t[1])),
                        (f"anthropic-ratelimit-{word}-reset", _rfc3339(t[2]))]  # fmt: skip
    return out


def budget_headers(p: Plan) -> list[tuple[str, str]]:
    """A key's own remaining budget (its tightest own money counter) on its answers, as of the check: (dynamic
    metadata key, value) pairs, which Envoy turns into ``BUDGET_HEADER`` and ``BUDGET_RESET_HEADER``."""
    best: tuple[int, float] | None = None
    for c, v in zip(p.counters, p.values, strict=False):
        if c.kind == COST and c.own:
            room = max(0, c.limit - v)
            if best is None or room < best[0]:
                best = (room, c.reset)
    if best is None:
        return []
    return [(BUDGET_KEY, f"{best[0] / MICRO:.6f}"), (BUDGET_RESET_KEY, _rfc3339(best[1]))]


def own_budgets(settings: Settings) -> bool:
    """Answers carry budget headers: asked for (``budget_headers``), and some rule gives a key a budget of its own."""
    rules = settings.rules
    return settings.budget_headers and any(r.own and any(kind == COST for kind, _, _ in r.limits) for r in rules)


def unavailable() -> GatewayError:
    """``on_failure: fail_closed`` while the store cannot answer."""
    return GatewayError(
        "overloaded", "the gateway cannot check usage limits right now (its limits store is unreachable); retry",
        503, retry_after="1",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- config
def parse(raw: Any, env: dict[str, str], key_names: set[str], fail: Any) -> Settings:
    """The ``governance`` section, checked."""
    if raw is None:
        return Settings()
    known = (
        "store",
        "on_failure",
        "redis",
        "admin_key_env",
        "prices",
        "limits",
        "usage_retention_days",
        "budget_headers",
    )
    if not isinstance(raw, dict):
        raise fail("governance", f"expected a mapping ({', '.join(known)})")
    for k in raw:
        if k not in known:
            raise fail("governance", f"unknown field '{k}' (known: {', '.join(known)})")
    store = raw.get("store", MEMORY)
    if store not in (MEMORY, REDIS):
        raise fail("governance.store", "expected 'memory' or 'redis'")
    on_failure = raw.get("on_failure", FAIL_OPEN)
    if on_failure not in (FAIL_OPEN, FAIL_CLOSED):
        raise fail("governance.on_failure", "expected 'fail_open' or 'fail_closed'")
    redis = _parse_redis(raw.get("redis") or {}, fail)
    if store == REDIS and not env.get(redis.url_env):
        raise fail("governance.redis.url_env", f"environment variable {redis.url_env} is not set (redis://... URL)")
    admin = None
    if raw.get("admin_key_env") is not None:
        var = raw["admin_key_env"]
        value = env.get(var) if isinstance(var, str) else None
        if not value:
            raise fail("governance.admin_key_env", f"environment variable {var} is not set")
        admin = hashlib.sha256(value.encode()).digest()
    prices = {}
    raw_prices = raw.get("prices") or {}
    if not isinstance(raw_prices, dict):
        raise fail("governance.prices", "expected a mapping of model name to prices")
    for model, entry in raw_prices.items():
        prices[str(model)] = _parse_price(entry, f"governance.prices.{model}", fail)
    raw_rules = raw.get("limits") or []
    if not isinstance(raw_rules, list):
        raise fail("governance.limits", "expected a list")
    rules = tuple(_parse_rule(e, f"governance.limits[{i}]", key_names, fail) for i, e in enumerate(raw_rules))
    for i, rule in enumerate(rules):
        budgeted = any(kind == COST for kind, _, _ in rule.limits)
        if (
            budgeted
            and rule.model not in (None, ALL)
            and not any(fnmatch.fnmatchcase(rule.model, p) or p == rule.model for p in prices)
        ):
            raise fail(f"governance.limits[{i}].budget", f"no price for model '{rule.model}' in prices")
    if any(kind == COST for r in rules for kind, _, _ in r.limits) and not prices:
        raise fail("governance.limits", "a budget needs prices (governance.prices)")
    days = raw.get("usage_retention_days", 400)
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
        raise fail("governance.usage_retention_days", "expected a positive integer")
    headers = raw.get("budget_headers", False)
    if not isinstance(headers, bool):
        raise fail("governance.budget_headers", "expected true or false")
    return Settings(rules, prices, store, on_failure, redis, admin, days, headers)


def _positive(value: Any, where: str, fail: Any, integer: bool = True) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or value <= 0:
        raise fail(where, "expected a positive " + ("integer" if integer else "number"))
    return value


def _parse_redis(raw: Any, fail: Any) -> RedisSettings:
    from extproc.core.config import parse_duration  # config imports this module

    known = ("url_env", "timeout", "breaker_failures", "breaker_cooldown", "key_prefix", "max_lease", "view_ttl")
    if not isinstance(raw, dict):
        raise fail("governance.redis", f"expected a mapping ({', '.join(known)})")
    for k in raw:
        if k not in known:
            raise fail("governance.redis", f"unknown field '{k}' (known: {', '.join(known)})")
    s = RedisSettings()
    url_env = raw.get("url_env", s.url_env)
    if not isinstance(url_env, str) or not url_env:
        raise fail("governance.redis.url_env", "expected an environment variable name")
    out: dict[str, Any] = {"url_env": url_env}
    for name in ("timeout", "breaker_cooldown"):
        if name in raw:
            try:
                out[name] = parse_duration(raw[name])
            except ValueError as exc:
                raise fail(f"governance.redis.{name}", str(exc)) from None
            if out[name] <= 0:
                raise fail(f"governance.redis.{name}", "must be more than 0")
    if "view_ttl" in raw:  # 0 turns local decisions on token and money counters off
        try:
            v = raw["view_ttl"]
            zero = not isinstance(v, bool) and v in (0, "0", "0s", "0ms")
            out["view_ttl"] = 0.0 if zero else parse_duration(v)
        except ValueError as exc:
            raise fail("governance.redis.view_ttl", str(exc)) from None
    for name in ("breaker_failures", "max_lease"):
        if name in raw:
            out[name] = _positive(raw[name], f"governance.redis.{name}", fail)
    if "key_prefix" in raw:
        if not isinstance(raw["key_prefix"], str):
            raise fail("governance.redis.key_prefix", "expected a string")
        out["key_prefix"] = raw["key_prefix"]
    return RedisSettings(**{**{f: getattr(s, f) for f in known}, **out})


def _parse_price(entry: Any, where: str, fail: Any) -> Price:
    if not isinstance(entry, dict) or set(entry) - set(_PRICE_FIELDS) or not {"input", "output"} <= set(entry):
        raise fail(where, "expected {input, output[, cached_input, reasoning]} in USD per million tokens")
    vals = {}
    for k, v in entry.items():
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            raise fail(f"{where}.{k}", "expected a number of USD per million tokens (0 or more)")
        vals[k] = float(v)
    return Price(vals["input"], vals["output"], vals.get("cached_input", vals["input"]),
                 vals.get("reasoning", vals["output"]))  # fmt: skip


def _parse_rule(entry: Any, where: str, key_names: set[str], fail: Any) -> Rule:
    if not isinstance(entry, dict):
        raise fail(where, "expected a mapping (key, model, and limits)")
    for k in entry:
        if k not in _RULE_FIELDS:
            raise fail(where, f"unknown field '{k}' (known: {', '.join(_RULE_FIELDS)})")
    key, model = entry.get("key"), entry.get("model")
    if key is not None and (not isinstance(key, str) or not key):
        raise fail(f"{where}.key", "expected a gateway key name, or '*' for each key")
    if key not in (None, ALL) and key_names and key not in key_names:
        raise fail(f"{where}.key", f"no gateway key named '{key}' (auth.api_keys)")
    if model is not None and (not isinstance(model, str) or not model):
        raise fail(f"{where}.model", "expected a model name (glob allowed), or '*' for each model")
    limits: list[tuple[int, str, int]] = []
    if "requests_per_minute" in entry:
        limits.append((REQUESTS, "minute", _positive(entry["requests_per_minute"], f"{where}.requests_per_minute",
                                                     fail)))  # fmt: skip
    for name, (kind, period) in _TOKEN_FIELDS.items():
        if name in entry:
            limits.append((kind, period, _positive(entry[name], f"{where}.{name}", fail)))
    if "budget" in entry:
        b = entry["budget"]
        if not isinstance(b, dict) or set(b) - {"usd", "period"} or "usd" not in b:
            raise fail(f"{where}.budget", "expected {usd: AMOUNT, period: day|week|month}")
        usd = _positive(b["usd"], f"{where}.budget.usd", fail, integer=False)
        period = b.get("period", "month")
        if period not in ("day", "week", "month"):
            raise fail(f"{where}.budget.period", "expected day, week or month")
        limits.append((COST, period, round(usd * MICRO)))
    if not limits:
        raise fail(where, "names no limit (requests_per_minute, *_tokens_per_minute/day, budget)")
    return Rule(key, model, tuple(limits))


# ---------------------------------------------------------------------------------------------------------- GET /usage
@dataclass(slots=True, frozen=True)
class ServeUsage:
    """Answer ``GET /usage``: the servicer reads the store (I/O the core never does) for these days and key."""

    key: str | None
    days: tuple[str, ...]


def usage_request(settings: Settings, headers: dict[str, str], query: str, now: float) -> ServeUsage:
    """``GET /usage?key=&from=&to=``, for the admin credential only (``Authorization: Bearer``)."""
    from urllib.parse import parse_qs

    if settings.admin_digest is None:
        raise GatewayError("not_found", "/usage needs governance.admin_key_env in the config", 404)
    auth = headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not settings.is_admin(token):
        raise GatewayError("auth", "GET /usage needs the admin credential (Authorization: Bearer)", 401)
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    days = days_between(q.get("from", ""), q.get("to", ""), now)
    return ServeUsage(q.get("key") or None, tuple(days))
