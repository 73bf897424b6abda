"""The gateway as an operator sees it: health, metrics, commands, flags, config faults, shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from extproc.ops.launcher import find_envoy
from tests.conftest import (
    KEYS,
    MODELS,
    ROOT,
    Gateway,
    free_port,
    gateway_config,
    model_count,
    start_gateway,
    stop_gateway,
)
from tests.e2e.sdk import ask


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extproc", *args], cwd=ROOT, env=env or dict(os.environ), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_health_has_seed_shape(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy"
    assert body["models"] == model_count(gateway.config_path.read_text())
    assert body["timestamp"].endswith("Z")
    assert r.headers.get("x-request-id")


def _requests_total(gateway: Gateway) -> tuple[float, str]:
    """proxy_requests_total for OpenAI clients asking MODELS["anthropic"] with status 200, and the whole page."""
    text = httpx.get(gateway.url + "/metrics").text
    total = 0.0
    for ln in text.splitlines():
        if (
            ln.startswith("proxy_requests_total{")
            and 'format="openai"' in ln
            and f'model="{MODELS["anthropic"]}"' in ln
            and 'status="200"' in ln
        ):
            total += float(ln.rsplit(" ", 1)[1])
    return total, text


def test_metrics_count_requests(gateway: Gateway) -> None:
    before, _ = _requests_total(gateway)
    for _ in range(3):
        ask("openai", gateway.url, MODELS["anthropic"], "count me")
    # Workers write their sums at most 0.2 s after a request: poll until the three are counted.
    deadline = time.monotonic() + 5
    while (after := _requests_total(gateway))[0] < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert after[0] == before + 3
    assert "proxy_request_duration_seconds_bucket" in after[1]


def test_request_id_is_kept_end_to_end(gateway: Gateway) -> None:
    r = httpx.post(
        gateway.url + "/openai/v1/chat/completions",
        json={"model": MODELS["gemini"], "messages": [{"role": "user", "content": "trace me"}]},
        headers={"x-request-id": "trace-abc-1"},
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "trace-abc-1"
    assert gateway.mocks["gemini"].last().headers.get("x-request-id") == "trace-abc-1"


def test_client_cannot_choose_the_cluster(gateway: Gateway) -> None:
    """A client-sent routing header is overwritten: the model alone picks the provider."""
    r = httpx.post(
        gateway.url + "/openai/v1/chat/completions",
        json={"model": MODELS["gemini"], "messages": [{"role": "user", "content": "route me"}]},
        headers={"x-ai-gateway-provider": "anthropic"},
    )
    assert r.status_code == 200
    assert "mock gemini" in r.json()["choices"][0]["message"]["content"]


def test_check_config_prints_summary_without_keys() -> None:
    env = dict(os.environ, OPENAI_API_KEY=KEYS["openai"])
    r = run_cli("check-config", "-config", "config/proxy-config.yaml", "-env-file", "/nonexistent", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gpt-4" in r.stdout and "OPENAI_API_KEY set" in r.stdout
    assert KEYS["openai"] not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("yaml_text", "fault"),
    [
        ("models: []\n", "version"),
        ('version: "1"\nmodels:\n  - name: a\n    provider: nope\n', "unknown provider 'nope'"),
        ('version: "1"\nmodels:\n  - {name: a, provider: openai}\n  - {name: a, provider: openai}\n', "duplicate"),
        ('version: "1"\ntimeout: "soon"\n', "timeout"),
    ],
)
def test_bad_config_is_refused_with_one_clear_message(yaml_text: str, fault: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(yaml_text)
    try:
        r = run_cli("check-config", "--config", f.name, "--env-file", "/nonexistent")
        assert r.returncode == 1
        out = r.stdout + r.stderr
        assert f.name in out and fault in out
        r = run_cli("--config", f.name, "--env-file", "/nonexistent", "--listen", f"127.0.0.1:{free_port()}")
        assert r.returncode == 1 and fault in r.stdout + r.stderr
    finally:
        os.unlink(f.name)


def test_envoy_config_is_valid_for_envoy(tmp_path: Path) -> None:
    """``envoy-config --out`` writes a bootstrap Envoy accepts, with an SDS file per keyed provider; printed, it is the
    same bootstrap (pointing at the SDS files where ``--sds-dir`` says)."""
    out, keys = tmp_path / "out", tmp_path / "keys"
    keys.mkdir()
    r = run_cli("envoy-config", "--config", "config/proxy-config.yaml", "--env-file", "/nonexistent",
                "--extproc-listen", "extproc:50051", "--out", str(out), "--keys-dir", str(keys))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["envoy.yaml", "sds-anthropic.yaml", "sds-gemini.yaml",
                                                      "sds-openai.yaml"]  # fmt: skip
    printed = run_cli("envoy-config", "--config", "config/proxy-config.yaml", "--env-file", "/nonexistent",
                      "--extproc-listen", "extproc:50051", "--sds-dir", str(out), "--keys-dir", str(keys))  # fmt: skip
    assert printed.stdout == (out / "envoy.yaml").read_text()
    v = subprocess.run([find_envoy(None), "--mode", "validate", "-c", str(out / "envoy.yaml"), "--use-dynamic-base-id"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr


def test_dotenv_does_not_override_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=from-dotenv\nANTHROPIC_API_KEY=from-dotenv\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["OPENAI_API_KEY"] = "from-env"
    r = run_cli("check-config", "--env-file", str(env_file), env=env)
    assert r.returncode == 0
    assert "OPENAI_API_KEY set" in r.stdout and "ANTHROPIC_API_KEY set" in r.stdout


def test_sigterm_lets_in_flight_request_finish(mocks: dict) -> None:  # type: ignore[type-arg]
    """A second gateway (its own ports): SIGTERM during a slow request; the request completes, exit code 0."""
    import threading

    text = "SLEEP 2 sigterm-in-flight"
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1)
        result: dict[str, object] = {}

        def slow() -> None:
            try:
                result["answer"] = ask("openai", gw.url, MODELS["openai"], text)
            except Exception as exc:  # recorded and asserted below
                result["error"] = exc

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 10  # wait until the request is at the provider, i.e. in flight

        def arrived() -> bool:
            return any(text.encode() in r.raw for r in list(mocks["openai"].requests))

        while not arrived() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert arrived() and t.is_alive(), result
        code = stop_gateway(gw)
        t.join(30)
        assert "error" not in result, result.get("error")
        assert "SLEEP 2" in result["answer"].text  # type: ignore[attr-defined]
        assert code == 0, gw.log_text()[-3000:]
