"""Envoy bootstraps for the benchmark: the zero-delay provider and the bare Envoy (the floor).

* provider: ``direct_response`` answers for the three JSON APIs (OpenAI ``chat.completion`` at /v1/chat/completions,
  Anthropic ``message`` at /v1/messages, Gemini ``generateContent`` at /v1beta/models/...:generateContent; a 503 for
  everything under /fail/, the provider that is down in the fallback scenarios), behind a
  buffer filter so every request body is read before the answer (like a real provider; without it Envoy answers
  before the body arrived and closes connections early).
  The clouds' paths too: Azure OpenAI deployments, Bedrock Converse, Gemini on Vertex, and a Google token endpoint.
* bare: a plain router, no ext_proc, no access log: ``/sse/...`` goes to the SSE server (prefix stripped), everything
  else to the provider. Same worker threads as the gateway's Envoy (its default: one per core).
"""

from __future__ import annotations

import json
from typing import Any

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
_JSON_HEADER = [
    {"header": {"key": "content-type", "value": "application/json"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
]

OPENAI_RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the zero-delay provider.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    "system_fingerprint": "fp_bench",
}
ANTHROPIC_RESPONSE = {
    "id": "msg_bench",
    "type": "message",
    "role": "assistant",
    "model": "claude-bench",
    "content": [{"type": "text", "text": "Hello from the zero-delay provider."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 11, "output_tokens": 7},
}
GEMINI_RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Hello from the zero-delay provider."}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18},
    "modelVersion": "gemini-bench",
    "responseId": "bench",
}


BEDROCK_CONVERSE_RESPONSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello from the zero-delay provider."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18},
    "metrics": {"latencyMs": 1},
}
GOOGLE_TOKEN_RESPONSE = {"access_token": "ya29.bench-token", "expires_in": 3600, "token_type": "Bearer"}

FAIL_RESPONSE = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def _bootstrap(port: int, admin: int, routes: list[dict], filters: list[dict], clusters: list[dict]) -> dict:
    hcm = {
        "@type": _HCM,
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
        "http_filters": [*filters, _ROUTER],
    }
    listener = {
        "name": "l",
        "address": _addr(port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return {
        "admin": {"address": _addr(admin)},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }


_VERTEX_GEMINI = r"/v1/projects/[^/]+/locations/[^/]+/publishers/google/models/[^/:]+:generateContent"


def _direct(match: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {
        "match": match,
        "direct_response": {"status": 200, "body": {"inline_string": json.dumps(body, separators=(",", ":"))}},
        "response_headers_to_add": _JSON_HEADER,
    }


def provider(port: int, admin: int) -> dict[str, Any]:
    routes = [
        _direct({"path": "/v1/chat/completions"}, OPENAI_RESPONSE),
        _direct({"path": "/v1/messages"}, ANTHROPIC_RESPONSE),
        _direct({"safe_regex": {"regex": r"/v1beta/models/[^/:]+:generateContent"}}, GEMINI_RESPONSE),
        # The clouds (scenarios gw-oa2az/br/vx): Azure's deployment path, Bedrock's Converse, Gemini on Vertex, and
        # Google's token endpoint for the launcher's token refresher (asked once an hour, off the request path).
        _direct({"safe_regex": {"regex": r"/openai/deployments/[^/]+/chat/completions"}}, OPENAI_RESPONSE),
        _direct({"safe_regex": {"regex": r"/model/[^/]+/converse"}}, BEDROCK_CONVERSE_RESPONSE),
        _direct({"safe_regex": {"regex": _VERTEX_GEMINI}}, GEMINI_RESPONSE),
        _direct({"path": "/token"}, GOOGLE_TOKEN_RESPONSE),
        # A provider that is down: every request under /fail/ gets an Anthropic overloaded 503 (fallback scenarios).
        {
            "match": {"prefix": "/fail/"},
            "direct_response": {"status": 503, "body": {"inline_string": json.dumps(FAIL_RESPONSE)}},
            "response_headers_to_add": _JSON_HEADER,
        },
        {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "no such path"}}},
    ]
    buffer = {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": 8 * 1024 * 1024,
        },
    }
    return _bootstrap(port, admin, routes, [buffer], [])


def bare(port: int, admin: int, provider_port: int, sse_port: int) -> dict[str, Any]:
    routes = [
        {"match": {"prefix": "/sse/"}, "route": {"cluster": "sse", "prefix_rewrite": "/", "timeout": "60s"}},
        {"match": {"prefix": "/"}, "route": {"cluster": "provider", "timeout": "60s"}},
    ]
    return _bootstrap(port, admin, routes, [], [_cluster("provider", provider_port), _cluster("sse", sse_port)])
