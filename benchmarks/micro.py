"""In-process cost of one exchange without gRPC: ``python benchmarks/micro.py [-n 5000]``.

Drives ``servicer.ProcessCall`` (protobuf parse + Exchange + translation + protobuf answers) with the serialized
ext_proc messages Envoy sends for one request, with and without the per-request metrics and log line (stdout to
/dev/null, Prometheus in multiprocess mode as the launcher runs it). Whatever the end-to-end service CPU per request
exceeds this by is the transport (``grpc_wire``: HTTP/2 frames, syscalls) and the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import envoys
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BODIES = Path(__file__).resolve().parent / "bodies"


def build_cases(pb, hv, hm):
    def headers(pairs: list[tuple[str, str]], eos: bool = False):
        header_map = hm(headers=[hv(key=k, raw_value=v.encode()) for k, v in pairs])
        return pb.HttpHeaders(headers=header_map, end_of_stream=eos)

    def req(path: str, body: bytes, resp: bytes | None) -> list:
        request_headers = [
            (":method", "POST"), (":path", path), (":authority", "gw"), ("content-type", "application/json"),
            ("content-length", str(len(body))), ("x-request-id", "bench-1"),
        ]  # fmt: skip
        msgs = [
            pb.ProcessingRequest(request_headers=headers(request_headers)),
            pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)),
            pb.ProcessingRequest(response_headers=headers([(":status", "200"), ("content-type", "application/json")])),
        ]
        if resp is not None:
            msgs.append(pb.ProcessingRequest(response_body=pb.HttpBody(body=resp, end_of_stream=True)))
        return msgs

    dumps = orjson.dumps
    return {
        "OpenAI->OpenAI (pass-through, 3 msgs)": req(
            "/openai/v1/chat/completions", (BODIES / "openai-gpt.json").read_bytes(), None
        ),
        "OpenAI->Anthropic (4 msgs)": req(
            "/openai/v1/chat/completions",
            (BODIES / "openai-claude.json").read_bytes(),
            dumps(envoys.ANTHROPIC_RESPONSE),
        ),
        "Responses->Anthropic (4 msgs, store: false)": req(
            "/openai/v1/responses",
            (BODIES / "responses-claude.json").read_bytes(),
            dumps(envoys.ANTHROPIC_RESPONSE),
        ),
        "Anthropic->Gemini (4 msgs)": req(
            "/anthropic/v1/messages", (BODIES / "anthropic-gemini.json").read_bytes(), dumps(envoys.GEMINI_RESPONSE)
        ),
    }


def drive(proc, msgs: list, n: int, tracer=None) -> float:
    """CPU seconds per exchange: each message parsed from bytes, answered, serialized, as ``grpc_wire`` does. Run in
    an event loop, as in the worker, so metrics accumulate in-process and are flushed once at the end. With a
    ``tracer``, each stream has Envoy's traceparent and the spans are exported before the clock stops."""
    return asyncio.run(_drive(proc, msgs, n, tracer))


async def _drive(proc, msgs: list, n: int, tracer=None) -> float:
    from extproc.transport.servicer import PROCESS_PATH

    raw = [m.SerializeToString() for m in msgs]
    parents = [{"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"} for _ in range(n)]
    t0 = time.process_time()
    for i in range(n):
        call = proc(PROCESS_PATH, parents[i]) if tracer is not None else proc(PROCESS_PATH)
        for data in raw:
            call.message(data)
        call.end()
        if tracer is not None and i % 64 == 63:
            await asyncio.sleep(0)  # the deferred span making runs, as between the worker's reads
            if i % 512 == 511:
                tracer.processor.force_flush()  # the batch thread's work (here: no span dropped for a full queue)
    if tracer is not None:
        await asyncio.sleep(0)
        tracer.processor.force_flush()
    return (time.process_time() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument(
        "--no-capabilities", action="store_true", help="switch the capability catalog off (requests go unshaped)"
    )
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="also: the same exchanges traced (the service's span, encoded but not sent, and the GenAI metric "
        "points), and the HPACK decoding of Envoy's header blocks with a traceparent (docs/tracing.md)",
    )
    args = ap.parse_args()
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-prom-"))
    for k, v in {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"}.items():
        os.environ.setdefault(k, v)
    from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    from extproc.core.config import load_config
    from extproc.core.exchange import Gateway
    from extproc.observability.metrics import Metrics
    from extproc.transport.server import make_recorder
    from extproc.transport.servicer import ExtProc

    cfg_text = (Path(__file__).resolve().parent / "bench-config.yaml").read_text().replace("${SSE_PORT}", "9")
    if args.no_capabilities:
        cfg_text += "capabilities: {enabled: false}\n"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cfg_text)
    gw = Gateway(load_config(f.name))
    metrics = Metrics()
    full = ExtProc(gw, make_recorder(metrics), metrics)
    bare = ExtProc(gw, None, None)
    cases = build_cases(pb, HeaderValue, HeaderMap)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    for name, msgs in cases.items():
        with contextlib.redirect_stdout(devnull):
            drive(full, msgs, 200)  # warm-up
            with_obs = drive(full, msgs, args.n)
            without = drive(bare, msgs, args.n)
        print(f"{name:<40} {with_obs * 1e6:7.1f} us/request with metrics+log, {without * 1e6:7.1f} us without")
    if args.tracing:
        tracing(gw, metrics, cases, args.n, devnull)
    return 0


def tracing(gw, metrics, cases: dict, n: int, devnull) -> None:
    """What tracing adds in the service, per request: the exchange with its span made and encoded (the batch
    processor's thread included: process CPU time, flushed at the end), and a stream's header block decoded."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from extproc.core.telemetry import TelemetrySettings
    from extproc.observability import otlp
    from extproc.observability.tracing import SCOPE, Tracer
    from extproc.transport.server import make_recorder
    from extproc.transport.servicer import ExtProc

    class Encode(SpanExporter):  # the exporter's work but the gRPC call
        def __init__(self) -> None:
            self.encoder = otlp.SpanEncoder({"service.name": "bench"}, SCOPE)

        def export(self, spans):
            self.encoder.request(spans)
            return SpanExportResult.SUCCESS

    settings = TelemetrySettings(endpoint="http://127.0.0.1:9", host="127.0.0.1", port=9, tls=False)
    tracer = Tracer(settings, span_exporter=Encode(), export_metrics=False)
    traced = ExtProc(gw, make_recorder(metrics), metrics, None, tracer)
    plain = ExtProc(gw, make_recorder(metrics), metrics)
    for name, msgs in cases.items():
        with contextlib.redirect_stdout(devnull):
            drive(traced, msgs, 200, tracer)
            rounds = [(drive(traced, msgs, n // 5, tracer), drive(plain, msgs, n // 5)) for _ in range(5)]
            on, off = min(r[0] for r in rounds), min(r[1] for r in rounds)  # interleaved, the least disturbed
        print(f"{name:<40} traced {on * 1e6:7.1f} us/request, {off * 1e6:7.1f} us not: +{(on - off) * 1e6:.1f}")
    tracer.shutdown()
    for label, per_block in header_blocks(n).items():
        print(f"{'header block: ' + label:<60} {per_block * 1e6:7.1f} us")


def header_blocks(n: int) -> dict[str, float]:
    """CPU per ext_proc stream's header block as Envoy sends it with tracing: ``grpc_wire`` with tracing (Envoy was
    told table size 0, so the blocks differ only in the traceparent) against the same decoder with Envoy's default
    table (every block indexes a new traceparent) and against the block without tracing (remembered)."""
    import hpack

    from extproc.transport import grpc_wire

    fields = [
        (":method", "POST"), (":scheme", "http"), (":path", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
        (":authority", "extproc"), ("te", "trailers"), ("content-type", "application/grpc"),
        ("x-envoy-internal", "true"), ("x-forwarded-for", "127.0.0.1"),
    ]  # fmt: skip

    def blocks(table: int, traced: bool) -> list[bytes]:
        enc = hpack.Encoder()
        enc.header_table_size = table
        out = []
        for _ in range(n):
            tp = [("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"), ("tracestate", "")]
            out.append(enc.encode(fields + tp if traced else fields, huffman=True))
        return out

    def per_block(server: grpc_wire.Server, data: list[bytes]) -> float:
        conn = grpc_wire.Connection(server)
        t0 = time.process_time()
        for block in data:
            conn._path(block)
        return (time.process_time() - t0) / len(data)

    traced = grpc_wire.Server(lambda path, meta: None, metadata=("traceparent",))
    plain = grpc_wire.Server(lambda path: None)
    return {
        "traced, table size 0 (grpc_wire's SETTINGS)": per_block(traced, blocks(0, True)),
        "traced, Envoy's default table (4096)": per_block(traced, blocks(4096, True)),
        "not traced (remembered)": per_block(plain, blocks(4096, False)),
    }


if __name__ == "__main__":
    raise SystemExit(main())
