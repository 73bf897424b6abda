"""Routing: which format a request speaks, who may make it, which model it names and which provider serves it (pure).

``Exchange`` calls these on the request phases; the answer is a ``Target`` (the provider, its format, the upstream
model name) and the header changes that send the request there. Nothing here depends on a format's name: formats
are reached through the registry's contract.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.core.access import ANONYMOUS, GatewayKey
from extproc.core.config import Config, Provider
from extproc.core.contract import RATE_KEY_HEADER, RATE_MODEL_HEADER, ROUTE_HEADER
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats import registry
from extproc.translation.formats.contract import Endpoint, ProviderFormat, WireFormat

# Client credentials never travel upstream; accept-encoding is dropped so provider bodies arrive uncompressed.
# Organization/project headers would pick how the gateway's provider key is billed and limited: also stripped.
# Azure's api-key and AWS's signature headers are credentials too (a client's, or an earlier fallback attempt's to
# another target: Envoy keeps one header map for all the attempts of a request).
STRIP_ALWAYS = (
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "accept-encoding", "transfer-encoding",
    "openai-organization", "openai-project", "x-goog-user-project",
    "x-amz-security-token", "x-amz-date", "x-amz-content-sha256",
)  # fmt: skip
# The gateway's own request headers: a client can never set them (overwritten later, removed here at once).
OWN_HEADERS = (ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER)
# Headers of one format's API that mean nothing (or something else) to another's.
STRIP_CROSS = ("anthropic-version", "anthropic-beta")
JSON = "application/json"
# Model names travel in upstream paths (Gemini) and headers: printable, no slashes-dot-dot tricks, no control chars.
_MODEL_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:@+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*$")


@dataclass(slots=True)
class Target:
    """Where a model call goes."""

    provider: Provider
    fmt: ProviderFormat  # the provider's wire format (a client format or a cloud's variant of one)
    model: str  # the model name sent upstream
    # The client speaks the provider's format (or the format a cloud's variant takes as is): its bytes go up
    # unchanged but for the model (and a cloud's envelope: ``fmt.passthrough_body``).
    passthrough: bool


def authenticate(cfg: Config, fmt: WireFormat, headers: dict[str, str], query: str) -> GatewayKey | None:
    """With gateway keys configured, the request must present one in its format's own auth header (401 if not)."""
    policy = cfg.access
    if not policy.enabled:
        return None
    key = policy.identify(fmt.client_credential(headers, query))
    if key is None:
        raise GatewayError("auth", "missing or invalid gateway API key", 401)
    return key


def check_length(cfg: Config, headers: dict[str, str]) -> None:
    length = headers.get("content-length", "")
    limit = cfg.max_request_bytes
    if length.isdigit() and int(length) > limit:
        raise GatewayError(
            "request_too_large", f"request body is {length} bytes, over this gateway's limit of {limit}", 413
        )


def peek(body: bytes) -> dict[str, Any]:
    """The request as a dict, enough to read ``model`` and ``stream``; a clear 400 when it is not a JSON object."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise invalid("request body must be a JSON object")
    return obj


def model_name(value: Any) -> str:
    """The client's model name, checked: it travels in paths and headers."""
    if not isinstance(value, str) or not value:
        raise invalid("'model' is required and must be a string", param="model")
    if len(value) > 256 or not _MODEL_NAME.match(value):
        raise invalid(f"model name {value[:80]!r} has characters a model name cannot have", param="model")
    return value


def resolve(cfg: Config, client: WireFormat, endpoint: Endpoint, model: str, key: GatewayKey | None) -> Target:
    """The provider and upstream model for a client's model name: 404 unknown, 403 not on the key's allow-list."""
    resolved = cfg.resolve(model)
    if resolved is None:
        raise GatewayError("unknown_model", f"model '{model}' is not configured on this gateway", 404, param="model")
    provider, upstream = resolved
    check_allowed(key, model)
    fmt = registry.provider(provider.format)
    return Target(provider, fmt, upstream, passthrough=registry.passes_through(fmt, client))


def check_allowed(key: GatewayKey | None, model: str) -> None:
    """403 unless the gateway key (if any) may use this model."""
    if key is not None and not key.allows(model):
        raise GatewayError("permission", f"gateway key '{key.name}' may not use model '{model}'", 403)


def upstream_headers(
    cfg: Config, target: Target, key: GatewayKey | None, model: str, *, stream: bool, path: str, length: int
) -> tuple[list[tuple[str, str]], list[str]]:
    """The header mutation that sends a request to ``target``: the routing header (always overwritten), the rate-limit
    headers, the upstream path and length; client credentials and the gateway's own headers removed. The provider's
    key is not here: Envoy injects it on the provider's cluster (the service never holds it)."""
    set_headers: list[tuple[str, str]] = [(ROUTE_HEADER, target.provider.name)]
    if cfg.access.rate_limited:  # what Envoy's local rate limit counts (removed before the request leaves)
        set_headers += [(RATE_KEY_HEADER, key.name if key is not None else ANONYMOUS), (RATE_MODEL_HEADER, model)]
    remove = list(STRIP_ALWAYS)
    if not target.passthrough:
        remove.extend(STRIP_CROSS)
        set_headers.extend(target.fmt.EXTRA_HEADERS)
        set_headers.append(("content-type", JSON))
    if stream:
        # A stream that keeps producing is never cut: no total deadline (the router consumes this header);
        # the route's idle timeout still ends a silent one.
        set_headers.append(("x-envoy-upstream-rq-timeout-ms", "0"))
    set_headers.append((":path", path))
    set_headers.append(("content-length", str(length)))
    names = {k for k, _ in set_headers}
    return set_headers, [h for h in remove if h not in names]
