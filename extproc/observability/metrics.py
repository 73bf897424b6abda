"""Prometheus metrics: the seed's families plus token usage, time to first token and the gateway's own overhead.

Workers are separate processes, so metrics use prometheus-client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the launcher sets it): every worker writes its own files and ``/metrics``,
answered by whichever worker gets the request, aggregates all of them, so totals equal the requests sent.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from extproc.core.record import Record, outcome

_NO_RESPONSE = frozenset(("network", "timeout", "overloaded"))  # Envoy's own replies: no provider answered
FALLBACK_PROVIDER = "(fallback)"  # provider label of fallback requests in flight (not known until one answers)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    __slots__ = (
        "_cache",
        "_pending",
        "_scheduled",
        "_spend",
        "active",
        "adaptations",
        "attempts",
        "duration",
        "errors",
        "gov_breaker",
        "gov_cost",
        "gov_failures",
        "gov_refused",
        "gov_tokens",
        "multiproc",
        "overhead",
        "registry",
        "requests",
        "tokens",
        "tpot",
        "ttft",
    )

    def __init__(self) -> None:
        self.multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        reg = None if self.multiproc else self.registry
        labels = ("format", "model", "provider")
        self.requests = Counter(
            "proxy_requests_total", "Requests by client format, model, provider and HTTP status",
            (*labels, "status"), registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "proxy_request_duration_seconds", "Request duration, provider time included",
            labels, buckets=_DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.errors = Counter(
            "proxy_errors_total", "Failed requests by error type", (*labels, "error_type"), registry=reg
        )
        self.active = Gauge(
            "proxy_active_requests", "Requests in flight", ("format", "provider"), registry=reg,
            multiprocess_mode="livesum",  # summed over the live workers' files (ignored without multiprocess)
        )  # fmt: skip
        self.tokens = Counter(
            "proxy_tokens_total", "Tokens by type (input, output, cached, reasoning)",
            ("model", "provider", "type"), registry=reg,
        )  # fmt: skip
        self.ttft = Histogram(
            "proxy_time_to_first_token_seconds", "Streams: time from request to first content event",
            labels, buckets=_DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.tpot = Histogram(
            "proxy_time_per_output_token_seconds", "Streams: (duration - time to first token) / output tokens",
            labels, buckets=_FAST_BUCKETS, registry=reg,
        )  # fmt: skip
        self.attempts = Counter(
            "proxy_upstream_attempts_total",
            "Upstream attempts by client model, provider tried and outcome (success, rate_limited, client_error, "
            "server_error, no_response)",
            ("model", "provider", "outcome"), registry=reg,
        )  # fmt: skip
        self.overhead = Histogram(
            "proxy_gateway_overhead_seconds", "Time spent in the extproc service per request, provider excluded",
            ("format", "provider"), buckets=_FAST_BUCKETS, registry=reg,
        )  # fmt: skip
        self.adaptations = Counter(
            "proxy_request_adaptations_total",
            "Request parameters changed for the target model (docs/capabilities.md), by parameter and action",
            ("model", "provider", "parameter", "action"), registry=reg,
        )  # fmt: skip
        # Governance (docs/governance.md): spend per gateway key *name* (never a key), refusals, the store's health
        self.gov_cost = Counter(
            "proxy_cost_usd", "Cost in USD from the governance price table, by gateway key name, model and provider",
            ("key", "model", "provider"), registry=reg,
        )  # fmt: skip
        self.gov_tokens = Counter(
            "proxy_key_tokens", "Tokens by gateway key name, model, provider and type (input, output, cached, ...)",
            ("key", "model", "provider", "type"), registry=reg,
        )  # fmt: skip
        self.gov_refused = Counter(
            "proxy_governance_refusals", "Requests refused by a governance limit, by key name, model and limit kind",
            ("key", "model", "limit"), registry=reg,
        )  # fmt: skip
        self.gov_failures = Counter(
            "proxy_governance_store_failures", "Governance store (Redis) calls that failed, by operation and reason",
            ("op", "reason"), registry=reg,
        )  # fmt: skip
        self.gov_breaker = Gauge(
            "proxy_governance_breaker_open", "1 while a worker's circuit breaker to the governance store is open",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self._spend: dict[tuple[str, str, str], list[float]] = {}  # (key, model, provider) -> cost, 4 token counts
        self._cache: dict[tuple[str, str, str], _Series] = {}
        self._pending: set[_Series] = set()
        self._scheduled = False
        if self.multiproc:
            from prometheus_client import multiprocess

            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)

    def started(self, rec: Record) -> None:
        s = self._series(rec, FALLBACK_PROVIDER if rec.fallback else None)
        s.active += 1
        self._dirty(s)

    def _active_series(self, rec: Record) -> _Series:
        """Where a request in flight is counted: a fallback request's provider is not known until one answers."""
        return self._series(rec, FALLBACK_PROVIDER) if rec.fallback else self._series(rec)

    def _series(self, rec: Record, provider: str | None = None) -> _Series:
        """The label children of one (format, model, provider), looked up once: ``labels()`` costs more than
        the increments themselves on the hot path."""
        # Only configured model names become label values (``model_label``): a client choosing names must not create
        # series.
        key = (rec.client, rec.model_label, provider if provider is not None else rec.provider or "")
        series = self._cache.get(key)
        if series is None:
            series = self._cache[key] = _Series(self, *key)
        return series

    def done(self, rec: Record, duration: float, overhead: float, active: bool) -> None:
        """Accumulate in plain Python; ``flush`` writes the sums to the shared files (at most 0.2 s later, and
        before every scrape). Writing each increment costs an mmap write and a ``getpid`` call each. ``active``: the
        exchange was counted by ``started``; ``overhead``: seconds the service spent on it."""
        s = self._series(rec)
        if active:
            started = self._active_series(rec) if rec.fallback else s
            started.active -= 1
            if started is not s:
                self._dirty(started)
        status = rec.status or 0
        if rec.attempt_log:  # every attempt Envoy made for a fallback model, by target
            for label, code in rec.attempt_log:
                tried = self._series(rec, label.partition("/")[0])
                how = outcome(code)
                tried.attempts[how] = tried.attempts.get(how, 0) + 1
                if tried is not s:
                    self._dirty(tried)
        elif rec.upstream_path and not rec.fallback:  # one attempt, to the model's only target (its outcome at flush)
            code = 0 if rec.error_type in _NO_RESPONSE else status
            s.upstream[code] = s.upstream.get(code, 0) + 1
        s.requests[status] = s.requests.get(status, 0) + 1
        s.duration.add(duration)
        s.overhead.add(overhead)
        if rec.error_type:
            s.errors[rec.error_type] = s.errors.get(rec.error_type, 0) + 1
        u = rec.usage
        if u is not None:
            s.tokens[0] += u.input_tokens
            s.tokens[1] += u.output_tokens
            s.tokens[2] += u.cached_tokens
            s.tokens[3] += u.reasoning_tokens
        if rec.key is not None:  # governance on: spend per key name
            spent = self._spend.get((rec.key, rec.model_label, rec.provider or ""))
            if spent is None:
                spent = self._spend[(rec.key, rec.model_label, rec.provider or "")] = [0.0, 0, 0, 0, 0]
            spent[0] += rec.cost or 0.0
            if u is not None:
                spent[1] += u.input_tokens
                spent[2] += u.output_tokens
                spent[3] += u.cached_tokens
                spent[4] += u.reasoning_tokens
        if rec.adaptations:
            for a in rec.adaptations:
                key = (a.parameter, a.action)
                s.adapted[key] = s.adapted.get(key, 0) + 1
        if rec.ttft is not None:
            s.ttft.add(rec.ttft)
            if u is not None and u.output_tokens > 1:
                s.tpot.add(max(duration - rec.ttft, 0.0) / (u.output_tokens - 1))
        self._dirty(s)

    def _dirty(self, s: _Series) -> None:
        self._pending.add(s)
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(0.2, self.flush)
                self._scheduled = True
            except RuntimeError:  # no event loop (tests, tools): write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, set()
        spend, self._spend = self._spend, {}
        for (key, model, provider), (cost, *tokens) in spend.items():  # before the request counts (see _Series.write)
            if cost:
                self.gov_cost.labels(key, model, provider).inc(cost)
            for kind, n in zip(("input", "output", "cached", "reasoning"), tokens, strict=True):
                if n:
                    self.gov_tokens.labels(key, model, provider, kind).inc(n)
        for s in pending:
            s.write(self)

    def governance_refused(self, key: str, model: str, counter: Any) -> None:
        from extproc.core.governance import COST, REQUESTS

        kind = "budget" if counter.kind == COST else ("requests" if counter.kind == REQUESTS else "tokens")
        self.gov_refused.labels(key, model, f"{kind}_per_{counter.period}").inc()

    def governance_store_failed(self, op: str, reason: str) -> None:
        self.gov_failures.labels(op, reason).inc()

    def governance_breaker(self, is_open: bool) -> None:
        self.gov_breaker.set(1 if is_open else 0)

    def render(self) -> tuple[str, bytes]:
        self.flush()
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class _Hist:
    """Observations of one histogram child since the last flush, bucketed the way prometheus-client buckets them."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.total += value
        self.counts[bisect_left(self.bounds, value)] += 1

    def write(self, child: Any) -> None:
        """Add the accumulated sum and bucket counts to a prometheus-client histogram child (its value objects are
        the ones ``observe`` would touch), then start again."""
        if not any(self.counts):
            return
        child._sum.inc(self.total)
        for i, n in enumerate(self.counts):
            if n:
                child._buckets[i].inc(n)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


class _Series:
    """Pre-resolved label children for one (format, model, provider), and what accumulated since the last flush."""

    __slots__ = (
        "active", "active_child", "adapted", "attempts", "children", "duration", "errors", "key", "overhead",
        "requests", "tokens", "tpot", "ttft", "upstream",
    )  # fmt: skip

    def __init__(self, m: Metrics, fmt: str, model: str, provider: str) -> None:
        self.key = (fmt, model, provider)
        self.active = 0
        self.requests: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.attempts: dict[str, int] = {}  # outcome -> count (attempts of fallback requests)
        self.upstream: dict[int, int] = {}  # status (0: no answer) -> count (single-target requests' one attempt)
        self.adapted: dict[tuple[str, str], int] = {}  # (parameter, action) -> count
        self.tokens = [0, 0, 0, 0]  # input, output, cached, reasoning
        self.duration = _Hist(_DURATION_BUCKETS)
        self.overhead = _Hist(_FAST_BUCKETS)
        self.ttft = _Hist(_DURATION_BUCKETS)
        self.tpot = _Hist(_FAST_BUCKETS)
        self.active_child = m.active.labels(fmt, provider)
        self.children = (
            m.duration.labels(fmt, model, provider),
            m.overhead.labels(fmt, provider),
            m.ttft.labels(fmt, model, provider),
            m.tpot.labels(fmt, model, provider),
        )

    def write(self, m: Metrics) -> None:
        """Everything accumulated, into the worker's files. ``proxy_requests_total`` goes last: a scrape that counts a
        request also sees its errors and tokens (counters, the same file). Its durations are in the worker's histogram
        file, which a scrape may have read a moment before: they show up at the next scrape."""
        if self.active:
            self.active_child.inc(self.active)
            self.active = 0
        for etype, n in self.errors.items():
            m.errors.labels(*self.key, etype).inc(n)
        self.errors.clear()
        _, model, provider = self.key
        for code, n in self.upstream.items():
            how = outcome(code)
            self.attempts[how] = self.attempts.get(how, 0) + n
        self.upstream.clear()
        for how, n in self.attempts.items():
            m.attempts.labels(model, provider, how).inc(n)
        self.attempts.clear()
        for (parameter, action), n in self.adapted.items():
            m.adaptations.labels(model, provider, parameter, action).inc(n)
        self.adapted.clear()
        for kind, n in zip(("input", "output", "cached", "reasoning"), self.tokens, strict=True):
            if n:
                m.tokens.labels(model, provider, kind).inc(n)
        self.tokens = [0, 0, 0, 0]
        for hist, child in zip((self.duration, self.overhead, self.ttft, self.tpot), self.children, strict=True):
            hist.write(child)
        for status, n in self.requests.items():
            m.requests.labels(*self.key, str(status)).inc(n)
        self.requests.clear()
