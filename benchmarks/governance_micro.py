"""The service's own CPU per request with governance, in one process, without Envoy: plain, ``store: memory`` and
``store: redis`` (a real ``redis-server`` on a free port), ``--concurrency`` exchanges at a time, OpenAI client ->
Anthropic.

    python benchmarks/governance_micro.py [--requests 6400] [--repeat 3] [--concurrency 32]

Each exchange is the four ext_proc messages Envoy sends (request headers with a gateway key, request body, response
headers, response body with usage) through ``ExtProc`` and ``ProcessCall`` as ``grpc_wire`` drives them (a deferred
answer awaited); the governed configs check three counters (requests and tokens per key, a budget per key and model)
and charge them. Prints the best of ``--repeat`` runs in us of CPU (``time.process_time``) per exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extproc.core.config import build_config
from extproc.core.exchange import Gateway
from extproc.transport.governor import Governor
from extproc.transport.servicer import ExtProc, ProcessCall

BASE = {
    "version": "1",
    "models": [{"name": "claude-bench", "provider": "anthropic"}],
    "auth": {"api_keys": [{"name": "bench", "key_env": "BENCH_KEY"}]},
}
GOVERNANCE = {
    "prices": {"*": {"input": 3, "output": 15}},
    "redis": {"timeout": "50ms"},
    "limits": [
        {"key": "*", "requests_per_minute": 10**9, "total_tokens_per_minute": 10**12},
        {"key": "*", "model": "*", "budget": {"usd": 10**9, "period": "month"}},
    ],
}


def messages() -> list[bytes]:
    out = []
    head = pb.ProcessingRequest()
    for k, v in ((":method", "POST"), (":path", "/openai/v1/chat/completions"), ("content-length", "60"),
                 ("authorization", "Bearer sk-bench")):  # fmt: skip
        head.request_headers.headers.headers.add(key=k, raw_value=v.encode())
    body = pb.ProcessingRequest()
    body.request_body.body = orjson.dumps({"model": "claude-bench", "messages": [{"role": "user", "content": "hi"}]})
    body.request_body.end_of_stream = True
    rh = pb.ProcessingRequest()
    for k, v in ((":status", "200"), ("content-type", "application/json")):
        rh.response_headers.headers.headers.add(key=k, raw_value=v.encode())
    rb = pb.ProcessingRequest()
    rb.response_body.body = orjson.dumps(
        {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
         "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 11, "output_tokens": 7}}
    )  # fmt: skip
    rb.response_body.end_of_stream = True
    for m in (head, body, rh, rb):
        out.append(m.SerializeToString())
    return out


async def measure(store: str | None, env: dict[str, str], n: int, repeat: int, concurrency: int) -> float:
    data = dict(BASE)
    if store is not None:
        data["governance"] = {**GOVERNANCE, "store": store}
    cfg = build_config(data, "micro", env)
    governor = Governor(cfg.governance, env) if store is not None else None
    proc = ExtProc(Gateway(cfg), governor=governor)
    msgs = messages()

    async def one() -> None:
        call = ProcessCall(proc)
        for m in msgs:
            answer = call.message(m)
            if not isinstance(answer, bytes):
                answer = await answer
        call.end()

    for _ in range(200):
        await one()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n // concurrency):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        best = min(best, (time.process_time() - t0) / (n // concurrency * concurrency) * 1e6)
    if governor is not None:
        await governor.close()
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server is not installed (apt-get install redis-server)")
        return 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="governance-micro-")
    redis = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", tmp], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        env = {"BENCH_KEY": "sk-bench", "AI_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        for store in (None, "memory", "redis"):
            us = asyncio.run(measure(store, env, args.requests, args.repeat, args.concurrency))
            print(f"{store or 'no governance':>14}: {us:6.1f} us of CPU per exchange")
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
