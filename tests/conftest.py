"""Session fixtures: mock providers over real HTTP, and the real gateway (`ai-gateway`: extproc workers + Envoy).

Everything listens on free ports picked at run time, so the tests never collide with a gateway already running on
8080 (Envoy is started with --use-dynamic-base-id by the launcher).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, settings

from tests.mocks.providers import MockProvider
from tests.paths import KONG

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = KONG

KEYS = {"openai": "sk-test-openai-key-123", "anthropic": "sk-ant-test-key-456", "gemini": "AIza-test-gemini-key-789"}
# The model each provider serves in the tests, by provider type.
MODELS = {"openai": "gpt-test", "anthropic": "claude-test", "gemini": "gemini-test"}
CLIENT_KEY = "client-credential-must-not-leak"
TIMEOUT_S = 6

# Hypothesis profiles. `ci`, the default, keeps every property quick enough for each run of the suite; `long` digs deep
# (`python -m pytest tests/unit --hypothesis-profile=long`). Tests set no max_examples of their own, so the profile
# alone decides how hard each property is tried.
settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("ci")  # the plugin's --hypothesis-profile, applied after this file is loaded, overrides it


# xds-protos (a product dependency) ships an old copy of opentelemetry-proto's modules (OTLP 0.x: no scope) at the same
# paths, and pip may install it over opentelemetry-proto's; the tests' OTLP receiver needs the current ones
# (docs/tracing.md). The session stops before collecting anything, naming the fix, rather than failing or skipping.
OTLP_CURRENT = (
    ("opentelemetry.proto.common.v1.common_pb2", "InstrumentationScope"),
    ("opentelemetry.proto.trace.v1.trace_pb2", "ScopeSpans"),
    ("opentelemetry.proto.metrics.v1.metrics_pb2", "ScopeMetrics"),
)


def otlp_proto_problem() -> str | None:
    from importlib import import_module, metadata

    try:
        version = metadata.version("opentelemetry-proto")
    except metadata.PackageNotFoundError:
        return None  # not installed at all: the imports that need it say so
    for mod, name in OTLP_CURRENT:
        try:
            if hasattr(import_module(mod), name):
                continue
        except ModuleNotFoundError:
            return None
        except Exception:  # a mix of both copies: descriptors that do not fit together
            pass
        return (
            f"opentelemetry.proto is xds-protos's old OTLP copy (no {mod}.{name}), written over opentelemetry-proto's "
            f"files at install. Repair the install (docs/tracing.md):\n    {sys.executable} -m pip install --no-deps "
            f"--force-reinstall opentelemetry-proto=={version}"
        )
    return None


def pytest_configure(config: pytest.Config) -> None:
    problem = otlp_proto_problem()
    if problem is not None:
        raise pytest.UsageError(problem)  # one line "ERROR: ...", exit status 4, nothing collected


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    admin: str
    mocks: dict[str, MockProvider]
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


# The tests' own model names match no catalog entry; the mocks accept anything for them (shape checks only), so the
# test config declares them able to take every knob (models[].capabilities), as the old name guesses did.
OPEN_CAPS = {
    "openai": "{reasoning: [effort], efforts: [none, minimal, low, medium, high, xhigh, max]}",
    "anthropic": "{reasoning: [adaptive, budget], efforts: [low, medium, high, xhigh, max], budget_max: 128000, "
    "sampling: [temperature, top_p, top_k]}",
    "gemini": "{reasoning: [level, budget], efforts: [minimal, low, medium, high], budget_min: 0, budget_max: 32768}",
}
# Real model names of each family (their catalog entries apply; the mocks check the families' real rules).
FAMILY_MODELS = {
    "openai": ("gpt-4o-mini", "gpt-5-mini"),
    "anthropic": ("claude-haiku-4-5", "claude-opus-4-8"),
    "gemini": ("gemini-2.5-flash", "gemini-3-flash-preview"),
}


def gateway_config(dead_port: int) -> str:
    family = "".join(
        f'  - name: "{name}"\n    provider: "{ptype}"\n' for ptype, names in FAMILY_MODELS.items() for name in names
    )
    return f"""
version: "1.0"
timeout: "{TIMEOUT_S}s"
providers:
  - name: "needs-key"
    type: "openai"
    base_url: "http://127.0.0.1:1/v1"
    api_key_env: "AI_GATEWAY_TEST_MISSING_KEY"
  - name: "dead"
    type: "openai"
    base_url: "http://127.0.0.1:{dead_port}/v1"
models:
  - name: "{MODELS["openai"]}"
    provider: "openai"
    capabilities: {OPEN_CAPS["openai"]}
  - name: "{MODELS["anthropic"]}"
    provider: "anthropic"
    capabilities: {OPEN_CAPS["anthropic"]}
  - name: "{MODELS["gemini"]}"
    provider: "gemini"
    capabilities: {OPEN_CAPS["gemini"]}
  - name: "alias-openai"
    provider: "openai"
    target_model: "gpt-upstream-name"
    capabilities: {OPEN_CAPS["openai"]}
  - name: "alias-anthropic"
    provider: "anthropic"
    target_model: "claude-upstream-name"
    capabilities: {OPEN_CAPS["anthropic"]}
  - name: "alias-gemini"
    provider: "gemini"
    target_model: "gemini-upstream-name"
    capabilities: {OPEN_CAPS["gemini"]}
  - name: "no-key-model"
    provider: "needs-key"
  - name: "dead-model"
    provider: "dead"
  - name: "metrics-model"
    provider: "anthropic"
    capabilities: {OPEN_CAPS["anthropic"]}
{family}  - name: "gpt-4o-mini-uncatalogued"
    provider: "openai"
    target_model: "gpt-4o-mini"
    capabilities: {{enabled: false}}
  - name: "claude-haiku-4-5-uncatalogued"
    provider: "anthropic"
    target_model: "claude-haiku-4-5"
    capabilities: {{enabled: false}}
"""


def model_count(config_text: str) -> int:
    """How many models a config names (what /health reports)."""
    return len(yaml.safe_load(config_text)["models"])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} during start")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gateway did not become healthy")


def start_gateway(
    tmp: Path,
    mocks: dict[str, MockProvider],
    config_text: str,
    workers: int = 2,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str | None] | None = None,
    env_file: Path | None = None,
) -> Gateway:
    """``ai-gateway`` on free ports against the mocks. ``extra_env`` values of None remove that variable; ``env_file``
    is the gateway's ``--env-file`` (default: a file that does not exist)."""
    cfg = tmp / "proxy-config.yaml"
    cfg.write_text(config_text)
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(
        OPENAI_API_KEY=KEYS["openai"],
        ANTHROPIC_API_KEY=KEYS["anthropic"],
        GEMINI_API_KEY=KEYS["gemini"],
        OPENAI_BASE_URL=mocks["openai"].base_url,
        ANTHROPIC_BASE_URL=mocks["anthropic"].base_url,
        GEMINI_BASE_URL=mocks["gemini"].base_url,
        PYTHONUNBUFFERED="1",
    )
    for name, value in (extra_env or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    log_path = tmp / "gateway.log"
    cmd = [sys.executable, "-m", "extproc", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}"]
    cmd += [
        "--config",
        str(cfg),
        "--env-file",
        str(env_file or tmp / "no.env"),
        "--workers",
        str(workers),
        "--grace",
        "10",
        *extra_args,
    ]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    gw = Gateway(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", mocks, cfg, proc, log_path, env)
    try:
        wait_healthy(gw.url, proc)
    except RuntimeError:
        stop_gateway(gw)
        raise RuntimeError("gateway failed to start:\n" + gw.log_text()[-4000:]) from None
    return gw


def stop_gateway(gw: Gateway) -> int | None:
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            gw.proc.wait(30)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait()
    return gw.proc.returncode


@pytest.fixture(scope="session")
def mocks() -> Iterator[dict[str, MockProvider]]:
    started = {kind: MockProvider(kind, KEYS[kind]).start() for kind in ("openai", "anthropic", "gemini")}
    yield started
    for m in started.values():
        m.stop()


@pytest.fixture(scope="session")
def gateway(mocks: dict[str, MockProvider]) -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="ai-gateway-test-") as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()))
        yield gw
        stop_gateway(gw)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
