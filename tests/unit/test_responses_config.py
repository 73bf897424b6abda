"""Config for the Responses API: a provider's ``api`` (chat or responses) and the ``responses:`` store settings."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.core.config import ConfigError, build_config

BASE: dict[str, Any] = {"version": "1", "models": [{"name": "m", "provider": "openai"}]}


def cfg(**extra: Any) -> Any:
    return build_config({**BASE, **extra}, "/etc/gw/proxy-config.yaml", {})


def test_provider_api_picks_the_wire_format() -> None:
    c = cfg(providers=[
        {"name": "codex", "type": "openai", "api": "responses", "base_url": "https://api.openai.com/v1"},
        {"name": "vllm", "type": "openai", "base_url": "http://localhost:8000/v1"},
    ])  # fmt: skip
    assert (c.providers["codex"].format, c.providers["codex"].api) == ("responses", "responses")
    assert (c.providers["vllm"].format, c.providers["vllm"].api) == ("openai", "chat")
    assert c.providers["openai"].format == "openai"  # the built-in speaks Chat Completions


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "x", "type": "openai", "api": "assistants", "base_url": "http://h/v1"}, "'api' must be one of"),
        ({"name": "x", "type": "anthropic", "api": "responses", "base_url": "http://h"}, "type 'openai' only"),
    ],
)
def test_bad_api(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        cfg(providers=[entry])


def test_store_settings() -> None:
    default = cfg().responses
    assert default.enabled and default.retention == 30 * 86400 and default.data_dir == "/etc/gw/data"
    c = cfg(responses={"store": False, "data_dir": "/var/lib/gw", "retention": "7d", "max_bytes": 1000}).responses
    assert (c.enabled, c.data_dir, c.retention, c.max_bytes) == (False, "/var/lib/gw", 7 * 86400.0, 1000)
    assert cfg(responses={"data_dir": "state"}).responses.data_dir == "/etc/gw/state"  # next to the config file


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"keep": True}, "unknown field 'keep'"),
        ({"store": "yes"}, "responses.store"),
        ({"retention": "forever"}, "responses.retention"),
        ({"max_bytes": 0}, "responses.max_bytes"),
        ({"data_dir": ""}, "responses.data_dir"),
        ("on", "expected a mapping"),
    ],
)
def test_bad_store_settings(section: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        cfg(responses=section)
