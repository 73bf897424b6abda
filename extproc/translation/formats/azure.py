"""Azure OpenAI's deployment URLs (``/openai/deployments/{deployment}/chat/completions?api-version=...``): the OpenAI
Chat Completions format on a cloud's paths, with Azure's content filters and error shapes (provider side only).

The deployment is the model's target name (the config's ``target_model``); the ``api-version`` query is the
provider's (``Provider.query``). Azure's newer ``/openai/v1/`` surface takes the OpenAI format unchanged (the model
in the body is the deployment) and needs no module of its own: a provider with ``api_version: v1`` speaks ``openai``
(or ``responses``) on that prefix.

What differs from OpenAI's own answers:

- every answer may carry ``prompt_filter_results`` and, per choice, ``content_filter_results``; a choice stopped by
  the output filter has ``finish_reason: content_filter`` (canonical ``content_filter``);
- a stream starts with a chunk that has no choices, only ``prompt_filter_results`` (and empty ``id``/``model``): it
  is skipped, so the stream's id and model come from the first real chunk;
- a prompt the input filter refuses is a 400 ``{"error": {"code": "content_filter", "innererror": {"code":
  "ResponsibleAIPolicyViolation", "content_filter_result": {...}}}}``; the categories that fired are named in the
  message the client gets;
- a deployment that does not exist is a 404 ``DeploymentNotFound`` (the client's unknown-model error); an Entra ID
  token refused is ``{"statusCode": 401, "message": ...}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from extproc.translation.canonical import Document, EmbedRequest, EmbedResponse, Event, Image, Request, Response
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats import openai
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    EMBED,
    GENERATE,
    BuildOptions,
    CredentialHeader,
    Endpoint,
    PassThroughStream,
    StreamOptions,
)
from extproc.translation.sse import SSEEvent, SSEParser, encode_event

NAME = "azure"
# An API key goes in ``api-key``; an Entra ID token (``credentials: entra``) replaces it with ``Authorization: Bearer``
# (the provider's credential header, ``extproc.core.config.credential_header``).
CREDENTIAL = CredentialHeader("api-key")
EXTRA_HEADERS: list[tuple[str, str]] = []
COUNTS_TOKENS = False
EMBEDS = True
PASSTHROUGH_FROM: str | None = "openai"  # an OpenAI client's request goes as it was written, on Azure's path
STREAM_CONTENT_TYPE = "text/event-stream"


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == COUNT_TOKENS:
        raise invalid("Azure OpenAI cannot count tokens", param="model")
    return f"/openai/deployments/{quote(model, safe='')}/{'embeddings' if kind == EMBED else 'chat/completions'}"


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    """The deployment's path; the client's query (none is defined for Chat Completions) is not Azure's."""
    return upstream_path(model=model, stream=False, kind=endpoint.kind)


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return openai.passthrough_body(body, head, model=model, stream=stream)


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    return openai.build_request(req, model=model, options=options)


def parse_response(body: bytes) -> Response:
    return openai.parse_response(body)


def _fired(result: Any) -> list[str]:
    """The content-filter categories that filtered (``{"hate": {"filtered": true, "severity": "high"}, ...}``)."""
    out = []
    if isinstance(result, dict):
        for name, value in result.items():
            if isinstance(value, dict) and value.get("filtered") is True:
                severity = value.get("severity")
                out.append(f"{name} ({severity})" if isinstance(severity, str) else str(name))
    return out


def parse_error(status: int, body: bytes) -> GatewayError:
    err = openai.parse_error(status, body)
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return err
    inner = data.get("error") if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        return err
    code = inner.get("code")
    if code == "DeploymentNotFound":
        err.type = "unknown_model"
    elif code == "content_filter":
        details = inner.get("innererror")
        fired = _fired(details.get("content_filter_result")) if isinstance(details, dict) else []
        if fired:
            err.message = f"{err.message} (Azure content filter: {', '.join(fired)})"
    return err


class StreamDecoder:
    """Azure's Chat Completions stream: OpenAI's chunks, less the filter-only chunks (no choices, no usage)."""

    __slots__ = ("_inner", "_sse")

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._inner = openai.StreamDecoder()

    def feed(self, chunk: bytes) -> list[Event]:
        return self._pass(self._sse.feed(chunk))

    def close(self) -> list[Event]:
        return self._pass(self._sse.close()) + self._inner.close()

    def _pass(self, events: list[SSEEvent]) -> list[Event]:
        out: list[Event] = []
        for ev in events:
            if not _filter_only(ev.data):
                out.extend(self._inner.feed(encode_event(ev.data.encode(), ev.event)))
        return out


def _filter_only(data: str) -> bool:
    """A chunk with no choices and no usage: Azure's prompt filter report (or a keep-alive)."""
    if '"choices":[]' not in data.replace(" ", "") or '"usage":{' in data.replace(" ", ""):
        return False
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and not isinstance(obj.get("usage"), dict)


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder()


def fetches_url(part: Image | Document) -> bool | str:
    return openai.fetches_url(part)


def build_count_request(req: Request, *, model: str) -> bytes:
    raise invalid(f"token counting for model '{req.model}' is not available: Azure OpenAI cannot count", param="model")


def parse_count_response(body: bytes) -> int:
    raise GatewayError("server_error", "Azure OpenAI has no token counting endpoint", 502)


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    return openai.build_embed_request(req, model=model)


def parse_embed_response(body: bytes) -> EmbedResponse:
    return openai.parse_embed_response(body)
