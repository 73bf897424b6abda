"""Prometheus metrics: the seed's families plus token usage, time to first token and the gateway's own overhead.

Workers are separate processes, so metrics use prometheus-client's multiprocess mode when
``PROMETHEUS_MULTIPROC_DIR`` is set (the launcher sets it): every worker writes its own files and ``/metrics``,
answered by whichever worker gets the request, aggregates all of them, so totals equal the requests sent.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .exchange import Exchange

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600)
_FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class Metrics:
    __slots__ = (
        "_cache",
        "active",
        "duration",
        "errors",
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
        gauge_kw = {"multiprocess_mode": "livesum"} if self.multiproc else {}
        self.active = Gauge(
            "proxy_active_requests", "Requests in flight", ("format", "provider"), registry=reg, **gauge_kw
        )
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
        self.overhead = Histogram(
            "proxy_gateway_overhead_seconds", "Time spent in the extproc service per request, provider excluded",
            ("format", "provider"), buckets=_FAST_BUCKETS, registry=reg,
        )  # fmt: skip
        self._cache: dict[tuple[str, str, str], _Series] = {}
        if self.multiproc:
            from prometheus_client import multiprocess

            self.registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)

    def started(self, ex: Exchange) -> None:
        self._series(ex).active.inc()

    def _series(self, ex: Exchange) -> _Series:
        """The label children of one (format, model, provider), looked up once: ``labels()`` costs more than
        the increments themselves on the hot path."""
        key = (ex.client_name, ex.model, ex.provider.name if ex.provider else "")
        series = self._cache.get(key)
        if series is None:
            series = self._cache[key] = _Series(self, *key)
        return series

    def done(self, ex: Exchange, duration: float) -> None:
        s = self._series(ex)
        if ex.active:
            s.active.dec()
        status = ex.status or 0
        counter = s.requests.get(status)
        if counter is None:
            counter = s.requests[status] = self.requests.labels(*s.key, str(status))
        counter.inc()
        s.duration.observe(duration)
        s.overhead.observe(ex.overhead)
        if ex.error_type:
            self.errors.labels(*s.key, ex.error_type).inc()
        u = ex.usage
        if u is not None:
            if u.input_tokens:
                s.tokens_in.inc(u.input_tokens)
            if u.output_tokens:
                s.tokens_out.inc(u.output_tokens)
            if u.cached_tokens:
                s.tokens_cached.inc(u.cached_tokens)
            if u.reasoning_tokens:
                s.tokens_reasoning.inc(u.reasoning_tokens)
        if ex.ttft is not None:
            s.ttft.observe(ex.ttft)
            if u is not None and u.output_tokens > 1:
                s.tpot.observe(max(duration - ex.ttft, 0.0) / (u.output_tokens - 1))

    def render(self) -> tuple[str, bytes]:
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class _Series:
    """Pre-resolved label children for one (format, model, provider)."""

    __slots__ = (
        "active", "duration", "key", "overhead", "requests", "tokens_cached", "tokens_in", "tokens_out",
        "tokens_reasoning", "tpot", "ttft",
    )  # fmt: skip

    def __init__(self, m: Metrics, fmt: str, model: str, provider: str) -> None:
        self.key = (fmt, model, provider)
        self.requests: dict[int, Any] = {}
        self.active = m.active.labels(fmt, provider)
        self.duration = m.duration.labels(fmt, model, provider)
        self.overhead = m.overhead.labels(fmt, provider)
        self.ttft = m.ttft.labels(fmt, model, provider)
        self.tpot = m.tpot.labels(fmt, model, provider)
        self.tokens_in = m.tokens.labels(model, provider, "input")
        self.tokens_out = m.tokens.labels(model, provider, "output")
        self.tokens_cached = m.tokens.labels(model, provider, "cached")
        self.tokens_reasoning = m.tokens.labels(model, provider, "reasoning")
