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
from time import perf_counter

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from extproc.core.contract import METADATA_NAMESPACE
from extproc.core.exchange import CONTINUE, Exchange, Forward, Gateway, Reply
from extproc.observability.logs import redact
from extproc.observability.metrics import Metrics
from extproc.translation.errors import GatewayError
from extproc.translation.media import FetchMedia
from extproc.transport.fetch import fetch_all

log = logging.getLogger("extproc")

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_MODES = {"NONE": ProcessingMode.NONE, "STREAMED": ProcessingMode.STREAMED}


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
    mut = pb.HeaderMutation()
    mut.set_headers.append(
        HeaderValueOption(header=HeaderValue(key=key, raw_value=value.encode("latin-1")), append_action=_OVERWRITE)
    )
    return mut.SerializeToString()


def _mutation(mut: pb.HeaderMutation, set_headers: list[tuple[str, str]], remove: list[str]) -> None:
    mut.MergeFromString(b"".join([_header_blob(k, v) for k, v in set_headers]))
    if remove:
        mut.remove_headers.extend(remove)


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
    common.SetInParent()


def _immediate(reply: Reply) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    imm = resp.immediate_response
    imm.status.code = reply.status  # type: ignore[assignment]  (an HTTP status is a StatusCode enum value)
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
    if action.response_body_mode is not None:
        resp.mode_override.SetInParent()
        resp.mode_override.response_body_mode = _MODES[action.response_body_mode]
    return resp


def _finish(resp: pb.ProcessingResponse, ex: Exchange) -> pb.ProcessingResponse:
    """The exchange's last answer to Envoy: dynamic metadata for its access log (client path and format, model,
    provider, tokens, error type), written field by field (``Struct.update`` costs twice as much)."""
    if not ex.client_name or ex.client_name == "gateway":
        return resp
    f = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
    f["format"].string_value = ex.client_name
    f["path"].string_value = ex.path
    if ex.model:
        f["model"].string_value = ex.model
    if ex.provider is not None:
        f["provider"].string_value = ex.provider.name
        f["upstream_path"].string_value = ex.upstream_path
    if ex.usage is not None:
        f["input_tokens"].number_value = ex.usage.input_tokens
        f["output_tokens"].number_value = ex.usage.output_tokens
    if ex.error_type:
        f["error_type"].string_value = ex.error_type
    return resp


Deferred = Callable[[], Coroutine[None, None, pb.ProcessingResponse]]
PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


class ExtProc:
    """The ext_proc logic both transports share: one ``Exchange`` per stream, one answer per message.

    ``handle`` is synchronous except when a request needs its URL media downloaded (opt-in ``image_fetch``): then
    it returns a ``Deferred`` (a callable making the coroutine that answers, so nothing is left un-awaited when the
    stream goes away first) and the transport holds the stream's later messages until it is done.
    """

    def __init__(
        self,
        gateway: Gateway,
        on_done: Callable[[Exchange], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.gateway = gateway
        self.on_done = on_done
        self.metrics = metrics

    def __call__(self, path: str) -> ProcessCall | None:
        """``grpc_wire``'s service: a call per ``Process`` stream."""
        return ProcessCall(self) if path == PROCESS_PATH else None

    def end(self, ex: Exchange) -> None:
        if self.on_done is not None:
            try:
                self.on_done(ex)
            except Exception:  # metrics/logging must never break a request
                log.exception("recording request %s failed", ex.request_id)

    def handle(self, ex: Exchange, msg: pb.ProcessingRequest) -> pb.ProcessingResponse | Deferred:
        """One message in, its answer out; a bug costs the request a clear 500, never the stream or the worker."""
        t0 = perf_counter()
        try:
            resp = self._handle(ex, msg)
        except Exception:
            resp = self._crashed(ex)
        ex.overhead += perf_counter() - t0
        return resp

    @staticmethod
    def _crashed(ex: Exchange) -> pb.ProcessingResponse:
        log.exception("request %s failed inside the gateway", ex.request_id)
        err = GatewayError("server_error", "internal error in the gateway (logged with the request id)")
        return _finish(_immediate(ex.error_reply(err)), ex)

    def _handle(self, ex: Exchange, msg: pb.ProcessingRequest) -> pb.ProcessingResponse | Deferred:
        which = msg.WhichOneof("request")
        if which == "request_headers":
            h = msg.request_headers
            action = ex.on_request_headers(_headers(h), h.end_of_stream)
            resp = _answer("request_headers", action)
            return _finish(resp, ex) if isinstance(action, Reply) else resp
        if which == "request_body":
            if _DEBUG():
                log.debug("request %s %s body: %s", ex.request_id, ex.path, _snippet(msg.request_body.body))
            action = ex.on_request_body(msg.request_body.body)
            if isinstance(action, FetchMedia):  # opt-in URL media: the one await
                return partial(self._fetch, ex, action)
            return self._request_answer(ex, action)
        if which == "response_headers":
            fwd = ex.on_response_headers(_headers(msg.response_headers))
            resp = _answer("response_headers", fwd)
            return _finish(resp, ex) if fwd.response_body_mode == "NONE" else resp
        if which == "response_body":
            b = msg.response_body
            if _DEBUG():
                log.debug("response %s status %s body: %s", ex.request_id, ex.status, _snippet(b.body))
            resp = _answer("response_body", ex.on_response_body(b.body, b.end_of_stream))
            return _finish(resp, ex) if b.end_of_stream or not ex.streamed else resp
        resp = pb.ProcessingResponse()  # trailers are not requested; anything else: "no change"
        getattr(resp, which).SetInParent()
        return resp

    def _request_answer(self, ex: Exchange, action: Forward | Reply) -> pb.ProcessingResponse:
        if ex.provider is not None and self.metrics is not None and isinstance(action, Forward):
            self.metrics.started(ex)
            ex.active = True
        resp = _answer("request_body", action)
        return _finish(resp, ex) if isinstance(action, Reply) else resp

    async def _fetch(self, ex: Exchange, action: FetchMedia) -> pb.ProcessingResponse:
        try:
            fetched = await fetch_all(action.urls, action.policy)
            t0 = perf_counter()  # the downloads are not the gateway's own time; what follows is
            result = ex.on_fetched(fetched)
            while isinstance(result, FetchMedia):  # never in practice: substitution leaves no URL behind
                fetched = await fetch_all(result.urls, result.policy)
                t0 = perf_counter()
                result = ex.on_fetched(fetched)
            resp = self._request_answer(ex, result)
            ex.overhead += perf_counter() - t0
            return resp
        except Exception:
            return self._crashed(ex)


class ProcessCall:
    """One ``Process`` stream on ``grpc_wire``: raw message bytes in and out."""

    __slots__ = ("ex", "proc")

    def __init__(self, proc: ExtProc) -> None:
        self.proc = proc
        self.ex = Exchange(proc.gateway)

    def message(self, data: bytes) -> bytes | Awaitable[bytes]:
        resp = self.proc.handle(self.ex, pb.ProcessingRequest.FromString(data))
        if type(resp) is pb.ProcessingResponse:
            return resp.SerializeToString()
        return self._later(resp)  # type: ignore[arg-type]

    @staticmethod
    async def _later(deferred: Deferred) -> bytes:
        return (await deferred()).SerializeToString()

    def end(self) -> None:
        self.proc.end(self.ex)


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    """The same logic on grpc.aio (``AI_GATEWAY_GRPC=grpcio``): one ``Process`` stream per HTTP request."""

    def __init__(self, proc: ExtProc) -> None:
        self.proc = proc

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: object
    ) -> AsyncIterator[pb.ProcessingResponse]:
        ex = Exchange(self.proc.gateway)
        try:
            async for msg in request_iterator:
                resp = self.proc.handle(ex, msg)
                yield resp if type(resp) is pb.ProcessingResponse else await resp()  # type: ignore[operator]
        finally:
            self.proc.end(ex)
