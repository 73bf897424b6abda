"""A made-up 4th wire format, "echo", for tests/unit/test_registry.py: one module that satisfies the format contract.

Client side: ``POST /echo/v1/say`` with ``{"model", "prompt", "stream"?}`` answers ``{"said", "model", "tokens"}``;
``GET /echo/v1/models`` lists ``{"names": [...]}``; errors are ``{"oops": {"status", "kind", "text"}}``; the gateway
key comes in ``x-echo-key``. Provider side: ``POST /say`` with ``{"model", "prompt"}`` answers ``{"said", "tokens"}``,
the key goes in ``x-echo-secret``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from extproc.translation import canonical as c
from extproc.translation import listing
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats.contract import (
    GENERATE,
    MODELS,
    BuildOptions,
    CredentialHeader,
    Endpoint,
    ModelInfo,
    PassThroughStream,
    StreamOptions,
)

NAME = "echo"
PATH_PREFIX = "/echo/"
CREDENTIAL = CredentialHeader("x-echo-secret")
EXTRA_HEADERS: list[tuple[str, str]] = [("x-echo-version", "1")]
COUNTS_TOKENS = False
STATE = None


def route(method: str, path: str, query: str) -> Endpoint | None:
    if path == "/echo/v1/say":
        return Endpoint(GENERATE)
    if path == "/echo/v1/models":
        return Endpoint(MODELS, methods=("GET",))
    return None


def client_credential(headers: Mapping[str, str], query: str) -> str | None:
    return headers.get("x-echo-key")


def request_model(endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
    return head.get("model"), head.get("stream") is True


def parse_request(body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False) -> c.Request:
    data = body if isinstance(body, dict) else orjson.loads(body)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise invalid("prompt must be a string", param="prompt")
    return c.Request(model=model or data["model"], messages=[c.Message("user", [c.Text(prompt)])], stream=stream)


def build_response(resp: c.Response, *, model: str, request: c.Request | None = None) -> bytes:
    text = "".join(p.text for p in resp.parts if isinstance(p, c.Text))
    tokens = resp.usage.output_tokens if resp.usage else 0
    return orjson.dumps({"said": text, "model": model, "tokens": tokens})


def build_error(err: GatewayError, *, request_id: str | None) -> bytes:
    return orjson.dumps({"oops": {"status": err.status, "kind": err.type, "text": err.message}})


class _Encoder:
    media_type = "text/plain"

    def encode(self, event: c.Event) -> bytes:
        return event.text.encode() if isinstance(event, c.TextDelta) else b""

    def finish(self) -> bytes:
        return b"\n"

    def error(self, err: GatewayError) -> bytes:
        return b"!" + err.message.encode()


def stream_encoder(opts: StreamOptions) -> _Encoder:
    return _Encoder()


def list_models(models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
    if model_id is not None:
        return orjson.dumps({"names": [listing.find(models, model_id).name]})
    return orjson.dumps({"names": [m.name for m in models]})


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    return "/say"


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    return "/say"


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return orjson.dumps({**head, "model": model}), None


def build_request(req: c.Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    prompt = " ".join(p.text for m in req.messages for p in m.parts if isinstance(p, c.Text))
    return orjson.dumps({"model": model, "prompt": prompt})


def parse_response(body: bytes) -> c.Response:
    data = orjson.loads(body)
    return c.Response(id="echo-1", model="", parts=[c.Text(data["said"])], usage=c.Usage(1, data["tokens"]))


def parse_error(status: int, body: bytes) -> GatewayError:
    return GatewayError("server_error", orjson.loads(body)["oops"], status)


class _Decoder:
    def feed(self, chunk: bytes) -> list[c.Event]:
        return [c.TextDelta(chunk.decode())] if chunk else []

    def close(self) -> list[c.Event]:
        return [c.Finish("stop")]


def stream_decoder(opts: StreamOptions) -> _Decoder:
    return _Decoder()


def fetches_url(part: c.Image | c.Document) -> bool | str:
    return "echo reads no URLs"


def parse_count_request(body: bytes | dict[str, Any], *, model: str) -> c.Request:
    raise invalid("echo cannot count")


def build_count_response(tokens: int) -> bytes:
    raise invalid("echo cannot count")


def build_count_request(req: c.Request, *, model: str) -> bytes:
    raise invalid("echo cannot count")


def parse_count_response(body: bytes) -> int:
    raise invalid("echo cannot count")


EMBEDS = False


def parse_embed_request(body: bytes | dict[str, Any], *, model: str) -> c.EmbedRequest:
    raise invalid("echo has no embeddings")


def build_embed_response(resp: c.EmbedResponse, *, model: str, request: c.EmbedRequest) -> bytes:
    raise invalid("echo has no embeddings")


def build_embed_request(req: c.EmbedRequest, *, model: str) -> bytes:
    raise invalid("echo has no embeddings")


def parse_embed_response(body: bytes) -> c.EmbedResponse:
    raise invalid("echo has no embeddings")
