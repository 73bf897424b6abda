"""Embeddings on the strict mocks: OpenAI's ``POST /v1/embeddings`` and Gemini's ``:batchEmbedContents`` /
``:embedContent`` (subclasses of the OpenAI and Gemini mocks), and the vectors every mock answers.

Each input text gets ``vector(text, dims)``: deterministic, exact in float32, so a test can compare what its client
got (floats or base64) with what the provider sent. Usage counts one token per word. The Azure, Vertex and Bedrock
mocks serve their own embeddings routes with the same vectors.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from openai.types import embedding_create_params
from pydantic import TypeAdapter, ValidationError

from tests.mocks.gemini_api import GeminiApi
from tests.mocks.openai_api import OpenAIApi
from tests.mocks.server import ApiError, Conv, Received, is_int

DEFAULT_DIMS = 8
GEMINI_TASKS = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
                "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY", "TASK_TYPE_UNSPECIFIED")  # fmt: skip


def vector(text: str, dims: int | None = None) -> list[float]:
    """The mock's embedding of ``text``: multiples of 1/8 (exact in float32), different for different texts."""
    seed = sum(text.encode()) + len(text)
    return [((seed * (i + 3)) % 17 - 8) / 8 for i in range(dims or DEFAULT_DIMS)]


def tokens(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


def b64(vec: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


_OPENAI_PARAMS: TypeAdapter[Any] = TypeAdapter(embedding_create_params.EmbeddingCreateParams)


class OpenAIEmbedApi(OpenAIApi):
    """The OpenAI mock with ``/v1/embeddings`` (for ``models``; chat models are not embedding models)."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self.embed_models = models

    def route(self, method: str, path: str) -> str:
        if method == "POST" and path == "/v1/embeddings":
            return "embeddings"
        return super().route(method, path)

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        if endpoint != "embeddings":
            return super().validate(endpoint, body, query, rec)
        extra = set(body) - {"input", "model", "dimensions", "encoding_format", "user"}
        if extra:
            raise ApiError(400, f"Unrecognized request argument supplied: {sorted(extra)[0]}",
                           etype="invalid_request_error")  # fmt: skip
        try:
            _OPENAI_PARAMS.validate_python(body, strict=True)
        except ValidationError as exc:
            raise ApiError(400, f"Invalid request: {exc.errors()[0]['msg']}", etype="invalid_request_error") from None
        model = body["model"]
        if model not in self.embed_models:
            raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                           etype="invalid_request_error", code="model_not_found")  # fmt: skip
        raw = body["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if not texts or not all(isinstance(t, str) and t for t in texts):
            msg = (
                "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
            )
            raise ApiError(400, msg, etype="invalid_request_error")
        dims = body.get("dimensions")
        if dims is not None and not (is_int(dims) and 1 <= dims <= 64):
            raise ApiError(400, "This model does not support specifying dimensions.", etype="invalid_request_error")
        conv = Conv(model=model, stream=False, last_user_text=" ".join(texts))
        conv.embed = {"texts": texts, "dims": dims, "encoding": body.get("encoding_format", "float")}
        return conv

    def embed_body(self, conv: Conv) -> dict:
        e = conv.embed
        data = []
        for i, text in enumerate(e["texts"]):
            vec = vector(text, e["dims"])
            data.append(
                {"object": "embedding", "index": i, "embedding": b64(vec) if e["encoding"] == "base64" else vec}
            )
        n = tokens(e["texts"])
        return {"object": "list", "data": data, "model": conv.model, "usage": {"prompt_tokens": n, "total_tokens": n}}


class GeminiEmbedApi(GeminiApi):
    """The Gemini mock with ``:embedContent`` and ``:batchEmbedContents`` (for ``models``)."""

    def __init__(self, models: tuple[str, ...]) -> None:
        self.embed_models = models

    def route(self, method: str, path: str) -> str:
        if method == "POST" and path.endswith((":embedContent", ":batchEmbedContents")):
            return path
        return super().route(method, path)

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        if not endpoint.endswith((":embedContent", ":batchEmbedContents")):
            return super().validate(endpoint, body, query, rec)
        model, _, action = endpoint.rsplit("/", 1)[1].partition(":")
        if model not in self.embed_models:
            raise ApiError(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                           "embedContent.", etype="NOT_FOUND")  # fmt: skip
        if action == "embedContent":
            items = [body]
        else:
            if set(body) != {"requests"} or not isinstance(body["requests"], list) or not body["requests"]:
                raise ApiError(400, "Invalid JSON payload received. 'requests' is required.", etype="INVALID_ARGUMENT")
            items = body["requests"]
        texts, settings = [], set()
        for i, item in enumerate(items):
            allowed = {"model", "content", "taskType", "title", "outputDimensionality"}
            if not isinstance(item, dict) or set(item) - allowed:
                raise ApiError(400, f"Invalid JSON payload received. Unknown name in requests[{i}].",
                               etype="INVALID_ARGUMENT")  # fmt: skip
            if action == "batchEmbedContents" and item.get("model") != f"models/{model}":
                raise ApiError(400, f"requests[{i}].model must be models/{model}", etype="INVALID_ARGUMENT")
            parts = (item.get("content") or {}).get("parts")
            if not isinstance(parts, list) or not parts or not all(isinstance(p.get("text"), str) for p in parts):
                raise ApiError(400, f"requests[{i}].content must have text parts", etype="INVALID_ARGUMENT")
            task = item.get("taskType")
            if task is not None and task not in GEMINI_TASKS:
                raise ApiError(400, f"Invalid value at 'requests[{i}].task_type'", etype="INVALID_ARGUMENT")
            if item.get("title") is not None and task != "RETRIEVAL_DOCUMENT":
                raise ApiError(400, "Title is only valid with task type RETRIEVAL_DOCUMENT.", etype="INVALID_ARGUMENT")
            texts.append(" ".join(p["text"] for p in parts))
            settings.add((task, item.get("title"), item.get("outputDimensionality")))
        conv = Conv(model=model, stream=False, last_user_text=" ".join(texts))
        dims = next(iter(settings))[2] if len(settings) == 1 else None
        conv.embed = {"texts": texts, "dims": dims, "batch": action == "batchEmbedContents", "task": settings}
        return conv

    def embed_body(self, conv: Conv) -> dict:
        e = conv.embed
        vecs = [{"values": vector(t, e["dims"])} for t in e["texts"]]
        return {"embeddings": vecs} if e["batch"] else {"embedding": vecs[0]}
