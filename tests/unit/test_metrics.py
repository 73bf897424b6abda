"""Batched metrics write exactly what per-request observe()/inc() would have written."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from extproc.observability.metrics import _DURATION_BUCKETS, _Hist


def test_batched_histogram_equals_observe() -> None:
    values = [0.0, 0.05, 0.051, 0.3, 2.5, 7, 600, 601, 1e9, 0.1]
    direct_reg, batched_reg = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", buckets=_DURATION_BUCKETS, registry=direct_reg)
    batched = Histogram("h", "h", buckets=_DURATION_BUCKETS, registry=batched_reg)
    acc = _Hist(_DURATION_BUCKETS)
    for v in values:
        direct.observe(v)
        acc.add(v)
    acc.write(batched)
    acc.write(batched)  # a second flush with nothing new writes nothing
    strip = lambda text: [ln for ln in text.decode().splitlines() if "_created" not in ln]  # noqa: E731
    assert strip(generate_latest(direct_reg)) == strip(generate_latest(batched_reg))
