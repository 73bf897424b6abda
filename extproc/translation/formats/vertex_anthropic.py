"""Claude on Google Vertex AI (``.../publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict``):
Anthropic's Messages format on Vertex's paths (provider side only).

What differs from Anthropic's own API: the model is in the path and not in the body, the body carries
``anthropic_version: vertex-2023-10-16`` (no ``anthropic-version`` header), the credential is an OAuth2 access token
(``Authorization: Bearer``, kept fresh by the gateway's refresher), token counting is
``.../publishers/anthropic/models/count-tokens:rawPredict`` with the model in the body, and errors come in two
shapes: Anthropic's (``{"type": "error", "error": {...}}``) from the model, Google's (``{"error": {"code",
"message", "status"}}``) from Vertex itself (authentication, quota, an unknown model). Answers and streams are
Anthropic's, byte for byte, so an Anthropic client's request goes as it was written (``PASSTHROUGH_FROM``), moved
into Vertex's envelope.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.translation import embeddings, jsonbytes
from extproc.translation.canonical import Document, EmbedRequest, EmbedResponse, Image, Request, Response
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats import anthropic, gemini
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    GENERATE,
    BuildOptions,
    CredentialHeader,
    Endpoint,
    PassThroughStream,
    StreamOptions,
)

NAME = "vertex_anthropic"
CREDENTIAL = CredentialHeader("authorization", "Bearer ")
EXTRA_HEADERS: list[tuple[str, str]] = []  # the version travels in the body
COUNTS_TOKENS = True
EMBEDS = False
PASSTHROUGH_FROM: str | None = "anthropic"
STREAM_CONTENT_TYPE = "text/event-stream"
VERSION = "vertex-2023-10-16"


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == COUNT_TOKENS:
        return "/publishers/anthropic/models/count-tokens:rawPredict"
    return f"/publishers/anthropic/models/{model}:{'streamRawPredict' if stream else 'rawPredict'}"


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    if path.endswith("/count_tokens"):
        return upstream_path(model=model, stream=False, kind=COUNT_TOKENS)
    return upstream_path(model=model, stream=endpoint.stream)


def _envelope(body: bytes, *, keep_model: str | None = None) -> bytes:
    """Anthropic's body in Vertex's envelope: no ``model`` (it is in the path), ``anthropic_version`` in the body.
    Every other field is the client's, unchanged."""
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    data.pop("model", None)
    if keep_model is not None:  # count-tokens names the model in the body
        data = {"model": keep_model, **data}
    data["anthropic_version"] = VERSION
    return orjson.dumps(data)


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return _envelope(jsonbytes.rewrite_model(body, model, head.get("model"))), None


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    return _envelope(anthropic.build_request(req, model=model, options=options))


def parse_response(body: bytes) -> Response:
    return anthropic.parse_response(body)


def parse_error(status: int, body: bytes) -> GatewayError:
    """Anthropic's error from the model, or Google's from Vertex (authentication, quota, unknown model)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and data.get("type") == "error":
        return anthropic.parse_error(status, body)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return gemini.parse_error(status, orjson.dumps(data))
    return anthropic.parse_error(status, body)


def stream_decoder(opts: StreamOptions) -> anthropic.StreamDecoder:
    return anthropic.stream_decoder(opts)


def fetches_url(part: Image | Document) -> bool | str:
    return anthropic.fetches_url(part)


def build_count_request(req: Request, *, model: str) -> bytes:
    return _envelope(anthropic.build_count_request(req, model=model), keep_model=model)


def parse_count_response(body: bytes) -> int:
    return anthropic.parse_count_response(body)


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    raise embeddings.no_embeddings("Claude on Vertex AI")


def parse_embed_response(body: bytes) -> EmbedResponse:
    raise embeddings.no_embeddings("Claude on Vertex AI")
