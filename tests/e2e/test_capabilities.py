"""Requests shaped to what the target model accepts, through the real Envoy to the strict mocks (which refuse what the
real APIs refuse per model family): the recorded requests of real clients (Claude Code, Gemini CLI) succeed with the
catalog, and the same requests to the same models with the catalog switched off (``capabilities: {enabled: false}``)
get the provider's own 400."""

from __future__ import annotations

import json
import time

import httpx
import orjson
import pytest

from tests.conftest import Gateway
from tests.e2e.sdk import CLIENT_KEY, ask
from tests.paths import RECORDED_CLIENTS

ADAPTED = "x-ai-gateway-adapted"
CLAMPED = "max_tokens=clamped(16384)"  # gpt-4o-mini's output limit


def recorded(name: str) -> dict:
    return json.loads((RECORDED_CLIENTS / name).read_text())


def claude_code(gw: Gateway, recording: str, model: str) -> httpx.Response:
    """Claude Code's recorded request (its own body, path, version and beta headers), to ``model``; the stream is read
    whole."""
    body = {**recorded(f"claude-code/{recording}"), "model": model}
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
        "content-type": "application/json",
    }
    return httpx.post(f"{gw.url}/anthropic/v1/messages?beta=true", content=orjson.dumps(body), headers=headers,
                      timeout=30)  # fmt: skip


def gemini_cli(gw: Gateway, model: str, chat: bool = False) -> httpx.Response:
    """Gemini CLI's recorded router request, or its chat turn (streamed), unchanged, to ``model``."""
    raw = (RECORDED_CLIENTS / f"gemini-cli/{'chat' if chat else 'router'}-request.json").read_bytes()
    action = "streamGenerateContent?alt=sse" if chat else "generateContent"
    url = f"{gw.url}/gemini/v1beta/models/{model}:{action}"
    return httpx.post(url, content=raw, headers={"x-goog-api-key": CLIENT_KEY, "content-type": "application/json"},
                      timeout=30)  # fmt: skip


@pytest.mark.parametrize(
    ("recording", "adapted"),
    [
        ("messages-opus.json", f"{CLAMPED},reasoning_effort=dropped,thinking_budget=dropped,user=hashed"),
        ("messages-haiku.json", f"{CLAMPED},thinking_budget=dropped,user=hashed"),
    ],
)
def test_claude_code_to_gpt_4o_mini(gateway: Gateway, recording: str, adapted: str) -> None:
    mock = gateway.mocks["openai"]
    r = claude_code(gateway, recording, "gpt-4o-mini")
    assert r.status_code == 200, r.text
    assert "event: content_block_start" in r.text and "event: message_stop" in r.text  # (the mock calls a tool)
    sent = mock.last().body
    assert sent is not None
    assert sent["model"] == "gpt-4o-mini" and sent["max_completion_tokens"] == 16384
    assert "reasoning_effort" not in sent and len(sent["user"]) <= 64
    assert r.headers[ADAPTED] == adapted


@pytest.mark.parametrize("recording", ["messages-opus.json", "messages-haiku.json"])
def test_claude_code_to_gpt_4o_mini_without_the_catalog_is_refused(gateway: Gateway, recording: str) -> None:
    r = claude_code(gateway, recording, "gpt-4o-mini-uncatalogued")
    assert r.status_code == 400 and ADAPTED not in r.headers
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    # the first rule the real API checks that the unshaped request breaks (reasoning_effort, or the long user id)
    assert "is not supported with this model" in err["message"] or "string too long" in err["message"]


def test_gemini_cli_to_gpt_4o_mini(gateway: Gateway) -> None:
    r = gemini_cli(gateway, "gpt-4o-mini")
    assert r.status_code == 200, r.text
    assert r.headers[ADAPTED] == "reasoning_effort=dropped,top_k=dropped"
    sent = gateway.mocks["openai"].last().body
    assert sent is not None and "reasoning_effort" not in sent
    assert (sent["temperature"], sent["top_p"]) == (1, 0.95)
    answer = r.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert set(orjson.loads(answer)) == {"complexity_reasoning", "complexity_score"}  # the router's schema held
    chat = gemini_cli(gateway, "gpt-4o-mini", chat=True)
    assert chat.status_code == 200 and "functionCall" in chat.text, chat.text
    assert chat.headers[ADAPTED] == "reasoning_effort=dropped,top_k=dropped"
    off = gemini_cli(gateway, "gpt-4o-mini-uncatalogued")
    assert off.status_code == 400
    message = off.json()["error"]["message"]
    assert "Unsupported parameter: 'reasoning_effort' is not supported with this model." in message


@pytest.mark.parametrize("chat", [False, True], ids=["router", "chat"])
@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-opus-4-8"])
def test_gemini_cli_to_claude(gateway: Gateway, model: str, chat: bool) -> None:
    r = gemini_cli(gateway, model, chat)
    assert r.status_code == 200, r.text
    if chat:
        assert r.headers["content-type"].startswith("text/event-stream") and "functionCall" in r.text
    sent = gateway.mocks["anthropic"].last().body
    assert sent is not None and sent["model"] == model
    assert not {"temperature", "top_k"} & set(sent)  # thinking is on: Anthropic refuses both then
    assert r.headers[ADAPTED]


def test_temperature_wins_over_top_p_for_claude(gateway: Gateway) -> None:
    """The bug class of BerriAI/litellm#15097: temperature and top_p together to a Claude that refuses both."""
    ans = ask("openai", gateway.url, "claude-haiku-4-5", "hi there", temperature=0.5, top_p=0.9, max_tokens=100)
    assert ans.text.startswith("Hello from mock anthropic")
    sent = gateway.mocks["anthropic"].last().body
    assert sent is not None and sent["temperature"] == 0.5 and "top_p" not in sent
    with pytest.raises(Exception, match="cannot both be specified for this model") as err:
        ask("openai", gateway.url, "claude-haiku-4-5-uncatalogued", "hi", temperature=0.5, top_p=0.9, max_tokens=100)
    assert getattr(err.value, "status_code", None) == 400


def test_adaptations_are_counted_and_logged(gateway: Gateway) -> None:
    ans = ask("openai", gateway.url, "claude-haiku-4-5", "count me", temperature=0.5, top_p=0.9, max_tokens=100)
    request_id = ans.raw._request_id  # type: ignore[attr-defined]
    want = 'proxy_request_adaptations_total{action="dropped",model="claude-haiku-4-5",parameter="top_p",'
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # workers flush their metrics within 0.2 s and before every scrape
        text = httpx.get(f"{gateway.url}/metrics", timeout=5).text
        if want in text:
            break
        time.sleep(0.1)
    assert want in text
    line: dict = {}
    while time.monotonic() < deadline and not line:  # request lines are written in batches every 0.1 s
        for raw in gateway.log_text().splitlines():
            if raw.startswith("{") and request_id and request_id in raw:
                d = json.loads(raw)
                if "status_code" in d:  # the service's request line, not Envoy's access log line of the request
                    line = d
        time.sleep(0.05)
    assert line.get("adapted") == "top_p=dropped", line


@pytest.mark.parametrize(
    ("client", "path_model", "field"),
    [("gemini", "gemini-2.5-flash", "outputTokenLimit"), ("anthropic", "claude-haiku-4-5", "max_tokens")],
)
def test_listings_show_the_catalogs_limits(gateway: Gateway, client: str, path_model: str, field: str) -> None:
    if client == "gemini":
        url, headers = f"{gateway.url}/gemini/v1beta/models/{path_model}", {"x-goog-api-key": CLIENT_KEY}
    else:
        url, headers = f"{gateway.url}/anthropic/v1/models/{path_model}", {"x-api-key": CLIENT_KEY}
    got = httpx.get(url, headers=headers, timeout=10).json()
    assert got[field] in (65536, 64000)
