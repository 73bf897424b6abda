"""Config loading: the seed's schema, extensions, environment, and one clear message per fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.core.config import (
    ConfigError,
    build_config,
    key_variables,
    load_config,
    parse_base_url,
    parse_duration,
    provider_keys,
    summary,
)

ROOT = Path(__file__).resolve().parents[2]


def cfg(data: object, env: dict[str, str] | None = None):
    return build_config(data, "test.yaml", env or {})


def test_shipped_config_loads_with_seed_schema() -> None:
    c = load_config(ROOT / "config" / "proxy-config.yaml", {})
    assert c.version == "1.0"
    assert c.models["gpt-4"].provider == "openai"
    assert c.models["claude-3-5-sonnet-20241022"].provider == "anthropic"
    assert c.models["gemini-2.0-flash-exp"].provider == "gemini"
    assert c.timeout == 300


def test_resolve_alias_and_default_provider() -> None:
    c = cfg(
        {
            "version": "1.0",
            "models": [{"name": "fast", "provider": "anthropic", "target_model": "claude-haiku"}],
            "default_provider": "openai",
        }
    )
    prov, target = c.resolve("fast")
    assert (prov.name, target) == ("anthropic", "claude-haiku")
    prov, target = c.resolve("anything-else")
    assert (prov.name, target) == ("openai", "anything-else")
    assert cfg({"version": "1", "models": []}).resolve("x") is None


def test_builtin_providers_from_env() -> None:
    env = {
        "OPENAI_API_KEY": "k1",
        "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
        "GEMINI_BASE_URL": "https://g.example",
    }
    c = cfg({"version": "1"}, env)
    o = c.providers["openai"]
    assert (o.upstream.scheme, o.upstream.host, o.upstream.port, o.upstream.prefix) == (
        "http",
        "127.0.0.1",
        9999,
        "/v1",
    )
    assert o.api_key_env == "OPENAI_API_KEY"
    assert c.providers["anthropic"].upstream.authority == "api.anthropic.com"
    assert c.providers["gemini"].upstream.tls


def test_named_openai_compatible_provider() -> None:
    c = cfg(
        {
            "version": "1",
            "providers": [
                {"name": "ollama", "type": "openai", "base_url": "http://localhost:11434/v1"},
                {"name": "groq", "type": "openai", "base_url": "https://api.groq.com/openai/v1", "api_key_env": "GQ"},
            ],
            "models": [{"name": "llama3", "provider": "ollama"}, {"name": "mixtral", "provider": "groq"}],
        },
        {"GQ": "secret"},
    )
    assert c.providers["ollama"].api_key_env is None
    assert c.providers["groq"].api_key_env == "GQ"
    assert c.providers["groq"].upstream.prefix == "/openai/v1"
    assert [p.name for p in c.used_providers()] == ["groq", "ollama"]


def test_provider_keys_are_read_only_for_reachable_keyed_providers() -> None:
    """The keys handed to Envoy: one per variable a reachable provider names; providers no model uses get none, and
    nothing of the key ends up on the config object a worker holds."""
    data = {
        "version": "1",
        "providers": [
            {"name": "groq", "type": "openai", "base_url": "https://api.groq.com/openai/v1", "api_key_env": "GQ"},
            {"name": "unused", "type": "openai", "base_url": "https://x.example/v1", "api_key_env": "UNUSED"},
            {"name": "ollama", "type": "openai", "base_url": "http://localhost:11434/v1"},
        ],
        "models": [{"name": "m", "provider": "groq"}, {"name": "c", "provider": "anthropic"},
                   {"name": "l", "provider": "ollama"}],
    }  # fmt: skip
    env = {"GQ": "secret-gq", "UNUSED": "secret-unused", "ANTHROPIC_API_KEY": "secret-ant", "OPENAI_API_KEY": "o"}
    c = cfg(data, env)
    assert provider_keys(c, env) == {"ANTHROPIC_API_KEY": "secret-ant", "GQ": "secret-gq"}
    assert provider_keys(c, {"GQ": "secret-gq"}) == {"GQ": "secret-gq"}
    assert "secret" not in repr(c)
    assert {"GQ", "UNUSED", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"} <= key_variables(c)


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        ({"models": []}, "version: missing"),
        ({"version": "1", "models": [{"name": "a", "provider": "nope"}]}, "models[0] (a): unknown provider 'nope'"),
        (
            {"version": "1", "models": [{"name": "a", "provider": "openai"}, {"name": "a", "provider": "openai"}]},
            "models[1] (a): duplicate model name",
        ),
        ({"version": "1", "timeout": "soon"}, "timeout:"),
        ({"version": "1", "timeout": -1}, "timeout:"),
        ({"version": "1", "default_provider": "x"}, "default_provider: unknown provider 'x'"),
        ({"version": "1", "providers": [{"name": "p", "type": "cohere", "base_url": "http://x"}]}, "'type'"),
        ({"version": "1", "providers": [{"name": "p", "type": "openai", "base_url": "ftp://x"}]}, "http://"),
        ({"version": "1", "modles": []}, "'modles': unknown setting"),
        ({"version": "1", "models": [{"name": "a", "provider": "openai", "extra": 1}]}, "unknown field 'extra'"),
        ("just a string", "top level"),
    ],
)
def test_faults_name_file_entry_and_fault(data: object, fault: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg(data)
    assert str(info.value).startswith("test.yaml: ")
    assert fault in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, {})


def test_durations_and_urls() -> None:
    assert parse_duration("5m") == 300
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1.5h") == 5400
    assert parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("0s")
    up = parse_base_url("https://api.example.com:8443/v1/")
    assert (up.host, up.port, up.prefix, up.authority) == ("api.example.com", 8443, "/v1", "api.example.com:8443")


def test_summary_never_prints_keys() -> None:
    env = {"OPENAI_API_KEY": "sk-very-secret"}
    c = cfg(
        {"version": "1", "models": [{"name": "m", "provider": "openai"}, {"name": "c", "provider": "anthropic"}]}, env
    )
    text = summary(c, env)
    assert "sk-very-secret" not in text
    assert "OPENAI_API_KEY set" in text
    assert "ANTHROPIC_API_KEY MISSING" in text
