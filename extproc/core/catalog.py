"""Model listing answered by the gateway itself, from the config, in each API's own shape (pure, no I/O).

``GET /openai/v1/models[/{id}]``, ``GET /anthropic/v1/models[/{id}]`` and ``GET /gemini/{v1,v1beta}/models[/{name}]``
list the configured model names (aliases included: they are what clients ask for), so each official SDK's
``models.list()`` / ``models.retrieve()`` / ``models.get()`` parses the answer. An unknown model is a 404 in the
client's error format (the caller turns the raised ``GatewayError`` into it). Unknown names that ``default_provider``
would forward are not listed: the gateway cannot know them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from extproc.core.config import Config, Model
from extproc.translation.errors import GatewayError, invalid

_EPOCH = "1970-01-01T00:00:00Z"
_GEMINI_PATH = re.compile(r"^/gemini/(v1|v1beta)/models(?:/([^:]+))?$")
_GEMINI_METHODS = ("generateContent", "streamGenerateContent")


def gemini_models_path(path: str) -> tuple[str, str | None] | None:
    """``/gemini/v1beta/models`` -> ("v1beta", None); ``/gemini/v1/models/x`` -> ("v1", "x"); else None."""
    m = _GEMINI_PATH.match(path)
    if m is None:
        return None
    name = m.group(2)
    return m.group(1), (unquote(name) if name else None)


def _unknown(name: str) -> GatewayError:
    return GatewayError("unknown_model", f"model '{name}' is not configured on this gateway", 404, param="model")


def _model(cfg: Config, name: str) -> Model:
    m = cfg.models.get(name)
    if m is None:
        raise _unknown(name)
    return m


def _query(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def _int_param(q: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
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


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI: {"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}
# ---------------------------------------------------------------------------------------------------------------------
def _openai_model(cfg: Config, m: Model) -> dict[str, Any]:
    return {"id": m.name, "object": "model", "created": 0, "owned_by": m.provider}


def openai_models(cfg: Config, model_id: str | None) -> bytes:
    if model_id is not None:
        return orjson.dumps(_openai_model(cfg, _model(cfg, model_id)))
    return orjson.dumps({"object": "list", "data": [_openai_model(cfg, m) for m in cfg.models.values()]})


# ---------------------------------------------------------------------------------------------------------------------
# Anthropic: {"data": [ModelInfo], "has_more", "first_id", "last_id"}, paged by after_id / before_id / limit
# ---------------------------------------------------------------------------------------------------------------------
def _anthropic_model(m: Model) -> dict[str, Any]:
    return {
        "type": "model",
        "id": m.name,
        "display_name": m.description or m.name,
        "created_at": _EPOCH,
        "lifecycle": "active",
    }


def anthropic_models(cfg: Config, model_id: str | None, query: str = "") -> bytes:
    if model_id is not None:
        return orjson.dumps(_anthropic_model(_model(cfg, model_id)))
    q = _query(query)
    limit = _int_param(q, "limit", 20, 1, 1000)
    names = list(cfg.models)
    start, end = 0, len(names)
    if q.get("after_id"):
        if q["after_id"] not in cfg.models:
            raise invalid(f"after_id '{q['after_id']}' is not a model id", param="after_id")
        start = names.index(q["after_id"]) + 1
    if q.get("before_id"):
        if q["before_id"] not in cfg.models:
            raise invalid(f"before_id '{q['before_id']}' is not a model id", param="before_id")
        end = names.index(q["before_id"])
        start = max(start, end - limit)
    page = names[start:end][:limit]
    has_more = (start + len(page) < end) if not q.get("before_id") else start > 0
    data = [_anthropic_model(cfg.models[n]) for n in page]
    return orjson.dumps(
        {
            "data": data,
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )


# ---------------------------------------------------------------------------------------------------------------------
# Gemini: {"models": [Model], "nextPageToken"}, paged by pageSize / pageToken
# ---------------------------------------------------------------------------------------------------------------------
def _gemini_model(cfg: Config, m: Model) -> dict[str, Any]:
    methods = list(_GEMINI_METHODS)
    if cfg.providers[m.provider].type == "gemini":
        methods.append("countTokens")  # passed through only to Gemini-type providers
    return {
        "name": f"models/{m.name}",
        "baseModelId": m.name,
        "version": "001",
        "displayName": m.name,
        "description": m.description or f"{m.target_model} via {m.provider}",
        "supportedGenerationMethods": methods,
    }


def gemini_models(cfg: Config, name: str | None, query: str = "") -> bytes:
    if name is not None:
        return orjson.dumps(_gemini_model(cfg, _model(cfg, name.removeprefix("models/"))))
    q = _query(query)
    size = _int_param(q, "pageSize", 50, 1, 1000)
    token = q.get("pageToken") or "0"
    if not token.isdigit():
        raise invalid("invalid pageToken", param="pageToken")
    start = int(token)
    names = list(cfg.models)
    page = names[start : start + size]
    body: dict[str, Any] = {"models": [_gemini_model(cfg, cfg.models[n]) for n in page]}
    if start + size < len(names):
        body["nextPageToken"] = str(start + size)
    return orjson.dumps(body)
