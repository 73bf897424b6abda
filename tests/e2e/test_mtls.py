"""Envoy reaches an extproc worker over mTLS (the bootstrap from ``envoy_config.render(..., extproc_tls=...)``, the
worker started as ``ai-gateway extproc --tls-cert/--tls-key/--tls-client-ca``), on both transports; clients without a
certificate, with one from another CA, or in cleartext are refused. Certificates are made at test time (trustme)."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
import trustme

from extproc.core.address import Address
from extproc.core.config import load_config
from extproc.ops.credentials import prepare
from extproc.ops.envoy_config import ExtprocTls, render
from extproc.transport.servicer import PROCESS_PATH
from tests.conftest import KEYS, MODELS, free_port, gateway_config
from tests.e2e.sdk import ask, stream
from tests.unit.test_deploy import envoy_bin, http_status, running, wait_for

NAME = "extproc.test"  # the service's name: Envoy's SNI, and the DNS SAN it requires


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    files = {"ca": str(d / "ca.pem")}
    for name, issuer, ident in [("service", ca, NAME), ("envoy", ca, "envoy"), ("stranger", other, "envoy")]:
        cert = issuer.issue_cert(ident)
        cert.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
        files[name], files[f"{name}_key"] = str(d / f"{name}.pem"), str(d / f"{name}.key")
    return files


def admin_stats(admin: Address) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{admin}/stats?format=json", timeout=5) as r:
        stats = json.load(r)["stats"]
    return {s["name"]: s["value"] for s in stats if "value" in s}


def direct_call(port: int, pki: dict[str, str], client: str | None) -> grpc.StatusCode:
    """An ext_proc stream straight to the worker, as a pod on the network would open it."""

    def read(name: str) -> bytes:
        return Path(pki[name]).read_bytes()

    if client is None:
        creds = grpc.ssl_channel_credentials(read("ca"))
    else:
        creds = grpc.ssl_channel_credentials(read("ca"), read(f"{client}_key"), read(client))
    options = [("grpc.ssl_target_name_override", NAME)]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as ch:
        try:
            list(ch.stream_stream(PROCESS_PATH)(iter([]), timeout=5))
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("transport", ["wire", "grpcio"])
def test_envoy_reaches_the_worker_over_mtls(mocks: dict, tmp_path: Path, pki: dict[str, str], transport: str) -> None:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    for kind in ("openai", "anthropic", "gemini"):
        env[f"{kind.upper()}_API_KEY"] = KEYS[kind]
        env[f"{kind.upper()}_BASE_URL"] = mocks[kind].base_url
    env["AI_GATEWAY_GRPC"] = transport
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(gateway_config(free_port()))
    port = free_port()
    listen, admin = Address(host="127.0.0.1", port=free_port()), Address(host="127.0.0.1", port=free_port())
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        cfg = load_config(str(cfg_path))
        files, _ = prepare(tmp_path / "credentials", cfg, env)
        boot = render(
            cfg,
            listen=listen,
            admin=admin,
            extproc=[Address(host="127.0.0.1", port=port)],
            credentials=files,
            extproc_tls=ExtprocTls(pki["envoy"], pki["envoy_key"], pki["ca"], sni=NAME),
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    (tmp_path / "envoy.json").write_text(json.dumps(boot))
    service = [sys.executable, "-m", "extproc", "extproc", "--config", str(cfg_path), "--env-file", os.devnull]
    service += ["--extproc-listen", f"127.0.0.1:{port}", "--tls-cert", pki["service"], "--tls-key"]
    service += [pki["service_key"], "--tls-client-ca", pki["ca"]]
    logs = [tmp_path / "extproc.log", tmp_path / "envoy.log"]
    envoy_cmd = [envoy_bin(), "-c", str(tmp_path / "envoy.json"), "--use-dynamic-base-id", "--log-level", "warning"]
    with running(service, logs[0], env) as svc, running(envoy_cmd, logs[1], env) as envoy:
        url = f"http://{listen}"
        wait_for("gateway", lambda: http_status(url + "/health") == 200, [svc, envoy], logs)
        assert "mTLS" in logs[0].read_text()
        assert "over mTLS" in ask("openai", url, MODELS["anthropic"], "over mTLS").text
        assert "streamed over mTLS" in stream("anthropic", url, MODELS["gemini"], "streamed over mTLS").text
        stats = admin_stats(admin)
        assert stats.get("cluster.extproc.ssl.handshake", 0) >= 1  # Envoy's connections to the worker are TLS
        assert stats.get("cluster.extproc.ssl.connection_error", 0) == 0
        # anyone else: no certificate, a certificate from another CA, cleartext HTTP/2
        assert direct_call(port, pki, None) == grpc.StatusCode.UNAVAILABLE
        assert direct_call(port, pki, "stranger") == grpc.StatusCode.UNAVAILABLE
        assert direct_call(port, pki, "envoy") == grpc.StatusCode.OK  # (the same call with Envoy's certificate)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            got = b""
            try:
                while chunk := plain.recv(4096):
                    got += chunk
            except OSError:
                pass
            assert got[3:4] != b"\x04"  # whatever came back (a TLS alert, or nothing) is no HTTP/2 SETTINGS frame
        assert http_status(url + "/health") == 200  # and Envoy's own connections are unaffected
