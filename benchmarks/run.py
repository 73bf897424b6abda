"""Benchmark harness: the gateway against a bare Envoy (the floor) and, optionally, the LiteLLM proxy.

    python benchmarks/run.py [--duration 10] [--with-litellm] [--quick]

Everything runs on 127.0.0.1, on free ports: a zero-delay provider (an Envoy with ``direct_response`` bodies for the
three JSON APIs, plus ``sse_server.py`` for streams), a bare Envoy (plain router, no ext_proc), the gateway
(``python -m extproc`` with ``bench-config.yaml``) and, with ``--with-litellm``, a LiteLLM proxy installed into
``benchmarks/.venv-litellm``. wrk drives the load (``post.lua``); CPU comes from ``/proc/<pid>/stat`` (utime+stime
deltas of the service workers and of Envoy, separately, divided by requests), RSS from ``/proc/<pid>/status``.
Results: ``benchmarks/results/latest.json`` and ``latest.md`` (or ``--label NAME``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import client
import envoys
import yaml

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
BODIES = BENCH / "bodies"
LITELLM_VENV = BENCH / ".venv-litellm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MASTER_KEY = "sk-bench-master-key"
STREAM_EVENTS = 20
KEYS = {"OPENAI_API_KEY": "sk-bench-openai", "ANTHROPIC_API_KEY": "sk-ant-bench", "GEMINI_API_KEY": "AIza-bench"}
# The clouds' credentials (fake; the provider Envoy checks none): Azure's key, and the AWS chain Envoy signs with.
CLOUD_ENV = {
    "AZURE_OPENAI_API_KEY": "azure-bench-key",
    "AWS_ACCESS_KEY_ID": "AKIDBENCH",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_EC2_METADATA_DISABLED": "true",
}

sys.path.insert(0, str(ROOT))

# --governance: what the governed gateway adds to bench-config.yaml. Limits no benchmark reaches, so every request is
# checked (three counters: requests and tokens per key, a budget per key and model) and charged, never refused.
GOV_KEY = "sk-bench-gateway-key"
GOVERNED = """
auth:
  api_keys:
    - {name: bench, key_env: BENCH_GATEWAY_KEY}
governance:
  store: redis
  redis: {timeout: 50ms}
  prices:
    "*": {input: 3, output: 15, cached_input: 0.3}
  limits:
    - {key: "*", requests_per_minute: 1000000000, total_tokens_per_minute: 1000000000000}
    - {key: "*", model: "*", budget: {usd: 1000000000, period: month}}
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------------- /proc readers
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren...)."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(d.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this harness, its live descendants and its reaped children (wrk)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    live = sum(cpu_seconds(p) for p in descendants(os.getpid()))
    return live + ru.ru_utime + ru.ru_stime + me.ru_utime + me.ru_stime


class Noise:
    """CPU used on this machine by processes this run did not start, in cores (other jobs skew every number)."""

    def __init__(self) -> None:
        self.t, self.busy, self.own = time.monotonic(), machine_busy(), own_cpu()

    def cores(self) -> float:
        return max(0.0, (machine_busy() - self.busy - (own_cpu() - self.own)) / (time.monotonic() - self.t))


def wait_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until foreign load is under ``threshold`` cores for a second; returns the last."""
    deadline = time.monotonic() + max_wait
    while True:
        n = Noise()
        time.sleep(1.0)
        load = n.cores()
        if load < threshold or time.monotonic() >= deadline:
            return load
        log(f"other processes use {load:.2f} cores: waiting for a quiet machine")


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------------- processes
class Procs:
    """Processes this run started; stopped in reverse order at the end (by pid, never by name)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.items: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> subprocess.Popen[bytes]:
        out = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115  (lives as long as the process)
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        self.items.append((name, proc))
        return proc

    def log_tail(self, name: str, n: int = 3000) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what this run started
                proc.wait()

    def stop_all(self) -> None:
        for _, proc in reversed(self.items):
            self.stop(proc)


def wait_until(what: str, ready: Any, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.status == 200


def admin_stats(admin_port: int, pattern: str) -> dict[str, int]:
    url = f"http://127.0.0.1:{admin_port}/stats?filter={pattern}"
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        with contextlib.suppress(ValueError):
            out[name.strip()] = int(value.strip())
    return out


def find_envoy() -> str:
    from extproc.ops.launcher import find_envoy as project_find_envoy

    return project_find_envoy(None)


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit("wrk not found: install it (apt-get install -y wrk) and run again")
    log("wrk not found: apt-get install -y wrk")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk but it is not on PATH")
    return found


def ensure_litellm() -> tuple[Path, float | None]:
    """LiteLLM proxy in its own venv (benchmarks/.venv-litellm); returns (litellm binary, install seconds or None)."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe, None
    log(f"installing litellm[proxy] into {LITELLM_VENV} (pip)")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe, time.monotonic() - t0


def machine_info(envoy_bin: str, wrk: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{mem_kb / 1024 / 1024:.1f} GiB"
    envoy_v = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"/(\d+\.\d+\.\d+)/", envoy_v)
    wrk_v = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy": m.group(1) if m else envoy_v[:80],
        "wrk": wrk_v[0].strip() if wrk_v else "",
        "hostname": platform.node(),
    }


# ------------------------------------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    name: str
    group: str  # floor | gateway | baseline | governed | litellm
    what: str
    port: int
    path: str
    body: str  # file in bodies/
    concurrency: int
    stream: bool = False
    auth: str | None = None
    extra_header: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Stack:
    """What is running: ports and the pids whose CPU is charged to each role."""

    provider_port: int
    provider_admin: int
    sse_port: int
    bare_port: int
    bare_admin: int
    gw_port: int
    gw_admin: int
    gw_proc: subprocess.Popen[bytes] | None = None
    bare_proc: subprocess.Popen[bytes] | None = None
    provider_proc: subprocess.Popen[bytes] | None = None
    sse_proc: subprocess.Popen[bytes] | None = None
    litellm_proc: subprocess.Popen[bytes] | None = None
    litellm_port: int = 0
    workers: list[int] = field(default_factory=list)
    gw_envoy: int = 0
    # --baseline-root: the same gateway from another checkout (e.g. the last release), measured in the same run
    base_port: int = 0
    base_admin: int = 0
    base_proc: subprocess.Popen[bytes] | None = None
    base_workers: list[int] = field(default_factory=list)
    base_envoy: int = 0
    # --tracing: the OTLP sink the gateway under test exports its traces and metrics to (its CPU: role "collector"),
    # and a second bare Envoy with the same tracer (Envoy's own tracing cost, without the service)
    sink_proc: subprocess.Popen[bytes] | None = None
    sink_port: int = 0
    traced_bare_port: int = 0
    traced_bare_admin: int = 0
    traced_bare_proc: subprocess.Popen[bytes] | None = None
    # --governance: the same gateway with gateway keys and governance limits in Redis, measured in the same run
    gov_port: int = 0
    gov_admin: int = 0
    gov_proc: subprocess.Popen[bytes] | None = None
    gov_workers: list[int] = field(default_factory=list)
    gov_envoy: int = 0
    redis_proc: subprocess.Popen[bytes] | None = None

    def admin_of(self, group: str) -> int:
        return {"baseline": self.base_admin, "governed": self.gov_admin}.get(group, self.gw_admin)

    def role_pids(self, group: str) -> dict[str, list[int]]:
        pids: dict[str, list[int]] = {
            "provider": [p.pid for p in (self.provider_proc, self.sse_proc) if p is not None],
        }
        if group == "floor":
            assert self.bare_proc is not None
            pids["envoy"] = [self.bare_proc.pid]
        elif group == "floor-traced":
            assert self.traced_bare_proc is not None and self.sink_proc is not None
            pids["envoy"] = [self.traced_bare_proc.pid]
            pids["collector"] = [self.sink_proc.pid]
        elif group == "gateway":
            pids["service"] = list(self.workers)
            pids["envoy"] = [self.gw_envoy]
            if self.sink_proc is not None:
                pids["collector"] = [self.sink_proc.pid]
        elif group == "baseline":
            pids["service"] = list(self.base_workers)
            pids["envoy"] = [self.base_envoy]
        elif group == "governed":
            pids["service"] = list(self.gov_workers)
            pids["envoy"] = [self.gov_envoy]
            pids["redis"] = [self.redis_proc.pid] if self.redis_proc is not None else []
        elif group == "litellm":
            assert self.litellm_proc is not None
            pids["service"] = [self.litellm_proc.pid, *descendants(self.litellm_proc.pid)]
        return pids


def run_wrk(wrk: str, sc: Scenario, duration: float) -> dict[str, Any]:
    threads = 1 if sc.concurrency == 1 else 2
    env = dict(os.environ, WRK_BODY=str(BODIES / sc.body), WRK_AUTH=sc.auth or "", WRK_HEADER=sc.extra_header or "")
    cmd = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(sc.concurrency),
        "-d",
        f"{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    cmd += ["-s", str(BENCH / "post.lua"), f"http://127.0.0.1:{sc.port}{sc.path}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"wrk gave no summary: {out.stdout[-2000:]} {out.stderr[-2000:]}")


def measure(wrk: str, stack: Stack, sc: Scenario, duration: float) -> dict[str, Any]:
    procs = (("gateway", stack.gw_proc), ("baseline gateway", stack.base_proc), ("bare envoy", stack.bare_proc),
             ("traced bare envoy", stack.traced_bare_proc),
             ("provider", stack.provider_proc), ("governed gateway", stack.gov_proc),
             ("redis", stack.redis_proc))  # fmt: skip
    for name, proc in procs:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} (killed by someone else?)")
    pids = stack.role_pids(sc.group)
    if sc.group == "litellm":  # uvicorn may have forked since the last look
        pids["service"] = [stack.litellm_proc.pid, *descendants(stack.litellm_proc.pid)]  # type: ignore[union-attr]
    before = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
    gateway = sc.group in ("gateway", "baseline", "governed")
    ext_before = admin_stats(stack.admin_of(sc.group), "ext_proc") if gateway else {}
    noise = Noise()
    w = run_wrk(wrk, sc, duration)
    foreign = noise.cores()
    after = {role: sum(cpu_seconds(p) for p in ps) for role, ps in pids.items()}
    n = max(w["requests"], 1)
    run: dict[str, Any] = {
        "requests": w["requests"],
        "seconds": w["duration_us"] / 1e6,
        "rps": w["requests"] / (w["duration_us"] / 1e6),
        "p50_ms": w["p50_us"] / 1000,
        "p90_ms": w["p90_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "max_ms": w["max_us"] / 1000,
        "errors": w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["status_errors"] + w["timeouts"],
        "cpu_us_per_req": {role: (after[role] - before[role]) * 1e6 / n for role in pids},
        "foreign_cores": round(foreign, 3),
    }
    if gateway:
        ext_after = admin_stats(stack.admin_of(sc.group), "ext_proc")
        sent = sum(v for k, v in ext_after.items() if k.endswith("stream_msgs_sent")) - sum(
            v for k, v in ext_before.items() if k.endswith("stream_msgs_sent")
        )
        run["extproc_msgs_per_req"] = sent / n
        run["service_rss_mb"] = sum(rss_mb(p) for p in pids["service"])
    elif sc.group == "litellm":
        run["service_rss_mb"] = sum(rss_mb(p) for p in pids["service"])
    return run


def aggregate(sc: Scenario) -> dict[str, Any]:
    runs = sc.runs
    reqs = sum(r["requests"] for r in runs)
    secs = sum(r["seconds"] for r in runs)
    roles = runs[0]["cpu_us_per_req"].keys()
    out: dict[str, Any] = {
        "name": sc.name,
        "group": sc.group,
        "what": sc.what,
        "concurrency": sc.concurrency,
        "stream": sc.stream,
        "requests": reqs,
        "seconds": round(secs, 2),
        "rps": round(reqs / secs, 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(max(r["p99_ms"] for r in runs), 3),
        "errors": sum(r["errors"] for r in runs),
        "foreign_cores_max": max(r["foreign_cores"] for r in runs),
        "cpu_us_per_req": {
            role: round(sum(r["cpu_us_per_req"][role] * r["requests"] for r in runs) / max(reqs, 1), 1)
            for role in roles
        },
        "runs": runs,
    }
    if "service_rss_mb" in runs[-1]:
        out["service_rss_mb"] = round(runs[-1]["service_rss_mb"], 1)
    if "extproc_msgs_per_req" in runs[0]:
        out["extproc_msgs_per_req"] = round(sum(r["extproc_msgs_per_req"] for r in runs) / len(runs), 2)
    if sc.stream:
        out["cpu_us_per_event"] = {k: round(v / STREAM_EVENTS, 1) for k, v in out["cpu_us_per_req"].items()}
    return out


def smoke(sc: Scenario) -> None:
    """One request per scenario before measuring: 200 and a body of the client's format."""
    headers = [("authorization", f"Bearer {sc.auth}")] if sc.auth else []
    if sc.extra_header:
        k, _, v = sc.extra_header.partition(":")
        headers.append((k.strip(), v.strip()))
    t = client.one(client.Target("127.0.0.1", sc.port, sc.path, (BODIES / sc.body).read_bytes(), tuple(headers)))
    body = t.body.decode(errors="replace")
    streams = {"floor-stream": "message_stop", "gw-stream": "[DONE]", "base-stream": "[DONE]", "gov-stream": "[DONE]"}
    expect = streams.get(sc.name.rsplit("-c", 1)[0])
    if expect is None:
        expect = {"anthropic": '"content"', "responses": '"output_text"'}.get(sc.body.split("-")[0], '"choices"')
    if t.status != 200 or expect not in body:
        raise RuntimeError(f"smoke test of {sc.name} failed: {t.status} {body[:500]}")


# ------------------------------------------------------------------------------------------------------- start-up
def throwaway_service_account(token_uri: str) -> dict[str, str]:
    """A Google service account with a fresh RSA key: the refresher signs its JWT and asks ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "type": "service_account",
        "project_id": "bench-project",
        "private_key_id": "bench",
        "private_key": pem.decode(),
        "client_email": "bench@bench-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


def start_stack(args: argparse.Namespace, procs: Procs, envoy_bin: str, tmp: Path) -> Stack:
    stack = Stack(*(free_port() for _ in range(7)))
    prov = tmp / "provider.yaml"
    prov.write_text(yaml.safe_dump(envoys.provider(stack.provider_port, stack.provider_admin)))
    bare = tmp / "bare.yaml"
    bare.write_text(yaml.safe_dump(envoys.bare(stack.bare_port, stack.bare_admin, stack.provider_port, stack.sse_port)))
    common = ["--use-dynamic-base-id", "--log-level", "warn"]
    stack.provider_proc = procs.start(
        "provider", [envoy_bin, "-c", str(prov), "--concurrency", str(args.provider_threads), *common]
    )
    stack.sse_proc = procs.start(
        "sse", [sys.executable, str(BENCH / "sse_server.py"), "--port", str(stack.sse_port), "--events", "20"]
    )
    stack.bare_proc = procs.start(
        "bare", [envoy_bin, "-c", str(bare), "--concurrency", str(os.cpu_count() or 1), *common]
    )
    if args.tracing:  # the OTLP sink, and the bare Envoy again with the gateway's tracer (all requests traced)
        from extproc.core.telemetry import TelemetrySettings
        from extproc.ops import envoy_tracing

        stack.sink_port = free_port()
        sink_cmd = [sys.executable, str(BENCH / "otlp_sink.py"), "--port", str(stack.sink_port)]
        stack.sink_proc = procs.start("otlp-sink", sink_cmd)
        stack.traced_bare_port, stack.traced_bare_admin = free_port(), free_port()
        traced = envoys.bare(stack.traced_bare_port, stack.traced_bare_admin, stack.provider_port, stack.sse_port)
        sampler = "always_on" if args.tracing >= 1 else "traceidratio"
        endpoint = f"http://127.0.0.1:{stack.sink_port}"
        tset = TelemetrySettings(endpoint=endpoint, host="127.0.0.1", port=stack.sink_port, tls=False,
                                 sampler=sampler, ratio=min(args.tracing, 1.0))  # fmt: skip
        traced_file = tmp / "bare-traced.yaml"
        traced_file.write_text(yaml.safe_dump(envoy_tracing.apply(traced, tset)))
        stack.traced_bare_proc = procs.start(
            "bare-traced", [envoy_bin, "-c", str(traced_file), "--concurrency", str(os.cpu_count() or 1), *common]
        )
    provider_url = f"http://127.0.0.1:{stack.provider_port}"
    cfg = tmp / "bench-config.yaml"
    cfg.write_text(Template((BENCH / "bench-config.yaml").read_text()).substitute(SSE_PORT=stack.sse_port))
    # The gateway under test also gets the fallback models (a --baseline-root checkout may not know them).
    fb_cfg = tmp / "bench-config-fallback.yaml"
    base = yaml.safe_load(cfg.read_text())
    extra = yaml.safe_load(
        Template((BENCH / "bench-fallback.yaml").read_text()).substitute(PROVIDER_PORT=stack.provider_port)
    )
    sa_file = tmp / "bench-service-account.json"
    sa_file.write_text(json.dumps(throwaway_service_account(f"http://127.0.0.1:{stack.provider_port}/token")))
    clouds = yaml.safe_load(
        Template((BENCH / "bench-clouds.yaml").read_text()).substitute(
            PROVIDER_PORT=stack.provider_port, SA_FILE=sa_file
        )
    )
    base["providers"] = [*(base.get("providers") or []), *extra["providers"], *clouds["providers"]]
    base["models"] = [*base["models"], *extra["models"], *clouds["models"]]
    base["fallback"] = extra["fallback"]
    fb_cfg.write_text(yaml.safe_dump(base, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(KEYS)
    env.update(CLOUD_ENV)
    env.update(
        OPENAI_BASE_URL=f"{provider_url}/v1",
        ANTHROPIC_BASE_URL=provider_url,
        GEMINI_BASE_URL=provider_url,
        PYTHONUNBUFFERED="1",
    )

    gw_cfg = fb_cfg
    if args.tracing:  # the gateway under test traces its requests (all, or a ratio) to an OTLP sink; the baseline not
        sink_port = stack.sink_port
        gw_cfg = tmp / "bench-config-traced.yaml"
        sampler = "always_on" if args.tracing >= 1 else f"traceidratio\n  sampler_arg: {args.tracing}"
        gw_cfg.write_text(
            fb_cfg.read_text() + f'tracing:\n  endpoint: "http://127.0.0.1:{sink_port}"\n  sampler: {sampler}\n'
        )

    def gateway(
        name: str, root: str, port: int, admin: int, extproc_listen: str | None, config: Path = cfg,
        more_env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        cmd = [sys.executable, "-m", "extproc", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--admin", f"127.0.0.1:{admin}", "--config", str(config), "--env-file", str(tmp / "no.env")]
        cmd += ["--workers", str(args.workers), "--grace", "5"]
        if extproc_listen:
            cmd += ["--extproc-listen", extproc_listen]
        return procs.start(name, cmd, {**env, **(more_env or {})}, cwd=Path(root).resolve())

    stack.gw_proc = gateway(
        "gateway", args.gateway_root, stack.gw_port, stack.gw_admin, args.extproc_listen, config=gw_cfg
    )
    if args.baseline_root:
        stack.base_port, stack.base_admin = free_port(), free_port()
        base_listen = None
        if args.extproc_listen:  # TCP: the baseline's workers on other ports
            host, _, port = args.extproc_listen.rpartition(":")
            base_listen = f"{host}:{int(port) + 100}"
        # --tracing compares one checkout with itself: the baseline gets the same config, without tracing
        base_cfg = fb_cfg if args.tracing else cfg
        stack.base_proc = gateway(
            "baseline", args.baseline_root, stack.base_port, stack.base_admin, base_listen, config=base_cfg
        )
    if args.governance:  # a real redis-server, and the gateway with every request checked and charged in it
        redis_port = free_port()
        stack.redis_proc = procs.start("redis", [shutil.which("redis-server") or "redis-server", "--port",
                                                 str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                                 "--appendonly", "no", "--dir", str(tmp)])  # fmt: skip
        gcfg = tmp / "bench-config-governed.yaml"
        gcfg.write_text(fb_cfg.read_text() + GOVERNED)  # the same config as the plain gateway, plus governance
        stack.gov_port, stack.gov_admin = free_port(), free_port()
        gov_listen = None
        if args.extproc_listen:
            host, _, port = args.extproc_listen.rpartition(":")
            gov_listen = f"{host}:{int(port) + 200}"
        wait_until("redis", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() or True,
                   stack.redis_proc)  # fmt: skip
        stack.gov_proc = gateway(
            "governed", args.gateway_root, stack.gov_port, stack.gov_admin, gov_listen, gcfg,
            {"AI_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "BENCH_GATEWAY_KEY": GOV_KEY},
        )  # fmt: skip
    wait_until("provider envoy", lambda: http_ok(f"http://127.0.0.1:{stack.provider_admin}/ready"), stack.provider_proc)
    wait_until("bare envoy", lambda: http_ok(f"http://127.0.0.1:{stack.bare_admin}/ready"), stack.bare_proc)
    if stack.traced_bare_proc is not None:
        traced_admin = stack.traced_bare_admin
        wait_until("traced bare envoy", lambda: http_ok(f"http://127.0.0.1:{traced_admin}/ready"),
                   stack.traced_bare_proc)  # fmt: skip
    wait_until("sse server", lambda: socket.create_connection(("127.0.0.1", stack.sse_port), 1).close() or True,
               stack.sse_proc)  # fmt: skip
    try:
        wait_until("gateway", lambda: http_ok(f"http://127.0.0.1:{stack.gw_port}/health"), stack.gw_proc)
    except RuntimeError:
        raise RuntimeError("gateway did not start:\n" + procs.log_tail("gateway")) from None
    stack.gw_envoy, stack.workers = gateway_pids(stack.gw_proc, args.workers)
    if stack.base_proc is not None:
        try:
            wait_until("baseline", lambda: http_ok(f"http://127.0.0.1:{stack.base_port}/health"), stack.base_proc)
        except RuntimeError:
            raise RuntimeError("baseline gateway did not start:\n" + procs.log_tail("baseline")) from None
        stack.base_envoy, stack.base_workers = gateway_pids(stack.base_proc, args.workers)
    if stack.gov_proc is not None:
        try:
            wait_until("governed", lambda: http_ok(f"http://127.0.0.1:{stack.gov_port}/health"), stack.gov_proc)
        except RuntimeError:
            raise RuntimeError("governed gateway did not start:\n" + procs.log_tail("governed")) from None
        stack.gov_envoy, stack.gov_workers = gateway_pids(stack.gov_proc, args.workers)
    if args.with_litellm:
        exe, installed = ensure_litellm()
        args.litellm_install_s = installed
        stack.litellm_port = free_port()
        lcfg = tmp / "litellm.yaml"
        lcfg.write_text(
            Template((BENCH / "litellm-config.yaml").read_text()).substitute(
                PROVIDER_URL=provider_url, MASTER_KEY=MASTER_KEY
            )
        )
        lenv = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
        lenv.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1", LITELLM_MASTER_KEY=MASTER_KEY)
        lcmd = [str(exe), "--config", str(lcfg), "--host", "127.0.0.1", "--port", str(stack.litellm_port)]
        lcmd += ["--num_workers", str(os.cpu_count() or 1)]
        stack.litellm_proc = procs.start("litellm", lcmd, lenv)
        auth = {"Authorization": f"Bearer {MASTER_KEY}"}
        try:
            wait_until(
                "litellm",
                lambda: http_ok(f"http://127.0.0.1:{stack.litellm_port}/health/liveliness", auth),
                stack.litellm_proc,
                timeout=180,
            )
        except RuntimeError:
            raise RuntimeError("litellm did not start:\n" + procs.log_tail("litellm")) from None
    return stack


def gateway_pids(proc: subprocess.Popen[bytes], workers: int) -> tuple[int, list[int]]:
    """A launcher's Envoy and its extproc workers."""
    kids = descendants(proc.pid)
    envoy = next(p for p in kids if comm(p) == "envoy")
    found = [p for p in kids if comm(p).startswith("python")]
    if len(found) != workers:
        raise RuntimeError(f"expected {workers} extproc workers, found {found}")
    return envoy, found


def scenarios(stack: Stack, with_litellm: bool) -> list[Scenario]:
    g, b = stack.gw_port, stack.bare_port
    out: list[Scenario] = []
    for c in (1, 32):
        if stack.traced_bare_port:
            out.append(
                Scenario(f"floor-traced-c{c}", "floor-traced", "bare Envoy, tracing every request -> provider",
                         stack.traced_bare_port, "/v1/chat/completions", "openai-gpt.json", c)
            )  # fmt: skip
        out += [
            Scenario(f"floor-c{c}", "floor", "bare Envoy -> provider (OpenAI body)", b, "/v1/chat/completions",
                     "openai-gpt.json", c),
            Scenario(f"gw-pass-c{c}", "gateway", "OpenAI -> OpenAI (pass-through)", g, "/openai/v1/chat/completions",
                     "openai-gpt.json", c),
            Scenario(f"gw-oa2an-c{c}", "gateway", "OpenAI -> Anthropic (translated)", g,
                     "/openai/v1/chat/completions", "openai-claude.json", c),
            Scenario(f"gw-an2ge-c{c}", "gateway", "Anthropic -> Gemini (translated)", g, "/anthropic/v1/messages",
                     "anthropic-gemini.json", c, extra_header="anthropic-version: 2023-06-01"),
            Scenario(f"gw-fb-c{c}", "gateway", "OpenAI -> fallback model, Anthropic answers (1 attempt)", g,
                     "/openai/v1/chat/completions", "openai-fb.json", c),
            Scenario(f"gw-fbretry-c{c}", "gateway", "OpenAI -> fallback model, 503 then Anthropic (2 attempts)", g,
                     "/openai/v1/chat/completions", "openai-fb-retry.json", c),
            Scenario(f"gw-oa2az-c{c}", "gateway", "OpenAI -> Azure OpenAI deployment (api-key by Envoy)", g,
                     "/openai/v1/chat/completions", "openai-az.json", c),
            Scenario(f"gw-oa2br-c{c}", "gateway", "OpenAI -> Bedrock Converse (translated, SigV4 by Envoy)", g,
                     "/openai/v1/chat/completions", "openai-br.json", c),
            Scenario(f"gw-oa2vx-c{c}", "gateway", "OpenAI -> Gemini on Vertex (translated, OAuth token)", g,
                     "/openai/v1/chat/completions", "openai-vx.json", c),
            Scenario(f"gw-rs2an-c{c}", "gateway", "Responses -> Anthropic (translated, store: false)", g,
                     "/openai/v1/responses", "responses-claude.json", c),
            Scenario(f"gw-rs2an-store-c{c}", "gateway", "Responses -> Anthropic (translated, kept in the store)", g,
                     "/openai/v1/responses", "responses-claude-store.json", c),
        ]  # fmt: skip
        if stack.base_port:
            o = stack.base_port
            out += [
                Scenario(f"base-pass-c{c}", "baseline", "baseline: OpenAI -> OpenAI (pass-through)", o,
                         "/openai/v1/chat/completions", "openai-gpt.json", c),
                Scenario(f"base-oa2an-c{c}", "baseline", "baseline: OpenAI -> Anthropic", o,
                         "/openai/v1/chat/completions", "openai-claude.json", c),
                Scenario(f"base-an2ge-c{c}", "baseline", "baseline: Anthropic -> Gemini", o, "/anthropic/v1/messages",
                         "anthropic-gemini.json", c, extra_header="anthropic-version: 2023-06-01"),
            ]  # fmt: skip
        if stack.gov_port:
            v = stack.gov_port
            out += [
                Scenario(f"gov-pass-c{c}", "governed", "governed (Redis): OpenAI -> OpenAI", v,
                         "/openai/v1/chat/completions", "openai-gpt.json", c, auth=GOV_KEY),
                Scenario(f"gov-oa2an-c{c}", "governed", "governed (Redis): OpenAI -> Anthropic", v,
                         "/openai/v1/chat/completions", "openai-claude.json", c, auth=GOV_KEY),
                Scenario(f"gov-an2ge-c{c}", "governed", "governed (Redis): Anthropic -> Gemini", v,
                         "/anthropic/v1/messages", "anthropic-gemini.json", c, auth=GOV_KEY,
                         extra_header="anthropic-version: 2023-06-01"),
            ]  # fmt: skip
        if with_litellm:
            out.append(
                Scenario(f"litellm-oa2an-c{c}", "litellm", "LiteLLM proxy: OpenAI -> Anthropic", stack.litellm_port,
                         "/v1/chat/completions", "openai-claude.json", c, auth=MASTER_KEY)
            )  # fmt: skip
    out += [
        Scenario("floor-stream-c64", "floor", "bare Envoy -> SSE provider (20 events)", b, "/sse/v1/messages",
                 "anthropic-stream.json", 64, stream=True),
        Scenario("gw-stream-c64", "gateway", "OpenAI -> Anthropic SSE, 20 events (translated)", g,
                 "/openai/v1/chat/completions", "openai-claude-stream.json", 64, stream=True),
    ]  # fmt: skip
    if stack.gov_port:
        out.append(
            Scenario("gov-stream-c64", "governed", "governed (Redis): OpenAI -> Anthropic SSE, 20 events",
                     stack.gov_port, "/openai/v1/chat/completions", "openai-claude-stream.json", 64, stream=True,
                     auth=GOV_KEY)
        )  # fmt: skip
    if stack.base_port:
        out.append(
            Scenario("base-stream-c64", "baseline", "baseline: OpenAI -> Anthropic SSE, 20 events", stack.base_port,
                     "/openai/v1/chat/completions", "openai-claude-stream.json", 64, stream=True)
        )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------------- profile
def profile(args: argparse.Namespace, wrk: str, stack: Stack, sc: Scenario) -> dict[str, Any]:
    """py-spy on one worker while ``sc`` runs: a flame graph (svg) and the top self/total costs from raw stacks."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    pid = stack.workers[0]
    secs = max(int(args.duration), 3)
    result: dict[str, Any] = {"pid": pid, "scenario": sc.name, "seconds": secs}
    raw = RESULTS / "profile.txt"
    for fmt, path in (("flamegraph", RESULTS / "profile.svg"), ("raw", raw)):
        spy = subprocess.Popen(
            [pyspy, "record", "--native", "-r", "250", "-d", str(secs), "-f", fmt, "-o", str(path),
             "--pid", str(pid)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        time.sleep(1.0)
        run_wrk(wrk, sc, secs)
        out, _ = spy.communicate(timeout=120)
        if spy.returncode != 0:
            return {"error": f"py-spy failed: {out.decode(errors='replace')[-500:]}"}
    result["top"] = top_costs(raw.read_text())
    raw.unlink()
    return result


IDLE_LEAVES = ("epoll_wait", "epoll_pwait", "poll (", "select (", "pthread_cond_wait", "pthread_cond_timedwait")


def top_costs(collapsed: str, n: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the busy samples per function, from py-spy's collapsed stacks.

    With --native py-spy also samples threads blocked in epoll_wait (grpc's poller, the idle event loop): those
    samples are counted as idle and left out of the shares.
    """
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    areas = dict.fromkeys(AREAS, 0)
    total = idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [re.sub(r" \((?:[^()]*/)?([^/()]+):\d+\)$", r" (\1)", f) for f in stack.split(";")]
        if frames and frames[-1].startswith(IDLE_LEAVES):
            idle += k
            continue
        total += k
        if frames:
            self_c[frames[-1]] = self_c.get(frames[-1], 0) + k
        for f in set(frames):
            incl[f] = incl.get(f, 0) + k
        for name, hit in AREAS.items():
            if hit(frames):
                areas[name] += k

    def top(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, round(100 * v / max(total, 1), 1)) for f, v in sorted(d.items(), key=lambda x: -x[1])[:n]]

    out: dict[str, Any] = {"busy_samples": total, "idle_samples": idle}
    out["areas_pct"] = {k: round(100 * v / max(total, 1), 1) for k, v in areas.items()}
    out["self_pct"], out["inclusive_pct"] = top(self_c), top(incl)
    return out


# Where a worker's busy time goes, by area (a stack counts in every area it touches).
AREAS: dict[str, Any] = {
    "ExtProc.handle (inclusive: routing, translation, protobuf answers)": lambda fs: any(
        f.startswith("ExtProc.handle (servicer.py") for f in fs
    ),
    "Exchange (routing + translation)": lambda fs: any(f.startswith("Exchange.") or "(exchange.py" in f for f in fs),
    "format modules": lambda fs: any(re.search(r"\((openai|anthropic|gemini)\.py", f) for f in fs),
    "protobuf in/out (servicer helpers, parse, serialize)": lambda fs: (
        any(
            re.match(r"(_answer|_fill|_mutation|_header_blob|_headers|_finish|_immediate|message) \(servicer", f)
            for f in fs
        )
        and not any("(exchange.py" in f for f in fs)
    ),
    "grpc_wire: HTTP/2 frames and gRPC framing (own Python)": lambda fs: (
        any("(grpc_wire.py" in f for f in fs) and not any("(servicer.py" in f for f in fs)
    ),
    "HPACK decoding (hpack)": lambda fs: any("(hpack.py" in f or "(huffman" in f for f in fs),
    "metrics (prometheus multiprocess)": lambda fs: any(
        x in f for f in fs for x in ("(metrics.py", "(values.py", "(mmap_dict.py")
    ),
    "log line (logs.py)": lambda fs: any("(logs.py" in f for f in fs),
    "socket syscalls (send/recv/write/read)": lambda fs: (
        bool(fs) and fs[-1].startswith(("send", "sendmsg", "recv", "write (", "read (", "__libc_send", "__libc_recv"))
    ),
    "event loop (asyncio outside our callbacks)": lambda fs: (
        any("(base_events.py" in f for f in fs)
        and not any(x in f for f in fs for x in ("(grpc_wire.py", "(metrics.py", "(logs.py"))
    ),
}


# ------------------------------------------------------------------------------------------------------- report
def tracing_ratios(res: dict[str, Any]) -> dict[str, Any]:
    """--tracing: the traced gateway against the same checkout untraced (--baseline-root .), and the bare Envoy with
    the same tracer against the plain one: what Envoy's tracing costs by itself. Same run, whichever pairs ran."""
    s = {x["name"]: x for x in res["scenarios"]}
    r: dict[str, Any] = {}
    pairs = [(f"{n}-c{c}", f"gw-{n}-c{c}", f"base-{n}-c{c}") for n in ("pass", "oa2an", "an2ge") for c in (1, 32)]
    pairs += [("stream-c64", "gw-stream-c64", "base-stream-c64")]
    pairs += [(f"bare-envoy-c{c}", f"floor-traced-c{c}", f"floor-c{c}") for c in (1, 32)]
    for label, on_name, off_name in pairs:
        on, off = s.get(on_name), s.get(off_name)
        if on is None or off is None:
            continue
        r[f"traced_vs_untraced_rps_{label}"] = round(on["rps"] / off["rps"], 3)
        for role in ("service", "envoy"):
            if role in on["cpu_us_per_req"] and role in off["cpu_us_per_req"]:
                r[f"traced_minus_untraced_{role}_us_{label}"] = round(
                    on["cpu_us_per_req"][role] - off["cpu_us_per_req"][role], 1
                )
    return r


def governance_ratios(res: dict[str, Any]) -> dict[str, Any]:
    """--governance: the governed gateway (keys, limits and spend in Redis) against the plain one, same run."""
    s = {x["name"]: x for x in res["scenarios"]}
    r: dict[str, Any] = {}
    for n in ("pass-c1", "pass-c32", "oa2an-c1", "oa2an-c32", "an2ge-c1", "an2ge-c32", "stream-c64"):
        cur, plain = s.get(f"gov-{n}"), s.get(f"gw-{n}")
        if cur is None or plain is None:
            continue
        r[f"governed_vs_plain_rps_{n}"] = round(cur["rps"] / plain["rps"], 3)
        r[f"governed_minus_plain_service_us_{n}"] = round(
            cur["cpu_us_per_req"]["service"] - plain["cpu_us_per_req"]["service"], 1
        )
        r[f"governed_redis_us_{n}"] = cur["cpu_us_per_req"].get("redis")
        r[f"governed_minus_plain_p50_ms_{n}"] = round(cur["p50_ms"] - plain["p50_ms"], 3)
    return r


def ratios_and_targets(res: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    s = {x["name"]: x for x in res["scenarios"]}
    r: dict[str, Any] = {}
    cross = [n for n in ("gw-oa2an", "gw-an2ge")]
    for name in ("gw-pass", *cross):
        r[f"{name}_vs_floor_rps_c32"] = round(s[f"{name}-c32"]["rps"] / s["floor-c32"]["rps"], 3)
        r[f"{name}_added_p50_ms_c1"] = round(s[f"{name}-c1"]["p50_ms"] - s["floor-c1"]["p50_ms"], 3)
    if "litellm-oa2an-c32" in s:
        for c in (1, 32):
            r[f"gw_vs_litellm_rps_c{c}"] = round(s[f"gw-oa2an-c{c}"]["rps"] / s[f"litellm-oa2an-c{c}"]["rps"], 2)
    tt = res.get("ttfb")
    if tt:
        r["stream_added_ttfb_head_p50_ms"] = round(tt["gateway"]["head"]["p50_ms"] - tt["floor"]["head"]["p50_ms"], 3)
        r["stream_added_first_event_p50_ms"] = round(
            tt["gateway"]["first_event"]["p50_ms"] - tt["floor"]["first_event"]["p50_ms"], 3
        )
    r["stream_vs_floor_rps_c64"] = round(s["gw-stream-c64"]["rps"] / s["floor-stream-c64"]["rps"], 3)
    # Fallback models against the same request to a single-target model (OpenAI -> Anthropic), same gateway, same run.
    for n in ("fb", "fbretry"):
        for c in (1, 32):
            cur, single = s[f"gw-{n}-c{c}"], s[f"gw-oa2an-c{c}"]
            r[f"{n}_vs_single_rps_c{c}"] = round(cur["rps"] / single["rps"], 3)
            r[f"{n}_vs_single_service_cpu_c{c}"] = round(
                cur["cpu_us_per_req"]["service"] / single["cpu_us_per_req"]["service"], 3
            )
            r[f"{n}_minus_single_envoy_us_c{c}"] = round(
                cur["cpu_us_per_req"]["envoy"] - single["cpu_us_per_req"]["envoy"], 1
            )
    for c in (1, 32):  # the clouds against the nearest non-cloud request, same gateway, same run
        for cloud, near in (("oa2az", "pass"), ("oa2br", "oa2an"), ("oa2vx", "oa2an")):
            cur, ref = s[f"gw-{cloud}-c{c}"], s[f"gw-{near}-c{c}"]
            r[f"{cloud}_vs_{near}_rps_c{c}"] = round(cur["rps"] / ref["rps"], 3)
            r[f"{cloud}_minus_{near}_service_us_c{c}"] = round(
                cur["cpu_us_per_req"]["service"] - ref["cpu_us_per_req"]["service"], 1
            )
            r[f"{cloud}_minus_{near}_envoy_us_c{c}"] = round(
                cur["cpu_us_per_req"]["envoy"] - ref["cpu_us_per_req"]["envoy"], 1
            )
    for c in (1, 32):  # the Responses API against Chat Completions, both translated to Anthropic, in the same run
        r[f"responses_vs_chat_rps_c{c}"] = round(s[f"gw-rs2an-c{c}"]["rps"] / s[f"gw-oa2an-c{c}"]["rps"], 3)
        r[f"responses_store_vs_chat_rps_c{c}"] = round(s[f"gw-rs2an-store-c{c}"]["rps"] / s[f"gw-oa2an-c{c}"]["rps"], 3)
    if "base-pass-c32" in s:  # this checkout against --baseline-root, same run: throughput ratio, CPU difference
        for n in ("pass", "oa2an", "an2ge"):
            for c in (1, 32):
                cur, base = s[f"gw-{n}-c{c}"], s[f"base-{n}-c{c}"]
                r[f"{n}_vs_baseline_rps_c{c}"] = round(cur["rps"] / base["rps"], 3)
                r[f"{n}_minus_baseline_service_us_c{c}"] = round(
                    cur["cpu_us_per_req"]["service"] - base["cpu_us_per_req"]["service"], 1
                )
                r[f"{n}_minus_baseline_envoy_us_c{c}"] = round(
                    cur["cpu_us_per_req"]["envoy"] - base["cpu_us_per_req"]["envoy"], 1
                )
        r["stream_vs_baseline_rps_c64"] = round(s["gw-stream-c64"]["rps"] / s["base-stream-c64"]["rps"], 3)

    t: list[dict[str, Any]] = []

    def target(name: str, goal: str, value: Any, met: bool | None, note: str = "") -> None:
        t.append({"target": name, "goal": goal, "measured": value, "met": met, "note": note})

    worst = min(r[f"{n}_vs_floor_rps_c32"] for n in cross)
    target("cross-format throughput at c=32 vs bare Envoy", ">= 20%", f"{worst:.1%}", worst >= 0.20,
           "worst of OpenAI->Anthropic, Anthropic->Gemini")  # fmt: skip
    cpu = max(s[f"{n}-c32"]["cpu_us_per_req"]["service"] for n in cross)
    cpu1 = max(s[f"{n}-c1"]["cpu_us_per_req"]["service"] for n in cross)
    target("service CPU per cross-format request", "<= 350 us", f"{cpu:.0f} us (c=1: {cpu1:.0f} us)", cpu <= 350,
           "worst cross pair at c=32; sum of all workers")  # fmt: skip
    p99 = max(s[f"{n}-c32"]["p99_ms"] for n in ("gw-pass", *cross))
    target("p99 at c=32", "<= 50 ms", f"{p99:.1f} ms", p99 <= 50, "worst gateway JSON scenario, worst round")
    added = max(r[f"{n}_added_p50_ms_c1"] for n in ("gw-pass", *cross))
    target("added p50 at c=1 vs bare Envoy", "<= 1 ms", f"{added:.3f} ms", added <= 1.0, "worst gateway scenario")
    if tt:
        a = r["stream_added_first_event_p50_ms"]
        h = r["stream_added_ttfb_head_p50_ms"]
        target("streaming added TTFB, unloaded (p50)", "<= 2 ms", f"{a:.3f} ms (head: {h:.3f} ms)", a <= 2.0,
               "first SSE event; head = response headers")  # fmt: skip
    fb = max(r["fb_vs_single_service_cpu_c32"], r["fb_vs_single_service_cpu_c1"])
    target("fallback model, first attempt answers: service CPU vs single-target", "<= 1.5x", f"{fb:.2f}x",
           fb <= 1.5, "OpenAI -> Anthropic, fallback model vs plain model; worse of c=1 and c=32")  # fmt: skip
    if "oa2an_vs_baseline_rps_c32" in r:
        worst_b = min(r[f"{n}_vs_baseline_rps_c{c}"] for n in ("pass", "oa2an", "an2ge") for c in (1, 32))
        target("single-target throughput vs --baseline-root (same run)", ">= 0.95", f"{worst_b:.3f}",
               worst_b >= 0.95, "worst of pass-through and both cross pairs, c=1 and c=32")  # fmt: skip
    rs = min(r["responses_vs_chat_rps_c1"], r["responses_vs_chat_rps_c32"])
    kept = r["responses_store_vs_chat_rps_c32"]
    target("Responses -> Anthropic throughput vs OpenAI Chat -> Anthropic", ">= 90%", f"{rs:.1%}", rs >= 0.90,
           f"worse of c=1 and c=32, store: false; kept in the store: {kept:.1%} at c=32")  # fmt: skip
    if "gw_vs_litellm_rps_c32" in r:
        x = r["gw_vs_litellm_rps_c32"]
        target("throughput vs LiteLLM proxy (same cores), c=32", ">= 10x", f"{x:.1f}x", x >= 10,
               f"c=1: {r['gw_vs_litellm_rps_c1']:.1f}x")  # fmt: skip
    else:
        target("throughput vs LiteLLM proxy (same cores)", ">= 10x", "not run", None, "run with --with-litellm")
    gov = governance_ratios(res)
    r.update(gov)
    if "governed_vs_plain_rps_oa2an-c32" in gov:
        worst = min(gov[f"governed_vs_plain_rps_{n}-c32"] for n in ("oa2an", "an2ge"))
        target("cross-format throughput with Redis governance vs without (c=32)", ">= 85%", f"{worst:.1%}",
               worst >= 0.85, "worst of OpenAI->Anthropic, Anthropic->Gemini; same run")  # fmt: skip
    trace = tracing_ratios(res)
    r.update(trace)
    if "traced_vs_untraced_rps_oa2an-c32" in trace:
        worst = min(trace[f"traced_vs_untraced_rps_{n}-c32"] for n in ("pass", "oa2an", "an2ge"))
        bare = trace.get("traced_vs_untraced_rps_bare-envoy-c32", 0.0)
        sampled = res.get("options", {}).get("tracing") or 1.0
        target(f"throughput tracing {sampled:.0%} vs off (c=32)", ">= 90%", f"{worst:.1%}", worst >= 0.90,
               f"worst of pass-through and both cross pairs; bare Envoy with the same tracer: {bare:.1%}")  # fmt: skip
    mem = res.get("memory")
    if mem:
        g = mem["growth_mb_max_worker"]
        target(f"service RSS after {mem['after_n']} vs after {mem['base_n']} requests", "+ <= 10 MB",
               f"+{g:.1f} MB per worker (total +{mem['growth_mb_total']:.1f} MB)", g <= 10)  # fmt: skip
    return r, t


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        f"# ai-gateway benchmark ({res['label']})",
        "",
        f"- date: {res['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory']}, Linux {m['kernel']}, Python {m['python']}, "
        f"Envoy {m['envoy']}, {m['wrk']}",
        f"- command: `{res['command']}`",
        f"- gateway: {res['options']['workers']} extproc workers, extproc transport "
        f"{res['options']['extproc_listen'] or 'UDS (default)'}; each scenario {res['options']['rounds']} x "
        f"{res['options']['duration']:g} s, rounds interleaved; p50 = median of rounds, p99 = worst round",
        "",
        "| scenario | what | c | req/s | p50 ms | p99 ms | service CPU us/req | Envoy CPU us/req | ext_proc msgs/req "
        "| service RSS MB | errors | other jobs (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res["scenarios"]:
        cpu = s["cpu_us_per_req"]
        svc = f"{cpu['service']:.0f}" if "service" in cpu else "-"
        env = f"{cpu['envoy']:.0f}" if "envoy" in cpu else "-"
        if s["stream"]:
            ev = s["cpu_us_per_event"]
            svc += f" ({ev['service']:.0f}/event)" if "service" in ev else ""
            env += f" ({ev['envoy']:.0f}/event)"
        lines.append(
            f"| {s['name']} | {s['what']} | {s['concurrency']} | {s['rps']:.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {svc} | {env} | {s.get('extproc_msgs_per_req', '-')} | "
            f"{s.get('service_rss_mb', '-')} | {s['errors']} | {s['foreign_cores_max']:.2f} |"
        )
    tt = res.get("ttfb")
    if tt:
        lines += ["", f"Streaming TTFB, unloaded, {tt['gateway']['head']['n']} samples each (alternating):", ""]
        lines += [
            "| target | head p50 ms | head p99 ms | first event p50 ms | first event p99 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for k in ("floor", "gateway"):
            h, f = tt[k]["head"], tt[k]["first_event"]
            lines.append(f"| {k} | {h['p50_ms']:.3f} | {h['p99_ms']:.3f} | {f['p50_ms']:.3f} | {f['p99_ms']:.3f} |")
    mem = res.get("memory")
    if mem:
        lines += [
            "",
            f"Memory: service RSS per worker after {mem['base_n']} requests {mem['base_mb']} MB, after "
            f"{mem['after_n']} requests {mem['after_mb']} MB.",
        ]
    lines += ["", "Ratios:", ""]
    lines += [f"- {k}: {v}" for k, v in res["ratios"].items()]
    lines += ["", "| target | goal | measured | met | note |", "|---|---|---|---|---|"]
    for t in res["targets"]:
        met = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        lines.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {met} | {t['note']} |")
    prof = res.get("profile")
    if prof and "top" in prof:
        lines += ["", f"Profile (py-spy --native, worker {prof['pid']}, {prof['scenario']}, {prof['seconds']} s): "
                  "busy time by area", ""]  # fmt: skip
        lines += [f"- {pct}% {name}" for name, pct in prof["top"]["areas_pct"].items()]
        lines += ["", "top self time (busy samples only):", ""]
        lines += [f"- {pct}% {name}" for name, pct in prof["top"]["self_pct"][:15]]
        lines += ["", "top inclusive (busy samples only):", ""]
        lines += [f"- {pct}% {name}" for name, pct in prof["top"]["inclusive_pct"][:40]]
    if res.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description="ai-gateway benchmark harness (see benchmarks/README.md)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per scenario run (default: 10)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per scenario (default 2, quick 1)")
    ap.add_argument("--with-litellm", action="store_true", help="also benchmark the LiteLLM proxy (installs it)")
    ap.add_argument("--quick", action="store_true", help="short smoke run: 3 s, 1 round, fewer samples and requests")
    ap.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) // 2),
        help="extproc workers (default: the gateway's, half the cores)",
    )
    ap.add_argument("--extproc-listen", default=None, help="passed to the gateway, e.g. 127.0.0.1:PORT (TCP)")
    ap.add_argument("--provider-threads", type=int, default=1, help="provider Envoy --concurrency (default: 1)")
    ap.add_argument("--ttfb-samples", type=int, default=None, help="unloaded stream samples per target (default 400)")
    ap.add_argument("--memory-requests", type=int, default=None, help="requests for the RSS check (default 100000)")
    ap.add_argument("--profile", action="store_true", help="py-spy a worker under c=32 cross-format load")
    ap.add_argument("--gateway-root", default=str(ROOT), help="run `python -m extproc` from here (A/B a patched copy)")
    ap.add_argument(
        "--baseline-root",
        default=None,
        help="also run the gateway from this checkout (e.g. `git worktree add /tmp/base <commit>`) and measure both in "
        "the same run, interleaved: ratios *_vs_baseline",
    )
    ap.add_argument(
        "--governance",
        action="store_true",
        help="also run the gateway with gateway keys and governance limits in a real redis-server (redis-server "
        "must be installed), measured in the same run: ratios governed_vs_plain_*",
    )
    ap.add_argument("--quiet-wait", type=float, default=20, help="max s to wait for other jobs' CPU before a run")
    ap.add_argument(
        "--tracing",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="RATIO",
        help="the gateway under test traces requests (all, or RATIO of them) to an OTLP sink (docs/tracing.md); with "
        "--baseline-root (e.g. .) the traced_vs_untraced ratios are tracing on against off, in the same run; a second "
        "bare Envoy with the same tracer (floor-traced-*) shows what Envoy's tracing costs by itself",
    )
    ap.add_argument("--only", default=None, help="regex: run only matching scenarios (no ratios/targets if partial)")
    ap.add_argument("--label", default="latest", help="results/<label>.json and .md (default: latest)")
    args = ap.parse_args()
    if args.quick:
        args.duration = min(args.duration, 3.0)
    rounds = args.rounds or (1 if args.quick else 2)
    ttfb_n = args.ttfb_samples or (100 if args.quick else 400)
    mem_n = args.memory_requests or (20_000 if args.quick else 100_000)
    args.litellm_install_s = None

    wrk = find_wrk()
    envoy_bin = find_envoy()
    RESULTS.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ai-gateway-bench-"))
    procs = Procs(tmp)
    res: dict[str, Any] = {
        "label": args.label,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(envoy_bin, wrk),
        "options": {
            "duration": args.duration,
            "rounds": rounds,
            "workers": args.workers,
            "extproc_listen": args.extproc_listen,
            "provider_threads": args.provider_threads,
            "stream_events": STREAM_EVENTS,
            "gateway_root": args.gateway_root,
            "baseline_root": args.baseline_root,
            "tracing": args.tracing,
            "governance": args.governance,
        },
        "notes": [],
    }
    try:
        log("starting provider, SSE server, bare Envoy, gateway" + (", LiteLLM" if args.with_litellm else ""))
        stack = start_stack(args, procs, envoy_bin, tmp)
        if args.litellm_install_s:
            res["notes"].append(f"LiteLLM installed in {args.litellm_install_s:.0f} s")
        all_sc = scenarios(stack, args.with_litellm)
        if args.only:
            all_sc = [s for s in all_sc if re.search(args.only, s.name)]
        for sc in all_sc:
            smoke(sc)
        cross_target = client.Target(
            "127.0.0.1", stack.gw_port, "/openai/v1/chat/completions", (BODIES / "openai-claude.json").read_bytes()
        )
        base_n = min(1000, mem_n)
        full = not args.only
        if full:
            # Memory baseline: exactly base_n cross-format requests on the fresh gateway.
            ok = client.fire(cross_target, base_n, concurrency=4)
            base = {p: rss_mb(p) for p in stack.workers}
            done0 = admin_stats(stack.gw_admin, r"^http\.ingress\.downstream_rq_completed$")
            log(f"memory baseline after {base_n} requests ({ok} ok): {', '.join(f'{v:.1f}' for v in base.values())} MB")
            # Streaming TTFB, unloaded, alternating floor and gateway.
            log(f"streaming TTFB: {ttfb_n} samples per target")
            sbody = BODIES / "anthropic-stream.json"
            res["ttfb"] = client.ttfb(
                {
                    "floor": client.Target("127.0.0.1", stack.bare_port, "/sse/v1/messages", sbody.read_bytes()),
                    "gateway": client.Target(
                        "127.0.0.1",
                        stack.gw_port,
                        "/openai/v1/chat/completions",
                        (BODIES / "openai-claude-stream.json").read_bytes(),
                    ),
                },
                samples=ttfb_n,
            )
            log(f"TTFB: {json.dumps(res['ttfb'])}")
        for r in range(rounds):
            for sc in all_sc:
                quiet = wait_quiet(args.quiet_wait)
                if quiet >= 0.15:
                    log(f"machine not quiet ({quiet:.2f} cores used by others): measuring anyway")
                run = measure(wrk, stack, sc, args.duration)
                sc.runs.append(run)
                cpu = " ".join(f"{k}={v:.0f}us" for k, v in run["cpu_us_per_req"].items())
                log(f"round {r + 1}/{rounds} {sc.name:<20} {run['rps']:8.0f} req/s  p50 {run['p50_ms']:7.2f} ms  "
                    f"p99 {run['p99_ms']:7.2f} ms  err {run['errors']}  {cpu}  "
                    f"others={run['foreign_cores']:.2f} cores")  # fmt: skip
        res["scenarios"] = [aggregate(sc) for sc in all_sc]
        if full:
            load = Scenario("memory-fill", "gateway", "", stack.gw_port, "/openai/v1/chat/completions",
                            "openai-claude.json", 32)  # fmt: skip
            stat = r"^http\.ingress\.downstream_rq_completed$"
            while True:
                n = sum(admin_stats(stack.gw_admin, stat).values()) - sum(done0.values()) + base_n
                if n >= mem_n:
                    break
                rps = max(res["scenarios"][[s.name for s in all_sc].index("gw-oa2an-c32")]["rps"], 200)
                secs = min(max((mem_n - n) / rps * 1.1, 2), 120)
                log(f"memory check: {n} requests so far, wrk for {secs:.0f} s more")
                run_wrk(wrk, load, secs)
            after = {p: rss_mb(p) for p in stack.workers}
            res["memory"] = {
                "base_n": base_n,
                "after_n": n,
                "base_mb": [round(v, 1) for v in base.values()],
                "after_mb": [round(v, 1) for v in after.values()],
                "growth_mb_max_worker": round(max(after[p] - base[p] for p in base), 1),
                "growth_mb_total": round(sum(after.values()) - sum(base.values()), 1),
                "traffic": "the baseline is cross-format only; the rest is every scenario above plus OpenAI->Anthropic",
            }
            log(f"memory: {res['memory']}")
            res["ratios"], res["targets"] = ratios_and_targets(res)
        else:
            res["ratios"], res["targets"] = {**governance_ratios(res), **tracing_ratios(res)}, []
        if args.profile:
            log("profiling a worker with py-spy under OpenAI->Anthropic c=32")
            target = next(s for s in scenarios(stack, False) if s.name == "gw-oa2an-c32")
            res["profile"] = profile(args, wrk, stack, target)
        if args.with_litellm and stack.litellm_proc is not None:
            res["litellm"] = {
                "workers": os.cpu_count(),
                "version": subprocess.run(
                    [str(LITELLM_VENV / "bin" / "python"), "-c", "import importlib.metadata as m;"
                     "print(m.version('litellm'))"], capture_output=True, text=True).stdout.strip(),
            }  # fmt: skip
    finally:
        procs.stop_all()
    if args.tracing:
        sink = [ln for ln in procs.log_tail("otlp-sink").splitlines() if ln.startswith("otlp-sink:")]
        res["notes"].append(sink[-1] if sink else "the OTLP sink reported nothing")
    gw_log = tmp / "gateway.log"
    errors = [ln for ln in gw_log.read_text(errors="replace").splitlines() if '"level":"error"' in ln][:5]
    if errors:
        res["notes"].append(f"gateway logged errors, e.g. {errors[0][:300]}")
    shutil.rmtree(tmp, ignore_errors=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(res, indent=1) + "\n")
    (RESULTS / f"{args.label}.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
