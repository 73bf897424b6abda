"""Model targets: where a model name may be served, in fallback order, and how Envoy retries across them (pure).

A model maps to one target (``provider`` + ``target_model``, the seed's form) or to ``targets``: an ordered list of
levels, each one target or a ``balance`` of weighted deployments. Envoy tries one target per level, in order, on
connect failure, reset, 5xx and 429 (``docs/fallback.md``). ``fallbacks`` appends the levels of other models (a chain
of model names, checked for cycles). This module parses and checks that part of the YAML; ``config`` calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Fail = Callable[[str, str], Exception]


@dataclass(slots=True, frozen=True)
class ModelTarget:
    """One place a model can be served: a provider (by name), the model name sent to it, its share of its level."""

    provider: str
    model: str
    weight: int = 1

    @property
    def label(self) -> str:
        """``provider/model``: what the answer's ``x-ai-gateway-served-by`` header and the logs show."""
        return f"{self.provider}/{self.model}"


Level = tuple[ModelTarget, ...]  # targets of one priority: load-balanced by weight, one of them per attempt


@dataclass(slots=True, frozen=True)
class Cooldown:
    """Envoy outlier detection on each fallback target: ``failures`` consecutive failed attempts (5xx, connect
    failure, reset, timeout; 429 too with ``rate_limited``) take it out of rotation for ``duration`` (longer each time
    it happens again), at most ``max_percent`` of a model's targets at once."""

    failures: int = 3
    interval: float = 10.0
    duration: float = 30.0
    max_percent: int = 100
    rate_limited: bool = True


@dataclass(slots=True, frozen=True)
class FallbackPolicy:
    """The top-level ``fallback`` settings: how Envoy retries requests of models with several targets."""

    per_try_timeout: float | None = None  # seconds an attempt may take to answer (headers) before the next is tried
    retry_after_cap: float = 2.0  # a 429/503 retry-after up to this many seconds is waited; a longer one is not
    # Retries in flight per fallback model: at most this many (Envoy's retry circuit breaker)...
    max_concurrent_retries: int = 1000
    # ... or, when set, a budget: a share (%) of the requests in flight, never fewer than min_retry_concurrency.
    retry_budget_percent: float | None = None
    min_retry_concurrency: int = 3
    cooldown: Cooldown = field(default_factory=Cooldown)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _target(raw: Any, where: str, default_model: str, providers: dict[str, Any], fail: Fail) -> ModelTarget:
    if not isinstance(raw, dict):
        raise fail(where, "expected a mapping with 'provider' (and 'model', 'weight')")
    for key in raw:
        if key not in ("provider", "model", "weight"):
            raise fail(where, f"unknown field '{key}' (known: provider, model, weight)")
    provider = raw.get("provider")
    if not isinstance(provider, str) or not provider:
        raise fail(where, "'provider' is missing")
    if provider not in providers:
        raise fail(where, f"unknown provider '{provider}' (known: {', '.join(sorted(providers))})")
    model = raw.get("model", default_model)
    if not isinstance(model, str) or not model.strip() or any(c in model for c in "\r\n\0"):
        raise fail(where, "'model' must be a non-empty string without control characters")
    weight = raw.get("weight", 1)
    if not _positive_int(weight):
        raise fail(where, f"'weight' must be a whole number greater than zero (got {weight!r})")
    return ModelTarget(provider, model, weight)


def parse_targets(raw: Any, where: str, name: str, providers: dict[str, Any], fail: Fail) -> tuple[Level, ...]:
    """``models[].targets``: levels in fallback order. Each item is a target (``provider``, ``model`` defaulting to
    the model's name, ``weight``) or ``balance:`` a list of targets that share one level by weight."""
    where = f"{where}.targets"
    if not isinstance(raw, list) or not raw:
        raise fail(where, "expected a non-empty list of targets")
    levels: list[Level] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if isinstance(item, dict) and "balance" in item:
            if len(item) != 1:
                raise fail(at, "'balance' takes no other field: put weights on its targets")
            group = item["balance"]
            if not isinstance(group, list) or not group:
                raise fail(f"{at}.balance", "expected a non-empty list of targets")
            levels.append(tuple(_target(t, f"{at}.balance[{j}]", name, providers, fail) for j, t in enumerate(group)))
        else:
            levels.append((_target(item, at, name, providers, fail),))
    return tuple(levels)


def parse_fallbacks(raw: Any, where: str) -> tuple[str, ...] | str:
    """``models[].fallbacks``: a model name or a list of them; a string is an error message."""
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        return "expected a model name or a non-empty list of model names"
    return tuple(names)


def flatten(
    own: dict[str, tuple[Level, ...]], fallbacks: dict[str, tuple[str, ...]], where: dict[str, str], fail: Fail
) -> dict[str, tuple[Level, ...]]:
    """Every model's levels with those of its ``fallbacks`` appended (recursively, in order). A fallback naming an
    unknown model, a cycle of fallbacks, and a target (provider and model) reached twice are refused, naming the
    entry."""
    done: dict[str, tuple[Level, ...]] = {}

    def expand(name: str, path: tuple[str, ...]) -> tuple[Level, ...]:
        if name in done:
            return done[name]
        levels = list(own[name])
        for other in fallbacks.get(name, ()):
            if other not in own:
                raise fail(f"{where[name]}.fallbacks", f"unknown model '{other}'")
            if other in path or other == name:
                cycle = " -> ".join((*path, name, other)[(*path, name).index(other) :])
                raise fail(f"{where[name]}.fallbacks", f"fallbacks form a cycle: {cycle}")
            levels.extend(expand(other, (*path, name)))
        seen: dict[tuple[str, str], int] = {}
        for i, level in enumerate(levels):
            for t in level:
                key = (t.provider, t.model)
                if key in seen:
                    how = "in its targets" if i < len(own[name]) else "through its fallbacks"
                    raise fail(where[name], f"target {t.label} is listed twice ({how}): each provider and model once")
                seen[key] = i
        done[name] = tuple(levels)
        return done[name]

    return {name: expand(name, ()) for name in own}


def parse_policy(raw: Any, fail: Fail, duration: Callable[[Any], float]) -> FallbackPolicy:
    """The top-level ``fallback`` mapping."""
    if not isinstance(raw, dict):
        raise fail("fallback", "expected a mapping (per_try_timeout, retry_after_cap, retry_budget, cooldown)")
    known = (
        "per_try_timeout", "retry_after_cap", "max_concurrent_retries", "retry_budget", "min_retry_concurrency",
        "cooldown",
    )  # fmt: skip
    for key in raw:
        if key not in known:
            raise fail("fallback", f"unknown field '{key}' (known: {', '.join(known)})")
    base = FallbackPolicy()

    def seconds(key: str, default: float | None) -> float | None:
        if raw.get(key) is None:
            return default
        try:
            return duration(raw[key])
        except ValueError as exc:
            raise fail(f"fallback.{key}", str(exc)) from None

    budget = raw.get("retry_budget")
    bad = isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 100
    if budget is not None and bad:
        raise fail("fallback.retry_budget", "expected a percentage greater than 0, at most 100")
    for key in ("min_retry_concurrency", "max_concurrent_retries"):
        if not _positive_int(raw.get(key, 1)):
            raise fail(f"fallback.{key}", "expected a whole number greater than zero")
    cap = seconds("retry_after_cap", base.retry_after_cap)
    assert cap is not None
    return FallbackPolicy(
        per_try_timeout=seconds("per_try_timeout", None),
        retry_after_cap=cap,
        max_concurrent_retries=raw.get("max_concurrent_retries", base.max_concurrent_retries),
        retry_budget_percent=float(budget) if budget is not None else None,
        min_retry_concurrency=raw.get("min_retry_concurrency", base.min_retry_concurrency),
        cooldown=_parse_cooldown(raw.get("cooldown"), fail, duration),
    )


def _parse_cooldown(raw: Any, fail: Fail, duration: Callable[[Any], float]) -> Cooldown:
    base = Cooldown()
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise fail("fallback.cooldown", "expected a mapping (failures, interval, duration, max_percent, rate_limited)")
    known = ("failures", "interval", "duration", "max_percent", "rate_limited")
    for key in raw:
        if key not in known:
            raise fail("fallback.cooldown", f"unknown field '{key}' (known: {', '.join(known)})")
    failures = raw.get("failures", base.failures)
    if not _positive_int(failures):
        raise fail("fallback.cooldown.failures", "expected a whole number greater than zero")
    pct = raw.get("max_percent", base.max_percent)
    if not _positive_int(pct) or pct > 100:
        raise fail("fallback.cooldown.max_percent", "expected a whole number from 1 to 100")
    limited = raw.get("rate_limited", base.rate_limited)
    if not isinstance(limited, bool):
        raise fail("fallback.cooldown.rate_limited", "expected true or false")
    out = {}
    for key in ("interval", "duration"):
        try:
            out[key] = duration(raw[key]) if raw.get(key) is not None else getattr(base, key)
        except ValueError as exc:
            raise fail(f"fallback.cooldown.{key}", str(exc)) from None
    return Cooldown(failures, out["interval"], out["duration"], pct, limited)
