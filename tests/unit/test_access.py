"""Gateway keys and rate-limit settings: parsing, constant-time identification, each format's credential header."""

from __future__ import annotations

import hashlib

import pytest

from extproc.core.config import ConfigError, build_config
from extproc.translation.formats import registry


def cfg(extra: dict, env: dict[str, str] | None = None):
    data = {"version": "1", "models": [{"name": "gpt-4", "provider": "openai"}], **extra}
    return build_config(data, "t.yaml", env or {})


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def test_keys_from_env_and_digests() -> None:
    c = cfg(
        {"auth": {"api_keys": ["TEAM_KEY", f"sha256:{sha('k2')}", {"name": "ci", "sha256": sha("k3"),
                                                                       "models": ["gpt-*"]}]}},
        {"TEAM_KEY": "k1"},
    )  # fmt: skip
    pol = c.access
    assert pol.enabled
    assert pol.identify("k1").name == "team_key"  # type: ignore[union-attr]
    assert pol.identify("k2").name == f"key-{sha('k2')[:8]}"  # type: ignore[union-attr]
    ci = pol.identify("k3")
    assert ci is not None and ci.allows("gpt-4") and not ci.allows("claude-3")
    assert pol.identify("nope") is None and pol.identify("") is None and pol.identify(None) is None
    assert not pol.rate_limited


def test_rate_limits() -> None:
    c = cfg({"rate_limits": {"per_key": 10, "per_model": {"gpt-4": 5}}})
    assert c.access.rate_limited and c.access.per_key_rpm == 10 and c.access.per_model_rpm == {"gpt-4": 5}
    assert not c.access.enabled


@pytest.mark.parametrize(
    ("extra", "fault"),
    [
        ({"auth": {"api_keys": ["MISSING"]}}, "MISSING is not set"),
        ({"auth": {"api_keys": ["sha256:abc"]}}, "64 hex digits"),
        ({"auth": {"api_keys": [{"key_env": "A", "sha256": sha("x")}]}}, "exactly one"),
        ({"auth": {"api_keys": [{"sha256": sha("x"), "models": "gpt-4"}]}}, "'models'"),
        ({"auth": {"api_keys": [f"sha256:{sha('x')}", f"sha256:{sha('x')}"]}}, "duplicate key name"),
        ({"auth": {"keys": []}}, "auth: expected"),
        ({"rate_limits": {"per_key": 0}}, "rate_limits.per_key"),
        ({"rate_limits": {"per_model": {"unknown-model": 3}}}, "not a configured model"),
    ],
)
def test_faults(extra: dict, fault: str) -> None:
    with pytest.raises(ConfigError, match=r"t\.yaml: ") as info:
        cfg(extra)
    assert fault in str(info.value)


def test_credential_per_format() -> None:
    def credential(fmt: str, headers: dict[str, str], query: str) -> str | None:
        return registry.get(fmt).client_credential(headers, query)

    assert credential("openai", {"authorization": "Bearer abc"}, "") == "abc"
    assert credential("openai", {"x-api-key": "abc"}, "") is None  # not OpenAI's header
    assert credential("anthropic", {"x-api-key": "abc"}, "") == "abc"
    assert credential("anthropic", {"authorization": "bearer xyz"}, "") == "xyz"
    assert credential("gemini", {"x-goog-api-key": "g"}, "") == "g"
    assert credential("gemini", {}, "alt=sse&key=q%2B1") == "q+1"
    assert credential("gemini", {"authorization": "Bearer abc"}, "") is None
