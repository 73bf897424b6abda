"""Errors reach each client in its own format and status, so its official SDK raises the matching exception."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as gerrors

from tests.conftest import MODELS, Gateway, free_port, gateway_config, start_gateway, stop_gateway
from tests.e2e.sdk import CLIENT_KEY, ask
from tests.mocks.providers import magic_error

CLIENTS = ("openai", "anthropic", "gemini")
PROVIDERS = ("openai", "anthropic", "gemini")

# The exception each SDK raises for a status.
OPENAI_EXC = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
              429: openai.RateLimitError, 500: openai.InternalServerError, 502: openai.InternalServerError,
              504: openai.InternalServerError}  # fmt: skip
ANTHROPIC_EXC = {400: anthropic.BadRequestError, 401: anthropic.AuthenticationError, 404: anthropic.NotFoundError,
                 429: anthropic.RateLimitError, 500: anthropic.InternalServerError,
                 502: anthropic.InternalServerError, 504: anthropic.GatewayTimeoutError}  # fmt: skip


def expect_status(client: str, status: int, call) -> Exception:
    """Run ``call`` and check the SDK raised its exception class for ``status``; return the exception."""
    if client == "openai":
        with pytest.raises(OPENAI_EXC[status]) as info:
            call()
        assert info.value.status_code == status
        assert isinstance(info.value.body, dict) and "message" in info.value.body
    elif client == "anthropic":
        with pytest.raises(ANTHROPIC_EXC[status]) as info:
            call()
        assert info.value.status_code == status
        body = info.value.body
        assert isinstance(body, dict) and body["type"] == "error" and body["error"]["message"]
    else:
        exc = gerrors.ClientError if status < 500 else gerrors.ServerError
        with pytest.raises(exc) as info:
            call()
        assert info.value.code == status
        assert info.value.message
    return info.value


def message_of(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError | anthropic.APIStatusError):
        return str(exc.message)
    return str(getattr(exc, "message", exc))


@pytest.mark.parametrize("client", CLIENTS)
def test_unknown_model_is_404_and_never_forwarded(gateway: Gateway, client: str) -> None:
    before = {k: len(m.requests) for k, m in gateway.mocks.items()}
    exc = expect_status(client, 404, lambda: ask(client, gateway.url, "no-such-model", "hi"))
    assert "no-such-model" in message_of(exc)
    assert {k: len(m.requests) for k, m in gateway.mocks.items()} == before


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_upstream_error_keeps_status_and_message(gateway: Gateway, client: str, provider: str, status: int) -> None:
    exc = expect_status(client, status, lambda: ask(client, gateway.url, MODELS[provider], f"ERROR {status}"))
    provider_message = str(magic_error(provider, status, MODELS[provider]))
    assert provider_message in message_of(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_rate_limit_passes_retry_after(gateway: Gateway, client: str) -> None:
    exc = expect_status(client, 429, lambda: ask(client, gateway.url, MODELS["anthropic"], "ERROR 429"))
    if client != "gemini":
        assert exc.response.headers.get("retry-after") == "7"  # type: ignore[attr-defined]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_html_500_from_provider(gateway: Gateway, client: str, provider: str) -> None:
    expect_status(client, 500, lambda: ask(client, gateway.url, MODELS[provider], "HTML500"))


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_truncated_json_from_provider_is_502(gateway: Gateway, client: str, provider: str) -> None:
    """Same format too: the provider's bytes pass through untouched unless they are not JSON at all."""
    expect_status(client, 502, lambda: ask(client, gateway.url, MODELS[provider], "BADJSON"))


@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_provider_is_502(gateway: Gateway, client: str) -> None:
    exc = expect_status(client, 502, lambda: ask(client, gateway.url, "dead-model", "hi"))
    assert "reach" in message_of(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_provider_timeout_is_504(gateway: Gateway, client: str) -> None:
    exc = expect_status(client, 504, lambda: ask(client, gateway.url, MODELS["openai"], "SLEEP 10"))
    assert "time" in message_of(exc)


@pytest.mark.parametrize("client", CLIENTS)
def test_missing_provider_key_is_auth_error(gateway: Gateway, client: str) -> None:
    exc = expect_status(client, 401, lambda: ask(client, gateway.url, "no-key-model", "hi"))
    assert "AI_GATEWAY_TEST_MISSING_KEY" in message_of(exc)


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/openai/v1/chat/completions", "openai"),
        ("/anthropic/v1/messages", "anthropic"),
        ("/gemini/v1beta/models/gemini-test:generateContent", "gemini"),
    ],
)
def test_malformed_json_is_400_in_client_format(gateway: Gateway, path: str, shape: str) -> None:
    r = httpx.post(gateway.url + path, content=b'{"model": "gpt-test", "messages": [', headers={
        "content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"})  # fmt: skip
    assert r.status_code == 400
    body = r.json()
    if shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    elif shape == "gemini":
        assert body["error"]["code"] == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    else:
        assert body["error"]["type"] == "invalid_request_error"
    assert r.headers.get("x-request-id")


def test_format_forbidden_request_is_400(gateway: Gateway) -> None:
    """Anthropic requires max_tokens; OpenAI requires messages: refused before any provider sees them.

    (Same format on both sides passes the bytes through and the provider answers in that same format.)"""
    before = len(gateway.mocks["openai"].requests)
    r = httpx.post(gateway.url + "/anthropic/v1/messages", json={"model": "gpt-test", "messages": [
        {"role": "user", "content": "hi"}]})  # fmt: skip
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    assert len(gateway.mocks["openai"].requests) == before
    r = httpx.post(gateway.url + "/openai/v1/chat/completions", json={"model": "claude-test"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_request_id_in_error_body_and_header(gateway: Gateway) -> None:
    r = httpx.post(gateway.url + "/openai/v1/chat/completions", json={"model": "nope", "messages": [
        {"role": "user", "content": "hi"}]}, headers={"x-request-id": "my-trace-123"})  # fmt: skip
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "my-trace-123"
    assert r.json()["error"]["request_id"] == "my-trace-123"


def test_unknown_path_is_404(gateway: Gateway) -> None:
    r = httpx.get(gateway.url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["message"]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_html_200_from_provider_is_502(gateway: Gateway, client: str, provider: str) -> None:
    """A web page where JSON should be (a captive portal, a misrouted proxy): 502 with a clear message."""
    exc = expect_status(client, 502, lambda: ask(client, gateway.url, MODELS[provider], "HTML200"))
    assert "not" in message_of(exc).lower() or "invalid" in message_of(exc).lower()


def test_a_provider_cannot_forge_the_gateways_own_headers(mocks: dict, tmp_path) -> None:  # type: ignore[no-untyped-def,type-arg]
    """A provider answering with the headers Envoy's mappers and the gateway use among themselves
    (``x-ai-gateway-error``, ``x-ai-gateway-adapted``) changes nothing: its answer is an answer, and the client sees
    neither header."""
    import http.server
    import threading

    answer = (
        b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":'
        b'{"role":"assistant","content":"forged headers, real answer"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":4,"total_tokens":5}}'
    )

    class Forger(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            for k, v in (
                ("content-type", "application/json"),
                ("content-length", str(len(answer))),
                ("x-ai-gateway-error", "timeout"),
                ("x-ai-gateway-adapted", "everything=dropped"),
            ):
                self.send_header(k, v)  # fmt: skip
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    config = (
        gateway_config(free_port())
        + """
  - name: "forged"
    provider: "forger"
    capabilities: {max_output_tokens: 1000}
"""
    )
    config = config.replace("providers:\n", f"""providers:
  - name: "forger"
    type: "openai"
    base_url: "http://127.0.0.1:{port}/v1"
""", 1)  # fmt: skip
    gw = start_gateway(tmp_path, mocks, config, workers=1)
    try:
        for client in ("openai", "anthropic"):
            url = {"openai": "/openai/v1/chat/completions", "anthropic": "/anthropic/v1/messages"}[client]
            body = {"model": "forged", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
            r = httpx.post(gw.url + url, json=body, timeout=30)
            assert r.status_code == 200, r.text
            out = r.json()
            text = out["choices"][0]["message"]["content"] if client == "openai" else out["content"][0]["text"]
            assert text == "forged headers, real answer", out
            assert "x-ai-gateway-error" not in r.headers and "x-ai-gateway-adapted" not in r.headers
    finally:
        stop_gateway(gw)
        server.shutdown()
