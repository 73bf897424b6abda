"""The ext_proc transport under real Envoy: big bodies (frames split, flow control), many streams at once, and the
grpc.aio fallback (``AI_GATEWAY_GRPC=grpcio``) serving the same exchanges."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import MODELS, ROOT, Gateway, free_port, gateway_config, start_gateway, stop_gateway
from tests.e2e.sdk import ask, stream

PAIRS = [("openai", "anthropic"), ("anthropic", "gemini"), ("gemini", "openai")]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_multi_megabyte_bodies_both_ways(gateway: Gateway, client: str, provider: str) -> None:
    """A 3 MB prompt goes up translated and comes back echoed: many HTTP/2 frames and window updates each way."""
    text = "".join(f"{i:07d} " for i in range(375_000))  # 3 MB, every piece distinct
    a = ask(client, gateway.url, MODELS[provider], text)
    assert a.text.endswith(text[-4000:])
    assert len(a.text) >= len(text)


def test_many_requests_at_once(gateway: Gateway) -> None:
    """96 requests in flight from 32 threads across all pairs and streaming: one HTTP/2 connection per Envoy worker
    carries many ext_proc streams interleaved; every answer is the right one."""

    def one(i: int) -> str:
        client, provider = PAIRS[i % 3]
        if i % 2:
            return stream(client, gateway.url, MODELS[provider], f"stream number {i}").text
        return ask(client, gateway.url, MODELS[provider], f"request number {i}").text

    with ThreadPoolExecutor(32) as pool:
        texts = list(pool.map(one, range(96)))
    for i, t in enumerate(texts):
        assert f"number {i}" in t, (i, t)


@pytest.fixture(scope="module")
def grpcio_gateway(mocks: dict) -> Gateway:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="ai-gateway-grpcio-") as tmp:
        gw = start_gateway(
            Path(tmp), mocks, gateway_config(free_port()), workers=1, extra_env={"AI_GATEWAY_GRPC": "grpcio"}
        )
        yield gw
        stop_gateway(gw)


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_grpcio_fallback_serves_the_same(grpcio_gateway: Gateway, client: str, provider: str) -> None:
    a = ask(client, grpcio_gateway.url, MODELS[provider], "hello over grpc.aio")
    assert "hello over grpc.aio" in a.text
    s = stream(client, grpcio_gateway.url, MODELS[provider], "streamed over grpc.aio")
    assert "streamed over grpc.aio" in s.text
    assert "(grpcio," in grpcio_gateway.log_text()


def test_default_transport_is_wire(gateway: Gateway) -> None:
    assert "(wire," in gateway.log_text()


def test_unknown_transport_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(gateway_config(free_port()))
    env = {**os.environ, "AI_GATEWAY_GRPC": "carrier-pigeon", "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}
    env["GEMINI_API_KEY"] = "k"
    cmd = [sys.executable, "-m", "extproc", "extproc", "--config", str(cfg), "--env-file", str(tmp_path / "none")]
    cmd += ["--extproc-listen", f"127.0.0.1:{free_port()}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "AI_GATEWAY_GRPC=carrier-pigeon" in r.stderr + r.stdout
