"""The per-request decisions, phase by phase, without Envoy or gRPC (the servicer only converts them to protobuf)."""

from __future__ import annotations

import time

import orjson
import pytest

from extproc.core.config import build_config
from extproc.core.contract import ROUTE_HEADER
from extproc.core.exchange import CONTINUE, Exchange, ExchangeError, Forward, Gateway, Reply

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
    assert h[ROUTE_HEADER] == "anthropic" and h[":path"] == "/v1/messages"
    assert not {"x-api-key", "authorization"} & set(h), "provider keys are Envoy's to inject, never the service's"
    assert h["anthropic-version"] == "2023-06-01" and "authorization" in fwd.remove_headers
    sent = orjson.loads(fwd.body or b"")
    assert sent["model"] == "claude-upstream" and sent["max_tokens"] == 4096
    assert h["content-length"] == str(len(fwd.body or b""))


def test_same_format_passes_bytes_and_aliases_only_the_model() -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "x_unknown": 1}
    ex, fwd = request(gateway(), "/anthropic/v1/messages", body)
    assert isinstance(fwd, Forward) and ex.target is not None and ex.target.passthrough
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


# ------------------------------------------------------------------------------------------------ phases in order
def test_an_exchange_ends_with_its_immediate_response() -> None:
    """After a Reply (here a 401: no gateway key), later messages of that stream get no translation and no header
    mutation: they are refused (the servicer ends the stream with a gRPC error)."""
    gw = gateway(auth={"api_keys": [{"sha256": "0" * 64}]})
    ex, reply = request(gw, "/openai/v1/chat/completions", {"model": "claude", "messages": []})
    assert isinstance(reply, Reply) and reply.status == 401 and ex.ended
    body = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ExchangeError, match="ended"):
        ex.on_request_body(body)
    with pytest.raises(ExchangeError):
        ex.on_response_headers({":status": "200"})
    with pytest.raises(ExchangeError):
        ex.on_response_body(b"{}")


def test_messages_out_of_order_are_refused() -> None:
    ex = Exchange(gateway())
    with pytest.raises(ExchangeError, match="out of order"):
        ex.on_request_body(b"{}")
    with pytest.raises(ExchangeError):
        ex.on_response_body(b"{}")
    ex2, fwd = request(gateway(), "/openai/v1/chat/completions", {"model": "claude", "messages": []})
    assert isinstance(fwd, Reply) and fwd.status == 400 and ex2.ended  # no messages: a 400, the exchange is over
    with pytest.raises(ExchangeError):
        ex2.on_response_headers({":status": "200"})
    ex3 = Exchange(gateway())
    ex3.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, False)
    with pytest.raises(ExchangeError):
        ex3.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, False)


def test_envoy_refusals_before_any_filter_pass_untouched() -> None:
    """Envoy's connection manager refused the request line (an escaped slash): the first message the service sees is
    the response headers; the mappers already wrote the body in the client's format, so it passes as it is."""
    ex = Exchange(gateway())
    assert ex.on_response_headers({":status": "400", "content-type": "application/json"}) is CONTINUE
    assert ex.on_response_body(b'{"error": {}}', end_of_stream=True) is CONTINUE
    assert ex.ended and not ex.record.counted


def test_translated_stream_without_envoy() -> None:
    """The streamed path alone: Anthropic SSE chunks in (cut mid-event), OpenAI chunks out, usage recorded."""
    body = {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ex, fwd = request(gateway(), "/openai/v1/chat/completions", body)
    assert isinstance(fwd, Forward)
    start = ex.on_response_headers({":status": "200", "content-type": "text/event-stream"})
    assert start.response_body_mode == "STREAMED" and ("content-type", "text/event-stream") in start.set_headers
    sse = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":'
        b'"assistant","model":"claude-upstream","content":[],"stop_reason":null,"usage":{"input_tokens":4,'
        b'"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
        b'"text":""}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"Hel"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"lo"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":'
        b'{"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    cut = sse.index(b'"text":"lo"') + 3
    out = ex.on_response_body(sse[:cut], end_of_stream=False).body or b""
    assert not ex.ended
    out += ex.on_response_body(sse[cut:], end_of_stream=True).body or b""
    chunks = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == "Hello" and out.rstrip().endswith(b"data: [DONE]")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and all(ch["model"] == "claude" for ch in chunks)
    assert ex.ended and ex.record.usage is not None and ex.record.usage.output_tokens == 2
    assert ex.record.ttft is not None


def test_passthrough_keeps_the_clients_bytes() -> None:
    """Same format: the body goes up as the client wrote it, even when a tool schema has a "model" property and
    numbers have trailing zeros; with an alias only the top-level model value's bytes change."""
    raw = (
        b'{"model": "gpt", "temperature": 1.50, "messages": [{"role": "user", "content": "hi"}], '
        b'"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", '
        b'"properties": {"model": {"type": "string"}}}}}]}'
    )
    ex = Exchange(gateway())
    ex.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, False)
    fwd = ex.on_request_body(raw)
    assert isinstance(fwd, Forward) and fwd.body is None  # unchanged: not even copied
    aliased = raw.replace(b'"gpt"', b'"claude"').replace(b"chat/completions", b"")
    ex2 = Exchange(gateway())
    ex2.on_request_headers({":method": "POST", ":path": "/anthropic/v1/messages"}, False)
    fwd2 = ex2.on_request_body(aliased.replace(b'"temperature"', b'"max_tokens": 5, "temperature"'))
    assert isinstance(fwd2, Forward) and fwd2.body is not None
    assert fwd2.body == aliased.replace(b'"temperature"', b'"max_tokens": 5, "temperature"').replace(
        b'"claude"', b'"claude-upstream"'
    )


def test_translated_answers_carry_the_time_they_were_made() -> None:
    ex, _ = request(gateway(), "/openai/v1/chat/completions", {"model": "claude", "messages": [
        {"role": "user", "content": "hi"}]})  # fmt: skip
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    before = int(time.time())
    out = ex.on_response_body(
        b'{"id":"m","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"x"}],'
        b'"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}'
    )
    assert before <= orjson.loads(out.body or b"")["created"] <= int(time.time())


def test_openai_stream_passthrough_asks_for_usage_without_rewriting_the_body() -> None:
    """An OpenAI client streaming without usage: the gateway adds ``stream_options.include_usage`` (for metrics) and
    changes nothing else in the client's bytes; when the client already has stream options, only that value changes."""
    raw = b'{"model": "gpt", "stream": true, "temperature": 1.50, "messages": [{"role": "user", "content": "hi"}]}'
    ex = Exchange(gateway())
    ex.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, False)
    fwd = ex.on_request_body(raw)
    assert isinstance(fwd, Forward)
    assert fwd.body == b'{"stream_options":{"include_usage":true},' + raw[1:]
    with_opts = raw.replace(b'"stream": true', b'"stream": true, "stream_options": {"include_obfuscation": false}')
    ex2 = Exchange(gateway())
    ex2.on_request_headers({":method": "POST", ":path": "/openai/v1/chat/completions"}, False)
    fwd2 = ex2.on_request_body(with_opts)
    assert isinstance(fwd2, Forward)
    assert fwd2.body == with_opts.replace(
        b'{"include_obfuscation": false}', b'{"include_obfuscation":false,"include_usage":true}'
    )
