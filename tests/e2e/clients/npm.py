"""The npm-packaged agent clients (Codex CLI, the Vercel AI SDK), installed once into a cache directory.

``package.json`` beside this file pins their versions. ``ensure()`` runs ``npm install`` into
``$AI_GATEWAY_NPM_CACHE`` (default ``~/.cache/ai-gateway-tests/npm``) in a directory named after the hash of
``package.json``, so a changed pin installs afresh and an unchanged one costs nothing. Returns None (the caller
skips) when node/npm are missing or the install fails, with the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "package.json"


def cache_dir() -> Path:
    base = os.environ.get("AI_GATEWAY_NPM_CACHE") or str(Path.home() / ".cache" / "ai-gateway-tests" / "npm")
    digest = hashlib.sha256(PACKAGE.read_bytes()).hexdigest()[:12]
    return Path(base) / digest


def ensure(timeout: float = 600) -> tuple[Path | None, str]:
    """(the directory holding node_modules, "") or (None, why not)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None, "node and npm are not on PATH"
    target = cache_dir()
    marker = target / ".installed"
    if marker.exists():
        return target, ""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(PACKAGE, target / "package.json")
    try:
        proc = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"npm install did not finish within {timeout:.0f}s"
    if proc.returncode != 0:
        return None, f"npm install failed: {proc.stderr.strip()[-800:]}"
    marker.write_text("ok\n")
    return target, ""


def codex_bin(root: Path) -> Path:
    return root / "node_modules" / ".bin" / "codex"
