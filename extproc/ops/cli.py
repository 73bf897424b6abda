"""Command line: ``ai-gateway [run|extproc|envoy-config|check-config] [flags]``.

Flags are accepted as ``--flag`` and as the Go original's ``-flag``. ``.env`` is loaded first and never overrides
variables that are already set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from dotenv import load_dotenv

from extproc.core.address import Address
from extproc.core.config import Config, ConfigError, load_config, provider_keys, summary
from extproc.observability import logs
from extproc.ops.credentials import CredentialFiles, write_keys, write_sds
from extproc.ops.envoy_config import dump, render

COMMANDS = ("run", "extproc", "envoy-config", "check-config", "tokens")
DEFAULT_SDS_DIR = "/etc/ai-gateway"
DEFAULT_KEYS_DIR = "/run/secrets/ai-gateway"
log = logging.getLogger("ai-gateway")


def _flag(parser: argparse.ArgumentParser, name: str, **kw: object) -> None:
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


def _envoy_config(args: argparse.Namespace, cfg: Config, listen: Address, admin: Address) -> int:
    """Render the bootstrap for an Envoy run elsewhere (compose, Kubernetes): printed, or written with the SDS files
    that point Envoy at the provider key files; ``--write-keys`` also writes the keys (for a renderer that shares a
    private volume with Envoy, as docker-compose.yml does)."""
    extproc = [Address.parse(a.strip(), default_host="127.0.0.1") for a in args.extproc_listen.split(",")]
    files = CredentialFiles(sds_dir=args.sds_dir or args.out or DEFAULT_SDS_DIR, keys_dir=args.keys_dir)
    text = dump(render(cfg, listen=listen, admin=admin, extproc=extproc, credentials=files))
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

        return server.run(args.config, args.extproc_listen, args.grace, args.verbose)
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
