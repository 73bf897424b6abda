"""The ext_proc transport under real Envoy: big bodies (frames split, flow control), many streams at once, and the
grpc.aio fallback (``AI_GATEWAY_GRPC=grpcio``) serving the same exchanges."""

from __future__ import annotations

import json
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


# ------------------------------------------------------------------- Envoys configured differently from ours
def _hpack_table_0(boot: dict) -> None:  # type: ignore[type-arg]
    (cluster,) = [c for c in boot["static_resources"]["clusters"] if c["name"] == "extproc"]
    opts = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["explicit_http_config"]["http2_protocol_options"]["hpack_table_size"] = 0


def _oghttp2(boot: dict) -> None:  # type: ignore[type-arg]
    layer = {"envoy.reloadable_features.http2_use_oghttp2": True}
    boot["layered_runtime"] = {"layers": [{"name": "static", "static_layer": layer}]}


def _google_grpc(boot: dict, target: str) -> None:  # type: ignore[type-arg]
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (ext_proc,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc"]
    ext_proc["typed_config"]["grpc_service"] = {"google_grpc": {"target_uri": target, "stat_prefix": "extproc"}}


@pytest.mark.parametrize("variant", ["hpack_table_size_0", "oghttp2", "google_grpc"])
def test_envoys_configured_differently_still_talk_to_the_service(mocks: dict, tmp_path: Path, variant: str) -> None:  # type: ignore[type-arg]
    """A mesh's Envoy may not use our cluster settings: with the peer's HPACK table at 0 (our header blocks must open
    with a size update), with the oghttp2 codec, and with Envoy's C-core gRPC client, requests still go through."""
    from extproc.core.address import Address
    from extproc.core.config import load_config
    from extproc.ops.credentials import prepare
    from extproc.ops.envoy_config import render
    from tests.conftest import KEYS
    from tests.unit.test_deploy import envoy_bin, http_status, running, wait_for

    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    for kind in ("openai", "anthropic", "gemini"):
        env[f"{kind.upper()}_API_KEY"] = KEYS[kind]
        env[f"{kind.upper()}_BASE_URL"] = mocks[kind].base_url
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(gateway_config(free_port()))
    grpc_addr = Address(host="127.0.0.1", port=free_port())
    listen, admin = Address(host="127.0.0.1", port=free_port()), Address(host="127.0.0.1", port=free_port())
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        cfg = load_config(str(cfg_path))
        files, _ = prepare(tmp_path / "credentials", cfg, env)
        boot = render(cfg, listen=listen, admin=admin, extproc=[grpc_addr], credentials=files)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if variant == "hpack_table_size_0":
        _hpack_table_0(boot)
    elif variant == "oghttp2":
        _oghttp2(boot)
    else:
        _google_grpc(boot, str(grpc_addr))
    (tmp_path / "envoy.json").write_text(json.dumps(boot))
    service = [sys.executable, "-m", "extproc", "extproc", "--config", str(cfg_path), "--env-file", os.devnull]
    service += ["--extproc-listen", str(grpc_addr)]
    logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
    envoy_cmd = [envoy_bin(), "-c", str(tmp_path / "envoy.json"), "--use-dynamic-base-id", "--log-level", "warning"]
    with running(service, logs[0], env) as svc, running(envoy_cmd, logs[1], env) as envoy:
        url = f"http://{listen}"
        wait_for("gateway", lambda: http_status(url + "/health") == 200, [svc, envoy], logs)
        for client, provider in PAIRS:
            assert f"{variant} {client}" in ask(client, url, MODELS[provider], f"via {variant} {client}").text
        assert f"{variant} stream" in stream("openai", url, MODELS["anthropic"], f"{variant} stream").text
