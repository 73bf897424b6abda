"""Gateway configuration: the YAML model mapping, named providers, and the environment (keys, base URLs).

The seed's schema (``version``, ``models[]`` of ``name``/``provider``/``description``, ``default_provider``,
``timeout``) keeps working unchanged; ``models[].target_model`` and ``providers[]`` extend it. Everything is checked
once at load: a bad file is refused with one message naming the file, the entry and the fault. Missing provider keys
do not stop the gateway; requests to that provider fail with an ``auth`` error instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from extproc.core import access, governance, models, targets, telemetry
from extproc.core.access import AccessPolicy
from extproc.core.conversations import StoreSettings
from extproc.core.governance import Settings as GovernanceSettings
from extproc.core.targets import FallbackPolicy, Level, ModelTarget
from extproc.core.telemetry import TelemetrySettings
from extproc.translation import media as _fetch
from extproc.translation.capabilities import Capabilities, describe
from extproc.translation.formats import registry
from extproc.translation.formats.contract import CredentialHeader
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
# The clouds' provider types: what each ``api`` may be (the first is the default), and where its answers come from.
CLOUD_APIS: dict[str, tuple[str, ...]] = {
    "azure": ("chat", "responses"),
    "vertex": ("gemini", "anthropic"),
    "bedrock": ("converse", "anthropic"),
}
AZURE_API_VERSION = "2024-10-21"  # Azure OpenAI's GA data-plane version when a provider names none
# Where a provider's credential comes from: a key Envoy injects (``api_key_env``; or none for keyless upstreams),
# a short-lived token the gateway's refresher keeps in a file Envoy watches (``entra``, ``google``), or AWS SigV4
# computed by Envoy itself from the standard AWS credential chain (``aws``).
CREDENTIAL_SOURCES = ("key", "entra", "google", "aws")
TOKEN_SOURCES = ("entra", "google")


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
    # The API it speaks: openai type "chat" (Chat Completions) or "responses"; azure the same; vertex "gemini" or
    # "anthropic" (Claude on Vertex); bedrock "converse" or "anthropic" (Claude through InvokeModel).
    api: str = "chat"
    api_version: str | None = None  # azure: the api-version query, or "v1" for the /openai/v1/ surface
    project: str | None = None  # vertex
    location: str | None = None  # vertex
    region: str | None = None  # bedrock (the SigV4 signing region too)
    credentials: str = "key"  # one of CREDENTIAL_SOURCES
    credentials_file: str | None = None  # google: a service-account or external-account JSON (else ADC)
    aws_profile: str | None = None  # aws: a profile of the shared config/credentials files (else the default chain)

    @property
    def cluster(self) -> str:
        return f"provider_{self.name}"

    @property
    def format(self) -> str:
        """The wire format it speaks (a registry name): its type's, the Responses API for ``api: responses``, or a
        cloud's variant of a format."""
        if self.type == "azure":
            if self.api_version == "v1":  # the /openai/v1/ surface: OpenAI's own format on Azure's prefix
                return "responses" if self.api == "responses" else "openai"
            return "azure"
        if self.type == "vertex":
            return "vertex_anthropic" if self.api == "anthropic" else "vertex"
        if self.type == "bedrock":
            return "bedrock_anthropic" if self.api == "anthropic" else "bedrock"
        return "responses" if self.api == "responses" else self.type

    def family(self, target: str = "") -> str:
        """The capability catalog's section for a model it serves (``models.yaml``): the vendor whose model it is
        (Bedrock's Converse serves many vendors: Claude's section for Claude, none of the catalog's for the rest)."""
        if self.type == "azure":
            return "openai"
        if self.type == "vertex":
            return "anthropic" if self.api == "anthropic" else "gemini"
        if self.type == "bedrock":
            return "anthropic" if self.api == "anthropic" or "anthropic." in target or "claude" in target else "bedrock"
        return self.type

    @property
    def query(self) -> str:
        """A query every upstream path carries (Azure's ``api-version``)."""
        if self.type == "azure" and self.api_version and self.api_version != "v1":
            return f"api-version={self.api_version}"
        return ""

    def path(self, relative: str) -> str:
        """An upstream path: the base URL's prefix, ``relative`` (which may have its own query), this provider's
        query."""
        out = self.upstream.prefix + relative
        if self.query:
            out += ("&" if "?" in relative else "?") + self.query
        return out

    @property
    def token_source(self) -> str | None:
        """``entra`` or ``google`` when the gateway keeps a short-lived token for it, else None."""
        return self.credentials if self.credentials in TOKEN_SOURCES else None

    @property
    def secret_file(self) -> str | None:
        """The name of the file Envoy reads this provider's credential from: its key variable, or its token's file;
        None when Envoy injects nothing from a file (keyless upstreams, AWS SigV4)."""
        if self.api_key_env:
            return self.api_key_env
        if self.token_source is not None:
            return f"token-{self.name}"
        return None


@dataclass(slots=True)
class Model:
    name: str
    provider: str  # the primary target's provider (the only one unless ``levels`` has more)
    target_model: str
    description: str = ""
    # What the target accepts (the catalog's entry, with this model's ``capabilities`` override); None: the catalog
    # is switched off (``capabilities: {enabled: false}``, for the gateway or this model), requests go as translated.
    capabilities: Capabilities | None = None
    # Every target in fallback order (``targets``, ``fallbacks``); () means the one above.
    levels: tuple[Level, ...] = ()
    # More than one target: Envoy retries across them, each attempt translated for its target (set with ``levels``;
    # a field, not computed: the request path reads it).
    fallback: bool = False

    @property
    def targets(self) -> tuple[Level, ...]:
        return self.levels or ((ModelTarget(self.provider, self.target_model),),)


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
    tracing: TelemetrySettings | None = None  # OpenTelemetry (``tracing:`` and OTEL_* variables); None: off
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
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
            if m.capabilities is None or not m.fallback or (provider.name, target) == (m.provider, m.target_model):
                return m.capabilities
            # Another target of a model with several: the catalog's entry for it (the model's override describes the
            # primary target).
        elif not self.capabilities_enabled:
            return None
        return models.catalog().lookup(provider.family(target), target)

    def used_providers(self) -> list[Provider]:
        """Providers that a request can reach: those named by models (any target) or as default (each gets an Envoy
        cluster)."""
        names = {t.provider for m in self.models.values() for level in m.targets for t in level}
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
        "tracing",
        "fallback",
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
    own_levels: dict[str, tuple[Level, ...]] = {}
    fallbacks: dict[str, tuple[str, ...]] = {}
    wheres: dict[str, str] = {}
    for i, entry in enumerate(raw_models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            raise fail(where, "expected a mapping with 'name' and 'provider'")
        for key in entry:
            if key not in ("name", "provider", "description", "target_model", "capabilities", "targets", "fallbacks"):
                raise fail(where, f"unknown field '{key}'")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise fail(where, "'name' is missing or not a string")
        where = f"models[{i}] ({name})"
        if any(c in name for c in "\r\n\0"):
            raise fail(where, "'name' contains a control character")
        if name in models:
            raise fail(where, "duplicate model name")
        if "targets" in entry:
            if "provider" in entry or "target_model" in entry:
                raise fail(where, "give either 'provider' (and 'target_model') or 'targets', not both")
            levels = targets.parse_targets(entry["targets"], where, name, providers, fail)
            provider, target = levels[0][0].provider, levels[0][0].model
        else:
            raw_provider = entry.get("provider")
            if not isinstance(raw_provider, str) or not raw_provider:
                raise fail(where, "'provider' is missing (or give 'targets')")
            provider = raw_provider
            if provider not in providers:
                raise fail(where, f"unknown provider '{provider}' (known: {', '.join(sorted(providers))})")
            target = entry.get("target_model", name)
            if not isinstance(target, str) or not target:
                raise fail(where, "'target_model' must be a non-empty string")
            levels = ((ModelTarget(provider, target),),)
        if "fallbacks" in entry:
            chain = targets.parse_fallbacks(entry["fallbacks"], where)
            if isinstance(chain, str):
                raise fail(f"{where}.fallbacks", chain)
            fallbacks[name] = chain
        desc = entry.get("description") or ""
        caps = _model_capabilities(
            entry.get("capabilities"), enabled, providers[provider].family(target), target, where, fail
        )
        models[name] = Model(name, provider, target, str(desc), caps)
        own_levels[name], wheres[name] = levels, where
    for name, levels in targets.flatten(own_levels, fallbacks, wheres, fail).items():
        if sum(len(level) for level in levels) > 1:
            models[name].levels, models[name].fallback = levels, True

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
    cfg.tracing = telemetry.parse(data.get("tracing"), env, fail)
    cfg.access = access.parse(data.get("auth"), data.get("rate_limits"), env, fail)
    if data.get("fallback") is not None:
        cfg.fallback = targets.parse_policy(data["fallback"], fail, parse_duration)
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


_PROVIDER_FIELDS = ("name", "type", "base_url", "api_key_env", "api")
_CLOUD_FIELDS: dict[str, tuple[str, ...]] = {
    "azure": ("api_version", "credentials"),
    "vertex": ("project", "location", "credentials", "credentials_file"),
    "bedrock": ("region", "credentials", "aws_profile"),
}
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")  # a Google Cloud project id
_REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")  # us-east-1, europe-west4, ap-southeast-2
_API_VERSION_RE = re.compile(r"^(?:v1|\d{4}-\d{2}-\d{2}(?:-preview)?)$")


def _parse_provider(entry: Any, i: int, env: dict[str, str], fail: Any) -> Provider:
    where = f"providers[{i}]"
    if not isinstance(entry, dict):
        raise fail(where, "expected a mapping with 'name', 'type' and 'base_url'")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(where, "'name' must be letters, digits, '_', '.' or '-'")
    where = f"providers[{i}] ({name})"
    ptype = entry.get("type")
    types = (*registry.names(), *CLOUD_APIS)  # a format's name, or a cloud
    if ptype not in types:
        raise fail(where, f"'type' must be one of {', '.join(types)}")
    allowed = _PROVIDER_FIELDS + _CLOUD_FIELDS.get(ptype, ())
    for key in entry:
        if key not in allowed:
            raise fail(where, f"unknown field '{key}' for type {ptype} (known: {', '.join(allowed)})")
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise fail(where, "'api_key_env' must be the name of an environment variable")
    if ptype in CLOUD_APIS:
        return _parse_cloud_provider(entry, ptype, name, key_env, where, fail)
    base_url = entry.get("base_url")
    if base_url is None and name in BUILTINS:
        base_url = env.get(BUILTINS[name][1]) or BUILTINS[name][2]
    if not isinstance(base_url, str):
        raise fail(where, "'base_url' is missing")
    try:
        upstream = parse_base_url(base_url)
    except ValueError as exc:
        raise fail(where, str(exc)) from None
    api = entry.get("api", "chat")
    if api not in PROVIDER_APIS:
        raise fail(where, f"'api' must be one of {', '.join(PROVIDER_APIS)}")
    if api != "chat" and ptype != "openai":
        raise fail(where, "'api' applies to providers of type 'openai' only")
    return Provider(name, ptype, base_url, upstream, key_env, api)


def _text(entry: dict[str, Any], key: str, where: str, fail: Any, pattern: re.Pattern[str] | None = None) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise fail(where, f"'{key}' is missing (required for type {entry.get('type')})")
    value = value.strip()
    if pattern is not None and not pattern.match(value):
        raise fail(where, f"'{key}' {value!r} is not valid")
    return value


def _parse_cloud_provider(
    entry: dict[str, Any], ptype: str, name: str, key_env: str | None, where: str, fail: Any
) -> Provider:
    """An Azure OpenAI, Vertex AI or Bedrock provider: its region/project/location/deployment surface, the base URL
    derived from them unless given, and where its credential comes from."""
    apis = CLOUD_APIS[ptype]
    api = entry.get("api", apis[0])
    if api not in apis:
        raise fail(where, f"'api' must be one of {', '.join(apis)} for type {ptype}")
    default_source = {"azure": "key", "vertex": "google", "bedrock": "aws"}[ptype]
    source = entry.get("credentials", default_source)
    allowed_sources = {"azure": ("key", "entra"), "vertex": ("google",), "bedrock": ("aws",)}[ptype]
    if source not in allowed_sources:
        raise fail(where, f"'credentials' must be one of {', '.join(allowed_sources)} for type {ptype}")
    if source == "key" and not key_env:
        raise fail(where, "'api_key_env' is missing (or set credentials: entra for Entra ID tokens)")
    if source != "key" and key_env:
        raise fail(where, f"'api_key_env' and credentials: {source} exclude each other")
    prov = Provider(name, ptype, "", Upstream("https", "", 443, ""), key_env, api, credentials=source)
    base_url = entry.get("base_url")
    if ptype == "azure":
        if not isinstance(base_url, str):
            raise fail(where, "'base_url' is missing (the resource's endpoint, https://RESOURCE.openai.azure.com)")
        version = entry.get("api_version", AZURE_API_VERSION)
        if not isinstance(version, str) or not _API_VERSION_RE.match(version):
            raise fail(where, f"'api_version' {version!r} is not an Azure OpenAI API version (e.g. 2024-10-21, v1)")
        if api == "responses" and version != "v1":
            raise fail(where, "api: responses needs api_version: v1 (the /openai/v1/ surface)")
        prov.api_version = version
    elif ptype == "vertex":
        prov.project = _text(entry, "project", where, fail, _PROJECT_RE)
        prov.location = _text(entry, "location", where, fail, re.compile(r"^(?:global|[a-z]+-[a-z]+\d+)$"))
        if base_url is None:
            host = (
                "aiplatform.googleapis.com"
                if prov.location == "global"
                else f"{prov.location}-aiplatform.googleapis.com"
            )
            base_url = f"https://{host}"
        cfile = entry.get("credentials_file")
        if cfile is not None and (not isinstance(cfile, str) or not cfile.strip()):
            raise fail(where, "'credentials_file' must be a path to a service-account (or external-account) JSON")
        prov.credentials_file = cfile
    else:
        prov.region = _text(entry, "region", where, fail, _REGION_RE)
        if base_url is None:
            base_url = f"https://bedrock-runtime.{prov.region}.amazonaws.com"
        profile = entry.get("aws_profile")
        if profile is not None and (not isinstance(profile, str) or not _NAME_RE.match(profile)):
            raise fail(where, "'aws_profile' must be a profile name of the shared AWS config")
        prov.aws_profile = profile
    if not isinstance(base_url, str):
        raise fail(where, "'base_url' must be a URL")
    try:
        upstream = parse_base_url(base_url)
    except ValueError as exc:
        raise fail(where, str(exc)) from None
    if ptype == "vertex":
        upstream = replace(upstream, prefix=f"{upstream.prefix}/v1/projects/{prov.project}/locations/{prov.location}")
    elif ptype == "azure" and prov.api_version == "v1":
        upstream = replace(upstream, prefix=f"{upstream.prefix}/openai/v1")
    prov.base_url, prov.upstream = base_url, upstream
    return prov


def credential_header(p: Provider) -> CredentialHeader | None:
    """Where Envoy puts the provider's key or token (None: nothing injected from a file, e.g. AWS SigV4)."""
    if p.secret_file is None:
        return None
    if p.token_source is not None:
        return CredentialHeader("authorization", "Bearer ")
    if p.type == "azure":
        return CredentialHeader("api-key")  # the deployment and /openai/v1/ surfaces alike
    return registry.provider(p.format).CREDENTIAL


def provider_keys(cfg: Config, env: dict[str, str]) -> dict[str, str]:
    """The API keys the reachable providers need, by environment variable name, from ``env`` (only those set).

    Only the launcher and ``envoy-config --write-keys`` call this, to hand the keys to Envoy; workers never do."""
    names = {p.api_key_env for p in cfg.used_providers() if p.api_key_env}
    return {name: env[name] for name in sorted(names) if env.get(name)}


def key_variables(cfg: Config) -> set[str]:
    """Every environment variable that may hold a provider key (configured or built in): removed from workers'
    environments, so a worker process holds no provider key."""
    keys = {p.api_key_env for p in cfg.providers.values() if p.api_key_env} | {k for k, _, _ in BUILTINS.values()}
    return keys | set(CLOUD_SECRET_VARIABLES)


# The clouds' credential variables: Envoy (AWS SigV4) and the token refresher read them; workers never hold them.
CLOUD_SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
)  # fmt: skip


def summary(
    cfg: Config, env: dict[str, str] | None = None, source: Callable[[Provider, dict[str, str]], str] | None = None
) -> str:
    """A human summary for ``check-config``: models, providers, which keys are present (never the keys); ``source``
    says where a provider's computed credential (token, AWS signature) comes from."""
    env = dict(os.environ) if env is None else env
    lines = [f"config {cfg.path}: version {cfg.version}, {len(cfg.models)} models, timeout {cfg.timeout:g}s"]
    for m in cfg.models.values():
        if m.fallback:
            order = " then ".join(" or ".join(f"{t.label} ({t.weight})" if len(lv) > 1 else t.label for t in lv)
                                  for lv in m.targets)  # fmt: skip
            lines.append(f"  model {m.name} via {order}")
            continue
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
        if p.credentials != "key":
            key = source(p, env) if source is not None else f"credentials: {p.credentials}"
        elif p.api_key_env is None:
            key = "no key needed"
        else:
            key = (
                f"{p.api_key_env} set"
                if env.get(p.api_key_env)
                else f"{p.api_key_env} MISSING (requests will fail with auth)"
            )
        kind = f"{p.type}, {p.api} API" if p.api != "chat" else p.type
        where = ""
        if p.type == "azure":
            where = f", api-version {p.api_version}" if p.api_version != "v1" else ", the /openai/v1/ surface"
        elif p.type == "vertex":
            where = f", project {p.project}, location {p.location}"
        elif p.type == "bedrock":
            where = f", region {p.region}"
        lines.append(f"  provider {p.name} ({kind}{where}) at {p.base_url}: {key}")
    return "\n".join(lines)
