"""A test OTLP/gRPC receiver: the ``opentelemetry-proto`` trace and metrics services in the test process.

Envoy's OpenTelemetry tracer and the service's SDK exporter both send to it, exactly as to a real collector; the tests
read what arrived (``spans``, ``metrics``) and poll with a deadline (``wait_for``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T = TypeVar("T")


def value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass
class ReceivedSpan:
    service: str  # the resource's service.name
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attrs(self) -> dict[str, Any]:
        return {kv.key: value(kv.value) for kv in self.span.attributes}


@dataclass
class ReceivedMetric:
    service: str
    metric: Metric


class OtlpReceiver:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []
        self.metrics: list[ReceivedMetric] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                got = []
                for rs in request.resource_spans:
                    service = _service(rs.resource.attributes)
                    got += [ReceivedSpan(service, s) for ss in rs.scope_spans for s in ss.spans]
                with receiver.lock:
                    receiver.spans += got
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                got = []
                for rm in request.resource_metrics:
                    service = _service(rm.resource.attributes)
                    got += [ReceivedMetric(service, m) for sm in rm.scope_metrics for m in sm.metrics]
                with receiver.lock:
                    receiver.metrics += got
                return metrics_service_pb2.ExportMetricsServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(0)

    def wait_for(self, find: Callable[[OtlpReceiver], T | None], timeout: float = 30.0) -> T:
        """Poll until ``find`` returns something (Envoy flushes its spans every 5 s)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = find(self)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"the OTLP receiver did not get it in {timeout} s")
            time.sleep(0.1)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


def _service(attributes: Any) -> str:
    for kv in attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""
