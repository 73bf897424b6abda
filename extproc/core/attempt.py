"""One attempt of a request to a model with several targets, at the ext_proc filter on the model's Envoy cluster (an
upstream filter: Envoy runs it once per attempt, after choosing the attempt's endpoint) (pure).

Envoy says which target the attempt goes to (the endpoint's metadata) and gives the client's request as the client
sent it (the router replays the same body on every attempt); the attempt builds that target's request exactly as a
single-target request to it would be built (``Exchange._forward``: pass-through or translation, media, headers),
marks the request with ``TARGET_HEADER`` for the cluster's credential injectors, and records how the attempt ended.
Envoy decides whether to try the next target; the listener's exchange translates the answer that reaches the client
(``fallback.FallbackHandler``).

Headers changed by an attempt stay changed for the next one (Envoy keeps one header map for all attempts), so every
attempt sets or removes every header an attempt may touch.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.core import routing
from extproc.core.actions import CONTINUE, Forward, Reply
from extproc.core.config import Config, Provider, Upstream
from extproc.core.contract import (
    ATTEMPT_ATTRIBUTES,
    ATTEMPT_REPLY,
    LOCAL_ERROR_HEADER,
    RATE_KEY_HEADER,
    RATE_MODEL_HEADER,
    ROUTE_HEADER,
    TARGET_HEADER,
    UPSTREAM_STATUS_HEADER,
)
from extproc.core.exchange import _ENDED, _NEW, _REQUEST_BODY, _RESPONSE_HEADERS, Exchange, ExchangeError, Gateway
from extproc.core.record import outcome
from extproc.translation.errors import GatewayError
from extproc.translation.formats import registry
from extproc.translation.formats.contract import Endpoint, WireFormat

# Headers of one attempt that must not reach another attempt's provider: credentials (the cluster's injector sets the
# right one after this filter), and every format's own headers (set again by an attempt to that format).
_EVERY_FORMAT_HEADER = tuple(dict.fromkeys(h for f in registry.FORMATS.values() for h, _ in f.EXTRA_HEADERS))
_NOT_FOR_ATTEMPT = (ROUTE_HEADER, RATE_KEY_HEADER, RATE_MODEL_HEADER, "x-envoy-upstream-rq-timeout-ms")


class AttemptError(ExchangeError):
    """Envoy's attributes for an attempt are missing or malformed (a bootstrap that does not match the service)."""


class Attempt(Exchange):
    """The request phases of one attempt (headers, body), then the attempt's answer headers (how it ended)."""

    __slots__ = ("_target_model", "context_headers", "provider")

    ROUTES_FALLBACK = False

    def __init__(self, gateway: Gateway, attributes: dict[str, str]) -> None:
        super().__init__(gateway)
        rec = self.record
        rec.attempt = True
        try:
            name, fmt, prefix, model = orjson.loads(attributes[ATTEMPT_ATTRIBUTES[0]])
            context = orjson.loads(attributes[ATTEMPT_ATTRIBUTES[1]])
            path = context["path"]
            self.context_headers: dict[str, str] = context.get("headers") or {}
            registry.get(fmt)
        except (KeyError, ValueError, TypeError) as exc:
            raise AttemptError(f"attempt attributes missing or malformed: {exc!r}") from None
        self.provider = Provider(name, fmt, "", Upstream("", "", 0, prefix), None)
        rec.provider, rec.served_by = name, f"{name}/{model}"
        rec.path, _, self.query = path.partition("?")
        self._target_model = model

    def on_request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Forward | Reply:
        self._expect(_NEW)
        rec = self.record
        rec.request_id = headers.get("x-request-id")
        try:
            routed = registry.route(headers.get(":method", "POST"), rec.path, self.query)
        except registry.RoutingError as exc:
            self.client = exc.fmt
            return self.error_reply(exc.error)
        if routed is None:
            raise AttemptError(f"attempt for a path no format serves: {rec.path}")
        self.client, self.endpoint = routed
        rec.client = self.client.NAME
        self.phase = _REQUEST_BODY
        return CONTINUE

    def _resolve(self, cfg: Config, client: WireFormat, endpoint: Endpoint, model: str) -> routing.Target:
        """The attempt's target, from Envoy (its endpoint's metadata), not from the config: a target list that
        changed on reload cannot send an attempt astray."""
        fmt = registry.get(self.provider.format)
        return routing.Target(self.provider, fmt, self._target_model, passthrough=fmt is client)

    def _forward(self, body: bytes, resumed: bool = False) -> Any:
        action = super()._forward(body, resumed)
        return self._for_attempt(action) if isinstance(action, Forward) else action

    def _for_attempt(self, fwd: Forward) -> Forward:
        """A single-target request's header changes, made fit for an attempt: no routing (the route is chosen), the
        target named for the credential injectors, and what an earlier attempt may have left undone."""
        target = self.target
        assert target is not None
        set_headers = [(k, v) for k, v in fwd.set_headers if k not in _NOT_FOR_ATTEMPT]
        set_headers.append((TARGET_HEADER, target.provider.name))
        if target.passthrough:  # the client's own format headers, as it sent them
            set_headers += [(k, v) for k, v in self.context_headers.items()]
        names = {k for k, _ in set_headers}
        remove = [h for h in (*routing.STRIP_ALWAYS, *routing.STRIP_CROSS, *_EVERY_FORMAT_HEADER) if h not in names]
        return Forward(set_headers, remove, fwd.body)

    def on_response_headers(self, headers: dict[str, str], end_of_stream: bool = False) -> Forward:
        """How the attempt ended. A 429 is shown to Envoy as a 503 (the provider's status kept aside) when rate
        limits cool a target down: Envoy's outlier detection counts 5xx only."""
        self._expect(_RESPONSE_HEADERS, _REQUEST_BODY, _NEW)
        self.phase = _ENDED
        rec = self.record
        status = headers.get(":status", "")
        rec.status = int(status) if status.isdigit() else 0
        rec.outcome = outcome(rec.status, None)
        if rec.status == 429 and self.config.fallback.cooldown.rate_limited:
            return Forward([(":status", "503"), (UPSTREAM_STATUS_HEADER, "429")])
        return CONTINUE

    def error_reply(self, err: GatewayError) -> Reply:
        """This attempt cannot be built for its target: the client gets the error (in its own format) at once."""
        reply = super().error_reply(err)
        reply.headers.append((LOCAL_ERROR_HEADER, ATTEMPT_REPLY))
        self.record.outcome = "not_sent"
        return reply
