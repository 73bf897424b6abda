"""OpenAI Chat Completions (``POST /v1/chat/completions``), both as the client's format and as a provider's.

Shapes follow the official ``openai`` SDK types (``openai/types/chat``). Notes on the mapping:

- ``system`` and ``developer`` messages, wherever they appear, go to ``Request.system`` in order.
- ``tool`` (and legacy ``function``) messages become ``ToolResult`` parts; consecutive ones share one user message.
- Tool-call ids carry a Gemini thought signature as ``{id}__thought__{signature}`` on the client side.
- Reasoning text travels in the non-standard ``reasoning_content`` field (vLLM, DeepSeek); ``reasoning`` is read too.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from extproc.translation import embeddings, jsonbytes, listing, media
from extproc.translation.canonical import (
    Candidate,
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
from extproc.translation.errors import ERROR_TYPES, GatewayError, invalid, type_for_status
from extproc.translation.formats.contract import (
    EMBED,
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
from extproc.translation.sse import SSEEvent, SSEParser, encode_event

NAME = "openai"
EXTRA_HEADERS: list[tuple[str, str]] = []
# Where a provider of this format takes its key; Envoy injects it (the service never holds it).
CREDENTIAL = CredentialHeader("authorization", "Bearer ")

_FINISH_IN = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_FINISH_OUT = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}
_ERROR_TYPE_OUT = {
    "invalid_request": "invalid_request_error",
    "auth": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "unknown_model": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "server_error": "server_error",
    "network": "server_error",
    "overloaded": "server_error",
    "timeout": "timeout_error",
}
_DEFAULT_CODE = {"unknown_model": "model_not_found", "request_too_large": "request_too_large"}
# Provider error types that say more than the status does. OpenAI answers 401/404 with "invalid_request_error" too,
# so that one (and unknown types) defer to the status.
_ERROR_TYPE_IN = {
    "authentication_error": "auth",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limit",
    "requests": "rate_limit",
    "tokens": "rate_limit",
    "insufficient_quota": "rate_limit",
    "timeout_error": "timeout",
    "overloaded_error": "overloaded",
}
_DOC_TYPES = {".pdf": "application/pdf", ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv"}
_BAD_INPUT = (KeyError, TypeError, ValueError, AttributeError, IndexError)


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------
def _parse_data_url(url: str, param: str) -> tuple[str | None, str]:
    """``data:image/png;base64,AAAA`` -> (``image/png``, ``AAAA``). Only base64 data URLs carry binary content."""
    comma = url.find(",")
    if comma < 0:
        raise invalid("malformed data URL", param=param)
    meta = url[5:comma]
    fields = meta.split(";")
    if "base64" not in fields[1:]:
        raise invalid("data URLs must be base64-encoded (data:<media type>;base64,<data>)", param=param)
    return (fields[0] or None), url[comma + 1 :]


def _data_url(media_type: str | None, data: str, default: str) -> str:
    return f"data:{media_type or default};base64,{data}"


def _gen_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _opt(body: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """An optional parameter: absent or null -> None, wrong type -> 400 naming it."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise invalid(f"'{key}' must be {what}", param=key)
    return value


def _text_parts(content: Any, param: str, role: str) -> list[Part]:
    """Content that may only hold text: a string or an array of ``text`` parts (system, developer, tool)."""
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise invalid(f"{role} message content must be a string or an array of text parts", param=param)
    out: list[Part] = []
    for j, item in enumerate(content):
        if not isinstance(item, dict) or item.get("type") != "text" or not isinstance(item.get("text"), str):
            raise invalid(f"{role} message content parts must be text parts", param=f"{param}[{j}]")
        out.append(Text(item["text"]))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Client side: request in
# ---------------------------------------------------------------------------------------------------------------------
def parse_request(body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False) -> Request:
    """Decode and validate a Chat Completions request like the real API would (``body`` may be already decoded)."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    try:
        return _parse_request(data, model, stream)
    except GatewayError:
        raise
    except _BAD_INPUT as exc:
        raise invalid(f"invalid request: {exc}") from None


def _parse_request(data: dict[str, Any], model: str | None, stream: bool) -> Request:
    req = Request(model="")
    _parse_messages(data.get("messages"), req)  # checked first, as OpenAI does
    body_model = data.get("model")
    if body_model is not None and not isinstance(body_model, str):
        raise invalid("'model' must be a string", param="model")
    req.model = body_model or model or ""
    if not req.model:
        raise invalid("you must provide a model parameter", param="model")

    max_tokens = _opt(data, "max_completion_tokens", int, "an integer")
    if max_tokens is None:
        max_tokens = _opt(data, "max_tokens", int, "an integer")
    req.max_tokens = max_tokens
    req.temperature = _num(data, "temperature")
    req.top_p = _num(data, "top_p")
    req.presence_penalty = _num(data, "presence_penalty")
    req.frequency_penalty = _num(data, "frequency_penalty")
    req.n = _opt(data, "n", int, "an integer")
    req.seed = _opt(data, "seed", int, "an integer")
    req.user = _opt(data, "user", str, "a string")
    req.reasoning_effort = _opt(data, "reasoning_effort", str, "a string")
    req.parallel_tool_calls = _opt(data, "parallel_tool_calls", bool, "a boolean")
    stop = data.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = stop
    elif stop is not None:
        raise invalid("'stop' must be a string or an array of strings", param="stop")
    req.stream = bool(_opt(data, "stream", bool, "a boolean")) or stream
    options = _opt(data, "stream_options", dict, "an object")
    if options:
        req.include_usage = _opt(options, "include_usage", bool, "a boolean") is True
    req.tools = _parse_tools(data)
    req.tool_choice = _parse_tool_choice(data, req)
    req.response_format = _parse_response_format(data.get("response_format"))
    return req


def _num(data: dict[str, Any], key: str) -> float | None:
    value = _opt(data, key, (int, float), "a number")
    return None if value is None else float(value)


def _parse_messages(messages: Any, req: Request) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array", param="messages")
    out = req.messages
    names: dict[str, str] = {}  # tool call id -> function name, from earlier assistant turns
    pending_functions: list[tuple[str, str]] = []  # legacy function_call (name, synthesized id) not yet answered
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise invalid("each message must be an object", param=param)
        role = msg.get("role")
        content = msg.get("content")
        if role in ("system", "developer"):
            req.system.extend(_text_parts(content, f"{param}.content", role))
        elif role == "user":
            out.append(Message("user", _user_parts(content, f"{param}.content")))
        elif role == "assistant":
            parts = _assistant_parts(msg, param, names, pending_functions)
            if parts:  # an empty assistant turn ("content": "") carries nothing any provider could use
                out.append(Message("assistant", parts))
        elif role == "tool":
            raw_id = msg.get("tool_call_id")
            if not isinstance(raw_id, str):
                raise invalid("tool messages need a string 'tool_call_id'", param=f"{param}.tool_call_id")
            call_id, _ = split_tool_id(raw_id)
            if call_id not in names:
                raise invalid(
                    f"tool message refers to tool_call_id '{raw_id}' that no earlier assistant message called",
                    param=f"{param}.tool_call_id",
                )
            result = ToolResult(call_id, names[call_id], _text_parts(content, f"{param}.content", "tool"))
            _append_result(out, result)
        elif role == "function":
            fname = msg.get("name")
            if not isinstance(fname, str):
                raise invalid("function messages need a string 'name'", param=f"{param}.name")
            match = next((k for k, (n, _) in enumerate(pending_functions) if n == fname), None)
            if match is None:
                raise invalid(f"function message for '{fname}' follows no function_call", param=f"{param}.name")
            _, call_id = pending_functions.pop(match)
            result_parts = [] if content is None else _text_parts(content, f"{param}.content", "function")
            _append_result(out, ToolResult(call_id, fname, result_parts))
        else:
            raise invalid(f"unknown message role {role!r}", param=f"{param}.role")


def _append_result(out: list[Message], result: ToolResult) -> None:
    """Consecutive tool messages answer one assistant turn: merge them into one user message."""
    if out and out[-1].role == "user" and out[-1].parts and isinstance(out[-1].parts[-1], ToolResult):
        out[-1].parts.append(result)
    else:
        out.append(Message("user", [result]))


def _user_parts(content: Any, param: str) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise invalid("user message content must be a string or an array of content parts", param=param)
    parts: list[Part] = []
    for j, item in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(item, dict):
            raise invalid("content parts must be objects", param=p)
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if not isinstance(text, str):
                raise invalid("text parts need a string 'text'", param=f"{p}.text")
            parts.append(Text(text))
        elif kind == "image_url":
            parts.append(_image_part(item.get("image_url"), f"{p}.image_url"))
        elif kind == "file":
            parts.append(_file_part(item.get("file"), f"{p}.file"))
        elif kind == "input_audio":
            raise invalid("input_audio content parts are not supported by this gateway", param=p)
        else:
            raise invalid(f"unsupported content part type {kind!r}", param=f"{p}.type")
    return parts


def _image_part(obj: Any, param: str) -> Image:
    url = obj.get("url") if isinstance(obj, dict) else None
    if not isinstance(url, str) or not url:
        raise invalid("image_url parts need an 'image_url.url' string", param=f"{param}.url")
    if url.startswith("data:"):
        media_type, b64 = _parse_data_url(url, f"{param}.url")
        return Image(media_type=media_type, data=b64)
    return Image(url=url)


def _file_part(obj: Any, param: str) -> Document:
    if not isinstance(obj, dict):
        raise invalid("file parts need a 'file' object", param=param)
    filename = obj.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise invalid("'filename' must be a string", param=f"{param}.filename")
    file_data = obj.get("file_data")
    if isinstance(file_data, str) and file_data:
        if file_data.startswith("data:"):
            media_type, b64 = _parse_data_url(file_data, f"{param}.file_data")
        else:  # bare base64: guess the type from the file name; PDF is what Chat Completions takes
            dot = filename.rfind(".") if filename else -1
            media_type = _DOC_TYPES.get(filename[dot:].lower(), "application/pdf") if filename and dot >= 0 else None
            media_type, b64 = media_type or "application/pdf", file_data
        return Document(media_type=media_type, data=b64, name=filename)
    if obj.get("file_id") is not None:
        raise invalid(
            "file parts with 'file_id' are not supported: uploaded files cannot be forwarded, send 'file_data'",
            param=f"{param}.file_id",
        )
    raise invalid("file parts need 'file_data'", param=param)


def _assistant_parts(
    msg: dict[str, Any], param: str, names: dict[str, str], pending_functions: list[tuple[str, str]]
) -> list[Part]:
    parts: list[Part] = _thinking_blocks(msg.get("thinking_blocks"), f"{param}.thinking_blocks")
    reasoning = msg.get("reasoning_content")
    if not parts and isinstance(reasoning, str) and reasoning:
        parts.append(Thinking(reasoning))
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            parts.append(Text(content))
    elif isinstance(content, list):
        for j, item in enumerate(content):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text" and isinstance(item.get("text"), str):
                parts.append(Text(item["text"]))
            elif kind == "refusal" and isinstance(item.get("refusal"), str):
                parts.append(Text(item["refusal"]))
            else:
                raise invalid("assistant content parts must be text or refusal parts", param=f"{param}.content[{j}]")
    elif content is not None:
        raise invalid("assistant content must be a string, an array of parts or null", param=f"{param}.content")
    refusal = msg.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append(Text(refusal))
    calls = msg.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise invalid("'tool_calls' must be an array", param=f"{param}.tool_calls")
        for j, call in enumerate(calls):
            parts.append(_tool_call(call, f"{param}.tool_calls[{j}]", names))
    fcall = msg.get("function_call")
    if fcall is not None:
        fname = fcall.get("name") if isinstance(fcall, dict) else None
        args = fcall.get("arguments") if isinstance(fcall, dict) else None
        if not isinstance(fname, str) or not isinstance(args, str):
            raise invalid("'function_call' needs string 'name' and 'arguments'", param=f"{param}.function_call")
        call_id = f"call_{len(names)}_{fname}"  # legacy calls carry no id: make one for the canonical pairing
        names[call_id] = fname
        pending_functions.append((fname, call_id))
        parts.append(ToolCall(call_id, fname, args or "{}"))
    if not parts and content is None and calls is None:
        raise invalid("assistant messages need 'content' or 'tool_calls'", param=f"{param}.content")
    return parts


def _thinking_blocks(blocks: Any, param: str) -> list[Part]:
    """``thinking_blocks`` (the gateway's, LiteLLM's convention): signed reasoning echoed back so that a provider
    that needs it (Anthropic with thinking and tools) gets it on the next turn."""
    if blocks is None:
        return []
    if not isinstance(blocks, list):
        raise invalid("'thinking_blocks' must be an array", param=param)
    out: list[Part] = []
    for j, b in enumerate(blocks):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "thinking" and isinstance(b.get("thinking"), str):
            sig = b.get("signature")
            out.append(Thinking(b["thinking"], sig if isinstance(sig, str) and sig else None))
        elif kind == "redacted_thinking" and isinstance(b.get("data"), str):
            out.append(Thinking(redacted=b["data"]))
        else:
            raise invalid("thinking blocks must be thinking or redacted_thinking objects", param=f"{param}[{j}]")
    return out


def _tool_call(call: Any, param: str, names: dict[str, str]) -> ToolCall:
    if not isinstance(call, dict):
        raise invalid("tool calls must be objects", param=param)
    if call.get("type", "function") != "function":
        raise invalid(f"unsupported tool call type {call.get('type')!r}", param=f"{param}.type")
    raw_id = call.get("id")
    fn = call.get("function")
    if not isinstance(raw_id, str) or not isinstance(fn, dict):
        raise invalid("tool calls need a string 'id' and a 'function' object", param=param)
    fname = fn.get("name")
    args = fn.get("arguments")
    if not isinstance(fname, str) or not isinstance(args, str):
        raise invalid("tool call functions need string 'name' and 'arguments'", param=f"{param}.function")
    call_id, signature = split_tool_id(raw_id)
    names[call_id] = fname
    return ToolCall(call_id, fname, args or "{}", signature)


def _parse_tools(data: dict[str, Any]) -> list[Tool]:
    tools: list[Tool] = []
    raw = _opt(data, "tools", list, "an array")
    for i, item in enumerate(raw or ()):
        param = f"tools[{i}]"
        if not isinstance(item, dict):
            raise invalid("each tool must be an object", param=param)
        if item.get("type") != "function":
            raise invalid(f"unsupported tool type {item.get('type')!r}: only function tools", param=f"{param}.type")
        tools.append(_function_def(item.get("function"), f"{param}.function"))
    legacy = _opt(data, "functions", list, "an array")
    for i, fn in enumerate(legacy or ()):
        tools.append(_function_def(fn, f"functions[{i}]"))
    return tools


def _function_def(fn: Any, param: str) -> Tool:
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise invalid("function definitions need a non-empty string 'name'", param=param)
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid("'description' must be a string", param=f"{param}.description")
    parameters = fn.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid("'parameters' must be a JSON Schema object", param=f"{param}.parameters")
    return Tool(fn["name"], description, parameters)


def _parse_tool_choice(data: dict[str, Any], req: Request) -> ToolChoice | None:
    choice = data.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return _allowed_tools(choice.get("allowed_tools"), req)
    key = "tool_choice"
    if choice is None:
        choice = data.get("function_call")
        key = "function_call"
        if choice is None:
            return None
        if isinstance(choice, dict):  # legacy {"name": ...}
            name = choice.get("name")
            if not isinstance(name, str):
                raise invalid("'function_call' needs a string 'name'", param=key)
            return ToolChoice("tool", name)
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required") or (key == "function_call" and choice == "required"):
            raise invalid(f"invalid value {choice!r} for '{key}'", param=key)
        return ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise invalid("'tool_choice.function.name' must be a string", param="tool_choice.function.name")
        return ToolChoice("tool", name)
    raise invalid("unsupported 'tool_choice': use auto, none, required or a function", param=key)


def _allowed_tools(spec: Any, req: Request) -> ToolChoice:
    """``allowed_tools``: the model may only use these tools. Mapped by sending only them (same meaning everywhere)."""
    param = "tool_choice.allowed_tools"
    if not isinstance(spec, dict) or spec.get("mode") not in ("auto", "required"):
        raise invalid("'allowed_tools' needs 'mode' (auto or required) and 'tools'", param=param)
    names: list[str] = []
    for i, t in enumerate(spec.get("tools") or ()):
        fn = t.get("function") if isinstance(t, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(name, str):
            raise invalid("allowed tools must be function tools with a name", param=f"{param}.tools[{i}]")
        names.append(name)
    known = {t.name for t in req.tools}
    missing = [n for n in names if n not in known]
    if not names or missing:
        raise invalid(f"allowed tools must name declared tools (unknown: {', '.join(missing) or 'none'})", param=param)
    req.tools = [t for t in req.tools if t.name in names]
    return ToolChoice(spec["mode"])


def _parse_response_format(rf: Any) -> ResponseFormat | None:
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("name"), str):
            raise invalid("'response_format.json_schema' needs a string 'name'", param="response_format.json_schema")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise invalid("'json_schema.schema' must be an object", param="response_format.json_schema.schema")
        strict = js.get("strict")
        return ResponseFormat("json_schema", schema, js["name"], strict if isinstance(strict, bool) else None)
    raise invalid("'response_format.type' must be text, json_object or json_schema", param="response_format.type")


# ---------------------------------------------------------------------------------------------------------------------
# Client side: response, error and stream out
# ---------------------------------------------------------------------------------------------------------------------
def _usage_out(u: Usage) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": u.cached_tokens}
    if u.cache_creation_tokens:
        prompt_details["cache_write_tokens"] = u.cache_creation_tokens
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _message_out(parts: list[Part]) -> dict[str, Any]:
    texts: list[str] = []
    thoughts: list[str] = []
    blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            calls.append(
                {
                    "id": join_tool_id(part.id, part.signature),
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
        elif isinstance(part, Thinking):
            if part.text:
                thoughts.append(part.text)
            if part.redacted is not None:
                blocks.append({"type": "redacted_thinking", "data": part.redacted})
            elif part.signature:
                blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if blocks:
        message["thinking_blocks"] = blocks
    return message


def build_response(resp: Response, *, model: str, request: Request | None = None) -> bytes:
    """A complete ``chat.completion`` object as the SDK's ``ChatCompletion`` model expects it. Reasoning goes in
    ``reasoning_content``; signed reasoning (Anthropic) also in ``thinking_blocks``, to be echoed back."""
    answers = [Candidate(resp.parts, resp.finish_reason, resp.stop_sequence), *resp.candidates]
    out: dict[str, Any] = {
        "id": resp.id or _gen_id(),
        "object": "chat.completion",
        "created": resp.created,  # the gateway sets it when the provider gave none (Translate)
        "model": model,
        "choices": [
            {
                "index": i,
                "message": _message_out(a.parts),
                "finish_reason": _FINISH_OUT.get(a.finish_reason, "stop"),
                "logprobs": None,
            }
            for i, a in enumerate(answers)
        ],
        "system_fingerprint": None,
    }
    if resp.usage is not None:
        out["usage"] = _usage_out(resp.usage)
    return orjson.dumps(out)


def _error_obj(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _ERROR_TYPE_OUT.get(err.type, "server_error" if err.status >= 500 else "invalid_request_error"),
            "param": err.param,
            "code": err.code or _DEFAULT_CODE.get(err.type),
            "request_id": request_id,
        }
    }


def build_error(err: GatewayError, *, request_id: str | None) -> bytes:
    """OpenAI's error envelope; the SDK picks its exception class from the HTTP status."""
    return orjson.dumps(_error_obj(err, request_id))


class StreamEncoder:
    """Canonical events -> ``chat.completion.chunk`` SSE frames, ending with ``data: [DONE]``."""

    media_type = "text/event-stream"

    __slots__ = (
        "_created",
        "_done",
        "_finished",
        "_id",
        "_include_usage",
        "_model",
        "_request_id",
        "_started",
        "_thinking",
        "_usage",
    )

    def __init__(
        self,
        *,
        model: str,
        include_usage: bool = False,
        created: int = 0,
        request_id: str | None = None,
        **_: Any,
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = created
        self._request_id = request_id
        self._id = ""
        self._started = False
        self._finished = False
        self._done = False
        self._usage: Usage | None = None
        self._thinking: list[str] = []  # reasoning text of the current block, for its thinking_blocks entry

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _start(self, msg_id: str = "") -> bytes:
        self._started = True
        self._id = msg_id or _gen_id()
        return self._chunk({"role": "assistant", "content": ""})

    def encode(self, event: Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, StreamError):
            return self.error(event.error)
        if isinstance(event, UsageUpdate):
            self._usage = merge_usage(self._usage or Usage(), event.usage)
            return b""
        if isinstance(event, MessageStart):
            if event.usage is not None:
                self._usage = merge_usage(self._usage or Usage(), event.usage)
            return b"" if self._started else self._start(event.id)
        head = b"" if self._started else self._start()
        if isinstance(event, TextDelta):
            return head + self._chunk({"content": event.text}) if event.text else head
        if isinstance(event, ThinkingDelta):
            # Reasoning text streams as reasoning_content; a signed block (Anthropic) is sent whole in one
            # thinking_blocks delta when its signature arrives, so the client can echo it back next turn.
            if event.text:
                self._thinking.append(event.text)
                head += self._chunk({"reasoning_content": event.text})
            if event.signature:
                block = {"type": "thinking", "thinking": "".join(self._thinking), "signature": event.signature}
                self._thinking = []
                head += self._chunk({"thinking_blocks": [block]})
            if event.redacted is not None:
                head += self._chunk({"thinking_blocks": [{"type": "redacted_thinking", "data": event.redacted}]})
            return head
        if isinstance(event, ToolCallStart):
            call = {
                "index": event.index,
                "id": join_tool_id(event.id, event.signature),
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return head + self._chunk({"tool_calls": [call]})
        if isinstance(event, ToolCallDelta):
            if not event.arguments:
                return head
            return head + self._chunk(
                {"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]}
            )
        if isinstance(event, Finish):
            if self._finished:
                return head
            self._finished = True
            return head + self._chunk({}, _FINISH_OUT.get(event.reason, "stop"))
        return head

    def finish(self) -> bytes:
        """The usage chunk (usage may arrive after the finish chunk, as OpenAI's does) and ``[DONE]``."""
        if self._done:
            return b""
        out = b"" if self._started else self._start()
        if not self._finished:
            self._finished = True
            out += self._chunk({}, "stop")
        if self._include_usage:
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": _usage_out(self._usage or Usage()),
            }
            out += b"data: " + orjson.dumps(chunk) + b"\n\n"
        self._done = True
        return out + b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        """An ``{"error": ...}`` frame (the SDK raises ``APIError`` on it) and ``[DONE]``."""
        if self._done:
            return b""
        self._done = True
        return b"data: " + orjson.dumps(_error_obj(err, self._request_id)) + b"\n\ndata: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: request out
# ---------------------------------------------------------------------------------------------------------------------
def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == EMBED:
        return "/embeddings"
    return "/chat/completions"


def _text_content(texts: list[str]) -> str | list[dict[str, str]]:
    return texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]


def _content_part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        url = _data_url(part.media_type, part.data, "image/png") if part.data is not None else part.url
        if not url:
            raise invalid("image parts need data or a URL")
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(part, Document):
        if part.data is None:
            raise invalid("OpenAI Chat Completions takes documents only as inline data, not by URL")
        media_type = part.media_type or "application/pdf"
        if media_type.startswith("text/"):
            try:
                return {"type": "text", "text": base64.b64decode(part.data, validate=True).decode("utf-8")}
            except (binascii.Error, UnicodeDecodeError):
                raise invalid(f"a {media_type} document must be base64-encoded UTF-8") from None
        if media_type != "application/pdf":
            raise invalid(f"OpenAI Chat Completions takes PDF documents only, not {media_type}", param="messages")
        name = part.name or ("document.pdf" if media_type == "application/pdf" else "document")
        return {"type": "file", "file": {"file_data": _data_url(media_type, part.data, media_type), "filename": name}}
    raise invalid(f"{type(part).__name__} parts cannot be sent in an OpenAI user message")


def _user_messages(msg: Message, out: list[dict[str, Any]]) -> None:
    """Tool results become ``tool`` messages right after the assistant turn, then the rest of the user content."""
    rest: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for part in msg.parts:
        if isinstance(part, ToolResult):
            texts = []
            for item in part.content:
                if isinstance(item, Text):
                    texts.append(item.text)
                else:
                    # A tool message holds text only: images from a tool result follow in a user message.
                    tool_images.append(_content_part(item))
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": _text_content(texts or [""])})
        elif isinstance(part, Thinking):
            continue
        else:
            rest.append(_content_part(part))
    rest = tool_images + rest
    if not rest:
        return
    if all(p["type"] == "text" for p in rest):
        out.append({"role": "user", "content": _text_content([p["text"] for p in rest])})
    else:
        out.append({"role": "user", "content": rest})


def _assistant_message(msg: Message) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in msg.parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            calls.append(
                {"id": part.id, "type": "function", "function": {"name": part.name, "arguments": part.arguments}}
            )
        elif isinstance(part, (Image, Document, ToolResult)):
            raise invalid(f"OpenAI assistant messages cannot hold {type(part).__name__} parts")
        # Thinking: Chat Completions has no input field for reasoning, so it is dropped.
    if not texts and not calls:
        return None
    out: dict[str, Any] = {"role": "assistant"}
    if texts:
        out["content"] = _text_content(texts)
    if calls:
        out["tool_calls"] = calls
    return out


def _effort_for_budget(budget: int) -> str | None:
    if budget <= 0:
        return None
    if budget <= 2048:
        return "low"
    return "medium" if budget <= 8192 else "high"


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    """A Chat Completions request for an OpenAI(-compatible) provider; only set fields are sent."""
    messages: list[dict[str, Any]] = []
    system = [p.text for p in req.system if isinstance(p, Text)]
    if system:
        messages.append({"role": "system", "content": _text_content(system)})
    for msg in req.messages:
        if msg.role == "assistant":
            built = _assistant_message(msg)
            if built is not None:
                messages.append(built)
        else:
            _user_messages(msg, messages)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.n is not None and req.n > 1 and req.stream:
        raise invalid("several candidates (n > 1) cannot be streamed across formats: stream one, or don't stream")
    if req.max_tokens is not None:
        body["max_completion_tokens"] = req.max_tokens
    for key in ("temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty", "user"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = req.stop
    effort = req.reasoning_effort
    if effort is None and req.thinking_budget is not None:
        effort = _effort_for_budget(req.thinking_budget)
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.tools:
        # tool_choice and parallel_tool_calls are refused by OpenAI unless tools are given.
        body["tools"] = [_tool_out(t) for t in req.tools]
        if req.tool_choice is not None:
            tc = req.tool_choice
            body["tool_choice"] = {"type": "function", "function": {"name": tc.name}} if tc.mode == "tool" else tc.mode
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.response_format is not None:
        body["response_format"] = _response_format_out(req.response_format)
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the gateway wants usage even if the client did not ask
    return orjson.dumps(body)


def _tool_out(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    if tool.parameters is not None:
        fn["parameters"] = tool.parameters
    return {"type": "function", "function": fn}


def _response_format_out(rf: ResponseFormat) -> dict[str, Any]:
    if rf.type != "json_schema":
        return {"type": rf.type if rf.type == "json_object" else "text"}
    js: dict[str, Any] = {"name": rf.name or "response"}
    if rf.schema is not None:
        js["schema"] = rf.schema
    if rf.strict is not None:
        js["strict"] = rf.strict
    return {"type": "json_schema", "json_schema": js}


def rewrite_model(body: bytes, model: str) -> bytes:
    """Pass-through aliasing: only the top-level ``model`` value's bytes change (``jsonbytes``)."""
    return jsonbytes.rewrite_model(body, model)


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: response, error and stream in
# ---------------------------------------------------------------------------------------------------------------------
def _bad_response(what: str) -> GatewayError:
    return GatewayError("server_error", f"invalid OpenAI response from provider: {what}", 502)


def _usage_in(u: Any) -> Usage | None:
    if not isinstance(u, dict):
        return None
    usage = Usage(_int(u.get("prompt_tokens")), _int(u.get("completion_tokens")))
    pd = u.get("prompt_tokens_details")
    if isinstance(pd, dict):
        usage.cached_tokens = _int(pd.get("cached_tokens"))
        usage.cache_creation_tokens = _int(pd.get("cache_write_tokens"))
    cd = u.get("completion_tokens_details")
    if isinstance(cd, dict):
        usage.reasoning_tokens = _int(cd.get("reasoning_tokens"))
    return usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _content_text(content: Any) -> str:
    """Message content: a string, or (some compatible servers) an array of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def parse_response(body: bytes) -> Response:
    """A ``chat.completion`` from the provider; choices after the first (``n`` > 1) become ``candidates``."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_response("body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad_response("body is not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad_response("no choices")
    answers = [_choice_in(ch) for ch in sorted(choices, key=_choice_index)]
    first = answers[0]
    rid = data.get("id")
    model = data.get("model")
    created = data.get("created")
    return Response(
        id=rid if isinstance(rid, str) else "",
        model=model if isinstance(model, str) else "",
        parts=first.parts,
        finish_reason=first.finish_reason,
        usage=_usage_in(data.get("usage")),
        created=_int(created),
        candidates=answers[1:],
    )


def _choice_index(choice: Any) -> int:
    return _int(choice.get("index")) if isinstance(choice, dict) else 0


def _choice_in(choice: Any) -> Candidate:
    if not isinstance(choice, dict):
        raise _bad_response("choice is not an object")
    msg = choice.get("message")
    if not isinstance(msg, dict):
        raise _bad_response("choice has no message")
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Thinking(reasoning))
    text = _content_text(msg.get("content"))
    if text:
        parts.append(Text(text))
    refusal = msg.get("refusal")
    refused = isinstance(refusal, str) and bool(refusal)
    if isinstance(refusal, str) and refusal:
        parts.append(Text(refusal))
    calls = msg.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad_response("malformed tool call")
        args = fn.get("arguments")
        if isinstance(args, (dict, list)):
            args = orjson.dumps(args).decode()
        call_id = call.get("id")
        parts.append(
            ToolCall(
                call_id if isinstance(call_id, str) and call_id else f"call_{len(parts)}", fn["name"], args or "{}"
            )
        )
    fcall = msg.get("function_call")
    if isinstance(fcall, dict) and isinstance(fcall.get("name"), str):
        parts.append(ToolCall(f"call_{fcall['name']}", fcall["name"], fcall.get("arguments") or "{}"))
    reason = _finish_in(choice.get("finish_reason"), any(isinstance(p, ToolCall) for p in parts), refused)
    return Candidate(parts, reason)


def _finish_in(raw: Any, saw_tool_call: bool, refused: bool) -> str:
    """Map a finish reason; some compatible servers say ``stop`` after tool calls, which clients would misread."""
    if refused:
        return "content_filter"
    reason = _FINISH_IN.get(raw, "stop") if isinstance(raw, str) else "stop"
    if reason == "stop" and saw_tool_call:
        return "tool_calls"
    return reason


def _error_from(obj: Any, status: int | None) -> GatewayError:
    """An OpenAI-style error object (or a looser shape from a compatible server) -> GatewayError."""
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        err = obj if isinstance(obj, dict) else {}
    message = err.get("message") or (obj.get("detail") if isinstance(obj, dict) else None)
    if not isinstance(message, str) or not message:
        message = f"provider returned HTTP {status}" if status else "provider reported an error"
    code = err.get("code")
    code = str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None
    param = err.get("param") if isinstance(err.get("param"), str) else None
    ptype = err.get("type")
    if code == "model_not_found":
        gtype = "unknown_model"
    elif isinstance(ptype, str) and ptype in _ERROR_TYPE_IN:
        gtype = _ERROR_TYPE_IN[ptype]
    elif status is not None:
        gtype = type_for_status(status)
    else:
        gtype = "invalid_request" if ptype == "invalid_request_error" else "server_error"
    return GatewayError(gtype, message, status if status is not None else ERROR_TYPES[gtype], param=param, code=code)


def parse_error(status: int, body: bytes) -> GatewayError:
    """The provider's error, its message and code kept and its status unchanged."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return GatewayError(type_for_status(status), f"provider returned HTTP {status} with a non-JSON body", status)
    return _error_from(data, status)


class StreamDecoder:
    """Provider ``chat.completion.chunk`` SSE -> canonical events."""

    __slots__ = ("_calls", "_done", "_finished", "_last_key", "_parser", "_refused", "_started")

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._started = False
        self._finished = False
        self._done = False
        self._refused = False
        self._calls: dict[Any, int] = {}  # provider tool-call key (its index) -> our ordinal
        self._last_key: Any = None

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for ev in self._parser.feed(chunk):
            self._event(ev.data, out)
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        for ev in self._parser.close():
            self._event(ev.data, out)
        if not self._done and not self._finished:
            self._done = True
            out.append(StreamError(GatewayError("network", "provider stream ended early", 502)))
        return out

    def _event(self, data: str, out: list[Event]) -> None:
        if self._done:
            return
        if data.startswith("[DONE]"):
            self._done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._done = True
            out.append(StreamError(GatewayError("server_error", "provider sent invalid JSON in its stream", 502)))
            return
        if not isinstance(obj, dict):
            return
        if obj.get("error"):
            self._done = True
            out.append(StreamError(_error_from(obj, None)))
            return
        if not self._started:
            self._started = True
            rid = obj.get("id")
            model = obj.get("model")
            out.append(MessageStart(rid if isinstance(rid, str) else "", model if isinstance(model, str) else ""))
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            self._choice(choices[0], out)
        usage = _usage_in(obj.get("usage"))
        if usage is not None:
            out.append(UsageUpdate(usage))

    def _choice(self, choice: dict[str, Any], out: list[Event]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ThinkingDelta(reasoning))
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(TextDelta(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                out.append(TextDelta(refusal))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        self._tool_call(call, out)
            fcall = delta.get("function_call")
            if isinstance(fcall, dict):
                self._tool_call({"index": "function_call", "function": fcall}, out)
        reason = choice.get("finish_reason")
        if reason and not self._finished:
            self._finished = True
            out.append(Finish(_finish_in(reason, bool(self._calls), self._refused)))

    def _tool_call(self, call: dict[str, Any], out: list[Event]) -> None:
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        call_id = call.get("id")
        key = call.get("index")
        if key is None:  # servers that omit the index: a new id starts a call, otherwise continue the last one
            key = ("id", call_id) if isinstance(call_id, str) and call_id else self._last_key
        ordinal = self._calls.get(key)
        if ordinal is None:
            ordinal = len(self._calls)
            self._calls[key] = ordinal
            name = fn.get("name")
            out.append(
                ToolCallStart(
                    ordinal,
                    call_id if isinstance(call_id, str) and call_id else f"call_{ordinal}",
                    name if isinstance(name, str) else "",
                )
            )
        self._last_key = key
        args = fn.get("arguments")
        if isinstance(args, (dict, list)):
            args = orjson.dumps(args).decode()
        if isinstance(args, str) and args:
            out.append(ToolCallDelta(ordinal, args))


# ---------------------------------------------------------------------------------------------------------------------
# Pass-through streams: usage for the gateway even when the client did not ask for it
# ---------------------------------------------------------------------------------------------------------------------
def wants_stream_usage(data: dict[str, Any]) -> bool:
    """Did the client ask for the usage chunk (``stream_options.include_usage``)?"""
    opts = data.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


class UsageStripper:
    """An OpenAI stream passed through to an OpenAI client that did not ask for usage: every event goes out as it
    came, except the extra usage chunk (empty ``choices``), which is kept for the gateway's own accounting."""

    __slots__ = ("_sse", "usage")

    media_type = "text/event-stream"

    def __init__(self) -> None:
        self._sse = SSEParser()
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> bytes:
        return self._forward(self._sse.feed(chunk))

    def close(self) -> bytes:
        return self._forward(self._sse.close())

    def _forward(self, events: list[SSEEvent]) -> bytes:
        out: list[bytes] = []
        for ev in events:
            data = ev.data
            if '"usage"' in data and data != "[DONE]":
                try:
                    obj = orjson.loads(data)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict):
                    self.usage = _usage_in(obj["usage"])
                    continue
            out.append(encode_event(data.encode(), ev.event))
        return b"".join(out)


# ---------------------------------------------------------------------------------------------------------------------
# The format contract (extproc.translation.formats.contract): routes, credentials, listings, pass-through, factories
# ---------------------------------------------------------------------------------------------------------------------
PATH_PREFIX = "/openai/"
COUNTS_TOKENS = False
STATE: ConversationState | None = None  # nothing is kept between requests
_CHAT = "/openai/v1/chat/completions"
_MODELS = "/openai/v1/models"
_EMBEDDINGS = "/openai/v1/embeddings"


def route(method: str, path: str, query: str) -> Endpoint | None:
    if path == _CHAT:
        return Endpoint(GENERATE)
    if path == _EMBEDDINGS:
        return Endpoint(EMBED)
    if path == _MODELS or path.startswith(_MODELS + "/"):
        return Endpoint(MODELS, model_id=path[len(_MODELS) + 1 :] or None, methods=("GET",))
    return None


def client_credential(headers: Mapping[str, str], query: str) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def request_model(endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
    return head.get("model"), head.get("stream") is True


def list_models(models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
    """``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``, or one model."""

    def one(m: ModelInfo) -> dict[str, Any]:
        return {"id": m.name, "object": "model", "created": m.created, "owned_by": m.provider}

    if model_id is not None:
        return orjson.dumps(one(listing.find(models, model_id)))
    return orjson.dumps({"object": "list", "data": [one(m) for m in models]})


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    return path[len("/openai/v1") :] + (f"?{query}" if query else "")


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    """The client's bytes, aliased; a stream whose client did not ask for usage asks for it anyway (for metrics and
    logs), and the extra usage chunk is dropped on the way back (``UsageStripper``)."""
    out = jsonbytes.rewrite_model(body, model, head.get("model"))
    if not stream or wants_stream_usage(head):
        return out, None
    opts = head.get("stream_options")
    value = {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
    return jsonbytes.replace_top_level(out, "stream_options", orjson.dumps(value)), UsageStripper()


def stream_encoder(opts: StreamOptions) -> StreamEncoder:
    return StreamEncoder(
        model=opts.model, include_usage=opts.include_usage, created=opts.created, request_id=opts.request_id
    )


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder()


def fetches_url(part: Image | Document) -> bool | str:
    """OpenAI reads image URLs itself; files only as inline ``file_data``."""
    if media.is_gemini_file(part.url or ""):
        return "Gemini File API URIs can only be read by Gemini providers"
    return isinstance(part, Image)


def parse_count_request(body: bytes | dict[str, Any], *, model: str) -> Request:
    raise invalid("OpenAI Chat Completions has no token counting endpoint")


def build_count_request(req: Request, *, model: str) -> bytes:
    raise invalid(
        f"token counting for model '{req.model}' is not available: OpenAI Chat Completions providers cannot count",
        param="model",
    )


def parse_count_response(body: bytes) -> int:
    raise _bad_response("no token counting endpoint")


def build_count_response(tokens: int) -> bytes:
    raise invalid("OpenAI Chat Completions has no token counting endpoint")


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings (``POST /v1/embeddings``), both sides
# ---------------------------------------------------------------------------------------------------------------------
EMBEDS = True


def parse_embed_request(body: bytes | dict[str, Any], *, model: str) -> EmbedRequest:
    """``{"input": str | [str], "model", "dimensions", "encoding_format", "user"}``; token-id inputs can only go to
    an OpenAI-compatible provider as they are (the same-format pass-through), not be translated."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    raw = data.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    elif isinstance(raw, list) and raw and all(isinstance(x, int | list) for x in raw):
        raise invalid("token-id inputs can only be embedded by an OpenAI-compatible provider", param="input")
    else:
        raise invalid("'input' must be a non-empty string or array of strings", param="input")
    if any(not x for x in inputs):
        raise invalid("'$.input' is invalid: empty strings cannot be embedded", param="input")
    dims = data.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise invalid("'dimensions' must be a positive integer", param="dimensions")
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    user = data.get("user")
    return EmbedRequest(model, inputs, dims, encoding, user=user if isinstance(user, str) else None)


def build_embed_response(resp: EmbedResponse, *, model: str, request: EmbedRequest) -> bytes:
    b64 = request.encoding == "base64"
    data = [
        {"object": "embedding", "index": i, "embedding": embeddings.to_base64(v) if b64 else v}
        for i, v in enumerate(resp.vectors)
    ]
    tokens = resp.usage.input_tokens if resp.usage is not None else 0
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    body: dict[str, Any] = {"model": model, "input": req.inputs, "encoding_format": "float"}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.user:
        body["user"] = req.user
    return orjson.dumps(body)


def parse_embed_response(body: bytes) -> EmbedResponse:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_response("embeddings body is not JSON") from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise _bad_response("embeddings answer without data")
    vectors = []
    for item in sorted(items, key=lambda x: _int(x.get("index"))):
        vec = item.get("embedding")
        vectors.append(embeddings.from_base64(vec) if isinstance(vec, str) else embeddings.floats(vec))
    u = data.get("usage")
    usage = Usage(_int(u.get("prompt_tokens"))) if isinstance(u, dict) else None
    model = data.get("model")
    return EmbedResponse(vectors, model if isinstance(model, str) else "", usage)
