"""Provider keys rotate without a restart: the launcher re-reads ``.env`` when it changes and hands the new key to
Envoy (a file renamed into the watched key directory); Envoy's next request carries it. A key added later works at
once, and a missing one is the client's own auth error. The workers never hold any of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from tests.conftest import KEYS, MODELS, Gateway, free_port, gateway_config, start_gateway, stop_gateway
from tests.e2e.sdk import anthropic_client
from tests.mocks.providers import MockProvider

NEW_KEY = "sk-ant-rotated-key-2"


def _wait_for_log(gw: Gateway, text: str, after: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in gw.log_text()[after:]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no log line {text!r}:\n{gw.log_text()[after:][-2000:]}")


@pytest.fixture
def rotating(mocks: dict[str, MockProvider], tmp_path: Path) -> Iterator[tuple[Gateway, Path, MockProvider]]:
    """A gateway whose Anthropic key comes only from its .env file, and an Anthropic mock that accepts only NEW_KEY."""
    strict = MockProvider("anthropic", NEW_KEY).start()
    env_file = tmp_path / ".env"
    env_file.write_text(f"ANTHROPIC_API_KEY={KEYS['anthropic']}\n")
    gw = start_gateway(
        tmp_path, {**mocks, "anthropic": strict}, gateway_config(free_port()), workers=1,
        extra_env={"ANTHROPIC_API_KEY": None}, env_file=env_file,
    )  # fmt: skip
    yield gw, env_file, strict
    stop_gateway(gw)
    strict.stop()


def _envoy_epoch(gw: Gateway) -> str:
    import httpx

    return str(httpx.get(f"{gw.admin}/server_info", timeout=5).json()["command_line_options"]["restart_epoch"])


def test_a_changed_key_is_used_without_a_restart(rotating: tuple[Gateway, Path, MockProvider]) -> None:
    gw, env_file, strict = rotating
    client = anthropic_client(gw.url)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError):  # the old key: the provider refuses it
        client.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=msgs)  # type: ignore[arg-type]
    assert strict.last().headers.get("x-api-key") == KEYS["anthropic"]
    epoch, before = _envoy_epoch(gw), len(gw.log_text())
    env_file.write_text(f"ANTHROPIC_API_KEY={NEW_KEY}\n")
    _wait_for_log(gw, "provider key ANTHROPIC_API_KEY handed to Envoy", before)
    deadline = time.monotonic() + 10
    while True:  # Envoy picks the file up asynchronously (inotify), within moments
        try:
            client.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=msgs)  # type: ignore[arg-type]
            break
        except anthropic.AuthenticationError:
            assert time.monotonic() < deadline, "Envoy never used the new key"
            time.sleep(0.1)
    assert strict.last().headers.get("x-api-key") == NEW_KEY
    assert _envoy_epoch(gw) == epoch, "no Envoy restart"


def test_a_key_added_later_works_at_once(mocks: dict[str, MockProvider], tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# no Anthropic key yet\n")
    gw = start_gateway(
        tmp_path, mocks, gateway_config(free_port()), workers=1, extra_env={"ANTHROPIC_API_KEY": None},
        env_file=env_file,
    )  # fmt: skip
    try:
        client = anthropic_client(gw.url)
        msgs = [{"role": "user", "content": "hi"}]
        seen = len(mocks["anthropic"].requests)
        with pytest.raises(anthropic.AuthenticationError, match="ANTHROPIC_API_KEY"):
            client.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=msgs)  # type: ignore[arg-type]
        assert len(mocks["anthropic"].requests) == seen, "Envoy answered itself: nothing reached the provider"
        before = len(gw.log_text())
        env_file.write_text(f"ANTHROPIC_API_KEY={KEYS['anthropic']}\n")
        _wait_for_log(gw, "provider key ANTHROPIC_API_KEY handed to Envoy", before)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.messages.create(model=MODELS["anthropic"], max_tokens=16, messages=msgs)  # type: ignore[arg-type]
                break
            except anthropic.AuthenticationError:
                assert time.monotonic() < deadline, "Envoy never used the added key"
                time.sleep(0.1)
    finally:
        stop_gateway(gw)
