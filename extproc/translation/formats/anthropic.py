"""Anthropic Messages (``POST /v1/messages``), both directions.

Client side: an Anthropic SDK talks to the gateway (``parse_request``, ``build_response``, ``build_error``,
``StreamEncoder``). Provider side: the gateway talks to Anthropic (``build_request``, ``parse_response``,
``parse_error``, ``StreamDecoder``). Shapes follow the official ``anthropic`` SDK's types (``MessageCreateParams``,
``Message``, ``RawMessageStreamEvent``, ``ErrorResponse``).

Anthropic counts ``usage.input_tokens`` *exclusive* of cache reads and cache writes; the canonical model is inclusive,
so decoders add the cache counts in and encoders take them back out.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeGuard

import orjson

from extproc.translation import embeddings, errors, jsonbytes, listing, media, schemas
from extproc.translation.canonical import (
    Document,
    EmbedRequest,
    EmbedResponse,
    Event,
    Finish,
    Image,
    Message,
    MessageStart,
    Part,
    Request,
    Response,
    ResponseFormat,
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Usage,
    UsageUpdate,
    join_tool_id,
    merge_usage,
    split_tool_id,
)
from extproc.translation.capabilities import ADAPTIVE, BUDGET, Capabilities
from extproc.translation.errors import GatewayError, invalid
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    GENERATE,
    MODELS,
    BuildOptions,
    ConversationState,
    CredentialHeader,
    Endpoint,
    ModelInfo,
    PassThroughStream,
    StreamOptions,
)
from extproc.translation.sse import SSEParser, encode_event

NAME = "anthropic"

EXTRA_HEADERS: list[tuple[str, str]] = [("anthropic-version", "2023-06-01")]
# Where a provider of this format takes its key; Envoy injects it (the service never holds it).
CREDENTIAL = CredentialHeader("x-api-key")

# Gemini thought signatures ride inside the tool-call id a client sees (see canonical conventions).

_STOP_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}

_FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

# Seed error type -> Anthropic ``error.type`` (the SDK picks its exception class from the HTTP status).
_ERROR_TYPES_OUT: dict[str, str] = {
    "invalid_request": "invalid_request_error",
    "auth": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "unknown_model": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "server_error": "api_error",
    "network": "api_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
}

# Anthropic ``error.type`` -> (seed type, the status Anthropic answers it with).
_ERROR_TYPES_IN: dict[str, tuple[str, int]] = {
    "invalid_request_error": ("invalid_request", 400),
    "authentication_error": ("auth", 401),
    "billing_error": ("permission", 402),
    "permission_error": ("permission", 403),
    "not_found_error": ("not_found", 404),
    "request_too_large": ("request_too_large", 413),
    "rate_limit_error": ("rate_limit", 429),
    "api_error": ("server_error", 500),
    "timeout_error": ("timeout", 504),
    "overloaded_error": ("overloaded", 529),
}

_EFFORTS_IN: dict[str, str] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "max"}
_EFFORTS_OUT: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "xhigh",
    "max": "max",
}
# Thinking budgets for models without adaptive thinking (before Claude 4.6), by reasoning effort.
_BUDGET_BY_EFFORT: dict[str, int] = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576}
_BUDGET_BY_EFFORT["max"] = 32768
_CLAUDE_VERSION = re.compile(r"claude-(?:(\d+)-(\d)-[a-z]|(\d+)-[a-z]|[a-z]+-(\d+)(?:-(\d)(?!\d))?)")
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------
def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int0(v: Any) -> int:
    """A usage count, 0 when absent or not an integer (mock and malformed usage blocks exist in the wild)."""
    return v if _is_int(v) else 0


def _new_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _inclusive_usage(u: dict[str, Any]) -> Usage:
    """Anthropic usage (input exclusive of cache) -> canonical (inclusive) usage."""
    cached = _int0(u.get("cache_read_input_tokens"))
    created = _int0(u.get("cache_creation_input_tokens"))
    details = u.get("output_tokens_details")
    reasoning = _int0(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(
        input_tokens=_int0(u.get("input_tokens")) + cached + created,
        output_tokens=_int0(u.get("output_tokens")),
        cached_tokens=cached,
        cache_creation_tokens=created,
        reasoning_tokens=reasoning,
    )


def _exclusive_usage(u: Usage | None) -> dict[str, Any]:
    """Canonical usage -> Anthropic's ``usage`` object (input exclusive of cache reads and writes)."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    out: dict[str, Any] = {
        "input_tokens": max(u.input_tokens - u.cached_tokens - u.cache_creation_tokens, 0),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cached_tokens,
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def _stop_reason_out(reason: str, stop_sequence: str | None, has_tool_calls: bool) -> str:
    if reason == "stop":
        if stop_sequence:
            return "stop_sequence"
        # Gemini reports STOP even when it called functions; an Anthropic client loops on tool_use.
        return "tool_use" if has_tool_calls else "end_turn"
    return _FINISH_TO_STOP.get(reason, "end_turn")


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"{what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise invalid(f"{what} must be a JSON object")
    return data


# ---------------------------------------------------------------------------------------------------------------------
# Client side: request in
# ---------------------------------------------------------------------------------------------------------------------
def parse_request(body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False) -> Request:
    """An Anthropic ``messages.create`` body (bytes, or already decoded) -> canonical Request, refusing what the real
    API refuses."""
    data = body if isinstance(body, dict) else _load_object(body, "request body")
    try:
        return _parse_request(data, model, stream)
    except GatewayError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise invalid(f"invalid request: {e}") from None


def _parse_request(data: dict[str, Any], model: str | None, stream: bool) -> Request:
    name = data.get("model", model)
    if not isinstance(name, str) or not name:
        raise invalid("model: field required (a non-empty string)", param="model")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise invalid("max_tokens: field required", param="max_tokens")
    # The SDK documents max_tokens=0 as valid (it pre-warms the prompt cache), so only negatives are refused.
    if not _is_int(max_tokens) or max_tokens < 0:
        raise invalid("max_tokens: must be a non-negative integer", param="max_tokens")
    req = Request(model=name, max_tokens=max_tokens)

    system = data.get("system")
    if system is not None:
        req.system = _parse_system(system, "system")

    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: must be a non-empty list", param="messages")
    _parse_messages(messages, req)

    _parse_sampling(data, req)
    _parse_tools(data, req)

    s = data.get("stream")
    if s is not None and not isinstance(s, bool):
        raise invalid("stream: must be a boolean", param="stream")
    req.stream = bool(s) or stream

    metadata = data.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise invalid("metadata: must be an object", param="metadata")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise invalid("metadata.user_id: must be a string", param="metadata.user_id")
        req.user = user

    _parse_thinking(data.get("thinking"), req)
    _parse_output_config(data.get("output_config"), req)
    return req


def _parse_system(system: Any, where: str) -> list[Part]:
    if isinstance(system, str):
        return [Text(system)] if system else []
    if not isinstance(system, list):
        raise invalid(f"{where}: must be a string or a list of text blocks", param=where)
    out: list[Part] = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise invalid(f"{where}.{i}: must be a text block", param=f"{where}.{i}")
        out.append(Text(block["text"]))
    return out


def _parse_messages(messages: list[Any], req: Request) -> None:
    tool_names: dict[str, str] = {}  # tool_use id (without any thought signature) -> tool name
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(msg, dict):
            raise invalid(f"{where}: must be an object", param=where)
        role = msg.get("role")
        content = msg.get("content")
        if role == "system":
            # The SDK accepts system-role messages; the canonical model keeps one system prompt.
            req.system.extend(_parse_system(content, f"{where}.content"))
            continue
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: must be 'user' or 'assistant', got {role!r}", param=f"{where}.role")
        if isinstance(content, str):
            req.messages.append(Message(role, [Text(content)]))
            continue
        if not isinstance(content, list):
            raise invalid(f"{where}.content: must be a string or a list of content blocks", param=f"{where}.content")
        parts: list[Part] = []
        for j, block in enumerate(content):
            parts.append(_parse_block(block, role, f"{where}.content.{j}", tool_names))
        req.messages.append(Message(role, parts))


def _parse_block(block: Any, role: str, where: str, tool_names: dict[str, str]) -> Part:
    if not isinstance(block, dict):
        raise invalid(f"{where}: must be an object", param=where)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid(f"{where}.text: must be a string", param=f"{where}.text")
        return Text(text)
    if kind == "image":
        return _parse_image(block, where)
    if kind == "document":
        return _parse_document(block, where)
    if kind == "tool_use":
        if role != "assistant":
            raise invalid(f"{where}: tool_use blocks may only appear in assistant messages", param=where)
        raw_id, name, args = block.get("id"), block.get("name"), block.get("input")
        if not isinstance(raw_id, str) or not raw_id:
            raise invalid(f"{where}.id: must be a non-empty string", param=f"{where}.id")
        if not isinstance(name, str) or not name:
            raise invalid(f"{where}.name: must be a non-empty string", param=f"{where}.name")
        if not isinstance(args, dict):
            raise invalid(f"{where}.input: must be an object", param=f"{where}.input")
        tid, sig = split_tool_id(raw_id)
        tool_names[tid] = name
        return ToolCall(id=tid, name=name, arguments=_dumps(args), signature=sig)
    if kind == "tool_result":
        if role != "user":
            raise invalid(f"{where}: tool_result blocks may only appear in user messages", param=where)
        raw_id = block.get("tool_use_id")
        if not isinstance(raw_id, str) or not raw_id:
            raise invalid(f"{where}.tool_use_id: must be a non-empty string", param=f"{where}.tool_use_id")
        tid, _ = split_tool_id(raw_id)
        if tid not in tool_names:
            raise invalid(
                f"{where}.tool_use_id: {raw_id!r} matches no tool_use block in an earlier assistant message",
                param=f"{where}.tool_use_id",
            )
        is_error = block.get("is_error", False)
        if not isinstance(is_error, bool):
            raise invalid(f"{where}.is_error: must be a boolean", param=f"{where}.is_error")
        return ToolResult(
            tool_call_id=tid,
            name=tool_names[tid],
            content=_parse_tool_result_content(block.get("content"), f"{where}.content"),
            is_error=is_error,
        )
    if kind == "thinking":
        if role != "assistant":
            raise invalid(f"{where}: thinking blocks may only appear in assistant messages", param=where)
        text, sig = block.get("thinking"), block.get("signature")
        if not isinstance(text, str):
            raise invalid(f"{where}.thinking: must be a string", param=f"{where}.thinking")
        if not isinstance(sig, str):
            raise invalid(f"{where}.signature: must be a string", param=f"{where}.signature")
        return Thinking(text=text, signature=sig or None)
    if kind == "redacted_thinking":
        if role != "assistant":
            raise invalid(f"{where}: redacted_thinking blocks may only appear in assistant messages", param=where)
        data = block.get("data")
        if not isinstance(data, str):
            raise invalid(f"{where}.data: must be a string", param=f"{where}.data")
        return Thinking(redacted=data)
    if isinstance(kind, str):
        raise invalid(f"{where}: content block type {kind!r} is not supported across providers", param=f"{where}.type")
    raise invalid(f"{where}.type: field required", param=f"{where}.type")


def _parse_tool_result_content(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise invalid(f"{where}: must be a string or a list of content blocks", param=where)
    out: list[Part] = []
    for k, block in enumerate(content):
        w = f"{where}.{k}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in ("text", "image", "document"):
            raise invalid(f"{w}: tool_result content must be text, image or document blocks", param=w)
        out.append(_parse_block(block, "user", w, {}))
    return out


def _source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise invalid(f"{where}.source: must be an object", param=f"{where}.source")
    return source


def _req_str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise invalid(f"{where}.{key}: must be a non-empty string", param=f"{where}.{key}")
    return v


def _parse_image(block: dict[str, Any], where: str) -> Image:
    source = _source(block, where)
    w = f"{where}.source"
    kind = source.get("type")
    if kind == "base64":
        return Image(media_type=_req_str(source, "media_type", w), data=_req_str(source, "data", w))
    if kind == "url":
        return Image(url=_req_str(source, "url", w))
    raise invalid(f"{w}.type: image source {kind!r} is not supported across providers", param=f"{w}.type")


def _parse_document(block: dict[str, Any], where: str) -> Part:
    source = _source(block, where)
    w = f"{where}.source"
    title = block.get("title")
    title = title if isinstance(title, str) else None
    kind = source.get("type")
    if kind == "base64":
        return Document(media_type=_req_str(source, "media_type", w), data=_req_str(source, "data", w), name=title)
    if kind == "url":
        return Document(url=_req_str(source, "url", w), name=title)
    if kind == "text":
        data = source.get("data")
        if not isinstance(data, str):
            raise invalid(f"{w}.data: must be a string", param=f"{w}.data")
        return Text(data)
    raise invalid(f"{w}.type: document source {kind!r} is not supported across providers", param=f"{w}.type")


def _parse_sampling(data: dict[str, Any], req: Request) -> None:
    t = data.get("temperature")
    if t is not None:
        if not _is_num(t) or not 0 <= t <= 1:
            raise invalid("temperature: must be a number between 0 and 1", param="temperature")
        req.temperature = float(t)
    p = data.get("top_p")
    if p is not None:
        if not _is_num(p) or not 0 <= p <= 1:
            raise invalid("top_p: must be a number between 0 and 1", param="top_p")
        req.top_p = float(p)
    k = data.get("top_k")
    if k is not None:
        if not _is_int(k) or k < 0:
            raise invalid("top_k: must be a non-negative integer", param="top_k")
        req.top_k = k
    stop = data.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise invalid("stop_sequences: must be a list of strings", param="stop_sequences")
        req.stop = stop


def _parse_tools(data: dict[str, Any], req: Request) -> None:
    tools = data.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("tools: must be a list", param="tools")
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            if not isinstance(tool, dict):
                raise invalid(f"{where}: must be an object", param=where)
            kind = tool.get("type")
            if kind not in (None, "custom"):
                raise invalid(f"{where}: server tool {kind!r} is not supported across providers", param=where)
            name = _req_str(tool, "name", where)
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise invalid(f"{where}.input_schema: must be an object", param=f"{where}.input_schema")
            desc = tool.get("description")
            if desc is not None and not isinstance(desc, str):
                raise invalid(f"{where}.description: must be a string", param=f"{where}.description")
            req.tools.append(Tool(name=name, description=desc, parameters=schema))
    choice = data.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise invalid("tool_choice: must be an object", param="tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        req.tool_choice = ToolChoice("auto")
    elif kind == "any":
        req.tool_choice = ToolChoice("required")
    elif kind == "none":
        req.tool_choice = ToolChoice("none")
    elif kind == "tool":
        req.tool_choice = ToolChoice("tool", _req_str(choice, "name", "tool_choice"))
    else:
        raise invalid("tool_choice.type: must be one of 'auto', 'any', 'tool', 'none'", param="tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise invalid("tool_choice.disable_parallel_tool_use: must be a boolean", param="tool_choice")
    if disable:
        req.parallel_tool_calls = False


def _parse_thinking(thinking: Any, req: Request) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise invalid("thinking: must be an object", param="thinking")
    kind = thinking.get("type")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not _is_int(budget) or budget < 1024:
            raise invalid("thinking.budget_tokens: must be an integer >= 1024", param="thinking.budget_tokens")
        if req.max_tokens is not None and budget >= req.max_tokens:
            raise invalid("thinking.budget_tokens: must be less than max_tokens", param="thinking.budget_tokens")
        req.thinking_budget = budget
    elif kind == "disabled":
        req.thinking_budget = 0
    elif kind in ("adaptive", "between_tools"):  # on, the model decides how much
        req.thinking_budget = -1
    else:
        raise invalid(
            "thinking.type: must be one of 'enabled', 'disabled', 'adaptive', 'between_tools'", param="thinking.type"
        )


def _parse_output_config(cfg: Any, req: Request) -> None:
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise invalid("output_config: must be an object", param="output_config")
    fmt = cfg.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise invalid("output_config.format.type: must be 'json_schema'", param="output_config.format")
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise invalid("output_config.format.schema: must be an object", param="output_config.format.schema")
        req.response_format = ResponseFormat(type="json_schema", schema=schema)
    effort = cfg.get("effort")
    if effort is not None:
        if effort not in _EFFORTS_IN:
            raise invalid(
                "output_config.effort: must be one of 'low', 'medium', 'high', 'xhigh', 'max'",
                param="output_config.effort",
            )
        req.reasoning_effort = _EFFORTS_IN[effort]


def rewrite_model(body: bytes, model: str) -> bytes:
    """Pass-through aliasing: only the top-level ``model`` value's bytes change (``jsonbytes``)."""
    return jsonbytes.rewrite_model(body, model)


# ---------------------------------------------------------------------------------------------------------------------
# Client side: response, error and stream out
# ---------------------------------------------------------------------------------------------------------------------
def _tool_use_block(call: ToolCall, input_obj: dict[str, Any]) -> dict[str, Any]:
    tid = join_tool_id(call.id, call.signature)
    return {"type": "tool_use", "id": tid, "name": call.name, "input": input_obj}


def build_response(resp: Response, *, model: str, request: Request | None = None) -> bytes:
    """A canonical Response -> an Anthropic ``Message`` object."""
    content: list[dict[str, Any]] = []
    has_tools = False
    for part in resp.parts:
        if isinstance(part, Text):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            has_tools = True
            content.append(_tool_use_block(part, _response_args(part, resp.finish_reason)))
        elif isinstance(part, Thinking):
            if part.redacted is not None:
                content.append({"type": "redacted_thinking", "data": part.redacted})
            else:
                content.append({"type": "thinking", "thinking": part.text, "signature": part.signature or ""})
    stop_sequence = resp.stop_sequence if resp.finish_reason == "stop" else None
    return orjson.dumps(
        {
            "id": resp.id or _new_id(),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _stop_reason_out(resp.finish_reason, stop_sequence, has_tools),
            "stop_sequence": stop_sequence,
            "usage": _exclusive_usage(resp.usage),
        }
    )


def _response_args(call: ToolCall, finish_reason: str) -> dict[str, Any]:
    """Tool arguments as the object Anthropic clients expect. A call cut off by max_tokens may hold partial JSON:
    it becomes ``{}``; invalid JSON from a provider otherwise is a provider fault (502)."""
    text = call.arguments
    if not text or text.isspace():
        return {}
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        return obj
    if finish_reason == "length":
        return {}
    raise GatewayError("server_error", f"provider returned tool call {call.name!r} with non-object arguments", 502)


def build_error(err: GatewayError, *, request_id: str | None) -> bytes:
    """Anthropic's error envelope; the SDK picks its exception class from the HTTP status (``err.status``)."""
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": _ERROR_TYPES_OUT.get(err.type, "api_error"), "message": err.message},
            "request_id": request_id,
        }
    )


class _Call:
    """A tool call being relayed to an Anthropic client: its block index once opened, fragments held until then."""

    __slots__ = ("block", "pending")

    def __init__(self) -> None:
        self.block: int | None = None
        self.pending: list[str] = []


class StreamEncoder:
    """Canonical events -> Anthropic SSE (``message_start``, content blocks, ``message_delta``, ``message_stop``).

    Anthropic blocks never overlap: opening a block closes the one before. Tool calls are relayed live in the order
    providers stream them (one after another). Argument fragments of a call not started yet are held until its
    ToolCallStart; fragments for a call whose block is already closed (a provider interleaving two calls) cannot be
    placed anywhere valid and are dropped rather than sent into a closed block.
    """

    media_type = "text/event-stream"

    __slots__ = (
        "_block",
        "_calls",
        "_done",
        "_finish",
        "_has_tools",
        "_kind",
        "_model",
        "_open_call",
        "_started",
        "_stop_sequence",
        "_usage",
    )

    def __init__(self, *, model: str, include_usage: bool = False, **_: Any) -> None:
        self._model = model
        self._started = False
        self._done = False
        self._block = -1  # index of the last block opened
        self._kind: str | None = None  # kind of the open block, None when no block is open
        self._open_call: int | None = None  # canonical tool-call index whose block is open
        self._calls: dict[int, _Call] = {}
        self._has_tools = False
        self._finish: str | None = None
        self._stop_sequence: str | None = None
        self._usage = Usage()

    # -- framing ------------------------------------------------------------------------------------------------------
    def _start(self, msg_id: str, usage: Usage | None) -> bytes:
        self._started = True
        if usage is not None:
            merge_usage(self._usage, usage)
        u = _exclusive_usage(self._usage)
        u.pop("output_tokens_details", None)
        message: dict[str, Any] = {
            "id": msg_id or _new_id(),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": u,
        }
        return encode_event(orjson.dumps({"type": "message_start", "message": message}), "message_start")

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._start("", None)

    def _close(self) -> bytes:
        if self._kind is None:
            return b""
        self._kind = None
        self._open_call = None
        return encode_event(b'{"type":"content_block_stop","index":%d}' % self._block, "content_block_stop")

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block += 1
        self._kind = kind
        data = orjson.dumps({"type": "content_block_start", "index": self._block, "content_block": block})
        return out + encode_event(data, "content_block_start")

    def _delta(self, delta_type: str, key: str, value: str) -> bytes:
        data = b'{"type":"content_block_delta","index":%d,"delta":{"type":"%s","%s":%s}}' % (
            self._block,
            delta_type.encode(),
            key.encode(),
            orjson.dumps(value),
        )
        return encode_event(data, "content_block_delta")

    # -- events -------------------------------------------------------------------------------------------------------
    def encode(self, event: Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, MessageStart):
            return b"" if self._started else self._start(event.id, event.usage)
        if isinstance(event, StreamError):
            return self.error(event.error)
        out = self._ensure_started()
        if isinstance(event, TextDelta):
            if not event.text:
                return out
            if self._kind != "text":
                out += self._open("text", {"type": "text", "text": ""})
            return out + self._delta("text_delta", "text", event.text)
        if isinstance(event, ThinkingDelta):
            return out + self._thinking(event)
        if isinstance(event, ToolCallStart):
            return out + self._tool_start(event)
        if isinstance(event, ToolCallDelta):
            return out + self._tool_delta(event)
        if isinstance(event, Finish):
            self._finish = event.reason
            self._stop_sequence = event.stop_sequence
        elif isinstance(event, UsageUpdate):
            merge_usage(self._usage, event.usage)
        return out

    def _thinking(self, event: ThinkingDelta) -> bytes:
        out = b""
        if event.redacted is not None:
            out += self._open("redacted_thinking", {"type": "redacted_thinking", "data": event.redacted})
            out += self._close()
        if event.text:
            if self._kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta("thinking_delta", "thinking", event.text)
        if event.signature:
            if self._kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out += self._delta("signature_delta", "signature", event.signature)
        return out

    def _tool_start(self, event: ToolCallStart) -> bytes:
        call = self._calls.get(event.index)
        if call is None:
            call = self._calls[event.index] = _Call()
        elif call.block is not None:
            return b""  # a repeated start for a call already relayed
        self._has_tools = True
        block = _tool_use_block(ToolCall(event.id, event.name, signature=event.signature), {})
        out = self._open("tool_use", block)
        call.block = self._block
        self._open_call = event.index
        if call.pending:
            out += self._delta("input_json_delta", "partial_json", "".join(call.pending))
            call.pending = []
        return out

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        if not event.arguments:
            return b""
        if self._open_call == event.index:
            return self._delta("input_json_delta", "partial_json", event.arguments)
        call = self._calls.get(event.index)
        if call is None:
            call = self._calls[event.index] = _Call()
        if call.block is None:
            call.pending.append(event.arguments)  # its ToolCallStart has not arrived yet
        # else: its block is closed; nothing valid can be sent (see the class docstring).
        return b""

    def finish(self) -> bytes:
        if self._done:
            return b""
        out = self._ensure_started() + self._close()
        self._done = True
        stop_sequence = self._stop_sequence if self._finish in (None, "stop") else None
        reason = _stop_reason_out(self._finish or "stop", stop_sequence, self._has_tools)
        u = self._usage
        usage: dict[str, Any] = {"output_tokens": u.output_tokens}
        if u.input_tokens:
            usage["input_tokens"] = max(u.input_tokens - u.cached_tokens - u.cache_creation_tokens, 0)
        if u.cached_tokens:
            usage["cache_read_input_tokens"] = u.cached_tokens
        if u.cache_creation_tokens:
            usage["cache_creation_input_tokens"] = u.cache_creation_tokens
        if u.reasoning_tokens:
            usage["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
        delta = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": stop_sequence}}
        delta["usage"] = usage
        out += encode_event(orjson.dumps(delta), "message_delta")
        return out + encode_event(b'{"type":"message_stop"}', "message_stop")

    def error(self, err: GatewayError) -> bytes:
        """Anthropic's in-stream ``error`` event; the SDK raises an APIStatusError carrying ``error.type``."""
        if self._done:
            return b""
        self._done = True
        body = {"type": "error", "error": {"type": _ERROR_TYPES_OUT.get(err.type, "api_error"), "message": err.message}}
        return encode_event(orjson.dumps(body), "error")


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: request out
# ---------------------------------------------------------------------------------------------------------------------
def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    return "/v1/messages/count_tokens" if kind == COUNT_TOKENS else "/v1/messages"


def _adaptive_model(model: str) -> bool:
    """Without capabilities (the catalog switched off), a guess from the name: Claude 4.6 and later think adaptively
    (``thinking.type: adaptive`` + ``output_config.effort``); earlier models need ``enabled`` with ``budget_tokens``.
    Names the gateway cannot read (aliases, mocks) count as new."""
    m = _CLAUDE_VERSION.search(model)
    if m is None:
        return True
    major = int(m.group(1) or m.group(3) or m.group(4))
    minor = int(m.group(2) or m.group(5) or 0) if m.group(3) is None else 0
    return (major, minor) >= (4, 6)


def _thinking_plan(req: Request, model: str, caps: Capabilities | None) -> tuple[str | None, int, str | None]:
    """(thinking type or None, budget for ``enabled``, effort for ``output_config``) for this request and model.
    With capabilities (the request already shaped to them) the model's first knob decides adaptive or enabled; a
    model that takes no budget is never sent ``disabled`` either (it is off unless asked, and refuses the type)."""
    effort = req.reasoning_effort
    budget = req.thinking_budget
    if caps is not None:
        adaptive = bool(caps.reasoning) and caps.reasoning[0] == ADAPTIVE
        off = "disabled" if BUDGET in caps.reasoning else None
    else:
        adaptive = _adaptive_model(model)
        off = "disabled"
    if effort == "none":
        return off, 0, None
    out_effort = _EFFORTS_OUT.get(effort or "") if adaptive else None
    if budget == 0:
        return off, 0, out_effort
    if budget is not None and budget > 0:
        return "enabled", max(budget, 1024), out_effort
    if budget == -1 or effort:
        if adaptive:
            return "adaptive", 0, out_effort
        return "enabled", _BUDGET_BY_EFFORT.get(effort or "medium", 8192), None
    return None, 0, None


def _tool_turn_without_thinking(messages: list[Message]) -> bool:
    """Is the conversation inside a tool loop whose last assistant turn has no signed thinking to replay? Anthropic
    refuses thinking then (the turn must start with its thinking block), e.g. when a client dropped the signature."""
    for msg in reversed(messages):
        if msg.role != "assistant":
            continue
        if not any(isinstance(p, ToolCall) for p in msg.parts):
            return False
        first = next((p for p in msg.parts if not (isinstance(p, Text) and not p.text)), None)
        return not (isinstance(first, Thinking) and (first.signature or first.redacted is not None))
    return False


def build_request(
    req: Request, *, model: str, options: BuildOptions | None = None, default_max_tokens: int | None = None
) -> bytes:
    """A canonical Request -> an Anthropic ``messages.create`` body. Only keys that are set are written."""
    if default_max_tokens is None:
        default_max_tokens = options.default_max_tokens if options is not None else 4096
    if req.n is not None and req.n > 1:
        raise invalid("Anthropic models return one answer per request: several candidates (n > 1) are refused")
    caps = options.capabilities if options is not None else None
    kind, budget, effort = _thinking_plan(req, model, caps)
    if kind in ("enabled", "adaptive") and _tool_turn_without_thinking(req.messages):
        kind = None  # the client lost the signed thinking of the turn it continues: continue without thinking
    if kind == "enabled" and req.max_tokens is not None and budget >= req.max_tokens:
        budget = req.max_tokens - 1
        if budget < 1024:
            kind = None  # no room for Anthropic's minimum budget under the client's cap
    thinking_on = kind in ("enabled", "adaptive")
    budget = budget if kind == "enabled" else 0
    max_tokens = req.max_tokens
    if max_tokens is None:
        # Anthropic requires max_tokens, and budget_tokens < max_tokens: with no cap set, leave room for the answer.
        max_tokens = budget + default_max_tokens if budget >= default_max_tokens else default_max_tokens
        limit = caps.max_output_tokens if caps is not None else None
        if limit is not None and max_tokens > limit:  # the gateway's own default, never above the model's limit
            max_tokens = limit
            budget = min(budget, limit - 1)
    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    system = "\n\n".join(p.text for p in req.system if isinstance(p, Text) and p.text)
    if system:
        out["system"] = system
    out["messages"] = _build_messages(req.messages)
    # Anthropic refuses temperature/top_k (and top_p below 0.95) while extended thinking is on.
    if not thinking_on:
        if req.temperature is not None:
            # Anthropic's temperature range is [0, 1]; OpenAI's is [0, 2] and Gemini's [0, 2]: clamp, don't fail.
            out["temperature"] = min(max(req.temperature, 0.0), 1.0)
        if req.top_p is not None:
            out["top_p"] = req.top_p
        if req.top_k is not None:
            out["top_k"] = req.top_k
    if req.stop:
        out["stop_sequences"] = req.stop
    if req.tools:
        out["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters or _EMPTY_SCHEMA,
            }
            for t in req.tools
        ]
        choice = _build_tool_choice(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            out["tool_choice"] = choice
    if req.user:
        out["metadata"] = {"user_id": req.user}
    if req.stream:
        out["stream"] = True
    if kind == "enabled":
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif kind is not None:
        out["thinking"] = {"type": kind}
    output_config: dict[str, Any] = {}
    if req.response_format is not None and req.response_format.type == "json_schema" and req.response_format.schema:
        output_config["format"] = {"type": "json_schema", "schema": schemas.for_anthropic(req.response_format.schema)}
    if effort:
        output_config["effort"] = effort
    if output_config:
        out["output_config"] = output_config
    return orjson.dumps(out)


def _build_tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        return {"type": "auto", "disable_parallel_tool_use": True} if parallel is False else None
    if choice.mode == "none":
        return {"type": "none"}  # Anthropic's none has no disable_parallel_tool_use
    if choice.mode == "required":
        out: dict[str, Any] = {"type": "any"}
    elif choice.mode == "tool":
        if not choice.name:
            raise invalid("tool_choice: a tool name is required", param="tool_choice")
        out = {"type": "tool", "name": choice.name}
    else:
        out = {"type": "auto"}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _build_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Canonical messages -> Anthropic turns. Consecutive same-role messages merge into one turn (an OpenAI
    conversation has one ``tool`` message per result), and in a user turn the tool_result blocks come first, as the
    API requires. Turns left with no content (e.g. only thinking from another provider) are skipped."""
    out: list[dict[str, Any]] = []
    role = ""
    results: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    for msg in messages:
        new_results: list[dict[str, Any]] = []
        new_blocks: list[dict[str, Any]] = []
        for part in msg.parts:
            if isinstance(part, ToolResult):
                new_results.append(_tool_result_block(part))
            else:
                block = _content_block(part)
                if block is not None:
                    new_blocks.append(block)
        if not new_results and not new_blocks:
            continue  # nothing left to send (e.g. only another provider's reasoning)
        if msg.role != role:
            if results or blocks:
                out.append(_turn(role, results, blocks))
            role, results, blocks = msg.role, new_results, new_blocks
        else:
            results += new_results
            blocks += new_blocks
    if results or blocks:
        out.append(_turn(role, results, blocks))
    return out


def _turn(role: str, results: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """One turn; a lone text block is sent as the string shorthand."""
    if not results and len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": role, "content": blocks[0]["text"]}
    return {"role": role, "content": results + blocks if results else blocks}


def _content_block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text} if part.text else None  # the API refuses empty text blocks
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _request_args(part)}
    if isinstance(part, Thinking):
        if part.redacted is not None:
            return {"type": "redacted_thinking", "data": part.redacted}
        if part.signature:
            # The google-genai SDK re-encodes signatures it carried as URL-safe base64; Anthropic's are standard.
            sig = part.signature.replace("-", "+").replace("_", "/")
            return {"type": "thinking", "thinking": part.text, "signature": sig}
        return None  # reasoning from another provider: Anthropic would reject it without a valid signature
    if isinstance(part, Image):
        return {"type": "image", "source": _image_source(part)}
    if isinstance(part, Document):
        return _document_block(part)
    return None


def _request_args(call: ToolCall) -> dict[str, Any]:
    text = call.arguments
    if not text or text.isspace():
        return {}
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid(f"tool call {call.id!r} ({call.name}): arguments are not valid JSON", param="messages") from None
    if not isinstance(obj, dict):
        raise invalid(f"tool call {call.id!r} ({call.name}): arguments must be a JSON object", param="messages")
    return obj


def _image_source(img: Image) -> dict[str, Any]:
    if img.data is not None:
        if not img.media_type:
            raise invalid("an inline image needs a media type for Anthropic", param="messages")
        if img.media_type not in _IMAGE_TYPES:
            raise invalid(f"Anthropic takes JPEG, PNG, GIF and WebP images, not {img.media_type}", param="messages")
        return {"type": "base64", "media_type": img.media_type, "data": img.data}
    if img.url:
        return {"type": "url", "url": img.url}
    raise invalid("an image needs data or a url", param="messages")


def _document_block(doc: Document) -> dict[str, Any]:
    if doc.data is not None:
        media_type = doc.media_type or "application/pdf"
        if media_type.startswith("text/"):
            try:
                text = base64.b64decode(doc.data, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise invalid("a text/plain document must be base64-encoded UTF-8", param="messages") from None
            source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": text}
        elif media_type != "application/pdf":
            raise invalid(f"Anthropic takes PDF and text documents, not {media_type}", param="messages")
        else:
            source = {"type": "base64", "media_type": media_type, "data": doc.data}
    elif doc.url:
        source = {"type": "url", "url": doc.url}
    else:
        raise invalid("a document needs data or a url", param="messages")
    block: dict[str, Any] = {"type": "document", "source": source}
    if doc.name:
        block["title"] = doc.name
    return block


def _tool_result_block(result: ToolResult) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": result.tool_call_id}
    content = result.content
    if len(content) == 1 and isinstance(content[0], Text):
        block["content"] = content[0].text
    elif content:
        blocks = [b for b in (_content_block(p) for p in content) if b is not None]
        if blocks:
            block["content"] = blocks
    if result.is_error:
        block["is_error"] = True
    return block


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: response, error and stream in
# ---------------------------------------------------------------------------------------------------------------------
def _bad_response(what: str) -> GatewayError:
    return GatewayError("server_error", f"provider returned an invalid Anthropic response: {what}", 502)


def parse_response(body: bytes) -> Response:
    """An Anthropic ``Message`` -> canonical Response."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_response("not JSON") from None
    if not isinstance(data, dict) or data.get("type", "message") != "message":
        raise _bad_response("not a message object")
    content = data.get("content")
    if not isinstance(content, list):
        raise _bad_response("no content list")
    parts: list[Part] = []
    try:
        for block in content:
            part = _response_part(block)
            if part is not None:
                parts.append(part)
    except (KeyError, TypeError, AttributeError) as e:
        raise _bad_response(f"malformed content block ({e})") from None
    stop_reason = data.get("stop_reason")
    stop_sequence = data.get("stop_sequence") if stop_reason == "stop_sequence" else None
    usage = data.get("usage")
    msg_id = data.get("id")
    model = data.get("model")
    return Response(
        id=msg_id if isinstance(msg_id, str) else "",
        model=model if isinstance(model, str) else "",
        parts=parts,
        finish_reason=_STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop",
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
        usage=_inclusive_usage(usage) if isinstance(usage, dict) else None,
    )


def _response_part(block: dict[str, Any]) -> Part | None:
    kind = block["type"]
    if kind == "text":
        return Text(str(block["text"]))
    if kind == "tool_use":
        args = block.get("input")
        return ToolCall(id=str(block["id"]), name=str(block["name"]), arguments=_dumps(args) if args else "{}")
    if kind == "thinking":
        return Thinking(text=str(block.get("thinking") or ""), signature=block.get("signature") or None)
    if kind == "redacted_thinking":
        return Thinking(redacted=str(block["data"]))
    return None  # server-tool blocks: the gateway never asks for server tools


def parse_error(status: int, body: bytes) -> GatewayError:
    """An Anthropic error body -> GatewayError, keeping the provider's message, error type and HTTP status."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        kind = "non-JSON" if data is None else "an unrecognised"
        return GatewayError(errors.type_for_status(status), f"provider returned HTTP {status} with {kind} body", status)
    return _gateway_error(err, status)


def _gateway_error(err: dict[str, Any], status: int | None) -> GatewayError:
    etype = err.get("type")
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"provider error {etype or status}"
    mapped = _ERROR_TYPES_IN.get(etype) if isinstance(etype, str) else None
    if status is None:
        status = mapped[1] if mapped else 500
    gtype = mapped[0] if mapped else errors.type_for_status(status)
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    if not isinstance(code, str):
        code = etype if isinstance(etype, str) else None
    return GatewayError(gtype, message, status, code=code)


class StreamDecoder:
    """Anthropic SSE -> canonical events. Tool calls are numbered by their order among tool_use blocks."""

    __slots__ = ("_blocks", "_cache", "_done", "_ntools", "_sse")

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._blocks: dict[int, int] = {}  # content-block index -> tool-call ordinal (tool_use blocks only)
        self._ntools = 0
        self._cache = (0, 0)  # cache read / creation tokens from message_start, for inclusive input counts
        self._done = False

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for ev in self._sse.feed(chunk):
            self._event(ev.event, ev.data, out)
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        for ev in self._sse.close():
            self._event(ev.event, ev.data, out)
        if not self._done:
            self._done = True
            out.append(StreamError(GatewayError("network", "provider stream ended early", 502)))
        return out

    def _event(self, name: str | None, data: str, out: list[Event]) -> None:
        if self._done or name == "ping":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail(f"invalid JSON in {name or 'an'} event", out)
            return
        if not isinstance(obj, dict):
            self._fail(f"{name or 'an'} event is not an object", out)
            return
        kind = obj.get("type") or name
        try:
            self._dispatch(kind, obj, out)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            self._fail(f"malformed {kind} event ({e})", out)

    def _fail(self, why: str, out: list[Event]) -> None:
        self._done = True
        out.append(StreamError(GatewayError("server_error", f"provider sent an invalid stream: {why}", 502)))

    def _dispatch(self, kind: Any, obj: dict[str, Any], out: list[Event]) -> None:
        if kind == "content_block_delta":
            delta = obj["delta"]
            dtype = delta["type"]
            if dtype == "text_delta":
                if delta["text"]:
                    out.append(TextDelta(delta["text"]))
            elif dtype == "input_json_delta":
                ordinal = self._blocks.get(obj["index"])
                if ordinal is not None and delta["partial_json"]:
                    out.append(ToolCallDelta(ordinal, delta["partial_json"]))
            elif dtype == "thinking_delta":
                if delta["thinking"]:
                    out.append(ThinkingDelta(text=delta["thinking"]))
            elif dtype == "signature_delta":
                out.append(ThinkingDelta(signature=delta["signature"]))
            # citations_delta and future delta types carry nothing canonical
        elif kind == "content_block_start":
            self._block_start(obj["index"], obj["content_block"], out)
        elif kind == "message_start":
            msg = obj["message"]
            usage = msg.get("usage")
            start_usage = None
            if isinstance(usage, dict):
                start_usage = _inclusive_usage(usage)
                start_usage.output_tokens = 0  # a placeholder count at message_start
                self._cache = (start_usage.cached_tokens, start_usage.cache_creation_tokens)
            out.append(MessageStart(id=str(msg.get("id") or ""), model=str(msg.get("model") or ""), usage=start_usage))
        elif kind == "message_delta":
            delta = obj.get("delta") or {}
            reason = delta.get("stop_reason")
            if isinstance(reason, str):
                seq = delta.get("stop_sequence") if reason == "stop_sequence" else None
                out.append(Finish(_STOP_REASONS.get(reason, "stop"), seq if isinstance(seq, str) else None))
            usage = obj.get("usage")
            if isinstance(usage, dict):
                out.append(UsageUpdate(self._delta_usage(usage)))
        elif kind == "message_stop":
            self._done = True
        elif kind == "error":
            err = obj.get("error")
            self._done = True
            if not isinstance(err, dict):
                err = {"type": "api_error", "message": "provider stream error"}
            out.append(StreamError(_gateway_error(err, None)))
        # content_block_stop, ping and future event types carry nothing canonical

    def _block_start(self, index: int, block: dict[str, Any], out: list[Event]) -> None:
        btype = block["type"]
        if btype == "text":
            if block.get("text"):
                out.append(TextDelta(block["text"]))
        elif btype == "tool_use":
            ordinal = self._ntools
            self._ntools += 1
            self._blocks[index] = ordinal
            out.append(ToolCallStart(index=ordinal, id=str(block["id"]), name=str(block["name"])))
            args = block.get("input")
            if args:  # normally {} with the input streamed as input_json_delta
                out.append(ToolCallDelta(ordinal, _dumps(args)))
        elif btype == "thinking":
            if block.get("thinking"):
                out.append(ThinkingDelta(text=block["thinking"]))
            if block.get("signature"):
                out.append(ThinkingDelta(signature=block["signature"]))
        elif btype == "redacted_thinking":
            out.append(ThinkingDelta(redacted=str(block["data"])))

    def _delta_usage(self, usage: dict[str, Any]) -> Usage:
        """message_delta usage is cumulative; cache counts absent here keep their message_start values."""
        cached = usage.get("cache_read_input_tokens")
        created = usage.get("cache_creation_input_tokens")
        cached = cached if _is_int(cached) else self._cache[0]
        created = created if _is_int(created) else self._cache[1]
        inp = usage.get("input_tokens")
        details = usage.get("output_tokens_details")
        return Usage(
            input_tokens=inp + cached + created if _is_int(inp) else 0,
            output_tokens=_int0(usage.get("output_tokens")),
            cached_tokens=cached,
            cache_creation_tokens=created,
            reasoning_tokens=_int0(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
        )


# ---------------------------------------------------------------------------------------------------------------------
# The format contract (extproc.translation.formats.contract): routes, credentials, listings, pass-through, factories
# ---------------------------------------------------------------------------------------------------------------------
PATH_PREFIX = "/anthropic/"
COUNTS_TOKENS = True
STATE: ConversationState | None = None  # nothing is kept between requests
_MESSAGES = "/anthropic/v1/messages"
_COUNT = "/anthropic/v1/messages/count_tokens"
_MODELS = "/anthropic/v1/models"
_EPOCH = "1970-01-01T00:00:00Z"
# What count_tokens takes of a messages request.
_COUNT_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking")


def route(method: str, path: str, query: str) -> Endpoint | None:
    if path == _MESSAGES:
        return Endpoint(GENERATE)
    if path == _COUNT:
        return Endpoint(COUNT_TOKENS)
    if path == _MODELS or path.startswith(_MODELS + "/"):
        return Endpoint(MODELS, model_id=path[len(_MODELS) + 1 :] or None, methods=("GET",))
    return None


def client_credential(headers: Mapping[str, str], query: str) -> str | None:
    """Today's SDK sends ``Authorization: Bearer``; older ones and curl users ``x-api-key``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key") or None


def request_model(endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
    return head.get("model"), endpoint.kind == GENERATE and head.get("stream") is True


def list_models(models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
    """``ModelInfo`` pages (``data``, ``has_more``, ``first_id``, ``last_id``), by after_id, before_id, limit."""

    def one(m: ModelInfo) -> dict[str, Any]:
        info: dict[str, Any] = {
            "type": "model",
            "id": m.name,
            "display_name": m.description or m.name,
            "created_at": _EPOCH,
            "lifecycle": "active",
        }
        if m.max_input_tokens is not None:
            info["max_input_tokens"] = m.max_input_tokens
        if m.max_output_tokens is not None:
            info["max_tokens"] = m.max_output_tokens
        return info

    if model_id is not None:
        return orjson.dumps(one(listing.find(models, model_id)))
    q = listing.query_params(query)
    limit = listing.int_param(q, "limit", 20, 1, 1000)
    names = [m.name for m in models]
    start, end = 0, len(names)
    if q.get("after_id"):
        if q["after_id"] not in names:
            raise invalid(f"after_id '{q['after_id']}' is not a model id", param="after_id")
        start = names.index(q["after_id"]) + 1
    if q.get("before_id"):
        if q["before_id"] not in names:
            raise invalid(f"before_id '{q['before_id']}' is not a model id", param="before_id")
        end = names.index(q["before_id"])
        start = max(start, end - limit)
    page = models[start:end][:limit]
    has_more = (start + len(page) < end) if not q.get("before_id") else start > 0
    return orjson.dumps(
        {
            "data": [one(m) for m in page],
            "has_more": has_more,
            "first_id": page[0].name if page else None,
            "last_id": page[-1].name if page else None,
        }
    )


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    return path[len("/anthropic") :] + (f"?{query}" if query else "")


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    return jsonbytes.rewrite_model(body, model, head.get("model")), None


def stream_encoder(opts: StreamOptions) -> StreamEncoder:
    return StreamEncoder(model=opts.model, include_usage=opts.include_usage)


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder()


def fetches_url(part: Image | Document) -> bool | str:
    """Anthropic reads image and PDF URLs itself."""
    if media.is_gemini_file(part.url or ""):
        return "Gemini File API URIs can only be read by Gemini providers"
    return True


def parse_count_request(body: bytes | dict[str, Any], *, model: str) -> Request:
    """A ``count_tokens`` body: a messages request without ``max_tokens``."""
    data = body if isinstance(body, dict) else _load_object(body, "request body")
    unknown = sorted(set(data) - {*_COUNT_KEYS, "mcp_servers", "output_config", "output_format"})
    if unknown:
        raise invalid(f"{unknown[0]}: Extra inputs are not permitted", param=unknown[0])
    return parse_request({**data, "max_tokens": 1}, model=model)


def build_count_request(req: Request, *, model: str) -> bytes:
    full = orjson.loads(build_request(req, model=model))
    return orjson.dumps({k: full[k] for k in _COUNT_KEYS if k in full})


def parse_count_response(body: bytes) -> int:
    data = _load_object(body, "count_tokens response")
    tokens = data.get("input_tokens")
    if not _is_int(tokens):
        raise _bad_response("count_tokens answer without input_tokens")
    return int(tokens)


def build_count_response(tokens: int) -> bytes:
    return orjson.dumps({"input_tokens": tokens})


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings: none
# ---------------------------------------------------------------------------------------------------------------------
EMBEDS = False


def parse_embed_request(body: bytes | dict[str, Any], *, model: str) -> EmbedRequest:
    raise embeddings.no_embeddings("Anthropic's Messages API")


def build_embed_response(resp: EmbedResponse, *, model: str, request: EmbedRequest) -> bytes:
    raise embeddings.no_embeddings("Anthropic's Messages API")


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    raise embeddings.no_embeddings("Anthropic's Messages API")


def parse_embed_response(body: bytes) -> EmbedResponse:
    raise embeddings.no_embeddings("Anthropic's Messages API")
