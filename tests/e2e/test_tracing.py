"""OpenTelemetry end to end: a real Envoy and the service export to a test OTLP receiver in this process.

For requests from the official SDKs with a client ``traceparent``: Envoy's spans (ingress, the ext_proc stream, the
provider attempt) and the service's span arrive in the client's trace with the right parents, the service's span
carries the GenAI semantic-convention attributes and the token counts, streams carry time to first token, errors set
``error.type``; the provider gets the trace context; no span holds a prompt, an answer or a credential unless content
capture is on, and then credentials are masked; the GenAI metrics arrive with the conventions' buckets.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import KEYS, MODELS, Gateway, free_port, gateway_config, start_gateway, stop_gateway
from tests.e2e.sdk import CLIENT_KEY, anthropic_client, openai_client
from tests.mocks.otlp import OtlpReceiver, ReceivedSpan
from tests.mocks.providers import MockProvider

# The SDK exports batches every 100 ms and metrics every 300 ms here (defaults: 5 s and 60 s); Envoy flushes every 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
SERVICE = "ai-gw-test"
SECRET_IN_PROMPT = "sk-proj-" + "Zx9" * 10  # a credential a user pasted into a prompt


# A model with two targets: the first refuses connections (gateway_config's "dead" provider), the second answers.
FALLBACK = f"""  - name: "fb-traced"
    targets:
      - {{provider: "dead", model: "{MODELS["openai"]}"}}
      - {{provider: "anthropic", model: "{MODELS["anthropic"]}"}}
"""


def tracing_config(endpoint: str, capture: bool, relay: str | None = None) -> str:
    return (
        gateway_config(free_port())
        + FALLBACK
        + (
            f'tracing:\n  endpoint: "{endpoint}"\n  service_name: "{SERVICE}"\n'
            f"  capture_content: {'true' if capture else 'false'}\n" + (f'  relay: "unix:{relay}"\n' if relay else "")
        )
    )


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def traced(mocks: dict[str, MockProvider], otlp: OtlpReceiver) -> Iterator[Gateway]:
    # The service exports through Envoy's relay socket here (as in docker compose and Kubernetes, where it has no
    # network); test_content_capture_masks_credentials's gateway exports to the collector directly.
    with tempfile.TemporaryDirectory(prefix="ai-gw-tr-") as tmp:
        relay = f"{tmp}/otlp.sock"
        gw = start_gateway(Path(tmp), mocks, tracing_config(otlp.endpoint, False, relay), extra_env=FAST_EXPORT)
        yield gw
        stop_gateway(gw)


def new_trace() -> tuple[str, str, str]:
    """A client's trace id, its span id and the ``traceparent`` header (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def whole_trace(otlp: OtlpReceiver, trace_id: str, service_spans: int = 1) -> list[ReceivedSpan]:
    """The trace once Envoy's ingress, ext_proc and provider spans and the service's span(s) have all arrived."""

    def complete(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.trace(trace_id)
        names = [s.name for s in spans]
        ours = [s for s in spans if s.service == f"{SERVICE}-extproc"]
        envoy = "ingress" in names and any(n.startswith("router ") for n in names)
        if envoy and any("ExternalProcessor.Process" in n for n in names) and len(ours) >= service_spans:
            return spans
        return None

    return otlp.wait_for(complete)


def one(spans: list[ReceivedSpan], pred) -> ReceivedSpan:
    found = [s for s in spans if pred(s)]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_translated_request_is_one_trace(traced: Gateway, otlp: OtlpReceiver) -> None:
    """OpenAI SDK -> an Anthropic model: Envoy's spans and the service's in the client's trace, parented right,
    with the GenAI attributes and the tokens the SDK saw; the provider got the trace context."""
    trace_id, client_span, header = new_trace()
    client = openai_client(traced.url, default_headers={"traceparent": header})
    r = client.chat.completions.create(
        model=MODELS["anthropic"],
        messages=[{"role": "user", "content": "trace me"}],
        max_completion_tokens=50,
        temperature=0.25,
    )
    spans = whole_trace(otlp, trace_id)
    ingress = one(spans, lambda s: s.name == "ingress")
    assert ingress.parent_id == client_span and ingress.service == SERVICE
    ext = one(spans, lambda s: "ExternalProcessor.Process" in s.name)
    assert ext.parent_id == ingress.span_id
    router = one(spans, lambda s: s.name.startswith("router "))
    assert router.parent_id == ingress.span_id and "provider_anthropic" in router.name
    ours = one(spans, lambda s: s.service == f"{SERVICE}-extproc")
    assert ours.parent_id == ext.span_id  # the service's span is the child of Envoy's ext_proc stream span
    assert ours.name == f"chat {MODELS['anthropic']}"
    a = ours.attrs
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == MODELS["anthropic"]
    assert a["ai_gateway.client.format"] == "openai"
    assert a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.request.temperature"] == 0.25
    assert r.usage is not None
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
    )
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.id"] == r.id
    assert a["gen_ai.response.model"]  # what the provider says it ran
    assert "error.type" not in a and ours.span.status.code != 2
    # The provider received the router span's context (Envoy propagates it upstream).
    sent = traced.mocks["anthropic"].last().headers["traceparent"]
    assert sent.split("-")[1] == trace_id and sent.split("-")[2] == router.span_id


def test_a_clients_unsampled_trace_is_not_recorded(traced: Gateway, otlp: OtlpReceiver) -> None:
    """The default sampler follows the parent: a client ``traceparent`` flagged not sampled (00) gets no span from
    Envoy or the service; the sampled request sent after it arrives whole, so the first one's would have too."""
    unsampled = secrets.token_hex(16)
    client = openai_client(traced.url, default_headers={"traceparent": f"00-{unsampled}-{secrets.token_hex(8)}-00"})
    client.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": "quiet"}])
    trace_id, _, header = new_trace()
    client = openai_client(traced.url, default_headers={"traceparent": header})
    client.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": "loud"}])
    whole_trace(otlp, trace_id)
    assert otlp.trace(unsampled) == []
    # and the service was asked (Envoy sent the stream its unsampled context): the provider saw the client's trace
    assert any(
        r.headers.get("traceparent", "").split("-")[1:2] == [unsampled] for r in traced.mocks["anthropic"].requests
    )


def test_stream_span_has_time_to_first_token(traced: Gateway, otlp: OtlpReceiver) -> None:
    """Anthropic SDK streaming from an OpenAI model: the span carries TTFT (within the span's duration) and usage."""
    trace_id, _, header = new_trace()
    client = anthropic_client(traced.url, default_headers={"traceparent": header})
    with client.messages.stream(
        model=MODELS["openai"], max_tokens=40, messages=[{"role": "user", "content": "stream me"}]
    ) as s:
        final = s.get_final_message()
    ours = one(whole_trace(otlp, trace_id), lambda s: s.service == f"{SERVICE}-extproc")
    a = ours.attrs
    assert a["ai_gateway.stream"] is True and a["ai_gateway.client.format"] == "anthropic"
    assert a["gen_ai.provider.name"] == "openai"
    duration = (ours.span.end_time_unix_nano - ours.span.start_time_unix_nano) / 1e9
    assert 0 < a["ai_gateway.time_to_first_token"] <= duration
    assert a["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert a["gen_ai.response.finish_reasons"] == ["stop"]


def test_error_sets_error_type(traced: Gateway, otlp: OtlpReceiver) -> None:
    trace_id, _, header = new_trace()
    client = openai_client(traced.url, default_headers={"traceparent": header})
    with contextlib.suppress(Exception):  # the SDK's RateLimitError: the span is what this test checks
        client.chat.completions.create(model=MODELS["gemini"], messages=[{"role": "user", "content": "ERROR 429"}])
    ours = one(whole_trace(otlp, trace_id), lambda s: s.service == f"{SERVICE}-extproc")
    assert ours.attrs["error.type"] == "rate_limit"
    assert ours.attrs["http.response.status_code"] == 429
    assert ours.span.status.code == 2  # STATUS_CODE_ERROR


def test_no_content_in_spans_by_default(traced: Gateway, otlp: OtlpReceiver) -> None:
    """Nothing of the prompt, the answer or any credential in any span (Envoy's or ours) without the opt-in."""
    trace_id, _, header = new_trace()
    client = openai_client(traced.url, default_headers={"traceparent": header})
    prompt = f"my secret prompt with {SECRET_IN_PROMPT}"
    r = client.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": prompt}])
    spans = whole_trace(otlp, trace_id)
    dump = json.dumps([[s.name, s.attrs] for s in spans])
    answer = r.choices[0].message.content
    assert answer and answer not in dump
    for needle in ("secret prompt", SECRET_IN_PROMPT, CLIENT_KEY, *KEYS.values()):
        assert needle not in dump
    ours = one(spans, lambda s: s.service == f"{SERVICE}-extproc")
    assert not {k for k in ours.attrs if k in ("gen_ai.input.messages", "gen_ai.output.messages")}


def test_genai_metrics_with_convention_buckets(traced: Gateway, otlp: OtlpReceiver) -> None:
    """The semantic-convention metrics arrive over OTLP, with the conventions' bucket boundaries and attributes."""
    client = openai_client(traced.url)
    client.chat.completions.create(model=MODELS["anthropic"], messages=[{"role": "user", "content": "metrics"}])
    with anthropic_client(traced.url).messages.stream(
        model=MODELS["openai"], max_tokens=40, messages=[{"role": "user", "content": "metrics stream"}]
    ) as s:
        s.get_final_message()
    want = {
        "gen_ai.client.token.usage": [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                                      16777216, 67108864],
        "gen_ai.client.operation.duration": [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                                             20.48, 40.96, 81.92],
        "gen_ai.server.time_to_first_token": [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                              2.5, 5.0, 7.5, 10.0],
        "gen_ai.server.time_per_output_token": [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                                2.5],
    }  # fmt: skip

    def all_there(r: OtlpReceiver) -> dict[str, list] | None:
        seen: dict[str, list] = {}
        for m in r.metrics:
            if m.metric.name in want and m.service == f"{SERVICE}-extproc":
                seen.setdefault(m.metric.name, []).extend(m.metric.histogram.data_points)
        return seen if set(seen) == set(want) else None

    seen = otlp.wait_for(all_there)
    for name, points in seen.items():
        assert all(list(p.explicit_bounds) == want[name] for p in points), name
    tokens = {
        (attr["gen_ai.token.type"], attr["gen_ai.provider.name"])
        for p in seen["gen_ai.client.token.usage"]
        for attr in [{kv.key: kv.value.string_value for kv in p.attributes}]
    }
    assert {("input", "anthropic"), ("output", "anthropic"), ("input", "openai"), ("output", "openai")} <= tokens
    ops = {kv.value.string_value for p in seen["gen_ai.client.operation.duration"] for kv in p.attributes
           if kv.key == "gen_ai.operation.name"}  # fmt: skip
    assert ops == {"chat"}


def test_content_capture_masks_credentials(mocks: dict[str, MockProvider], otlp: OtlpReceiver) -> None:
    """With capture on, the span holds the prompt and the answer (GenAI message JSON); a credential in the prompt is
    still masked, and no key of the gateway's or the client's appears."""
    with tempfile.TemporaryDirectory(prefix="ai-gateway-tracing-") as tmp:
        gw = start_gateway(Path(tmp), mocks, tracing_config(otlp.endpoint, True), workers=1, extra_env=FAST_EXPORT)
        try:
            trace_id, _, header = new_trace()
            client = openai_client(gw.url, default_headers={"traceparent": header})
            prompt = f"use api_key={SECRET_IN_PROMPT} and also {SECRET_IN_PROMPT} please"
            r = client.chat.completions.create(
                model=MODELS["anthropic"],
                messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}],
            )
            ours = one(whole_trace(otlp, trace_id), lambda s: s.service == f"{SERVICE}-extproc")
        finally:
            stop_gateway(gw)
    a = ours.attrs
    inputs = json.loads(a["gen_ai.input.messages"])
    assert inputs[0]["role"] == "user"
    text = inputs[0]["parts"][0]["content"]
    assert text.startswith("use api_key=") and "please" in text
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    outputs = json.loads(a["gen_ai.output.messages"])
    assert outputs[0]["parts"][0]["content"] == r.choices[0].message.content.replace(SECRET_IN_PROMPT, "[REDACTED]")
    dump = json.dumps(a)
    for needle in (SECRET_IN_PROMPT, CLIENT_KEY, *KEYS.values()):
        assert needle not in dump
    assert "[REDACTED]" in text


def test_fallback_span_names_the_target_that_answered(traced: Gateway, otlp: OtlpReceiver) -> None:
    """A model with several targets: Envoy's router makes a span per attempt, the service's span names the target
    that answered and the number of attempts."""
    trace_id, _, header = new_trace()
    client = openai_client(traced.url, default_headers={"traceparent": header})
    client.chat.completions.create(model="fb-traced", messages=[{"role": "user", "content": "fall back"}])

    def with_attempts(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.trace(trace_id)
        ours = [s for s in spans if s.service == f"{SERVICE}-extproc"]
        routers = [s for s in spans if s.name.startswith("router ")]
        return spans if ours and len(routers) >= 2 else None

    spans = otlp.wait_for(with_attempts)
    ours = one(spans, lambda s: s.service == f"{SERVICE}-extproc")
    a = ours.attrs
    assert a["gen_ai.provider.name"] == "anthropic" and a["ai_gateway.provider"] == "anthropic"
    assert a["ai_gateway.served_by"] == f"anthropic/{MODELS['anthropic']}" and a["ai_gateway.attempts"] == 2
    assert a["gen_ai.usage.output_tokens"] > 0


def test_grpcio_transport_parents_the_span_too(mocks: dict[str, MockProvider], otlp: OtlpReceiver) -> None:
    """With the grpc.aio transport (``AI_GATEWAY_GRPC=grpcio``) the span is Envoy's ext_proc span's child as well
    (read from the call's invocation metadata)."""
    with tempfile.TemporaryDirectory(prefix="ai-gateway-tracing-") as tmp:
        env = {**FAST_EXPORT, "AI_GATEWAY_GRPC": "grpcio"}
        gw = start_gateway(Path(tmp), mocks, tracing_config(otlp.endpoint, False), workers=1, extra_env=env)
        try:
            trace_id, _, header = new_trace()
            client = anthropic_client(gw.url, default_headers={"traceparent": header})
            client.messages.create(model=MODELS["gemini"], max_tokens=20, messages=[{"role": "user", "content": "hi"}])
            spans = whole_trace(otlp, trace_id)
        finally:
            stop_gateway(gw)
    ext = one(spans, lambda s: "ExternalProcessor.Process" in s.name)
    ours = one(spans, lambda s: s.service == f"{SERVICE}-extproc")
    assert ours.parent_id == ext.span_id
    assert ours.attrs["gen_ai.provider.name"] == "gcp.gemini" and ours.attrs["ai_gateway.client.format"] == "anthropic"


def test_standard_variables_alone_turn_tracing_on(mocks: dict[str, MockProvider], otlp: OtlpReceiver) -> None:
    """No tracing: in the YAML, only OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_SERVICE_NAME: Envoy (bootstrap rendered by
    the launcher) and the workers (their own environment) both trace, under that service name."""
    env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_SERVICE_NAME": "from-env"}
    with tempfile.TemporaryDirectory(prefix="ai-gateway-tracing-") as tmp:
        gw = start_gateway(Path(tmp), mocks, gateway_config(free_port()), workers=1, extra_env=env)
        try:
            trace_id, _, header = new_trace()
            client = openai_client(gw.url, default_headers={"traceparent": header})
            client.chat.completions.create(model=MODELS["openai"], messages=[{"role": "user", "content": "env"}])

            def both(r: OtlpReceiver) -> list[ReceivedSpan] | None:
                spans = r.trace(trace_id)
                services = {s.service for s in spans}
                return spans if {"from-env", "from-env-extproc"} <= services else None

            spans = otlp.wait_for(both)
        finally:
            stop_gateway(gw)
    ours = one(spans, lambda s: s.service == "from-env-extproc")
    assert ours.attrs["gen_ai.provider.name"] == "openai" and ours.attrs["ai_gateway.passthrough"] is True
