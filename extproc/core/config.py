"""Gateway configuration: the YAML model mapping, named providers, and the environment (keys, base URLs).

The seed's schema (``version``, ``models[]`` of ``name``/``provider``/``description``, ``default_provider``,
``timeout``) keeps working unchanged; ``models[].target_model`` and ``providers[]`` extend it. Everything is checked
once at load: a bad file is refused with one message naming the file, the entry and the fault. Missing provider keys
do not stop the gateway; requests to that provider fail with an ``auth`` error instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.core import access, governance, models
from extproc.core.access import AccessPolicy
from extproc.core.conversations import StoreSettings
from extproc.core.governance import Settings as GovernanceSettings
from extproc.translation import media as _fetch
from extproc.translation.capabilities import Capabilities, describe
from extproc.translation.formats import registry
from extproc.translation.media import FetchPolicy

# Built-in providers: (key env, base URL env, default base URL). OpenAI's base includes /v1, as its SDK's does.
BUILTINS: dict[str, tuple[str, str, str]] = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    "gemini": ("GEMINI_API_KEY", "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
}

DEFAULT_TIMEOUT = 300.0  # seconds; LLM calls can be long
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
PROVIDER_APIS = ("chat", "responses")


class ConfigError(Exception):
    """A configuration fault, with a message that names the file, the entry and the fault."""


@dataclass(slots=True, frozen=True)
class Upstream:
    """Where a provider lives, split the way Envoy needs it (cluster address, TLS/SNI, path prefix)."""

    scheme: str
    host: str
    port: int
    prefix: str  # path prefix from the base URL, without trailing slash ("" or "/v1")

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(slots=True)
class Provider:
    name: str
    type: str  # "openai" | "anthropic" | "gemini"
    base_url: str
    upstream: Upstream
    # The environment variable holding its API key; None: the upstream needs no key (a local vLLM/Ollama). The
    # service never reads the key itself: Envoy injects it (``extproc.ops.credentials``).
    api_key_env: str | None
    api: str = "chat"  # the OpenAI API an openai-type provider speaks: "chat" (Chat Completions) or "responses"

    @property
    def cluster(self) -> str:
        return f"provider_{self.name}"

    @property
    def format(self) -> str:
        """The wire format it speaks (a registry name): its type's, or the Responses API for ``api: responses``."""
        return "responses" if self.api == "responses" else self.type


@dataclass(slots=True)
class Model:
    name: str
    provider: str
    target_model: str
    description: str = ""
    # What the target accepts (the catalog's entry, with this model's ``capabilities`` override); None: the catalog
    # is switched off (``capabilities: {enabled: false}``, for the gateway or this model), requests go as translated.
    capabilities: Capabilities | None = None


@dataclass(slots=True)
class Config:
    path: str
    version: str
    models: dict[str, Model]
    providers: dict[str, Provider]
    default_provider: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    anthropic_default_max_tokens: int = 4096
    max_request_bytes: int = 32 * 1024 * 1024
    passthrough_usage: bool = True  # read same-format answers (unchanged) for token metrics: one more gRPC message
    image_fetch: FetchPolicy = field(default_factory=FetchPolicy)
    access: AccessPolicy = field(default_factory=AccessPolicy)
    capabilities_enabled: bool = True  # ``capabilities: {enabled: false}`` switches the catalog off
    responses: StoreSettings = field(default_factory=StoreSettings)  # the Responses API conversation store
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)  # limits, prices, spend

    def resolve(self, model: str) -> tuple[Provider, str] | None:
        """The provider and upstream model name for a client's model name, or None if unknown."""
        m = self.models.get(model)
        if m is not None:
            return self.providers[m.provider], m.target_model
        if self.default_provider is not None:
            return self.providers[self.default_provider], model
        return None

    def capabilities(self, model: str, provider: Provider, target: str) -> Capabilities | None:
        """What the target of a client's model name accepts: the configured model's, else (a name forwarded by
        ``default_provider``) the catalog's entry for ``target``; None with the catalog switched off."""
        m = self.models.get(model)
        if m is not None:
            return m.capabilities
        if not self.capabilities_enabled:
            return None
        return models.catalog().lookup(provider.type, target)

    def used_providers(self) -> list[Provider]:
        """Providers that a request can reach: those named by models or as default (each gets an Envoy cluster)."""
        names = {m.provider for m in self.models.values()}
        if self.default_provider:
            names.add(self.default_provider)
        return [self.providers[n] for n in sorted(names)]


def parse_duration(value: Any) -> float:
    """``"5m"``, ``"30s"``, ``"1.5h"``, ``"250ms"`` or a number of seconds, to seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return seconds


def parse_base_url(url: str) -> Upstream:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"base URL {url!r} has no host")
    if parts.query or parts.fragment:
        raise ValueError(f"base URL {url!r} must not have a query or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"base URL {url!r} has a bad port") from exc
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    """Read and check the YAML file; ``env`` defaults to ``os.environ`` (after ``.env`` was loaded)."""
    env = dict(os.environ) if env is None else env
    fname = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{fname}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{fname}: not valid YAML: {exc}") from exc
    return build_config(data, fname, env)


def build_config(data: Any, fname: str, env: dict[str, str]) -> Config:
    def fail(where: str, msg: str) -> ConfigError:
        return ConfigError(f"{fname}: {where}: {msg}")

    if not isinstance(data, dict):
        raise fail("top level", "expected a mapping with 'version' and 'models'")
    known = {
        "version",
        "models",
        "providers",
        "default_provider",
        "timeout",
        "anthropic_default_max_tokens",
        "max_request_bytes",
        "image_fetch",
        "passthrough_usage",
        "auth",
        "rate_limits",
        "capabilities",
        "responses",
        "governance",
    }
    for key in data:
        if key not in known:
            raise fail(f"'{key}'", f"unknown setting (known: {', '.join(sorted(known))})")
    version = data.get("version")
    if version is None or str(version).strip() == "":
        raise fail("version", 'missing (add version: "1.0")')

    providers = _builtin_providers(env, fail)
    raw_providers = data.get("providers") or []
    if not isinstance(raw_providers, list):
        raise fail("providers", "expected a list")
    declared: set[str] = set()
    for i, entry in enumerate(raw_providers):
        prov = _parse_provider(entry, i, env, fail)
        if prov.name in declared:
            raise fail(f"providers[{i}] ({prov.name})", "duplicate provider name")
        declared.add(prov.name)
        providers[prov.name] = prov

    enabled = _parse_capabilities_switch(data.get("capabilities"), "capabilities", fail)
    raw_models = data.get("models")
    if raw_models is None:
        raw_models = []
    if not isinstance(raw_models, list):
        raise fail("models", "expected a list")
    models: dict[str, Model] = {}
    for i, entry in enumerate(raw_models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            raise fail(where, "expected a mapping with 'name' and 'provider'")
        for key in entry:
            if key not in ("name", "provider", "description", "target_model", "capabilities"):
                raise fail(where, f"unknown field '{key}'")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(where, "'name' is missing or not a string")
        where = f"models[{i}] ({name})"
        if any(c in name for c in "\r\n\0"):
            raise fail(where, "'name' contains a control character")
        provider = entry.get("provider")
        if not isinstance(provider, str) or not provider:
            raise fail(where, "'provider' is missing")
        if provider not in providers:
            raise fail(where, f"unknown provider '{provider}' (known: {', '.join(sorted(providers))})")
        if name in models:
            raise fail(where, "duplicate model name")
        target = entry.get("target_model", name)
        if not isinstance(target, str) or not target:
            raise fail(where, "'target_model' must be a non-empty string")
        desc = entry.get("description") or ""
        caps = _model_capabilities(entry.get("capabilities"), enabled, providers[provider].type, target, where, fail)
        models[name] = Model(name, provider, target, str(desc), caps)

    default = data.get("default_provider")
    if default is not None and default not in providers:
        raise fail("default_provider", f"unknown provider '{default}' (known: {', '.join(sorted(providers))})")

    timeout = DEFAULT_TIMEOUT
    if data.get("timeout") is not None:
        try:
            timeout = parse_duration(data["timeout"])
        except ValueError as exc:
            raise fail("timeout", str(exc)) from None

    cfg = Config(fname, str(version), models, providers, default, timeout, capabilities_enabled=enabled)
    for key in ("anthropic_default_max_tokens", "max_request_bytes"):
        if key in data:
            value = data[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise fail(key, "expected a positive integer")
            setattr(cfg, key, value)
    if "passthrough_usage" in data:
        if not isinstance(data["passthrough_usage"], bool):
            raise fail("passthrough_usage", "expected true or false")
        cfg.passthrough_usage = data["passthrough_usage"]
    if data.get("image_fetch") is not None:
        cfg.image_fetch = _parse_image_fetch(data["image_fetch"], fail)
    cfg.responses = _parse_responses(data.get("responses") or {}, fail)
    if not os.path.isabs(cfg.responses.data_dir):  # relative to the config file, wherever the process runs
        where = os.path.join(os.path.dirname(os.path.abspath(fname)), cfg.responses.data_dir)
        cfg.responses = replace(cfg.responses, data_dir=os.path.normpath(where))
    cfg.access = access.parse(data.get("auth"), data.get("rate_limits"), env, fail)
    for model in cfg.access.per_model_rpm:
        if model not in models:
            raise fail(f"rate_limits.per_model.{model}", "not a configured model name")
    cfg.governance = governance.parse(data.get("governance"), env, {k.name for k in cfg.access.keys}, fail)
    return cfg


def _parse_capabilities_switch(raw: Any, where: str, fail: Any) -> bool:
    """``capabilities: {enabled: true|false}`` (top level): whether requests are shaped to what targets accept."""
    if raw is None:
        return True
    if not isinstance(raw, dict) or set(raw) - {"enabled"} or not isinstance(raw.get("enabled", True), bool):
        raise fail(where, "expected {enabled: true|false}")
    return bool(raw.get("enabled", True))


def _model_capabilities(
    raw: Any, enabled: bool, provider_type: str, target: str, where: str, fail: Any
) -> Capabilities | None:
    """``models[].capabilities``: fields overriding the catalog's entry for the target (``like: <entry>`` starts from
    another entry; ``enabled: false`` switches shaping off for this model)."""
    if raw is not None and not isinstance(raw, dict):
        raise fail(f"{where}.capabilities", "expected a mapping of capabilities (see docs/capabilities.md)")
    override = dict(raw or {})
    on = override.pop("enabled", enabled)
    if not isinstance(on, bool):
        raise fail(f"{where}.capabilities.enabled", "expected true or false")
    try:
        caps = models.catalog().resolve(provider_type, target, override)
    except ValueError as exc:
        raise fail(f"{where}.capabilities", str(exc)) from None
    return caps if on else None


def _parse_responses(raw: Any, fail: Any) -> StoreSettings:
    """``responses: {store, data_dir, retention, max_bytes}``: where and how long the gateway keeps conversations
    of Responses API clients (``previous_response_id``) for providers that do not keep them."""
    if not isinstance(raw, dict):
        raise fail("responses", "expected a mapping (store, data_dir, retention, max_bytes)")
    known = ("store", "data_dir", "retention", "max_bytes")
    for key in raw:
        if key not in known:
            raise fail("responses", f"unknown field '{key}' (known: {', '.join(known)})")
    out = StoreSettings()
    enabled = raw.get("store", out.enabled)
    if not isinstance(enabled, bool):
        raise fail("responses.store", "expected true or false")
    data_dir = raw.get("data_dir", out.data_dir)
    if not isinstance(data_dir, str) or not data_dir.strip():
        raise fail("responses.data_dir", "expected a directory path")
    retention = out.retention
    if raw.get("retention") is not None:
        try:
            retention = parse_duration(raw["retention"])
        except ValueError as exc:
            raise fail("responses.retention", str(exc)) from None
    max_bytes = raw.get("max_bytes", out.max_bytes)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise fail("responses.max_bytes", "expected a positive integer")
    return StoreSettings(enabled, data_dir, retention, max_bytes)


def _parse_image_fetch(raw: Any, fail: Any) -> FetchPolicy:
    """``image_fetch: {enabled, max_bytes, allow_hosts, allow_http, timeout}``: off unless enabled with hosts."""
    if not isinstance(raw, dict):
        raise fail("image_fetch", "expected a mapping (enabled, max_bytes, allow_hosts, allow_http, timeout)")
    known = ("enabled", "max_bytes", "allow_hosts", "allow_http", "timeout")
    for key in raw:
        if key not in known:
            raise fail("image_fetch", f"unknown field '{key}' (known: {', '.join(known)})")
    enabled = raw.get("enabled", False)
    allow_http = raw.get("allow_http", False)
    if not isinstance(enabled, bool) or not isinstance(allow_http, bool):
        raise fail("image_fetch", "'enabled' and 'allow_http' must be true or false")
    max_bytes = raw.get("max_bytes", _fetch.DEFAULT_MAX_BYTES)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise fail("image_fetch.max_bytes", "expected a positive integer")
    hosts = raw.get("allow_hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        raise fail("image_fetch.allow_hosts", "expected a list of host names ('*.example.com' for subdomains)")
    if enabled and not hosts:
        raise fail("image_fetch.allow_hosts", "must name at least one host when fetching is enabled")
    timeout = _fetch.DEFAULT_TIMEOUT
    if raw.get("timeout") is not None:
        try:
            timeout = parse_duration(raw["timeout"])
        except ValueError as exc:
            raise fail("image_fetch.timeout", str(exc)) from None
    return FetchPolicy(enabled, max_bytes, tuple(h.strip() for h in hosts), allow_http, timeout)


def _builtin_providers(env: dict[str, str], fail: Any) -> dict[str, Provider]:
    out: dict[str, Provider] = {}
    for name, (key_env, url_env, default_url) in BUILTINS.items():
        url = env.get(url_env) or default_url
        try:
            upstream = parse_base_url(url)
        except ValueError as exc:
            raise ConfigError(f"environment: {url_env}: {exc}") from None
        out[name] = Provider(name, name, url, upstream, key_env)
    return out


def _parse_provider(entry: Any, i: int, env: dict[str, str], fail: Any) -> Provider:
    where = f"providers[{i}]"
    if not isinstance(entry, dict):
        raise fail(where, "expected a mapping with 'name', 'type' and 'base_url'")
    for key in entry:
        if key not in ("name", "type", "base_url", "api_key_env", "api"):
            raise fail(where, f"unknown field '{key}'")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(where, "'name' must be letters, digits, '_', '.' or '-'")
    where = f"providers[{i}] ({name})"
    ptype = entry.get("type")
    if ptype not in registry.FORMATS:
        raise fail(where, f"'type' must be one of {', '.join(registry.names())}")
    base_url = entry.get("base_url")
    if base_url is None and name in BUILTINS:
        base_url = env.get(BUILTINS[name][1]) or BUILTINS[name][2]
    if not isinstance(base_url, str):
        raise fail(where, "'base_url' is missing")
    try:
        upstream = parse_base_url(base_url)
    except ValueError as exc:
        raise fail(where, str(exc)) from None
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise fail(where, "'api_key_env' must be the name of an environment variable")
    api = entry.get("api", "chat")
    if api not in PROVIDER_APIS:
        raise fail(where, f"'api' must be one of {', '.join(PROVIDER_APIS)}")
    if api != "chat" and ptype != "openai":
        raise fail(where, "'api' applies to providers of type 'openai' only")
    return Provider(name, ptype, base_url, upstream, key_env, api)


def provider_keys(cfg: Config, env: dict[str, str]) -> dict[str, str]:
    """The API keys the reachable providers need, by environment variable name, from ``env`` (only those set).

    Only the launcher and ``envoy-config --write-keys`` call this, to hand the keys to Envoy; workers never do."""
    names = {p.api_key_env for p in cfg.used_providers() if p.api_key_env}
    return {name: env[name] for name in sorted(names) if env.get(name)}


def key_variables(cfg: Config) -> set[str]:
    """Every environment variable that may hold a provider key (configured or built in): removed from workers'
    environments, so a worker process holds no provider key."""
    return {p.api_key_env for p in cfg.providers.values() if p.api_key_env} | {k for k, _, _ in BUILTINS.values()}


def summary(cfg: Config, env: dict[str, str] | None = None) -> str:
    """A human summary for ``check-config``: models, providers, which keys are present (never the keys)."""
    env = dict(os.environ) if env is None else env
    lines = [f"config {cfg.path}: version {cfg.version}, {len(cfg.models)} models, timeout {cfg.timeout:g}s"]
    for m in cfg.models.values():
        alias = f" -> {m.target_model}" if m.target_model != m.name else ""
        lines.append(f"  model {m.name}{alias} via {m.provider}")
        if m.capabilities is None:
            lines.append("    capabilities: off (requests go as translated, unshaped)")
        else:
            lines.append(f"    capabilities: {describe(m.capabilities)}")
    if cfg.default_provider:
        lines.append(f"  unknown models go to {cfg.default_provider}")
    r = cfg.responses
    if r.enabled:
        lines.append(
            f"  Responses API answers kept in {os.path.join(r.data_dir, 'responses.sqlite3')} for {r.retention:g}s, "
            f"up to {r.max_bytes} bytes"
        )
    else:
        lines.append("  Responses API answers: not kept (responses.store is off)")
    if cfg.access.enabled:
        lines.append(f"  gateway keys: {', '.join(k.name for k in cfg.access.keys)}")
    else:
        lines.append("  gateway keys: none (anyone who can reach the listener uses your provider keys)")
    for p in cfg.used_providers():
        if p.api_key_env is None:
            key = "no key needed"
        else:
            key = (
                f"{p.api_key_env} set"
                if env.get(p.api_key_env)
                else f"{p.api_key_env} MISSING (requests will fail with auth)"
            )
        kind = f"{p.type}, {p.api} API" if p.api != "chat" else p.type
        lines.append(f"  provider {p.name} ({kind}) at {p.base_url}: {key}")
    return "\n".join(lines)
