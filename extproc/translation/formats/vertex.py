"""Gemini on Google Vertex AI (``.../publishers/google/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, ``:countTokens``): the Gemini format on Vertex's paths (provider side only).

The provider's base prefix is ``/v1/projects/{project}/locations/{location}`` (``Provider.upstream``); the token is
an OAuth2 access token Envoy injects as ``Authorization: Bearer`` (the gateway's refresher keeps it fresh). Bodies,
answers, streams and errors are Gemini's (Vertex's errors are Google's ``{"error": {"code", "message",
"status"}}``; a stream's may come as a one-element array). What differs:

- a Gemini client's request goes as it was written (``PASSTHROUGH_FROM``), on Vertex's path;
- Gemini API File URIs (``generativelanguage.googleapis.com/.../files/...``) mean nothing to Vertex: refused with a
  clear 400 rather than sent;
- ``countTokens`` takes ``contents``, ``systemInstruction``, ``tools`` and ``generationConfig`` at the top level.
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.translation import embeddings, media
from extproc.translation.canonical import Document, EmbedRequest, EmbedResponse, Image, Request, Response, Usage
from extproc.translation.errors import GatewayError
from extproc.translation.formats import gemini
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

NAME = "vertex"
CREDENTIAL = CredentialHeader("authorization", "Bearer ")  # an OAuth2 access token, never an API key
EXTRA_HEADERS: list[tuple[str, str]] = []
COUNTS_TOKENS = True
EMBEDS = True  # text-embedding-005, gemini-embedding-001, text-multilingual-embedding-002 (``:predict``)
PASSTHROUGH_FROM: str | None = "gemini"
STREAM_CONTENT_TYPE = "text/event-stream"


def _path(model: str, method: str, sse: bool) -> str:
    path = f"/publishers/google/models/{model}:{method}"
    return path + "?alt=sse" if sse and method == "streamGenerateContent" else path


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == COUNT_TOKENS:
        return _path(model, "countTokens", False)
    if kind == EMBED:
        return _path(model, "predict", False)
    return _path(model, "streamGenerateContent" if stream else "generateContent", True)


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    """The Gemini client's method on Vertex's path; ``alt=sse`` kept (without it Vertex answers a JSON array too)."""
    o = endpoint.opts
    return _path(model, o["action"], bool(o["sse"]))


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return body, None  # the model is in the path


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    return gemini.build_request(req, model=model, options=options)


def parse_response(body: bytes) -> Response:
    return gemini.parse_response(body)


def parse_error(status: int, body: bytes) -> GatewayError:
    return gemini.parse_error(status, body)


def stream_decoder(opts: StreamOptions) -> gemini.StreamDecoder:
    return gemini.stream_decoder(opts)


def fetches_url(part: Image | Document) -> bool | str:
    """Vertex reads no Gemini API File URI; anything else goes inline (fetched when ``image_fetch`` allows)."""
    if media.is_gemini_file(part.url or ""):
        return "Gemini API File URIs cannot be read by Vertex AI (upload the file to Cloud Storage or send it inline)"
    return False


def build_count_request(req: Request, *, model: str) -> bytes:
    full = orjson.loads(gemini.build_request(req, model=model))
    keep = ("contents", "systemInstruction", "tools", "generationConfig")
    return orjson.dumps({k: full[k] for k in keep if k in full})


def parse_count_response(body: bytes) -> int:
    return gemini.parse_count_response(body)


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    """Vertex's text embedding ``predict``: one instance per input, task type and title per instance."""

    def one(text: str) -> dict[str, Any]:
        item: dict[str, Any] = {"content": text}
        if req.task_type and req.task_type != "TASK_TYPE_UNSPECIFIED":
            item["task_type"] = req.task_type
        if req.title:
            item["title"] = req.title
        return item

    body: dict[str, Any] = {"instances": [one(t) for t in req.inputs]}
    if req.dimensions is not None:
        body["parameters"] = {"outputDimensionality": req.dimensions}
    return orjson.dumps(body)


def parse_embed_response(body: bytes) -> EmbedResponse:
    """``{"predictions": [{"embeddings": {"values", "statistics": {"token_count"}}}]}``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    preds = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(preds, list) or not all(
        isinstance(p, dict) and isinstance(p.get("embeddings"), dict) for p in preds
    ):
        raise GatewayError("server_error", "invalid Vertex AI embeddings answer: no predictions", 502)
    vectors, tokens = [], 0
    for p in preds:
        emb = p["embeddings"]
        vectors.append(embeddings.floats(emb.get("values")))
        stats = emb.get("statistics")
        count = stats.get("token_count") if isinstance(stats, dict) else None
        tokens += int(count) if isinstance(count, int | float) and not isinstance(count, bool) else 0
    return EmbedResponse(vectors, usage=Usage(tokens))
