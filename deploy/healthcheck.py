#!/usr/bin/env python3
"""Container health check for the extproc service: one real ext_proc exchange, ``GET /health``, as Envoy would send it.

Exit 0 when the service answers 200 (``healthy``), 1 otherwise (not listening, 503 ``draining``, anything else).
``--live`` also accepts 503: the process is alive and finishing its streams, so a liveness probe must not kill it.

    python healthcheck.py [--address unix:PATH | HOST:PORT] [--live] [--timeout SECONDS]

The image installs it as ``/usr/local/bin/ai-gateway-healthcheck``; Docker's HEALTHCHECK, docker-compose and the
Kubernetes/Istio probes call it.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc


def health_status(address: str, timeout: float) -> int:
    """The HTTP status the service answers ``GET /health`` with (0: no answer)."""
    headers = [(":method", "GET"), (":path", "/health"), (":authority", "healthcheck"), (":scheme", "http")]
    request = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(
            headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers]),
            end_of_stream=True,
        )
    )
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        try:
            for response in stub.Process(iter([request]), timeout=timeout):
                if response.HasField("immediate_response"):
                    return int(response.immediate_response.status.code)
                return 0
        except grpc.RpcError:
            return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--address",
        default="unix:/run/ai-gateway/extproc.sock",
        help="the service's gRPC address, unix:PATH or HOST:PORT (default: the image's socket, %(default)s)",
    )
    p.add_argument("--live", action="store_true", help="liveness: a draining service (503) counts as alive")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default: %(default)s)")
    args = p.parse_args(argv)
    status = health_status(args.address, args.timeout)
    ok = status == 200 or (args.live and status == 503)
    if not ok:
        print(f"extproc at {args.address}: {'no answer' if status == 0 else f'HTTP {status}'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
