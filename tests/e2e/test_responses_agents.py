"""Real agent clients, run as their users run them, through the gateway to Anthropic- and Gemini-type providers:
Codex CLI (``codex exec``), the OpenAI Agents SDK's default model, the Vercel AI SDK's ``openai(model)`` and
pydantic-ai's ``OpenAIResponsesModel``. Every request each makes must succeed (their scenarios are in
``tests/e2e/clients``; what they send is recorded in ``tests/fixtures/clients``).

Codex and the AI SDK come from npm: installed once into a cache directory (``tests/e2e/clients/npm.py``); without node
and npm those tests are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KEYS, ROOT, Gateway, start_gateway, stop_gateway
from tests.e2e.clients import codex, npm
from tests.e2e.test_responses import TEAM_A, TEAM_B, config
from tests.mocks.providers import ANTHROPIC_THINKING_SIGNATURES, MockProvider
from tests.mocks.responses_provider import ResponsesMock

AGENT_MODELS = ["claude-test", "gemini-test"]


@pytest.fixture(scope="module")
def agw(mocks: dict[str, MockProvider]) -> Iterator[Gateway]:
    rmock = ResponsesMock(KEYS["openai"]).start()
    with tempfile.TemporaryDirectory(prefix="ai-gateway-agents-") as tmp:
        gw = start_gateway(
            Path(tmp),
            mocks,
            config(rmock.base_url, Path(tmp) / "data"),
            extra_env={"TEAM_A_KEY": TEAM_A, "TEAM_B_KEY": TEAM_B},
        )
        gw.mocks = {**mocks, "responses": rmock}  # type: ignore[dict-item]
        yield gw
        stop_gateway(gw)
    rmock.stop()


@pytest.fixture(scope="module")
def node_modules() -> Path:
    root, why = npm.ensure()
    if root is None:
        pytest.skip(f"agent clients from npm unavailable: {why}")
    return root


def requests_to(gw: Gateway, kind: str, since: int) -> list[Any]:
    return gw.mocks[kind].requests[since:]


def provider_kind(model: str) -> str:
    return {"claude-test": "anthropic", "gemini-test": "gemini"}[model]


# ---------------------------------------------------------------------------------------------------------------------
# Codex CLI
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", AGENT_MODELS)
def test_codex_exec(agw: Gateway, node_modules: Path, model: str, tmp_path: Path) -> None:
    """``codex exec`` with reasoning on: a tool loop through the gateway (Codex runs the call the model asked for,
    sends the result and the reasoning item back, the model answers), every request answered 200."""
    kind = provider_kind(model)
    since = len(agw.mocks[kind].requests)
    proc = codex.run(
        npm.codex_bin(node_modules),
        tmp_path / "home",
        tmp_path / "work",
        f"{agw.url}/openai/v1",
        TEAM_A,
        model,
        "List the files here",
        (*codex.WEB_SEARCH_OFF, "-c", 'model_reasoning_effort="medium"'),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Tool results:" in proc.stdout, out[-3000:]
    sent = requests_to(agw, kind, since)
    assert len(sent) >= 2 and all(r.status == 200 for r in sent), [r.status for r in sent]
    last = json.dumps(sent[-1].body)
    if kind == "anthropic":  # the signed thinking came back through Codex's encrypted_content and was replayed
        assert ANTHROPIC_THINKING_SIGNATURES[0] in last and '"tool_result"' in last
    else:
        assert "functionResponse" in last


def test_codex_default_web_search_is_refused_clearly(agw: Gateway, node_modules: Path, tmp_path: Path) -> None:
    """Codex's default built-in web_search tool cannot run on Claude: a 400 whose message says what to change."""
    proc = codex.run(
        npm.codex_bin(node_modules),
        tmp_path / "home",
        tmp_path / "work",
        f"{agw.url}/openai/v1",
        TEAM_A,
        "claude-test",
        "Say hello",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "web_search" in out and 'web_search = \\"disabled\\"' in out, out[-2000:]


# ---------------------------------------------------------------------------------------------------------------------
# SDK-based agents
# ---------------------------------------------------------------------------------------------------------------------
def run_python(module: str, gw: Gateway, model: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", module, f"{gw.url}/openai/v1", TEAM_A, model],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def no_errors(results: dict[str, Any]) -> None:
    failed = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed


@pytest.mark.parametrize("model", AGENT_MODELS)
def test_openai_agents_sdk(agw: Gateway, model: str) -> None:
    pytest.importorskip("agents")
    kind = provider_kind(model)
    since = len(agw.mocks[kind].requests)
    r = run_python("tests.e2e.clients.agents_sdk", agw, model)
    no_errors(r)
    assert "Hello from the Agents SDK" in r["run"]["text"]
    assert "Stream from the Agents SDK" in r["run_streamed"]["text"]
    assert "response.output_text.delta" in r["run_streamed"]["events"]
    # (the Gemini mock echoes a function response as the object the gateway sent: {"output": "..."})
    assert r["function_tool"]["calls"] == ["Paris"] and "sunny in Paris" in r["function_tool"]["text"]
    assert set(r["output_type"]["object"]) == {"city", "temperature"}
    assert "Which word?" in r["previous_response_id"]["text"]
    sent = requests_to(agw, kind, since)
    assert all(s.status == 200 for s in sent)
    assert "Remember the word sesame" in json.dumps(sent[-1].body)  # the gateway kept the first turn


@pytest.mark.parametrize("model", AGENT_MODELS)
def test_vercel_ai_sdk(agw: Gateway, node_modules: Path, model: str) -> None:
    script = node_modules / "ai_sdk.mjs"
    shutil.copy(ROOT / "tests" / "e2e" / "clients" / "ai_sdk.mjs", script)
    proc = subprocess.run(
        ["node", str(script), f"{agw.url}/openai/v1", TEAM_A, model],
        cwd=node_modules,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    no_errors(r)
    assert "Hello from the AI SDK" in r["generateText"]["text"] and r["generateText"]["usage"]["inputTokens"] == 11
    assert "Stream from the AI SDK" in r["streamText"]["text"]
    assert r["toolLoop"]["calls"] == ["Paris"] and "Tool results:" in r["toolLoop"]["text"]
    assert "sunny in Paris" in r["toolLoop"]["text"] and "rainy in Paris" in r["streamToolLoop"]["text"]
    assert set(r["generateObject"]["object"]) == {"city", "temperature"}


@pytest.mark.parametrize("model", AGENT_MODELS)
def test_pydantic_ai(agw: Gateway, model: str) -> None:
    pytest.importorskip("pydantic_ai")
    r = run_python("tests.e2e.clients.pydantic_ai_client", agw, model)
    no_errors(r)
    assert "Hello from pydantic-ai" in r["run"]["text"] and "Stream from pydantic-ai" in r["run_stream"]["text"]
    assert r["tool"]["calls"] == ["Paris"] and "sunny in Paris" in r["tool"]["text"]
    assert set(r["output_type"]["object"]) == {"city", "temperature"}
