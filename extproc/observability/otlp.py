"""OTLP/gRPC export for ``tracing``: spans encoded by hand, GenAI histograms kept in plain Python.

Why not the SDK's own exporter and meter (measured, ``docs/tracing.md``): the OTLP exporter's encoder builds a
protobuf message per attribute and value, ~74 us per span of ours on the benchmark machine, and each SDK histogram
``record`` costs ~20 us (attribute hashing, views, locks), five per streamed request. The service's whole work on a
translated request is ~130 us, so those two alone would have halved the gateway's throughput at 100 % sampling.

- ``SpanEncoder`` writes the OTLP protobuf wire format of the SDK's ``ReadableSpan`` directly (a few ``bytes``
  joins per attribute); ``GrpcSpanExporter`` is an SDK ``SpanExporter`` that sends those bytes with one unary gRPC
  call per batch: the SDK's ``BatchSpanProcessor`` still batches and calls it from its own thread. The encoding is
  checked against the SDK's own encoder, both parsed with the ``opentelemetry-proto`` messages.
- ``Histograms`` accumulates the GenAI metrics per attribute set (counts per bucket, sum, min, max: a dict lookup
  and a ``bisect``), and a daemon thread exports them every ``OTEL_METRIC_EXPORT_INTERVAL`` ms (60 s by default) as
  cumulative OTLP histograms, encoded here too.

Nothing here imports ``opentelemetry.proto``: ``xds-protos`` ships an old copy of those modules (OTLP 0.x) that may
overwrite ``opentelemetry-proto``'s in an install (``docs/tracing.md``), and the wire format does not depend on it.
The field numbers are those of opentelemetry-proto 1.x (``opentelemetry/proto/**/v1/*.proto``).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("extproc")

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
_D = struct.Struct("<d")
_Q = struct.Struct("<Q")


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_V = tuple(_varint(n) for n in range(16384))  # the varints of lengths up to 16 KiB, looked up


def _len(tag: bytes, data: bytes) -> bytes:
    n = len(data)
    return tag + (_V[n] if n < 16384 else _varint(n)) + data


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """KeyValue.key (field 1), cached: the attribute names repeat on every span."""
    k = _KEYS.get(key)
    if k is None:
        if len(_KEYS) > 4096:
            _KEYS.clear()
        k = _KEYS[key] = _len(b"\x0a", key.encode())
    return k


def _any(v: Any) -> bytes:
    """An AnyValue: string 1, bool 2, int 3, double 4, array 5."""
    if isinstance(v, str):
        return _len(b"\x0a", v.encode("utf-8", "surrogatepass"))
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, float):
        return b"\x21" + _D.pack(v)
    if isinstance(v, list | tuple):
        return _len(b"\x2a", b"".join(_len(b"\x0a", _any(x)) for x in v))
    return _len(b"\x0a", str(v).encode())


_TRUE, _FALSE = b"\x12\x02\x10\x01", b"\x12\x02\x10\x00"  # KeyValue.value: AnyValue{bool_value}


def attributes(attrs: Any) -> bytes:
    """A span's attributes: repeated KeyValue, field 9. Strings (most of them), booleans, small non-negative
    integers and floats take short paths (lengths looked up); the rest goes through ``_any``."""
    out: list[bytes] = []
    append = out.append
    for k, v in attrs.items():
        key = _KEYS.get(k) or _key(k)
        t = type(v)
        if t is str:
            b = v.encode("utf-8", "surrogatepass")
            n = len(b)
            if n >= 16000:
                append(_len(b"\x4a", key + _len(b"\x12", _any(v))))
                continue
            kv = key + b"\x12" + _V[n + 1 + len(_V[n])] + b"\x0a" + _V[n] + b  # AnyValue{string_value}
        elif t is bool:
            kv = key + (_TRUE if v else _FALSE)
        elif t is int and 0 <= v < 16384:
            a = _V[v]  # AnyValue{int_value}: 1 or 2 bytes of varint
            kv = key + b"\x12" + _V[len(a) + 1] + b"\x18" + a
        elif t is float:
            kv = key + b"\x12\x09\x21" + _D.pack(v)  # AnyValue{double_value}
        else:
            append(_len(b"\x4a", key + _len(b"\x12", _any(v))))
            continue
        append(b"\x4a" + _V[len(kv)] + kv)
    return b"".join(out)


def _resource(resource: dict[str, Any]) -> bytes:
    """A Resource: its attributes, repeated KeyValue, field 1."""
    return b"".join(_len(b"\x0a", _key(k) + _len(b"\x12", _any(v))) for k, v in resource.items())


def _scope(name: str) -> bytes:
    """An InstrumentationScope with its name (field 1)."""
    return _len(b"\x0a", name.encode())


class SpanEncoder:
    """ReadableSpans to an ``ExportTraceServiceRequest`` (one resource, one scope)."""

    def __init__(self, resource: dict[str, Any], scope: str) -> None:
        self.resource = _len(b"\x0a", _resource(resource))  # ResourceSpans.resource
        self.scope = _len(b"\x0a", _scope(scope))  # ScopeSpans.scope

    def span(self, s: Any) -> bytes:
        ctx = s.context
        parts = [
            b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"),
            b"\x12\x08", ctx.span_id.to_bytes(8, "big"),
        ]  # fmt: skip
        if s.parent is not None:
            parts += [b"\x22\x08", s.parent.span_id.to_bytes(8, "big")]
        parts += [
            _len(b"\x2a", s.name.encode()),
            b"\x30", _varint(s.kind.value + 1),  # the SDK's SpanKind counts from INTERNAL = 0, OTLP's from 1
            b"\x39", _Q.pack(s.start_time),
            b"\x41", _Q.pack(s.end_time),
        ]  # fmt: skip
        if s.attributes:
            parts.append(attributes(s.attributes))
        code = s.status.status_code.value
        if code:
            parts.append(_len(b"\x7a", b"\x18" + _varint(code)))  # Status.code (field 3)
        return b"".join(parts)

    def request(self, spans: Sequence[Any]) -> bytes:
        body = b"".join(_len(b"\x12", self.span(s)) for s in spans)  # ScopeSpans.spans
        scope_spans = _len(b"\x12", self.scope + body)  # ResourceSpans.scope_spans
        return _len(b"\x0a", self.resource + scope_spans)  # ExportTraceServiceRequest.resource_spans


class _Channel:
    """A gRPC channel to the collector (or Envoy's relay socket) for raw-bytes unary calls."""

    def __init__(self, target: str, tls: bool) -> None:
        import grpc

        if tls:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self.channel = grpc.insecure_channel(target)
        self.error = grpc.RpcError
        self.last_warning = -60.0
        self.failures = 0

    def call(self, method: str, payload: bytes, timeout: float = 10.0) -> bool:
        try:
            call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            call(payload, timeout=timeout)  # bytes in, bytes out: no (de)serialiser
            return True
        except self.error as exc:  # the collector is away: a warning a minute at most, the batch is dropped
            self.failures += 1
            now = time.monotonic()
            if now - self.last_warning >= 60:
                code = exc.code() if hasattr(exc, "code") else exc
                log.warning("OTLP export %s failed (%s; %d failures so far)", method, code, self.failures)
                self.last_warning = now
            return False

    def close(self) -> None:
        self.channel.close()


def span_exporter(target: str, tls: bool, resource: dict[str, Any], scope: str) -> Any:
    """An SDK ``SpanExporter`` over ``_Channel`` with ``SpanEncoder`` (made here: the SDK is imported lazily)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class GrpcSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self.encoder = SpanEncoder(resource, scope)
            self.channel = _Channel(target, tls)

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            ok = self.channel.call(TRACE_EXPORT, self.encoder.request(spans))
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

        def shutdown(self) -> None:
            self.channel.close()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return GrpcSpanExporter()


# ------------------------------------------------------------------------------------------------ metrics
class Histogram:
    __slots__ = ("bounds", "description", "name", "series", "unit")

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float]) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, tuple(bounds)
        # attribute pairs -> [bucket counts..., count, sum, min, max]
        self.series: dict[tuple[tuple[str, str], ...], list[Any]] = {}

    def record(self, value: float, attrs: tuple[tuple[str, str], ...]) -> None:
        s = self.series.get(attrs)
        n = len(self.bounds)
        if s is None:
            s = self.series[attrs] = [0] * (n + 1) + [0, 0.0, value, value]
        s[bisect_left(self.bounds, value)] += 1  # bucket i holds (bounds[i-1], bounds[i]]
        s[n + 1] += 1
        s[n + 2] += value
        if value < s[n + 3]:
            s[n + 3] = value
        if value > s[n + 4]:
            s[n + 4] = value


class Histograms:
    """The GenAI semantic-convention histograms, cumulative since ``start``, exported by ``MetricsThread``."""

    def __init__(self, resource: dict[str, Any], scope: str, instruments: Sequence[Histogram]) -> None:
        self.resource, self.scope = resource, scope
        self.by_name = {h.name: h for h in instruments}
        self.start = time.time_ns()
        self.lock = threading.Lock()

    def record(self, name: str, value: float, attrs: tuple[tuple[str, str], ...]) -> None:
        with self.lock:
            self.by_name[name].record(value, attrs)

    def request(self) -> bytes | None:
        """An ``ExportMetricsServiceRequest`` of every series, as bytes (None while there is none): one resource,
        one scope, a cumulative ``Histogram`` per instrument with a ``HistogramDataPoint`` per attribute set."""
        now = time.time_ns()
        with self.lock:
            snapshot = [(h, [(k, list(v)) for k, v in h.series.items()]) for h in self.by_name.values()]
        times = b"\x11" + _Q.pack(self.start) + b"\x19" + _Q.pack(now)  # start_time_unix_nano 2, time_unix_nano 3
        metrics = []
        for h, series in snapshot:
            if not series:
                continue
            n = len(h.bounds)
            bounds = _len(b"\x3a", struct.pack(f"<{n}d", *h.bounds))  # explicit_bounds 7, packed doubles
            points = []
            for attrs, s in series:
                point = b"".join((
                    times,
                    b"\x21", _Q.pack(s[n + 1]),  # count 4 (fixed64)
                    b"\x29", _D.pack(s[n + 2]),  # sum 5
                    _len(b"\x32", struct.pack(f"<{n + 1}Q", *s[: n + 1])),  # bucket_counts 6, packed fixed64
                    bounds,
                    attributes(dict(attrs)),  # attributes 9
                    b"\x59", _D.pack(s[n + 3]),  # min 11
                    b"\x61", _D.pack(s[n + 4]),  # max 12
                ))  # fmt: skip
                points.append(_len(b"\x0a", point))  # Histogram.data_points 1
            histogram = b"".join(points) + b"\x10\x02"  # aggregation_temporality 2: CUMULATIVE (2)
            metric = _len(b"\x0a", h.name.encode()) + _len(b"\x1a", h.unit.encode())  # name 1, unit 3
            if h.description:
                metric += _len(b"\x12", h.description.encode())  # description 2
            metrics.append(_len(b"\x12", metric + _len(b"\x4a", histogram)))  # ScopeMetrics.metrics 2, histogram 9
        if not metrics:
            return None
        scope_metrics = _len(b"\x12", _len(b"\x0a", _scope(self.scope)) + b"".join(metrics))  # scope 1
        return _len(b"\x0a", _len(b"\x0a", _resource(self.resource)) + scope_metrics)  # resource_metrics 1 (resource 1)


class MetricsThread:
    """Exports ``Histograms`` every ``interval`` seconds from a daemon thread, and once more at ``stop``."""

    def __init__(self, histograms: Histograms, target: str, tls: bool, interval: float | None = None) -> None:
        if interval is None:
            interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 60000) / 1000
        self.histograms, self.interval = histograms, max(0.05, interval)
        self.channel = _Channel(target, tls)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="otlp-metrics", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.export()

    def export(self) -> None:
        payload = self.histograms.request()
        if payload is not None:
            self.channel.call(METRICS_EXPORT, payload)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.export()
        self.channel.close()
