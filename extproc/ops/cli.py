"""Command line: ``ai-gateway [run|extproc|envoy-config|check-config|tokens] [flags]``.

Flags are accepted as ``--flag`` and as the Go original's ``-flag``. ``.env`` is loaded first and never overrides
variables that are already set.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys

from dotenv import load_dotenv

from extproc.core.address import Address
from extproc.core.config import Config, ConfigError, load_config, provider_keys, summary
from extproc.observability import logs
from extproc.ops.credentials import CredentialFiles, write_keys, write_sds
from extproc.ops.envoy_config import ExtprocTls, dump, render

COMMANDS = ("run", "extproc", "envoy-config", "check-config", "tokens")
DEFAULT_SDS_DIR = "/etc/ai-gateway"
DEFAULT_KEYS_DIR = "/run/secrets/ai-gateway"
log = logging.getLogger("ai-gateway")


def _flag(parser: argparse._ActionsContainer, name: str, **kw: object) -> None:  # (a parser or an argument group)
    parser.add_argument(f"--{name}", f"-{name}", **kw)  # type: ignore[arg-type]


def build_parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"ai-gateway {command}" if command != "run" else "ai-gateway",
        allow_abbrev=False,
        description={
            "run": "Run the whole gateway: extproc workers and Envoy, supervised.",
            "extproc": "Run only the extproc gRPC service (docker-compose, Kubernetes, Istio).",
            "envoy-config": "Print the Envoy bootstrap rendered from the config.",
            "check-config": "Validate the config and environment, print a summary; exit 0 or 1.",
            "tokens": "Keep the access tokens of token providers (Vertex AI, Entra ID) fresh in --keys-dir, for an "
            "Envoy run elsewhere (compose, Kubernetes).",
        }[command],
    )
    _flag(p, "config", default="config/proxy-config.yaml", help="YAML config (default: %(default)s)")
    _flag(p, "env-file", dest="env_file", default=".env", help=".env file (default: %(default)s)")
    _flag(p, "verbose", action="store_true", help="debug logging")
    if command == "run":
        _flag(
            p,
            "listen",
            default=None,
            help="Envoy listener address (default: :8080 with gateway keys configured, 127.0.0.1:8080 without)",
        )
    if command == "envoy-config":
        _flag(p, "listen", default=":8080", help="Envoy listener address (default: %(default)s)")
        tls = p.add_argument_group("mTLS to the extproc service (cert, key and CA together; docs/transport.md)")
        _flag(tls, "extproc-tls-cert", dest="extproc_tls_cert", help="Envoy's client certificate chain (PEM)")
        _flag(tls, "extproc-tls-key", dest="extproc_tls_key", help="its private key (PEM)")
        _flag(tls, "extproc-tls-ca", dest="extproc_tls_ca", help="CA that the service's certificate must chain to")
        _flag(
            tls,
            "extproc-tls-sni",
            dest="extproc_tls_sni",
            help="server name sent and required in the service's certificate (default: the address's host)",
        )
    if command in ("run", "envoy-config"):
        _flag(p, "admin", default="127.0.0.1:9901", help="Envoy admin address (default: %(default)s)")
    if command == "run":
        _flag(p, "envoy-bin", dest="envoy_bin", default=None, help="Envoy binary (default: the packaged one)")
        _flag(
            p,
            "workers",
            type=int,
            # Envoy shares the cores: on 2 cores one worker gave the same throughput as two with a lower p99
            # (benchmarks/README.md).
            default=max(1, (os.cpu_count() or 2) // 2),
            help="extproc worker processes (default: half the CPUs, at least 1)",
        )
        _flag(
            p,
            "extproc-listen",
            dest="extproc_listen",
            default=None,
            help="workers' gRPC address, HOST:PORT or unix:PATH (default: Unix sockets in a private temp dir)",
        )
        _flag(p, "grace", type=float, default=30.0, help="seconds to let requests finish on shutdown")
    elif command == "extproc":
        # Loopback by default: the service's answers steer requests, so only Envoy may reach it (see docs/security.md).
        _flag(
            p,
            "extproc-listen",
            dest="extproc_listen",
            default="127.0.0.1:50051",
            help="gRPC address, HOST:PORT or unix:PATH (default: %(default)s)",
        )
        _flag(p, "grace", type=float, default=30.0, help="seconds to let streams finish on SIGTERM")
        tls = p.add_argument_group("mTLS (all three or none; docs/transport.md)")
        _flag(tls, "tls-cert", dest="tls_cert", help="the service's certificate chain (PEM)")
        _flag(tls, "tls-key", dest="tls_key", help="its private key (PEM)")
        _flag(tls, "tls-client-ca", dest="tls_client_ca", help="CA(s) that client certificates must chain to (PEM)")
        _flag(
            p,
            "trusted-network",
            dest="trusted_network",
            action="store_true",
            help="allow plain TCP beyond loopback: anyone who reaches the port can drive the service",
        )
        _flag(
            p,
            "grpc-limit",
            dest="grpc_limits",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="change one of the transport's limits (repeatable; names and defaults in docs/transport.md)",
        )
    elif command == "tokens":
        _flag(
            p,
            "keys-dir",
            dest="keys_dir",
            default=DEFAULT_KEYS_DIR,
            help="where Envoy reads provider keys and tokens (default: %(default)s)",
        )
    elif command == "envoy-config":
        _flag(
            p,
            "extproc-listen",
            dest="extproc_listen",
            default="127.0.0.1:50051",
            help="where Envoy reaches the extproc service(s): HOST:PORT or unix:PATH, comma-separated",
        )
        _flag(
            p,
            "out",
            default=None,
            help="write envoy.yaml and the SDS files (sds-<provider>.yaml) into this directory instead of printing "
            "the bootstrap",
        )
        _flag(
            p,
            "sds-dir",
            dest="sds_dir",
            default=None,
            help="where Envoy finds the SDS files (default: --out, else /etc/ai-gateway)",
        )
        _flag(
            p,
            "keys-dir",
            dest="keys_dir",
            default=DEFAULT_KEYS_DIR,
            help="where Envoy reads provider keys, one file per variable (OPENAI_API_KEY, ...) (default: %(default)s)",
        )
        _flag(
            p,
            "write-keys",
            dest="write_keys",
            action="store_true",
            help="also write the provider keys set in the environment into --keys-dir (mode 0600)",
        )
    return p


def is_loopback(addr: Address) -> bool:
    """A Unix socket, ``localhost`` or a loopback IP: only this machine can connect. A name is never trusted to be
    local (it may resolve anywhere)."""
    if addr.path:
        return True
    if addr.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.host).is_loopback
    except ValueError:
        return False


def _extproc_security(args: argparse.Namespace) -> str:
    """Why ``extproc`` must not start with these flags (empty: it may). Also parses ``--grpc-limit`` into
    ``args.limits``."""
    from extproc.transport.grpc_wire import Limits

    tls = (args.tls_cert, args.tls_key, args.tls_client_ca)
    if any(tls) and not all(tls):
        return "--tls-cert, --tls-key and --tls-client-ca go together"
    try:
        addr = Address.parse(args.extproc_listen)
    except ValueError as exc:
        return str(exc)
    if not all(tls) and not is_loopback(addr) and not args.trusted_network:
        return (
            f"refusing to serve ext_proc on {addr} without TLS: anyone who reaches the port could drive the service. "
            "Give --tls-cert, --tls-key and --tls-client-ca (mTLS), listen on loopback or a Unix socket, or pass "
            "--trusted-network if only trusted peers can reach this address (docs/transport.md)"
        )
    changes = {}
    for item in args.grpc_limits:
        name, sep, value = item.partition("=")
        if not sep:
            return f"--grpc-limit {item!r}: expected NAME=VALUE"
        changes[name.strip()] = value.strip()
    try:
        args.limits = Limits().replace(**changes) if changes else None
    except ValueError as exc:
        return f"--grpc-limit: {exc}"
    return ""


def _envoy_config(args: argparse.Namespace, cfg: Config, listen: Address, admin: Address) -> int:
    """Render the bootstrap for an Envoy run elsewhere (compose, Kubernetes): printed, or written with the SDS files
    that point Envoy at the provider key files; ``--write-keys`` also writes the keys (for a renderer that shares a
    private volume with Envoy, as docker-compose.yml does)."""
    extproc = [Address.parse(a.strip(), default_host="127.0.0.1") for a in args.extproc_listen.split(",")]
    tls_files = (args.extproc_tls_cert, args.extproc_tls_key, args.extproc_tls_ca)
    if any(tls_files) and not all(tls_files):
        log.error("--extproc-tls-cert, --extproc-tls-key and --extproc-tls-ca go together")
        return 2
    extproc_tls = None
    if all(tls_files):
        sni = args.extproc_tls_sni or next((a.host for a in extproc if a.host), "")
        if not sni:
            log.error("--extproc-tls-sni is needed: no host name in --extproc-listen")
            return 2
        extproc_tls = ExtprocTls(*tls_files, sni=sni)
    files = CredentialFiles(sds_dir=args.sds_dir or args.out or DEFAULT_SDS_DIR, keys_dir=args.keys_dir)
    text = dump(render(cfg, listen=listen, admin=admin, extproc=extproc, credentials=files, extproc_tls=extproc_tls))
    if args.write_keys:
        written = write_keys(args.keys_dir, provider_keys(cfg, dict(os.environ)))
        log.info("wrote %d provider key file(s) into %s", len(written), args.keys_dir)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    os.makedirs(args.out, exist_ok=True)
    write_sds(args.out, cfg, files)
    tmp = os.path.join(args.out, ".envoy.yaml.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(args.out, "envoy.yaml"))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "run"
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    if command == "extproc":
        # Until the server installs its handlers, a reload or drain signal from the launcher must not kill us.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    args = build_parser(command).parse_args(argv)
    logs.setup(args.verbose)
    if command == "extproc":
        problem = _extproc_security(args)
        if problem:
            log.error("%s", problem)
            return 2
    base_env = dict(os.environ)
    load_dotenv(args.env_file, override=False)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 1

    if command == "check-config":
        from extproc.ops import tokens

        print(summary(cfg, source=tokens.describe))
        return 0
    if command == "tokens":
        from extproc.ops import tokens

        return tokens.run_forever(cfg, args.keys_dir)
    if command == "extproc":
        from extproc.transport import server

        tls = server.TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
        return server.run(args.config, args.extproc_listen, args.grace, args.verbose, args.limits, tls)
    if args.listen is None:  # run without --listen: open to the network only when clients must present a key
        args.listen = ":8080" if cfg.access.enabled else "127.0.0.1:8080"
    if not cfg.access.enabled and command == "run":
        log.warning(
            "no gateway keys configured (auth.api_keys): anyone who can reach %s spends your provider keys",
            args.listen,
        )
    try:
        listen = Address.parse(args.listen)
        admin = Address.parse(args.admin, default_host="127.0.0.1")
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if command == "envoy-config":
        return _envoy_config(args, cfg, listen, admin)

    from extproc.ops import launcher

    if args.workers < 1:
        log.error("--workers must be at least 1")
        return 2
    opts = launcher.Options(
        args.config, args.env_file, listen, admin, args.extproc_listen, args.envoy_bin, args.workers, args.verbose,
        args.grace, base_env,
    )  # fmt: skip
    return launcher.run(opts, cfg)
