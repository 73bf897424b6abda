"""Fallback across targets, through the real gateway (Envoy + workers) with the official SDKs (docs/fallback.md).

Each model below lists targets of different formats: Anthropic first, then OpenAI, then Gemini. The mocks are this
module's own (a fault set on one never reaches another module's tests) and are told to fail with ``set_fault``; the
first target of ``fb-refused`` is a port nobody listens on. Every failure kind has a model of its own, so that one
model's cooldown (Envoy's outlier detection, 3 failures here) never decides another test's first attempt.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from tests.conftest import KEYS, MODELS, Gateway, free_port, start_gateway, stop_gateway
from tests.e2e.sdk import anthropic_client, gemini_client, openai_client, stream
from tests.mocks.providers import Fault, MockProvider

CLIENTS = ("openai", "anthropic", "gemini")
KEY_B = "sk-test-openai-key-b-000"
PER_TRY = 1.0
COOLDOWN = 3.0
CHAIN = ("fb-429", "fb-500", "fb-503", "fb-hang", "fb-refused", "fb-400", "fb-all", "fb-stream", "fb-drop", "fb-cost")


def config(dead_port: int, openai_b: str) -> str:
    chain = f"""
    targets:
      - {{provider: "anthropic", model: "{MODELS["anthropic"]}"}}
      - {{provider: "openai", model: "{MODELS["openai"]}"}}
      - {{provider: "gemini", model: "{MODELS["gemini"]}"}}"""
    models = "".join(f'\n  - name: "{name}"{chain}' for name in CHAIN if name != "fb-refused")
    return f"""
version: "1.0"
timeout: "8s"
fallback:
  per_try_timeout: "{PER_TRY}s"
  retry_after_cap: "0.2s"
  cooldown: {{failures: 3, interval: "0.5s", duration: "{COOLDOWN}s"}}
providers:
  - name: "openai-b"
    type: "openai"
    base_url: "{openai_b}"
    api_key_env: "OPENAI_B_KEY"
  - name: "dead"
    type: "anthropic"
    base_url: "http://127.0.0.1:{dead_port}"
models:{models}
  - name: "fb-refused"
    targets:
      - {{provider: "dead", model: "{MODELS["anthropic"]}"}}
      - {{provider: "openai", model: "{MODELS["openai"]}"}}
      - {{provider: "gemini", model: "{MODELS["gemini"]}"}}
  - name: "fb-load"
    targets:
      - {{provider: "anthropic", model: "{MODELS["anthropic"]}"}}
      - {{provider: "openai", model: "{MODELS["openai"]}"}}
  - name: "fb-gemfile"
    targets:
      - {{provider: "gemini", model: "{MODELS["gemini"]}"}}
      - {{provider: "openai", model: "{MODELS["openai"]}"}}
  - name: "balanced"
    targets:
      - balance:
          - {{provider: "openai", model: "{MODELS["openai"]}", weight: 3}}
          - {{provider: "openai-b", model: "{MODELS["openai"]}", weight: 1}}
  - name: "single"
    provider: "anthropic"
    target_model: "{MODELS["anthropic"]}"
"""


@pytest.fixture(scope="module")
def fb_mocks() -> Iterator[dict[str, MockProvider]]:
    started = {kind: MockProvider(kind, KEYS[kind]).start() for kind in ("openai", "anthropic", "gemini")}
    started["openai-b"] = MockProvider("openai", KEY_B).start()
    yield started
    for m in started.values():
        m.stop()


@pytest.fixture(scope="module")
def gw(fb_mocks: dict[str, MockProvider]) -> Iterator[Gateway]:
    with tempfile.TemporaryDirectory(prefix="ai-gateway-fallback-") as tmp:
        g = start_gateway(
            Path(tmp), fb_mocks, config(free_port(), fb_mocks["openai-b"].base_url), extra_env={"OPENAI_B_KEY": KEY_B}
        )
        yield g
        stop_gateway(g)


@pytest.fixture(autouse=True)
def clean(fb_mocks: dict[str, MockProvider]) -> Iterator[None]:
    for m in fb_mocks.values():
        m.set_fault(None)
        m.clear()
    yield
    for m in fb_mocks.values():
        m.set_fault(None)


def counts(mocks: dict[str, MockProvider]) -> dict[str, int]:
    return {k: len(m.requests) for k, m in mocks.items()}


def call(client: str, url: str, model: str, text: str) -> tuple[str, dict[str, str], int | None, int | None]:
    """One turn through the client's official SDK: the answer's text, its headers, input and output tokens."""
    if client == "openai":
        raw = openai_client(url).chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )
        r = raw.parse()
        usage = r.usage
        return (
            r.choices[0].message.content or "",
            dict(raw.headers),
            usage and usage.prompt_tokens,
            (usage and usage.completion_tokens),
        )
    if client == "anthropic":
        araw = anthropic_client(url).messages.with_raw_response.create(
            model=model, max_tokens=64, messages=[{"role": "user", "content": text}]
        )
        m = araw.parse()
        body = "".join(b.text for b in m.content if b.type == "text")
        return body, dict(araw.headers), m.usage.input_tokens, m.usage.output_tokens
    cl = gemini_client(url)
    g = cl.models.generate_content(model=model, contents=text)
    um = g.usage_metadata
    headers = dict(g.sdk_http_response.headers or {}) if g.sdk_http_response else {}
    return g.text or "", headers, um and um.prompt_token_count, um and um.candidates_token_count


# ----------------------------------------------------------------------------------------------- one target fails
KINDS = {  # model -> (what the primary does, its status in the attempt log: "" when nothing came back)
    "fb-429": (Fault(status=429), "429"),
    "fb-500": (Fault(status=500), "500"),
    "fb-503": (Fault(status=503), "503"),
    "fb-hang": (Fault(sleep=PER_TRY + 1.5), ""),
    "fb-refused": (None, ""),
}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", list(KINDS))
def test_primary_fails_next_target_answers(gw: Gateway, fb_mocks: dict[str, MockProvider], client: str,
                                           model: str) -> None:  # fmt: skip
    fault, logged = KINDS[model]
    fb_mocks["anthropic"].set_fault(fault)
    text, headers, tokens_in, tokens_out = call(client, gw.url, model, f"fallback {model}")
    # One normal answer in the client's own format, from the second target (OpenAI), with its usage.
    assert text == f"Hello from mock openai. You said: fallback {model}"
    assert (tokens_in, tokens_out) == (11, 7)
    assert headers["x-ai-gateway-served-by"] == f"openai/{MODELS['openai']}"
    assert headers["x-ai-gateway-attempts"] == "2"
    primary = "dead" if model == "fb-refused" else "anthropic"
    expected = f"{primary}/{MODELS['anthropic']}={logged};openai/{MODELS['openai']}=200"
    assert headers["x-ai-gateway-attempt-log"] == expected
    # Each target that was tried saw exactly one attempt; the third none.
    seen = counts(fb_mocks)
    assert seen["openai"] == 1 and seen["gemini"] == 0
    assert seen["anthropic"] == (0 if model == "fb-refused" else 1)
    # The attempt to OpenAI is the client's request for OpenAI: the mock checked it against the SDK's types; the
    # credential is OpenAI's own (the mock refuses any other), nothing of another provider's.
    sent = fb_mocks["openai"].last()
    assert sent.headers.get("authorization") == f"Bearer {KEYS['openai']}"
    assert "x-api-key" not in sent.headers and "x-ai-gateway-target" not in sent.headers
    assert sent.body is not None and sent.body["model"] == MODELS["openai"]


def test_all_targets_fail_last_error_in_client_format(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    fb_mocks["anthropic"].set_fault(Fault(status=503))
    fb_mocks["openai"].set_fault(Fault(status=500))
    fb_mocks["gemini"].set_fault(Fault(status=429))
    with pytest.raises(openai.RateLimitError) as oe:
        call("openai", gw.url, "fb-all", "everything fails")
    assert oe.value.status_code == 429
    assert oe.value.response.headers["x-ai-gateway-served-by"] == f"gemini/{MODELS['gemini']}"
    assert oe.value.response.headers["x-ai-gateway-attempts"] == "3"
    assert oe.value.response.headers["retry-after"] == "7"  # the last provider's own
    with pytest.raises(anthropic.RateLimitError) as ae:
        call("anthropic", gw.url, "fb-all", "everything fails")
    assert ae.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(genai_errors.ClientError) as ge:
        call("gemini", gw.url, "fb-all", "everything fails")
    assert ge.value.code == 429 and ge.value.status == "RESOURCE_EXHAUSTED"
    assert counts(fb_mocks) == {"openai": 3, "anthropic": 3, "gemini": 3, "openai-b": 0}


@pytest.mark.parametrize("client", CLIENTS)
def test_client_error_from_primary_is_not_retried(gw: Gateway, fb_mocks: dict[str, MockProvider], client: str) -> None:
    fb_mocks["anthropic"].set_fault(Fault(status=400))
    errors = {"openai": openai.BadRequestError, "anthropic": anthropic.BadRequestError,
              "gemini": genai_errors.ClientError}  # fmt: skip
    with pytest.raises(errors[client]) as exc:
        call(client, gw.url, "fb-400", "a request the provider refuses")
    status = exc.value.code if client == "gemini" else exc.value.status_code  # type: ignore[attr-defined]
    assert status == 400
    assert counts(fb_mocks) == {"openai": 0, "anthropic": 1, "gemini": 0, "openai-b": 0}


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_falls_back_before_its_first_byte(gw: Gateway, fb_mocks: dict[str, MockProvider], client: str) -> None:
    fb_mocks["anthropic"].set_fault(Fault(status=503))
    got = stream(client, gw.url, "fb-stream", "a streamed fallback")
    assert got.text == "Hello from mock openai. You said: a streamed fallback"
    assert got.input_tokens == 11 and got.output_tokens == 7
    assert counts(fb_mocks)["anthropic"] == 1 and counts(fb_mocks)["openai"] == 1
    assert fb_mocks["openai"].last().body["stream"] is True  # type: ignore[index]


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_failing_after_its_first_byte_is_not_retried(gw: Gateway, fb_mocks: dict[str, MockProvider],
                                                            client: str) -> None:  # fmt: skip
    # The primary starts answering, then its connection is cut: the client already has bytes, so no other target is
    # tried; the client's SDK sees the stream break.
    with pytest.raises(Exception):  # noqa: B017 (each SDK raises its own error for a cut stream)
        stream(client, gw.url, "fb-drop", "DROPSTREAM after the first byte")
    assert counts(fb_mocks) == {"openai": 0, "anthropic": 1, "gemini": 0, "openai-b": 0}


def test_a_target_that_cannot_take_the_request_answers_at_once(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    # A Gemini File API URI: the primary (Gemini) reads it; when it fails, the OpenAI target cannot take the request,
    # and the client gets that 400 in its own format at once.
    fb_mocks["gemini"].set_fault(Fault(status=503))
    url = "https://generativelanguage.googleapis.com/v1beta/files/abc-123"
    content: list[Any] = [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "url", "url": url}},
    ]
    with pytest.raises(anthropic.BadRequestError) as exc:
        anthropic_client(gw.url).messages.create(
            model="fb-gemfile", max_tokens=64, messages=[{"role": "user", "content": content}]
        )
    assert "Gemini" in exc.value.message and exc.value.response.headers["x-ai-gateway-attempts"] == "2"
    assert counts(fb_mocks)["gemini"] == 1 and counts(fb_mocks)["openai"] == 0
    assert fb_mocks["gemini"].last().body["contents"][0]["parts"][1]["fileData"]["fileUri"] == url  # type: ignore[index]


# ----------------------------------------------------------------------------------------------- load balancing
def ask_balanced(url: str, n: int) -> Counter[str]:
    cl = openai_client(url)
    served: Counter[str] = Counter()
    for i in range(n):
        raw = cl.chat.completions.with_raw_response.create(
            model="balanced", messages=[{"role": "user", "content": f"balanced {i}"}]
        )
        raw.parse()
        served[raw.headers["x-ai-gateway-served-by"]] += 1
    return served


def test_weighted_deployments_split_eject_and_return(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    a, b = fb_mocks["openai"], fb_mocks["openai-b"]
    ask_balanced(gw.url, 400)
    share = len(a.requests) / (len(a.requests) + len(b.requests))
    assert 0.75 * 0.9 <= share <= 0.75 * 1.1, (len(a.requests), len(b.requests))
    assert b.requests[-1].headers.get("authorization") == f"Bearer {KEY_B}"  # each deployment with its own key
    # Deployment B fails: after 3 failures it is ejected (its failed attempts were retried on A: no client error),
    # then takes no traffic at all.
    b.set_fault(Fault(status=503))
    a.clear()
    b.clear()
    deadline = time.monotonic() + 20
    while len(b.requests) < 3 and time.monotonic() < deadline:
        ask_balanced(gw.url, 4)
    assert len(b.requests) >= 3
    tried_b = len(b.requests)
    ask_balanced(gw.url, 40)
    assert len(b.requests) == tried_b, "an ejected deployment still got traffic"
    # It recovers; after the ejection time it is back in rotation.
    b.set_fault(None)
    deadline = time.monotonic() + COOLDOWN * 5
    while len(b.requests) == tried_b and time.monotonic() < deadline:
        ask_balanced(gw.url, 8)
    assert len(b.requests) > tried_b, "the deployment never came back"
    served = ask_balanced(gw.url, 200)
    assert served[f"openai-b/{MODELS['openai']}"] > 20


# ----------------------------------------------------------------------------------------------- under load
def test_primary_failing_30_percent_at_c32_gives_no_client_error(
    gw: Gateway, fb_mocks: dict[str, MockProvider]
) -> None:
    fb_mocks["anthropic"].set_fault(Fault(status=503, rate=0.3))
    statuses: Counter[int] = Counter()
    served: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        with httpx.Client(timeout=20) as cl:
            for i in range(n):
                body = {"model": "fb-load", "messages": [{"role": "user", "content": f"load {i}"}]}
                r = cl.post(gw.url + "/openai/v1/chat/completions", json=body)
                with lock:
                    statuses[r.status_code] += 1
                    served[r.headers.get("x-ai-gateway-served-by", "")] += 1

    threads = [threading.Thread(target=worker, args=(25,)) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses == Counter({200: 800}), statuses
    assert served[f"openai/{MODELS['openai']}"] > 0 and served[f"anthropic/{MODELS['anthropic']}"] > 0


# ----------------------------------------------------------------------------------------------- visible
def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.index("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def test_attempts_counted_per_target_and_listed_in_the_logs(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    before = scrape(gw.url)
    fb_mocks["anthropic"].set_fault(Fault(status=503))
    _, headers, _, _ = call("openai", gw.url, "fb-503", "counted")
    request_id = headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:
        after = scrape(gw.url)
        got = metric(after, "proxy_upstream_attempts_total", model="fb-503", provider="anthropic",
                     outcome="server_error") - metric(before, "proxy_upstream_attempts_total", model="fb-503",
                                                      provider="anthropic", outcome="server_error")  # fmt: skip
        if got >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert got == 1

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("proxy_upstream_attempts_total", model="fb-503", provider="openai", outcome="success") == 1
    # Tokens are the answering target's.
    assert delta("proxy_tokens_total", model="fb-503", provider="openai", type="input") == 11
    assert delta("proxy_tokens_total", model="fb-503", provider="anthropic", type="input") == 0
    # The request's log line lists its attempts; so does Envoy's access log line.
    deadline = time.monotonic() + 10
    line: dict[str, Any] | None = None
    access: dict[str, Any] | None = None
    while (line is None or access is None) and time.monotonic() < deadline:
        import json

        for raw in gw.log_text().splitlines():
            if request_id not in raw or not raw.startswith("{"):
                continue
            d = json.loads(raw)
            if d.get("message") == "request completed":
                line = d
            elif "flags" in d:
                access = d
        time.sleep(0.2)
    assert line is not None and access is not None, gw.log_text()[-3000:]
    assert line["attempts"] == 2 and line["provider"] == "openai"
    assert line["attempt_log"] == [
        {"target": f"anthropic/{MODELS['anthropic']}", "status": 503},
        {"target": f"openai/{MODELS['openai']}", "status": 200},
    ]
    assert access["attempts"] == 2
    assert access["attempt_log"] == f"anthropic/{MODELS['anthropic']}=503;openai/{MODELS['openai']}=200"


def attempt_streams(gw: Gateway, model: str) -> tuple[int, int]:
    """Envoy's count of the attempt filter's streams and messages on the model's cluster."""
    text = httpx.get(f"{gw.admin}/stats?filter=^cluster\\.fallback_{model}\\.ext_proc\\.", timeout=5).text
    stats = dict(line.split(": ") for line in text.strip().splitlines())
    prefix = f"cluster.fallback_{model}.ext_proc."
    return int(stats[prefix + "streams_started"]), int(stats[prefix + "stream_msgs_sent"])


def test_first_attempt_to_the_primary_costs_no_attempt_message(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    # The request was built for the primary: its first attempt needs nothing from the service.
    streams, msgs = attempt_streams(gw, "fb-cost")
    for i in range(5):
        assert call("openai", gw.url, "fb-cost", f"first time {i}")[0].startswith("Hello from mock anthropic")
    assert attempt_streams(gw, "fb-cost") == (streams, msgs)
    # An attempt to another target: one stream, one message (the request headers; its body goes in the answer).
    fb_mocks["anthropic"].set_fault(Fault(status=503, times=1))
    assert call("openai", gw.url, "fb-cost", "second target")[0].startswith("Hello from mock openai")
    assert attempt_streams(gw, "fb-cost") == (streams + 1, msgs + 1)


def test_single_target_model_is_not_a_fallback_route(gw: Gateway, fb_mocks: dict[str, MockProvider]) -> None:
    fb_mocks["anthropic"].set_fault(Fault(status=503))
    with pytest.raises(openai.InternalServerError) as exc:
        call("openai", gw.url, "single", "no fallback here")
    assert exc.value.status_code == 503
    assert "x-ai-gateway-attempts" not in exc.value.response.headers
    assert counts(fb_mocks) == {"openai": 0, "anthropic": 1, "gemini": 0, "openai-b": 0}


# ----------------------------------------------------------------------------------------------- reload
def test_reload_changing_targets_drops_no_request(fb_mocks: dict[str, MockProvider]) -> None:
    def text(primary: str) -> str:
        return f"""
version: "1.0"
timeout: "8s"
models:
  - name: "moving"
    targets:
      - {{provider: "{primary}", model: "{MODELS[primary]}"}}
      - {{provider: "openai", model: "{MODELS["openai"]}"}}
"""

    with tempfile.TemporaryDirectory() as tmp:
        g = start_gateway(Path(tmp), fb_mocks, text("anthropic"), workers=2)
        try:
            results: list[tuple[int, str]] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=20) as cl:
                    while not stop.is_set():
                        r = cl.post(g.url + "/anthropic/v1/messages", headers={"anthropic-version": "2023-06-01"},
                                    json={"model": "moving", "max_tokens": 32,
                                          "messages": [{"role": "user", "content": "across the reload"}]})  # fmt: skip
                        results.append((r.status_code, r.headers.get("x-ai-gateway-served-by", "")))

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while not results and time.monotonic() < deadline:
                time.sleep(0.05)
            g.config_path.write_text(text("gemini"))  # the primary changes: Envoy's cluster changes
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and not any(s.startswith("gemini/") for _, s in results[-20:]):
                time.sleep(0.2)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(30)
            assert any(s.startswith("gemini/") for _, s in results[-20:]), "the new targets never answered"
            assert "hot-restarting" in g.log_text()
            assert Counter(code for code, _ in results) == Counter({200: len(results)}), Counter(results)
        finally:
            assert stop_gateway(g) == 0
