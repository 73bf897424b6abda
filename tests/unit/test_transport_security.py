"""Who may reach the extproc port, as the operator configures it: ``ai-gateway extproc`` refuses plain TCP beyond
loopback (mTLS or an explicit ``--trusted-network``), ``envoy-config`` renders the extproc cluster with mTLS, and both
transports get the limits (grpc.aio as channel options)."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from extproc.core.address import Address
from extproc.ops import cli
from extproc.ops.credentials import prepare
from extproc.ops.envoy_config import ExtprocTls, render
from extproc.transport import server as server_mod
from extproc.transport.grpc_wire import Limits
from tests.unit.test_deploy import envoy_validate

CONFIG = 'version: "1"\nmodels:\n  - name: "gpt"\n    provider: "openai"\n'


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``extproc`` would have served, instead of serving it."""
    calls: list[dict[str, Any]] = []

    def run(config: str, listen: str, grace: float, verbose: bool, limits: Any, tls: Any) -> int:
        calls.append({"listen": listen, "limits": limits, "tls": tls})
        return 0

    monkeypatch.setattr(server_mod, "run", run)
    return calls


def extproc(config: str, *args: str) -> int:
    return cli.main(["extproc", "--config", config, "--env-file", "/nonexistent", *args])


@pytest.mark.parametrize(
    ("listen", "allowed"),
    [
        ("127.0.0.1:50051", True),
        ("127.9.9.9:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/tmp/x.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),  # all interfaces
        ("10.1.2.3:50051", False),
        ("extproc:50051", False),  # a name may resolve anywhere
    ],
)
def test_plain_tcp_beyond_loopback_is_refused(
    config: str, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str], listen: str, allowed: bool
) -> None:
    code = extproc(config, "--extproc-listen", listen)
    assert (code, len(served)) == ((0, 1) if allowed else (2, 0))
    if not allowed:
        out = capsys.readouterr().out  # (the JSON log lines)
        assert "refusing to serve ext_proc" in out and "--trusted-network" in out
        assert extproc(config, "--extproc-listen", listen, "--trusted-network") == 0
        assert served[-1]["listen"] == listen and served[-1]["tls"] is None


def test_mtls_flags_go_together_and_allow_any_address(
    config: str, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert extproc(config, "--extproc-listen", "0.0.0.0:1", "--tls-cert", "c.pem", "--tls-key", "k.pem") == 2
    assert "go together" in capsys.readouterr().out and not served
    args = ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"]
    assert extproc(config, "--extproc-listen", "0.0.0.0:1", *args) == 0
    assert served[0]["tls"] == server_mod.TlsFiles("c.pem", "k.pem", "ca.pem")


def test_grpc_limit_flags(config: str, served: list[dict[str, Any]]) -> None:
    assert extproc(config, "--extproc-listen", "127.0.0.1:1", "--grpc-limit", "max_concurrent_streams=64") == 0
    assert served[0]["limits"] == Limits(max_concurrent_streams=64)
    assert extproc(config, "--extproc-listen", "127.0.0.1:1") == 0
    assert served[1]["limits"] is None  # the defaults (sized from the config by the server)
    for bad in ["nope=1", "max_message", "idle_timeout=soon", "max_message=-1"]:
        assert extproc(config, "--extproc-listen", "127.0.0.1:1", "--grpc-limit", bad) == 2
    assert len(served) == 2


def test_limits_follow_the_body_limit() -> None:
    default = server_mod.limits_for(32 * 1024 * 1024)
    assert default.max_message >= 32 * 1024 * 1024 + 64 * 1024  # a whole body and its protobuf envelope
    assert default.max_buffered_in == Limits().max_buffered_in
    big = server_mod.limits_for(100 * 1024 * 1024)
    assert big.max_message > 100 * 1024 * 1024 and big.max_buffered_in >= 3 * big.max_message
    mine = server_mod.limits_for(1024, Limits(max_message=50 * 1024 * 1024, idle_timeout=7))
    assert mine.max_message == 50 * 1024 * 1024 and mine.idle_timeout == 7


def test_grpcio_gets_the_limits_it_has_options_for() -> None:
    limits = Limits(max_concurrent_streams=77, max_message=12345, idle_timeout=9, keepalive_interval=4)
    options = dict(server_mod.grpc_options(limits))
    assert options["grpc.max_concurrent_streams"] == 77
    assert options["grpc.max_receive_message_length"] == 12345
    assert options["grpc.max_connection_idle_ms"] == 9000
    assert options["grpc.keepalive_time_ms"] == 4000
    assert options["grpc.keepalive_timeout_ms"] == int(limits.keepalive_timeout * 1000)
    assert options["grpc.server_handshake_timeout_ms"] == int(limits.handshake_timeout * 1000)
    assert options["grpc.max_metadata_size"] == limits.max_header_list
    off = dict(server_mod.grpc_options(Limits(idle_timeout=0, keepalive_interval=0, handshake_timeout=0)))
    assert not {"grpc.max_connection_idle_ms", "grpc.keepalive_time_ms", "grpc.server_handshake_timeout_ms"} & set(off)


def test_is_loopback() -> None:
    assert cli.is_loopback(Address(path="/run/x.sock"))
    for host in ("127.0.0.1", "::1", "localhost"):
        assert cli.is_loopback(Address(host=host, port=1))
    for host in ("0.0.0.0", "::", "192.168.1.1", "extproc", str(ipaddress.ip_address("::ffff:10.0.0.1"))):
        assert not cli.is_loopback(Address(host=host, port=1))


# ------------------------------------------------------------------------------------------------- envoy-config
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("envoy")
    client.cert_chain_pems[0].write_to_path(str(d / "envoy.pem"))
    client.private_key_pem.write_to_path(str(d / "envoy.key"))
    return {"ca": str(d / "ca.pem"), "cert": str(d / "envoy.pem"), "key": str(d / "envoy.key")}


def extproc_cluster(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "extproc"]
    return cluster


def test_envoy_config_renders_mtls_to_the_service(
    config: str, pki: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["envoy-config", "--config", config, "--env-file", "/nonexistent", "--extproc-listen", "extproc.svc:50051"]
    tls = ["--extproc-tls-cert", pki["cert"], "--extproc-tls-key", pki["key"], "--extproc-tls-ca", pki["ca"]]
    assert cli.main([*args, *tls]) == 0
    cluster = extproc_cluster(yaml.safe_load(capsys.readouterr().out))
    socket = cluster["transport_socket"]
    assert socket["name"] == "envoy.transport_sockets.tls"
    ctx = socket["typed_config"]
    assert ctx["@type"].endswith("UpstreamTlsContext") and ctx["sni"] == "extproc.svc"  # the host by default
    common = ctx["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": pki["cert"]}, "private_key": {"filename": pki["key"]}}
    ]
    assert common["validation_context"]["trusted_ca"] == {"filename": pki["ca"]}
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "extproc.svc"}}
    ]
    assert cli.main([*args, *tls, "--extproc-tls-sni", "worker.internal"]) == 0
    ctx = extproc_cluster(yaml.safe_load(capsys.readouterr().out))["transport_socket"]["typed_config"]
    assert ctx["sni"] == "worker.internal"
    assert ctx["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {
        "exact": "worker.internal"
    }
    assert cli.main(args) == 0  # without the flags: no TLS, as before
    assert "transport_socket" not in extproc_cluster(yaml.safe_load(capsys.readouterr().out))
    assert cli.main([*args, *tls[:2]]) == 2  # cert without key and CA
    unix = ["envoy-config", "--config", config, "--env-file", "/nonexistent", "--extproc-listen", "unix:/x.sock"]
    assert cli.main([*unix, *tls]) == 2  # no host to take the name from


def test_rendered_mtls_cluster_validates_with_envoy(config: str, pki: dict[str, str], tmp_path: Path) -> None:
    from extproc.core.config import load_config

    tls = ExtprocTls(pki["cert"], pki["key"], pki["ca"], sni="extproc.test")
    cfg = load_config(config)
    files, _ = prepare(tmp_path / "credentials", cfg, {"OPENAI_API_KEY": "k"})
    boot = render(
        cfg,
        listen=Address(host="127.0.0.1", port=8080),
        admin=Address(host="127.0.0.1", port=9901),
        extproc=[Address(host="127.0.0.1", port=50051)],
        credentials=files,
        extproc_tls=tls,
    )
    envoy_validate(json.loads(json.dumps(boot)))


@pytest.mark.parametrize("transport", ["wire", "grpcio"])
def test_unreadable_tls_files_stop_the_worker_with_one_clear_line(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    monkeypatch.setenv("AI_GATEWAY_GRPC", transport)
    missing = str(tmp_path / "missing.pem")
    tls = server_mod.TlsFiles(missing, missing, missing)
    assert server_mod.run(config, "127.0.0.1:0", 1.0, False, None, tls) == 1
    assert "cannot serve on 127.0.0.1:0" in caplog.text and "missing.pem" in caplog.text


def test_a_worker_signal_wakes_its_loop_from_any_thread() -> None:
    """The worker's signal handlers run in the main thread, when it next runs Python code: the wakeup fd makes that
    at once even when the signal lands in another thread (the tracer's, grpc's) while the loop waits with no timer."""
    import asyncio
    import signal
    import threading

    previous = signal.getsignal(signal.SIGUSR1)
    sent: list[float] = []

    def other_thread() -> None:
        time.sleep(0.3)  # not a synchronisation: the signal is meant to land while the loop sits in its wait
        sent.append(time.monotonic())
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # to this thread, not the main one

    async def main() -> float:
        got = asyncio.Event()
        with server_mod._signals(asyncio.get_running_loop(), {signal.SIGUSR1: got.set}):
            threading.Thread(target=other_thread).start()
            await asyncio.wait_for(got.wait(), 5)  # without the wakeup fd: only this timer wakes the loop
            return time.monotonic() - sent[0]

    try:
        assert asyncio.run(main()) < 1.0
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # once serving ends: ignored
    finally:
        signal.signal(signal.SIGUSR1, previous)
