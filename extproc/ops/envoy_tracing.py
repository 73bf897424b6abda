"""Envoy's OpenTelemetry tracer in the bootstrap, when the config asks for tracing (``core.telemetry``).

What Envoy 1.40 does with it (checked against a real Envoy, ``tests/e2e/test_tracing.py``):

- the listener's connection manager starts a server span per request (``ingress``), a child of the client's W3C
  ``traceparent`` when it sends one, and reports it to the OTLP collector over gRPC (the ``otlp_collector`` cluster);
- the ext_proc filter's gRPC stream gets a client span of its own (``async envoy.service.ext_proc.v3.
  ExternalProcessor.Process egress``) whose context travels to the service as ``traceparent`` in the stream's initial
  metadata: the service's span is that span's child;
- ``spawn_upstream_span``: the router starts a client span per provider attempt (``router provider_X egress``) and
  sends its ``traceparent`` to the provider.

Sampling follows the OpenTelemetry SDK's sampler names; Envoy's connection manager otherwise samples by its own
``random_sampling`` and ignores a client's sampled flag, so the sampler is always set explicitly here.
"""

from __future__ import annotations

from typing import Any

from extproc.core.address import Address
from extproc.core.telemetry import TelemetrySettings

OTLP_CLUSTER = "otlp_collector"
_HCM_NAME = "envoy.filters.network.http_connection_manager"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_SAMPLERS = "type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3."


def _ratio(ratio: float) -> dict[str, Any]:
    # FractionalPercent in millionths: 0.1 -> 100000/MILLION
    return {
        "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
        "typed_config": {
            "@type": _SAMPLERS + "TraceIdRatioBasedSamplerConfig",
            "sampling_percentage": {"numerator": round(ratio * 1_000_000), "denominator": "MILLION"},
        },
    }


_ALWAYS_ON = {
    "name": "envoy.tracers.opentelemetry.samplers.always_on",
    "typed_config": {"@type": _SAMPLERS + "AlwaysOnSamplerConfig"},
}


def sampler(settings: TelemetrySettings) -> dict[str, Any]:
    """The OTel SDK sampler named by ``OTEL_TRACES_SAMPLER`` as Envoy's sampler extension."""
    name = settings.sampler
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        inner = _ALWAYS_ON
    elif base == "always_off":
        inner = _ratio(0.0)
    else:
        inner = _ratio(settings.ratio)
    if not name.startswith("parentbased_"):
        return inner
    return {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": {"@type": _SAMPLERS + "ParentBasedSamplerConfig", "wrapped_sampler": inner},
    }


def hcm_tracing(settings: TelemetrySettings) -> dict[str, Any]:
    """The connection manager's ``tracing``: the OpenTelemetry provider, and a span per provider attempt."""
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTLP_CLUSTER}, "timeout": "5s"},
                "service_name": settings.service_name,
                "sampler": sampler(settings),
            },
        },
        "spawn_upstream_span": True,
    }


def collector_cluster(settings: TelemetrySettings) -> dict[str, Any]:
    """The OTLP/gRPC collector as an HTTP/2 cluster (TLS with SNI for https:// endpoints)."""
    addr = Address(host=settings.host, port=settings.port)
    try:
        import ipaddress

        ipaddress.ip_address(settings.host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    cluster: dict[str, Any] = {
        "name": OTLP_CLUSTER,
        "type": kind,
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": OTLP_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr.envoy()}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    if settings.tls:
        from extproc.ops.envoy_config import ca_bundle

        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": settings.host,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": {
                        "trusted_ca": {"filename": ca_bundle()},
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": settings.host}}],
                    },
                },
            },
        }
    return cluster


def apply(bootstrap: dict[str, Any], settings: TelemetrySettings | None) -> dict[str, Any]:
    """Tracing into a rendered bootstrap (every HTTP connection manager, and the collector's cluster); nothing when
    tracing is off."""
    if settings is None:
        return bootstrap
    resources = bootstrap["static_resources"]
    for listener in resources["listeners"]:
        for chain in listener["filter_chains"]:
            for filt in chain["filters"]:
                if filt["name"] == _HCM_NAME:
                    filt["typed_config"]["tracing"] = hcm_tracing(settings)
    resources["clusters"].append(collector_cluster(settings))
    # Envoy's exporter sends a batch once 5 spans are waiting (or every 5 s): under load that is a gRPC call per
    # ~2 requests, for Envoy and the collector alike. Batches of up to 512 spans, at least once a second.
    layers = bootstrap.setdefault("layered_runtime", {}).setdefault("layers", [])
    layers.append(
        {
            "name": "ai_gateway_tracing",
            "static_layer": {
                "tracing.opentelemetry.min_flush_spans": 512,
                "tracing.opentelemetry.flush_interval_ms": 1000,
            },
        }
    )
    if settings.relay:  # after the tracer went in: the relay's own requests are never traced
        resources["listeners"].append(relay_listener(settings.relay))
    return bootstrap


def relay_listener(relay: str) -> dict[str, Any]:
    """A Unix socket on which Envoy takes OTLP/gRPC exports (the collector's two services, nothing else) and forwards
    them to the collector: the service exports its spans and metrics with no network of its own."""
    route = {"cluster": OTLP_CLUSTER, "timeout": "30s"}
    services = ("trace.v1.TraceService", "metrics.v1.MetricsService")
    hcm = {
        "@type": _HCM,
        "stat_prefix": "otlp_relay",
        "codec_type": "HTTP2",
        "route_config": {
            "name": "otlp_relay",
            "virtual_hosts": [
                {
                    "name": "otlp",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"path": f"/opentelemetry.proto.collector.{svc}/Export"}, "route": route}
                        for svc in services
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": "otlp_relay",
        "address": Address.parse(relay).envoy(),
        "filter_chains": [{"filters": [{"name": _HCM_NAME, "typed_config": hcm}]}],
    }
