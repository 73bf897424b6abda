"""Provider keys live in Envoy, never in the service: files Envoy watches, and the SDS resources that point at them.

Each keyed provider's Envoy cluster has the credential injector as an upstream filter (``envoy_config``); its generic
secret comes over SDS from a small YAML file (``sds-<provider>.yaml``, no secret inside) that names the key file
``<keys_dir>/<API_KEY_ENV>`` and watches ``keys_dir``. Envoy re-reads a key when a new file is moved into that
directory (``write_keys`` does exactly that; so does a Kubernetes Secret volume when the Secret changes): keys rotate
without a restart. A missing key file makes Envoy answer that provider's requests 401, which the service turns into
the client's own auth error naming the variable to set.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extproc.core.config import Config, Provider, provider_keys

_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(slots=True, frozen=True)
class CredentialFiles:
    """Where Envoy finds provider keys: ``sds_dir`` holds the SDS files, ``keys_dir`` the raw key files."""

    sds_dir: str
    keys_dir: str


def secret_name(p: Provider) -> str:
    return f"provider_{p.name}_key"


def sds_path(files: CredentialFiles, p: Provider) -> str:
    return os.path.join(files.sds_dir, f"sds-{p.name}.yaml")


def key_path(files: CredentialFiles, p: Provider) -> str:
    """The file Envoy reads the provider's key (its variable's name) or access token (``token-<provider>``) from."""
    assert p.secret_file is not None
    return os.path.join(files.keys_dir, p.secret_file)


def keyed_providers(cfg: Config) -> list[Provider]:
    """The reachable providers whose key or token Envoy injects from a file (each gets a credential injector)."""
    return [p for p in cfg.used_providers() if p.secret_file]


def sds_document(files: CredentialFiles, p: Provider) -> dict[str, Any]:
    """The SDS file for one provider: a generic secret read from its key file, the key directory watched."""
    return {
        "resources": [
            {
                "@type": _SECRET_TYPE,
                "name": secret_name(p),
                "generic_secret": {
                    "secret": {"filename": key_path(files, p), "watched_directory": {"path": files.keys_dir}}
                },
            }
        ]
    }


def sds_files(cfg: Config, files: CredentialFiles) -> dict[str, str]:
    """File name (inside ``sds_dir``) -> YAML text, for every keyed provider."""
    return {
        os.path.basename(sds_path(files, p)): yaml.safe_dump(sds_document(files, p), sort_keys=False)
        for p in keyed_providers(cfg)
    }


def write_sds(directory: str | Path, cfg: Config, files: CredentialFiles) -> None:
    """Write the SDS files (no secrets in them) into ``directory`` (where Envoy will see ``files.sds_dir``)."""
    os.makedirs(directory, exist_ok=True)
    for name, text in sds_files(cfg, files).items():
        _replace(Path(directory) / name, text.encode(), 0o644)


def write_keys(keys_dir: str | Path, keys: dict[str, str]) -> list[str]:
    """Write each key to ``keys_dir/<VAR>`` (mode 0600, the directory 0700) when it changed, by renaming a new file
    into place, which is what Envoy's directory watch reacts to. Returns the variables written."""
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    written = []
    for var, value in keys.items():
        path = Path(keys_dir) / var
        data = value.strip().encode()
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                continue
        _replace(path, data, 0o600)
        written.append(var)
    return written


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def prepare(root: str | Path, cfg: Config, env: dict[str, str]) -> tuple[CredentialFiles, list[str]]:
    """Key files and SDS files for an Envoy on this machine, under ``root`` (``keys/`` 0700 with 0600 files, ``sds/``).
    Returns where they are and the variables whose key changed (rewritten: Envoy picks them up without a restart)."""
    files = CredentialFiles(sds_dir=str(Path(root) / "sds"), keys_dir=str(Path(root) / "keys"))
    written = write_keys(files.keys_dir, provider_keys(cfg, env))
    write_sds(files.sds_dir, cfg, files)
    return files, written
