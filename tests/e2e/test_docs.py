"""Every example in the docs runs: Python snippets and curl lines against a gateway started from the shipped
``config/proxy-config.yaml``, gateway YAML through the config loader, JSON examples parsed. A block that cannot run
here says why in a ``<!-- docs-test: skip (reason) -->`` line right above it; any other python/bash/yaml block that is
not runnable fails the test, so examples cannot rot."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from extproc.core.config import build_config
from tests.conftest import Gateway, start_gateway, stop_gateway
from tests.mocks.providers import MockProvider
from tests.paths import ROOT

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"^<!-- docs-test: skip \((.+)\) -->$")
# Top-level keys of the gateway's YAML: a yaml block with one of them is a gateway config example.
_GATEWAY_KEYS = {
    "version", "models", "providers", "default_provider", "timeout", "auth", "rate_limits", "image_fetch", "tracing",
}  # fmt: skip
CHECKED = ("python", "bash", "yaml", "json")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    out = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = _FENCE.match(lines[i])
            if m is None:
                i += 1
                continue
            start, lang = i, m.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            skip = _SKIP.match(lines[start - 1]) if start > 0 else None
            if lang in CHECKED:
                out.append(
                    Block(path, start + 1, lang, "\n".join(lines[start + 1 : j]), skip.group(1) if skip else None)
                )
            i = j + 1
    return out


BLOCKS = blocks()


@pytest.fixture(scope="module")
def shipped(mocks: dict[str, MockProvider]) -> Iterator[Gateway]:
    """The gateway as a user runs it: the shipped config, the mock providers in place of the real ones."""
    with tempfile.TemporaryDirectory(prefix="ai-gateway-docs-") as tmp:
        gw = start_gateway(Path(tmp), mocks, (ROOT / "config" / "proxy-config.yaml").read_text(), workers=1)
        yield gw
        stop_gateway(gw)


def _local(text: str, url: str) -> str:
    return re.sub(r"http://(localhost|127\.0\.0\.1|HOST):8080", url, text).replace("localhost:8080", url)


def _commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [c.strip() for c in joined.splitlines() if c.strip() and not c.strip().startswith("#")]


def _gateway_env(data: dict[str, object]) -> dict[str, str]:
    """A value for every environment variable the example names (key variables, gateway keys)."""
    names = set(re.findall(r"\b[A-Z][A-Z0-9_]*(?:_KEY|_KEY_ENV)\b", yaml.safe_dump(data)))
    return dict.fromkeys(names, "example-value")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_example(block: Block, request: pytest.FixtureRequest) -> None:
    if block.skip is not None:
        assert block.skip.strip(), f"{block.id}: a skipped example must say why"
        pytest.skip(block.skip)
    if block.lang == "json":
        text = block.text.strip()
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            for line in text.replace("\n ", " ").splitlines():  # JSON lines, wrapped for reading
                orjson.loads(line)
        return
    if block.lang == "yaml":
        data = yaml.safe_load(block.text)
        assert isinstance(data, dict) and _GATEWAY_KEYS & set(data), (
            f"{block.id}: not a gateway config: run it or mark it <!-- docs-test: skip (reason) -->"
        )
        # Examples are fragments of the shipped config: what they leave out comes from it.
        shipped_config = yaml.safe_load((ROOT / "config" / "proxy-config.yaml").read_text())
        merged = {**shipped_config, **data}
        build_config(merged, block.id, _gateway_env(merged))
        return
    gw: Gateway = request.getfixturevalue("shipped")
    if block.lang == "python":
        exec(compile(_local(block.text, gw.url), block.id, "exec"), {"__name__": "__docs__"})
        return
    commands = _commands(block.text)
    assert commands and all(c.startswith("curl ") for c in commands), (
        f"{block.id}: only curl lines run here: run it or mark it <!-- docs-test: skip (reason) -->"
    )
    for cmd in commands:
        done = subprocess.run(
            ["bash", "-c", _local(cmd, gw.url) + " --fail-with-body -sS"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{block.id}: {cmd}\n{done.stdout}\n{done.stderr}"


def test_every_doc_has_examples_found() -> None:
    """The scan sees the examples (a changed fence style would silently check nothing)."""
    assert {b.path.name for b in BLOCKS} >= {"README.md", "configuration.md"}
    assert any(b.lang == "python" and b.skip is None for b in BLOCKS)
