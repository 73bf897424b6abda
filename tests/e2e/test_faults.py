"""Faults: an extproc worker killed under load, Envoy dying. Nothing hangs, errors are sane, recovery is automatic."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import MODELS, free_port, gateway_config, start_gateway, stop_gateway


def _pids(pattern: str, parent: int | None = None) -> list[int]:
    cmd = ["pgrep", "-f", pattern] if parent is None else ["pgrep", "-P", str(parent), "-f", pattern]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def test_worker_killed_under_load_recovers(mocks: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=2)
        try:
            workers = _pids(f"extproc extproc --config {gw.config_path}")
            assert len(workers) == 2
            results: list[tuple[int, dict | None]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=30) as cl:
                    while not stop.is_set():
                        body_out = {
                            "model": MODELS["anthropic"],
                            "messages": [{"role": "user", "content": "SLEEP 0.2"}],
                        }
                        r = cl.post(gw.url + "/openai/v1/chat/completions", json=body_out)
                        try:
                            body = r.json()
                        except ValueError:
                            body = None
                        results.append((r.status_code, body))

            def wait_for(cond, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
                deadline = time.monotonic() + timeout
                while not cond():
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    time.sleep(0.05)

            def replacement_serving() -> bool:
                now = _pids(f"extproc extproc --config {gw.config_path}")
                fresh = [p for p in now if p not in workers]
                return len(now) == 2 and bool(fresh) and f"extproc worker {fresh[0]} serving on" in gw.log_text()

            with ThreadPoolExecutor(8) as pool:
                try:
                    for _ in range(8):
                        pool.submit(load)
                    wait_for(lambda: sum(1 for s, _ in results if s == 200) >= 16, "traffic before the kill")
                    os.kill(workers[0], signal.SIGKILL)
                    wait_for(replacement_serving, "the replacement worker")
                    before = len(results)
                    # Recovered: the next 40 answers (5 per client thread) all succeed.
                    wait_for(lambda: len(results) >= before + 40, "traffic after the restart")
                finally:
                    stop.set()
            after = results[before:]
            # Everything that failed failed as a 5xx with a JSON error every SDK can read.
            for status, body in results:
                if status != 200:
                    assert status >= 500 and body is not None and body["error"]["message"], (status, body)
            # Traffic recovered: no errors once the worker was replaced.
            assert after and all(status == 200 for status, _ in after)
            assert sum(1 for s, _ in results if s == 200) > 20
            new_workers = _pids(f"extproc extproc --config {gw.config_path}")
            assert len(new_workers) == 2 and workers[0] not in new_workers
            assert "restarting it" in gw.log_text()
            assert httpx.get(gw.url + "/health").status_code == 200
        finally:
            stop_gateway(gw)


def test_envoy_dying_stops_the_launcher_with_an_error(mocks: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1)
        deadline = time.monotonic() + 10
        while "listening on" not in gw.log_text() and time.monotonic() < deadline:  # past the start-up phase
            time.sleep(0.05)
        assert "listening on" in gw.log_text()
        envoys = _pids("envoy-0.yaml", parent=gw.proc.pid)
        assert envoys
        os.kill(envoys[0], signal.SIGKILL)
        gw.proc.wait(20)
        assert gw.proc.returncode == 1
        assert "envoy exited" in gw.log_text(), gw.log_text()
        assert not _pids(f"extproc extproc --config {gw.config_path}")
