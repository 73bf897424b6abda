"""Claude on AWS Bedrock through InvokeModel (``POST /model/{modelId}/invoke``, ``/invoke-with-response-stream``):
Anthropic's Messages format in Bedrock's envelope (provider side only).

The body is Anthropic's without ``model`` (the path names it) and ``stream`` (the path says it), with
``anthropic_version: bedrock-2023-05-31``; beta features go in the body's ``anthropic_beta`` list. The answer is
Anthropic's message, byte for byte. A stream is an AWS event stream whose ``chunk`` events each carry one Anthropic
stream event, base64 in ``{"bytes": ...}`` (the last one's ``amazon-bedrock-invocationMetrics`` included). Errors
are Bedrock's (``bedrock.parse_error``). Requests are signed by Envoy (SigV4).

An Anthropic client's request goes as it was written, moved into this envelope (``PASSTHROUGH_FROM``); its stream
comes back as the Anthropic SSE it would have got from Anthropic (``SseFromEventStream``).
"""

from __future__ import annotations

from typing import Any

import orjson

from extproc.translation import embeddings
from extproc.translation.canonical import (
    Document,
    EmbedRequest,
    EmbedResponse,
    Event,
    Image,
    Request,
    Response,
    StreamError,
    Usage,
)
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, bedrock
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    GENERATE,
    BuildOptions,
    CredentialHeader,
    Endpoint,
    PassThroughStream,
    StreamOptions,
)
from extproc.translation.sse import encode_event

NAME = "bedrock_anthropic"
CREDENTIAL = CredentialHeader("authorization")  # unused: Envoy signs (SigV4)
EXTRA_HEADERS: list[tuple[str, str]] = []  # the version travels in the body
COUNTS_TOKENS = True
EMBEDS = False
PASSTHROUGH_FROM: str | None = "anthropic"
STREAM_CONTENT_TYPE = bedrock.STREAM_CONTENT_TYPE
VERSION = "bedrock-2023-05-31"


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    base = bedrock.upstream_path(model=model, stream=False)[: -len("/converse")]
    if kind == COUNT_TOKENS:
        return base + "/count-tokens"
    return base + ("/invoke-with-response-stream" if stream else "/invoke")


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    return upstream_path(model=model, stream=endpoint.stream)


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in data.items() if k not in ("model", "stream")}
    out["anthropic_version"] = VERSION
    return out


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return orjson.dumps(_envelope(head)), (SseFromEventStream() if stream else None)


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    return orjson.dumps(_envelope(orjson.loads(anthropic.build_request(req, model=model, options=options))))


def parse_response(body: bytes) -> Response:
    return anthropic.parse_response(body)


def parse_error(status: int, body: bytes) -> GatewayError:
    return bedrock.parse_error(status, body)


def _chunks(frames: bedrock.EventFrames, chunk: bytes) -> list[dict[str, Any] | GatewayError]:
    """The Anthropic events (decoded JSON objects) inside the event stream's ``chunk`` frames."""
    out: list[dict[str, Any] | GatewayError] = []
    for item in frames.feed(chunk):
        if isinstance(item, GatewayError):
            out.append(item)
            continue
        kind, payload = item
        data = payload.get("bytes")
        if kind == "chunk" and isinstance(data, str):
            event = bedrock.decode_base64_json(data)
            if event is None:
                out.append(GatewayError("server_error", "Bedrock sent a stream chunk that is not JSON", 502))
                break
            out.append(event)
    return out


def _sse(event: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(event), str(event.get("type") or "message"))


class StreamDecoder:
    """InvokeModelWithResponseStream -> canonical events, through Anthropic's own stream decoder."""

    __slots__ = ("_frames", "_inner")

    def __init__(self) -> None:
        self._frames = bedrock.EventFrames()
        self._inner = anthropic.StreamDecoder()

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for item in _chunks(self._frames, chunk):
            if isinstance(item, GatewayError):
                out.append(StreamError(item))
                break
            out.extend(self._inner.feed(_sse(item)))
        return out

    def close(self) -> list[Event]:
        if self._frames.failed:
            return []
        return self._inner.close()


class SseFromEventStream:
    """An Anthropic client's pass-through stream from Claude on Bedrock: each ``chunk`` frame becomes the Anthropic
    SSE event it carries; usage is read on the way (for the gateway's metrics); an exception frame becomes
    Anthropic's in-stream ``error`` event."""

    __slots__ = ("_frames", "usage")

    media_type = "text/event-stream"

    def __init__(self) -> None:
        self._frames = bedrock.EventFrames()
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for item in _chunks(self._frames, chunk):
            if isinstance(item, GatewayError):
                out.append(anthropic.stream_encoder(StreamOptions()).error(item))
                break
            self._account(item)
            out.append(_sse(item))
        return b"".join(out)

    def close(self) -> bytes:
        return b""

    def _account(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            u = event["message"].get("usage")
            if isinstance(u, dict):
                cached, created = _int(u.get("cache_read_input_tokens")), _int(u.get("cache_creation_input_tokens"))
                self.usage = Usage(_int(u.get("input_tokens")) + cached + created, _int(u.get("output_tokens")),
                                   cached_tokens=cached, cache_creation_tokens=created)  # fmt: skip
        elif kind == "message_delta" and isinstance(event.get("usage"), dict) and self.usage is not None:
            out = event["usage"].get("output_tokens")
            if isinstance(out, int) and not isinstance(out, bool):
                self.usage.output_tokens = out


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder()


def fetches_url(part: Image | Document) -> bool | str:
    """Claude on Bedrock reads no URL: images and documents go inline."""
    return False


def build_count_request(req: Request, *, model: str) -> bytes:
    body = build_request(req, model=model)
    return orjson.dumps({"input": {"invokeModel": {"body": body.decode()}}})


def parse_count_response(body: bytes) -> int:
    return bedrock.parse_count_response(body)


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    raise embeddings.no_embeddings("Claude on Bedrock (InvokeModel)")


def parse_embed_response(body: bytes) -> EmbedResponse:
    raise embeddings.no_embeddings("Claude on Bedrock (InvokeModel)")
