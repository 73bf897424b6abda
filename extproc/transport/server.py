"""One extproc worker process: the ext_proc service on ``grpc_wire`` (or grpc.aio with ``AI_GATEWAY_GRPC=grpcio``).

``ai-gateway extproc`` runs this alone (docker-compose, meshes); the launcher runs one per worker. SIGTERM drains:
``/health`` turns 503, streams in flight finish (up to the grace period), then the process exits 0. SIGUSR1 only
marks the worker as draining (the launcher sends it while Envoy drains). SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.core.address import Address
from extproc.core.config import Config, ConfigError, load_config
from extproc.core.exchange import Gateway
from extproc.core.record import Record
from extproc.observability import logs
from extproc.observability.metrics import Metrics
from extproc.transport.grpc_wire import Server
from extproc.transport.response_store import SqliteStore
from extproc.transport.servicer import ExternalProcessor, ExtProc

log = logging.getLogger("extproc")

# "wire": grpc_wire, this project's HTTP/2 server (the default: ~6x less CPU per request, benchmarks/README.md);
# "grpcio": grpc.aio, kept as a reference implementation and fallback.
TRANSPORTS = ("wire", "grpcio")
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 128 * 1024 * 1024),
    ("grpc.max_send_message_length", 128 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.http2.max_pings_without_data", 0),
]


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


async def serve(config_path: str, listen: str, grace: float = 30.0, verbose: bool = False) -> int:
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
    proc = ExtProc(gateway, make_recorder(metrics), metrics)
    addr = Address.parse(listen)
    server: Server | grpc.aio.Server
    if transport == "grpcio":
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(proc), server)
        if addr.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(addr.path)
        server.add_insecure_port(addr.grpc_target())
        await server.start()
    else:
        server = Server(proc)
        await server.listen(addr.host, addr.port, addr.path)
    log.info("extproc worker %d serving on %s (%s, %d models)", os.getpid(), addr, transport, len(cfg.models))

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
            log.info("config reloaded from %s: %d models", config_path, len(gateway.config.models))
        except ConfigError as exc:
            log.error("config reload rejected, keeping the old config: %s", exc)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, drain)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    gateway.draining = True
    log.info("extproc worker %d draining (up to %.0fs)", os.getpid(), grace)
    await server.stop(grace)
    metrics.flush()
    logs.flush()
    return 0


def run(config_path: str, listen: str, grace: float = 30.0, verbose: bool = False) -> int:
    return asyncio.run(serve(config_path, listen, grace, verbose))
