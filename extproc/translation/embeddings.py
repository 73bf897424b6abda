"""What every format's embeddings share: vectors as base64 (little-endian float32, OpenAI's ``encoding_format:
base64``), and the task types (Gemini's names are the canonical ones)."""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

from extproc.translation.errors import GatewayError

TASK_TYPES = (
    "TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
    "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY",
)  # fmt: skip


def to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def from_base64(data: str) -> list[float]:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise GatewayError("server_error", "provider sent an embedding that is not base64", 502) from None
    if len(raw) % 4:
        raise GatewayError("server_error", "provider sent a base64 embedding that is not float32s", 502)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def floats(value: Any) -> list[float]:
    """A provider's vector (a JSON array of numbers) or a 502."""
    if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        raise GatewayError("server_error", "provider sent an embedding that is not an array of numbers", 502)
    return [float(x) for x in value]


def no_embeddings(api: str) -> GatewayError:
    return GatewayError("invalid_request", f"{api} has no embeddings endpoint", 400, param="model")
