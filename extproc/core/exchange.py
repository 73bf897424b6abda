"""One HTTP exchange as the service sees it: the ext_proc phases in order, pure decisions, no gRPC and no I/O.

The servicer feeds each phase (request headers, request body, response headers, response body chunks) into an
``Exchange`` and turns the returned action (``actions.Forward``/``Reply``/``ServeMetrics``, ``media.FetchMedia``) into
protobuf. The request side is routing (``routing``: format, gateway key, model, provider); when a request is
forwarded, one response handler (``handlers``) is chosen for the answer. What logs and metrics need is written into
``record`` as it goes.

Phases must come in order, once each (response body chunks repeat). An exchange that answered with a ``Reply`` has
ended: any later message, and any message out of order, raises ``ExchangeError`` (the servicer ends the stream with
a gRPC error: no translation, no header mutation for it).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from extproc.core import catalog, fallback, routing
from extproc.core.access import GatewayKey
from extproc.core.actions import CONTINUE, METRICS, Forward, Reply, ServeMetrics
from extproc.core.config import Config
from extproc.core.handlers import (
    EnvoyReply,
    Handler,
    PassThrough,
    PassThroughStream,
    Translate,
    TranslateCount,
    TranslateStream,
)
from extproc.core.record import GATEWAY, Record
from extproc.translation import canonical as c
from extproc.translation import media
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats import registry
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    GENERATE,
    MODELS,
    BuildOptions,
    Endpoint,
    ModelInfo,
    StreamOptions,
    WireFormat,
)

_JSON = "application/json"
_DEFAULT_ERRORS = registry.get(registry.names()[0])  # errors for paths no format claims

# Phases: what the exchange expects next. _UNTOUCHED: a reply Envoy made before any filter ran (its connection manager
# refused the request line); the local-reply mappers already wrote it in the client's format, it passes as it is.
_NEW, _REQUEST_BODY, _FETCHING, _RESPONSE_HEADERS, _RESPONSE_BODY, _UNTOUCHED, _ENDED = range(7)


class ExchangeError(Exception):
    """A message the exchange cannot take: out of order, or after the exchange ended."""


class Gateway:
    """What every exchange shares: the loaded config (swapped whole on reload) and what derives from it."""

    __slots__ = ("_build", "_config", "_models", "draining")

    def __init__(self, config: Config) -> None:
        self.draining = False
        self.config = config

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._models: list[ModelInfo] = catalog.model_infos(config)
        self._build = BuildOptions(default_max_tokens=config.anthropic_default_max_tokens)

    @property
    def models(self) -> list[ModelInfo]:
        return self._models

    @property
    def build_options(self) -> BuildOptions:
        return self._build


class Exchange:
    """State of one request/response pair, fed phase by phase."""

    __slots__ = (
        "client",
        "config",
        "endpoint",
        "gateway",
        "handler",
        "headers",
        "key",
        "phase",
        "query",
        "record",
        "request",
        "target",
        "waiting_body",
    )

    ROUTES_FALLBACK = True  # a model with several targets goes to its fallback route (``fallback``); attempts: no

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.config = gateway.config  # one config for the whole exchange, even across a reload
        self.record = Record(time.monotonic())
        self.phase = _NEW
        self.client: WireFormat | None = None
        self.endpoint: Endpoint | None = None
        self.key: GatewayKey | None = None
        self.query = ""
        self.handler: Handler | None = None
        self.headers: dict[str, str] | None = None  # the client's request headers
        self.target: routing.Target | None = None
        self.request: c.Request | None = None
        self.waiting_body: bytes | None = None  # the request body held while URL media are fetched (image_fetch)

    def _expect(self, *phases: int) -> None:
        if self.phase not in phases:
            raise ExchangeError("the exchange has ended" if self.phase == _ENDED else "ext_proc message out of order")

    def _reply(self, reply: Reply) -> Reply:
        self.phase = _ENDED
        return reply

    # ------------------------------------------------------------------------------------------------ request headers
    def on_request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Forward | Reply | ServeMetrics:
        self._expect(_NEW)
        rec = self.record
        rec.request_id = headers.get("x-request-id")
        self.headers = headers
        method = headers.get(":method", "GET")
        path, _, self.query = headers.get(":path", "/").partition("?")
        rec.path = path
        try:
            action = self._route_headers(method, path, end_of_stream, headers)
        except GatewayError as err:
            return self.error_reply(err)
        if isinstance(action, Forward):
            self.phase = _REQUEST_BODY
            return action
        self.phase = _ENDED
        return action

    def _route_headers(
        self, method: str, path: str, eos: bool, headers: dict[str, str]
    ) -> Forward | Reply | ServeMetrics:
        rec = self.record
        if path == "/health":
            rec.client = GATEWAY
            return self._health() if method in ("GET", "HEAD") else self._method_not_allowed(method, path, "GET")
        if path == "/metrics":
            rec.client = GATEWAY
            return METRICS if method == "GET" else self._method_not_allowed(method, path, "GET")
        try:
            routed = registry.route(method, path, self.query)
        except registry.RoutingError as exc:
            self.client = exc.fmt
            rec.client = exc.fmt.NAME
            raise exc.error from None
        if routed is None:
            rec.client = _DEFAULT_ERRORS.NAME
            prefixes = ", ".join(f"{f.PATH_PREFIX}..." for f in registry.FORMATS.values())
            raise GatewayError("not_found", f"unknown path {path}: use one of {prefixes}", 404)
        fmt, endpoint = routed
        self.client, self.endpoint = fmt, endpoint
        rec.client = fmt.NAME
        self.key = routing.authenticate(self.config, fmt, headers, self.query)
        if method not in endpoint.methods:
            return self._method_not_allowed(method, path, ", ".join(endpoint.methods))
        if endpoint.kind == MODELS:
            rec.model = endpoint.model_id or ""
            rec.status = 200
            return Reply(
                200, fmt.list_models(self.gateway.models, endpoint.model_id, self.query), [("content-type", _JSON)]
            )
        if endpoint.kind not in (GENERATE, COUNT_TOKENS):
            raise GatewayError("not_found", f"{path} is not served by this gateway", 404)
        if eos:
            raise invalid("request body is required")
        routing.check_length(self.config, headers)
        own = [h for h in routing.OWN_HEADERS if h in headers]
        return Forward(remove_headers=own) if own else CONTINUE

    # ------------------------------------------------------------------------------------------------ request body
    def on_request_body(self, body: bytes) -> Forward | Reply | media.FetchMedia:
        self._expect(_REQUEST_BODY)
        try:
            action = self._forward(body)
        except GatewayError as err:
            return self.error_reply(err)
        self.phase = _FETCHING if isinstance(action, media.FetchMedia) else _RESPONSE_HEADERS
        return action

    def on_fetched(self, result: dict[str, media.Fetched] | GatewayError) -> Forward | Reply:
        """Resume a request held by a ``media.FetchMedia`` action with what ``fetch.fetch_all`` returned."""
        self._expect(_FETCHING)
        body, self.waiting_body = self.waiting_body, None
        if isinstance(result, GatewayError):
            return self.error_reply(result)
        assert self.request is not None and body is not None
        media.substitute(self.request, result)
        try:
            action = self._forward(body, resumed=True)
        except GatewayError as err:
            return self.error_reply(err)
        assert isinstance(action, Forward)  # substitution leaves no URL to fetch
        self.phase = _RESPONSE_HEADERS
        return action

    def _forward(self, body: bytes, resumed: bool = False) -> Forward | media.FetchMedia:
        cfg, rec = self.config, self.record
        client, endpoint = self.client, self.endpoint
        assert client is not None and endpoint is not None
        head = routing.peek(body) if endpoint.model is None else None
        raw_model, stream = client.request_model(endpoint, head or {})
        model = rec.model = routing.model_name(raw_model)
        rec.stream = stream
        if model in cfg.models:
            rec.model_label = model
        target = self.target = self._resolve(cfg, client, endpoint, model)
        provider, fmt = target.provider, target.fmt
        rec.provider = provider.name
        prefix = provider.upstream.prefix
        counting = endpoint.kind == COUNT_TOKENS
        new_body: bytes
        if target.passthrough:
            new_body, filt = client.passthrough_body(body, head or {}, model=target.model, stream=stream)
            path = prefix + client.passthrough_path(endpoint, model=target.model, path=rec.path, query=self.query)
            if stream:
                opts = StreamOptions(model=model, request_id=rec.request_id, endpoint=endpoint)
                self.handler = PassThroughStream(rec, client, provider, opts, filt, cfg.passthrough_usage)
            else:
                self.handler = PassThrough(rec, client, provider, cfg.passthrough_usage)
        elif counting:
            if not fmt.COUNTS_TOKENS:
                raise invalid(
                    f"token counting for model '{model}' is not available: it is served by a provider of type "
                    f"'{provider.type}', which cannot count tokens",
                    param="model",
                )
            counted = client.parse_count_request(head if head is not None else body, model=model)
            new_body = fmt.build_count_request(counted, model=target.model)
            path = prefix + fmt.upstream_path(model=target.model, stream=False, kind=COUNT_TOKENS)
            self.handler = TranslateCount(rec, client, fmt, provider)
        else:
            req = (
                self.request
                if resumed
                else client.parse_request(head if head is not None else body, model=model, stream=stream)
            )
            assert req is not None
            req.stream = stream
            self.request = req
            if not resumed:
                urls = media.plan(req, fmt, cfg.image_fetch)  # a clear 400 unless fetching is enabled
                if urls:
                    self.waiting_body = body
                    return media.FetchMedia(urls, cfg.image_fetch)
            new_body = fmt.build_request(req, model=target.model, options=self.gateway.build_options)
            path = prefix + fmt.upstream_path(model=target.model, stream=stream)
            if stream:
                opts = StreamOptions(
                    model=model, include_usage=req.include_usage, request_id=rec.request_id, endpoint=endpoint
                )
                self.handler = TranslateStream(rec, client, fmt, provider, opts)
            else:
                self.handler = Translate(rec, client, fmt, provider, model)
        rec.upstream_path = path
        set_headers, remove = routing.upstream_headers(
            cfg, target, self.key, model, stream=stream, path=path, length=len(new_body)
        )
        forward = Forward(set_headers, remove, None if new_body is body else new_body, clear_route_cache=True)
        if self.ROUTES_FALLBACK and endpoint.kind == GENERATE and model in cfg.models and cfg.models[model].fallback:
            return self._fallback(forward, model, stream, head, body)
        return forward

    def _resolve(self, cfg: Config, client: WireFormat, endpoint: Endpoint, model: str) -> routing.Target:
        return routing.resolve(cfg, client, endpoint, model, self.key)

    def _fallback(
        self, forward: Forward, model: str, stream: bool, head: dict[str, Any] | None, body: bytes
    ) -> Forward:
        """A model with several targets: the request, built for the primary target, goes to the model's fallback
        route; Envoy tries the targets in turn, an attempt to another target built for it by the attempt filter
        (``attempt.Attempt``); the answer's handler is chosen when Envoy says who answered (``fallback``)."""
        client, endpoint, rec, target = self.client, self.endpoint, self.record, self.target
        assert client is not None and endpoint is not None and target is not None and self.handler is not None
        rec.fallback = True
        label = f"{target.provider.name}/{target.model}"
        self.handler = fallback.FallbackHandler(
            rec, client, self.config, endpoint, model, stream, head, body, label, self.handler
        )
        path = f"{rec.path}?{self.query}" if self.query else rec.path
        kept = fallback.client_headers(self.headers)
        return fallback.prepare(
            forward, model, label, target.passthrough, client=client.NAME, path=path, kept=kept, client_body=body,
            request_id=rec.request_id,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------ response
    def on_response_headers(self, headers: dict[str, str], end_of_stream: bool = False) -> Forward:
        self._expect(_RESPONSE_HEADERS, _REQUEST_BODY, _NEW)
        if self.phase == _NEW:  # Envoy refused the request before the filters (e.g. a path it will not normalise)
            self.phase = _ENDED if end_of_stream else _UNTOUCHED
            return CONTINUE
        if self.handler is None:  # Envoy answered before the body reached us (a chunked body over the limit)
            assert self.client is not None
            self.handler = EnvoyReply(self.record, self.client, None, None)
        fwd = self.handler.on_headers(headers)
        self.phase = _ENDED if end_of_stream or fwd.response_body_mode == "NONE" else _RESPONSE_BODY
        return fwd

    def on_response_body(self, body: bytes, end_of_stream: bool = True) -> Forward:
        """A response body: the whole of it (BUFFERED) or the next piece of a stream (STREAMED)."""
        self._expect(_RESPONSE_BODY, _UNTOUCHED)
        if self.phase == _UNTOUCHED:
            if end_of_stream:
                self.phase = _ENDED
            return CONTINUE
        handler = self.handler
        assert handler is not None
        fwd = handler.on_body(body, end_of_stream)
        if end_of_stream or not handler.streamed:
            self.phase = _ENDED
        return fwd

    @property
    def ended(self) -> bool:
        return self.phase == _ENDED

    @property
    def streamed(self) -> bool:
        """The response body arrives in STREAMED mode, chunk by chunk."""
        return self.handler is not None and self.handler.streamed

    # ------------------------------------------------------------------------------------------------ own answers
    def _health(self) -> Reply:
        gw = self.gateway
        body = orjson.dumps(
            {
                "status": "draining" if gw.draining else "healthy",
                "models": len(self.config.models),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        return Reply(503 if gw.draining else 200, body, [("content-type", _JSON)])

    def _method_not_allowed(self, method: str, path: str, allow: str) -> Reply:
        reply = self.error_reply(GatewayError("invalid_request", f"method {method} is not allowed on {path}", 405))
        reply.headers.append(("allow", allow))
        return reply

    def error_reply(self, err: GatewayError) -> Reply:
        """An error answered by the service itself, in the client's format (the first format's when the path names
        none); the exchange ends with it."""
        fmt = self.client or _DEFAULT_ERRORS
        rec = self.record
        rec.error_type = err.type
        rec.status = err.status
        body = fmt.build_error(err, request_id=rec.request_id)
        headers = [("content-type", _JSON)]
        if rec.request_id:
            headers.append(("x-request-id", rec.request_id))
        if err.retry_after:
            headers.append(("retry-after", err.retry_after))
        return self._reply(Reply(err.status, body, headers))


__all__ = ["CONTINUE", "Exchange", "ExchangeError", "Forward", "Gateway", "Reply", "ServeMetrics"]
