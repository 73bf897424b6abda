"""Gemini ``generateContent`` (Gemini Developer API, v1 and v1beta), both directions.

The wire shape follows what the ``google-genai`` SDK sends and parses: camelCase JSON on the way out; on the way in both
camelCase and snake_case field names, because the API (proto JSON) accepts both and the SDK itself sends a mix
(``inlineData: {mime_type}``, ``thinkingConfig: {thinking_budget}``, ``parameters_json_schema``).

Decisions worth knowing (the README's compatibility table lists the dropped fields):

- Tool results. Gemini's ``functionResponse.response`` must be a JSON object; the SDK documents ``"output"`` for the
  function's output and ``"error"`` for error details. Decoding: a response that is exactly ``{"output": x}``,
  ``{"result": x}`` (the SDK's MCP helper) or ``{"error": x}`` (which sets ``is_error``) becomes ``x`` (a string as is,
  anything else as compact JSON); any other object becomes its compact JSON. Encoding: a text that is a JSON object is
  sent as the object, any other text as ``{"output": text}`` (``{"error": text}`` when ``is_error``), so the two
  directions round-trip.
- Gemini pairs calls and responses by name and order (ids are optional): a ``functionCall`` without an id gets the
  deterministic id ``call_<content index>_<part index>``; the k-th response named X answers the k-th pending call named
  X of the latest model turn. Outgoing requests carry no ids.
- Thinking: ``thinkingBudget`` maps to ``thinking_budget`` (-1, "dynamic", means the provider default: None);
  ``thinkingLevel`` to ``reasoning_effort``. Outgoing, Gemini 1.x/2.x models get a budget, newer ones a level.
- Streams: Gemini repeats ``finishReason`` on every chunk in older models, so the decoder reports ``Finish`` only when
  the stream ends (``close()``); in JSON-array mode the closing ``]`` must have been seen, otherwise it is truncated.
"""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from extproc.translation import embeddings, listing, media, schemas
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
    merge_usage,
)
from extproc.translation.capabilities import BUDGET
from extproc.translation.errors import GatewayError, invalid, type_for_status
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
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
from extproc.translation.sse import JSONArrayStreamParser, SSEParser

NAME = "gemini"
EXTRA_HEADERS: list[tuple[str, str]] = []
# Where a provider of this format takes its key; Envoy injects it (the service never holds it).
CREDENTIAL = CredentialHeader("x-goog-api-key")

_FILTER_REASONS = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "LANGUAGE",
        "MODEL_ARMOR",
    }
)
_FINISH_OUT = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}

_STATUS_BY_TYPE = {
    "invalid_request": "INVALID_ARGUMENT",
    "auth": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "unknown_model": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "server_error": "INTERNAL",
    "network": "UNAVAILABLE",
    "overloaded": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
}
_TYPE_BY_GRPC_STATUS = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "auth",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "INTERNAL": "server_error",
    "UNKNOWN": "server_error",
    "UNAVAILABLE": "overloaded",
    "DEADLINE_EXCEEDED": "timeout",
}

_BUILTIN_TOOLS = {
    "googleSearch": "googleSearch",
    "google_search": "googleSearch",
    "googleSearchRetrieval": "googleSearchRetrieval",
    "google_search_retrieval": "googleSearchRetrieval",
    "codeExecution": "codeExecution",
    "code_execution": "codeExecution",
    "urlContext": "urlContext",
    "url_context": "urlContext",
    "googleMaps": "googleMaps",
    "google_maps": "googleMaps",
    "fileSearch": "fileSearch",
    "file_search": "fileSearch",
    "computerUse": "computerUse",
    "computer_use": "computerUse",
    "retrieval": "retrieval",
    "enterpriseWebSearch": "enterpriseWebSearch",
    "enterprise_web_search": "enterpriseWebSearch",
    "mcpServers": "mcpServers",
    "mcp_servers": "mcpServers",
}
_EFFORTS = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_EFFORTS_OUT = {**_EFFORTS, "max": "high"}
# Budgets for models that only know thinkingBudget (Gemini 1.x/2.x), by reasoning effort.
_BUDGET_BY_EFFORT = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_LEGACY_THINKING_MODEL = re.compile(r"(?:^|/)gemini-(?:1|2)\.")
_METHODS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")
_BAD_MODEL = re.compile(r"[\x00-\x1f\x7f/\\?#]|\.\.")

_JSON_SCHEMA_RENAME = {
    "any_of": "anyOf",
    "max_items": "maxItems",
    "min_items": "minItems",
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_properties": "maxProperties",
    "min_properties": "minProperties",
    "additional_properties": "additionalProperties",
    "ref": "$ref",
    "defs": "$defs",
}
_SCHEMA_KEEP = frozenset(
    {
        "description",
        "enum",
        "format",
        "title",
        "pattern",
        "minimum",
        "maximum",
        "default",
        "required",
        "anyOf",
        "maxItems",
        "minItems",
        "maxLength",
        "minLength",
        "maxProperties",
        "minProperties",
        "additionalProperties",
        "$ref",
        "$defs",
        "properties",
        "items",
        "type",
        "nullable",
    }
)


# ---------------------------------------------------------------------------------------------------------------------
# Paths and auth
# ---------------------------------------------------------------------------------------------------------------------
def parse_path(path: str) -> tuple[str, str, str, bool, bool]:
    """Split a client path (after ``/gemini``) into (api_version, model, method, stream, sse).

    The model ends up in the upstream ``:path``, so anything that could escape its segment is refused.
    """
    raw, _, query = path.partition("?")
    m = re.fullmatch(r"/(v1|v1beta)/models/(.*):([A-Za-z]+)", raw)
    if m is None:
        raise GatewayError("not_found", f"unknown path {raw!r}: expected /v1beta/models/<model>:generateContent", 404)
    version, model, method = m.group(1), m.group(2), m.group(3)
    low = model.lower()
    if not model or "%2f" in low or "%00" in low or "%5c" in low or _BAD_MODEL.search(model):
        raise invalid(f"invalid model name {model!r} in path", param="model")
    if "%" in model:
        model = unquote(model)
        if not model or _BAD_MODEL.search(model):
            raise invalid(f"invalid model name {model!r} in path", param="model")
    if ":" in model:
        raise invalid(f"invalid model name {model!r} in path", param="model")
    if method not in _METHODS:
        raise GatewayError(
            "not_found", f"unknown method {method!r} (use generateContent or streamGenerateContent)", 404
        )
    stream = method == "streamGenerateContent"
    sse = False
    if stream and query:
        for k, v in parse_qsl(query, keep_blank_values=True):
            if k in ("alt", "$alt"):
                sse = v == "sse"
    return version, model, method, stream, sse


def pass_through_path(api_version: str, model: str, method: str, sse: bool) -> str:
    """The upstream path for same-format forwarding (model possibly aliased)."""
    path = f"/{api_version}/models/{model}:{method}"
    if sse and method == "streamGenerateContent":
        path += "?alt=sse"
    return path


def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == COUNT_TOKENS:
        return f"/v1beta/models/{model}:countTokens"
    if kind == EMBED:
        return f"/v1beta/models/{model}:batchEmbedContents"
    if stream:
        return f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return f"/v1beta/models/{model}:generateContent"


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------
def _get(d: dict[str, Any], camel: str, snake: str) -> Any:
    """A field by its camelCase or snake_case name (the API accepts both)."""
    v = d.get(camel)
    return d.get(snake) if v is None else v


def _as_list(v: Any, param: str) -> list[Any]:
    """A repeated field; a single object is accepted as a list of one (proto JSON parsers are lenient here)."""
    if isinstance(v, list):
        return v
    if isinstance(v, dict):
        return [v]
    raise invalid(f"'{param}' must be an array", param=param)


def _dict(v: Any, param: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise invalid(f"'{param}' must be an object", param=param)
    return v


def _str(v: Any, param: str) -> str:
    if not isinstance(v, str):
        raise invalid(f"'{param}' must be a string", param=param)
    return v


def _num(v: Any, param: str) -> float | int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise invalid(f"'{param}' must be a number", param=param)
    return v


def _int(v: Any, param: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, str) and v.lstrip("-").isdigit():  # proto JSON allows int64 as strings
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise invalid(f"'{param}' must be an integer", param=param)
    return int(v)


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _is_filter(reason: str) -> bool:
    return reason in _FILTER_REASONS


def _map_finish(reason: str | None, has_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason and _is_filter(reason):
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex


def _new_response_id() -> str:
    return uuid.uuid4().hex[:24]


# ---------------------------------------------------------------------------------------------------------------------
# Schemas: Gemini's OpenAPI subset -> JSON Schema
# ---------------------------------------------------------------------------------------------------------------------
def _schema_to_json(s: Any, param: str) -> dict[str, Any]:
    """Convert a Gemini ``Schema`` (OpenAPI 3.0 subset, types like ``"OBJECT"``) into JSON Schema."""
    if not isinstance(s, dict):
        raise invalid(f"'{param}' must be an object", param=param)
    out: dict[str, Any] = {}
    nullable = False
    for key, value in s.items():
        k = _JSON_SCHEMA_RENAME.get(key, key)
        if k not in _SCHEMA_KEEP:
            continue  # example, propertyOrdering, ...: no JSON Schema meaning worth keeping
        if k == "type":
            if not isinstance(value, str):
                raise invalid(f"'{param}.type' must be a string", param=param)
            t = value.lower()
            if t != "type_unspecified":
                out["type"] = t
        elif k == "nullable":
            nullable = value is True
        elif k == "properties":
            out["properties"] = {
                name: _schema_to_json(sub, f"{param}.properties.{name}") for name, sub in _dict(value, param).items()
            }
        elif k == "$defs":
            out["$defs"] = {
                name: _schema_to_json(sub, f"{param}.$defs.{name}") for name, sub in _dict(value, param).items()
            }
        elif k == "items":
            out["items"] = _schema_to_json(value, f"{param}.items")
        elif k == "anyOf":
            out["anyOf"] = [_schema_to_json(sub, f"{param}.anyOf") for sub in _as_list(value, param)]
        elif k == "additionalProperties" and isinstance(value, dict):
            out[k] = _schema_to_json(value, f"{param}.additionalProperties")
        elif k == "format" and value == "enum":
            continue
        else:
            out[k] = value
    if nullable:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"].append({"type": "null"})
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Client side: request
# ---------------------------------------------------------------------------------------------------------------------
def parse_request(body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False) -> Request:
    """A client's generateContent body (bytes, or already decoded) into a canonical Request (model and stream come
    from the URL path)."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    try:
        return _parse_request(data, model or "", stream)
    except GatewayError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
        raise invalid(f"invalid request: {e}") from None


def _parse_request(data: dict[str, Any], model: str, stream: bool) -> Request:
    req = Request(model=model, stream=stream, include_usage=stream)
    contents = data.get("contents")
    if contents is None or contents == [] or contents == {}:
        raise invalid("'contents' is required and must not be empty", param="contents")
    req.messages = _parse_contents(_as_list(contents, "contents"))
    if not req.messages:
        raise invalid("'contents' must contain at least one non-empty content", param="contents")

    system = _get(data, "systemInstruction", "system_instruction")
    if system is not None:
        req.system = _parse_system(system)

    tools = data.get("tools")
    if tools is not None:
        req.tools = _parse_tools(_as_list(tools, "tools"))

    tool_config = _get(data, "toolConfig", "tool_config")
    if tool_config is not None:
        req.tool_choice = _parse_tool_config(_dict(tool_config, "toolConfig"), req)

    gen = _get(data, "generationConfig", "generation_config")
    if gen is not None:
        _parse_generation_config(_dict(gen, "generationConfig"), req)
    # safetySettings, cachedContent, labels, serviceTier, store: nothing to map them to across providers.
    return req


def _parse_contents(contents: list[Any]) -> list[Message]:
    messages: list[Message] = []
    pending: dict[str, list[str]] = {}  # name -> call ids of the latest model turn not yet answered
    pending_ids: dict[str, str] = {}  # id -> name
    last_role = ""
    for ci, content in enumerate(contents):
        param = f"contents[{ci}]"
        content = _dict(content, param)
        role = content.get("role")
        if role is None or role == "" or role == "user" or role == "function":
            role = "user"
        elif role == "model":
            role = "assistant"
        else:
            raise invalid(f"{param}.role must be 'user' or 'model', got {role!r}", param=f"{param}.role")
        raw_parts = content.get("parts")
        if raw_parts is None or raw_parts == []:
            raise invalid(f"{param}.parts must not be empty", param=f"{param}.parts")
        if role == "assistant" and last_role != "assistant":
            pending = {}
            pending_ids = {}
        last_role = role
        parts: list[Part] = []
        for pi, raw in enumerate(_as_list(raw_parts, f"{param}.parts")):
            pparam = f"{param}.parts[{pi}]"
            part = _parse_part(_dict(raw, pparam), pparam, role, ci, pi, pending, pending_ids)
            if part is not None:
                parts.append(part)
        if parts:
            messages.append(Message(role=role, parts=parts))
    return messages


def _parse_part(
    p: dict[str, Any],
    param: str,
    role: str,
    ci: int,
    pi: int,
    pending: dict[str, list[str]],
    pending_ids: dict[str, str],
) -> Part | None:
    text = p.get("text")
    if text is not None:
        text = _str(text, f"{param}.text")
        if p.get("thought") is True:
            sig = _get(p, "thoughtSignature", "thought_signature")
            return Thinking(text=text, signature=sig if isinstance(sig, str) else None)
        return Text(text) if text else None
    blob = _get(p, "inlineData", "inline_data")
    if blob is not None:
        blob = _dict(blob, f"{param}.inlineData")
        mime = _str(_get(blob, "mimeType", "mime_type"), f"{param}.inlineData.mimeType")
        b64 = _str(blob.get("data"), f"{param}.inlineData.data")
        if mime.startswith("image/"):
            return Image(media_type=mime, data=b64)
        return Document(media_type=mime, data=b64, name=_get(blob, "displayName", "display_name"))
    fdata = _get(p, "fileData", "file_data")
    if fdata is not None:
        fdata = _dict(fdata, f"{param}.fileData")
        uri = _str(_get(fdata, "fileUri", "file_uri"), f"{param}.fileData.fileUri")
        mime = _get(fdata, "mimeType", "mime_type")
        if mime is not None:
            mime = _str(mime, f"{param}.fileData.mimeType")
        if mime and mime.startswith("image/"):
            return Image(media_type=mime, url=uri)
        return Document(media_type=mime, url=uri, name=_get(fdata, "displayName", "display_name"))
    call = _get(p, "functionCall", "function_call")
    if call is not None:
        if role != "assistant":
            raise invalid(f"{param}: functionCall parts belong in a 'model' content", param=param)
        call = _dict(call, f"{param}.functionCall")
        name = _str(call.get("name"), f"{param}.functionCall.name")
        if not name:
            raise invalid(f"{param}.functionCall.name must not be empty", param=f"{param}.functionCall.name")
        args = call.get("args")
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            raise invalid(f"{param}.functionCall.args must be an object", param=f"{param}.functionCall.args")
        cid = call.get("id")
        if not isinstance(cid, str) or not cid:
            cid = f"call_{ci}_{pi}"
        sig = _get(p, "thoughtSignature", "thought_signature")
        pending.setdefault(name, []).append(cid)
        pending_ids[cid] = name
        return ToolCall(id=cid, name=name, arguments=_dumps(args), signature=sig if isinstance(sig, str) else None)
    resp = _get(p, "functionResponse", "function_response")
    if resp is not None:
        if role != "user":
            raise invalid(f"{param}: functionResponse parts belong in a 'user' content", param=param)
        return _parse_function_response(_dict(resp, f"{param}.functionResponse"), param, pending, pending_ids)
    if _get(p, "thoughtSignature", "thought_signature") is not None:
        return None  # a bare signature part: only Gemini can use it, and it is optional there
    raise invalid(
        f"{param} has no supported data (text, inlineData, fileData, functionCall or functionResponse)", param=param
    )


def _parse_function_response(
    resp: dict[str, Any], param: str, pending: dict[str, list[str]], pending_ids: dict[str, str]
) -> ToolResult:
    name = _str(resp.get("name"), f"{param}.functionResponse.name")
    rid = resp.get("id")
    call_id: str | None = None
    if isinstance(rid, str) and rid in pending_ids:
        call_id = rid
        pending[pending_ids.pop(rid)].remove(rid)
    else:
        queue = pending.get(name)
        if queue:
            call_id = queue.pop(0)
            pending_ids.pop(call_id, None)
    if call_id is None:
        raise invalid(
            f"{param}: functionResponse '{name}' answers no earlier functionCall of that name",
            param=f"{param}.functionResponse",
        )
    body = resp.get("response")
    if body is None:
        body = {}
    body = _dict(body, f"{param}.functionResponse.response")
    is_error = False
    value: Any = body
    if len(body) == 1:
        key = next(iter(body))
        if key in ("output", "result", "error"):
            value = body[key]
            is_error = key == "error"
    content: list[Part] = [Text(value if isinstance(value, str) else _dumps(value))]
    extra = resp.get("parts")
    if extra is not None:  # multimodal function responses (images)
        for i, fp in enumerate(_as_list(extra, f"{param}.functionResponse.parts")):
            fparam = f"{param}.functionResponse.parts[{i}]"
            fp = _dict(fp, fparam)
            blob = _get(fp, "inlineData", "inline_data")
            if blob is not None:
                blob = _dict(blob, fparam)
                mime = _str(_get(blob, "mimeType", "mime_type"), f"{fparam}.inlineData.mimeType")
                content.append(Image(media_type=mime, data=_str(blob.get("data"), f"{fparam}.inlineData.data")))
                continue
            fdata = _get(fp, "fileData", "file_data")
            if fdata is not None:
                fdata = _dict(fdata, fparam)
                mime = _get(fdata, "mimeType", "mime_type")
                content.append(Image(media_type=mime, url=_str(_get(fdata, "fileUri", "file_uri"), fparam)))
    return ToolResult(tool_call_id=call_id, name=name, content=content, is_error=is_error)


def _parse_system(system: Any) -> list[Part]:
    if isinstance(system, str):
        return [Text(system)] if system else []
    system = _dict(system, "systemInstruction")
    out: list[Part] = []
    for i, p in enumerate(_as_list(system.get("parts", []), "systemInstruction.parts")):
        p = _dict(p, f"systemInstruction.parts[{i}]")
        text = p.get("text")
        if text is None:
            raise invalid("systemInstruction supports only text parts", param=f"systemInstruction.parts[{i}]")
        text = _str(text, f"systemInstruction.parts[{i}].text")
        if text:
            out.append(Text(text))
    return out


def _parse_tools(tools: list[Any]) -> list[Tool]:
    out: list[Tool] = []
    for ti, tool in enumerate(tools):
        tool = _dict(tool, f"tools[{ti}]")
        for key, value in tool.items():
            if key in ("functionDeclarations", "function_declarations"):
                for di, decl in enumerate(_as_list(value, f"tools[{ti}].functionDeclarations")):
                    out.append(_parse_declaration(_dict(decl, f"tools[{ti}].functionDeclarations[{di}]"), ti, di))
            elif key in _BUILTIN_TOOLS:
                raise invalid(
                    f"Gemini built-in tool {_BUILTIN_TOOLS[key]} is not supported across providers",
                    param=f"tools[{ti}]",
                )
            else:
                raise invalid(f"unsupported tool type {key!r}", param=f"tools[{ti}]")
    return out


def _parse_declaration(decl: dict[str, Any], ti: int, di: int) -> Tool:
    param = f"tools[{ti}].functionDeclarations[{di}]"
    name = _str(decl.get("name"), f"{param}.name")
    if not name:
        raise invalid(f"{param}.name must not be empty", param=f"{param}.name")
    desc = decl.get("description")
    if desc is not None:
        desc = _str(desc, f"{param}.description")
    schema = _get(decl, "parametersJsonSchema", "parameters_json_schema")
    if schema is not None:
        schema = schemas.with_lowercase_types(_dict(schema, f"{param}.parametersJsonSchema"))
    else:
        params = decl.get("parameters")
        if params is not None:
            schema = _schema_to_json(params, f"{param}.parameters")
    return Tool(name=name, description=desc, parameters=schema)


def _parse_tool_config(cfg: dict[str, Any], req: Request) -> ToolChoice | None:
    fcc = _get(cfg, "functionCallingConfig", "function_calling_config")
    if fcc is None:
        return None
    fcc = _dict(fcc, "toolConfig.functionCallingConfig")
    mode = fcc.get("mode")
    names = _get(fcc, "allowedFunctionNames", "allowed_function_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise invalid("allowedFunctionNames must be an array of strings", param="toolConfig.functionCallingConfig")
    if mode is None:
        return None
    mode = _str(mode, "toolConfig.functionCallingConfig.mode").upper()
    if mode in ("AUTO", "VALIDATED", "MODE_UNSPECIFIED"):
        return ToolChoice("auto")
    if mode == "NONE":
        return ToolChoice("none")
    if mode == "ANY":
        if names and len(names) == 1:
            return ToolChoice("tool", names[0])
        if names and req.tools:  # several allowed: send only those tools (the same restriction in every format)
            unknown = [n for n in names if n not in {t.name for t in req.tools}]
            if unknown:
                raise invalid(
                    f"allowedFunctionNames names undeclared functions: {', '.join(unknown)}",
                    param="toolConfig.functionCallingConfig.allowedFunctionNames",
                )
            req.tools = [t for t in req.tools if t.name in names]
        return ToolChoice("required")
    raise invalid(f"unknown functionCallingConfig mode {mode!r}", param="toolConfig.functionCallingConfig.mode")


def _parse_generation_config(gen: dict[str, Any], req: Request) -> None:
    p = "generationConfig."
    req.temperature = _num(gen.get("temperature"), p + "temperature")
    req.top_p = _num(_get(gen, "topP", "top_p"), p + "topP")
    top_k = _num(_get(gen, "topK", "top_k"), p + "topK")
    req.top_k = None if top_k is None else int(top_k)
    req.max_tokens = _int(_get(gen, "maxOutputTokens", "max_output_tokens"), p + "maxOutputTokens")
    stops = _get(gen, "stopSequences", "stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise invalid("stopSequences must be an array of strings", param=p + "stopSequences")
        req.stop = stops
    req.n = _int(_get(gen, "candidateCount", "candidate_count"), p + "candidateCount")
    req.seed = _int(gen.get("seed"), p + "seed")
    req.presence_penalty = _num(_get(gen, "presencePenalty", "presence_penalty"), p + "presencePenalty")
    req.frequency_penalty = _num(_get(gen, "frequencyPenalty", "frequency_penalty"), p + "frequencyPenalty")

    mime = _get(gen, "responseMimeType", "response_mime_type")
    if mime is not None:
        mime = _str(mime, p + "responseMimeType")
        if mime not in ("application/json", "text/plain"):
            raise invalid(
                f"responseMimeType {mime!r} is not supported across providers (use application/json or text/plain)",
                param=p + "responseMimeType",
            )
    if mime == "application/json":
        json_schema = _get(gen, "responseJsonSchema", "response_json_schema")
        if json_schema is not None:
            schema = schemas.with_lowercase_types(_dict(json_schema, p + "responseJsonSchema"))
            req.response_format = ResponseFormat("json_schema", schema)
        else:
            schema = _get(gen, "responseSchema", "response_schema")
            if schema is not None:
                req.response_format = ResponseFormat("json_schema", _schema_to_json(schema, p + "responseSchema"))
            else:
                req.response_format = ResponseFormat("json_object")

    thinking = _get(gen, "thinkingConfig", "thinking_config")
    if thinking is not None:
        thinking = _dict(thinking, p + "thinkingConfig")
        budget = _int(_get(thinking, "thinkingBudget", "thinking_budget"), p + "thinkingConfig.thinkingBudget")
        req.thinking_budget = None if budget is None else max(budget, -1)  # -1: dynamic (the model decides)
        level = _get(thinking, "thinkingLevel", "thinking_level")
        if level is not None:
            level = _str(level, p + "thinkingConfig.thinkingLevel").lower()
            if level != "thinking_level_unspecified":
                effort = _EFFORTS.get(level)
                if effort is None:
                    raise invalid(f"unknown thinkingLevel {level!r}", param=p + "thinkingConfig.thinkingLevel")
                req.reasoning_effort = effort


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: request
# ---------------------------------------------------------------------------------------------------------------------
def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    """A canonical Request as the JSON body the google-genai SDK would send to ``models/{model}:generateContent``."""
    body: dict[str, Any] = {"contents": [c for m in req.messages if (c := _build_content(m))]}
    if req.system:
        sys_parts = [{"text": p.text} for p in req.system if isinstance(p, Text) and p.text]
        if sys_parts:
            body["systemInstruction"] = {"parts": sys_parts}
    if req.tools:
        decls: list[dict[str, Any]] = []
        for t in req.tools:
            d: dict[str, Any] = {"name": t.name}
            if t.description:
                d["description"] = t.description
            if t.parameters is not None:
                d["parametersJsonSchema"] = t.parameters
            decls.append(d)
        body["tools"] = [{"functionDeclarations": decls}]
        tc = req.tool_choice
        if tc is not None:
            fcc: dict[str, Any]
            if tc.mode == "none":
                fcc = {"mode": "NONE"}
            elif tc.mode == "required":
                fcc = {"mode": "ANY"}
            elif tc.mode == "tool" and tc.name:
                fcc = {"mode": "ANY", "allowedFunctionNames": [tc.name]}
            else:
                fcc = {"mode": "AUTO"}
            body["toolConfig"] = {"functionCallingConfig": fcc}
    caps = options.capabilities if options is not None else None
    # thinkingBudget (Gemini 1.x/2.x) or thinkingLevel (3 and later): the model's own knob, else a guess by name
    legacy = BUDGET in caps.reasoning[:1] if caps is not None else bool(_LEGACY_THINKING_MODEL.search(model))
    gen = _build_generation_config(req, legacy)
    if gen:
        body["generationConfig"] = gen
    return orjson.dumps(body)


def _build_generation_config(req: Request, legacy: bool) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if req.top_k is not None:
        gen["topK"] = req.top_k
    if req.max_tokens is not None:
        gen["maxOutputTokens"] = req.max_tokens
    if req.stop:
        gen["stopSequences"] = req.stop
    if req.n is not None:
        gen["candidateCount"] = req.n
    if req.seed is not None:
        gen["seed"] = req.seed
    if req.presence_penalty is not None:
        gen["presencePenalty"] = req.presence_penalty
    if req.frequency_penalty is not None:
        gen["frequencyPenalty"] = req.frequency_penalty
    if req.n is not None and req.n > 1 and req.stream:
        raise invalid("several candidates (n > 1) cannot be streamed across formats: stream one, or don't stream")
    rf = req.response_format
    if rf is not None and rf.type in ("json_object", "json_schema"):
        gen["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema is not None:
            gen["responseJsonSchema"] = schemas.for_gemini(rf.schema)
    thinking: dict[str, Any] = {}
    if req.thinking_budget is not None:
        thinking["thinkingBudget"] = req.thinking_budget
        if req.thinking_budget != 0:
            thinking["includeThoughts"] = True
    elif req.reasoning_effort == "none":
        if legacy:
            thinking["thinkingBudget"] = 0
        else:
            thinking["thinkingLevel"] = "MINIMAL"  # Gemini 3 cannot switch thinking off
    elif req.reasoning_effort:
        effort = _EFFORTS_OUT.get(req.reasoning_effort.lower(), "medium")
        if legacy:
            thinking["thinkingBudget"] = _BUDGET_BY_EFFORT[effort]
        else:
            thinking["thinkingLevel"] = effort.upper()
        thinking["includeThoughts"] = True
    if thinking:
        gen["thinkingConfig"] = thinking
    return gen


def _media_parts(part: Image | Document) -> dict[str, Any]:
    """An Image/Document as inlineData (base64) or fileData (URI; Gemini only fetches Google-hosted files)."""
    if part.data is not None:
        mime = part.media_type or (_sniff_image(part.data) if isinstance(part, Image) else "application/pdf")
        return {"inlineData": {"mimeType": mime, "data": part.data}}
    url = part.url or ""
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        mime = head[5:].split(";", 1)[0] or (part.media_type or "application/octet-stream")
        return {"inlineData": {"mimeType": mime, "data": data}}
    fd: dict[str, Any] = {"fileUri": url}
    if part.media_type:
        fd["mimeType"] = part.media_type
    return {"fileData": fd}


def _sniff_image(b64: str) -> str:
    """Guess an image's media type from its base64 magic bytes (Gemini requires a mimeType)."""
    if b64.startswith("iVBOR"):
        return "image/png"
    if b64.startswith("R0lG"):
        return "image/gif"
    if b64.startswith("UklGR"):
        return "image/webp"
    return "image/jpeg"


def _tool_args(arguments: str) -> dict[str, Any]:
    """Tool-call arguments (JSON text) as the object Gemini wants; empty text means no arguments."""
    if not arguments or arguments.isspace():
        return {}
    try:
        args = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise invalid(f"tool call arguments must be a JSON object, got {arguments[:100]!r}")
    return args


def _result_response(tr: ToolResult) -> dict[str, Any]:
    """A ToolResult's text as functionResponse.response, which must be an object (see the module docstring)."""
    texts = [p.text for p in tr.content if isinstance(p, Text)]
    text = texts[0] if len(texts) == 1 else "\n".join(texts)
    if not tr.is_error and text[:1] == "{":
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            return obj
    return {"error" if tr.is_error else "output": text}


def _build_content(m: Message) -> dict[str, Any] | None:
    parts: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    last_response = -1
    for p in m.parts:
        if isinstance(p, Text):
            if p.text:
                parts.append({"text": p.text})
        elif isinstance(p, ToolCall):
            out: dict[str, Any] = {"functionCall": {"name": p.name, "args": _tool_args(p.arguments)}}
            if p.signature:
                out["thoughtSignature"] = p.signature
            parts.append(out)
        elif isinstance(p, ToolResult):
            if not p.name:
                raise invalid(f"tool result for '{p.tool_call_id}' has no function name, which Gemini requires")
            parts.append({"functionResponse": {"name": p.name, "response": _result_response(p)}})
            last_response = len(parts)
            extra.extend(_media_parts(c) for c in p.content if isinstance(c, Image | Document))
        elif isinstance(p, Image | Document):
            parts.append(_media_parts(p))
        # Thinking from other providers cannot be replayed to Gemini: dropped.
    if extra:
        parts[last_response:last_response] = extra
    if not parts:
        return None
    return {"role": "model" if m.role == "assistant" else "user", "parts": parts}


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: response
# ---------------------------------------------------------------------------------------------------------------------
def _usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    prompt = _count(meta, "promptTokenCount", "prompt_token_count")
    tool_prompt = _count(meta, "toolUsePromptTokenCount", "tool_use_prompt_token_count")
    cand = _count(meta, "candidatesTokenCount", "candidates_token_count")
    thoughts = _count(meta, "thoughtsTokenCount", "thoughts_token_count")
    cached = _count(meta, "cachedContentTokenCount", "cached_content_token_count")
    return Usage(
        input_tokens=prompt + tool_prompt,
        output_tokens=cand + thoughts,
        cached_tokens=cached,
        reasoning_tokens=thoughts,
    )


def _count(meta: dict[str, Any], camel: str, snake: str) -> int:
    v = _get(meta, camel, snake)
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _response_parts(parts: Any, new_id: Any) -> list[Part]:
    out: list[Part] = []
    if not isinstance(parts, list):
        return out
    for p in parts:
        if not isinstance(p, dict):
            continue
        sig = _get(p, "thoughtSignature", "thought_signature")
        sig = sig if isinstance(sig, str) and sig else None
        text = p.get("text")
        if isinstance(text, str):
            if p.get("thought") is True:
                out.append(Thinking(text=text, signature=sig))
            elif text:
                out.append(Text(text))
            continue
        call = _get(p, "functionCall", "function_call")
        if isinstance(call, dict):
            args = call.get("args")
            cid = call.get("id")
            out.append(
                ToolCall(
                    id=cid if isinstance(cid, str) and cid else new_id(),
                    name=call.get("name") or "",
                    arguments=_dumps(args if isinstance(args, dict) else {}),
                    signature=sig,
                )
            )
        # executableCode, codeExecutionResult, inlineData (generated images): no canonical place, dropped.
    return out


def parse_response(body: bytes) -> Response:
    """A provider generateContent body into a canonical Response (first candidate only)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError("server_error", "provider returned a response that is not valid JSON", 502) from None
    if not isinstance(data, dict):
        raise GatewayError("server_error", "provider returned a response that is not a JSON object", 502)
    cands = data.get("candidates")
    feedback = _get(data, "promptFeedback", "prompt_feedback")
    if cands is None and not isinstance(feedback, dict) and "usageMetadata" not in data:
        raise GatewayError("server_error", "provider returned a body that is not a Gemini response", 502)
    if cands is not None and not isinstance(cands, list):
        raise GatewayError("server_error", "provider returned 'candidates' that is not an array", 502)
    rid = _get(data, "responseId", "response_id")
    mv = _get(data, "modelVersion", "model_version")
    resp = Response(
        id=rid if isinstance(rid, str) else "",
        model=mv if isinstance(mv, str) else "",
        usage=_usage(_get(data, "usageMetadata", "usage_metadata")),
    )
    if not cands:
        blocked = isinstance(feedback, dict) and _get(feedback, "blockReason", "block_reason")
        resp.finish_reason = "content_filter" if blocked else "stop"
        return resp
    answers = [_candidate_in(cand) for cand in sorted(cands, key=_candidate_index)]
    resp.parts = answers[0].parts
    resp.finish_reason = answers[0].finish_reason
    resp.candidates = answers[1:]
    return resp


def _candidate_index(cand: Any) -> int:
    idx = cand.get("index") if isinstance(cand, dict) else None
    return idx if isinstance(idx, int) and not isinstance(idx, bool) else 0


def _candidate_in(cand: Any) -> Candidate:
    if not isinstance(cand, dict):
        raise GatewayError("server_error", "provider returned a candidate that is not an object", 502)
    out = Candidate()
    content = cand.get("content")
    if isinstance(content, dict):
        out.parts = _response_parts(content.get("parts"), _new_call_id)
    has_calls = any(isinstance(p, ToolCall) for p in out.parts)
    reason = _get(cand, "finishReason", "finish_reason")
    out.finish_reason = _map_finish(reason if isinstance(reason, str) else None, has_calls)
    return out


def parse_error(status: int, body: bytes) -> GatewayError:
    """A provider error body (``{"error": {code, message, status, details}}``) into a GatewayError."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        text = "an empty body" if not body.strip() else "a non-JSON body"
        if isinstance(data, dict | list):
            text = "an unrecognised error body"
        return GatewayError(type_for_status(status), f"provider returned HTTP {status} with {text}", status)
    return _error_from_object(err, status)


def _error_from_object(err: dict[str, Any], status: int) -> GatewayError:
    grpc_status = err.get("status")
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"provider returned HTTP {status}"
    etype = _TYPE_BY_GRPC_STATUS.get(grpc_status) if isinstance(grpc_status, str) else None
    retry_after: str | None = None
    details = err.get("details")
    if isinstance(details, list):
        for d in details:
            if not isinstance(d, dict):
                continue
            if d.get("reason") == "API_KEY_INVALID":
                etype = "auth"
            delay = d.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                with contextlib.suppress(ValueError):
                    retry_after = str(max(0, math.ceil(float(delay[:-1]))))
    return GatewayError(
        etype or type_for_status(status),
        message,
        status,
        code=grpc_status if isinstance(grpc_status, str) else None,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Client side: response and error
# ---------------------------------------------------------------------------------------------------------------------
def _part_out(p: Part, cut: bool) -> dict[str, Any] | None:
    if isinstance(p, Text):
        return {"text": p.text}
    if isinstance(p, ToolCall):
        return _call_part(p.id, p.name, p.arguments, p.signature, cut)
    if isinstance(p, Thinking):
        if p.redacted is not None and not p.text:
            return None
        out: dict[str, Any] = {"text": p.text, "thought": True}
        if p.signature:
            out["thoughtSignature"] = p.signature
        return out
    return None


def _call_part(cid: str, name: str, arguments: str, signature: str | None, cut: bool = False) -> dict[str, Any] | None:
    """A functionCall part. Invalid argument JSON is a provider fault (502), except when the output was cut at the
    token limit (``cut``): then the unfinished call is dropped and the MAX_TOKENS answer still goes out."""
    try:
        args = _tool_args(arguments)
    except GatewayError:
        if cut:
            return None
        raise GatewayError(
            "server_error", f"provider returned tool call arguments that are not a JSON object for '{name}'", 502
        ) from None
    call: dict[str, Any] = {"name": name, "args": args}
    if cid:
        call["id"] = cid
    out: dict[str, Any] = {"functionCall": call}
    if signature:
        out["thoughtSignature"] = signature
    return out


def _usage_out(u: Usage) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": max(0, u.output_tokens - u.reasoning_tokens),
    }
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    if u.cached_tokens:
        meta["cachedContentTokenCount"] = u.cached_tokens
    meta["totalTokenCount"] = u.input_tokens + u.output_tokens
    return meta


def build_response(resp: Response, *, model: str, request: Request | None = None) -> bytes:
    """A canonical Response as a generateContent body (``model`` is the name the client asked for)."""
    answers = [Candidate(resp.parts, resp.finish_reason, resp.stop_sequence), *resp.candidates]
    cands: list[dict[str, Any]] = []
    for i, a in enumerate(answers):
        cut = a.finish_reason == "length"
        parts = [o for p in a.parts if (o := _part_out(p, cut)) is not None]
        cands.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": _FINISH_OUT.get(a.finish_reason, "STOP"),
                "index": i,
            }
        )
    body: dict[str, Any] = {"candidates": cands}
    if resp.usage is not None:
        body["usageMetadata"] = _usage_out(resp.usage)
    body["modelVersion"] = model
    body["responseId"] = resp.id or _new_response_id()
    return orjson.dumps(body)


def _error_object(err: GatewayError, request_id: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "code": err.status,
        "message": err.message,
        "status": _STATUS_BY_TYPE.get(err.type, "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT"),
    }
    if request_id:
        obj["details"] = [{"@type": "type.googleapis.com/google.rpc.RequestInfo", "requestId": request_id}]
    return obj


def build_error(err: GatewayError, *, request_id: str | None) -> bytes:
    """Google's error envelope; google-genai raises ClientError (4xx) or ServerError (5xx) from the HTTP status."""
    return orjson.dumps({"error": _error_object(err, request_id)})


# ---------------------------------------------------------------------------------------------------------------------
# Client side: stream encoder
# ---------------------------------------------------------------------------------------------------------------------
class _HeldCall:
    __slots__ = ("args", "id", "name", "signature")

    def __init__(self, cid: str, name: str, signature: str | None) -> None:
        self.id = cid
        self.name = name
        self.signature = signature
        self.args: list[str] = []


class StreamEncoder:
    """Canonical events as a Gemini stream: SSE (``alt=sse``) or one JSON array written element by element.

    Gemini sends tool calls whole, so argument fragments are held until the call is complete.
    """

    __slots__ = ("_calls", "_closed", "_id", "_model", "_reason", "_sse", "_started", "_usage", "media_type")

    def __init__(self, *, model: str, include_usage: bool = False, sse: bool = True) -> None:
        self._model = model
        self._sse = sse
        self._id = ""
        self._calls: dict[int, _HeldCall] = {}
        self._reason: str | None = None
        self._usage: Usage | None = None
        self._started = False  # array mode: "[" written
        self._closed = False
        self.media_type = "text/event-stream" if sse else "application/json"

    def _frame(self, obj: dict[str, Any]) -> bytes:
        data = orjson.dumps(obj)
        if self._sse:
            return b"data: " + data + b"\r\n\r\n"
        if self._started:
            return b",\r\n" + data
        self._started = True
        return b"[" + data

    def _chunk(self, parts: list[dict[str, Any]], final: bool = False) -> bytes:
        cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if final:
            cand["finishReason"] = _FINISH_OUT.get(self._reason or "stop", "STOP")
        cand["index"] = 0
        obj: dict[str, Any] = {"candidates": [cand]}
        if final and self._usage is not None:
            obj["usageMetadata"] = _usage_out(self._usage)
        obj["modelVersion"] = self._model
        if not self._id:
            self._id = _new_response_id()
        obj["responseId"] = self._id
        return self._frame(obj)

    def _call_parts(self) -> list[dict[str, Any]]:
        calls = self._calls
        if not calls:
            return []
        self._calls = {}
        cut = self._reason == "length"
        out = []
        for _, c in sorted(calls.items()):
            part = _call_part(c.id, c.name, "".join(c.args), c.signature, cut)
            if part is not None:
                out.append(part)
        return out

    def _flush_calls(self) -> bytes:
        """Emit the held (now complete) tool calls; bad argument JSON ends the stream with an error."""
        try:
            parts = self._call_parts()
        except GatewayError as err:
            return self.error(err)
        return self._chunk(parts) if parts else b""

    def encode(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._flush_calls()
            return out if self._closed else out + self._chunk([{"text": event.text}])
        if isinstance(event, ThinkingDelta):
            if not event.text and not event.signature:
                return b""
            part: dict[str, Any] = {"text": event.text, "thought": True}
            if event.signature:
                part["thoughtSignature"] = event.signature
            out = self._flush_calls()
            return out if self._closed else out + self._chunk([part])
        if isinstance(event, ToolCallStart):
            out = b"" if event.index in self._calls else self._flush_calls()
            self._calls[event.index] = _HeldCall(event.id, event.name, event.signature)
            return out
        if isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is not None:
                call.args.append(event.arguments)
            return b""
        if isinstance(event, Finish):
            self._reason = event.reason
            return b""
        if isinstance(event, UsageUpdate):
            self._usage = merge_usage(self._usage or Usage(), event.usage)
            return b""
        if isinstance(event, MessageStart):
            if event.id and not self._id:
                self._id = event.id
            if event.usage is not None:
                self.encode(UsageUpdate(event.usage))
            return b""
        if isinstance(event, StreamError):
            return self.error(event.error)
        return b""

    def finish(self) -> bytes:
        """The last chunk: any held tool calls, finishReason and usage; then ``]`` in array mode."""
        if self._closed:
            return b""
        try:
            parts = self._call_parts() or [{"text": ""}]
        except GatewayError as err:
            return self.error(err)
        self._closed = True
        out = self._chunk(parts, final=True)
        if not self._sse:
            out += b"]"
        return out

    def error(self, err: GatewayError) -> bytes:
        """An in-stream error element; google-genai raises APIError on a chunk starting ``{"error":``."""
        if self._closed:
            return b""
        self._closed = True
        out = self._frame({"error": _error_object(err, None)})
        if not self._sse:
            out += b"]"
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Provider side: stream decoder
# ---------------------------------------------------------------------------------------------------------------------
class StreamDecoder:
    """A Gemini stream (SSE with ``alt=sse``, else a JSON array) into canonical events."""

    __slots__ = (
        "_array",
        "_bracket",
        "_calls",
        "_done",
        "_last_usage",
        "_reason",
        "_sse",
        "_started",
    )

    def __init__(self, sse: bool = True) -> None:
        self._sse: SSEParser | None = SSEParser() if sse else None
        self._array: JSONArrayStreamParser | None = None if sse else JSONArrayStreamParser()
        self._started = False
        self._calls = 0
        self._reason: str | None = None
        self._last_usage: tuple[int, ...] | None = None
        self._done = False  # an error was reported: ignore the rest
        self._bracket = False  # array mode: the closing "]" was seen

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        if self._sse is not None:
            for ev in self._sse.feed(chunk):
                self._element(ev.data, out)
                if self._done:
                    break
        else:
            assert self._array is not None
            for element in self._array.feed(chunk):
                self._element(element, out)
                if self._done:
                    break
            if not self._array.pending():
                tail = chunk.rstrip()
                if tail:
                    self._bracket = tail[-1:] == b"]"
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        if self._done:
            return out
        truncated = False
        if self._sse is not None:
            for ev in self._sse.close():
                self._element(ev.data, out, final=True)
                if self._done:
                    return out
        else:
            assert self._array is not None
            truncated = self._array.pending() or not self._bracket
        if truncated or self._reason is None:
            self._done = True
            out.append(StreamError(GatewayError("network", "provider stream ended early", 502)))
            return out
        self._done = True
        out.append(Finish(self._reason if self._reason != "stop" or not self._calls else "tool_calls"))
        return out

    def _element(self, raw: str | bytes, out: list[Event], final: bool = False) -> None:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._done = True
            msg = "provider stream ended early" if final else "provider sent a stream chunk that is not valid JSON"
            out.append(StreamError(GatewayError("network" if final else "server_error", msg, 502)))
            return
        if not isinstance(data, dict):
            self._done = True
            out.append(
                StreamError(GatewayError("server_error", "provider sent a stream chunk that is not an object", 502))
            )
            return
        err = data.get("error")
        if isinstance(err, dict):
            self._done = True
            code = err.get("code")
            status = code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600 else 500
            out.append(StreamError(_error_from_object(err, status)))
            return
        if not self._started:
            self._started = True
            rid = _get(data, "responseId", "response_id")
            mv = _get(data, "modelVersion", "model_version")
            out.append(MessageStart(id=rid if isinstance(rid, str) else "", model=mv if isinstance(mv, str) else ""))
        cands = data.get("candidates")
        if isinstance(cands, list) and cands and isinstance(cands[0], dict):
            cand = cands[0]
            content = cand.get("content")
            if isinstance(content, dict):
                for part in _response_parts(content.get("parts"), _new_call_id):
                    if isinstance(part, Text):
                        out.append(TextDelta(part.text))
                    elif isinstance(part, Thinking):
                        if part.text or part.signature:
                            out.append(ThinkingDelta(part.text, part.signature))
                    elif isinstance(part, ToolCall):
                        idx = self._calls
                        self._calls += 1
                        out.append(ToolCallStart(idx, part.id, part.name, part.signature))
                        out.append(ToolCallDelta(idx, part.arguments))
            reason = _get(cand, "finishReason", "finish_reason")
            if isinstance(reason, str) and reason:
                self._reason = _map_finish(reason, False)
        else:
            feedback = _get(data, "promptFeedback", "prompt_feedback")
            if isinstance(feedback, dict) and _get(feedback, "blockReason", "block_reason"):
                self._reason = "content_filter"
        usage = _usage(_get(data, "usageMetadata", "usage_metadata"))
        if usage is not None:
            key = (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens)
            if key != self._last_usage:
                self._last_usage = key
                out.append(UsageUpdate(usage))


# ---------------------------------------------------------------------------------------------------------------------
# The format contract (extproc.translation.formats.contract): routes, credentials, listings, pass-through, factories
# ---------------------------------------------------------------------------------------------------------------------
PATH_PREFIX = "/gemini/"
COUNTS_TOKENS = True
STATE: ConversationState | None = None  # nothing is kept between requests
_LISTING = re.compile(r"^/gemini/(v1|v1beta)/models(?:/([^:]+))?$")
_LISTED_METHODS = ("generateContent", "streamGenerateContent")


def route(method: str, path: str, query: str) -> Endpoint | None:
    """``/gemini/{v1,v1beta}/models[/{name}]`` lists; ``/gemini/{v}/models/{model}:{method}`` generates or counts.
    A model segment that could escape the upstream path is a 400, an unknown method a 404 (raised)."""
    listing_match = _LISTING.match(path)
    if listing_match is not None:
        name = listing_match.group(2)
        model_id = unquote(name).removeprefix("models/") if name else None
        return Endpoint(MODELS, model_id=model_id, methods=("GET",))
    if not path.startswith("/gemini/"):
        return None
    version, model, action, stream, sse = parse_path(path[len("/gemini") :] + (f"?{query}" if query else ""))
    kind = COUNT_TOKENS if action == "countTokens" else EMBED if action in _EMBED_METHODS else GENERATE
    return Endpoint(kind, model=model, stream=stream, opts={"api_version": version, "action": action, "sse": sse})


def client_credential(headers: Mapping[str, str], query: str) -> str | None:
    key = headers.get("x-goog-api-key")
    if key:
        return key
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key":
            return value
    return None


def request_model(endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
    return endpoint.model, endpoint.stream


def list_models(models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
    """``{"models": [Model], "nextPageToken"}`` paged by ``pageSize`` / ``pageToken``, or one ``Model``."""

    def one(m: ModelInfo) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": f"models/{m.name}",
            "baseModelId": m.name,
            "version": "001",
            "displayName": m.name,
            "description": m.description or f"{m.target_model or m.name} via {m.provider}",
            "supportedGenerationMethods": [*_LISTED_METHODS, *(["countTokens"] if m.can_count else [])],
        }
        if m.max_input_tokens is not None:
            out["inputTokenLimit"] = m.max_input_tokens
        if m.max_output_tokens is not None:
            out["outputTokenLimit"] = m.max_output_tokens
        if m.thinking is not None:
            out["thinking"] = m.thinking
        return out

    if model_id is not None:
        return orjson.dumps(one(listing.find(models, model_id)))
    q = listing.query_params(query)
    size = listing.int_param(q, "pageSize", 50, 1, 1000)
    token = q.get("pageToken") or "0"
    if not token.isdigit():
        raise invalid("invalid pageToken", param="pageToken")
    start = int(token)
    body: dict[str, Any] = {"models": [one(m) for m in models[start : start + size]]}
    if start + size < len(models):
        body["nextPageToken"] = str(start + size)
    return orjson.dumps(body)


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    """Rebuilt from the parsed path: the client's ``key=`` never goes upstream, ``alt=sse`` does."""
    o = endpoint.opts
    return pass_through_path(o["api_version"], model, o["action"], o["sse"])


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    if not head and b'"requests"' in body:  # the body is not read for Gemini paths (the model is in the path)
        with contextlib.suppress(orjson.JSONDecodeError):
            loaded = orjson.loads(body)
            head = loaded if isinstance(loaded, dict) else {}
    requests = head.get("requests")
    if isinstance(requests, list) and any(isinstance(r, dict) and r.get("model") not in (None, f"models/{model}")
                                          for r in requests):  # fmt: skip
        # batchEmbedContents names the model in each request too: an alias is replaced there as in the path
        fixed = [{**r, "model": f"models/{model}"} if isinstance(r, dict) and "model" in r else r for r in requests]
        return orjson.dumps({**head, "requests": fixed}), None
    return body, None  # the model is in the path


def _sse(opts: StreamOptions) -> bool:
    return bool(opts.endpoint.opts.get("sse", True)) if opts.endpoint is not None else True


def stream_encoder(opts: StreamOptions) -> StreamEncoder:
    return StreamEncoder(model=opts.model, include_usage=opts.include_usage, sse=_sse(opts))


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder(sse=_sse(opts))


def fetches_url(part: Image | Document) -> bool:
    """Gemini reads its own File API URIs and YouTube links; anything else must be inline."""
    return media.url_host(part.url or "") in media.GEMINI_URL_HOSTS


def parse_count_request(body: bytes | dict[str, Any], *, model: str) -> Request:
    """``countTokens``: ``{"contents"}``, or ``{"generateContentRequest": {...}}`` with system and tools."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    inner = _get(data, "generateContentRequest", "generate_content_request")
    if inner is not None:
        inner = {k: v for k, v in _dict(inner, "generateContentRequest").items() if k != "model"}
        return parse_request(inner, model=model)
    return parse_request({"contents": data.get("contents")}, model=model)


def build_count_request(req: Request, *, model: str) -> bytes:
    full = orjson.loads(build_request(req, model=model))
    keep = ("contents", "systemInstruction", "tools", "toolConfig")
    return orjson.dumps(
        {"generateContentRequest": {"model": f"models/{model}", **{k: full[k] for k in keep if k in full}}}
    )


def parse_count_response(body: bytes) -> int:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    tokens = data.get("totalTokens") if isinstance(data, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise GatewayError("server_error", "invalid Gemini countTokens answer: no totalTokens", 502)
    return tokens


def build_count_response(tokens: int) -> bytes:
    return orjson.dumps({"totalTokens": tokens})


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings (``:embedContent``, ``:batchEmbedContents``), both sides
# ---------------------------------------------------------------------------------------------------------------------
EMBEDS = True
_EMBED_METHODS = ("embedContent", "batchEmbedContents")


def _embed_one(item: Any, where: str) -> tuple[str, str | None, str | None, int | None]:
    """One ``EmbedContentRequest``: (text, task type, title, output dimensionality)."""
    obj = _dict(item, where)
    content = _dict(obj.get("content") or {}, f"{where}.content")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise invalid(f"{where}.content.parts must be a non-empty array", param=f"{where}.content.parts")
    texts = []
    for i, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise invalid(f"{where}.content.parts[{i}]: only text can be embedded here", param=f"{where}.content")
        texts.append(text)
    task = _get(obj, "taskType", "task_type")
    if task is not None and task not in embeddings.TASK_TYPES:
        raise invalid(f"{where}.taskType: unknown task type {task!r}", param=f"{where}.taskType")
    title = obj.get("title")
    dims = _get(obj, "outputDimensionality", "output_dimensionality")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise invalid(f"{where}.outputDimensionality must be a positive integer", param=f"{where}.outputDimensionality")
    return " ".join(texts), task, title if isinstance(title, str) else None, dims


def parse_embed_request(body: bytes | dict[str, Any], *, model: str) -> EmbedRequest:
    """``embedContent`` (one content) or ``batchEmbedContents`` (``requests``, one settings for all here)."""
    try:
        data = body if isinstance(body, dict) else orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    batch = "requests" in data
    items = data.get("requests") if batch else [data]
    if not isinstance(items, list) or not items:
        raise invalid("'requests' must be a non-empty array", param="requests")
    parsed = [_embed_one(x, f"requests[{i}]" if batch else "request") for i, x in enumerate(items)]
    settings = {p[1:] for p in parsed}
    if len(settings) > 1:
        raise invalid("the requests of a batch must share taskType, title and outputDimensionality here")
    _, task, title, dims = parsed[0]
    return EmbedRequest(model, [p[0] for p in parsed], dims, task_type=task, title=title, batch=batch)


def build_embed_response(resp: EmbedResponse, *, model: str, request: EmbedRequest) -> bytes:
    if request.batch:
        return orjson.dumps({"embeddings": [{"values": v} for v in resp.vectors]})
    return orjson.dumps({"embedding": {"values": resp.vectors[0] if resp.vectors else []}})


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    def one(text: str) -> dict[str, Any]:
        item: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if req.task_type:
            item["taskType"] = req.task_type
        if req.title:
            item["title"] = req.title
        if req.dimensions is not None:
            item["outputDimensionality"] = req.dimensions
        return item

    return orjson.dumps({"requests": [one(t) for t in req.inputs]})


def parse_embed_response(body: bytes) -> EmbedResponse:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    items = data.get("embeddings") if isinstance(data, dict) else None
    if items is None and isinstance(data, dict) and isinstance(data.get("embedding"), dict):
        items = [data["embedding"]]
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise GatewayError("server_error", "invalid Gemini embeddings answer: no embeddings", 502)
    return EmbedResponse([embeddings.floats(x.get("values")) for x in items])
