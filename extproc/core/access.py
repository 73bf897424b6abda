"""Who may use the gateway: gateway keys, per-key model allow-lists, and request rate limits (pure).

A gateway holds every provider key a company has, so when ``auth.api_keys`` is configured every request must present
one, in its client format's own auth header (OpenAI ``Authorization: Bearer``; Anthropic ``x-api-key`` or
``Authorization: Bearer``; Gemini ``x-goog-api-key`` or ``?key=``). Keys are kept only as SHA-256 digests (from an
environment variable, or written as a digest in the file) and compared in constant time. Rate limits are enforced by
Envoy's local rate limit filter, on the key name and model the service sets as request headers.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ANONYMOUS = "anonymous"


@dataclass(slots=True, frozen=True)
class GatewayKey:
    name: str
    digest: bytes  # sha256 of the key
    models: tuple[str, ...] = ()  # allow-list (glob patterns); empty: every model
    requests_per_minute: int | None = None

    def allows(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


@dataclass(slots=True)
class AccessPolicy:
    keys: list[GatewayKey] = field(default_factory=list)
    per_key_rpm: int | None = None  # default requests per minute for each key (and for anonymous traffic)
    per_model_rpm: dict[str, int] = field(default_factory=dict)  # model name -> requests per minute, all keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str | None) -> GatewayKey | None:
        """The key matching ``presented``. Every configured digest is compared, in constant time each."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: GatewayKey | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest) and found is None:
                found = key
        return found

    @property
    def rate_limited(self) -> bool:
        return bool(self.per_key_rpm or self.per_model_rpm or any(k.requests_per_minute for k in self.keys))

    def key_rpm(self, key: GatewayKey | None) -> int | None:
        if key is not None and key.requests_per_minute is not None:
            return key.requests_per_minute
        return self.per_key_rpm


def parse(auth: Any, limits: Any, env: dict[str, str], fail: Any) -> AccessPolicy:
    """``auth: {api_keys: [...]}`` and ``rate_limits: {per_key, per_model}`` from the YAML, checked."""
    policy = AccessPolicy()
    if auth is not None:
        if not isinstance(auth, dict) or set(auth) - {"api_keys"}:
            raise fail("auth", "expected a mapping with 'api_keys'")
        raw = auth.get("api_keys") or []
        if not isinstance(raw, list):
            raise fail("auth.api_keys", "expected a list")
        names: set[str] = set()
        for i, entry in enumerate(raw):
            key = _parse_key(entry, i, env, fail)
            if key.name in names:
                raise fail(f"auth.api_keys[{i}]", f"duplicate key name '{key.name}'")
            names.add(key.name)
            policy.keys.append(key)
    if limits is not None:
        if not isinstance(limits, dict) or set(limits) - {"per_key", "per_model"}:
            raise fail("rate_limits", "expected a mapping with 'per_key' and/or 'per_model'")
        if limits.get("per_key") is not None:
            policy.per_key_rpm = _rpm(limits["per_key"], "rate_limits.per_key", fail)
        per_model = limits.get("per_model") or {}
        if not isinstance(per_model, dict):
            raise fail("rate_limits.per_model", "expected a mapping of model name to requests per minute")
        for model, rpm in per_model.items():
            policy.per_model_rpm[str(model)] = _rpm(rpm, f"rate_limits.per_model.{model}", fail)
    return policy


def _rpm(value: Any, where: str, fail: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise fail(where, "expected a positive number of requests per minute")
    return value


def _parse_key(entry: Any, i: int, env: dict[str, str], fail: Any) -> GatewayKey:
    where = f"auth.api_keys[{i}]"
    if isinstance(entry, str):  # "ENV_VAR_NAME" or "sha256:<hex>"
        entry = {"sha256": entry[7:]} if entry.startswith("sha256:") else {"key_env": entry}
    if not isinstance(entry, dict):
        raise fail(where, "expected an env var name, 'sha256:<hex>', or a mapping with key_env or sha256")
    unknown = set(entry) - {"name", "key_env", "sha256", "models", "requests_per_minute"}
    if unknown:
        raise fail(where, f"unknown field '{sorted(unknown)[0]}'")
    if ("key_env" in entry) == ("sha256" in entry):
        raise fail(where, "give exactly one of 'key_env' (an environment variable) or 'sha256' (the key's digest)")
    if "key_env" in entry:
        var = entry["key_env"]
        value = env.get(var) if isinstance(var, str) else None
        if not value:
            raise fail(where, f"environment variable {var} is not set (a gateway key must not be empty)")
        digest = hashlib.sha256(value.encode()).digest()
        default_name = str(var).lower()
    else:
        hexdigest = entry["sha256"]
        if not isinstance(hexdigest, str) or not _HEX64.match(hexdigest):
            raise fail(where, "'sha256' must be 64 hex digits (sha256sum of the key)")
        digest = bytes.fromhex(hexdigest)
        default_name = f"key-{hexdigest[:8].lower()}"
    name = entry.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail(where, "'name' must be letters, digits, '_', '.' or '-'")
    models = entry.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise fail(where, "'models' must be a list of model names (glob patterns allowed)")
    rpm = entry.get("requests_per_minute")
    if rpm is not None:
        rpm = _rpm(rpm, f"{where}.requests_per_minute", fail)
    return GatewayKey(name, digest, tuple(models), rpm)
