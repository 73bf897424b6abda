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


def drive(proc, msgs: list, n: int) -> float:
    """CPU seconds per exchange: each message parsed from bytes, answered, serialized, as ``grpc_wire`` does. Run in
    an event loop, as in the worker, so metrics accumulate in-process and are flushed once at the end."""
    return asyncio.run(_drive(proc, msgs, n))


async def _drive(proc, msgs: list, n: int) -> float:
    from extproc.transport.servicer import PROCESS_PATH

    raw = [m.SerializeToString() for m in msgs]
    t0 = time.process_time()
    for _ in range(n):
        call = proc(PROCESS_PATH)
        for data in raw:
            call.message(data)
        call.end()
    return (time.process_time() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument(
        "--no-capabilities", action="store_true", help="switch the capability catalog off (requests go unshaped)"
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
