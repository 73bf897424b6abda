"""OpenTelemetry traces and GenAI metrics for the service, exported over OTLP/gRPC (``docs/tracing.md``).

One span per exchange, the child of the span Envoy's ext_proc filter opened for the stream (Envoy sends its W3C
``traceparent`` in the stream's initial metadata), with the GenAI semantic-convention attributes; and the
convention's metrics (``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``,
``gen_ai.server.time_to_first_token``, ``gen_ai.server.time_per_output_token``) with its bucket boundaries.

Nothing here runs unless the config enables tracing: the servicer holds no ``Tracer`` then, and the OpenTelemetry
SDK is not even imported. With tracing on, the request path only keeps references (the stream's ``traceparent``, the
request body, the provider's answer when content capture is on); spans and metric points are made after the
exchange has answered, in a callback of the event loop, and the SDK's batch processor exports them from its own
thread. Prompts and completions go into spans only with ``capture_content`` (off by default), credentials masked.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from typing import Any

import orjson

from extproc.core.exchange import Exchange
from extproc.core.telemetry import TelemetrySettings
from extproc.observability import otlp
from extproc.observability.logs import redact
from extproc.translation import canonical as c
from extproc.translation.errors import GatewayError
from extproc.translation.formats.contract import COUNT_TOKENS, StreamOptions

log = logging.getLogger("extproc")

# gen_ai.provider.name: the conventions' well-known values by provider type; other types as they are
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "vertex": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
}
# The semantic conventions' advisory bucket boundaries (gen-ai-metrics.md)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
CONTENT_LIMIT = 64 * 1024  # characters of captured content per attribute

# Credentials in free text (prompts and answers), beyond ``logs.redact``'s ``key: value`` shapes
_TOKEN_RE = re.compile(
    r"(?:sk-[A-Za-z0-9_\-]{12,}|AIza[A-Za-z0-9_\-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*)"
)


def mask(text: str) -> str:
    """A captured prompt or answer with anything that looks like a credential masked."""
    text = redact(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")
    return _TOKEN_RE.sub("[REDACTED]", text)


def operation(ex: Exchange) -> str:
    """gen_ai.operation.name: ``generate_content`` for Gemini clients, ``chat`` for the other generation formats."""
    if ex.endpoint is not None and ex.endpoint.kind == COUNT_TOKENS:
        return "count_tokens"
    return "generate_content" if ex.record.client == "gemini" else "chat"


def provider_name(ex: Exchange) -> str | None:
    """gen_ai.provider.name of the provider that answered (a fallback's: the target Envoy says served it)."""
    served = ex.record.served_by
    if served:
        p = ex.config.providers.get(served.partition("/")[0])
        if p is not None:
            return PROVIDER_NAMES.get(p.type, p.type)
    target = ex.target
    if target is None:
        return None
    ptype = target.provider.type
    return PROVIDER_NAMES.get(ptype, ptype)


def request_of(ex: Exchange, body: bytes | None) -> c.Request | None:
    """The canonical request: the exchange's own (translated), else the body parsed again (pass-through)."""
    if ex.request is not None:
        return ex.request
    if body is None or ex.client is None or ex.endpoint is None or ex.endpoint.kind == COUNT_TOKENS:
        return None
    try:
        return ex.client.parse_request(body, model=ex.record.model, stream=ex.record.stream)
    except (GatewayError, ValueError, TypeError, KeyError, AttributeError):
        return None


def attributes(ex: Exchange, req: c.Request | None, duration: float) -> dict[str, Any]:
    """The span's attributes (GenAI semantic conventions, plus ``ai_gateway.*`` for what they have no name for)."""
    rec = ex.record
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation(ex),
        "ai_gateway.client.format": rec.client,
        "http.route": rec.path,
        "gen_ai.request.model": rec.model or "",
    }
    if rec.request_id:
        attrs["ai_gateway.request_id"] = rec.request_id
    prov = provider_name(ex)
    if prov is not None:
        attrs["gen_ai.provider.name"] = prov
    if ex.target is not None:
        attrs["ai_gateway.provider"] = rec.provider or ex.target.provider.name
        attrs["ai_gateway.upstream.model"] = ex.target.model
        attrs["ai_gateway.passthrough"] = ex.target.passthrough
        if rec.upstream_path:
            attrs["ai_gateway.upstream.path"] = rec.upstream_path
    if rec.fallback:  # a model with several targets: who answered, after how many attempts
        attrs["ai_gateway.attempts"] = rec.attempts
        if rec.served_by:
            attrs["ai_gateway.served_by"] = rec.served_by
            attrs["ai_gateway.upstream.model"] = rec.served_by.partition("/")[2]
    attrs["ai_gateway.stream"] = rec.stream
    if rec.status:
        attrs["http.response.status_code"] = rec.status
    if req is not None:
        if req.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = req.max_tokens
        if req.temperature is not None:
            attrs["gen_ai.request.temperature"] = float(req.temperature)
        if req.top_p is not None:
            attrs["gen_ai.request.top_p"] = float(req.top_p)
        if req.stop:
            attrs["gen_ai.request.stop_sequences"] = list(req.stop)
    if rec.response_model:
        attrs["gen_ai.response.model"] = rec.response_model
    if rec.response_id:
        attrs["gen_ai.response.id"] = rec.response_id
    if rec.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [rec.finish_reason]
    u = rec.usage
    if u is not None:
        attrs["gen_ai.usage.input_tokens"] = u.input_tokens
        attrs["gen_ai.usage.output_tokens"] = u.output_tokens
        if u.cached_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = u.cached_tokens
        if u.cache_creation_tokens:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = u.cache_creation_tokens
        if u.reasoning_tokens:
            attrs["ai_gateway.usage.reasoning_tokens"] = u.reasoning_tokens
    if rec.ttft is not None:
        attrs["ai_gateway.time_to_first_token"] = rec.ttft
    attrs["ai_gateway.duration"] = duration
    if rec.error_type:
        attrs["error.type"] = rec.error_type
    return attrs


# ------------------------------------------------------------------------------------------------ content capture
def _parts(parts: list[c.Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, c.Text):
            out.append({"type": "text", "content": p.text})
        elif isinstance(p, c.ToolCall):
            out.append({"type": "tool_call", "id": p.id, "name": p.name, "arguments": p.arguments})
        elif isinstance(p, c.ToolResult):
            out.append({"type": "tool_call_response", "id": p.tool_call_id, "response": _parts(p.content)})
        elif isinstance(p, c.Thinking):
            if p.text:
                out.append({"type": "reasoning", "content": p.text})
        elif isinstance(p, c.Image | c.Document):  # never the bytes: a media type, or the URL
            item: dict[str, Any] = {"type": "uri" if p.url else "blob", "modality": "image"}
            if isinstance(p, c.Document):
                item["modality"] = "document"
            if p.media_type:
                item["mime_type"] = p.media_type
            if p.url and not p.url.startswith("data:"):
                item["uri"] = p.url
            out.append(item)
    return out


def input_messages(req: c.Request) -> list[dict[str, Any]]:
    return [{"role": m.role, "parts": _parts(m.parts)} for m in req.messages]


def output_messages(ex: Exchange, chunks: list[bytes]) -> list[dict[str, Any]] | None:
    """What the provider answered (read from its own bytes: the same for pass-through and translation)."""
    handler = ex.handler
    fmt = handler.provider_fmt if handler is not None else None
    if fmt is None or not chunks or not 200 <= ex.record.status < 300 or ex.endpoint is None:
        return None
    if ex.endpoint.kind == COUNT_TOKENS:
        return None
    try:
        if handler is not None and handler.streamed:
            return [_from_events(fmt.stream_decoder(StreamOptions()), chunks)]
        resp = fmt.parse_response(b"".join(chunks))
    except (GatewayError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return [{"role": "assistant", "parts": _parts(resp.parts), "finish_reason": resp.finish_reason}]


def _from_events(decoder: Any, chunks: list[bytes]) -> dict[str, Any]:
    events: list[c.Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for ev in events:
        if isinstance(ev, c.TextDelta):
            text.append(ev.text)
        elif isinstance(ev, c.ToolCallStart):
            calls[ev.index] = {"type": "tool_call", "id": ev.id, "name": ev.name, "arguments": ""}
        elif isinstance(ev, c.ToolCallDelta) and ev.index in calls:
            calls[ev.index]["arguments"] += ev.arguments
        elif isinstance(ev, c.Finish):
            finish = ev.reason
    parts: list[dict[str, Any]] = [{"type": "text", "content": "".join(text)}] if text else []
    parts.extend(calls[i] for i in sorted(calls))
    return {"role": "assistant", "parts": parts, "finish_reason": finish or "stop"}


def _json(value: Any) -> str:
    text = mask(orjson.dumps(value).decode())
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "...(truncated)"


def content_attributes(ex: Exchange, req: c.Request | None, chunks: list[bytes] | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if req is not None:
        if req.system:
            attrs["gen_ai.system_instructions"] = _json(_parts(req.system))
        attrs["gen_ai.input.messages"] = _json(input_messages(req))
    out = output_messages(ex, chunks or [])
    if out is not None:
        attrs["gen_ai.output.messages"] = _json(out)
    return attrs


# ------------------------------------------------------------------------------------------------ the SDK
class Tracer:
    """The service's OpenTelemetry: the SDK's sampler, id generator, ``ReadableSpan`` and ``BatchSpanProcessor``,
    exporting over OTLP/gRPC with ``otlp.GrpcSpanExporter``; with ``metrics``, the GenAI histograms
    (``otlp.Histograms``). ``finish`` is all the servicer calls, once per ended exchange.

    Each span is made whole when its exchange has ended, as a ``ReadableSpan`` handed to the batch processor: the
    SDK's ``Span`` API (a lock, a context and a type check per attribute while the span is "live") cost ~60 us per
    span of ours, this ~10 us; the attributes are ours, all of OTLP's primitive types already (``attributes``).
    ``span_exporter``, ``export_metrics``: for tests."""

    def __init__(self, settings: TelemetrySettings, *, span_exporter: Any = None, export_metrics: bool = True) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.trace.sampling import (
            ALWAYS_OFF,
            ALWAYS_ON,
            ParentBased,
            Sampler,
            TraceIdRatioBased,
        )
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.settings = settings
        self.capture_content = settings.capture_content
        attrs = {
            "service.name": settings.extproc_service_name,
            # workers are separate processes: each reports its own cumulative metrics
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        }
        resource = Resource.create(attrs)
        base = settings.sampler.removeprefix("parentbased_")
        inner: Sampler = TraceIdRatioBased(settings.ratio)
        if base in ("always_on", "always_off"):
            inner = ALWAYS_ON if base == "always_on" else ALWAYS_OFF
        self.parent_based = settings.sampler.startswith("parentbased_")
        # always_on / always_off decide without the SDK's sampler (a context made and a call per span: ~5 us)
        self.always = {"always_on": True, "always_off": False}.get(base) if not self.parent_based else None
        sampler = ParentBased(inner) if self.parent_based else inner
        self.sampler = sampler
        self.provider = TracerProvider(resource=resource, sampler=sampler)  # tests make spans with it too
        target, tls = settings.service_target, settings.tls and not settings.relay  # Envoy's relay does the TLS
        if span_exporter is None:
            span_exporter = otlp.span_exporter(target, tls, dict(resource.attributes), SCOPE)
        self.processor = BatchSpanProcessor(span_exporter)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer(SCOPE)
        self.resource = resource
        self.scope = InstrumentationScope(SCOPE)
        self.ids = RandomIdGenerator()
        self.readable = ReadableSpan
        self.span_context, self.flags = trace.SpanContext, trace.TraceFlags
        self.sampled = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.context_with = lambda sc: trace.set_span_in_context(trace.NonRecordingSpan(sc))
        self.kind = trace.SpanKind.CLIENT
        self.error_status = trace.Status(trace.StatusCode.ERROR)
        self.unset_status = trace.Status(trace.StatusCode.UNSET)
        self.histograms: otlp.Histograms | None = None
        self.metrics_thread: otlp.MetricsThread | None = None
        if settings.metrics:
            self.histograms = otlp.Histograms(dict(resource.attributes), SCOPE, instruments())
            if export_metrics:
                self.metrics_thread = otlp.MetricsThread(self.histograms, target, tls)
        self._keys: dict[tuple[str, str, str | None, str | None], tuple[tuple[str, str], ...]] = {}
        self._pending: list[tuple[Exchange, str | None, bytes | None, list[bytes] | None, float, int]] = []
        self._scheduled = False

    # -------------------------------------------------------------------------------------------- per exchange
    def finish(self, ex: Exchange, trace: str | None, body: bytes | None, chunks: list[bytes] | None) -> None:
        """An ended exchange: its span and metric points are made after the current event-loop callback (which
        writes the exchange's last answer), never before it."""
        if not ex.record.counted:
            return
        self._pending.append((ex, trace, body, chunks, time.monotonic(), time.time_ns()))
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.drain)
            self._scheduled = True
        except RuntimeError:  # no event loop (tests, tools): now
            self.drain()

    def drain(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for item in pending:
            try:
                self._record(*item)
            except Exception:
                log.exception("tracing request %s failed", item[0].record.request_id)

    def _record(
        self, ex: Exchange, trace: str | None, body: bytes | None, chunks: list[bytes] | None, now: float, end: int
    ) -> None:
        rec = ex.record
        duration = max(0.0, now - rec.started)
        op = operation(ex)
        if self.histograms is not None:
            self._points(ex, op, duration)
        name = f"{op} {rec.model}" if rec.model else op
        parent = self._parent(trace) if trace else None
        if parent is not None and self.parent_based:  # what ParentBased decides, without making a context
            if not parent.trace_flags.sampled:
                return
            trace_id, trace_state = parent.trace_id, parent.trace_state
        elif self.always is not None:  # what ALWAYS_ON / ALWAYS_OFF decide
            if not self.always:
                return
            trace_id = parent.trace_id if parent is not None else self.ids.generate_trace_id()
            trace_state = parent.trace_state if parent is not None else None
        else:
            trace_id = parent.trace_id if parent is not None else self.ids.generate_trace_id()
            decision = self.sampler.should_sample(
                self.context_with(parent) if parent is not None else None, trace_id, name, self.kind
            )
            if not decision.decision.is_sampled():
                return
            trace_state = decision.trace_state
        req = request_of(ex, body)
        attrs = attributes(ex, req, duration)
        if self.capture_content:
            attrs.update(content_attributes(ex, req, chunks))
        context = self.span_context(trace_id, self.ids.generate_span_id(), False, self.sampled, trace_state)
        span = self.readable(
            name, context, parent, self.resource, attrs, kind=self.kind, instrumentation_scope=self.scope,
            status=self.error_status if rec.error_type else self.unset_status,
            start_time=end - int(duration * 1e9), end_time=end,
        )  # fmt: skip
        self.processor.on_end(span)

    def _parent(self, traceparent: str) -> Any:
        """Envoy's span from a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), None if malformed."""
        parts = traceparent.strip().split("-")
        if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
            return None
        try:
            trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
        except ValueError:
            return None
        if not trace_id or not span_id:
            return None
        return self.span_context(trace_id, span_id, True, self.flags(flags))

    def _points(self, ex: Exchange, op: str, duration: float) -> None:
        rec = ex.record
        h = self.histograms
        assert h is not None
        prov = provider_name(ex)
        names = (op, rec.model_label, prov, rec.response_model)
        key = self._keys.get(names)
        if key is None:  # the attribute set of a series, made once (bounded: response models come from providers)
            common = [("gen_ai.operation.name", op), ("gen_ai.request.model", rec.model_label)]
            if prov is not None:
                common.append(("gen_ai.provider.name", prov))
            if rec.response_model:
                common.append(("gen_ai.response.model", rec.response_model))
            if len(self._keys) >= 4096:
                self._keys.clear()
            key = self._keys[names] = tuple(common)
        h.record(
            "gen_ai.client.operation.duration",
            duration,
            (*key, ("error.type", rec.error_type)) if rec.error_type else key,
        )
        u = rec.usage
        if u is not None:
            h.record("gen_ai.client.token.usage", u.input_tokens, (*key, ("gen_ai.token.type", "input")))
            h.record("gen_ai.client.token.usage", u.output_tokens, (*key, ("gen_ai.token.type", "output")))
        if rec.ttft is not None and not rec.error_type:
            h.record("gen_ai.server.time_to_first_token", rec.ttft, key)
            if u is not None and u.output_tokens > 1:
                h.record("gen_ai.server.time_per_output_token", (duration - rec.ttft) / (u.output_tokens - 1), key)

    def shutdown(self) -> None:
        """Export what is pending (worker shutdown)."""
        self.drain()
        self.provider.shutdown()
        if self.metrics_thread is not None:
            self.metrics_thread.stop()


SCOPE = "ai-gateway"


def instruments() -> list[otlp.Histogram]:
    """The GenAI semantic-convention histograms, with the conventions' units and bucket boundaries."""
    return [
        otlp.Histogram("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used", TOKEN_BUCKETS),
        otlp.Histogram("gen_ai.client.operation.duration", "s", "GenAI operation duration", DURATION_BUCKETS),
        otlp.Histogram(
            "gen_ai.server.time_to_first_token", "s", "Time to generate first token for successful responses",
            TTFT_BUCKETS,
        ),
        otlp.Histogram(
            "gen_ai.server.time_per_output_token", "s",
            "Time per output token generated after the first token for successful responses", TPOT_BUCKETS,
        ),
    ]  # fmt: skip
