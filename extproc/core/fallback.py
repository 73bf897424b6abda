"""Models with several targets, the listener's half (pure): the request goes to the model's fallback route prepared
for its primary target, and the answer is handled for whichever target gave it.

Envoy retries such a request across the model's targets (``docs/fallback.md``). Here, at the listener's ext_proc
filter, the request is built exactly as a single-target request to the primary target would be (same translation,
same handler), then sent to the route ``ROUTE_HEADER: model/<name>`` instead of the provider's. The attempts' context
travels in dynamic metadata: the client's path, its own format headers, which target the body was built for and that
target's header changes, and the client's body when the body sent differs from it. At the ext_proc filter on the
model's cluster, an attempt to the primary only restores those headers; an attempt to another target builds that
target's request from the client's body (``attempt.Attempt``).

The answer arrives with Envoy's ``SERVED_BY_HEADER`` and ``SERVED_FORMAT_HEADER`` naming the target that answered:
``FallbackHandler`` hands it to the primary's handler, or makes the usual handler for that target (pass-through or
translation, streamed or not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.core import routing
from extproc.core.actions import CONTINUE, Forward
from extproc.core.config import Config
from extproc.core.contract import (
    ATTEMPT_CONTEXT_KEY,
    ATTEMPT_LOG_HEADER,
    ATTEMPT_REPLY,
    ATTEMPTS_HEADER,
    CLIENT_BODY_KEY,
    LOCAL_ERROR_HEADER,
    MODEL_ROUTE_PREFIX,
    PREPARED_KEY,
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
from extproc.translation.formats.contract import Endpoint, ProviderFormat, StreamOptions, WireFormat

# Headers an attempt never sends: the listener's routing and rate-limit headers (the route is chosen), the stream
# deadline (the router read it already).
_NOT_FOR_ATTEMPT = (ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER, "x-envoy-upstream-rq-timeout-ms")
# Every format's own request headers: an attempt to another format must not inherit them from an earlier attempt.
_PROVIDER_FORMATS = frozenset(registry.provider_names())
_FORMAT_HEADERS = tuple(dict.fromkeys(h for f in registry.FORMATS.values() for h, _ in f.EXTRA_HEADERS))


def route_value(model: str) -> str:
    """``ROUTE_HEADER`` for a model with several targets (the bootstrap's route for it matches exactly this)."""
    return MODEL_ROUTE_PREFIX + model


def client_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The client's own format headers (``anthropic-version``, ``anthropic-beta``): an attempt to another format
    removes them, a later attempt to the client's format puts them back."""
    return {h: headers[h] for h in routing.STRIP_CROSS if h in headers} if headers else {}


def attempt_headers(fwd: Forward, passthrough: bool, kept: dict[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    """A single-target request's header changes, made fit for an attempt. Envoy keeps one header map for all the
    attempts of a request, so each attempt sets or removes every header an attempt may touch: the client's format
    headers for a same-format target; credentials and other formats' headers removed."""
    set_headers = [(k, v) for k, v in fwd.set_headers if k not in _NOT_FOR_ATTEMPT]
    if passthrough:
        set_headers += list(kept.items())
    names = {k for k, _ in set_headers}
    remove = [h for h in (*routing.STRIP_ALWAYS, *routing.STRIP_CROSS, *_FORMAT_HEADERS) if h not in names]
    return set_headers, remove


def prepare(
    fwd: Forward, model: str, label: str, passthrough: bool, *, client: str, path: str, kept: dict[str, str],
    client_body: bytes, request_id: str | None, scope: str,
) -> Forward:  # fmt: skip
    """The primary target's request, sent to the model's fallback route: ``ROUTE_HEADER`` names the route, and the
    attempts' context goes along in dynamic metadata (the client's body too when the body sent is not it)."""
    set_headers = [(ROUTE_HEADER, route_value(model)) if k == ROUTE_HEADER else (k, v) for k, v in fwd.set_headers]
    prepared_set, prepared_remove = attempt_headers(fwd, passthrough, kept)
    context: dict[str, Any] = {
        "client": client, "path": path, "model": model, "request_id": request_id, "scope": scope, "prepared": label,
        "set": prepared_set, "remove": prepared_remove,
    }  # fmt: skip
    if kept:
        context["headers"] = kept
    metadata = {ATTEMPT_CONTEXT_KEY: orjson.dumps(context).decode(), PREPARED_KEY: label}
    if fwd.body is not None:
        metadata[CLIENT_BODY_KEY] = client_body.decode("utf-8", "replace")
    return Forward(set_headers, fwd.remove_headers, fwd.body, clear_route_cache=True, metadata=metadata)


def parse_attempt_log(text: str) -> list[tuple[str, int]]:
    """``ATTEMPT_LOG_HEADER``: (target label, status) per attempt, 0 when nothing came back."""
    out = []
    for entry in text.split(";") if text else ():
        label, _, status = entry.rpartition("=")
        if label:
            out.append((label, int(status) if status.isdigit() else 0))
    return out


@dataclass(slots=True)
class _Served:
    """Who answered, for the handlers' messages (``config.Provider`` when the config knows it)."""

    name: str
    api_key_env: str | None = None


class FallbackHandler(Handler):
    """The answer to a request on a fallback route. Envoy names the target that answered in the answer's headers:
    the primary's answer goes to the handler made with its request; another target's to the handler a
    single-target request to it would have had."""

    __slots__ = ("body", "cfg", "endpoint", "head", "inner", "model", "plan", "prepared", "primary", "stream")

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
        prepared: str,
        primary: Handler,
        plan: Callable[[routing.Target, bytes], Handler | None] | None = None,
    ) -> None:
        super().__init__(record, client, None, None)
        self.cfg = cfg
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        self.head = head  # the request as peeked (None when the path names the model): streams re-read it
        self.body = body
        self.prepared = prepared  # the label of the target the request was built for
        self.primary = primary
        self.plan = plan  # the exchange planning the request again for another target (``Exchange._plan_for``)
        self.inner: Handler | None = None

    @property
    def streamed(self) -> bool:
        return self.inner is not None and self.inner.streamed

    def on_headers(self, headers: dict[str, str]) -> Forward:
        rec = self.record
        attempts = headers.get(ATTEMPTS_HEADER, "")
        rec.attempts = int(attempts) if attempts.isdigit() else 1
        rec.attempt_log = parse_attempt_log(headers.get(ATTEMPT_LOG_HEADER, ""))
        served, fmt_name = headers.get(SERVED_BY_HEADER), headers.get(SERVED_FORMAT_HEADER)
        real = headers.get(UPSTREAM_STATUS_HEADER)
        if real is not None and real.isdigit():
            headers[":status"] = real  # the provider's own status (a 429 Envoy was shown as 503)
        inner: Handler
        if served and fmt_name in _PROVIDER_FORMATS:
            provider_name, _, upstream = served.partition("/")
            rec.served_by, rec.provider = served, provider_name
            if headers.get(LOCAL_ERROR_HEADER) == ATTEMPT_REPLY:
                inner = _AttemptReply(rec, self.client)
            elif served == self.prepared:
                inner = self.primary
            else:
                inner = self._handler(provider_name, registry.provider(fmt_name), upstream)
        else:  # no target was reached (Envoy's own reply)
            inner = EnvoyReply(rec, self.client, None, None)
        self.inner = inner
        return _merge(inner.on_headers(headers), real)

    def on_body(self, body: bytes, end_of_stream: bool) -> Forward:
        assert self.inner is not None
        return self.inner.on_body(body, end_of_stream)

    def _handler(self, provider_name: str, fmt: ProviderFormat, upstream: str) -> Handler:
        """The handler of a single-target request to that target: planned by the exchange again (capabilities,
        conversation keeping and all), or made here from what the answer needs when the exchange cannot."""
        rec, client, cfg = self.record, self.client, self.cfg
        known = cfg.providers.get(provider_name)
        if known is not None and self.plan is not None and known.format == fmt.NAME:
            passthrough = registry.passes_through(fmt, client)
            planned = self.plan(routing.Target(known, fmt, upstream, passthrough=passthrough), self.body)
            if planned is not None:
                return planned
        provider: Any = known or _Served(provider_name)
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
    """The inner handler's answer plus the provider's own status restored where Envoy was shown another."""
    if status is None:
        return fwd
    set_headers = fwd.set_headers
    if not any(k == ":status" for k, _ in set_headers):
        set_headers = [(":status", status), *set_headers]
    remove = [UPSTREAM_STATUS_HEADER, *fwd.remove_headers]
    if fwd is CONTINUE:
        return Forward(set_headers, remove)
    return Forward(set_headers, remove, fwd.body, fwd.clear_route_cache, fwd.response_body_mode, fwd.metadata)
