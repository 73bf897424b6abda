"""One HTTP exchange as the service sees it: pure decisions, no gRPC and no I/O.

The servicer feeds each ext_proc phase (request headers, request body, response headers, response body chunks) into an
``Exchange`` and turns the returned ``Forward``/``Reply`` into protobuf. Everything here is plain Python over bytes,
so it is unit-testable and the servicer stays a thin adapter. The exchange records what the logs and metrics need
(format, model, provider, status, usage, error type) as it goes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

import orjson

from extproc.core import access, catalog
from extproc.core.config import Config, Provider
from extproc.core.contract import (
    LOCAL_ERROR_HEADER,
    NO_CREDENTIAL,
    RATE_KEY_HEADER,
    RATE_MODEL_HEADER,
    ROUTE_HEADER,
)
from extproc.core.conversations import ANONYMOUS, ResponseStore, expand_request, with_ids
from extproc.translation import canonical as c
from extproc.translation import media
from extproc.translation.errors import GatewayError, invalid, type_for_status
from extproc.translation.formats import anthropic, gemini, openai, responses
from extproc.translation.formats.contract import COUNT_TOKENS, LOCAL, Endpoint, StreamOptions

FORMATS: dict[str, ModuleType] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
    "responses": responses,
}

# Client credentials never travel upstream; accept-encoding is dropped so provider bodies arrive uncompressed.
# Organization/project headers would pick how the gateway's provider key is billed and limited: also stripped.
_STRIP_ALWAYS = (
    "authorization", "x-api-key", "x-goog-api-key", "accept-encoding", "transfer-encoding",
    "openai-organization", "openai-project", "x-goog-user-project",
)  # fmt: skip
# The gateway's own request headers: a client can never set them (overwritten later, removed here at once).
_OWN_HEADERS = (ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER)
_STRIP_CROSS = ("anthropic-version", "anthropic-beta")
_JSON = "application/json"
# Model names travel in upstream paths (Gemini) and headers: printable, no slashes-dot-dot tricks, no control chars.
_MODEL_NAME = re.compile(r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:@+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:@+-]*)*$")


@dataclass(slots=True)
class Forward:
    """Let the message through, optionally changed (a ``CommonResponse``, plus a response body mode switch)."""

    set_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # None: unchanged; b"": clear it (hold a partial stream event)
    clear_route_cache: bool = False
    response_body_mode: str | None = None  # "NONE" | "STREAMED" (mode_override on response headers)


@dataclass(slots=True)
class Reply:
    """Answer the client now (an ``ImmediateResponse``): errors and the endpoints the service serves itself."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


CONTINUE = Forward()


class Gateway:
    """What every exchange shares: the loaded config. Swapped whole on reload."""

    __slots__ = ("config", "draining", "metrics_text", "store")

    def __init__(self, config: Config, store: ResponseStore | None = None) -> None:
        self.config = config
        self.draining = False
        self.metrics_text: Any = None  # callable returning (content_type, bytes); set by the server
        # Where Responses API conversations are kept for providers that keep none (None: responses.store is off)
        self.store = store


class Exchange:
    """State of one request/response pair, fed phase by phase."""

    __slots__ = (
        "active",
        "client",
        "client_key",
        "client_name",
        "decoder",
        "encoder",
        "error_type",
        "gateway",
        "local_error",
        "method",
        "model",
        "not_json",
        "overhead",
        "passthrough",
        "path",
        "pending_body",
        "provider",
        "provider_fmt",
        "query",
        "request",
        "request_id",
        "rs_input",
        "rs_store",
        "started",
        "status",
        "stream",
        "stream_opts",
        "streamed",
        "stripper",
        "target_model",
        "ttft",
        "upstream_path",
        "usage",
    )

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.started = time.monotonic()
        self.client: ModuleType | None = None
        self.client_name = ""
        self.client_key: access.GatewayKey | None = None
        self.provider: Provider | None = None
        self.provider_fmt: ModuleType | None = None
        self.model = ""
        self.target_model = ""
        self.passthrough = False
        self.stream = False
        self.stream_opts: dict[str, Any] = {}
        self.request: c.Request | None = None
        self.request_id: str | None = None
        self.status = 0
        self.local_error: str | None = None
        self.not_json = False  # a same-format 2xx answer that is not JSON (a web page): answered as a 502
        self.error_type: str | None = None
        self.usage: c.Usage | None = None
        self.upstream_path = ""
        self.ttft: float | None = None
        self.active = False  # counted in proxy_active_requests
        self.overhead = 0.0  # seconds the service spent on this exchange (the servicer adds them up)
        self.stripper: openai.UsageStripper | None = None
        self.streamed = False  # the response body arrives in STREAMED mode, chunk by chunk
        self.decoder: Any = None
        self.encoder: Any = None
        self.path = ""
        self.method = ""
        self.query = ""
        self.pending_body: bytes | None = None  # request body held while URL media are fetched (image_fetch)
        self.rs_input: list[dict[str, Any]] = []  # a Responses request's own input items, kept with its answer
        self.rs_store = False  # keep this Responses answer in the gateway's conversation store

    # ------------------------------------------------------------------------------------------------ request headers
    def on_request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Forward | Reply:
        self.request_id = headers.get("x-request-id")
        self.method = method = headers.get(":method", "GET")
        full_path = headers.get(":path", "/")
        path, _, self.query = full_path.partition("?")
        self.path = path
        try:
            return self._route_headers(method, path, full_path, end_of_stream, headers)
        except GatewayError as err:
            return self.error_reply(err)

    def _route_headers(
        self, method: str, path: str, full_path: str, eos: bool, headers: dict[str, str]
    ) -> Forward | Reply:
        if path == "/health":
            self.client_name = "gateway"
            return self._health() if method in ("GET", "HEAD") else self._method_not_allowed("GET")
        if path == "/metrics":
            self.client_name = "gateway"
            return self._metrics() if method == "GET" else self._method_not_allowed("GET")
        endpoint = responses.route(method, path, self.query) if path.startswith("/openai/v1/responses") else None
        if endpoint is not None:
            self._set_client("responses", headers)
            if endpoint.kind == LOCAL:
                return self._stored(endpoint)
            if endpoint.kind == COUNT_TOKENS:
                self.stream_opts["count_tokens"] = True
        elif path.startswith("/openai/"):
            self._set_client("openai", headers)
            if path == "/openai/v1/models" or path.startswith("/openai/v1/models/"):
                return self._models(method, path[len("/openai/v1/models/") :] or None)
            if path != "/openai/v1/chat/completions":
                raise GatewayError("not_found", f"unknown path {path} (the OpenAI API here is /openai/v1/...)", 404)
        elif path.startswith("/anthropic/"):
            self._set_client("anthropic", headers)
            if path == "/anthropic/v1/models" or path.startswith("/anthropic/v1/models/"):
                return self._models(method, path[len("/anthropic/v1/models/") :] or None)
            if path == "/anthropic/v1/messages/count_tokens":
                self.stream_opts["count_tokens"] = True
            elif path != "/anthropic/v1/messages":
                raise GatewayError(
                    "not_found", f"unknown path {path} (the Anthropic API here is /anthropic/v1/...)", 404
                )
        elif path.startswith("/gemini/"):
            self._set_client("gemini", headers)
            listing = catalog.gemini_models_path(path)
            if listing is not None:
                return self._models(method, listing[1])
            version, model, action, stream, sse = gemini.parse_path(full_path[len("/gemini") :])
            if action not in ("generateContent", "streamGenerateContent", "countTokens"):
                raise GatewayError("not_found", f"method {action} is not supported here", 404)
            self.model = model
            self.stream = stream
            self.stream_opts = {"sse": sse}
            self.stream_opts["api_version"] = version
            self.stream_opts["action"] = action
            self.stream_opts["count_tokens"] = action == "countTokens"
        else:
            self._set_client("openai", headers)
            raise GatewayError(
                "not_found", f"unknown path {path}: use /openai/v1/..., /anthropic/v1/... or /gemini/v1beta/...", 404
            )
        if method != "POST":
            return self._method_not_allowed("POST")
        if eos:
            raise invalid("request body is required")
        length = headers.get("content-length", "")
        limit = self.gateway.config.max_request_bytes
        if length.isdigit() and int(length) > limit:
            raise GatewayError(
                "request_too_large", f"request body is {length} bytes, over this gateway's limit of {limit}", 413
            )
        own = [h for h in _OWN_HEADERS if h in headers]
        return Forward(remove_headers=own) if own else CONTINUE

    def _models(self, method: str, model_id: str | None) -> Reply:
        """``GET .../models`` and ``GET .../models/{id}`` answered from the config in the client's own shape."""
        if method != "GET":
            return self._method_not_allowed("GET")
        self.model = model_id or ""
        cfg = self.gateway.config
        if self.client_name == "openai":
            body = catalog.openai_models(cfg, model_id)
        elif self.client_name == "anthropic":
            body = catalog.anthropic_models(cfg, model_id, self.query)
        else:
            body = catalog.gemini_models(cfg, model_id, self.query)
        self.status = 200
        return Reply(200, body, [("content-type", _JSON)])

    def on_fetched(self, result: dict[str, media.Fetched] | GatewayError) -> Forward | Reply | media.FetchMedia:
        """Resume a request held by a ``media.FetchMedia`` action with what ``fetch.fetch_all`` returned."""
        body, self.pending_body = self.pending_body, None
        if isinstance(result, GatewayError):
            return self.error_reply(result)
        assert self.request is not None and body is not None
        media.substitute(self.request, result)
        self.pending_body = body  # marks the parsed request as resumable
        try:
            return self._translate_request(body)
        except GatewayError as err:
            return self.error_reply(err)
        finally:
            self.pending_body = None

    def _set_client(self, name: str, headers: dict[str, str]) -> None:
        """The client's format is known from the path: from here on errors are in its shape. With gateway keys
        configured, the request must present one in that format's own auth header."""
        self.client_name = name
        self.client = FORMATS[name]
        policy = self.gateway.config.access
        if policy.enabled and self.path.startswith(("/openai/", "/anthropic/", "/gemini/")):
            key = policy.identify(access.credential("openai" if name == "responses" else name, headers, self.query))
            if key is None:
                raise GatewayError("auth", "missing or invalid gateway API key", 401)
            self.client_key = key

    # ------------------------------------------------------------------------------------------------ request body
    def on_request_body(self, body: bytes) -> Forward | Reply | media.FetchMedia:
        try:
            return self._translate_request(body)
        except GatewayError as err:
            return self.error_reply(err)

    def _translate_request(self, body: bytes) -> Forward | media.FetchMedia:
        cfg = self.gateway.config
        client = self.client
        assert client is not None
        head: dict[str, Any] = {}
        if self.client_name != "gemini":
            head = _peek(body)
            model = head.get("model")
            if not isinstance(model, str) or not model:
                raise invalid("'model' is required and must be a string", param="model")
            self.model = model
            stream = head.get("stream", False)
            self.stream = stream is True
        if len(self.model) > 256 or not _MODEL_NAME.match(self.model):
            raise invalid(f"model name {self.model[:80]!r} has characters a model name cannot have", param="model")
        resolved = cfg.resolve(self.model)
        if resolved is None:
            raise GatewayError(
                "unknown_model", f"model '{self.model}' is not configured on this gateway", 404, param="model"
            )
        provider, target = resolved
        self.provider = provider
        self.target_model = target
        fmt = self.provider_fmt = FORMATS[provider.format]
        if self.client_key is not None and not self.client_key.allows(self.model):
            raise GatewayError(
                "permission", f"gateway key '{self.client_key.name}' may not use model '{self.model}'", 403
            )
        if self.stream_opts.get("count_tokens") and fmt is not client:
            raise invalid(
                f"token counting for model '{self.model}' is not available: it is served by a provider of type "
                f"'{provider.type}', and the gateway only passes count requests to providers of the same type",
                param="model",
            )
        prefix = provider.upstream.prefix
        set_headers: list[tuple[str, str]] = [(ROUTE_HEADER, provider.name)]
        if cfg.access.rate_limited:  # what Envoy's local rate limit counts (removed before the request leaves)
            key_name = self.client_key.name if self.client_key is not None else access.ANONYMOUS
            set_headers += [(RATE_KEY_HEADER, key_name), (RATE_MODEL_HEADER, self.model)]
        remove = list(_STRIP_ALWAYS)
        received = body  # what Envoy holds: replaced only if what goes upstream differs
        if self.client_name == "responses":
            body, head = self._responses_conversation(body, head, passthrough=fmt is client)
        if fmt is client:
            self.passthrough = True
            new_body = body
            if self.client_name == "openai" and self.stream and not openai.wants_stream_usage(head):
                # Ask upstream for usage anyway (metrics, logs); the extra chunk is dropped on the way back.
                new_body = openai.with_stream_usage(head, target)
                self.stripper = openai.UsageStripper()
            elif self.client_name != "gemini" and body.count(b'"model"') > 1:
                # Possibly a duplicate top-level "model" (we read the last; a provider might read the first): send
                # exactly what was checked.
                head["model"] = target
                new_body = orjson.dumps(head)
            elif target != self.model and self.client_name != "gemini":
                new_body = fmt.rewrite_model(body, target)
            if self.client_name == "gemini":
                upstream = prefix + gemini.pass_through_path(
                    self.stream_opts["api_version"], target, self.stream_opts["action"], self.stream_opts["sse"]
                )
            else:
                suffix = (
                    self.path[len("/openai/v1") :]
                    if self.client_name in ("openai", "responses")
                    else self.path[len("/anthropic") :]
                )
                upstream = prefix + suffix + (f"?{self.query}" if self.query else "")
        else:
            resumed = self.request is not None and self.pending_body is not None
            source = head or body  # decoded once already for OpenAI and Anthropic clients
            req = self.request if resumed else client.parse_request(source, model=self.model, stream=self.stream)
            assert req is not None
            req.stream = self.stream
            self.request = req
            if not resumed:
                urls = media.plan(req, provider.format, cfg.image_fetch)  # a clear 400 unless fetching is enabled
                if urls:
                    self.pending_body = body
                    return media.FetchMedia(urls, cfg.image_fetch)
            if provider.type == "anthropic":
                new_body = fmt.build_request(req, model=target, default_max_tokens=cfg.anthropic_default_max_tokens)
            else:
                new_body = fmt.build_request(req, model=target)
            upstream = prefix + fmt.upstream_path(model=target, stream=self.stream)
            remove.extend(_STRIP_CROSS)
            set_headers.extend(fmt.EXTRA_HEADERS)
            set_headers.append(("content-type", _JSON))
        if self.stream:
            # A stream that keeps producing is never cut: no total deadline (the router consumes this header);
            # the route's idle timeout still ends a silent one.
            set_headers.append(("x-envoy-upstream-rq-timeout-ms", "0"))
        self.upstream_path = upstream
        set_headers.append((":path", upstream))
        set_headers.append(("content-length", str(len(new_body))))
        # Headers we set must not also be removed.
        names = {k for k, _ in set_headers}
        remove = [h for h in remove if h not in names]
        return Forward(set_headers, remove, None if new_body is received else new_body, clear_route_cache=True)

    # ------------------------------------------------------------------------------------------------ response headers
    def on_response_headers(self, headers: dict[str, str]) -> Forward:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 502
        self.local_error = headers.get(LOCAL_ERROR_HEADER)
        if self.local_error:
            return Forward(remove_headers=[LOCAL_ERROR_HEADER])
        ctype = headers.get("content-type", "")
        if self.passthrough:
            return self._passthrough_headers(ctype)
        if self.status < 300 and self.stream and ctype.startswith("text/event-stream"):
            return self._start_stream()
        return CONTINUE

    def _passthrough_headers(self, ctype: str) -> Forward:
        """Same format both sides: the provider's bytes (answers and errors alike) are already the client's. The body
        is still read, unchanged, for usage (metrics, logs), except error bodies; an error page that is not JSON (a
        proxy's HTML 502) is wrapped like any other error."""
        if self.status >= 400:
            self.error_type = type_for_status(self.status)
            return CONTINUE if "json" not in ctype else Forward(response_body_mode="NONE")
        if not self.stream and "json" not in ctype:  # a web page where JSON should be: wrapped as an error
            self.not_json = True
            return CONTINUE
        if not self.gateway.config.passthrough_usage and self.stripper is None:
            return Forward(response_body_mode="NONE")  # one gRPC message less; no tokens in metrics for these
        if not self.stream:
            return CONTINUE
        self.streamed = True
        if self.stripper is not None:
            return Forward(remove_headers=["content-length"], response_body_mode="STREAMED")
        assert self.provider_fmt is not None
        kwargs = {"sse": self.stream_opts.get("sse", True)} if self.client_name == "gemini" else {}
        self.decoder = self.provider_fmt.StreamDecoder(**kwargs)
        return Forward(response_body_mode="STREAMED")

    # ------------------------------------------------------------------------------------------------ response body
    def on_response_body(self, body: bytes, end_of_stream: bool = True) -> Forward:
        """A response body: the whole of it (BUFFERED) or the next piece of a stream (STREAMED)."""
        if self.streamed:
            if self.stripper is not None:
                out = self.stripper.feed(body) if body else b""
                if end_of_stream:
                    out += self.stripper.close()
                    self.usage = self.stripper.usage
                return Forward(body=out)
            if self.passthrough:
                self._observe(body, end_of_stream)
                return CONTINUE
            return self.on_stream_chunk(body, end_of_stream)
        if self.passthrough and self.status < 300 and not self.local_error and not self.not_json:
            assert self.provider_fmt is not None
            try:
                self.usage = self.provider_fmt.parse_response(body).usage
            except GatewayError:
                # The client gets the provider's bytes as they are (a shape we do not know costs only our
                # accounting), unless they are not JSON at all: a truncated answer becomes a clear 502.
                try:
                    orjson.loads(body)
                except orjson.JSONDecodeError:
                    name = self.provider.name if self.provider else "?"
                    err = GatewayError("server_error", f"provider '{name}' answered with truncated or invalid JSON")
                    return self._error_body(err, status=502)
            return CONTINUE
        return self._whole_body(body)

    def _observe(self, chunk: bytes, end_of_stream: bool) -> None:
        """A pass-through stream: bytes go out unchanged; decode them only for usage and time to first token."""
        events = self.decoder.feed(chunk) if chunk else []
        if end_of_stream:
            events.extend(self.decoder.close())
        for ev in events:
            self._account(ev)

    def _account(self, ev: c.Event) -> None:
        if isinstance(ev, c.UsageUpdate | c.MessageStart):
            if ev.usage is not None:
                self.usage = c.merge_usage(self.usage or c.Usage(), ev.usage)
        elif self.ttft is None and isinstance(ev, c.TextDelta | c.ToolCallStart | c.ThinkingDelta):
            self.ttft = time.monotonic() - self.started
        elif isinstance(ev, c.StreamError):
            self.error_type = ev.error.type

    def _whole_body(self, body: bytes) -> Forward:
        """The whole (buffered) response body of a translated exchange, or an Envoy local reply."""
        client = self.client
        assert client is not None
        if self.not_json:
            name = self.provider.name if self.provider else "?"
            return self._error_body(
                GatewayError("server_error", f"provider '{name}' answered with a non-JSON body, not a valid response"),
                status=502,
            )
        if self.local_error:
            return self._error_body(self._envoy_error(self.local_error, _local_reply_text(body)))
        fmt = self.provider_fmt
        if fmt is None:  # Envoy answered before a provider was chosen (a chunked body over the limit)
            status = self.status or 500
            return self._error_body(GatewayError(type_for_status(status), _local_reply_text(body), status))
        if self.status >= 400 or self.status < 200:
            return self._error_body(fmt.parse_error(self.status, body))
        try:
            resp = fmt.parse_response(body)
        except GatewayError as err:
            return self._error_body(err, status=502)
        self.usage = resp.usage
        if client is responses:
            full = responses.full_response(resp, model=self.model, request=self.request)
            self._keep(full)
            out = responses.render(full, self.request)
        else:
            out = client.build_response(resp, model=self.model)
        return Forward([("content-type", _JSON), ("content-length", str(len(out)))], body=out)

    def _envoy_error(self, kind: str, text: str) -> GatewayError:
        """A reply Envoy made itself for this exchange (tagged by the bootstrap's local-reply mappers)."""
        provider = self.provider
        name = provider.name if provider else "?"
        if kind == NO_CREDENTIAL:
            var = provider.api_key_env if provider else None
            return GatewayError("auth", f"the gateway has no API key for provider '{name}' (set {var})", 401)
        if kind == "timeout":
            return GatewayError(kind, f"provider '{name}' did not answer in time: {text}", self.status or 504)
        return GatewayError(kind, f"could not reach provider '{name}': {text}", self.status or 502)

    def _error_body(self, err: GatewayError, status: int | None = None) -> Forward:
        assert self.client is not None
        self.error_type = err.type
        if status is not None:
            err.status = status
        self.status = err.status
        out = self.client.build_error(err, request_id=self.request_id)
        headers = [(":status", str(err.status)), ("content-type", _JSON), ("content-length", str(len(out)))]
        return Forward(headers, body=out)

    # ------------------------------------------------------------------------------------------------ streaming
    def _start_stream(self) -> Forward:
        assert self.client is not None and self.provider_fmt is not None and self.request is not None
        self.decoder = self.provider_fmt.StreamDecoder()
        kwargs: dict[str, Any] = {"model": self.model, "include_usage": self.request.include_usage}
        if self.client is responses:
            self.encoder = responses.StreamEncoder(StreamOptions(model=self.model), request=self.request)
            self.streamed = True
            return Forward(
                set_headers=[("content-type", self.encoder.media_type)],
                remove_headers=["content-length"],
                response_body_mode="STREAMED",
            )
        if self.client_name == "gemini":
            kwargs["sse"] = self.stream_opts.get("sse", True)
        elif self.client_name == "openai":
            kwargs["created"] = int(time.time())
            kwargs["request_id"] = self.request_id
        self.encoder = self.client.StreamEncoder(**kwargs)
        self.streamed = True
        return Forward(
            set_headers=[("content-type", self.encoder.media_type)],
            remove_headers=["content-length"],
            response_body_mode="STREAMED",
        )

    def on_stream_chunk(self, chunk: bytes, end_of_stream: bool) -> Forward:
        """One piece of a provider stream: decode what completed, encode it for the client at once."""
        decoder, encoder = self.decoder, self.encoder
        out: list[bytes] = []
        events = decoder.feed(chunk) if chunk else []
        if end_of_stream:
            events.extend(decoder.close())
        for ev in events:
            if isinstance(ev, c.StreamError):
                self.error_type = ev.error.type
                out.append(encoder.error(ev.error))
                self.decoder = _Closed()
                break
            self._account(ev)
            out.append(encoder.encode(ev))
        if end_of_stream and not isinstance(self.decoder, _Closed):
            out.append(encoder.finish())
            if self.client is responses and encoder.final is not None:
                self._keep(encoder.final)
        return Forward(body=b"".join(out))

    # ------------------------------------------------------------------------------------------------ Responses state
    def _scope(self) -> str:
        return self.client_key.name if self.client_key is not None else ANONYMOUS

    def _responses_conversation(
        self, body: bytes, head: dict[str, Any], passthrough: bool
    ) -> tuple[bytes, dict[str, Any]]:
        """A Responses request made whole from the gateway's store. Towards OpenAI's own Responses API the request
        passes unchanged (OpenAI keeps its conversations), unless it continues one the gateway kept (the model
        changed provider mid-conversation): then it goes with the gateway's history instead."""
        store = self.gateway.store
        scope = self._scope()
        prev = head.get("previous_response_id")
        if passthrough:
            if store is None or not isinstance(prev, str) or store.get(scope, prev) is None:
                return body, head
            expanded, _ = expand_request(head, store, scope)
            expanded = {k: v for k, v in expanded.items() if k != "previous_response_id"}
            return orjson.dumps(expanded), expanded
        expanded, self.rs_input = expand_request(head, store, scope)
        settings = self.gateway.config.responses
        self.rs_store = store is not None and head.get("store") is not False
        if self.rs_store and len(body) > settings.max_bytes:
            raise invalid(
                f"this request ({len(body)} bytes) is larger than the gateway's response store allows "
                f"(responses.max_bytes = {settings.max_bytes}): send it with store: false",
                param="store",
            )
        return body, expanded

    def _keep(self, full: dict[str, Any]) -> None:
        """Keep a finished Responses answer, for previous_response_id and GET /responses/{id}."""
        store = self.gateway.store
        if not self.rs_store or store is None or self.request is None or self.request.echo is None:
            return
        store.put(self._scope(), full, with_ids(self.rs_input), self.request.echo.get("previous_response_id"))

    def _stored(self, endpoint: Endpoint) -> Reply:
        """``GET``/``DELETE /openai/v1/responses/{id}`` and ``GET .../{id}/input_items``, from the gateway's store."""
        if endpoint.op == "method_not_allowed":
            return self._method_not_allowed(endpoint.opts.get("allow", "GET"))
        rid = endpoint.resource_id or ""
        store = self.gateway.store
        scope = self._scope()
        missing = GatewayError("not_found", f"Response with id '{rid}' not found.", 404, param="response_id")
        if store is None or not responses.valid_id(rid):
            raise missing
        query = dict(parse_qsl(self.query))
        include = [v for k, v in parse_qsl(self.query) if k in ("include", "include[]")]
        encrypted = "reasoning.encrypted_content" in include
        if endpoint.op == "delete":
            if not store.delete(scope, rid):
                raise missing
            body = orjson.dumps({"id": rid, "object": "response.deleted", "deleted": True})
        elif endpoint.op == "get":
            found = store.get(scope, rid)
            if found is None:
                raise missing
            shown = [responses.client_view(i, encrypted) for i in found.get("output", ())]
            body = orjson.dumps({**found, "output": shown})
        else:
            items = store.input_items(scope, rid)
            if items is None:
                raise missing
            body = _item_page(items, query)
        self.status = 200
        return Reply(200, body, [("content-type", _JSON)])

    # ------------------------------------------------------------------------------------------------ own endpoints
    def _health(self) -> Reply:
        gw = self.gateway
        status = "draining" if gw.draining else "healthy"
        body = orjson.dumps(
            {
                "status": status,
                "models": len(gw.config.models),
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        return Reply(503 if gw.draining else 200, body, [("content-type", _JSON)])

    def _metrics(self) -> Reply:
        render = self.gateway.metrics_text
        if render is None:
            return Reply(200, b"", [("content-type", "text/plain; version=0.0.4")])
        ctype, body = render()
        return Reply(200, body, [("content-type", ctype)])

    def _method_not_allowed(self, allow: str) -> Reply:
        err = GatewayError("invalid_request", f"method {self.method} is not allowed on {self.path}", 405)
        reply = self.error_reply(err)
        reply.headers.append(("allow", allow))
        return reply

    def error_reply(self, err: GatewayError) -> Reply:
        """An error answered by the service itself, in the client's format (OpenAI's when the path says nothing)."""
        client = self.client or openai
        self.error_type = err.type
        self.status = err.status
        body = client.build_error(err, request_id=self.request_id)
        headers = [("content-type", _JSON)]
        if self.request_id:
            headers.append(("x-request-id", self.request_id))
        if err.retry_after:
            headers.append(("retry-after", err.retry_after))
        return Reply(err.status, body, headers)


class _Closed:
    """Decoder stand-in after a stream error: everything after it is dropped."""

    def feed(self, chunk: bytes) -> list[c.Event]:
        return []

    def close(self) -> list[c.Event]:
        return []


def _local_reply_text(body: bytes) -> str:
    """Envoy's own words from a local reply (wrapped by the bootstrap's ``local_reply_config`` body format)."""
    try:
        obj = orjson.loads(body)
        return str(obj["error"]["message"]).strip() or "no response"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip() or "no response"


def _item_page(items: list[dict[str, Any]], query: dict[str, str]) -> bytes:
    """A page of a stored response's input items (``order`` desc by default, ``limit`` 1-100, ``after`` an id)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("'order' must be asc or desc", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise invalid("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= 100:
        raise invalid("'limit' must be between 1 and 100", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return orjson.dumps(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(ordered) > limit,
        }
    )


def _peek(body: bytes) -> dict[str, Any]:
    """The request as a dict, enough to read ``model`` and ``stream``; a clear 400 when it is not a JSON object."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise invalid("request body must be a JSON object")
    return obj


__all__ = ["CONTINUE", "FORMATS", "Exchange", "Forward", "Gateway", "Reply"]
