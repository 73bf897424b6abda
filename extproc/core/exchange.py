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
from dataclasses import replace
from typing import Any

import orjson

from extproc.core import catalog, fallback, governance, routing
from extproc.core.access import ANONYMOUS, GatewayKey
from extproc.core.actions import CONTINUE, METRICS, Forward, Reply, ServeMetrics
from extproc.core.config import Config
from extproc.core.handlers import (
    EnvoyReply,
    Handler,
    PassThrough,
    PassThroughStream,
    Translate,
    TranslateCount,
    TranslateEmbed,
    TranslateStream,
)
from extproc.core.record import GATEWAY, Record
from extproc.translation import canonical as c
from extproc.translation import capabilities as caps_mod
from extproc.translation import media
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats import registry
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    EMBED,
    GENERATE,
    LOCAL,
    MODELS,
    AnswerStore,
    BuildOptions,
    Conversation,
    ConversationState,
    Endpoint,
    ModelInfo,
    StreamEncoder,
    StreamOptions,
    WireFormat,
)

_JSON = "application/json"
ADAPTED_HEADER = "x-ai-gateway-adapted"  # response header: parameters dropped/clamped for the target model
_DEFAULT_ERRORS = registry.get(registry.names()[0])  # errors for paths no format claims

# Phases: what the exchange expects next. _UNTOUCHED: a reply Envoy made before any filter ran (its connection manager
# refused the request line); the local-reply mappers already wrote it in the client's format, it passes as it is.
_NEW, _REQUEST_BODY, _FETCHING, _RESPONSE_HEADERS, _RESPONSE_BODY, _UNTOUCHED, _ENDED = range(7)


class ExchangeError(Exception):
    """A message the exchange cannot take: out of order, or after the exchange ended."""


class Gateway:
    """What every exchange shares: the loaded config (swapped whole on reload) and what derives from it, and the
    store of answers kept for stateful client formats (the Responses API; None when ``responses.store`` is off)."""

    __slots__ = ("_build", "_config", "_models", "draining", "store")

    def __init__(self, config: Config, store: AnswerStore | None = None) -> None:
        self.draining = False
        self.config = config
        self.store = store

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
        "forced",
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
        self.forced: routing.Target | None = None  # the target to plan for instead of the model's (``_plan_for``)
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
    def on_request_headers(
        self, headers: dict[str, str], end_of_stream: bool
    ) -> Forward | Reply | ServeMetrics | governance.ServeUsage:
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
    ) -> Forward | Reply | ServeMetrics | governance.ServeUsage:
        rec = self.record
        if path == "/health":
            rec.client = GATEWAY
            return self._health() if method in ("GET", "HEAD") else self._method_not_allowed(method, path, "GET")
        if path == "/metrics":
            rec.client = GATEWAY
            return METRICS if method == "GET" else self._method_not_allowed(method, path, "GET")
        if path == "/usage":  # governance: spend per key, for the admin credential (docs/governance.md)
            rec.client = GATEWAY
            if method != "GET":
                return self._method_not_allowed(method, path, "GET")
            return governance.usage_request(self.config.governance, headers, self.query, time.time())
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
        if endpoint.kind == LOCAL and fmt.STATE is not None:  # answered from the gateway's own store
            body = fmt.STATE.serve(endpoint, self.query, self.gateway.store, self._scope())
            rec.status = 200
            return Reply(200, body, [("content-type", _JSON)])
        if endpoint.kind not in (GENERATE, COUNT_TOKENS, EMBED):
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
        forced = self.forced  # a target given (an attempt's, or ``_plan_for``'s) instead of the model's
        target = self.target = forced or routing.resolve(cfg, client, endpoint, model, self.key)
        provider, fmt = target.provider, target.fmt
        rec.provider = provider.name
        counting = endpoint.kind == COUNT_TOKENS
        embedding = endpoint.kind == EMBED
        received = body  # what Envoy holds: replaced only when what goes upstream differs
        conv: Conversation | None = None
        if client.STATE is not None and endpoint.kind == GENERATE and head is not None:
            # A stateful client (Responses): the conversation it continues, from the gateway's store
            conv = client.STATE.expand(head, self.gateway.store, self._scope(), passthrough=target.passthrough)
            if conv.changed:
                head = conv.head
                body = orjson.dumps(head)
            limit = cfg.responses.max_bytes
            if conv.keep and len(received) > limit:
                raise invalid(
                    f"this request ({len(received)} bytes) is larger than the gateway's store of kept answers allows "
                    f"(responses.max_bytes = {limit}): send it with store: false",
                    param="store",
                )
        new_body: bytes
        # Token counts and embeddings to a cloud's variant of the client's format are rebuilt (their envelopes are
        # not a model call's); to the client's own format they pass through.
        if target.passthrough and (fmt is client or endpoint.kind == GENERATE):
            # The provider's format adapts the client's bytes (the same format, or a cloud's variant of it).
            new_body, filt = fmt.passthrough_body(body, head or {}, model=target.model, stream=stream)
            if stream != endpoint.stream:  # the body said so (a cloud's variant may have a path of its own for it)
                endpoint = replace(endpoint, stream=stream)
            path = provider.path(fmt.passthrough_path(endpoint, model=target.model, path=rec.path, query=self.query))
            if stream:
                opts = StreamOptions(model=model, request_id=rec.request_id, endpoint=endpoint)
                self.handler = PassThroughStream(rec, client, provider, opts, filt, cfg.passthrough_usage, fmt)
            else:
                self.handler = PassThrough(rec, client, provider, cfg.passthrough_usage, fmt, embeddings=embedding)
        elif embedding:
            if not fmt.EMBEDS:
                raise invalid(
                    f"embeddings for model '{model}' are not available: it is served by a provider of type "
                    f"'{provider.type}' ({fmt.NAME}), which has no embeddings endpoint",
                    param="model",
                )
            ereq = client.parse_embed_request(head if head is not None else body, model=model)
            new_body = fmt.build_embed_request(ereq, model=target.model)
            path = provider.path(fmt.upstream_path(model=target.model, stream=False, kind=EMBED))
            self.handler = TranslateEmbed(rec, client, fmt, provider, model, ereq)
        elif counting:
            if not fmt.COUNTS_TOKENS:
                raise invalid(
                    f"token counting for model '{model}' is not available: it is served by a provider of type "
                    f"'{provider.type}', which cannot count tokens",
                    param="model",
                )
            counted = client.parse_count_request(head if head is not None else body, model=model)
            new_body = fmt.build_count_request(counted, model=target.model)
            path = provider.path(fmt.upstream_path(model=target.model, stream=False, kind=COUNT_TOKENS))
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
            caps = cfg.capabilities(model, provider, target.model)
            options = self.gateway.build_options
            if caps is not None:
                if not resumed:
                    # What the target cannot take is adapted (or a 400 when the meaning would change): see
                    # docs/capabilities.md; the adaptations go to the response header, the log and the metrics.
                    rec.adaptations = caps_mod.shape(req, caps, target.model) or None
                options = BuildOptions(options.default_max_tokens, caps)
            if not resumed:
                urls = media.plan(req, fmt, cfg.image_fetch)  # a clear 400 unless fetching is enabled
                if urls:
                    self.waiting_body = body
                    return media.FetchMedia(urls, cfg.image_fetch)
            new_body = fmt.build_request(req, model=target.model, options=options)
            path = provider.path(fmt.upstream_path(model=target.model, stream=stream))
            keeper = None
            if conv is not None and conv.keep and self.gateway.store is not None and client.STATE is not None:
                keeper = _Keeper(self.gateway.store, self._scope(), client.STATE, conv, req, model)
            if stream:
                opts = StreamOptions(
                    model=model,
                    include_usage=req.include_usage,
                    request_id=rec.request_id,
                    endpoint=endpoint,
                    request=req,
                )
                self.handler = TranslateStream(rec, client, fmt, provider, opts, keeper)
            else:
                self.handler = Translate(rec, client, fmt, provider, model, req, keeper)
        rec.upstream_path = path
        set_headers, remove = routing.upstream_headers(
            cfg, target, self.key, model, stream=stream, path=path, length=len(new_body)
        )
        forward = Forward(set_headers, remove, None if new_body is received else new_body, clear_route_cache=True)
        if forced is None and endpoint.kind == GENERATE:
            m = cfg.models.get(model)
            if m is not None and m.fallback:
                return self._fallback(forward, model, stream, head, received)
        return forward

    def _scope(self) -> str:
        """Whose kept answers a request may see: its gateway key's (everyone's the same without gateway keys)."""
        return self.key.name if self.key is not None else ANONYMOUS

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
            rec, client, self.config, endpoint, model, stream, head, body, label, self.handler, self._plan_for
        )
        path = f"{rec.path}?{self.query}" if self.query else rec.path
        kept = fallback.client_headers(self.headers)
        return fallback.prepare(
            forward, model, label, target.passthrough, client=client.NAME, path=path, kept=kept, client_body=body,
            request_id=rec.request_id, scope=self._scope(),
        )  # fmt: skip

    def _plan_for(self, target: routing.Target, body: bytes) -> Handler | None:
        """The handler a single-target request to ``target`` would have had (for the answer of a fallback target):
        the request is planned again for it, its body thrown away. None if that needs media fetched."""
        saved, self.forced = self.handler, target
        try:
            action = self._forward(body)
            planned = self.handler
        except GatewayError:
            return None
        finally:
            self.forced, self.handler = None, saved
        return planned if isinstance(action, Forward) else None

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
        adapted = self.record.adaptations
        if adapted:  # the client sees what its request was changed in (a new Forward: CONTINUE is shared)
            header = (ADAPTED_HEADER, caps_mod.header_value(adapted))
            fwd = Forward([*fwd.set_headers, header], fwd.remove_headers, fwd.body, fwd.clear_route_cache,
                          fwd.response_body_mode)  # fmt: skip
        elif ADAPTED_HEADER in headers:  # only the gateway says what it adapted, never a provider
            fwd = Forward(fwd.set_headers, [*fwd.remove_headers, ADAPTED_HEADER], fwd.body, fwd.clear_route_cache,
                          fwd.response_body_mode)  # fmt: skip
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


class _Keeper:
    """Keeps a translated answer in the gateway's store (``handlers.Keeper``), as the client format shapes it."""

    __slots__ = ("conv", "model", "request", "scope", "state", "store")

    def __init__(
        self, store: AnswerStore, scope: str, state: ConversationState, conv: Conversation, req: c.Request, model: str
    ) -> None:
        self.store, self.scope, self.state, self.conv, self.request, self.model = store, scope, state, conv, req, model

    def answer(self, resp: c.Response) -> None:
        self._put(self.state.kept(resp, model=self.model, request=self.request))

    def stream(self, encoder: StreamEncoder) -> None:
        kept = self.state.kept_stream(encoder)
        if kept is not None:
            self._put(kept)

    def _put(self, answer: dict[str, Any]) -> None:
        self.store.put(self.scope, answer, self.conv.own_items, self.conv.previous_id)


__all__ = ["CONTINUE", "Exchange", "ExchangeError", "Forward", "Gateway", "Reply", "ServeMetrics"]
