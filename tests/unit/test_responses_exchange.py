"""The exchange with a stateful client format (the Responses API) and the gateway's store, pure (no Envoy): answers
kept and served, conversations continued and scoped by gateway key, OpenAI's own Responses API passed through."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extproc.core.actions import Forward, Reply
from extproc.core.config import build_config
from extproc.core.contract import ROUTE_HEADER
from extproc.core.conversations import MemoryStore, StoreSettings
from extproc.core.exchange import Exchange, Gateway

ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "EqQB+sig/A=="}, {"type": "text", "text": "Hi!"}],
    "usage": {"input_tokens": 3, "output_tokens": 2},
}  # fmt: skip
ENV = {"KEY_A": "key-a", "KEY_B": "key-b"}


def gateway(max_bytes: int = 10_000_000) -> Gateway:
    data: dict[str, Any] = {
        "version": "1",
        "providers": [
            {"name": "oai-r", "type": "openai", "api": "responses", "base_url": "http://127.0.0.1:9/v1"},
        ],
        "models": [{"name": "claude", "provider": "anthropic"}, {"name": "codex", "provider": "oai-r"}],
        "auth": {"api_keys": [{"name": "a", "key_env": "KEY_A"}, {"name": "b", "key_env": "KEY_B"}]},
        "responses": {"max_bytes": max_bytes},
    }
    cfg = build_config(data, "/tmp/t.yaml", ENV)
    return Gateway(cfg, MemoryStore(StoreSettings(max_bytes=max_bytes)))


def send(gw: Gateway, method: str, path: str, body: Any = None, key: str = "key-a") -> tuple[Exchange, Any]:
    ex = Exchange(gw)
    raw = orjson.dumps(body) if body is not None else b""
    h = {":method": method, ":path": path, "content-length": str(len(raw)), "authorization": f"Bearer {key}"}
    first = ex.on_request_headers(h, end_of_stream=body is None)
    if isinstance(first, Reply) or body is None:
        return ex, first
    return ex, ex.on_request_body(raw)


def answer(ex: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    out = ex.on_response_body(orjson.dumps(body))
    return orjson.loads(out.body or b"")


def test_kept_answer_served_continued_and_deleted() -> None:
    gw = gateway()
    ex, fwd = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "Hello", "max_output_tokens": 50})
    assert isinstance(fwd, Forward) and dict(fwd.set_headers)[ROUTE_HEADER] == "anthropic"
    first = answer(ex, ANTHROPIC_ANSWER)
    assert first["output"][1]["content"][0]["text"] == "Hi!"
    assert "encrypted_content" not in first["output"][0]  # not asked for
    _, got = send(gw, "GET", f"/openai/v1/responses/{first['id']}")
    assert isinstance(got, Reply) and got.status == 200 and orjson.loads(got.body)["id"] == first["id"]
    assert "encrypted_content" not in orjson.loads(got.body)["output"][0]
    _, shown = send(gw, "GET", f"/openai/v1/responses/{first['id']}?include[]=reasoning.encrypted_content")
    assert orjson.loads(shown.body)["output"][0]["encrypted_content"]  # kept, shown when asked
    _, items = send(gw, "GET", f"/openai/v1/responses/{first['id']}/input_items")
    assert [i["content"][0]["text"] for i in orjson.loads(items.body)["data"]] == ["Hello"]
    # the next turn goes to Anthropic with the first turn, its signed thinking included
    _, nxt = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "More", "max_output_tokens": 50,
                                                       "previous_response_id": first["id"]})  # fmt: skip
    sent = orjson.loads(nxt.body)
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "EqQB+sig/A=="}
    # another key sees nothing
    for method, path in (
        ("GET", f"/openai/v1/responses/{first['id']}"),
        ("DELETE", f"/openai/v1/responses/{first['id']}"),
    ):
        _, other = send(gw, method, path, key="key-b")
        assert isinstance(other, Reply) and other.status == 404
    again = {"model": "claude", "input": "x", "max_output_tokens": 9, "previous_response_id": first["id"]}
    _, refused = send(gw, "POST", "/openai/v1/responses", again, key="key-b")
    assert refused.status == 400 and orjson.loads(refused.body)["error"]["code"] == "previous_response_not_found"
    _, deleted = send(gw, "DELETE", f"/openai/v1/responses/{first['id']}")
    assert orjson.loads(deleted.body) == {"id": first["id"], "object": "response.deleted", "deleted": True}
    _, gone = send(gw, "GET", f"/openai/v1/responses/{first['id']}")
    assert gone.status == 404
    _, wrong = send(gw, "POST", f"/openai/v1/responses/{first['id']}", {})
    assert wrong.status == 405 and ("allow", "GET, DELETE") in wrong.headers


def test_store_false_keeps_nothing_and_oversized_requests_are_refused() -> None:
    gw = gateway(max_bytes=2000)
    ex, _ = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "x", "store": False})
    rid = answer(ex, ANTHROPIC_ANSWER)["id"]
    assert send(gw, "GET", f"/openai/v1/responses/{rid}")[1].status == 404
    _, big = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "x" * 3000})
    assert big.status == 400 and "store: false" in orjson.loads(big.body)["error"]["message"]
    _, fine = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "x" * 3000, "store": False})
    assert isinstance(fine, Forward)


def test_stream_answers_are_kept_too() -> None:
    gw = gateway()
    ex, _ = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "Hi", "stream": True})
    ex.on_response_headers({":status": "200", "content-type": "text/event-stream"})
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
                                              "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Streamed"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        {"type": "message_stop"},
    ]  # fmt: skip
    data = b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)
    out = ex.on_response_body(data, end_of_stream=True).body or b""
    rid = orjson.loads(out.split(b"data: ", 2)[1].split(b"\n")[0])["response"]["id"]
    kept = orjson.loads(send(gw, "GET", f"/openai/v1/responses/{rid}")[1].body)
    assert kept["status"] == "completed" and kept["output"][0]["content"][0]["text"] == "Streamed"


def test_openai_responses_provider_passes_through() -> None:
    gw = gateway()
    body = {"model": "codex", "input": "Hi", "previous_response_id": "resp_at_openai"}
    _, fwd = send(gw, "POST", "/openai/v1/responses", body)
    assert isinstance(fwd, Forward) and fwd.body is None  # the client's bytes, untouched
    assert dict(fwd.set_headers)[":path"] == "/v1/responses"
    # a conversation the gateway kept (Claude) continued on the Responses provider: sent whole, without the id
    ex, _ = send(gw, "POST", "/openai/v1/responses", {"model": "claude", "input": "Remember"})
    rid = answer(ex, ANTHROPIC_ANSWER)["id"]
    _, moved = send(
        gw, "POST", "/openai/v1/responses", {"model": "codex", "input": "Which?", "previous_response_id": rid}
    )
    sent = orjson.loads(moved.body)
    assert "previous_response_id" not in sent and sent["model"] == "codex"
    assert [i.get("role") or i["type"] for i in sent["input"]][-1] == "user" and len(sent["input"]) == 4


@pytest.mark.parametrize(
    ("model", "path"), [("codex", "/v1/responses/input_tokens"), ("claude", "/v1/messages/count_tokens")]
)
def test_counting(model: str, path: str) -> None:
    ex, fwd = send(gateway(), "POST", "/openai/v1/responses/input_tokens", {"model": model, "input": "hi"})
    assert isinstance(fwd, Forward) and dict(fwd.set_headers)[":path"] == path
    ex.on_response_headers({":status": "200", "content-type": "application/json"})
    out = ex.on_response_body(b'{"input_tokens": 7}' if model == "claude" else b'{"object":"response.input_tokens",'
                              b'"input_tokens":7}')  # fmt: skip
    assert orjson.loads(out.body or b'{"input_tokens": 7}')["input_tokens"] == 7
