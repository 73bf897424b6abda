"""Codex CLI (``codex exec``) as its users run it against a custom OpenAI-compatible provider.

The provider entry is what a user writes into ``~/.codex/config.toml`` to point Codex at the gateway:

    [model_providers.gateway]
    name = "ai-gateway"
    base_url = "http://HOST:8080/openai/v1"
    env_key = "AI_GATEWAY_KEY"
    wire_api = "responses"

Codex sends the OpenAI ``web_search`` tool by default; providers other than OpenAI cannot run it, so the gateway
refuses it with a clear 400 and users of such models set ``web_search = "disabled"`` (``WEB_SEARCH_OFF``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

WEB_SEARCH_OFF = ("-c", 'web_search="disabled"')


def write_config(home: Path, base_url: str, model: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "gateway"\n'
        "[model_providers.gateway]\n"
        'name = "ai-gateway"\n'
        f'base_url = "{base_url}"\n'
        'env_key = "AI_GATEWAY_KEY"\n'
        'wire_api = "responses"\n'
        # no retries: a refused request must show at once, not after Codex's back-off
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def run(
    codex: Path,
    home: Path,
    workdir: Path,
    base_url: str,
    api_key: str,
    model: str,
    prompt: str,
    extra: tuple[str, ...] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``codex exec`` with its own CODEX_HOME (config, sessions) and working directory; stdin closed."""
    write_config(home, base_url, model)
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), AI_GATEWAY_KEY=api_key, NO_COLOR="1")
    cmd = [str(codex), "exec", "--skip-git-repo-check", *extra, prompt]
    return subprocess.run(
        cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
