"""Streaming through Envoy for all 9 client x provider pairs, with each official SDK's streaming API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MODELS, Gateway
from tests.e2e.sdk import FINISH, anthropic_client, gemini_client, openai_client, stream

CLIENTS = ("openai", "anthropic", "gemini")
PROVIDERS = ("openai", "anthropic", "gemini")
PAIRS = [(c, p) for c in CLIENTS for p in PROVIDERS]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_stream_text_finish_and_usage(gateway: Gateway, client: str, provider: str) -> None:
    got = stream(client, gateway.url, MODELS[provider], "stream me")
    assert got.text == f"Hello from mock {provider}. You said: stream me"
    assert got.finish == FINISH[client]["stop"]
    assert (got.input_tokens, got.output_tokens) == (11, 7)
    assert got.events > 2, "delivered as several events, not one blob"


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_stream_tool_call_arguments_whole(gateway: Gateway, client: str, provider: str) -> None:
    got = stream(client, gateway.url, MODELS[provider], "weather PARALLEL", tools=True)
    assert got.tool_calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Tokyo"})]
    assert got.finish == FINISH[client]["tool_calls"]


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_stream_is_incremental(gateway: Gateway, client: str, provider: str) -> None:
    """The client sees its first event while the provider is still generating."""
    got = stream(client, gateway.url, MODELS[provider], "SLOWSTREAM please")
    finished = gateway.mocks[provider].last().stream_finished_at
    assert got.first_event_at is not None and finished is not None
    assert got.first_event_at < finished - 0.5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_stream_without_include_usage_has_no_usage_chunk(gateway: Gateway, provider: str) -> None:
    got = stream("openai", gateway.url, MODELS[provider], "no usage please", include_usage=False)
    assert got.text.endswith("no usage please")
    assert got.input_tokens is None
    # The gateway still asked upstream for usage (for its own metrics) where the provider is OpenAI-type.
    if provider == "openai":
        assert gateway.mocks["openai"].last().body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_gemini_json_array_stream(gateway: Gateway, provider: str) -> None:
    """`:streamGenerateContent` without alt=sse is one JSON array, written element by element."""
    r = httpx.post(
        f"{gateway.url}/gemini/v1beta/models/{MODELS[provider]}:streamGenerateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "array please"}]}]},
        headers={"x-goog-api-key": "k"},
        timeout=30,
    )
    assert r.status_code == 200
    chunks = r.json()
    assert isinstance(chunks, list) and len(chunks) >= 2
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"].get("parts", []))
    assert text == f"Hello from mock {provider}. You said: array please"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["promptTokenCount"] == 11


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_upstream_error_before_first_byte(gateway: Gateway, client: str, provider: str) -> None:
    from tests.e2e.test_errors import expect_status

    expect_status(client, 429, lambda: stream(client, gateway.url, MODELS[provider], "ERROR 429"))


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_error_mid_stream_becomes_client_in_stream_error(gateway: Gateway, client: str, provider: str) -> None:
    """The provider's own in-stream error event reaches the client as its format's in-stream error; the SDK raises."""
    import anthropic
    import openai
    from google.genai import errors as gerrors

    with pytest.raises((openai.APIError, anthropic.APIError, gerrors.APIError)) as info:
        stream(client, gateway.url, MODELS[provider], "STREAMERROR")
    assert "STREAMERROR" in str(info.value) or "overloaded" in str(info.value).lower()


def _texts(client: str, url: str, model: str, text: str) -> Iterator[str]:
    """A streamed turn through the client's SDK, yielding the answer text as each event brings it."""
    if client == "openai":
        cl = openai_client(url)
        with cl.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], stream=True) as s:
            for chunk in s:
                yield "".join(c.delta.content or "" for c in chunk.choices)
    elif client == "anthropic":
        acl = anthropic_client(url)
        with acl.messages.stream(model=model, max_tokens=256, messages=[{"role": "user", "content": text}]) as s:
            for event in s:
                yield (
                    event.delta.text if event.type == "content_block_delta" and event.delta.type == "text_delta" else ""
                )
    else:
        gcl = gemini_client(url)  # keep a reference: the client closes its connection pool when collected
        for chunk in gcl.models.generate_content_stream(model=model, contents=text):
            yield chunk.text or ""


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_dropped_mid_stream_fails_loudly(gateway: Gateway, client: str, provider: str) -> None:
    """A provider connection cut mid-stream, after the client already has text: Envoy resets the client's stream (it
    cannot hand the service a last chunk after an upstream reset), so the client's SDK raises its connection error
    rather than ending with a clean, truncated answer."""
    import anthropic
    import httpx2  # the SDKs' HTTP client
    import openai

    expected = {
        "openai": openai.APIConnectionError,
        "anthropic": anthropic.APIConnectionError,
        "gemini": httpx2.RemoteProtocolError,  # google-genai passes the transport's error on
    }[client]
    gate = gateway.mocks[provider].hold_drop()  # the mock cuts only once the client has text
    got = ""
    with pytest.raises(expected) as info:
        for piece in _texts(client, gateway.url, MODELS[provider], "DROPSTREAM"):
            got += piece
            if got:
                gate.set()
    assert gate.is_set(), f"no text reached the client before the cut ({info.value!r})"
    assert f"Hello from mock {provider}. You said: DROPSTREAM".startswith(got) and len(got) < 30, got
    cause = info.value if isinstance(info.value, httpx2.RemoteProtocolError) else info.value.__cause__
    assert isinstance(cause, httpx2.RemoteProtocolError) and "incomplete chunked read" in str(cause), repr(cause)


@pytest.mark.parametrize(("client", "provider"), [("openai", "anthropic"), ("gemini", "gemini")])
def test_long_stream_outlives_the_timeout_while_producing(gateway: Gateway, client: str, provider: str) -> None:
    """Events spread over 8 s with a 6 s `timeout`: never cut while the provider keeps producing."""
    got = stream(client, gateway.url, MODELS[provider], "LONGSTREAM please")
    assert got.text == f"Hello from mock {provider}. You said: LONGSTREAM please"
    assert got.finish == FINISH[client]["stop"]
    assert "x-envoy-upstream-rq-timeout-ms" not in gateway.mocks[provider].last().headers


@pytest.mark.parametrize("client", CLIENTS)
def test_silent_stream_times_out_with_504(gateway: Gateway, client: str) -> None:
    from tests.e2e.test_errors import expect_status

    expect_status(client, 504, lambda: stream(client, gateway.url, MODELS["anthropic"], "SLEEP 10"))


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_gemini_v1_and_request_id_on_streams(gateway: Gateway, client: str, provider: str) -> None:
    """Streams carry X-Request-ID too; Gemini's v1 path works like v1beta."""
    if client == "gemini":
        from google.genai import types as gtypes

        from tests.e2e.sdk import gemini_client

        cl = gemini_client(gateway.url, api_version="v1")
        chunks = list(cl.models.generate_content_stream(model=MODELS[provider], contents="v1 stream"))
        assert "".join(ch.text or "" for ch in chunks).endswith("v1 stream")
        assert isinstance(chunks[-1], gtypes.GenerateContentResponse)
        return
    path = "/openai/v1/chat/completions" if client == "openai" else "/anthropic/v1/messages"
    body = {"model": MODELS[provider], "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": "rid"}]}  # fmt: skip
    with httpx.stream("POST", gateway.url + path, json=body, headers={"x-request-id": "stream-rid-1",
                      "anthropic-version": "2023-06-01"}, timeout=30) as r:  # fmt: skip
        assert r.status_code == 200
        assert r.headers["x-request-id"] == "stream-rid-1"
        assert r.headers["content-type"].startswith("text/event-stream")
        r.read()
