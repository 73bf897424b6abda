"""Hostile and broken input through the real Envoy: always a clear 4xx in the client's format, never a 5xx."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS, Gateway, free_port, gateway_config, start_gateway, stop_gateway

OA = "/openai/v1/chat/completions"
AN = "/anthropic/v1/messages"
GE = "/gemini/v1beta/models/{model}:generateContent"
# Cross-format pairs, so the gateway itself must judge the input (same-format bodies pass through to the provider).
OA_MODEL, AN_MODEL, GE_MODEL = MODELS["anthropic"], MODELS["gemini"], MODELS["openai"]


def post(gw: Gateway, path: str, content: bytes) -> httpx.Response:
    return httpx.post(gw.url + path, content=content, headers={"content-type": "application/json"}, timeout=30)


def assert_client_error(r: httpx.Response, fmt: str, status: int = 400) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    if fmt == "anthropic":
        assert body["type"] == "error" and body["error"]["message"]
    elif fmt == "gemini":
        assert body["error"]["code"] == status and body["error"]["message"]
    else:
        assert body["error"]["message"]
    assert "Traceback" not in r.text


BAD_BODIES = {
    "truncated": b'{"model": "M", "messages": [{"role": "user", "content": "hi"',
    "not an object": b"[1, 2, 3]",
    "invalid utf-8": b'{"model": "M", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "deep nesting": b'{"model": "M", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "empty": b"",
    "nul byte": b'{"model": "M\x00", "messages": []}',
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_broken_bodies(gateway: Gateway, case: str, fmt: str) -> None:
    model = {"openai": OA_MODEL, "anthropic": AN_MODEL, "gemini": GE_MODEL}[fmt]
    path = {"openai": OA, "anthropic": AN, "gemini": GE.format(model=model)}[fmt]
    body = BAD_BODIES[case].replace(b'"M', b'"' + model.encode())
    assert_client_error(post(gateway, path, body), fmt)


WRONG_TYPES = {
    "openai": [
        {"model": 5, "messages": []},
        {"model": OA_MODEL, "messages": "hi"},
        {"model": OA_MODEL, "messages": []},
        {"model": OA_MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": OA_MODEL, "messages": [{"role": "user", "content": 5}]},
        {"model": OA_MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
        {"model": OA_MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
        {"model": OA_MODEL, "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
        {"model": OA_MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@not-base64@@"}}]}]},
        {"model": "gpt\r\nx-evil: 1", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "../../etc/passwd", "messages": [{"role": "user", "content": "hi"}]},
    ],
    "anthropic": [
        {"model": AN_MODEL, "max_tokens": "10", "messages": [{"role": "user", "content": "hi"}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "system", "content": 5}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "tool", "content": "hi"}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "wat"}]}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}}]}]},
        {"model": AN_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "tools": "x"},
    ],
    "gemini": [
        {"contents": "hi"},
        {"contents": []},
        {"contents": [{"role": "wizard", "parts": [{"text": "hi"}]}]},
        {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}]}]},
        {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"temperature": "x"}},
    ],
}  # fmt: skip


@pytest.mark.parametrize(("fmt", "i"), [(f, i) for f, cases in WRONG_TYPES.items() for i in range(len(cases))])
def test_wrong_types_and_forbidden_shapes(gateway: Gateway, fmt: str, i: int) -> None:
    path = {"openai": OA, "anthropic": AN, "gemini": GE.format(model=GE_MODEL)}[fmt]
    before = {k: len(m.requests) for k, m in gateway.mocks.items()}
    r = httpx.post(gateway.url + path, json=WRONG_TYPES[fmt][i], timeout=30)
    assert_client_error(r, fmt)
    assert {k: len(m.requests) for k, m in gateway.mocks.items()} == before  # nothing reached a provider


@pytest.mark.parametrize(
    "path",
    [
        "/gemini/v1beta/models/..%2F..%2Fadmin:generateContent",
        "/gemini/v1beta/models/a%00b:generateContent",
        "/gemini/v1beta/models/..:generateContent",
        "/gemini/v1beta/models/x/../../y:generateContent",
        "/gemini/v1beta/models/:generateContent",
        "/gemini/v9/models/x:generateContent",
        "/gemini/v1beta/models/x:deleteEverything",
    ],
)
def test_gemini_path_tricks(gateway: Gateway, path: str) -> None:
    """Each refused in Gemini's own error shape, whether the service refuses it or Envoy's connection manager does
    before any filter runs (escaped slashes, NUL): no provider sees any of them."""
    before = {k: len(m.requests) for k, m in gateway.mocks.items()}
    r = httpx.post(gateway.url + path, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert_client_error(r, "gemini", r.status_code)
    assert 400 <= r.status_code < 500
    assert {k: len(m.requests) for k, m in gateway.mocks.items()} == before


@pytest.mark.parametrize(("fmt", "path"), [
    ("openai", "/openai/v1/chat%2Fcompletions"), ("anthropic", "/anthropic/v1/messages%2F..%2Fx"),
    ("gemini", "/gemini/v1beta/models/a%2Fb:generateContent"),
])  # fmt: skip
def test_envoy_refusals_are_in_the_client_format(gateway: Gateway, fmt: str, path: str) -> None:
    """Envoy's connection manager refuses an escaped slash before any filter runs; the reply is still an error in the
    client's own format (local-reply mappers by path prefix), and the SDK of that format reads it."""
    r = httpx.post(gateway.url + path, json={})
    assert_client_error(r, fmt, 400)
    assert "refused" in r.text


@pytest.mark.parametrize(("method", "path", "status"), [
    ("PUT", OA, 405), ("DELETE", AN, 405), ("GET", OA, 405), ("PATCH", "/health", 405),
    ("POST", "/openai/v2/chat", 404), ("GET", "/../../etc/passwd", 404), ("POST", "/", 404),
])  # fmt: skip
def test_unknown_paths_and_methods(gateway: Gateway, method: str, path: str, status: int) -> None:
    r = httpx.request(method, gateway.url + path, content=b"{}")
    assert r.status_code == status, (r.status_code, r.text[:200])
    assert r.json()["error"]["message"]


def test_control_characters_in_headers_are_refused(gateway: Gateway) -> None:
    """Raw bytes on the socket (clients refuse to send these): Envoy's codec answers 400, nothing crashes."""
    host, port = gateway.url.removeprefix("http://").split(":")
    for bad in (b"X-Test: a\x00b\r\n", b"X-Test: a\rb\r\n", b"X-Bad\x01Name: a\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST " + OA.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + bad + b"\r\n{}")
            head = s.recv(200)
        assert head == b"" or head.startswith(b"HTTP/1.1 400"), head  # refused or connection closed
    assert httpx.get(gateway.url + "/health").status_code == 200


def test_huge_arrays_are_handled(gateway: Gateway) -> None:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(20001)]
    r = httpx.post(gateway.url + OA, json={"model": OA_MODEL, "messages": messages}, timeout=60)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].endswith("m20000")


@pytest.fixture(scope="module")
def small_limit(mocks: dict) -> Iterator[Gateway]:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()) + "max_request_bytes: 65536\n", workers=1)
        yield gw
        stop_gateway(gw)


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "gemini"])
def test_body_over_the_limit_is_413_json(small_limit: Gateway, fmt: str) -> None:
    import openai

    path = {"openai": OA, "anthropic": AN, "gemini": GE.format(model=GE_MODEL)}[fmt]
    r = httpx.post(small_limit.url + path, content=b'{"x": "' + b"a" * 200_000 + b'"}', timeout=30)
    assert r.status_code == 413
    assert r.json()["error"]["message"]
    with pytest.raises(openai.APIStatusError) as info:
        openai.OpenAI(base_url=f"{small_limit.url}/openai/v1", api_key="k", max_retries=0).chat.completions.create(
            model=OA_MODEL, messages=[{"role": "user", "content": "a" * 200_000}]
        )
    assert info.value.status_code == 413


@pytest.mark.parametrize("client", ["openai", "gemini"])
def test_answer_over_the_limit_is_a_json_5xx(small_limit: Gateway, client: str) -> None:
    """Envoy's per-stream buffer limit (max_request_bytes) also bounds a buffered answer: over it, a 5xx the SDKs
    read as a server error, never a truncated body."""
    path = OA if client == "openai" else GE.format(model=GE_MODEL)
    body = ({"model": OA_MODEL, "messages": [{"role": "user", "content": "HUGE"}]} if client == "openai"
            else {"contents": [{"role": "user", "parts": [{"text": "HUGE"}]}]})  # fmt: skip
    r = httpx.post(small_limit.url + path, json=body, timeout=30)
    assert r.status_code >= 500, r.status_code
    assert r.json()["error"]["message"]
    # Streams are not buffered: the same answer streamed (events paced, each under the limit) arrives whole.
    if client == "openai":
        paced = {**body, "stream": True, "messages": [{"role": "user", "content": "HUGE SLOWSTREAM"}]}
        with httpx.stream("POST", small_limit.url + path, json=paced, timeout=30) as s:
            data = s.read()
        assert s.status_code == 200 and data.count(b"x") >= 200_000 and data.rstrip().endswith(b"[DONE]")


def test_413_bodies_are_the_clients_own(small_limit: Gateway) -> None:
    """The service's 413 (from Content-Length) keeps its client-format body and request id; a chunked upload over
    the limit (Envoy's own 413) is answered in the client's format too."""
    big = b'{"model": "' + OA_MODEL.encode() + b'", "x": "' + b"a" * 100_000 + b'"}'
    r = httpx.post(small_limit.url + AN, content=big, headers={"x-request-id": "big-1"})
    body = r.json()
    assert r.status_code == 413 and body["type"] == "error" and body["error"]["type"] == "request_too_large"
    assert body["request_id"] == "big-1"

    def chunks() -> Iterator[bytes]:
        yield big[:50_000]
        yield big[50_000:]

    r = httpx.post(small_limit.url + OA, content=chunks(), headers={"x-request-id": "big-2"})
    assert r.status_code == 413, r.text[:200]
    assert r.json()["error"]["message"]
