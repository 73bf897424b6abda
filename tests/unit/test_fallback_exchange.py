"""A model with several targets, phase by phase without Envoy: the listener's exchange (the request built for the
primary, sent to the model's route with the attempts' context; the answer handled for whoever gave it), one attempt
at the cluster's filter (the primary's headers restored, another target's request built from the client's body), the
servicer telling the two apart, and the attempt log counted per target."""

from __future__ import annotations

import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.core.actions import CONTINUE, Forward, Reply
from extproc.core.attempt import Attempt, AttemptError
from extproc.core.config import build_config
from extproc.core.contract import (
    ATTEMPT_ATTRIBUTES,
    ATTEMPT_CONTEXT_KEY,
    ATTEMPT_LOG_HEADER,
    ATTEMPT_REPLY,
    ATTEMPTS_HEADER,
    CLIENT_BODY_KEY,
    CONTENT_LENGTH_KEY,
    LOCAL_ERROR_HEADER,
    PREPARED_KEY,
    ROUTE_HEADER,
    SERVED_BY_HEADER,
    SERVED_FORMAT_HEADER,
    UPSTREAM_STATUS_HEADER,
)
from extproc.core.exchange import Exchange, Gateway
from extproc.core.fallback import FallbackHandler, parse_attempt_log
from extproc.core.record import Record
from extproc.observability.metrics import Metrics
from extproc.transport.servicer import PROCESS_PATH, ExtProc

ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-k"}
CHAT = "/openai/v1/chat/completions"
ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
    "stop_sequence": None, "content": [{"type": "text", "text": "from claude"}],
    "usage": {"input_tokens": 3, "output_tokens": 2},
}  # fmt: skip
GEMINI_ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "from gemini"}]}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9},
}


def gateway() -> Gateway:
    data = {
        "version": "1",
        "models": [
            {
                "name": "smart",
                "targets": [
                    {"provider": "anthropic", "model": "claude-x"},
                    {"provider": "gemini", "model": "gem-y"},
                    {"provider": "openai", "model": "gpt-z"},
                ],
            },
            {"name": "plain", "provider": "anthropic", "target_model": "claude-x"},
        ],
    }
    return Gateway(build_config(data, "t.yaml", ENV))


def two_targets(primary: tuple[str, str], second: tuple[str, str]) -> Gateway:
    targets = [{"provider": p, "model": m} for p, m in (primary, second)]
    return Gateway(build_config({"version": "1", "models": [{"name": "smart", "targets": targets}]}, "t.yaml", ENV))


def send(gw: Gateway, body: dict, path: str = CHAT, **headers: str) -> tuple[Exchange, Forward]:
    ex = Exchange(gw)
    raw = orjson.dumps(body)
    h = {":method": "POST", ":path": path, "x-request-id": "rid-1", "content-length": str(len(raw)), **headers}
    assert ex.on_request_headers(h, end_of_stream=False) is CONTINUE
    fwd = ex.on_request_body(raw)
    assert isinstance(fwd, Forward)
    return ex, fwd


CLIENT = {"model": "smart", "messages": [{"role": "user", "content": "hi"}]}


def test_request_is_built_for_the_primary_and_sent_to_the_model_route() -> None:
    gw = gateway()
    _, single = send(gw, {**CLIENT, "model": "plain"})
    ex, fwd = send(gw, CLIENT, authorization="Bearer client")
    h = dict(fwd.set_headers)
    assert h[ROUTE_HEADER] == "model/smart" and fwd.clear_route_cache
    # Exactly what the single-target request to the same target gets, but for the route.
    assert fwd.body == single.body and {k: v for k, v in h.items() if k != ROUTE_HEADER} == {
        k: v for k, v in single.set_headers if k != ROUTE_HEADER
    }
    assert "authorization" in fwd.remove_headers
    assert fwd.metadata is not None and fwd.metadata[PREPARED_KEY] == "anthropic/claude-x"
    assert orjson.loads(fwd.metadata[CLIENT_BODY_KEY]) == CLIENT  # the body sent is not the client's: kept
    ctx = orjson.loads(fwd.metadata[ATTEMPT_CONTEXT_KEY])
    assert (ctx["path"], ctx["model"], ctx["client"], ctx["prepared"]) == (
        CHAT,
        "smart",
        "openai",
        "anthropic/claude-x",
    )
    restore = dict(ctx["set"])
    assert restore[":path"] == "/v1/messages" and restore["content-length"] == h["content-length"]
    assert ROUTE_HEADER not in restore and "authorization" in ctx["remove"]
    assert ex.record.fallback


def test_same_format_primary_keeps_the_client_body_in_envoy() -> None:
    body = {"model": "smart", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    gw = two_targets(("anthropic", "smart"), ("openai", "g"))
    _, fwd = send(gw, body, "/anthropic/v1/messages", **{"anthropic-version": "2023-06-01", "anthropic-beta": "b1"})
    assert fwd.body is None and fwd.metadata is not None and CLIENT_BODY_KEY not in fwd.metadata
    ctx = orjson.loads(fwd.metadata[ATTEMPT_CONTEXT_KEY])
    assert ctx["headers"] == {"anthropic-version": "2023-06-01", "anthropic-beta": "b1"}


def answer(ex: Exchange, status: int, served: str, fmt: str, body: dict, **extra: str) -> dict:
    headers = {":status": str(status), "content-type": "application/json", SERVED_BY_HEADER: served,
               SERVED_FORMAT_HEADER: fmt, ATTEMPTS_HEADER: "2", **extra}  # fmt: skip
    ex.on_response_headers(headers)
    fwd = ex.on_response_body(orjson.dumps(body))
    return orjson.loads(fwd.body or orjson.dumps(body))


def test_answer_from_the_primary_uses_the_primary_handler() -> None:
    ex, _ = send(gateway(), CLIENT)
    assert isinstance(ex.handler, FallbackHandler)
    primary = ex.handler.primary
    out = answer(ex, 200, "anthropic/claude-x", "anthropic", ANTHROPIC_ANSWER, **{ATTEMPTS_HEADER: "1"})
    assert ex.handler.inner is primary
    assert out["object"] == "chat.completion" and out["choices"][0]["message"]["content"] == "from claude"
    assert (ex.record.provider, ex.record.attempts, ex.record.usage.input_tokens) == ("anthropic", 1, 3)


def test_answer_from_another_target_is_translated_from_its_format() -> None:
    ex, _ = send(gateway(), CLIENT)
    log = "anthropic/claude-x=503;gemini/gem-y=200"
    out = answer(ex, 200, "gemini/gem-y", "gemini", GEMINI_ANSWER, **{ATTEMPT_LOG_HEADER: log})
    assert out["choices"][0]["message"]["content"] == "from gemini" and out["model"] == "smart"
    rec = ex.record
    assert (rec.provider, rec.served_by, rec.usage.input_tokens) == ("gemini", "gemini/gem-y", 5)
    assert rec.attempt_log == [("anthropic/claude-x", 503), ("gemini/gem-y", 200)]


def test_a_429_shown_to_envoy_as_503_reaches_the_client_as_429() -> None:
    ex, _ = send(gateway(), CLIENT)
    err = {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}
    headers = {":status": "503", "content-type": "application/json", SERVED_BY_HEADER: "gemini/gem-y",
               SERVED_FORMAT_HEADER: "gemini", UPSTREAM_STATUS_HEADER: "429"}  # fmt: skip
    fwd = ex.on_response_headers(headers)
    assert (":status", "429") in fwd.set_headers and UPSTREAM_STATUS_HEADER in fwd.remove_headers
    body = ex.on_response_body(orjson.dumps(err))
    assert dict(body.set_headers)[":status"] == "429"
    assert orjson.loads(body.body or b"")["error"]["type"] == "rate_limit_error"


def test_an_attempts_own_error_reply_passes_unchanged() -> None:
    ex, _ = send(gateway(), CLIENT)
    headers = {":status": "400", SERVED_BY_HEADER: "gemini/gem-y", SERVED_FORMAT_HEADER: "gemini",
               LOCAL_ERROR_HEADER: ATTEMPT_REPLY}  # fmt: skip
    fwd = ex.on_response_headers(headers)
    assert fwd.response_body_mode == "NONE" and LOCAL_ERROR_HEADER in fwd.remove_headers
    assert ex.ended and ex.record.status == 400


def test_attempt_log_parsing() -> None:
    assert parse_attempt_log("a/x=503;b/y:z=;c/w=200") == [("a/x", 503), ("b/y:z", 0), ("c/w", 200)]
    assert parse_attempt_log("") == []


# ----------------------------------------------------------------------------------------------- the attempt
def attributes(fwd: Forward, target: list) -> dict[str, str]:
    """What Envoy's attribute expressions give an attempt to ``target``, from the listener's answer."""
    assert fwd.metadata is not None
    label = f"{target[0]}/{target[-1]}"
    body = fwd.metadata.get(CLIENT_BODY_KEY, "") if label != fwd.metadata[PREPARED_KEY] else ""
    return {
        ATTEMPT_ATTRIBUTES[0]: orjson.dumps(target).decode(),
        ATTEMPT_ATTRIBUTES[1]: fwd.metadata[ATTEMPT_CONTEXT_KEY],
        ATTEMPT_ATTRIBUTES[2]: body,
    }


def test_attempt_to_the_primary_only_restores_its_headers() -> None:
    gw = gateway()
    _, fwd = send(gw, CLIENT)
    att = Attempt(gw, attributes(fwd, ["anthropic", "anthropic", "chat", "", "claude-x"]))
    out = att.on_request_headers({}, False)
    ctx = orjson.loads(fwd.metadata[ATTEMPT_CONTEXT_KEY])  # type: ignore[index]
    assert isinstance(out, Forward) and out.body is None and not out.replace
    assert [list(p) for p in out.set_headers] == ctx["set"] and out.remove_headers == ctx["remove"]
    assert (att.record.request_id, att.record.model, att.record.client) == ("rid-1", "smart", "openai")
    assert not att.record.counted


def test_attempt_to_another_target_builds_its_request_from_the_client_body() -> None:
    gw = gateway()
    _, fwd = send(gw, CLIENT)
    att = Attempt(gw, attributes(fwd, ["gemini", "gemini", "chat", "", "gem-y"]))
    out = att.on_request_headers({}, False)
    assert isinstance(out, Forward) and out.replace and out.body is not None
    sent = orjson.loads(out.body)
    assert sent["contents"][0]["parts"][0]["text"] == "hi"
    h = dict(out.set_headers)
    assert h[":path"] == "/v1beta/models/gem-y:generateContent"
    assert out.metadata == {CONTENT_LENGTH_KEY: str(len(out.body))}
    # What an earlier attempt (to Anthropic) may have left is removed; nothing routes any more.
    assert {"anthropic-version", "x-api-key", "authorization"} <= set(out.remove_headers)
    assert ROUTE_HEADER not in h and "x-envoy-upstream-rq-timeout-ms" not in h


def test_attempt_asks_for_the_body_when_envoy_holds_the_clients_own() -> None:
    gw = two_targets(("anthropic", "smart"), ("openai", "g"))
    body = {"model": "smart", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
    _, fwd = send(gw, body, "/anthropic/v1/messages", **{"anthropic-version": "2023-06-01"})
    att = Attempt(gw, attributes(fwd, ["openai", "openai", "chat", "/v1", "g"]))
    first = att.on_request_headers({}, False)
    assert isinstance(first, Forward) and first.request_body_mode == "BUFFERED"
    out = att.on_request_body(orjson.dumps(body))
    assert isinstance(out, Forward) and not out.replace
    assert orjson.loads(out.body or b"")["model"] == "g" and dict(out.set_headers)[":path"] == "/v1/chat/completions"


def test_attempt_that_cannot_build_its_request_replies_marked() -> None:
    # A Gemini File API URI: the primary (Gemini) reads it, an OpenAI target cannot.
    gw = two_targets(("gemini", "gem"), ("openai", "g"))
    url = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    content = [{"type": "text", "text": "what is it"}, {"type": "image", "source": {"type": "url", "url": url}}]
    body = {"model": "smart", "max_tokens": 9, "messages": [{"role": "user", "content": content}]}
    _, fwd = send(gw, body, "/anthropic/v1/messages", **{"anthropic-version": "2023-06-01"})
    att = Attempt(gw, attributes(fwd, ["openai", "openai", "chat", "/v1", "g"]))
    out = att.on_request_headers({}, False)
    assert isinstance(out, Reply) and out.status == 400
    assert (LOCAL_ERROR_HEADER, ATTEMPT_REPLY) in out.headers  # the listener passes it on as it is
    err = orjson.loads(out.body)
    assert err["type"] == "error" and "Gemini" in err["error"]["message"]  # in the client's (Anthropic's) shape


def test_attempt_without_its_attributes_is_refused() -> None:
    with pytest.raises(AttemptError):
        Attempt(gateway(), {ATTEMPT_ATTRIBUTES[0]: "not json"})


# ----------------------------------------------------------------------------------------------- servicer, metrics
def message(**kw: object) -> bytes:
    return pb.ProcessingRequest(**kw).SerializeToString()  # type: ignore[arg-type]


def test_servicer_tells_an_attempt_from_a_request_by_its_attributes() -> None:
    gw = gateway()
    _, fwd = send(gw, CLIENT)
    proc = ExtProc(gw)
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=HeaderMap(headers=[
        HeaderValue(key=":path", raw_value=b"/v1/messages")])))  # fmt: skip
    s = req.attributes["envoy.filters.http.ext_proc"]
    for k, v in attributes(fwd, ["gemini", "gemini", "chat", "", "gem-y"]).items():
        s.fields[k].string_value = v
    call = proc(PROCESS_PATH)
    assert call is not None
    resp = pb.ProcessingResponse.FromString(call.message(req.SerializeToString()))  # type: ignore[arg-type]
    assert isinstance(call.ex, Attempt)
    common = resp.request_headers.response
    assert common.status == pb.CommonResponse.ResponseStatus.CONTINUE_AND_REPLACE
    assert orjson.loads(common.body_mutation.body)["contents"][0]["parts"][0]["text"] == "hi"
    assert resp.dynamic_metadata.fields["ai_gateway"].struct_value.fields[CONTENT_LENGTH_KEY].string_value
    plain = proc(PROCESS_PATH)
    assert plain is not None
    first = [HeaderValue(key=":path", raw_value=CHAT.encode()), HeaderValue(key=":method", raw_value=b"POST")]
    plain.message(message(request_headers=pb.HttpHeaders(headers=HeaderMap(headers=first))))
    assert type(plain.ex) is Exchange


def test_every_attempt_is_counted_for_its_target() -> None:
    m = Metrics()
    rec = Record(0.0, client="openai", model="smart", model_label="smart", provider="gemini", status=200)
    rec.fallback, rec.attempts = True, 3
    rec.attempt_log = [("anthropic/claude-x", 429), ("openai/gpt-z", 0), ("gemini/gem-y", 200)]
    m.done(rec, 0.1, 0.001, active=False)
    single = Record(0.0, client="openai", model="plain", model_label="plain", provider="anthropic", status=503)
    single.upstream_path = "/v1/messages"
    m.done(single, 0.1, 0.001, active=False)
    text = m.render()[1].decode()

    def value(provider: str, outcome: str, model: str = "smart") -> float:
        needle = f'proxy_upstream_attempts_total{{model="{model}",outcome="{outcome}",provider="{provider}"}}'
        line = next((ln for ln in text.splitlines() if ln.startswith(needle)), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    assert value("anthropic", "rate_limited") == 1 and value("openai", "no_response") == 1
    assert value("gemini", "success") == 1 and value("anthropic", "server_error", model="plain") == 1
