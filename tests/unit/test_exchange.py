"""The per-request decisions, phase by phase, without Envoy or gRPC (the servicer only converts them to protobuf)."""

from __future__ import annotations

import orjson

from extproc.core.config import build_config
from extproc.core.contract import ROUTE_HEADER
from extproc.core.exchange import CONTINUE, Exchange, Forward, Gateway, Reply

ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-k"}


def gateway(**extra: object) -> Gateway:
    data = {
        "version": "1",
        "models": [
            {"name": "gpt", "provider": "openai"},
            {"name": "claude", "provider": "anthropic", "target_model": "claude-upstream"},
            {"name": "gem", "provider": "gemini"},
        ],
        **extra,
    }
    return Gateway(build_config(data, "t.yaml", ENV))


def request(
    gw: Gateway, path: str, body: dict | None, headers: dict[str, str] | None = None
) -> tuple[Exchange, object]:
    ex = Exchange(gw)
    raw = orjson.dumps(body) if body is not None else b""
    h = {":method": "POST", ":path": path, "x-request-id": "rid", "content-length": str(len(raw)), **(headers or {})}
    first = ex.on_request_headers(h, end_of_stream=body is None)
    if isinstance(first, Reply):
        return ex, first
    assert first is CONTINUE
    return ex, ex.on_request_body(raw)


def headers_of(fwd: Forward) -> dict[str, str]:
    return dict(fwd.set_headers)


def test_cross_format_sets_route_path_auth_and_strips_client_credentials() -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    _, fwd = request(gateway(), "/openai/v1/chat/completions", body, {"authorization": "Bearer client"})
    assert isinstance(fwd, Forward) and fwd.clear_route_cache
    h = headers_of(fwd)
    assert h[ROUTE_HEADER] == "anthropic" and h[":path"] == "/v1/messages" and h["x-api-key"] == "sk-a"
    assert h["anthropic-version"] == "2023-06-01" and "authorization" in fwd.remove_headers
    sent = orjson.loads(fwd.body or b"")
    assert sent["model"] == "claude-upstream" and sent["max_tokens"] == 4096
    assert h["content-length"] == str(len(fwd.body or b""))


def test_same_format_passes_bytes_and_aliases_only_the_model() -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "x_unknown": 1}
    ex, fwd = request(gateway(), "/anthropic/v1/messages", body)
    assert isinstance(fwd, Forward) and ex.passthrough
    sent = orjson.loads(fwd.body or b"")
    assert sent == {**body, "model": "claude-upstream"}
    body["model"] = "gpt"
    _, fwd2 = request(gateway(), "/openai/v1/chat/completions", {"model": "gpt", "messages": []})
    assert isinstance(fwd2, Forward) and fwd2.body is None  # unchanged bytes are not even copied


def test_streams_lift_the_route_deadline() -> None:
    body = {"model": "gem", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    _, fwd = request(gateway(), "/openai/v1/chat/completions", body)
    h = headers_of(fwd)  # type: ignore[arg-type]
    assert h["x-envoy-upstream-rq-timeout-ms"] == "0"
    assert h[":path"] == "/v1beta/models/gem:streamGenerateContent?alt=sse"


def test_passthrough_usage_switch() -> None:
    for enabled, mode in ((True, None), (False, "NONE")):
        ex, _ = request(gateway(passthrough_usage=enabled), "/openai/v1/chat/completions",
                        {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        fwd = ex.on_response_headers({":status": "200", "content-type": "application/json"})
        assert fwd.response_body_mode == mode


def test_errors_answered_by_the_service_in_the_client_format() -> None:
    _, reply = request(gateway(), "/anthropic/v1/messages", {"model": "nope", "max_tokens": 1, "messages": []})
    assert isinstance(reply, Reply) and reply.status == 404
    assert orjson.loads(reply.body)["error"]["type"] == "not_found_error"
    _, reply = request(gateway(max_request_bytes=10), "/openai/v1/chat/completions", {"model": "gpt", "x": "y" * 20})
    assert isinstance(reply, Reply) and reply.status == 413
    _, reply = request(gateway(), "/gemini/v1beta/models/gem:countTokens", None)
    assert isinstance(reply, Reply) and reply.status == 400  # a POST needs a body


def test_provider_error_and_local_reply_translation() -> None:
    ex, _ = request(gateway(), "/gemini/v1beta/models/claude:generateContent",
                    {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})  # fmt: skip
    assert ex.on_response_headers({":status": "429", "content-type": "application/json"}) is CONTINUE
    fwd = ex.on_response_body(b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}')
    h = headers_of(fwd)
    assert h[":status"] == "429"
    err = orjson.loads(fwd.body or b"")["error"]
    assert (err["code"], err["message"], err["status"]) == (429, "slow down", "RESOURCE_EXHAUSTED")
    ex2, _ = request(gateway(), "/openai/v1/chat/completions", {"model": "gem", "messages": [
        {"role": "user", "content": "hi"}]})  # fmt: skip
    ex2.on_response_headers({":status": "504", "x-ai-gateway-error": "timeout"})
    fwd2 = ex2.on_response_body(b'{"error":{"message":"upstream request timeout"}}')
    err = orjson.loads(fwd2.body or b"")["error"]
    assert err["type"] == "timeout_error" and "upstream request timeout" in err["message"]
