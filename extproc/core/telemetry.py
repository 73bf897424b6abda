"""OpenTelemetry settings: the config's ``tracing:`` section and the standard ``OTEL_*`` environment variables.

Pure: the YAML mapping and the environment in, ``TelemetrySettings`` (or None: tracing off) out. Keys set in the YAML
win; those left out come from the environment (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``).
Without an endpoint, or with ``enabled: false`` or ``OTEL_SDK_DISABLED=true``, tracing is off: Envoy's bootstrap has
no tracer and the service does no OpenTelemetry work at all (``docs/tracing.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# The OpenTelemetry SDK's sampler names (``OTEL_TRACES_SAMPLER``); Envoy's tracer gets the same decision.
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_KEYS = ("enabled", "endpoint", "relay", "service_name", "sampler", "sampler_arg", "capture_content", "metrics")
_TRUE = ("true", "1", "yes", "on")


@dataclass(slots=True, frozen=True)
class TelemetrySettings:
    endpoint: str  # the OTLP/gRPC collector, http://host:4317 (https:// for TLS)
    host: str
    port: int
    tls: bool
    service_name: str = "ai-gateway"  # Envoy's spans; the service's are "<service_name>-extproc"
    sampler: str = "parentbased_always_on"
    ratio: float = 1.0  # for the *traceidratio samplers
    capture_content: bool = False  # prompts and completions in spans (credentials masked); off by default
    metrics: bool = True  # the GenAI semantic-convention metrics over OTLP, beside the Prometheus ones
    # ``unix:PATH``: Envoy listens there and forwards OTLP to ``endpoint``; the service exports through it, so it
    # needs no network (docker compose, Kubernetes: docs/tracing.md)
    relay: str | None = None

    @property
    def service_target(self) -> str:
        """Where the service's exporter connects: the relay socket, else the collector."""
        return self.relay if self.relay else f"{self.host}:{self.port}"

    @property
    def extproc_service_name(self) -> str:
        return f"{self.service_name}-extproc"


def parse(raw: Any, env: dict[str, str], fail: Any) -> TelemetrySettings | None:
    """``tracing:`` (None when absent) and the environment; ``fail(where, message)`` makes the config error."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise fail("tracing", "expected a mapping (endpoint, service_name, sampler, sampler_arg, capture_content)")
    for key in raw:
        if key not in _KEYS:
            raise fail("tracing", f"unknown field '{key}' (known: {', '.join(_KEYS)})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("tracing.enabled", "expected true or false")
    if not enabled or env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return None
    endpoint = raw.get("endpoint")
    if endpoint is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        if raw:
            raise fail("tracing.endpoint", "missing (the OTLP/gRPC collector, e.g. http://otel-collector:4317)")
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol.strip() != "grpc":
        raise fail("tracing", f"OTLP protocol {protocol!r} is not supported: only grpc (port 4317)")
    if not isinstance(endpoint, str):
        raise fail("tracing.endpoint", "expected a URL such as http://otel-collector:4317")
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
        raise fail("tracing.endpoint", f"{endpoint!r}: expected http://host:port or https://host:port")
    try:
        port = parts.port or 4317
    except ValueError:
        raise fail("tracing.endpoint", f"{endpoint!r} has a bad port") from None
    name = raw.get("service_name", env.get("OTEL_SERVICE_NAME") or "ai-gateway")
    if not isinstance(name, str) or not name.strip():
        raise fail("tracing.service_name", "expected a non-empty string")
    sampler = raw.get("sampler", env.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on")
    if sampler not in SAMPLERS:
        raise fail("tracing.sampler", f"{sampler!r}: expected one of {', '.join(SAMPLERS)}")
    arg = raw.get("sampler_arg", env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    try:
        ratio = float(arg)
    except (TypeError, ValueError):
        raise fail("tracing.sampler_arg", f"{arg!r}: expected a ratio between 0 and 1") from None
    if isinstance(arg, bool) or not 0.0 <= ratio <= 1.0:
        raise fail("tracing.sampler_arg", f"{arg!r}: expected a ratio between 0 and 1")
    content = raw.get("capture_content")
    if content is None:
        content = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in _TRUE
    if not isinstance(content, bool):
        raise fail("tracing.capture_content", "expected true or false")
    metrics = raw.get("metrics", True)
    if not isinstance(metrics, bool):
        raise fail("tracing.metrics", "expected true or false")
    relay = raw.get("relay", env.get("AI_GATEWAY_OTLP_RELAY") or None)
    if relay is not None and (not isinstance(relay, str) or not relay.startswith("unix:") or len(relay) < 6):
        raise fail("tracing.relay", f"{relay!r}: expected unix:PATH (a socket Envoy listens on)")
    return TelemetrySettings(
        endpoint.strip(), parts.hostname, port, parts.scheme == "https", name.strip(), sampler, ratio, content, metrics,
        relay,
    )  # fmt: skip
