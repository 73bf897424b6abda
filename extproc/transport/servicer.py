"""The ext_proc ExternalProcessor service: protobuf in, protobuf out, between a transport and the ``Exchange``.

It turns each ext_proc ``ProcessingRequest`` into a call on the request's ``Exchange`` and the returned ``Forward``
or ``Reply`` into a ``ProcessingResponse``. One bidi stream is one HTTP request, so all per-request state lives in
that stream's ``Exchange``. The transport is ``grpc_wire`` (``ProcessCall``, bytes in and out) or grpc.aio
(``ExternalProcessor``). Protobuf messages are upb-backed (``xds-protos``); header mutations come from cached bytes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import partial
from time import monotonic, perf_counter
from typing import Any

import grpc
import orjson
from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf.message import DecodeError

from extproc.core import governance
from extproc.core.actions import CONTINUE, Forward, Reply, ServeMetrics
from extproc.core.attempt import Attempt
from extproc.core.contract import METADATA_NAMESPACE
from extproc.core.exchange import Exchange, ExchangeError, Gateway
from extproc.core.record import Record
from extproc.observability.logs import redact
from extproc.observability.metrics import Metrics
from extproc.observability.tracing import Tracer
from extproc.translation.errors import GatewayError
from extproc.translation.media import FetchMedia
from extproc.transport.fetch import fetch_all
from extproc.transport.governor import Governor, RedisStore
from extproc.transport.grpc_wire import CallError

log = logging.getLogger("extproc")

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_MODES = {"NONE": ProcessingMode.NONE, "STREAMED": ProcessingMode.STREAMED, "BUFFERED": ProcessingMode.BUFFERED}
_REPLACE = pb.CommonResponse.ResponseStatus.CONTINUE_AND_REPLACE


def _DEBUG() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def _snippet(body: bytes, limit: int = 4096) -> str:
    """A body for ``--verbose`` debug lines: credentials masked, long bodies cut."""
    text = redact(body[:limit]).decode("utf-8", "replace")
    return text + f"... ({len(body)} bytes)" if len(body) > limit else text


def _headers(msg: pb.HttpHeaders) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in msg.headers.headers:
        out[h.key] = h.raw_value.decode("latin-1") if h.raw_value else h.value
    return out


_NO_HEADERS: dict[str, str] = {}


def _status(msg: pb.HttpHeaders) -> dict[str, str]:
    """Only ``:status`` (an attempt reads nothing else of its answer)."""
    for h in msg.headers.headers:
        if h.key == ":status":
            return {":status": h.raw_value.decode("latin-1") if h.raw_value else h.value}
    return {}


_BLOBS: dict[tuple[str, str], bytes] = {}


def _header_blob(key: str, value: str) -> bytes:
    """A serialized ``HeaderMutation`` setting one header. Cached: building the protobuf from Python costs ~2 us per
    header, merging these bytes a tenth of that (``benchmarks/README.md``). Bounded: at most 4096 values of at most
    256 characters (content-length values vary with the body)."""
    blob = _BLOBS.get((key, value))
    if blob is None:
        if len(value) > 256:  # long values (a client's query string in a path) are built each time, never kept
            return _one_header(key, value)
        if len(_BLOBS) >= 4096:
            _BLOBS.clear()
        blob = _BLOBS[(key, value)] = _one_header(key, value)
    return blob


def _one_header(key: str, value: str) -> bytes:
    """``HeaderMutation{set_headers: [{header: {key, raw_value}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]}``,
    encoded by hand (a tenth of building the messages: values that change per answer, such as a key's remaining
    budget, miss the cache every time). ``tests/unit/test_servicer.py`` checks it against protobuf's own encoding."""
    k, v = key.encode("latin-1"), value.encode("latin-1")
    header = b"\x0a" + _varint(len(k)) + k  # HeaderValue: key = 1, raw_value = 3 (proto3: left out when empty)
    if v:
        header += b"\x1a" + _varint(len(v)) + v
    option = b"\x0a" + _varint(len(header)) + header + b"\x18\x02"  # header = 1, append_action = 3 (OVERWRITE...)
    return b"\x0a" + _varint(len(option)) + option  # HeaderMutation.set_headers = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _mutation(mut: pb.HeaderMutation, set_headers: list[tuple[str, str]], remove: list[str]) -> None:
    mut.MergeFromString(b"".join([_header_blob(k, v) for k, v in set_headers]))
    if remove:
        mut.remove_headers.extend(remove)


def _attributes(msg: pb.ProcessingRequest) -> dict[str, str]:
    """The CEL attributes Envoy evaluated for this filter (``request_attributes``), as strings."""
    attrs = msg.attributes.get("envoy.filters.http.ext_proc")
    return {k: v.string_value for k, v in attrs.fields.items()} if attrs is not None else {}


def _fill(common: pb.CommonResponse, fwd: Forward) -> None:
    """Write a ``Forward`` into the response's own ``CommonResponse`` (no intermediate message, no body copy)."""
    if fwd.set_headers or fwd.remove_headers:
        _mutation(common.header_mutation, fwd.set_headers, fwd.remove_headers)
    if fwd.body is not None:
        if fwd.body:
            common.body_mutation.body = fwd.body
        else:
            common.body_mutation.clear_body = True
    if fwd.clear_route_cache:
        common.clear_route_cache = True
    if fwd.replace:
        common.status = _REPLACE
    common.SetInParent()


def _immediate(reply: Reply) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    imm = resp.immediate_response
    imm.status.code = reply.status  # an HTTP status is a StatusCode enum value
    imm.body = reply.body
    if reply.headers:
        _mutation(imm.headers, reply.headers, [])
    return resp


def _answer(phase: str, action: Forward | Reply) -> pb.ProcessingResponse:
    if isinstance(action, Reply):
        return _immediate(action)
    resp = pb.ProcessingResponse()
    if action is CONTINUE:
        getattr(resp, phase).SetInParent()
        return resp
    _fill(getattr(resp, phase).response, action)
    if action.metadata:
        f = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
        for k, v in action.metadata.items():
            f[k].string_value = v
    if action.response_body_mode is not None:
        resp.mode_override.SetInParent()
        resp.mode_override.response_body_mode = _MODES[action.response_body_mode]
    if action.request_body_mode is not None:
        resp.mode_override.SetInParent()
        resp.mode_override.request_body_mode = _MODES[action.request_body_mode]
    return resp


def _finish(resp: pb.ProcessingResponse, rec: Record) -> pb.ProcessingResponse:
    """The exchange's last answer to Envoy: dynamic metadata for its access log (client path and format, model,
    provider, tokens, error type), written field by field (``Struct.update`` costs twice as much)."""
    if not rec.counted:
        return resp
    f = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
    f["format"].string_value = rec.client
    f["path"].string_value = rec.path
    if rec.model:
        f["model"].string_value = rec.model
    if rec.provider is not None:
        f["provider"].string_value = rec.provider
        f["upstream_path"].string_value = rec.upstream_path
    if rec.usage is not None:
        f["input_tokens"].number_value = rec.usage.input_tokens
        f["output_tokens"].number_value = rec.usage.output_tokens
    if rec.error_type:
        f["error_type"].string_value = rec.error_type
    return resp


Deferred = Callable[[], Coroutine[None, None, pb.ProcessingResponse]]
PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
# gRPC status codes for a peer's faults
INVALID_ARGUMENT, FAILED_PRECONDITION = 3, 9


class _PeerFaults:
    """At most one warning line per ``interval`` seconds about peers sending what no Envoy sends (with the count of
    those not logged): a flood of garbage costs no more than a line now and then."""

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def warn(self, what: str) -> None:
        now = monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last warning)" if self.suppressed else ""
        log.warning("ext_proc stream ended: %s%s", what, more)
        self.last, self.suppressed = now, 0


PEER_FAULTS = _PeerFaults()


class ExtProc:
    """The ext_proc logic both transports share: one ``Exchange`` per stream, one answer per message.

    ``handle`` is synchronous except when a request needs its URL media downloaded (opt-in ``image_fetch``): then
    it returns a ``Deferred`` (a callable making the coroutine that answers, so nothing is left un-awaited when the
    stream goes away first) and the transport holds the stream's later messages until it is done. A message no Envoy
    would send (malformed, empty, out of order, after the exchange ended) raises ``CallError``: the stream ends with
    a gRPC error, the message gets no answer, and a rate-limited warning is all that is logged.
    """

    def __init__(
        self,
        gateway: Gateway,
        on_done: Callable[[Record, float, bool], None] | None = None,
        metrics: Metrics | None = None,
        governor: Governor | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.gateway = gateway
        self.on_done = on_done
        self.metrics = metrics
        self.governor = governor  # limits, budgets and spend (None: no ``governance`` section at start)
        self.tracer = tracer  # None: tracing off, and no OpenTelemetry work at all

    def __call__(self, path: str, metadata: dict[str, str] | None = None) -> ProcessCall | None:
        """``grpc_wire``'s service: a call per ``Process`` stream (``metadata``: its ``traceparent``, with tracing)."""
        if path != PROCESS_PATH:
            return None
        call = ProcessCall(self)
        if metadata:
            call.trace = metadata.get("traceparent")
        return call

    def end(self, call: ProcessCall) -> None:
        if call.governed and self.governor is not None:
            try:  # the answer ended (or was cut): its tokens and cost are charged
                ex = call.ex
                self.governor.finish(ex.record, ex.key.name if ex.key is not None else None, call.plan)
            except Exception:
                log.exception("charging request %s failed", call.ex.record.request_id)
        if self.on_done is not None:
            try:
                self.on_done(call.ex.record, call.overhead, call.active)
            except Exception:  # metrics/logging must never break a request
                log.exception("recording request %s failed", call.ex.record.request_id)
        if self.tracer is not None:
            try:
                self.tracer.finish(call.ex, call.trace, call.body, call.chunks)
            except Exception:
                log.exception("tracing request %s failed", call.ex.record.request_id)

    def handle(self, call: ProcessCall, msg: pb.ProcessingRequest) -> pb.ProcessingResponse | Deferred:
        """One message in, its answer out; a bug costs the request a clear 500, never the stream or the worker."""
        t0 = perf_counter()
        try:
            resp = self._handle(call, msg)
        except ExchangeError as err:
            PEER_FAULTS.warn(str(err))
            raise CallError(FAILED_PRECONDITION, str(err)) from None
        except CallError:
            raise
        except Exception:
            resp = self._crashed(call.ex)
        call.overhead += perf_counter() - t0
        return resp

    @staticmethod
    def _crashed(ex: Exchange) -> pb.ProcessingResponse:
        log.exception("request %s failed inside the gateway", ex.record.request_id)
        err = GatewayError("server_error", "internal error in the gateway (logged with the request id)")
        return _finish(_immediate(ex.error_reply(err)), ex.record)

    def _handle(self, call: ProcessCall, msg: pb.ProcessingRequest) -> pb.ProcessingResponse | Deferred:
        ex = call.ex
        which = msg.WhichOneof("request")
        if which == "request_headers":
            h = msg.request_headers
            if len(msg.attributes):  # only the attempt filter on a fallback cluster asks Envoy for attributes
                ex = call.ex = Attempt(self.gateway, _attributes(msg))
                action = ex.on_request_headers(_NO_HEADERS, h.end_of_stream)
                if isinstance(action, FetchMedia):  # the attempt's target needs URL media inline
                    return partial(self._fetch, call, action, "request_headers")
                resp = _answer("request_headers", action)
                return _finish(resp, ex.record) if isinstance(action, Reply) else resp
            action = ex.on_request_headers(_headers(h), h.end_of_stream)
            if isinstance(action, ServeMetrics):
                action = self._metrics_reply()
            elif isinstance(action, governance.ServeUsage):
                return self._usage(call, action)
            resp = _answer("request_headers", action)
            return _finish(resp, ex.record) if isinstance(action, Reply) else resp
        if which == "request_body":
            if _DEBUG():
                log.debug(
                    "request %s %s body: %s", ex.record.request_id, ex.record.path, _snippet(msg.request_body.body)
                )
            if self.tracer is not None:  # read again only if the span needs the request's parameters
                call.body = msg.request_body.body
            forward = ex.on_request_body(msg.request_body.body)
            if isinstance(forward, FetchMedia):  # opt-in URL media: the one await
                return partial(self._fetch, call, forward)
            return self._request_answer(call, forward)
        if which == "response_headers":
            h = msg.response_headers
            fwd = ex.on_response_headers(_status(h) if ex.record.attempt else _headers(h), h.end_of_stream)
            resp = _answer("response_headers", fwd)
            return _finish(resp, ex.record) if ex.ended else resp
        if which == "response_body":
            b = msg.response_body
            if _DEBUG():
                log.debug("response %s status %s body: %s", ex.record.request_id, ex.record.status, _snippet(b.body))
            if call.chunks is not None:  # tracing with content capture: the provider's answer, for the span
                call.chunks.append(b.body)
            resp = _answer("response_body", ex.on_response_body(b.body, b.end_of_stream))
            return _finish(resp, ex.record) if ex.ended else resp
        what = f"unexpected {which}" if which else "empty ProcessingRequest"
        PEER_FAULTS.warn(what)
        raise CallError(INVALID_ARGUMENT, what)

    def _metrics_reply(self) -> Reply:
        if self.metrics is None:
            return Reply(200, b"", [("content-type", "text/plain; version=0.0.4")])
        ctype, body = self.metrics.render()  # reads every worker's files: I/O, so here and not in the core
        return Reply(200, body, [("content-type", ctype)])

    def _request_answer(
        self, call: ProcessCall, action: Forward | Reply, phase: str = "request_body"
    ) -> pb.ProcessingResponse | Deferred:
        gov = self.governor
        if gov is not None and isinstance(action, Forward) and gov.settings.enabled and not call.ex.record.attempt:
            ex = call.ex
            plan = call.plan = gov.plan(ex.key.name if ex.key is not None else None, ex.record.model)
            if plan is not None:
                store = gov.store
                if isinstance(store, RedisStore):
                    if not store.local(plan):  # the answer waits for Redis (other streams do not)
                        return partial(self._check_later, call, action, plan, store, phase)
                    action = self._decide(call, action, plan, True)
                else:
                    action = self._decide(call, action, plan, store.check(plan))
        return self._forwarded(call, action, phase)

    async def _check_later(
        self, call: ProcessCall, action: Forward, plan: governance.Plan, store: RedisStore, phase: str
    ) -> pb.ProcessingResponse:
        try:
            answered = await store.ask(plan)
            t0 = perf_counter()
            resp = self._forwarded(call, self._decide(call, action, plan, answered), phase)
            call.overhead += perf_counter() - t0
            return resp
        except Exception:
            return self._crashed(call.ex)

    def _decide(self, call: ProcessCall, action: Forward, plan: governance.Plan, answered: bool) -> Forward | Reply:
        """Forward a checked request (it is charged when its answer ends), or answer it with a 429/503."""
        gov = self.governor
        assert gov is not None and call.ex.client is not None
        refusal = gov.decide(plan, answered, call.ex.client.NAME, call.ex.record.model_label)
        if refusal is None:
            if answered and gov.settings.budget_headers:
                call.budget = governance.budget_headers(plan)
            return action
        call.plan = None
        call.ex.record.key = plan.key  # the refused request's log line names the key (never charged)
        err, headers = refusal
        reply = call.ex.error_reply(err)
        reply.headers.extend(headers)
        return reply

    def _usage(self, call: ProcessCall, action: governance.ServeUsage) -> pb.ProcessingResponse | Deferred:
        gov = self.governor
        if gov is None:
            return _answer("request_headers", call.ex.error_reply(GatewayError("not_found", "no usage recorded", 404)))
        store = gov.store
        if not isinstance(store, RedisStore):
            return _answer("request_headers", _usage_reply(action, store.usage(list(action.days))))
        return partial(self._usage_later, call, action, store)

    async def _usage_later(
        self, call: ProcessCall, action: governance.ServeUsage, store: RedisStore
    ) -> pb.ProcessingResponse:
        try:
            return _answer("request_headers", _usage_reply(action, await store.usage(list(action.days), action.key)))
        except Exception:
            log.exception("GET /usage: the governance store did not answer")
            err = GatewayError("overloaded", "the usage store did not answer; retry", 503)
            return _answer("request_headers", call.ex.error_reply(err))

    def _forwarded(
        self, call: ProcessCall, action: Forward | Reply, phase: str = "request_body"
    ) -> pb.ProcessingResponse:
        attempt = call.ex.record.attempt
        if isinstance(action, Forward) and self.governor is not None and self.governor.settings.enabled and not attempt:
            call.governed = True
        if isinstance(action, Forward) and self.metrics is not None and not attempt:
            self.metrics.started(call.ex.record)
            call.active = True
        resp = _answer(phase, action)
        if isinstance(action, Reply):
            return _finish(resp, call.ex.record)
        if call.budget:  # governance: the key's own remaining budget, for Envoy's budget headers on the answer
            f = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
            for k, v in call.budget:
                f[k].string_value = v
        return resp

    async def _fetch(self, call: ProcessCall, action: FetchMedia, phase: str = "request_body") -> pb.ProcessingResponse:
        try:
            fetched = await fetch_all(action.urls, action.policy)
            t0 = perf_counter()  # the downloads are not the gateway's own time; what follows is
            answer = self._request_answer(call, call.ex.on_fetched(fetched), phase)
            call.overhead += perf_counter() - t0
            return answer if isinstance(answer, pb.ProcessingResponse) else await answer()
        except Exception:
            return self._crashed(call.ex)


class ProcessCall:
    """One ``Process`` stream: its exchange, and what the servicer itself counts (in flight, time spent)."""

    __slots__ = ("active", "body", "budget", "chunks", "ex", "governed", "overhead", "plan", "proc", "trace")

    def __init__(self, proc: ExtProc) -> None:
        self.proc = proc
        self.ex = Exchange(proc.gateway)
        self.active = False  # counted in proxy_active_requests
        self.overhead = 0.0  # seconds the service spent on this exchange
        self.governed = False  # forwarded with governance on: charged when it ends
        self.plan: governance.Plan | None = None  # the limits it was checked against
        self.budget: list[tuple[str, str]] | None = None  # its key's remaining budget (dynamic metadata for Envoy)
        self.trace: str | None = None  # Envoy's W3C traceparent for this stream (tracing on)
        self.body: bytes | None = None  # the request body (tracing on)
        tracer = proc.tracer
        self.chunks: list[bytes] | None = [] if tracer is not None and tracer.capture_content else None

    def message(self, data: bytes) -> bytes | Awaitable[bytes]:
        """``grpc_wire``: raw message bytes in, the answer's bytes out."""
        try:
            msg = pb.ProcessingRequest.FromString(data)
        except DecodeError:
            PEER_FAULTS.warn("malformed ProcessingRequest")
            raise CallError(INVALID_ARGUMENT, "malformed ProcessingRequest") from None
        resp = self.proc.handle(self, msg)
        if isinstance(resp, pb.ProcessingResponse):
            return resp.SerializeToString()
        return self._later(resp)

    @staticmethod
    async def _later(deferred: Deferred) -> bytes:
        return (await deferred()).SerializeToString()

    def end(self) -> None:
        self.proc.end(self)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """The same logic on grpc.aio (``AI_GATEWAY_GRPC=grpcio``): one ``Process`` stream per HTTP request."""

    def __init__(self, proc: ExtProc) -> None:
        self.proc = proc

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        call = ProcessCall(self.proc)
        if self.proc.tracer is not None:
            call.trace = dict(context.invocation_metadata() or ()).get("traceparent")
        try:
            async for msg in request_iterator:
                try:
                    resp = self.proc.handle(call, msg)
                except CallError as err:
                    await context.abort(_GRPC_CODES[err.status], err.message)
                    return
                yield resp if isinstance(resp, pb.ProcessingResponse) else await resp()
        finally:
            self.proc.end(call)


_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _usage_reply(action: governance.ServeUsage, days: dict[str, dict[str, dict[str, int]]]) -> Reply:
    report = governance.usage_report(action.key, days)
    report["from"], report["to"] = action.days[0], action.days[-1]
    return Reply(200, orjson.dumps(report), [("content-type", "application/json")])
