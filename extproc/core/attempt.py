"""One attempt of a request to a model with several targets, at the ext_proc filter on the model's Envoy cluster (an
upstream filter: Envoy runs it once per attempt, after choosing the attempt's endpoint) (pure).

Envoy gives the request headers with three attributes: the endpoint's target, the request's context (set by the
listener's exchange, ``fallback.prepare``) and, unless the attempt goes to the target the request was built for,
the client's own body. An attempt to that target only restores the headers it was built with (an earlier attempt
may have changed them: Envoy keeps one header map for all attempts). An attempt to another target builds that
target's request from the client's body exactly as a single-target request to it would be built
(``Exchange._forward``: pass-through or translation, media, headers) and answers the request headers with the whole
new body. The attempt's answer does not come here: the cluster's Lua filter logs its status for the listener's
exchange (and shows Envoy a 429 as a 503, so that outlier detection cools a rate-limited target down too). Envoy
decides whether to try the next target; the listener's exchange handles the answer that reaches the client
(``fallback.FallbackHandler``) and counts every attempt.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.core import fallback, routing
from extproc.core.actions import CONTINUE, Forward, Reply
from extproc.core.config import Provider, Upstream
from extproc.core.contract import ATTEMPT_ATTRIBUTES, ATTEMPT_REPLY, CONTENT_LENGTH_KEY, LOCAL_ERROR_HEADER
from extproc.core.exchange import _ENDED, _NEW, _REQUEST_BODY, _RESPONSE_HEADERS, Exchange, ExchangeError, Gateway
from extproc.translation import media
from extproc.translation.errors import GatewayError
from extproc.translation.formats import registry


class AttemptError(ExchangeError):
    """Envoy's attributes for an attempt are missing or malformed (a bootstrap that does not match the service)."""


class Attempt(Exchange):
    """The request headers of one attempt (and its body, when Envoy must send it), then its answer headers."""

    __slots__ = ("client_body", "context", "target_label", "target_model", "target_provider")

    def __init__(self, gateway: Gateway, attributes: dict[str, str]) -> None:
        super().__init__(gateway)
        rec = self.record
        rec.attempt = True
        try:
            name, ptype, api, prefix, model, *cloud = orjson.loads(attributes[ATTEMPT_ATTRIBUTES[0]])
            self.context: dict[str, Any] = orjson.loads(attributes[ATTEMPT_ATTRIBUTES[1]])
            path = self.context["path"]
            # A cloud's placement (api_version, project, location, region): its path and envelope depend on it.
            api_version, project, location, region = (cloud + [None] * 4)[:4]
            provider = Provider(
                name, ptype, "", Upstream("", "", 0, prefix), None, api, api_version, project, location, region
            )
            registry.provider(provider.format)
        except (KeyError, ValueError, TypeError) as exc:
            raise AttemptError(f"attempt attributes missing or malformed: {exc!r}") from None
        self.client_body = attributes.get(ATTEMPT_ATTRIBUTES[2], "")
        self.target_provider, self.target_model = provider, model
        self.target_label = rec.served_by = f"{name}/{model}"
        rec.provider = name
        rec.client = self.context.get("client", "")
        rec.model = self.context.get("model", "")
        rec.request_id = self.context.get("request_id")
        if rec.model in self.config.models:
            rec.model_label = rec.model
        rec.path, _, self.query = path.partition("?")

    def on_request_headers(self, headers: dict[str, str], end_of_stream: bool) -> Any:
        """The request's headers are not read: what the attempt needs came as attributes."""
        self._expect(_NEW)
        rec, ctx = self.record, self.context
        if self.target_label == ctx.get("prepared"):  # the request was built for this target: its headers back
            self.phase = _RESPONSE_HEADERS
            return Forward(ctx.get("set", []), ctx.get("remove", []))
        try:
            routed = registry.route("POST", rec.path, self.query)
        except registry.RoutingError as exc:
            self.client = exc.fmt
            return self.error_reply(exc.error)
        if routed is None:
            raise AttemptError(f"attempt for a path no format serves: {rec.path}")
        self.client, self.endpoint = routed
        rec.client = self.client.NAME
        # The attempt's target, from Envoy (its endpoint's metadata), not from the config: a target list that changed
        # on reload cannot send an attempt astray.
        fmt = registry.provider(self.target_provider.format)
        passthrough = registry.passes_through(fmt, self.client)
        self.forced = routing.Target(self.target_provider, fmt, self.target_model, passthrough=passthrough)
        if not self.client_body:  # the body Envoy holds is the client's own: have Envoy send it
            self.phase = _REQUEST_BODY
            return Forward(request_body_mode="BUFFERED")
        self.phase = _REQUEST_BODY
        action = self.on_request_body(self.client_body.encode())
        if isinstance(action, Forward):
            action.replace = True  # the new body goes with the headers' answer
        return action

    def _scope(self) -> str:
        """The request's gateway key (the attempt is not authenticated: the listener's exchange was)."""
        return str(self.context.get("scope", ""))

    def _forward(self, body: bytes, resumed: bool = False) -> Forward | media.FetchMedia:
        action = super()._forward(body, resumed)
        if not isinstance(action, Forward):
            return action
        target = self.target
        assert target is not None
        kept = self.context.get("headers") or {}
        set_headers, remove = fallback.attempt_headers(action, target.passthrough, kept)
        new_body = body if action.body is None else action.body
        return Forward(set_headers, remove, new_body, metadata={CONTENT_LENGTH_KEY: str(len(new_body))})

    def on_fetched(self, result: dict[str, media.Fetched] | GatewayError) -> Forward | Reply:
        action = super().on_fetched(result)
        if isinstance(action, Forward) and self.client_body:
            action.replace = True
        return action

    def on_response_headers(self, headers: dict[str, str], end_of_stream: bool = False) -> Forward:
        """Not sent by the bootstrap (the cluster's Lua filter logs each attempt's status); taken if it comes."""
        self._expect(_RESPONSE_HEADERS, _REQUEST_BODY, _NEW)
        self.phase = _ENDED
        return CONTINUE

    def error_reply(self, err: GatewayError) -> Reply:
        """This attempt cannot be built for its target: the client gets the error (in its own format) at once."""
        reply = super().error_reply(err)
        reply.headers.append((LOCAL_ERROR_HEADER, ATTEMPT_REPLY))
        return reply
