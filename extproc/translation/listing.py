"""What the model listings of every format share: finding a model, query parameters, the 404 (pure)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats.contract import ModelInfo


def unknown(name: str) -> GatewayError:
    return GatewayError("unknown_model", f"model '{name}' is not configured on this gateway", 404, param="model")


def find(models: list[ModelInfo], name: str) -> ModelInfo:
    for m in models:
        if m.name == name:
            return m
    raise unknown(name)


def query_params(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def int_param(q: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"'{key}' must be an integer", param=key) from None
    if value < lo:
        raise invalid(f"'{key}' must be at least {lo}", param=key)
    return min(value, hi)
