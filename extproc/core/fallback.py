"""Models with several targets, the router-level half (pure): send the request to the model's fallback route as the
client wrote it, and handle whichever target answered.

Envoy retries such a request across the model's targets (``docs/fallback.md``); each attempt is translated for its
own target by the attempt filter on the model's cluster (``attempt.Attempt``). Here, at the listener's ext_proc
filter, the request only gets its route (``ROUTE_HEADER: model/<name>``), loses the client's credentials, and leaves
the attempts their context in dynamic metadata. The answer arrives with Envoy's ``SERVED_BY_HEADER`` and
``SERVED_FORMAT_HEADER`` naming the target that answered; ``FallbackHandler`` makes the usual handler for that target
then (pass-through or translation, streamed or not) and hands it the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from extproc.core import routing
from extproc.core.access import ANONYMOUS, GatewayKey
from extproc.core.actions import CONTINUE, Forward
from extproc.core.config import Config
from extproc.core.contract import (
    ATTEMPT_CONTEXT_KEY,
    ATTEMPT_REPLY,
    ATTEMPTS_HEADER,
    LOCAL_ERROR_HEADER,
    MODEL_ROUTE_PREFIX,
    RATE_KEY_HEADER,
    RATE_MODEL_HEADER,
    ROUTE_HEADER,
    SERVED_BY_HEADER,
    SERVED_FORMAT_HEADER,
    UPSTREAM_STATUS_HEADER,
)
from extproc.core.handlers import (
    EnvoyReply,
    Handler,
    PassThrough,
    PassThroughStream,
    Translate,
    TranslateStream,
)
from extproc.core.record import Record
from extproc.translation.errors import type_for_status
from extproc.translation.formats import registry
from extproc.translation.formats.contract import Endpoint, StreamOptions, WireFormat

_REMOVE = [*routing.STRIP_ALWAYS]


def route_value(model: str) -> str:
    """``ROUTE_HEADER`` for a model with several targets (the bootstrap's route for it matches exactly this)."""
    return MODEL_ROUTE_PREFIX + model


def attempt_context(path: str, query: str, headers: dict[str, str]) -> str:
    """What every attempt needs from the client's request besides its body: the path (with query) the client format
    is read from (an earlier attempt changed ``:path``), and the client's own format headers (an attempt to another
    format removes them; a later attempt to the client's format puts them back)."""
    kept = {h: headers[h] for h in routing.STRIP_CROSS if h in headers}
    ctx: dict[str, Any] = {"path": f"{path}?{query}" if query else path}
    if kept:
        ctx["headers"] = kept
    return orjson.dumps(ctx).decode()


def forward(cfg: Config, key: GatewayKey | None, model: str, *, stream: bool, context: str) -> Forward:
    """The request goes to the model's fallback route unchanged but for the gateway's headers: the route, the
    rate-limit headers, no client credentials; for a stream, no total deadline (per-try and idle timeouts remain)."""
    set_headers: list[tuple[str, str]] = [(ROUTE_HEADER, route_value(model))]
    if cfg.access.rate_limited:
        set_headers += [(RATE_KEY_HEADER, key.name if key is not None else ANONYMOUS), (RATE_MODEL_HEADER, model)]
    if stream:
        set_headers.append(("x-envoy-upstream-rq-timeout-ms", "0"))
    return Forward(set_headers, _REMOVE, None, clear_route_cache=True, metadata={ATTEMPT_CONTEXT_KEY: context})


@dataclass(slots=True)
class _Served:
    """Who answered, for the handlers' messages (``config.Provider`` when the config knows it)."""

    name: str
    api_key_env: str | None = None


class FallbackHandler(Handler):
    """The answer to a request on a fallback route. Envoy names the target that answered in the answer's headers;
    the handler a single-target request to that target would have had is made then, and does the rest."""

    __slots__ = ("body", "cfg", "endpoint", "head", "inner", "model", "stream")

    def __init__(
        self,
        record: Record,
        client: WireFormat,
        cfg: Config,
        endpoint: Endpoint,
        model: str,
        stream: bool,
        head: dict[str, Any] | None,
        body: bytes,
    ) -> None:
        super().__init__(record, client, None, None)
        self.cfg = cfg
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.head = head  # the request as peeked (None when the path names the model): streams re-read it
        self.body = body
        self.inner: Handler | None = None

    @property
    def streamed(self) -> bool:
        return self.inner is not None and self.inner.streamed

    def on_headers(self, headers: dict[str, str]) -> Forward:
        rec = self.record
        attempts = headers.get(ATTEMPTS_HEADER, "")
        rec.attempts = int(attempts) if attempts.isdigit() else 1
        served, fmt_name = headers.get(SERVED_BY_HEADER), headers.get(SERVED_FORMAT_HEADER)
        real = headers.get(UPSTREAM_STATUS_HEADER)
        if real is not None and real.isdigit():
            headers[":status"] = real  # the provider's own status (a 429 Envoy was shown as 503)
        inner: Handler
        if served and fmt_name in registry.FORMATS:
            provider_name, _, upstream = served.partition("/")
            rec.served_by, rec.provider = served, provider_name
            if headers.get(LOCAL_ERROR_HEADER) == ATTEMPT_REPLY:
                inner = _AttemptReply(rec, self.client)
            else:
                inner = self._handler(provider_name, registry.get(fmt_name), upstream)
        else:  # no target was reached (Envoy's own reply)
            inner = EnvoyReply(rec, self.client, None, None)
        self.inner = inner
        return _merge(inner.on_headers(headers), real)

    def on_body(self, body: bytes, end_of_stream: bool) -> Forward:
        assert self.inner is not None
        return self.inner.on_body(body, end_of_stream)

    def _handler(self, provider_name: str, fmt: WireFormat, upstream: str) -> Handler:
        rec, client, cfg = self.record, self.client, self.cfg
        provider: Any = cfg.providers.get(provider_name) or _Served(provider_name)
        if fmt is client:
            if not self.stream:
                return PassThrough(rec, client, provider, cfg.passthrough_usage)
            _, filt = client.passthrough_body(self.body, self.head or {}, model=upstream, stream=True)
            opts = StreamOptions(model=self.model, request_id=rec.request_id, endpoint=self.endpoint)
            return PassThroughStream(rec, client, provider, opts, filt, cfg.passthrough_usage)
        if not self.stream:
            return Translate(rec, client, fmt, provider, self.model)
        req = client.parse_request(self.head if self.head is not None else self.body, model=self.model, stream=True)
        opts = StreamOptions(
            model=self.model, include_usage=req.include_usage, request_id=rec.request_id, endpoint=self.endpoint
        )
        return TranslateStream(rec, client, fmt, provider, opts)


class _AttemptReply(Handler):
    """An attempt's own error reply (it could not build the request for its target): already in the client's format."""

    __slots__ = ()

    def __init__(self, record: Record, client: WireFormat) -> None:
        super().__init__(record, client, None, None)

    def on_headers(self, headers: dict[str, str]) -> Forward:
        try:
            self.status = int(headers.get(":status", "0"))
        except ValueError:
            self.status = 500
        self.record.status = self.status
        self.record.error_type = type_for_status(self.status)
        return Forward(remove_headers=[LOCAL_ERROR_HEADER], response_body_mode="NONE")


def _merge(fwd: Forward, status: str | None) -> Forward:
    """The inner handler's answer plus what the fallback headers need: the internal format header removed, and the
    provider's own status restored where Envoy was shown another."""
    remove = [SERVED_FORMAT_HEADER, *fwd.remove_headers]
    set_headers = fwd.set_headers
    if status is not None:
        remove.append(UPSTREAM_STATUS_HEADER)
        if not any(k == ":status" for k, _ in set_headers):
            set_headers = [(":status", status), *set_headers]
    if fwd is CONTINUE:
        return Forward(set_headers, remove)
    return Forward(set_headers, remove, fwd.body, fwd.clear_route_cache, fwd.response_body_mode, fwd.metadata)
