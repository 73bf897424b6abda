"""An OTLP/gRPC sink for ``run.py --tracing``: takes traces and metrics, counts spans, keeps nothing.

    python benchmarks/otlp_sink.py --port PORT

On SIGTERM it prints one line, ``otlp-sink: N spans in M exports (K metric exports)``, which run.py reports.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    if not hasattr(trace_pb2, "ScopeSpans"):  # xds-protos's OTLP 0.x copy won the install (docs/tracing.md)
        sys.exit(
            "otlp-sink: opentelemetry.proto is xds-protos's old copy; repair the install: pip install --no-deps "
            "--force-reinstall \"$(pip freeze | grep '^opentelemetry-proto==')\""
        )
    lock = threading.Lock()
    counts = {"spans": 0, "exports": 0, "metric_exports": 0}

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with lock:
                counts["spans"] += n
                counts["exports"] += 1
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            with lock:
                counts["metric_exports"] += 1
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(0)
    with lock:
        print(f"otlp-sink: {counts['spans']} spans in {counts['exports']} exports "
              f"({counts['metric_exports']} metric exports)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
