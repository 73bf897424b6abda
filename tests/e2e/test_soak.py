"""Soak: a bounded mixed load (all formats, streaming and not, concurrency 64) for AI_GATEWAY_SOAK_SECONDS (default
60): zero unexpected errors, and the workers' memory flat after warm-up. Prints request count and RSS."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS, free_port, gateway_config, start_gateway, stop_gateway

SECONDS = float(os.environ.get("AI_GATEWAY_SOAK_SECONDS", "60"))
CONCURRENCY = 64
MAX_GROWTH_MB = 15.0


def _rss_mb(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out.append(int(line.split()[1]) / 1024)
    return out


def _request(client: str, provider: str, stream: bool, i: int) -> tuple[str, dict]:
    model = MODELS[provider]
    text = f"soak {i}"
    if client == "openai":
        return "/openai/v1/chat/completions", {"model": model, "stream": stream,
                                               "messages": [{"role": "user", "content": text}]}  # fmt: skip
    if client == "anthropic":
        return "/anthropic/v1/messages", {"model": model, "stream": stream, "max_tokens": 50,
                                          "messages": [{"role": "user", "content": text}]}  # fmt: skip
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/gemini/v1beta/models/{model}:{action}", {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def _check(client: str, stream: bool, body: bytes, i: int) -> bool:
    want = f"soak {i}".encode()
    if want not in body and want not in _joined_text(body):
        return False
    if not stream:
        return True
    end = {"openai": b"[DONE]", "anthropic": b"message_stop", "gemini": b"finishReason"}[client]
    return end in body


def _joined_text(body: bytes) -> bytes:
    """Concatenated text deltas of a stream (the answer is split across events)."""
    out = []
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        try:
            obj = json.loads(line[5:])
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if "choices" in obj:
            out += [ch.get("delta", {}).get("content") or "" for ch in obj["choices"]]
        elif obj.get("type") == "content_block_delta":
            out.append(obj["delta"].get("text", ""))
        elif "candidates" in obj:
            for cand in obj["candidates"]:
                out += [p.get("text", "") for p in cand.get("content", {}).get("parts", [])]
    return "".join(out).encode()


@pytest.mark.skipif(SECONDS <= 0, reason="AI_GATEWAY_SOAK_SECONDS=0")
def test_soak_mixed_load(mocks: dict, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=2)
        try:
            out = subprocess.run(["pgrep", "-f", f"extproc extproc --config {gw.config_path}"], capture_output=True,
                                 text=True).stdout.split()  # fmt: skip
            pids = [int(p) for p in out]
            combos = list(itertools.product(("openai", "anthropic", "gemini"), ("openai", "anthropic", "gemini"),
                                            (False, True)))  # fmt: skip
            stats = {"ok": 0, "bad": []}
            counter = itertools.count()

            async def worker(deadline: float) -> None:
                async with httpx.AsyncClient(base_url=gw.url, timeout=30) as cl:
                    while time.monotonic() < deadline:
                        i = next(counter)
                        client, provider, stream = combos[i % len(combos)]
                        path, body = _request(client, provider, stream, i)
                        r = await cl.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
                        if r.status_code == 200 and _check(client, stream, r.content, i):
                            stats["ok"] += 1
                        else:
                            stats["bad"].append((client, provider, stream, r.status_code, r.text[:200]))

            async def run(seconds: float) -> None:
                deadline = time.monotonic() + seconds
                await asyncio.gather(*(worker(deadline) for _ in range(CONCURRENCY)))

            asyncio.run(run(min(10.0, SECONDS / 6)))  # warm-up
            warm = _rss_mb(pids)
            warm_count = stats["ok"]
            started = time.monotonic()
            asyncio.run(run(SECONDS))
            elapsed = time.monotonic() - started
            end = _rss_mb(pids)
            total = stats["ok"] - warm_count
            with capsys.disabled():
                print(
                    f"\nsoak: {total} requests in {elapsed:.0f} s ({total / elapsed:.0f}/s, concurrency {CONCURRENCY},"
                    f" 18 client/provider/stream mixes), errors {len(stats['bad'])};"
                    f" worker RSS after warm-up {[round(x, 1) for x in warm]} MB,"
                    f" at end {[round(x, 1) for x in end]} MB"
                )
            assert not stats["bad"], stats["bad"][:5]
            assert total > 1000
            for before, after in zip(warm, end, strict=True):
                assert after - before <= MAX_GROWTH_MB, (warm, end)
        finally:
            stop_gateway(gw)
