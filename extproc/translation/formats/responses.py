"""OpenAI Responses API (``POST /v1/responses``), both as the client's format and as a provider's.

Shapes follow the official ``openai`` SDK's types (``openai/types/responses``) and what real clients send (Codex CLI,
the Agents SDK, the Vercel AI SDK, pydantic-ai: ``tests/fixtures/clients``). Notes on the mapping:

- ``input`` items become canonical messages: ``message`` items by role (``system``/``developer`` and ``instructions``
  go to ``Request.system``); ``reasoning``, assistant ``message`` and ``function_call`` items that follow each other
  are one assistant turn; ``function_call_output`` items are ``ToolResult`` parts of a user turn, paired with their
  call by ``call_id`` (an output without its call, or a call without its output, is a 400 as on OpenAI).
- Signed reasoning crosses turns in ``encrypted_content``. Towards a Responses *client* the gateway packs the
  canonical ``Thinking`` (text, Anthropic signature or Gemini thought signature, redacted data) into it; a client
  that echoes the item back gets exactly that ``Thinking`` again. Towards a Responses *provider* it packs OpenAI's
  reasoning item id and ``encrypted_content`` into ``Thinking.signature``, so Chat, Anthropic and Gemini clients carry
  it in their own signature fields and the next turn replays the item to OpenAI. Reasoning the other side cannot
  verify is dropped (a foreign ``encrypted_content``, reasoning text without a signature towards OpenAI).
- ``namespace`` tools (Codex) are flattened to function tools named ``{namespace}__{name}``; calls to them come back
  to the client with ``name`` and ``namespace`` apart again.
- OpenAI's built-in tools (``web_search``, ``file_search``, ``code_interpreter``, ``computer_use``, ``mcp``,
  ``image_generation``, shells, ``apply_patch``) and ``custom`` tools run only on OpenAI's servers: towards any other
  provider they are a 400 naming the tool (Codex sends ``web_search`` unless ``web_search = "disabled"``).
- A Responses answer repeats its request (``instructions``, ``tools``, ``text``, ``reasoning``, ``metadata``, ...):
  ``parse_request`` keeps those facts and the answer's id in ``Request.echo`` for the builders.
- Gemini thought signatures of tool calls ride inside ``call_id`` as ``{id}__thought__{signature}`` (as in Chat).

Everything here is pure (bytes and dicts in and out); the gateway's conversation store is the exchange's business.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from extproc.translation import canonical as c
from extproc.translation import embeddings, jsonbytes
from extproc.translation.errors import ERROR_TYPES, GatewayError, invalid, type_for_status
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    GENERATE,
    LOCAL,
    AnswerStore,
    BuildOptions,
    Conversation,
    ConversationState,
    CredentialHeader,
    Endpoint,
    HistoryMissing,
    ModelInfo,
    StreamOptions,
)
from extproc.translation.sse import SSEParser

NAME = "responses"
PATH_PREFIX = "/openai/"  # shared with Chat Completions (whose error shape this format also uses)
CREDENTIAL = CredentialHeader("authorization", "Bearer ")
EXTRA_HEADERS: list[tuple[str, str]] = []
NAMESPACE_SEP = "__"

_ROOT = "/openai/v1/responses"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_BAD_INPUT = (KeyError, TypeError, ValueError, AttributeError, IndexError)
# OpenAI's built-in tools: they run on OpenAI's servers, so only a Responses provider can take them.
BUILTIN_TOOLS = frozenset(
    {
        "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26",
        "file_search", "code_interpreter", "computer", "computer_use", "computer_use_preview", "mcp",
        "image_generation", "local_shell", "shell", "apply_patch", "tool_search", "programmatic_tool_calling",
    }
)  # fmt: skip
# Input items that only OpenAI's servers produce or understand (results of built-in tools, compaction, MCP, ...).
_OPENAI_ITEMS = frozenset(
    {
        "file_search_call", "computer_call", "computer_call_output", "web_search_call", "image_generation_call",
        "code_interpreter_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
        "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
        "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "tool_search_call",
        "tool_search_output", "additional_tools", "compaction", "compaction_trigger", "program", "program_output",
        "configuration_update",
    }
)  # fmt: skip
_DOC_TYPES = {".pdf": "application/pdf", ".txt": "text/plain", ".md": "text/markdown", ".csv": "text/csv"}
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
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
# ``Response.error.code`` is a closed set in the SDK: an in-stream failure is reported with one of these.
_FAILED_CODE = {"rate_limit": "rate_limit_exceeded", "invalid_request": "invalid_prompt"}
_PACK_CLIENT = b"aigw-r1"  # encrypted_content the gateway gives Responses clients: a canonical Thinking
_PACK_PROVIDER = b"aigw-o1"  # Thinking.signature the gateway gives other clients: an OpenAI reasoning item


# ---------------------------------------------------------------------------------------------------------------------
# Routing (client side)
# ---------------------------------------------------------------------------------------------------------------------
def route(method: str, path: str, query: str) -> Endpoint | None:
    """``/openai/v1/responses`` and the stored-response endpoints under it; None for any other path."""
    if not path.startswith(_ROOT):
        return None
    rest = path[len(_ROOT) :]
    if rest == "":
        return Endpoint(GENERATE)
    if rest == "/input_tokens":
        return Endpoint(COUNT_TOKENS)
    parts = rest[1:].split("/")
    if len(parts) > 2 or not parts[0] or (len(parts) == 2 and parts[1] != "input_items"):
        return None
    if len(parts) == 2:
        return Endpoint(LOCAL, methods=("GET",), op="input_items", resource_id=parts[0])
    op = "delete" if method == "DELETE" else "get"
    return Endpoint(LOCAL, methods=("GET", "DELETE"), op=op, resource_id=parts[0])


def valid_id(resource_id: str) -> bool:
    """A stored-response id the gateway could have issued (letters, digits, ``_``, ``-``)."""
    return bool(_ID.match(resource_id))


def client_credential(headers: Mapping[str, str], query: str) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def request_model(endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
    return head.get("model"), head.get("stream") is True and endpoint.kind == GENERATE


# ---------------------------------------------------------------------------------------------------------------------
# Reasoning packed into the other side's opaque field
# ---------------------------------------------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes | None:
    t = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    except (binascii.Error, ValueError):
        return None


def pack_thinking(part: c.Thinking) -> str:
    """``encrypted_content`` for a Responses client: the whole canonical Thinking, opaque to the client."""
    obj: dict[str, Any] = {"t": part.text}
    if part.signature:
        obj["s"] = part.signature
    if part.redacted is not None:
        obj["r"] = part.redacted
    return _b64(_PACK_CLIENT + b"." + orjson.dumps(obj))


def unpack_thinking(value: str) -> c.Thinking | None:
    """The Thinking a ``pack_thinking`` value holds; None for anything else (e.g. OpenAI's own)."""
    raw = _unb64(value) if value[:4] == "YWln" else None  # base64 of "aig"
    if raw is None or not raw.startswith(_PACK_CLIENT + b"."):
        return None
    try:
        obj = orjson.loads(raw[len(_PACK_CLIENT) + 1 :])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("t", ""), str):
        return None
    sig, red = obj.get("s"), obj.get("r")
    return c.Thinking(obj.get("t", ""), sig if isinstance(sig, str) else None, red if isinstance(red, str) else None)


def pack_reasoning_item(item_id: str, encrypted: str) -> str:
    """``Thinking.signature`` for an OpenAI reasoning item (URL-safe base64: Gemini clients carry it as bytes)."""
    return _b64(_PACK_PROVIDER + b"." + orjson.dumps([item_id, encrypted]))


def unpack_reasoning_item(signature: str) -> tuple[str, str] | None:
    raw = _unb64(signature) if signature[:4] == "YWln" else None
    if raw is None or not raw.startswith(_PACK_PROVIDER + b"."):
        return None
    try:
        obj = orjson.loads(raw[len(_PACK_PROVIDER) + 1 :])
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, list) and len(obj) == 2 and all(isinstance(x, str) for x in obj):
        return obj[0], obj[1]
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Client side: request in
# ---------------------------------------------------------------------------------------------------------------------
def new_response_id() -> str:
    return "resp_" + os.urandom(24).hex()


def _item_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def _opt(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str, where: str = "") -> Any:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise invalid(f"Invalid type for '{where}{key}': expected {what}.", param=f"{where}{key}")
    return value


def _num(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float | None:
    value = _opt(body, key, (int, float), "a number")
    if value is None:
        return None
    if not lo <= value <= hi:
        raise invalid(f"Invalid '{key}': expected a value between {lo:g} and {hi:g}, but got {value}.", param=key)
    return float(value)


def parse_request(body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False) -> c.Request:
    """Decode and validate a Responses request like the real API would (``body`` may be already decoded). The
    conversation must already be whole: the exchange prepends stored history (``previous_response_id``) and resolves
    ``item_reference`` items before this is called."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    try:
        return _parse(data, model, stream)
    except GatewayError:
        raise
    except _BAD_INPUT as exc:
        raise invalid(f"invalid request: {exc}") from None


def _parse(data: dict[str, Any], model: str | None, stream: bool) -> c.Request:
    req = c.Request(model="")
    body_model = data.get("model")
    if body_model is not None and not isinstance(body_model, str):
        raise invalid("Invalid type for 'model': expected a string.", param="model")
    req.model = body_model or model or ""
    if not req.model:
        raise invalid("Missing required parameter: 'model'.", param="model")
    for key in ("background", "conversation", "prompt"):
        if data.get(key) not in (None, False):
            raise invalid(
                f"'{key}' needs OpenAI's servers: it is only available for models served by an OpenAI provider "
                "that speaks the Responses API",
                param=key,
            )
    instructions = data.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            req.system.append(c.Text(instructions))
    elif instructions is not None:
        raise invalid("Invalid type for 'instructions': expected a string.", param="instructions")
    tools, namespaces = _parse_tools(data.get("tools"))
    req.tools = tools
    _parse_input(data.get("input"), req, namespaces)
    req.max_tokens = _opt(data, "max_output_tokens", int, "an integer")
    if req.max_tokens is not None and req.max_tokens < 1:
        raise invalid("Invalid 'max_output_tokens': expected a value >= 1.", param="max_output_tokens")
    req.temperature = _num(data, "temperature", 0, 2)
    req.top_p = _num(data, "top_p", 0, 1)
    req.parallel_tool_calls = _opt(data, "parallel_tool_calls", bool, "a boolean")
    safety = _opt(data, "safety_identifier", str, "a string")
    req.user = safety or _opt(data, "user", str, "a string")
    req.stream = bool(_opt(data, "stream", bool, "a boolean")) or stream
    req.include_usage = True  # usage is always part of a Responses answer (response.completed)
    req.tool_choice = _parse_tool_choice(data.get("tool_choice"), req)
    text = _opt(data, "text", dict, "an object")
    if text:
        req.response_format = _parse_format(text.get("format"))
        verbosity = text.get("verbosity")
        if verbosity is not None:
            if verbosity not in ("low", "medium", "high"):
                raise invalid("Invalid value for 'text.verbosity': use low, medium or high.", param="text.verbosity")
            req.verbosity = verbosity
    reasoning = _opt(data, "reasoning", dict, "an object")
    if reasoning:
        effort = reasoning.get("effort")
        if effort is not None:
            if effort not in _EFFORTS:
                raise invalid(
                    f"Invalid value for 'reasoning.effort': use one of {', '.join(_EFFORTS)}.",
                    param="reasoning.effort",
                )
            req.reasoning_effort = effort
        summary = reasoning.get("summary", reasoning.get("generate_summary"))
        if summary is not None:
            if summary not in ("auto", "concise", "detailed"):
                raise invalid(
                    "Invalid value for 'reasoning.summary': use auto, concise or detailed.", param="reasoning.summary"
                )
            req.reasoning_summary = summary
    include = _opt(data, "include", list, "an array")
    if include and not all(isinstance(x, str) for x in include):
        raise invalid("Invalid type for 'include': expected an array of strings.", param="include")
    metadata = _opt(data, "metadata", dict, "an object")
    store = _opt(data, "store", bool, "a boolean")
    req.echo = {
        "id": new_response_id(),
        "created_at": int(time.time()),
        "instructions": instructions,
        "tools": data.get("tools") or [],
        "tool_choice": data.get("tool_choice") or "auto",
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "text": text or None,
        "reasoning": reasoning or None,
        "max_output_tokens": req.max_tokens,
        "metadata": metadata or {},
        "store": store is not False,
        "previous_response_id": data.get("previous_response_id"),
        "user": data.get("user"),
        "safety_identifier": safety,
        "prompt_cache_key": data.get("prompt_cache_key"),
        "service_tier": data.get("service_tier"),
        "truncation": data.get("truncation"),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "encrypted": bool(include) and "reasoning.encrypted_content" in include,
        "namespaces": namespaces,
    }
    return req


# ---- tools
def _parse_tools(raw: Any) -> tuple[list[c.Tool], dict[str, tuple[str, str]]]:
    """Function tools (namespaces flattened); built-in and custom tools are refused: only OpenAI runs them."""
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        raise invalid("Invalid type for 'tools': expected an array.", param="tools")
    tools: list[c.Tool] = []
    namespaces: dict[str, tuple[str, str]] = {}  # flattened name -> (namespace, name)
    for i, t in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(t, dict):
            raise invalid("Invalid type for tools: expected an object.", param=param)
        kind = t.get("type")
        if kind == "function":
            tools.append(_function_tool(t, param))
        elif kind == "namespace":
            ns = t.get("name")
            inner = t.get("tools")
            if not isinstance(ns, str) or not ns or not isinstance(inner, list):
                raise invalid("namespace tools need a string 'name' and an array 'tools'", param=param)
            for j, fn in enumerate(inner):
                if not isinstance(fn, dict) or fn.get("type") != "function":
                    raise invalid("namespace tools may only hold function tools here", param=f"{param}.tools[{j}].type")
                tool = _function_tool(fn, f"{param}.tools[{j}]")
                flat = f"{ns}{NAMESPACE_SEP}{tool.name}"
                namespaces[flat] = (ns, tool.name)
                tool.name, tool.namespace = flat, ns
                tools.append(tool)
        elif kind in BUILTIN_TOOLS or kind == "custom":
            what = "custom (free-form input)" if kind == "custom" else "built-in"
            raise invalid(
                f"tool '{kind}' is one of OpenAI's {what} tools: it runs only on OpenAI's Responses API, and this "
                'model\'s provider cannot run it (remove the tool; in Codex set web_search = "disabled")',
                param=f"{param}.type",
            )
        else:
            raise invalid(f"Invalid value for tools type: {kind!r}.", param=f"{param}.type")
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise invalid(f"tool names must be unique: '{dup}' is declared twice", param="tools")
    return tools, namespaces


def _function_tool(t: dict[str, Any], param: str) -> c.Tool:
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("Missing required parameter: 'name'.", param=f"{param}.name")
    description = t.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid("Invalid type for 'description': expected a string.", param=f"{param}.description")
    parameters = t.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid("Invalid type for 'parameters': expected an object.", param=f"{param}.parameters")
    strict = t.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid("Invalid type for 'strict': expected a boolean.", param=f"{param}.strict")
    return c.Tool(name, description, parameters, strict)


def _parse_tool_choice(choice: Any, req: c.Request) -> c.ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise invalid(f"Invalid value for 'tool_choice': {choice!r}.", param="tool_choice")
        return c.ToolChoice(choice)
    if not isinstance(choice, dict):
        raise invalid("Invalid type for 'tool_choice': expected a string or an object.", param="tool_choice")
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise invalid("Missing required parameter: 'tool_choice.name'.", param="tool_choice.name")
        if not any(t.name == name for t in req.tools):
            raise invalid(f"Tool choice '{name}' not found in 'tools' parameter.", param="tool_choice")
        return c.ToolChoice("tool", name)
    if kind == "allowed_tools":
        mode = choice.get("mode")
        listed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(listed, list) or not listed:
            raise invalid("'allowed_tools' needs 'mode' (auto or required) and 'tools'", param="tool_choice")
        names: list[str] = []
        for i, t in enumerate(listed):
            name = t.get("name") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(name, str):
                raise invalid("allowed tools must be function tools with a name", param=f"tool_choice.tools[{i}]")
            names.append(name)
        missing = [n for n in names if not any(t.name == n for t in req.tools)]
        if missing:
            raise invalid(
                f"allowed tools must name declared tools (unknown: {', '.join(missing)})", param="tool_choice"
            )
        req.tools = [t for t in req.tools if t.name in names]
        return c.ToolChoice(mode)
    if kind in BUILTIN_TOOLS or kind in ("custom", "web_search_preview_2025_03_11"):
        raise invalid(
            f"tool_choice '{kind}' names an OpenAI-hosted tool this model's provider cannot run", param="tool_choice"
        )
    raise invalid(f"Invalid value for 'tool_choice.type': {kind!r}.", param="tool_choice.type")


def _parse_format(fmt: Any) -> c.ResponseFormat | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return c.ResponseFormat(kind)
    if kind == "json_schema":
        name, schema, strict = fmt.get("name"), fmt.get("schema"), fmt.get("strict")
        if not isinstance(name, str) or not name:
            raise invalid("Missing required parameter: 'text.format.name'.", param="text.format.name")
        if not isinstance(schema, dict):
            raise invalid("Missing required parameter: 'text.format.schema'.", param="text.format.schema")
        return c.ResponseFormat("json_schema", schema, name, strict if isinstance(strict, bool) else None)
    raise invalid("Invalid value for 'text.format.type': use text, json_object or json_schema.", param="text.format")


# ---- input items
def _parse_input(raw: Any, req: c.Request, namespaces: dict[str, tuple[str, str]]) -> None:
    if isinstance(raw, str):
        req.messages.append(c.Message("user", [c.Text(raw)]))
        return
    if not isinstance(raw, list) or not raw:
        raise invalid("'input' must be a string or a non-empty array of items", param="input")
    msgs = req.messages
    calls: dict[str, str] = {}  # call_id -> function name
    answered: set[str] = set()
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid("Invalid type for input item: expected an object.", param=param)
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            _message_item(item, param, req)
        elif kind == "function_call":
            call = _function_call_item(item, param, namespaces)
            if call.id in calls:
                raise invalid(f"Duplicate function call id '{call.id}'.", param=f"{param}.call_id")
            calls[call.id] = call.name
            _assistant(msgs).parts.append(call)
        elif kind == "function_call_output":
            raw_id = item.get("call_id")
            if not isinstance(raw_id, str) or not raw_id:
                raise invalid("Missing required parameter: 'call_id'.", param=f"{param}.call_id")
            call_id, _ = c.split_tool_id(raw_id)
            if call_id not in calls:
                raise invalid(f"No tool call found for function call output with call_id {raw_id}.", param=param)
            answered.add(call_id)
            result = c.ToolResult(call_id, calls[call_id], _output_parts(item.get("output"), f"{param}.output"))
            last = msgs[-1] if msgs else None
            if last is not None and last.role == "user" and last.parts and isinstance(last.parts[-1], c.ToolResult):
                last.parts.append(result)
            else:
                msgs.append(c.Message("user", [result]))
        elif kind == "reasoning":
            part = _reasoning_item(item, param)
            if part is not None:
                _assistant(msgs).parts.append(part)
        elif kind == "item_reference":  # one the gateway holds was put in place already (STATE.expand)
            raise invalid(f"Item with id '{item.get('id')}' not found.", param=param)
        elif kind in _OPENAI_ITEMS:
            raise invalid(
                f"input items of type '{kind}' come from OpenAI's own tools and can only be sent to an OpenAI "
                "provider that speaks the Responses API",
                param=f"{param}.type",
            )
        else:
            raise invalid(f"Invalid value for input item type: {kind!r}.", param=f"{param}.type")
    missing = [cid for cid in calls if cid not in answered]
    if missing:
        raise invalid(f"No tool output found for function call {missing[0]}.", param="input")
    if not any(m.parts for m in msgs) and not req.system:
        raise invalid("'input' holds nothing a model could answer", param="input")


def _assistant(msgs: list[c.Message]) -> c.Message:
    """The assistant turn items belong to: the last message when it is an assistant turn, else a new one."""
    if msgs and msgs[-1].role == "assistant":
        return msgs[-1]
    msg = c.Message("assistant", [])
    msgs.append(msg)
    return msg


def _message_item(item: dict[str, Any], param: str, req: c.Request) -> None:
    role = item.get("role")
    content = item.get("content")
    where = f"{param}.content"
    if role in ("system", "developer"):
        req.system.extend(_input_parts(content, where, text_only=True))
    elif role == "user":
        parts = _input_parts(content, where)
        if parts:
            req.messages.append(c.Message("user", parts))
    elif role == "assistant":
        parts = _assistant_parts(content, where)
        if parts:
            _assistant(req.messages).parts.extend(parts)
    else:
        raise invalid(
            f"Invalid value: {role!r}. Supported values are: 'user', 'assistant', 'system', and 'developer'.",
            param=f"{param}.role",
        )


def _input_parts(content: Any, param: str, text_only: bool = False) -> list[c.Part]:
    if isinstance(content, str):
        return [c.Text(content)] if content or not text_only else []
    if not isinstance(content, list):
        raise invalid("Invalid type for message content: expected a string or an array of parts.", param=param)
    out: list[c.Part] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_text":
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid("Missing required parameter: 'text'.", param=f"{p}.text")
            out.append(c.Text(text))
        elif text_only:
            raise invalid("system and developer messages may only hold input_text parts", param=f"{p}.type")
        elif kind == "input_image":
            out.append(_image(part, p))
        elif kind == "input_file":
            out.append(_file(part, p))
        elif kind in ("output_text", "refusal"):
            raise invalid(
                f"Invalid value: '{kind}'. Supported values are: 'input_text', 'input_image', and 'input_file'.",
                param=f"{p}.type",
            )
        else:
            raise invalid(f"Invalid value for content part type: {kind!r}.", param=f"{p}.type")
    return out


def _assistant_parts(content: Any, param: str) -> list[c.Part]:
    if isinstance(content, str):
        return [c.Text(content)] if content else []
    if not isinstance(content, list):
        raise invalid("Invalid type for message content: expected a string or an array of parts.", param=param)
    out: list[c.Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = {"output_text": "text", "refusal": "refusal", "input_text": "text"}.get(kind or "")
        if key is None:
            raise invalid(
                f"Invalid value: {kind!r}. Supported values are: 'output_text' and 'refusal'.",
                param=f"{param}[{j}].type",
            )
        text = part.get(key)
        if not isinstance(text, str):
            raise invalid(f"Missing required parameter: '{key}'.", param=f"{param}[{j}].{key}")
        if text:
            out.append(c.Text(text))
    return out


def _data_url(url: str, param: str) -> tuple[str | None, str]:
    comma = url.find(",")
    if comma < 0:
        raise invalid("malformed data URL", param=param)
    fields = url[5:comma].split(";")
    if "base64" not in fields[1:]:
        raise invalid("data URLs must be base64-encoded (data:<media type>;base64,<data>)", param=param)
    return (fields[0] or None), url[comma + 1 :]


def _image(part: dict[str, Any], param: str) -> c.Image:
    url = part.get("image_url")
    if isinstance(url, str) and url:
        if url.startswith("data:"):
            media_type, data = _data_url(url, f"{param}.image_url")
            return c.Image(media_type=media_type, data=data)
        return c.Image(url=url)
    if part.get("file_id") is not None:
        raise invalid(
            "input_image parts with 'file_id' are not supported: uploaded files cannot be forwarded, send "
            "'image_url' (a URL or a data URL)",
            param=f"{param}.file_id",
        )
    raise invalid("input_image parts need 'image_url'", param=param)


def _file(part: dict[str, Any], param: str) -> c.Document:
    filename = part.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise invalid("Invalid type for 'filename': expected a string.", param=f"{param}.filename")
    data = part.get("file_data")
    if isinstance(data, str) and data:
        if data.startswith("data:"):
            media_type, b64 = _data_url(data, f"{param}.file_data")
        else:
            dot = filename.rfind(".") if filename else -1
            guessed = _DOC_TYPES.get(filename[dot:].lower()) if filename and dot >= 0 else None
            media_type, b64 = guessed or "application/pdf", data
        return c.Document(media_type=media_type or "application/pdf", data=b64, name=filename)
    url = part.get("file_url")
    if isinstance(url, str) and url:
        return c.Document(url=url, name=filename)
    if part.get("file_id") is not None:
        raise invalid(
            "input_file parts with 'file_id' are not supported: uploaded files cannot be forwarded, send "
            "'file_data' or 'file_url'",
            param=f"{param}.file_id",
        )
    raise invalid("input_file parts need 'file_data' or 'file_url'", param=param)


def _function_call_item(item: dict[str, Any], param: str, namespaces: dict[str, tuple[str, str]]) -> c.ToolCall:
    raw_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(raw_id, str) or not isinstance(name, str) or not isinstance(args, str):
        key = next(k for k in ("call_id", "name", "arguments") if not isinstance(item.get(k), str))
        raise invalid(f"Missing required parameter: '{key}'.", param=f"{param}.{key}")
    ns = item.get("namespace")
    if isinstance(ns, str) and ns:
        name = f"{ns}{NAMESPACE_SEP}{name}"
    call_id, signature = c.split_tool_id(raw_id)
    return c.ToolCall(call_id, name, args or "{}", signature)


def _output_parts(output: Any, param: str) -> list[c.Part]:
    if isinstance(output, str):
        return [c.Text(output)]
    if isinstance(output, list):
        return _input_parts(output, param)
    raise invalid("Invalid type for 'output': expected a string or an array of parts.", param=param)


def _reasoning_item(item: dict[str, Any], param: str) -> c.Thinking | None:
    """A reasoning item back from the client: what the gateway packed restores exactly; a summary alone is
    unsigned reasoning text (providers that need a signature drop it); OpenAI's own encrypted content is dropped."""
    enc = item.get("encrypted_content")
    if enc is not None and not isinstance(enc, str):
        raise invalid("Invalid type for 'encrypted_content': expected a string.", param=f"{param}.encrypted_content")
    if enc:
        found = unpack_thinking(enc)
        if found is not None:
            return found
    texts: list[str] = []
    for key, kind in (("summary", "summary_text"), ("content", "reasoning_text")):
        parts = item.get(key)
        if parts is None:
            continue
        if not isinstance(parts, list):
            raise invalid(f"Invalid type for '{key}': expected an array.", param=f"{param}.{key}")
        for j, s in enumerate(parts):
            if not isinstance(s, dict) or s.get("type") != kind or not isinstance(s.get("text"), str):
                raise invalid(f"reasoning {key} parts must be {kind} parts", param=f"{param}.{key}[{j}]")
            texts.append(s["text"])
    if enc or not texts:
        return None  # OpenAI-encrypted reasoning another provider cannot read, or nothing at all
    return c.Thinking("\n\n".join(texts))


# ---------------------------------------------------------------------------------------------------------------------
# Client side: response, error and stream out
# ---------------------------------------------------------------------------------------------------------------------
def usage_out(u: c.Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_creation_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _status(reason: str) -> tuple[str, dict[str, str] | None]:
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    echo: dict[str, Any],
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: c.Usage | None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object as OpenAI writes it: the answer plus the request facts it repeats."""
    reasoning = echo.get("reasoning") or {}
    text = echo.get("text") or {}
    return {
        "id": echo.get("id") or new_response_id(),
        "object": "response",
        "created_at": echo.get("created_at") or int(time.time()),
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": echo.get("previous_response_id"),
        "prompt_cache_key": echo.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": echo.get("safety_identifier"),
        "service_tier": echo.get("service_tier") or "default",
        "store": echo.get("store", True),
        "temperature": echo.get("temperature", 1.0) if echo.get("temperature") is not None else 1.0,
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity") or "medium"},
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": echo.get("tools") or [],
        "top_logprobs": 0,
        "top_p": echo.get("top_p") if echo.get("top_p") is not None else 1.0,
        "truncation": echo.get("truncation") or "disabled",
        "usage": usage_out(usage),
        "user": echo.get("user"),
        "metadata": echo.get("metadata") or {},
    }


def _reasoning_out(part: c.Thinking) -> dict[str, Any]:
    item: dict[str, Any] = {"id": _item_id("rs"), "type": "reasoning", "summary": []}
    if part.text:
        if part.raw:
            item["content"] = [{"type": "reasoning_text", "text": part.text}]
        else:
            item["summary"] = [{"type": "summary_text", "text": part.text}]
    item["encrypted_content"] = pack_thinking(part)
    return item


def _call_out(part: c.ToolCall, namespaces: Mapping[str, Any], status: str = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": _item_id("fc"),
        "type": "function_call",
        "status": status,
        "arguments": part.arguments,
        "call_id": c.join_tool_id(part.id, part.signature),
        "name": part.name,
    }
    ns = namespaces.get(part.name)
    if ns:
        item["namespace"], item["name"] = ns[0], ns[1]
    return item


def _message_out(texts: list[str], status: str = "completed") -> dict[str, Any]:
    return {
        "id": _item_id("msg"),
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": t, "annotations": [], "logprobs": []} for t in texts],
    }


def output_items(parts: list[c.Part], echo: Mapping[str, Any], status: str = "completed") -> list[dict[str, Any]]:
    """Canonical answer parts as Responses output items: each reasoning block one ``reasoning`` item, consecutive
    text one ``message``, each tool call one ``function_call``. Reasoning items carry ``encrypted_content``
    (``client_view`` removes it when the client did not ask for it)."""
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    namespaces = echo.get("namespaces") or {}
    for part in parts:
        if isinstance(part, c.Text):
            texts.append(part.text)
            continue
        if texts:
            out.append(_message_out(texts, status))
            texts = []
        if isinstance(part, c.Thinking):
            out.append(_reasoning_out(part))
        elif isinstance(part, c.ToolCall):
            out.append(_call_out(part, namespaces))
    if texts:
        out.append(_message_out(texts, status))
    return out


def client_view(item: dict[str, Any], encrypted: bool) -> dict[str, Any]:
    """An output item as the client sees it: ``encrypted_content`` only when it asked for it (``include``)."""
    if item.get("type") == "reasoning" and not encrypted and "encrypted_content" in item:
        return {k: v for k, v in item.items() if k != "encrypted_content"}
    return item


def full_response(resp: c.Response, *, model: str, request: c.Request | None = None) -> dict[str, Any]:
    """The whole ``response`` object for a canonical answer, reasoning ``encrypted_content`` included (what the
    gateway's conversation store keeps)."""
    echo = (request.echo if request is not None else None) or {}
    status, incomplete = _status(resp.finish_reason)
    items = output_items(resp.parts, echo, "incomplete" if status == "incomplete" else "completed")
    return response_object(echo, model, status, items, resp.usage, incomplete)


def build_response(resp: c.Response, *, model: str, request: c.Request | None = None) -> bytes:
    return render(full_response(resp, model=model, request=request), request)


def render(obj: dict[str, Any], request: c.Request | None) -> bytes:
    """A full ``response`` object as the client sees it (see ``client_view``)."""
    echo = (request.echo if request is not None else None) or {}
    if not echo.get("encrypted") and any(i.get("type") == "reasoning" for i in obj["output"]):
        obj = {**obj, "output": [client_view(i, False) for i in obj["output"]]}
    return orjson.dumps(obj)


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
    """OpenAI's error envelope (the Responses API uses the same as Chat Completions)."""
    return orjson.dumps(_error_obj(err, request_id))


def list_models(models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
    """OpenAI's model listing (the Responses API shares ``/v1/models`` with Chat Completions)."""
    data = [{"id": m.name, "object": "model", "created": m.created, "owned_by": m.provider} for m in models]
    if model_id is None:
        return orjson.dumps({"object": "list", "data": data})
    for entry in data:
        if entry["id"] == model_id:
            return orjson.dumps(entry)
    raise GatewayError(
        "unknown_model",
        f"model '{model_id}' is not configured on this gateway",
        404,
        param="model",
        code="model_not_found",
    )


def _sse(kind: str, obj: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


class StreamEncoder:
    """Canonical events -> the Responses API's semantic SSE events, each with its ``sequence_number``:
    ``response.created``, ``response.in_progress``, per output item ``response.output_item.added`` ... ``.done``
    (text: ``content_part.added``, ``output_text.delta``, ``output_text.done``, ``content_part.done``; reasoning:
    ``reasoning_summary_part.added``, ``reasoning_summary_text.delta/.done``, ``reasoning_summary_part.done``, or
    ``reasoning_text.delta/.done`` for raw reasoning; calls: ``function_call_arguments.delta/.done``), then
    ``response.completed`` or ``response.incomplete``; an error is an ``error`` event and ``response.failed``.

    ``final`` holds the whole response object (``encrypted_content`` included) once the stream ended normally."""

    media_type = "text/event-stream"

    __slots__ = (
        "_calls",
        "_done",
        "_echo",
        "_encrypted",
        "_finish",
        "_model",
        "_open",
        "_output",
        "_seq",
        "_started",
        "_usage",
        "final",
    )

    def __init__(self, opts: StreamOptions | None = None, request: c.Request | None = None, **kw: Any) -> None:
        opts = opts or StreamOptions(model=kw.get("model", ""))
        request = request or getattr(opts, "request", None)
        self._echo: dict[str, Any] = (request.echo if request is not None else None) or {}
        self._model = opts.model
        self._encrypted = bool(self._echo.get("encrypted"))
        self._seq = 0
        self._started = False
        self._done = False
        self._output: list[dict[str, Any]] = []  # full items in output order (in-progress ones are completed later)
        self._open: _Open | None = None  # the message or reasoning item being written
        self._calls: dict[int, _Open] = {}  # canonical tool-call index -> its open function_call item
        self._finish = "stop"
        self._usage: c.Usage | None = None
        self.final: dict[str, Any] | None = None

    # ---- framing
    def _ev(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return _sse(kind, obj)

    def _response(self, status: str, output: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        return response_object(self._echo, self._model, status, output, kw.pop("usage", None), **kw)

    def _start(self) -> bytes:
        self._started = True
        if not self._echo.get("id"):
            self._echo["id"] = new_response_id()
        head = self._response("in_progress", [])
        return self._ev("response.created", response=head) + self._ev("response.in_progress", response=head)

    # ---- items
    def _close_open(self) -> bytes:
        op, self._open = self._open, None
        if op is None:
            return b""
        item, oi, iid = op.item, op.index, op.item["id"]
        text = "".join(op.text)
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            item["status"] = "completed"
            out = self._ev(
                "response.output_text.done", item_id=iid, output_index=oi, content_index=0, text=text, logprobs=[]
            )
            out += self._ev("response.content_part.done", item_id=iid, output_index=oi, content_index=0, part=part)
        else:
            out = b""
            thinking = c.Thinking(text, op.signature, op.redacted, op.raw)
            if text and op.raw:
                part = {"type": "reasoning_text", "text": text}
                item["content"] = [part]
                out += self._ev(
                    "response.reasoning_text.done", item_id=iid, output_index=oi, content_index=0, text=text
                )
                out += self._ev("response.content_part.done", item_id=iid, output_index=oi, content_index=0, part=part)
            elif text:
                part = {"type": "summary_text", "text": text}
                item["summary"] = [part]
                out += self._ev(
                    "response.reasoning_summary_text.done", item_id=iid, output_index=oi, summary_index=0, text=text
                )
                out += self._ev(
                    "response.reasoning_summary_part.done", item_id=iid, output_index=oi, summary_index=0, part=part
                )
            item["encrypted_content"] = pack_thinking(thinking)
        return out + self._ev("response.output_item.done", output_index=oi, item=client_view(item, self._encrypted))

    def _close_calls(self) -> bytes:
        out = b""
        for op in self._calls.values():
            item = op.item
            item["arguments"] = "".join(op.text) or item["arguments"]
            item["status"] = "completed"
            out += self._ev(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=op.index,
                arguments=item["arguments"],
            )
            out += self._ev("response.output_item.done", output_index=op.index, item=item)
        self._calls = {}
        return out

    def _add(self, item: dict[str, Any], shown: dict[str, Any]) -> tuple[int, bytes]:
        self._output.append(item)
        oi = len(self._output) - 1
        return oi, self._ev("response.output_item.added", output_index=oi, item=shown)

    def _open_message(self) -> bytes:
        out = self._close_calls() + self._close_open()
        item = {"id": _item_id("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        oi, ev = self._add(item, dict(item))
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        ev += self._ev("response.content_part.added", item_id=item["id"], output_index=oi, content_index=0, part=part)
        self._open = _Open(item, oi)
        return out + ev

    def _open_reasoning(self, raw: bool) -> bytes:
        out = self._close_calls() + self._close_open()
        item: dict[str, Any] = {"id": _item_id("rs"), "type": "reasoning", "summary": []}
        oi, ev = self._add(item, dict(item))
        self._open = _Open(item, oi, raw=raw)
        return out + ev

    def _reasoning_text(self, text: str, raw: bool) -> bytes:
        op = self._open
        out = b""
        if op is None or op.item["type"] != "reasoning" or op.signature or op.redacted is not None or op.raw != raw:
            out += self._open_reasoning(raw)
            op = self._open
            assert op is not None
        iid, oi = op.item["id"], op.index
        if not op.text:
            if raw:
                out += self._ev(
                    "response.content_part.added",
                    item_id=iid,
                    output_index=oi,
                    content_index=0,
                    part={"type": "reasoning_text", "text": ""},
                )
            else:
                out += self._ev(
                    "response.reasoning_summary_part.added",
                    item_id=iid,
                    output_index=oi,
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
        op.text.append(text)
        if raw:
            return out + self._ev(
                "response.reasoning_text.delta", item_id=iid, output_index=oi, content_index=0, delta=text
            )
        return out + self._ev(
            "response.reasoning_summary_text.delta", item_id=iid, output_index=oi, summary_index=0, delta=text
        )

    # ---- public
    def encode(self, event: c.Event) -> bytes:
        if self._done:
            return b""
        if isinstance(event, c.StreamError):
            return self.error(event.error)
        if isinstance(event, c.UsageUpdate):
            self._usage = c.merge_usage(self._usage or c.Usage(), event.usage)
            return b""
        head = b"" if self._started else self._start()
        if isinstance(event, c.MessageStart):
            if event.usage is not None:
                self._usage = c.merge_usage(self._usage or c.Usage(), event.usage)
            return head
        if isinstance(event, c.TextDelta):
            if not event.text:
                return head
            op = self._open
            if op is None or op.item["type"] != "message":
                head += self._open_message()
                op = self._open
                assert op is not None
            op.text.append(event.text)
            return head + self._ev(
                "response.output_text.delta",
                item_id=op.item["id"],
                output_index=op.index,
                content_index=0,
                delta=event.text,
                logprobs=[],
            )
        if isinstance(event, c.ThinkingDelta):
            if event.redacted is not None:
                head += self._open_reasoning(False)
                assert self._open is not None
                self._open.redacted = event.redacted
                return head + self._close_open()
            if event.text:
                head += self._reasoning_text(event.text, event.raw)
            if event.signature:
                if self._open is None or self._open.item["type"] != "reasoning":
                    head += self._open_reasoning(event.raw)
                assert self._open is not None
                self._open.signature = event.signature
                head += self._close_open()  # a signature ends its block (Anthropic), or a Gemini thought part
            return head
        if isinstance(event, c.ToolCallStart):
            head += self._close_open()
            item = _call_out(c.ToolCall(event.id, event.name, "", event.signature), self._echo.get("namespaces") or {})
            item["status"] = "in_progress"
            oi, ev = self._add(item, dict(item))
            self._calls[event.index] = _Open(item, oi)
            return head + ev
        if isinstance(event, c.ToolCallDelta):
            op = self._calls.get(event.index)
            if op is None or not event.arguments:
                return head
            op.text.append(event.arguments)
            return head + self._ev(
                "response.function_call_arguments.delta",
                item_id=op.item["id"],
                output_index=op.index,
                delta=event.arguments,
            )
        if isinstance(event, c.Finish):
            self._finish = event.reason
            return head
        return head

    def finish(self) -> bytes:
        if self._done:
            return b""
        out = b"" if self._started else self._start()
        out += self._close_calls() + self._close_open()
        status, incomplete = _status(self._finish)
        if status == "incomplete":
            for item in self._output:
                if item["type"] == "message":
                    item["status"] = "incomplete"
        self._done = True
        self.final = self._response(status, self._output, usage=self._usage or c.Usage(), incomplete=incomplete)
        shown = self.final
        if not self._encrypted:
            shown = {**self.final, "output": [client_view(i, False) for i in self._output]}
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        return out + self._ev(kind, response=shown)

    def error(self, err: GatewayError) -> bytes:
        """An ``error`` event and ``response.failed`` (the SDKs raise or report on either)."""
        if self._done:
            return b""
        out = b"" if self._started else self._start()
        self._done = True
        code = err.code or _FAILED_CODE.get(err.type, "server_error")
        out += self._ev("error", code=code, message=err.message, param=err.param)
        failed = self._response(
            "failed",
            [client_view(i, self._encrypted) for i in self._output if i.get("status") != "in_progress"],
            error={"code": _FAILED_CODE.get(err.type, "server_error"), "message": err.message},
        )
        return out + self._ev("response.failed", response=failed)


class _Open:
    """An output item being streamed: its full dict, output index and the text written so far."""

    __slots__ = ("index", "item", "raw", "redacted", "signature", "text")

    def __init__(self, item: dict[str, Any], index: int, raw: bool = False) -> None:
        self.item = item
        self.index = index
        self.text: list[str] = []
        self.raw = raw
        self.signature: str | None = None
        self.redacted: str | None = None


def stream_encoder(opts: StreamOptions) -> StreamEncoder:
    return StreamEncoder(opts)


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: request out
# ---------------------------------------------------------------------------------------------------------------------
def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    return "/responses/input_tokens" if kind == COUNT_TOKENS else "/responses"


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    return path[len("/openai/v1") :] + (f"?{query}" if query else "")


def passthrough_body(body: bytes, head: dict[str, Any], *, model: str, stream: bool) -> tuple[bytes, None]:
    """The client's own bytes; only the top-level model value changes when aliased (``jsonbytes``)."""
    return jsonbytes.rewrite_model(body, model, head.get("model")), None


def _effort_for_budget(budget: int) -> str | None:
    if budget < 0:
        return "medium"
    if budget == 0:
        return None
    if budget <= 2048:
        return "low"
    return "medium" if budget <= 8192 else "high"


def _content_in(part: c.Part) -> dict[str, Any]:
    if isinstance(part, c.Text):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, c.Image):
        if part.data is not None:
            url = f"data:{part.media_type or 'image/png'};base64,{part.data}"
        elif part.url:
            url = part.url
        else:
            raise invalid("image parts need data or a URL")
        return {"type": "input_image", "image_url": url, "detail": "auto"}
    if isinstance(part, c.Document):
        media_type = part.media_type or "application/pdf"
        if part.data is None:
            if not part.url:
                raise invalid("document parts need data or a URL")
            out: dict[str, Any] = {"type": "input_file", "file_url": part.url}
            if part.name:
                out["filename"] = part.name
            return out
        if media_type.startswith("text/"):
            try:
                return {"type": "input_text", "text": base64.b64decode(part.data, validate=True).decode("utf-8")}
            except (binascii.Error, UnicodeDecodeError):
                raise invalid(f"a {media_type} document must be base64-encoded UTF-8") from None
        name = part.name or ("document.pdf" if media_type == "application/pdf" else "document")
        return {"type": "input_file", "filename": name, "file_data": f"data:{media_type};base64,{part.data}"}
    raise invalid(f"{type(part).__name__} parts cannot be sent in a Responses user message")


def _assistant_items(msg: c.Message, items: list[dict[str, Any]]) -> None:
    texts: list[str] = []
    for part in msg.parts:
        if isinstance(part, c.Text):
            texts.append(part.text)
            continue
        if texts:
            items.append({"role": "assistant", "content": "".join(texts)})
            texts = []
        if isinstance(part, c.ToolCall):
            items.append({"type": "function_call", "call_id": part.id, "name": part.name, "arguments": part.arguments})
        elif isinstance(part, c.Thinking):
            found = unpack_reasoning_item(part.signature) if part.signature else None
            if found is None:
                continue  # reasoning OpenAI did not sign cannot be replayed to it
            summary = [{"type": "summary_text", "text": part.text}] if part.text and not part.raw else []
            items.append({"type": "reasoning", "id": found[0], "summary": summary, "encrypted_content": found[1]})
        else:
            raise invalid(f"Responses assistant turns cannot hold {type(part).__name__} parts")
    if texts:
        items.append({"role": "assistant", "content": "".join(texts)})


def _user_items(msg: c.Message, items: list[dict[str, Any]]) -> None:
    content: list[dict[str, Any]] = []
    for part in msg.parts:
        if isinstance(part, c.ToolResult):
            if content:
                items.append({"role": "user", "content": content})
                content = []
            results = [_content_in(p) for p in part.content]
            texts_only = all(r["type"] == "input_text" for r in results)
            output: Any = "".join(r["text"] for r in results) if texts_only else results
            items.append({"type": "function_call_output", "call_id": part.tool_call_id, "output": output})
        elif not isinstance(part, c.Thinking):
            content.append(_content_in(part))
    if content:
        items.append({"role": "user", "content": content})


def _items_out(req: c.Request) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "assistant":
            _assistant_items(msg, items)
        else:
            _user_items(msg, items)
    return items


def build_request(req: c.Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    """A Responses request for an OpenAI provider that speaks it. The gateway carries the conversation itself, so
    the provider stores nothing (``store: false``) and returns reasoning as ``encrypted_content`` to replay."""
    if req.n is not None and req.n > 1:
        raise invalid("the Responses API returns one answer per request: several candidates (n > 1) are refused")
    body: dict[str, Any] = {"model": model, "input": _items_out(req), "store": False}
    system = [p.text for p in req.system if isinstance(p, c.Text)]
    if system:
        body["instructions"] = "\n\n".join(system)
    if req.max_tokens is not None:
        body["max_output_tokens"] = max(req.max_tokens, 16)  # the API's minimum
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.user is not None:
        body["safety_identifier"] = req.user[:128]
    effort = req.reasoning_effort
    if effort is None and req.thinking_budget is not None:
        effort = _effort_for_budget(req.thinking_budget)
    if effort is not None:
        body["reasoning"] = {"effort": effort, "summary": req.reasoning_summary or "auto"}
        body["include"] = ["reasoning.encrypted_content"]
    elif req.reasoning_summary is not None:
        body["reasoning"] = {"summary": req.reasoning_summary}
        body["include"] = ["reasoning.encrypted_content"]
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters if t.parameters is not None else {"type": "object", "properties": {}},
                "strict": bool(t.strict),  # the API's default is strict: only when the client asked for it
            }
            for t in req.tools
        ]
        for t in body["tools"]:
            if t["description"] is None:
                del t["description"]
        tc = req.tool_choice
        if tc is not None:
            body["tool_choice"] = {"type": "function", "name": tc.name} if tc.mode == "tool" else tc.mode
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    text: dict[str, Any] = {}
    rf = req.response_format
    if rf is not None:
        if rf.type == "json_schema":
            fmt: dict[str, Any] = {"type": "json_schema", "name": rf.name or "response", "schema": rf.schema or {}}
            if rf.strict is not None:
                fmt["strict"] = rf.strict
            text["format"] = fmt
        else:
            text["format"] = {"type": rf.type}
    if req.verbosity is not None:
        text["verbosity"] = req.verbosity
    if text:
        body["text"] = text
    if req.stream:
        body["stream"] = True
    return orjson.dumps(body)


def fetches_url(part: c.Image | c.Document) -> bool | str:
    """OpenAI's Responses API reads image URLs and ``file_url`` documents itself."""
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: response, error and stream in
# ---------------------------------------------------------------------------------------------------------------------
def _bad_response(what: str) -> GatewayError:
    return GatewayError("server_error", f"invalid Responses answer from provider: {what}", 502)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_in(u: Any) -> c.Usage | None:
    if not isinstance(u, dict):
        return None
    usage = c.Usage(_int(u.get("input_tokens")), _int(u.get("output_tokens")))
    details = u.get("input_tokens_details")
    if isinstance(details, dict):
        usage.cached_tokens = _int(details.get("cached_tokens"))
        usage.cache_creation_tokens = _int(details.get("cache_write_tokens"))
    details = u.get("output_tokens_details")
    if isinstance(details, dict):
        usage.reasoning_tokens = _int(details.get("reasoning_tokens"))
    return usage


def _reasoning_in(item: dict[str, Any]) -> c.Thinking:
    summary = item.get("summary")
    content = item.get("content")
    raw = False
    texts = [s.get("text") or "" for s in summary if isinstance(s, dict)] if isinstance(summary, list) else []
    if not texts and isinstance(content, list):
        texts = [s.get("text") or "" for s in content if isinstance(s, dict)]
        raw = bool(texts)
    enc = item.get("encrypted_content")
    rid = item.get("id")
    sig = pack_reasoning_item(rid, enc) if isinstance(enc, str) and enc and isinstance(rid, str) else None
    return c.Thinking("\n\n".join(t for t in texts if t), sig, raw=raw)


def _finish_in(status: Any, details: Any, saw_call: bool, refused: bool) -> str:
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    if refused:
        return "content_filter"
    return "tool_calls" if saw_call else "stop"


def parse_response(body: bytes) -> c.Response:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_response("body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise _bad_response("no output")
    if data.get("status") == "failed" and isinstance(data.get("error"), dict):
        raise _failed(data["error"])
    parts: list[c.Part] = []
    refused = False
    for item in data["output"]:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for p in item.get("content") or ():
                if not isinstance(p, dict):
                    continue
                if p.get("type") == "output_text" and isinstance(p.get("text"), str):
                    parts.append(c.Text(p["text"]))
                elif p.get("type") == "refusal" and isinstance(p.get("refusal"), str):
                    refused = True
                    parts.append(c.Text(p["refusal"]))
        elif kind == "function_call":
            name, args, call_id = item.get("name"), item.get("arguments"), item.get("call_id")
            if not isinstance(name, str):
                raise _bad_response("function call without a name")
            ns = item.get("namespace")
            if isinstance(ns, str) and ns:
                name = f"{ns}{NAMESPACE_SEP}{name}"
            parts.append(
                c.ToolCall(
                    call_id if isinstance(call_id, str) and call_id else f"call_{len(parts)}", name, args or "{}"
                )
            )
        elif kind == "reasoning":
            parts.append(_reasoning_in(item))
    rid, model, created = data.get("id"), data.get("model"), data.get("created_at")
    saw_call = any(isinstance(p, c.ToolCall) for p in parts)
    return c.Response(
        id=rid if isinstance(rid, str) else "",
        model=model if isinstance(model, str) else "",
        parts=parts,
        finish_reason=_finish_in(data.get("status"), data.get("incomplete_details"), saw_call, refused),
        usage=usage_in(data.get("usage")),
        created=int(created) if isinstance(created, int | float) and not isinstance(created, bool) else 0,
    )


def _failed(error: dict[str, Any]) -> GatewayError:
    code = error.get("code")
    message = error.get("message")
    if not isinstance(message, str):
        message = "the provider's response failed"
    gtype = "rate_limit" if code == "rate_limit_exceeded" else "server_error"
    return GatewayError(gtype, message, ERROR_TYPES[gtype], code=code if isinstance(code, str) else None)


def _error_from(obj: Any, status: int | None) -> GatewayError:
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        err = obj if isinstance(obj, dict) else {}
    message = err.get("message")
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
    elif code == "rate_limit_exceeded":
        gtype = "rate_limit"
    else:
        gtype = "invalid_request" if ptype == "invalid_request_error" else "server_error"
    return GatewayError(gtype, message, status if status is not None else ERROR_TYPES[gtype], param=param, code=code)


def parse_error(status: int, body: bytes) -> GatewayError:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return GatewayError(type_for_status(status), f"provider returned HTTP {status} with a non-JSON body", status)
    return _error_from(data, status)


class StreamDecoder:
    """A provider's Responses SSE stream -> canonical events. Reads the semantic events (deltas), and falls back to
    an item's ``.done`` event for content a server sent without deltas."""

    __slots__ = ("_calls", "_done", "_items", "_parser", "_refused", "_started")

    def __init__(self, opts: StreamOptions | None = None) -> None:
        self._parser = SSEParser()
        self._started = False
        self._done = False
        self._refused = False
        self._calls: dict[int, int] = {}  # output_index of a function_call item -> canonical tool-call index
        self._items: dict[int, _Seen] = {}  # output_index -> what its deltas carried

    def feed(self, chunk: bytes) -> list[c.Event]:
        out: list[c.Event] = []
        for ev in self._parser.feed(chunk):
            self._event(ev.data, out)
        return out

    def close(self) -> list[c.Event]:
        out: list[c.Event] = []
        for ev in self._parser.close():
            self._event(ev.data, out)
        if not self._done:
            self._done = True
            out.append(c.StreamError(GatewayError("network", "provider stream ended early", 502)))
        return out

    def _event(self, data: str, out: list[c.Event]) -> None:
        if self._done or data.startswith("[DONE]"):
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._done = True
            out.append(c.StreamError(GatewayError("server_error", "provider sent invalid JSON in its stream", 502)))
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        if kind in ("response.created", "response.in_progress", "response.queued"):
            if not self._started:
                self._started = True
                r = _dict(obj.get("response"))
                rid, model = r.get("id"), r.get("model")
                out.append(c.MessageStart(rid if isinstance(rid, str) else "", model if isinstance(model, str) else ""))
            return
        if not self._started:  # a server that skips response.created
            self._started = True
            out.append(c.MessageStart("", ""))
        oi = obj.get("output_index")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                self._seen(oi).text = True
                if kind == "response.refusal.delta":
                    self._refused = True
                out.append(c.TextDelta(delta))
        elif kind in ("response.output_text.done", "response.refusal.done"):
            text = obj.get("text") if kind == "response.output_text.done" else obj.get("refusal")
            if isinstance(text, str) and text and not self._seen(oi).text:
                self._seen(oi).text = True
                if kind == "response.refusal.done":
                    self._refused = True
                out.append(c.TextDelta(text))
        elif kind == "response.reasoning_summary_text.delta" or kind == "response.reasoning_text.delta":
            delta = obj.get("delta")
            if isinstance(delta, str) and delta:
                seen = self._seen(oi)
                part = _int(obj.get("summary_index", obj.get("content_index")))
                if seen.text and part > seen.part:
                    delta = "\n\n" + delta  # a further summary part of the same reasoning item
                seen.text = True
                seen.part = part
                out.append(c.ThinkingDelta(delta, raw=kind == "response.reasoning_text.delta"))
        elif kind == "response.output_item.added":
            item = obj.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call" and isinstance(oi, int):
                index = len(self._calls)
                self._calls[oi] = index
                name, call_id = item.get("name"), item.get("call_id")
                ns = item.get("namespace")
                name = name if isinstance(name, str) else ""
                if isinstance(ns, str) and ns:
                    name = f"{ns}{NAMESPACE_SEP}{name}"
                out.append(
                    c.ToolCallStart(index, call_id if isinstance(call_id, str) and call_id else f"call_{index}", name)
                )
                args = item.get("arguments")
                if isinstance(args, str) and args:
                    self._seen(oi).text = True
                    out.append(c.ToolCallDelta(index, args))
        elif kind == "response.function_call_arguments.delta":
            found = self._calls.get(oi) if isinstance(oi, int) else None
            delta = obj.get("delta")
            if found is not None and isinstance(delta, str) and delta:
                self._seen(oi).text = True
                out.append(c.ToolCallDelta(found, delta))
        elif kind == "response.output_item.done":
            item = obj.get("item")
            if not isinstance(item, dict):
                return
            if item.get("type") == "reasoning":
                thinking = _reasoning_in(item)
                text = thinking.text if not self._seen(oi).text else ""
                if text or thinking.signature:
                    out.append(c.ThinkingDelta(text, thinking.signature, raw=thinking.raw))
            elif item.get("type") == "function_call" and isinstance(oi, int):
                call = self._calls.get(oi)
                args = item.get("arguments")
                if call is not None and not self._seen(oi).text and isinstance(args, str) and args:
                    out.append(c.ToolCallDelta(call, args))
            elif item.get("type") == "message" and not self._seen(oi).text:
                for p in item.get("content") or ():
                    text = (p.get("text") or p.get("refusal")) if isinstance(p, dict) else None
                    if isinstance(text, str) and text:
                        out.append(c.TextDelta(text))
        elif kind in ("response.completed", "response.incomplete"):
            self._done = True
            r = _dict(obj.get("response"))
            usage = usage_in(r.get("usage"))
            if usage is not None:
                out.append(c.UsageUpdate(usage))
            out.append(
                c.Finish(
                    _finish_in(
                        r.get("status") or kind[9:], r.get("incomplete_details"), bool(self._calls), self._refused
                    )
                )
            )
        elif kind == "response.failed":
            self._done = True
            r = _dict(obj.get("response"))
            out.append(c.StreamError(_failed(_dict(r.get("error")))))
        elif kind == "error":
            self._done = True
            out.append(c.StreamError(_error_from({"error": obj}, None)))

    def _seen(self, oi: Any) -> _Seen:
        key = oi if isinstance(oi, int) else -1
        found = self._items.get(key)
        if found is None:
            found = self._items[key] = _Seen()
        return found


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class _Seen:
    """What the deltas of one output item carried: any text yet, and the last summary part index."""

    __slots__ = ("part", "text")

    def __init__(self) -> None:
        self.text = False
        self.part = 0


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder(opts)


# ---------------------------------------------------------------------------------------------------------------------
# Conversation state: what the gateway's store needs (STATE), for providers that keep nothing themselves
# ---------------------------------------------------------------------------------------------------------------------
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def with_ids(items: list[Any]) -> list[Any]:
    """Input items as the store keeps and lists them, in OpenAI's shape: each with an id, messages with their type,
    a status and their content as parts (a string becomes one ``input_text`` part, ``output_text`` for the
    assistant)."""
    out = []
    for item in items:
        if isinstance(item, dict):
            kind = item.get("type") or ("message" if "role" in item else None)
            if kind == "message":
                content = item.get("content")
                if isinstance(content, str):
                    part: dict[str, Any] = {"type": "input_text", "text": content}
                    if item.get("role") == "assistant":
                        part = {"type": "output_text", "text": content, "annotations": []}
                    content = [part]
                item = {"type": "message", **item, "content": content, "status": item.get("status") or "completed"}
            if not item.get("id"):
                item = {"id": _item_id(_ITEM_PREFIX.get(kind or "", "item")), **item}
        out.append(item)
    return out


def _previous_missing(prev: str, missing: str) -> GatewayError:
    detail = "" if missing == prev else f" (it continues response '{missing}', which is no longer stored)"
    return GatewayError(
        "invalid_request",
        f"Previous response with id '{prev}' not found.{detail}",
        400,
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _refs(items: list[Any]) -> list[str]:
    """Ids of items that stand for stored ones: ``item_reference``, and reasoning items sent by id only."""
    return [
        it["id"]
        for it in items
        if isinstance(it, dict)
        and isinstance(it.get("id"), str)
        and (it.get("type") == "item_reference" or (it.get("type") == "reasoning" and not it.get("encrypted_content")))
    ]


class _State:
    """``STATE``: previous_response_id, item references and stored responses, kept by the gateway's store."""

    def expand(self, head: dict[str, Any], store: AnswerStore | None, scope: str, *, passthrough: bool) -> Conversation:
        prev = head.get("previous_response_id")
        keep = head.get("store") is not False
        raw = head.get("input")
        if isinstance(raw, str):
            own: list[Any] = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
        elif isinstance(raw, list):
            own = raw
        else:
            return Conversation(head, False, [], keep)  # parse_request refuses it with the right message
        if prev is not None and not (isinstance(prev, str) and prev):
            raise invalid("Invalid type for 'previous_response_id': expected a string.", param="previous_response_id")
        if passthrough:
            # OpenAI keeps its own conversations: only one the gateway kept (the model changed provider) is put in
            if store is None or prev is None or store.get(scope, prev) is None:
                return Conversation(head, False, [], False, prev)
            out = {k: v for k, v in self._whole(head, own, prev, store, scope).items() if k != "previous_response_id"}
            return Conversation(out, True, [], False, prev)
        if prev is not None and store is None:
            raise invalid(
                "this gateway keeps no conversations (responses.store is off): send the whole conversation as input",
                param="previous_response_id",
            )
        whole = self._whole(head, own, prev, store, scope)
        keep = keep and store is not None
        if keep:  # this request's own items (references resolved) as the store keeps them
            own = with_ids(whole["input"][len(whole["input"]) - len(own) :] if whole is not head else own)
        return Conversation(whole, whole is not head, own if keep else [], keep, prev)

    @staticmethod
    def _whole(
        head: dict[str, Any], own: list[Any], prev: str | None, store: AnswerStore | None, scope: str
    ) -> dict[str, Any]:
        history: list[dict[str, Any]] = []
        if prev is not None and store is not None:
            try:
                history = store.history(scope, prev)
            except HistoryMissing as exc:
                raise _previous_missing(prev, exc.answer_id) from None
        refs = _refs(own)
        if refs and store is not None:
            found = store.items(scope, refs)
            own = [found.get(it["id"], it) if isinstance(it, dict) and it.get("id") in refs else it for it in own]
        elif not history and isinstance(head.get("input"), list):
            return head
        return {**head, "input": history + own}

    def kept(self, resp: c.Response, *, model: str, request: c.Request) -> dict[str, Any]:
        return full_response(resp, model=model, request=request)

    def kept_stream(self, encoder: Any) -> dict[str, Any] | None:
        final = getattr(encoder, "final", None)
        return final if isinstance(final, dict) else None

    def serve(self, endpoint: Endpoint, query: str, store: AnswerStore | None, scope: str) -> bytes:
        rid = endpoint.resource_id or ""
        missing = GatewayError("not_found", f"Response with id '{rid}' not found.", 404, param="response_id")
        if store is None or not valid_id(rid):
            raise missing
        params = parse_qsl(query)
        if endpoint.op == "delete":
            if not store.delete(scope, rid):
                raise missing
            return orjson.dumps({"id": rid, "object": "response.deleted", "deleted": True})
        if endpoint.op == "input_items":
            items = store.input_items(scope, rid)
            if items is None:
                raise missing
            return _item_page(items, dict(params))
        found = store.get(scope, rid)
        if found is None:
            raise missing
        encrypted = ("include", "reasoning.encrypted_content") in params or (
            "include[]",
            "reasoning.encrypted_content",
        ) in params
        return orjson.dumps({**found, "output": [client_view(i, encrypted) for i in found.get("output", ())]})


def _item_page(items: list[dict[str, Any]], query: dict[str, str]) -> bytes:
    """A page of a stored response's input items (``order`` desc by default, ``limit`` 1-100, ``after`` an id)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise invalid("'order' must be asc or desc", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise invalid("'limit' must be an integer", param="limit") from None
    if not 1 <= limit <= 100:
        raise invalid("'limit' must be between 1 and 100", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    page = ordered[:limit]
    return orjson.dumps(
        {
            "object": "list",
            "data": page,
            "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None,
            "has_more": len(ordered) > limit,
        }
    )


STATE: ConversationState | None = _State()


# ---------------------------------------------------------------------------------------------------------------------
# Token counting (POST /v1/responses/input_tokens)
# ---------------------------------------------------------------------------------------------------------------------
COUNTS_TOKENS = True
_COUNT_KEYS = ("model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text")


def parse_count_request(body: bytes | dict[str, Any], *, model: str) -> c.Request:
    """An ``input_tokens`` body: a responses request without the generation settings."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    allowed = {*_COUNT_KEYS, "previous_response_id", "conversation", "truncation", "personality"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise invalid(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0])
    return parse_request({**data, "store": False}, model=model)


def build_count_request(req: c.Request, *, model: str) -> bytes:
    full = orjson.loads(build_request(req, model=model))
    return orjson.dumps({k: full[k] for k in _COUNT_KEYS if k in full})


def parse_count_response(body: bytes) -> int:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad_response("input_tokens answer is not JSON") from None
    tokens = data.get("input_tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise _bad_response("input_tokens answer without input_tokens")
    return tokens


def build_count_response(tokens: int) -> bytes:
    return orjson.dumps({"object": "response.input_tokens", "input_tokens": tokens})


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings: none
# ---------------------------------------------------------------------------------------------------------------------
EMBEDS = False
_NO_EMBEDDINGS = "OpenAI's Responses API (embeddings are /v1/embeddings of Chat Completions: api: chat)"


def parse_embed_request(body: bytes | dict[str, Any], *, model: str) -> c.EmbedRequest:
    raise embeddings.no_embeddings(
        "OpenAI's Responses API (embeddings are Chat Completions' /v1/embeddings: a provider of type openai)"
    )


def build_embed_response(resp: c.EmbedResponse, *, model: str, request: c.EmbedRequest) -> bytes:
    raise embeddings.no_embeddings(
        "OpenAI's Responses API (embeddings are Chat Completions' /v1/embeddings: a provider of type openai)"
    )


def build_embed_request(req: c.EmbedRequest, *, model: str) -> bytes:
    raise embeddings.no_embeddings(
        "OpenAI's Responses API (embeddings are Chat Completions' /v1/embeddings: a provider of type openai)"
    )


def parse_embed_response(body: bytes) -> c.EmbedResponse:
    raise embeddings.no_embeddings(
        "OpenAI's Responses API (embeddings are Chat Completions' /v1/embeddings: a provider of type openai)"
    )
