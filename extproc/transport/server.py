"""One extproc worker process: the ext_proc service on ``grpc_wire`` (or grpc.aio with ``AI_GATEWAY_GRPC=grpcio``).

``ai-gateway extproc`` runs this alone (docker-compose, meshes); the launcher runs one per worker. SIGTERM drains:
``/health`` turns 503, streams in flight finish (up to the grace period), then the process exits 0. SIGUSR1 only
marks the worker as draining (the launcher sends it while Envoy drains). SIGHUP reloads the config.

Both transports get the same resource limits (``grpc_wire.Limits``; grpc.aio the subset it has options for) and,
with ``TlsFiles``, mTLS: the service's certificate, and client certificates required, checked against a CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.core.address import Address
from extproc.core.config import Config, ConfigError, load_config
from extproc.core.exchange import Gateway
from extproc.core.record import Record
from extproc.observability import logs
from extproc.observability.metrics import Metrics
from extproc.observability.tracing import Tracer
from extproc.transport.governor import Governor
from extproc.transport.grpc_wire import Limits, Server, server_tls
from extproc.transport.response_store import SqliteStore
from extproc.transport.servicer import ExternalProcessor, ExtProc

log = logging.getLogger("extproc")

# "wire": grpc_wire, this project's HTTP/2 server (the default: ~6x less CPU per request, benchmarks/README.md);
# "grpcio": grpc.aio, kept as a reference implementation and fallback.
TRANSPORTS = ("wire", "grpcio")
MiB = 1024 * 1024
# what a message may add to the largest body it carries (headers, protobuf framing)
MESSAGE_OVERHEAD = 1 * MiB


@dataclass(slots=True, frozen=True)
class TlsFiles:
    """PEM files for mTLS on the service's port: its certificate chain and key, and the CA client certificates must
    chain to."""

    cert: str
    key: str
    client_ca: str


def limits_for(max_request_bytes: int, base: Limits | None = None) -> Limits:
    """The transport limits for a config: a message holds a body of up to ``max_request_bytes`` plus overhead, and a
    connection may buffer at least three such messages. ``base`` (the operator's overrides) wins where it is larger."""
    base = base if base is not None else Limits()
    message = max(base.max_message, max_request_bytes + MESSAGE_OVERHEAD)
    return replace(base, max_message=message, max_buffered_in=max(base.max_buffered_in, 3 * message))


def grpc_options(limits: Limits) -> list[tuple[str, int]]:
    """grpc.aio's nearest equivalents of ``limits`` (it has none for buffered bytes, CONTINUATION frames, SETTINGS
    or resets; ``docs/transport.md`` compares the two under attack)."""
    ms = lambda seconds: int(seconds * 1000)  # noqa: E731
    options = [
        ("grpc.max_receive_message_length", limits.max_message),
        ("grpc.max_send_message_length", 128 * MiB),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        ("grpc.max_metadata_size", limits.max_header_list),
        # client PINGs: more than one a second without data in between is a strike; the third strike is a GOAWAY
        # ENHANCE_YOUR_CALM (grpc's default interval, 5 minutes, would strike an Envoy configured with keepalive)
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if limits.handshake_timeout:
        options.append(("grpc.server_handshake_timeout_ms", ms(limits.handshake_timeout)))
    if limits.idle_timeout:
        options.append(("grpc.max_connection_idle_ms", ms(limits.idle_timeout)))
    if limits.keepalive_interval:
        options.append(("grpc.keepalive_time_ms", ms(limits.keepalive_interval)))
        options.append(("grpc.keepalive_timeout_ms", ms(limits.keepalive_timeout)))
        options.append(("grpc.keepalive_permit_without_calls", 1))
    return options


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _check_readable(tls: TlsFiles) -> None:
    """Name the file that cannot be read (``ssl`` and grpc only say that one could not)."""
    for flag, path in (("--tls-cert", tls.cert), ("--tls-key", tls.key), ("--tls-client-ca", tls.client_ca)):
        try:
            _read(path)
        except OSError as exc:
            raise OSError(f"{flag} {path}: {exc.strerror or exc}") from None


def open_store(cfg: Config) -> SqliteStore | None:
    """The Responses API conversation store the config asks for (opened lazily, on first use)."""
    return SqliteStore.in_dir(cfg.responses) if cfg.responses.enabled else None


def make_recorder(metrics: Metrics):
    """What happens when an exchange ends: one metric update and one JSON log line (client requests only)."""

    def on_done(rec: Record, overhead: float, active: bool) -> None:
        if not rec.counted:
            return
        duration = time.monotonic() - rec.started
        metrics.done(rec, duration, overhead, active)
        if rec.adaptations and log.isEnabledFor(logging.DEBUG):
            logs.write(logs.adaptation_line(rec))
        logs.write(logs.request_line(rec, duration))

    return on_done


async def serve(
    config_path: str,
    listen: str,
    grace: float = 30.0,
    verbose: bool = False,
    limits: Limits | None = None,
    tls: TlsFiles | None = None,
) -> int:
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    transport = os.environ.get("AI_GATEWAY_GRPC", "wire")
    if transport not in TRANSPORTS:
        log.error("AI_GATEWAY_GRPC=%s: must be one of %s", transport, ", ".join(TRANSPORTS))
        return 1
    gateway = Gateway(cfg, open_store(cfg))
    metrics = Metrics()
    governor = Governor(cfg.governance, dict(os.environ), metrics) if cfg.governance.enabled else None
    tracer = None
    if cfg.tracing is not None:  # OpenTelemetry only when configured: otherwise not even imported
        tracer = Tracer(cfg.tracing)
    proc = ExtProc(gateway, make_recorder(metrics), metrics, governor, tracer)
    addr = Address.parse(listen)
    limits = limits_for(cfg.max_request_bytes, limits)
    server: Server | grpc.aio.Server
    try:
        if tls is not None:
            _check_readable(tls)
        if transport == "grpcio":
            server = grpc.aio.server(options=grpc_options(limits))
            pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(proc), server)
            if addr.path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(addr.path)
            if tls is None:
                server.add_insecure_port(addr.grpc_target())
            else:
                pair = [(_read(tls.key), _read(tls.cert))]
                creds = grpc.ssl_server_credentials(pair, _read(tls.client_ca), require_client_auth=True)
                server.add_secure_port(addr.grpc_target(), creds)
            await server.start()
        else:
            server = Server(proc, limits, metadata=("traceparent",) if tracer is not None else ())
            context = server_tls(tls.cert, tls.key, tls.client_ca) if tls is not None else None
            await server.listen(addr.host, addr.port, addr.path, ssl=context)
    except (OSError, ValueError) as exc:  # unreadable or mismatched TLS files, address in use
        log.error("extproc worker cannot serve on %s: %s", addr, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def drain() -> None:
        gateway.draining = True

    def reload() -> None:
        try:
            new = load_config(config_path)
            if new.responses != gateway.config.responses:
                gateway.store = open_store(new)  # exchanges in flight finish with the old one
            gateway.config = new
            if proc.governor is not None:
                proc.governor.reconfigure(new.governance, dict(os.environ))
            elif new.governance.enabled:
                proc.governor = Governor(new.governance, dict(os.environ), metrics)
            log.info("config reloaded from %s: %d models", config_path, len(gateway.config.models))
        except ConfigError as exc:
            log.error("config reload rejected, keeping the old config: %s", exc)

    actions = {signal.SIGTERM: stop.set, signal.SIGINT: stop.set, signal.SIGUSR1: drain, signal.SIGHUP: reload}
    with _signals(loop, actions):
        log.info(  # only now: whoever reads it (the tests, an operator) may signal the worker at once
            "extproc worker %d serving on %s (%s, %s, %d models)",
            os.getpid(), addr, transport, "mTLS" if tls is not None else "no TLS", len(cfg.models),
        )  # fmt: skip
        await stop.wait()
        gateway.draining = True
        log.info("extproc worker %d draining (up to %.0fs)", os.getpid(), grace)
        await server.stop(grace)
        if proc.governor is not None:
            with contextlib.suppress(Exception):  # the last charges, if the store takes them
                await proc.governor.close()
        metrics.flush()
        logs.flush()
        if tracer is not None:
            tracer.shutdown()
    return 0


def run(
    config_path: str,
    listen: str,
    grace: float = 30.0,
    verbose: bool = False,
    limits: Limits | None = None,
    tls: TlsFiles | None = None,
) -> int:
    return asyncio.run(serve(config_path, listen, grace, verbose, limits, tls))


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, actions: dict[signal.Signals, Callable[[], None]]) -> Iterator[None]:
    """The worker's signals while it serves, as Python handlers that hand the work to the loop, and ignored after.

    Not ``loop.add_signal_handler``: closing the loop gives its signals back their default action while the process
    still runs, and one more TERM (or the launcher's drain signal, USR1) in that moment ended the worker with -15
    (-10). Like ``add_signal_handler`` it sets the wakeup fd (a socket pair the loop reads), so a signal wakes the loop
    at once, also one that arrives just before the loop waits or in another thread (a signal's Python handler runs
    in the main thread when it next runs Python code). Once serving ends the signals are ignored: the worker is
    stopping, and a late one is moot."""
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)

    def empty() -> None:
        with contextlib.suppress(OSError):
            while rsock.recv(4096):
                pass

    def handler(action: Callable[[], None]) -> Callable[[int, object], None]:
        def on_signal(_signum: int, _frame: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: the worker is on its way out
                loop.call_soon_threadsafe(action)

        return on_signal

    loop.add_reader(rsock.fileno(), empty)
    previous = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
    try:
        for sig, action in actions.items():
            signal.signal(sig, handler(action))
        yield
    finally:
        for sig in actions:
            signal.signal(sig, signal.SIG_IGN)
        signal.set_wakeup_fd(previous)
        loop.remove_reader(rsock.fileno())
        rsock.close()
        wsock.close()
