"""Render the Envoy bootstrap from the gateway config: one listener with ext_proc before the router, one route and one
cluster per provider, and the extproc cluster with one endpoint per worker.

The only contract between Envoy and the service is the routing header the service sets (``ROUTE_HEADER``) plus the
ext_proc filter config below; the Istio/Kubernetes manifests reuse exactly these pieces.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from extproc.core.address import Address
from extproc.core.config import Config, Model, Provider, credential_header
from extproc.core.contract import (
    ATTEMPT_ATTRIBUTES,
    ATTEMPT_LOG_HEADER,
    ATTEMPT_LOG_KEY,
    ATTEMPTS_HEADER,
    BUDGET_HEADER,
    BUDGET_KEY,
    BUDGET_RESET_HEADER,
    BUDGET_RESET_KEY,
    CONTENT_LENGTH_KEY,
    HOST_ATTEMPT_KEY,
    HOST_FORMAT_KEY,
    HOST_PROVIDER_KEY,
    HOST_TARGET_KEY,
    LOCAL_ERROR_HEADER,
    METADATA_NAMESPACE,
    NO_CREDENTIAL,
    PREPARED_HEADER,
    PREPARED_KEY,
    RATE_KEY_HEADER,
    RATE_MODEL_HEADER,
    ROUTE_HEADER,
    SERVED_BY_HEADER,
    SERVED_FORMAT_HEADER,
    TARGET_HEADER,
    TARGET_LABEL_HEADER,
    UPSTREAM_STATUS_HEADER,
)
from extproc.core.fallback import route_value
from extproc.core.governance import own_budgets
from extproc.ops import envoy_tracing
from extproc.ops.credentials import CredentialFiles, sds_path, secret_name
from extproc.translation.errors import GatewayError, type_for_status
from extproc.translation.formats import registry

_HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXTPROC_CLUSTER = "extproc"

_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, some BSDs
)


def ca_bundle() -> str:
    """The system CA bundle Envoy verifies providers against (certifi's as a last resort)."""
    for path in _CA_BUNDLES:
        if os.path.exists(path):
            return path
    import certifi  # httpx's dependency, always installed

    return certifi.where()


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _provider_route(p: Provider, timeout: float) -> dict[str, Any]:
    return {
        "name": p.name,
        "match": {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"exact": p.name}}]},
        "route": {
            "cluster": p.cluster,
            "host_rewrite_literal": p.upstream.authority,
            # The seed's `timeout`: the whole upstream exchange, streamed responses included.
            "timeout": _duration(timeout),
            "idle_timeout": _duration(timeout),
        },
        # The gateway's own headers never reach a provider.
        "request_headers_to_remove": [ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER],
        # Only Envoy's local-reply mappers tag replies for the service: a provider's header of that name is dropped.
        "response_headers_to_remove": [LOCAL_ERROR_HEADER],
    }


def _provider_cluster(p: Provider, credentials: CredentialFiles) -> dict[str, Any]:
    up = p.upstream
    cluster: dict[str, Any] = {
        "name": p.cluster,
        "type": "STATIC" if _is_ip(up.host) else "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "10s",
        "load_assignment": {
            "cluster_name": p.cluster,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": Address(host=up.host, port=up.port).envoy()}}]}],
        },
    }
    if up.tls:
        cluster["transport_socket"] = _tls_socket(up.host, ["h2", "http/1.1"])
        http_options: dict[str, Any] = {"auto_config": {"http2_protocol_options": {}, "http_protocol_options": {}}}
    else:
        http_options = {"explicit_http_config": {"http_protocol_options": {}}}
    options: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        **http_options,
    }
    if p.secret_file:
        options["http_filters"] = [_credential_injector(p, credentials), _UPSTREAM_CODEC]
    elif p.credentials == "aws":
        options["http_filters"] = [_aws_request_signing(p), _UPSTREAM_CODEC]
    cluster["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options}
    return cluster


def _tls_socket(host: str, alpn: list[str]) -> dict[str, Any]:
    """TLS to a provider: SNI and the certificate's name are its host, checked against the system CAs."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host,
            "common_tls_context": {
                "alpn_protocols": alpn,
                "validation_context": {
                    "trusted_ca": {"filename": ca_bundle()},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                },
            },
        },
    }


_UPSTREAM_CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}


def _credential_injector(p: Provider, credentials: CredentialFiles) -> dict[str, Any]:
    """Envoy puts the provider's key on every attempt, in the provider format's own header, from an SDS secret that
    follows its key file (``extproc.ops.credentials``). Without the file, Envoy answers 401 (the service translates)."""
    cred = credential_header(p)
    assert cred is not None
    generic: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
        "credential": {
            "name": secret_name(p),
            "sds_config": {
                "path_config_source": {
                    "path": sds_path(credentials, p),
                    "watched_directory": {"path": credentials.keys_dir},
                },
            },
        },
        "header": cred.header,
    }
    if cred.prefix:
        generic["header_value_prefix"] = cred.prefix
    return {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,
            "allow_request_without_credential": False,
            "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": generic},
        },
    }


# Headers Envoy or the gateway add on the way that a provider never sees as the request's own: not signed. (The
# gateway's own headers may still be on the request when the signer runs, and be removed after it, as on a model's
# fallback cluster.)
_UNSIGNED_HEADERS = [
    {"prefix": "x-envoy"},
    {"prefix": "x-ai-gateway-"},
    {"exact": "x-request-id"},
    {"exact": "x-forwarded-proto"},
]


def _aws_request_signing(p: Provider) -> dict[str, Any]:
    """AWS SigV4 over the final request (the body the service built, after every mutation), computed by Envoy on each
    attempt from the standard AWS credential chain in Envoy's environment (variables, the shared config and
    credentials files and ``AWS_PROFILE``, web identity / IRSA, container credentials, instance metadata), which
    refreshes itself off the request path: the service never holds an AWS credential. An attempt without
    credentials goes unsigned and the provider refuses it (its 403 becomes the client's auth error)."""
    cfg: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
        "service_name": "bedrock",
        "region": p.region,
        "use_unsigned_payload": False,  # the body's SHA-256 is signed (Envoy buffers it, up to max_request_bytes)
        "match_excluded_headers": _UNSIGNED_HEADERS,
    }
    if p.aws_profile:  # that profile of the shared credentials file only, not the rest of the chain
        cfg["credential_provider"] = {
            "custom_credential_provider_chain": True,
            "credentials_file_provider": {"profile": p.aws_profile},
        }
    return {"name": "envoy.filters.http.aws_request_signing", "typed_config": cfg}


# ------------------------------------------------------------------------------------------------------- fallback
# A model with several targets (docs/fallback.md) gets a route of its own and a cluster of its own: every target is an
# endpoint of that cluster, at the priority of its level, weighted within it (one locality per target, so a target's
# share does not depend on how many addresses its host resolves to), with its own TLS (SNI, certificate name) and Host
# (auto_host_rewrite from the endpoint's hostname). The route retries across priorities; outlier detection cools a
# failing target down. The attempt filter (ext_proc, per attempt) translates for the endpoint Envoy chose, and the
# provider's credential injector for that endpoint adds its key.
FALLBACK_ATTEMPT_FILTER = "ai_gateway.attempt"
_TLS_MATCH = "envoy.transport_socket_match"
_OVERPROVISIONED = 100_000  # a level keeps all its traffic while any of its targets is healthy


def fallback_cluster_names(cfg: Config) -> dict[str, str]:
    """Model name -> its cluster's name (readable in Envoy's stats, unique)."""
    out: dict[str, str] = {}
    for m in cfg.models.values():
        if m.fallback:
            base = "fallback_" + re.sub(r"[^A-Za-z0-9_.-]", "_", m.name)[:80]
            name, n = base, 2
            while name in out.values():
                name, n = f"{base}_{n}", n + 1
            out[m.name] = name
    return out


def _fallback_route(m: Model, cluster: str, cfg: Config) -> dict[str, Any]:
    policy = cfg.fallback
    levels = m.targets
    retries = len(levels) - 1 if len(levels) > 1 else len(levels[0]) - 1
    retry: dict[str, Any] = {
        # Never on other 4xx: a request one provider refuses as invalid is not made valid by another.
        "retry_on": "connect-failure,refused-stream,reset,5xx,retriable-status-codes",
        "retriable_status_codes": [429],
        "num_retries": retries,
        # Each retry goes to the next level; within a level, to another target.
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                "PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
        # Another target is another provider: no reason to wait long before trying it.
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
        # A retry-after up to the cap is waited (it matters when the retry goes back to a target); a longer one is
        # ignored and the next attempt goes at once.
        "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
            "max_interval": _duration(policy.retry_after_cap),
        },
    }
    if policy.per_try_timeout is not None:
        retry["per_try_timeout"] = _duration(policy.per_try_timeout)
    return {
        "name": route_value(m.name),
        "match": {"prefix": "/", "headers": [{"name": ROUTE_HEADER, "string_match": {"exact": route_value(m.name)}}]},
        "route": {
            "cluster": cluster,
            "auto_host_rewrite": True,
            "timeout": _duration(cfg.timeout),
            "idle_timeout": _duration(cfg.timeout),
            "retry_policy": retry,
        },
        "request_headers_to_remove": [ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER],
        # As on provider routes: only Envoy's local-reply mappers (and an attempt's own reply) tag replies.
        "response_headers_to_remove": [LOCAL_ERROR_HEADER],
        # Which target answered, and after how many attempts (the service reads them; the client gets them too).
        "response_headers_to_add": [
            _header(SERVED_BY_HEADER, f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:{HOST_TARGET_KEY})%"),
            _header(SERVED_FORMAT_HEADER, f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:{HOST_FORMAT_KEY})%"),
            _header(ATTEMPTS_HEADER, "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
            _header(ATTEMPT_LOG_HEADER, f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{ATTEMPT_LOG_KEY})%"),
        ],
    }


def _budget_headers(cfg: Config) -> dict[str, Any]:
    """A key's own remaining budget on its answers, from the dynamic metadata the service sets with its request-body
    answer (empty: no header). Only when some key has a budget of its own: otherwise no formatter on any answer."""
    if not own_budgets(cfg.governance):
        return {}
    return {
        "response_headers_to_add": [
            _header(BUDGET_HEADER, f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{BUDGET_KEY})%"),
            _header(BUDGET_RESET_HEADER, f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{BUDGET_RESET_KEY})%"),
        ]
    }


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _fallback_cluster(
    m: Model, name: str, cfg: Config, credentials: CredentialFiles, message_timeout: float
) -> dict[str, Any]:
    policy = cfg.fallback
    cool = policy.cooldown
    providers = {t.provider: cfg.providers[t.provider] for level in m.targets for t in level}
    all_tls = all(p.upstream.tls for p in providers.values())
    alpn = ["h2", "http/1.1"] if all_tls else ["http/1.1"]
    endpoints = []
    for prio, level in enumerate(m.targets):
        for j, t in enumerate(level):
            p = providers[t.provider]
            up = p.upstream
            meta: dict[str, Any] = {
                METADATA_NAMESPACE: {
                    HOST_TARGET_KEY: t.label,
                    HOST_PROVIDER_KEY: p.name,
                    HOST_FORMAT_KEY: p.format,
                    HOST_ATTEMPT_KEY: json.dumps(
                        [p.name, p.type, p.api, up.prefix, t.model, p.api_version, p.project, p.location, p.region],
                        separators=(",", ":"),
                    ),
                }
            }
            if up.tls:
                meta[_TLS_MATCH] = {"tls_host": up.host}
            endpoints.append(
                {
                    "priority": prio,
                    "locality": {"sub_zone": f"{prio}.{j}"},
                    "load_balancing_weight": t.weight,
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": Address(host=up.host, port=up.port).envoy(),
                                "hostname": up.authority,
                            },
                            "metadata": {"filter_metadata": meta},
                        }
                    ],
                }
            )
    tls_hosts = sorted({p.upstream.host for p in providers.values() if p.upstream.tls})
    if all_tls:
        http_options: dict[str, Any] = {"auto_config": {"http2_protocol_options": {}, "http_protocol_options": {}}}
    else:
        http_options = {"explicit_http_config": {"http_protocol_options": {}}}
    keyed = [p for p in providers.values() if p.secret_file]
    signed = [p for p in providers.values() if p.secret_file is None and p.credentials == "aws"]
    options: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        **http_options,
        "http_filters": [
            _ATTEMPT_TARGET,
            _attempt_log(cool.rate_limited),
            _skip_when_prepared(_attempt_filter(message_timeout)),
            *(_target_credential(p, credentials) for p in sorted(keyed, key=lambda p: p.name)),
            *(_target_signing(p) for p in sorted(signed, key=lambda p: p.name)),
            _ATTEMPT_DONE,
            _UPSTREAM_CODEC,
        ],
    }
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if all(_is_ip(p.upstream.host) for p in providers.values()) else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "10s",
        "per_connection_buffer_limit_bytes": cfg.max_request_bytes,
        # An ejected target takes no traffic, even when it is the last of its level (the next level takes it).
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}, "locality_weighted_lb_config": {}},
        "outlier_detection": {
            "consecutive_5xx": cool.failures,
            "enforcing_consecutive_5xx": 100,
            "consecutive_gateway_failure": cool.failures,
            "enforcing_consecutive_gateway_failure": 0,
            "enforcing_success_rate": 0,
            "interval": _duration(cool.interval),
            "base_ejection_time": _duration(cool.duration),
            "max_ejection_percent": cool.max_percent,
        },
        "circuit_breakers": {"thresholds": [_retry_limit(cfg)]},
        "load_assignment": {
            "cluster_name": name,
            "policy": {"overprovisioning_factor": _OVERPROVISIONED},
            "endpoints": endpoints,
        },
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options},
    }
    if tls_hosts:
        cluster["transport_socket_matches"] = [
            {"name": f"tls-{h}", "match": {"tls_host": h}, "transport_socket": _tls_socket(h, alpn)} for h in tls_hosts
        ]
    if all_tls:  # every endpoint matches one of those; HTTP/2 by ALPN needs a TLS default besides
        cluster["transport_socket"] = _tls_socket(tls_hosts[0], alpn)
    return cluster


def _retry_limit(cfg: Config) -> dict[str, Any]:
    """Retries in flight: Envoy's default (3 at once) would turn a failing primary under load into client errors.
    A retry budget counts only requests being sent, not those waiting to retry: set one knowingly."""
    policy = cfg.fallback
    if policy.retry_budget_percent is None:
        return {"priority": "DEFAULT", "max_retries": policy.max_concurrent_retries}
    return {
        "priority": "DEFAULT",
        "retry_budget": {
            "budget_percent": {"value": policy.retry_budget_percent},
            "min_retry_concurrency": policy.min_retry_concurrency,
        },
    }


def _extproc_grpc(cluster_name: str) -> dict[str, Any]:
    """How Envoy reaches the service: its cluster, messages up to 128 MiB, and a stream a worker that just died
    refused opened on another worker instead."""
    return {
        "envoy_grpc": {
            "cluster_name": cluster_name,
            "max_receive_message_length": 128 * 1024 * 1024,
            "retry_policy": {"retry_on": "connect-failure,refused-stream,unavailable", "num_retries": 2},
        },
    }


def _attempt_filter(message_timeout: float) -> dict[str, Any]:
    """ext_proc as an upstream filter: once per attempt, after Envoy chose the attempt's endpoint. The request
    headers go to the service with the endpoint's target, the request's context and (for a target the request was not
    built for) the client's body as attributes; the service answers with that target's request (the new body in the
    headers' answer, or the body asked for when Envoy holds the client's own). Nothing of the answer: the Lua filter
    logs it."""
    return {
        "name": FALLBACK_ATTEMPT_FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": _extproc_grpc(EXTPROC_CLUSTER),
            "status_on_error": {"code": 502},
            "failure_mode_allow": False,
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SKIP",
                "request_body_mode": "NONE",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            "allow_mode_override": True,
            "request_attributes": list(ATTEMPT_ATTRIBUTES),
            # The new body's length (the last filter sets content-length from it).
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            "message_timeout": _duration(message_timeout),
            "max_message_timeout": _duration(max(message_timeout, 60.0)),
        },
    }


def _header_is(header: str, value: str) -> dict[str, Any]:
    return {
        "single_predicate": {
            "input": {
                "name": header,
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": header,
                },
            },
            "value_match": {"exact": value},
        }
    }


_SKIP_FILTER = {
    "name": "skip",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"},
}


def _skipped_when(predicate: dict[str, Any], name: str, inner: dict[str, Any]) -> dict[str, Any]:
    """An upstream filter that Envoy skips for a request matching ``predicate`` (``match_delegate``)."""
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": inner,
            "xds_matcher": {
                "matcher_list": {"matchers": [{"predicate": predicate, "on_match": {"action": _SKIP_FILTER}}]}
            },
        },
    }


def _skip_when_prepared(attempt: dict[str, Any]) -> dict[str, Any]:
    """The attempt filter, skipped for the first attempt to the target the request was built for (the Lua filter
    marks it with ``PREPARED_HEADER``)."""
    return _skipped_when(
        _header_is(PREPARED_HEADER, "1"), attempt["name"], {**attempt, "name": "envoy.filters.http.ext_proc"}
    )


def _target_credential(p: Provider, credentials: CredentialFiles) -> dict[str, Any]:
    """The provider's credential injector, run only for attempts to it (``TARGET_HEADER`` names the provider)."""
    not_this = {"not_matcher": _header_is(TARGET_HEADER, p.name)}
    return _skipped_when(not_this, f"ai_gateway.credential.{p.name}", _credential_injector(p, credentials))


def _target_signing(p: Provider) -> dict[str, Any]:
    """AWS SigV4 for attempts to that Bedrock target only, over the attempt's final body (after the attempt filter)."""
    not_this = {"not_matcher": _header_is(TARGET_HEADER, p.name)}
    signing = _aws_request_signing(p)
    # The route's auto_host_rewrite takes the endpoint's hostname only when the connection is ready, after the
    # upstream filters: the signer must sign (and send) that host itself.
    signing["typed_config"]["host_rewrite"] = p.upstream.authority
    return _skipped_when(not_this, f"ai_gateway.sign.{p.name}", signing)


# First on an attempt: the endpoint's provider (the credential injectors match it) and label (the attempt log's).
_ATTEMPT_TARGET = {
    "name": "ai_gateway.attempt_target",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {
            "request_mutations": [
                {
                    "append": {
                        "header": {"key": h, "value": f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:{key})%"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                }
                for h, key in ((TARGET_HEADER, HOST_PROVIDER_KEY), (TARGET_LABEL_HEADER, HOST_TARGET_KEY))
            ]
        },
    },
}

# Every attempt into the request's attempt log (dynamic metadata, read back by the route's ATTEMPT_LOG_HEADER):
# "label=" when it is sent (synchronously, so an attempt that never gets an answer is logged too), its status when
# the answer comes. With rate-limit cooldown, a 429 is shown to Envoy as a 503 (outlier detection counts 5xx only).
# The first attempt of a request, to the target the request was built for, is marked: the attempt filter skips it
# (the request is ready as it is: no message to the service).
_ATTEMPT_LOG_LUA = """
function envoy_on_request(h)
  local info = h:streamInfo():dynamicMetadata()
  local md = info:get("{ns}")
  local log = md and md["{key}"] or ""
  local label = h:headers():get("{label}") or "?"
  if log == "" and md and md["{prepared_key}"] == label then
    h:headers():replace("{prepared}", "1")
  else
    h:headers():replace("{prepared}", "0")
  end
  if log ~= "" then log = log .. ";" end
  info:set("{ns}", "{key}", log .. label .. "=")
end
function envoy_on_response(h)
  local info = h:streamInfo():dynamicMetadata()
  local md = info:get("{ns}")
  local status = h:headers():get(":status") or ""
  info:set("{ns}", "{key}", (md and md["{key}"] or "") .. status)
{rewrite}end
"""
_RATE_LIMIT_REWRITE = """  if status == "429" then
    h:headers():replace(":status", "503")
    h:headers():add("{upstream}", "429")
  end
"""


def _attempt_log(rate_limited: bool) -> dict[str, Any]:
    rewrite = _RATE_LIMIT_REWRITE.replace("{upstream}", UPSTREAM_STATUS_HEADER) if rate_limited else ""
    code = _ATTEMPT_LOG_LUA
    for k, v in (
        ("{ns}", METADATA_NAMESPACE), ("{key}", ATTEMPT_LOG_KEY), ("{label}", TARGET_LABEL_HEADER),
        ("{prepared_key}", PREPARED_KEY), ("{prepared}", PREPARED_HEADER),
    ):  # fmt: skip
        code = code.replace(k, v)
    return {
        "name": "ai_gateway.attempt_log",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": code.replace("{rewrite}", rewrite)},
        },
    }


# Last before the codec: the target headers go, and content-length comes back when the attempt replaced the body
# (Envoy drops it then; the attempt says the new length in its dynamic metadata).
_ATTEMPT_DONE = {
    "name": "ai_gateway.attempt_done",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        "mutations": {
            "request_mutations": [
                {"remove": TARGET_HEADER},
                {"remove": TARGET_LABEL_HEADER},
                {"remove": PREPARED_HEADER},
                {
                    "append": {
                        "header": {
                            "key": "content-length",
                            "value": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{CONTENT_LENGTH_KEY})%",
                        },
                        "append_action": "ADD_IF_ABSENT",
                    }
                },
            ]
        },
    },
}


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_MESSAGE_TIMEOUT = 30.0


def ext_proc_filter(cluster_name: str = EXTPROC_CLUSTER, message_timeout: float = _MESSAGE_TIMEOUT) -> dict[str, Any]:
    """The ext_proc HTTP filter: the whole contract with the service (also embedded in the Istio EnvoyFilter)."""
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": _extproc_grpc(cluster_name),
            # If the service fails mid-request, the client gets a 502 (rewritten below into a JSON error envelope).
            "status_on_error": {"code": 502},
            # Never let an untranslated body reach a provider.
            "failure_mode_allow": False,
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
            # The service switches SSE responses to STREAMED and skips bodies it need not touch.
            "allow_mode_override": True,
            # The default 200 ms is too short for large multimodal bodies on a busy machine.
            "message_timeout": _duration(message_timeout),
            "max_message_timeout": _duration(max(message_timeout, 60.0)),
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            # Lets the service lift the route timeout for streams (x-envoy-upstream-rq-timeout-ms); without it Envoy
            # silently ignores x-envoy-* mutations.
            "mutation_rules": {"allow_envoy": True},
        },
    }


@dataclass(slots=True, frozen=True)
class ExtprocTls:
    """mTLS from Envoy to the extproc service: Envoy's client certificate chain and key, the CA the service's
    certificate must chain to, and the name Envoy sends as SNI and requires among the certificate's DNS SANs."""

    cert: str
    key: str
    ca: str
    sni: str


def _extproc_tls_socket(tls: ExtprocTls) -> dict[str, Any]:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.sni,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [
                    {"certificate_chain": {"filename": tls.cert}, "private_key": {"filename": tls.key}}
                ],
                "validation_context": {
                    "trusted_ca": {"filename": tls.ca},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.sni}}],
                },
            },
        },
    }


def render(
    cfg: Config,
    *,
    listen: Address,
    admin: Address,
    extproc: list[Address],
    credentials: CredentialFiles,
    access_log: bool = True,
    extproc_tls: ExtprocTls | None = None,
) -> dict[str, Any]:
    """The bootstrap as a dict (``dump`` turns it into YAML)."""
    providers = cfg.used_providers()
    routes = [_provider_route(p, cfg.timeout) for p in providers]
    fallback_clusters = fallback_cluster_names(cfg)
    routes += [_fallback_route(cfg.models[m], c, cfg) for m, c in fallback_clusters.items()]
    # Reached only when the service did not pick a provider: make that failure visible, never silently forward.
    routes.append(
        {
            "name": "unrouted",
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 500,
                "body": {
                    "inline_string": '{"error":{"message":"ai-gateway: request was not routed by the extproc service",'
                    '"type":"server_error"}}'
                },
            },
        }
    )
    hcm: dict[str, Any] = {
        "@type": _HCM_TYPE,
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "always_set_request_id_in_response": True,
        "stream_idle_timeout": _duration(cfg.timeout),
        "request_timeout": "0s",
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "local_reply_config": {
            "mappers": [
                _local_error_mapper(["UF", "UH", "UC", "DF", "URX", "UR", "UPE", "UMSDR"], 502, "network"),
                _local_error_mapper(["UT", "SI"], 504, "timeout"),
                _local_error_mapper(["UO"], 503, "overloaded"),
                # 401: the credential injector on a provider cluster had no key (its key file is missing).
                _envoy_status_mapper(401, _LOCAL_REPLY_BODY, NO_CREDENTIAL),
                # Replies Envoy makes before the service could see the request (its connection manager refusing the
                # request line, e.g. an escaped slash in a path; a failing service), in the client's format by path.
                *_client_format_mappers(),
                # Envoy's own replies by status. The service's replies (also local replies to Envoy) carry dynamic
                # metadata, which these mappers skip, so their bodies, already in the client's format, stay.
                # 500: e.g. an answer over the per-stream buffer limit (response_payload_too_large).
                _envoy_status_mapper(500, _ENVOY_FAILED_BODY),
                # 413: a chunked request body over max_request_bytes (with Content-Length the service answers).
                _envoy_status_mapper(413, _TOO_LARGE_BODY),
                # 429: Envoy's local rate limit.
                _envoy_status_mapper(429, _RATE_LIMITED_BODY),
                # 502: ext_proc failed (status_on_error): the service cannot translate this one.
                _envoy_status_mapper(502, _EXTPROC_FAILED_BODY),
            ],
        },
        "route_config": {
            "name": "ai_gateway",
            "virtual_hosts": [{"name": "ai_gateway", "domains": ["*"], "routes": routes, **_budget_headers(cfg)}],
        },
        "http_filters": [
            ext_proc_filter(),
            *_rate_limit_filters(cfg),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    if access_log:
        hcm["access_log"] = [_json_access_log()]
    listener = {
        "name": "ai_gateway",
        "address": listen.envoy(),
        # Bounds a BUFFERED request body: over it Envoy answers 413.
        "per_connection_buffer_limit_bytes": cfg.max_request_bytes,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    extproc_cluster = {
        "name": EXTPROC_CLUSTER,
        "type": "STATIC" if all(a.path or _is_ip(a.host) for a in extproc) else "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "per_connection_buffer_limit_bytes": cfg.max_request_bytes,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "initial_stream_window_size": 16 * 1024 * 1024,
                        "initial_connection_window_size": 64 * 1024 * 1024,
                    }
                },
            }
        },
        # A dead worker leaves rotation within a second (the launcher restarts it on the same address).
        "health_checks": [
            {
                "timeout": "0.5s",
                "interval": "1s",
                "no_traffic_interval": "1s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "tcp_health_check": {},
            }
        ],
        "load_assignment": {
            "cluster_name": EXTPROC_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": a.envoy()}} for a in extproc]}],
        },
    }
    if extproc_tls is not None:  # (the TCP health checks go over the same TLS)
        extproc_cluster["transport_socket"] = _extproc_tls_socket(extproc_tls)
    clusters = [extproc_cluster] + [_provider_cluster(p, credentials) for p in providers]
    for c in clusters[1:]:
        c["per_connection_buffer_limit_bytes"] = cfg.max_request_bytes
    clusters += [
        _fallback_cluster(cfg.models[m], c, cfg, credentials, _MESSAGE_TIMEOUT) for m, c in fallback_clusters.items()
    ]
    bootstrap = {
        "node": {"id": "ai-gateway", "cluster": "ai-gateway"},
        "admin": {"address": admin.envoy()},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }
    return envoy_tracing.apply(bootstrap, cfg.tracing)  # OpenTelemetry, when configured (docs/tracing.md)


# Replies Envoy makes itself reach the service, which answers them in the client's format. If one slips past it (an
# upstream reset while the response headers are with the service), this envelope still reads as an error to all three
# SDKs: OpenAI and Anthropic read error.message, Gemini error.code/status. (Per mapper, so that the service's own
# immediate responses, also local replies to Envoy, keep their bodies.)
_LOCAL_REPLY_BODY = {
    "json_format": {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "%LOCAL_REPLY_BODY%",
            "code": "%RESPONSE_CODE%",
            "status": "UNAVAILABLE",
        },
    },
    "content_type": "application/json",
}


_EXTPROC_FAILED_MESSAGE = "ai-gateway: the translation service failed while handling this request; retry it"
_EXTPROC_FAILED_BODY = {
    "json_format": {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": _EXTPROC_FAILED_MESSAGE,
            "code": "%RESPONSE_CODE%",
            "status": "UNAVAILABLE",
        },
    },
    "content_type": "application/json",
}


_ENVOY_FAILED_BODY = {
    "json_format": {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "ai-gateway: Envoy could not complete this request (%RESPONSE_CODE_DETAILS%); a non-streamed "
            "answer larger than max_request_bytes ends this way",
            "code": "%RESPONSE_CODE%",
            "status": "INTERNAL",
        },
    },
    "content_type": "application/json",
}
_TOO_LARGE_BODY = {
    "json_format": {
        "type": "error",
        "error": {
            "type": "request_too_large",
            "message": "ai-gateway: request body is larger than max_request_bytes",
            "code": "%RESPONSE_CODE%",
            "status": "INVALID_ARGUMENT",
        },
    },
    "content_type": "application/json",
}
_RATE_LIMITED_BODY = {
    "json_format": {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "ai-gateway: rate limit exceeded for this gateway key or model; retry after x-ratelimit-reset s",
            "code": "%RESPONSE_CODE%",
            "status": "RESOURCE_EXHAUSTED",
        },
    },
    "content_type": "application/json",
}


def _bucket(rpm: int) -> dict[str, Any]:
    return {"max_tokens": rpm, "tokens_per_fill": rpm, "fill_interval": "60s"}


def _rate_limit_filters(cfg: Config) -> list[dict[str, Any]]:
    """Envoy's local rate limit on the key name and model headers the service sets (one bucket per key and per
    limited model, shared by all of Envoy's threads); nothing when no limit is configured."""
    policy = cfg.access
    if not policy.rate_limited:
        return []
    descriptors = []
    names = [k.name for k in policy.keys] or ["anonymous"]
    keys = {k.name: k for k in policy.keys}
    for name in names:
        rpm = policy.key_rpm(keys.get(name))
        if rpm:
            descriptors.append({"entries": [{"key": "ai_key", "value": name}], "token_bucket": _bucket(rpm)})
    for model, rpm in sorted(policy.per_model_rpm.items()):
        descriptors.append({"entries": [{"key": "ai_model", "value": model}], "token_bucket": _bucket(rpm)})
    return [
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "ai_gateway_rate_limit",
                # Requests that match no descriptor (no limit configured for them) are never limited.
                "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"},
                "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                "always_consume_default_token_bucket": False,
                "rate_limits": [
                    {"actions": [{"request_headers": {"header_name": RATE_KEY_HEADER, "descriptor_key": "ai_key"}}]},
                    {
                        "actions": [
                            {"request_headers": {"header_name": RATE_MODEL_HEADER, "descriptor_key": "ai_model"}}
                        ]
                    },
                ],
                "descriptors": descriptors,
            },
        }
    ]


# The service's own replies (immediate responses, also local replies to Envoy) carry dynamic metadata; Envoy's don't.
_NOT_FROM_SERVICE = {
    "metadata_filter": {
        "matcher": {
            "filter": METADATA_NAMESPACE,
            "path": [{"key": "format"}],
            "value": {"string_match": {"exact": "not-a-format"}},  # never matches: only absence does
        },
        "match_if_key_not_found": True,
    }
}


def _envoy_status_mapper(status: int, body: dict[str, Any], error_type: str | None = None) -> dict[str, Any]:
    """A JSON envelope for a local reply of ``status`` that Envoy made itself (not the service: no metadata), tagged
    with ``error_type`` in ``LOCAL_ERROR_HEADER`` when the service should answer it in its own words."""
    not_from_service = _NOT_FROM_SERVICE
    status_is = {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"ai_gw_{status}"}}
        }
    }
    mapper: dict[str, Any] = {
        "filter": {"and_filter": {"filters": [status_is, not_from_service]}},
        "body_format_override": body,
    }
    if error_type is not None:
        mapper["headers_to_add"] = [
            {"header": {"key": LOCAL_ERROR_HEADER, "value": error_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ]
    return mapper


# Statuses Envoy answers with itself before a request reaches the service (or when the service fails: 502).
_ENVOY_ONLY_STATUSES = (400, 403, 404, 405, 408, 413, 414, 426, 429, 431, 500, 501, 502, 503, 504)
_ENVOY_REFUSED = "ai-gateway: Envoy refused this request (%RESPONSE_CODE_DETAILS%)"
_MARK = "\x00message\x00"


def _client_format_mappers() -> list[dict[str, Any]]:
    """Per client format (by path prefix) and status: the format's own error envelope for replies Envoy makes for
    requests the service never routed (no routing header). The service sees those replies only after the fact and
    cannot translate them; 502 (the service itself failed) is mapped routed or not."""
    mappers = []
    seen: set[str] = set()
    unrouted = {"header_filter": {"header": {"name": ROUTE_HEADER, "present_match": True, "invert_match": True}}}
    for fmt in registry.FORMATS.values():
        if fmt.PATH_PREFIX in seen:
            continue  # formats sharing a prefix share its error shape (the first one's)
        seen.add(fmt.PATH_PREFIX)
        on_path = {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": fmt.PATH_PREFIX}}}}
        for status in _ENVOY_ONLY_STATUSES:
            message = _ENVOY_REFUSED if status != 502 else _EXTPROC_FAILED_MESSAGE
            err = GatewayError(type_for_status(status), _MARK, status)
            body = _with_message(orjson.loads(fmt.build_error(err, request_id=None)), message)
            status_is = {
                "status_code_filter": {
                    "comparison": {"op": "EQ", "value": {"default_value": status, "runtime_key": f"ai_gw_{status}"}}
                }
            }
            filters = [status_is, _NOT_FROM_SERVICE, on_path] + ([] if status == 502 else [unrouted])
            mappers.append(
                {
                    "filter": {"and_filter": {"filters": filters}},
                    "body_format_override": {"json_format": body, "content_type": "application/json"},
                }
            )
    return mappers


def _with_message(obj: Any, message: str) -> Any:
    if isinstance(obj, dict):
        return {k: _with_message(v, message) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_with_message(v, message) for v in obj]
    return message if obj == _MARK else obj


def _local_error_mapper(flags: list[str], status: int, error_type: str) -> dict[str, Any]:
    return {
        "filter": {"response_flag_filter": {"flags": flags}},
        "status_code": status,
        "body_format_override": _LOCAL_REPLY_BODY,
        "headers_to_add": [
            {"header": {"key": LOCAL_ERROR_HEADER, "value": error_type}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }


def _json_access_log() -> dict[str, Any]:
    ns = METADATA_NAMESPACE
    fmt = {
        "timestamp": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": f"%DYNAMIC_METADATA({ns}:path)%",
        "upstream_path": f"%DYNAMIC_METADATA({ns}:upstream_path)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "format": f"%DYNAMIC_METADATA({ns}:format)%",
        "model": f"%DYNAMIC_METADATA({ns}:model)%",
        "provider": f"%DYNAMIC_METADATA({ns}:provider)%",
        "input_tokens": f"%DYNAMIC_METADATA({ns}:input_tokens)%",
        "output_tokens": f"%DYNAMIC_METADATA({ns}:output_tokens)%",
        "error_type": f"%DYNAMIC_METADATA({ns}:error_type)%",
        # Models with several targets (docs/fallback.md): how many attempts Envoy made, and each one's target and
        # status ("provider/model=status;...", written by the model cluster's Lua filter).
        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
        "attempt_log": f"%DYNAMIC_METADATA({ns}:{ATTEMPT_LOG_KEY})%",
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fmt},
        },
    }


def dump(bootstrap: dict[str, Any]) -> str:
    """YAML for people; Envoy reads it as is."""
    return yaml.safe_dump(json.loads(json.dumps(bootstrap)), sort_keys=False, width=120)
