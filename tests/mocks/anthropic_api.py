"""The Anthropic Messages mock: POST /v1/messages (and /v1/messages/count_tokens), x-api-key + anthropic-version,
Anthropic's error envelope.

Requests are checked twice: by hand-written checks that mirror the real API (its messages, unknown fields refused,
tool_use/tool_result pairing, thinking replay rules, structured-output schema rules), then against the official SDK's
own request types (``anthropic.types.MessageCreateParams{Streaming,NonStreaming}``, ``MessageCountTokensParams``,
strict).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from anthropic.types import message_count_tokens_params, message_create_params
from pydantic import TypeAdapter

from tests.mocks import model_rules
from tests.mocks.server import (
    COUNT_TOKENS,
    REASONING_TOKENS,
    THINKING_TEXT,
    USAGE_IN,
    USAGE_OUT,
    Answer,
    ApiError,
    Conv,
    ProviderApi,
    Received,
    SdkTypeError,
    b64ok,
    check_sdk_types,
    dumps,
    is_int,
    is_num,
    reject_foreign_credentials,
    split,
)

# Anthropic thinking signatures: standard base64 with "+" and "/" so that a URL-safe re-encoding is caught.
ANTHROPIC_THINKING_SIGNATURES = ("EqQB+mock/sig+01", "EqQB+mock/sig+02")


def _an_check_schema(schema: Any, path: str) -> None:
    """Anthropic structured outputs: every object schema must say additionalProperties: false."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
        raise ApiError(
            400,
            f"output_config.format.schema: For '{path}', 'additionalProperties' must be explicitly set to false",
            etype="invalid_request_error",
        )
    for k, v in (schema.get("properties") or {}).items():
        _an_check_schema(v, f"{path}.{k}")
    for k in ("items",):
        _an_check_schema(schema.get(k), f"{path}.{k}")
    for k in ("anyOf", "allOf"):
        for sub in schema.get(k) or []:
            _an_check_schema(sub, path)
    for k, v in (schema.get("$defs") or {}).items():
        _an_check_schema(v, f"$defs.{k}")


# --------------------------------------------------------------------------------------------------------------
# Messages validation (anthropic/types/message_create_params.py and *_param.py)

_AN_TOP = {
    "max_tokens", "messages", "model", "cache_control", "container", "diagnostics", "inference_geo", "metadata",
    "output_config", "service_tier", "speed", "stop_sequences", "stream", "system", "thinking", "tool_choice", "tools",
    "user_profile_id", "workspace_id",
    # Not in the installed SDK's params any more, but the API still takes them on models with sampling parameters
    # (and translating gateways send them): accepted and range-checked.
    "temperature", "top_p", "top_k",
}  # fmt: skip
_AN_BLOCK_KEYS = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control", "transformations"},
    "document": {"type", "source", "cache_control", "citations", "context", "title"},
    "tool_use": {"type", "id", "input", "name", "cache_control", "caller", "toolset_name"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"},
    "thinking": {"type", "thinking", "signature"},
    "redacted_thinking": {"type", "data"},
}
_AN_LOOSE_BLOCKS = (
    "search_result", "server_tool_use", "web_search_tool_result", "web_fetch_tool_result",
    "code_execution_tool_result", "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
    "tool_search_tool_result", "container_upload", "tool_reference",
)  # fmt: skip
_AN_MEDIA = ("image/jpeg", "image/png", "image/gif", "image/webp")
_AN_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_AN_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# 2026-10-21 is what the installed SDK (anthropic 2.14, _constants.ANTHROPIC_API_VERSION) sends.
_AN_VERSIONS = ("2023-06-01", "2023-01-01", "2026-10-21")


def _an_err(message: str) -> ApiError:
    return ApiError(400, message, etype="invalid_request_error")


def _an_keys(obj: dict, allowed: set[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            raise _an_err(
                f"{path}.{k}: Extra inputs are not permitted" if path else f"{k}: Extra inputs are not permitted"
            )


def _an_req(obj: dict, key: str, path: str) -> None:
    if key not in obj:
        raise _an_err(f"{path}.{key}: Field required" if path else f"{key}: Field required")


def _an_type(ok: bool, path: str, what: str) -> None:
    if not ok:
        raise _an_err(f"{path}: Input should be a valid {what}")


def _an_source(src: Any, path: str, kind: str) -> None:
    _an_type(isinstance(src, dict), path, "dictionary")
    t = src.get("type")
    if kind == "image":
        allowed = {"base64": {"type", "media_type", "data"}, "url": {"type", "url"}, "file": {"type", "file_id"}}
    else:
        allowed = {
            "base64": {"type", "media_type", "data"},
            "text": {"type", "media_type", "data"},
            "content": {"type", "content"},
            "url": {"type", "url"},
            "file": {"type", "file_id"},
        }
    if t not in allowed:
        tags = ", ".join(f"'{x}'" for x in allowed)
        raise _an_err(f"{path}: Input tag '{t}' found using 'type' does not match any of the expected tags: {tags}")
    _an_keys(src, allowed[t], f"{path}.{t}")
    for k in allowed[t] - {"type"}:
        _an_req(src, k, f"{path}.{t}")
    if kind == "image" and t == "base64":
        if src["media_type"] not in _AN_MEDIA:
            raise _an_err(
                f"{path}.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        if not b64ok(src["data"]):
            raise _an_err(f"{path}.base64.data: The image data is not valid base64")
    if kind == "document" and t == "base64" and src["media_type"] != "application/pdf":
        raise _an_err(f"{path}.base64.media_type: Input should be 'application/pdf'")


def _an_block(b: Any, path: str, role: str, in_tool_result: bool = False) -> str:
    _an_type(isinstance(b, dict), path, "dictionary")
    t = b.get("type")
    known = list(_AN_BLOCK_KEYS) + list(_AN_LOOSE_BLOCKS)
    if t not in known:
        tags = ", ".join(f"'{x}'" for x in known)
        raise _an_err(f"{path}: Input tag '{t}' found using 'type' does not match any of the expected tags: {tags}")
    if t in _AN_LOOSE_BLOCKS:
        return t
    _an_keys(b, _AN_BLOCK_KEYS[t], f"{path}.{t}")
    if t == "text":
        _an_req(b, "text", f"{path}.text")
        _an_type(isinstance(b["text"], str), f"{path}.text.text", "string")
        if not b["text"]:
            raise _an_err("messages: text content blocks must be non-empty")
    elif t in ("image", "document"):
        _an_req(b, "source", f"{path}.{t}")
        _an_source(b["source"], f"{path}.{t}.source", t)
    elif in_tool_result:
        raise _an_err(f"{path}: Input tag '{t}' found using 'type' is not allowed in tool_result content")
    elif t == "tool_use":
        for k in ("id", "name", "input"):
            _an_req(b, k, f"{path}.tool_use")
        if not isinstance(b["id"], str) or not _AN_ID.match(b["id"]):
            raise _an_err(f"{path}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        _an_type(isinstance(b["name"], str), f"{path}.tool_use.name", "string")
        _an_type(isinstance(b["input"], dict), f"{path}.tool_use.input", "dictionary")
        if role != "assistant":
            raise _an_err(f"{path}: tool_use blocks can only appear in assistant messages")
    elif t == "tool_result":
        _an_req(b, "tool_use_id", f"{path}.tool_result")
        if not isinstance(b["tool_use_id"], str) or not _AN_ID.match(b["tool_use_id"]):
            raise _an_err(f"{path}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        if "is_error" in b:
            _an_type(isinstance(b["is_error"], bool), f"{path}.tool_result.is_error", "boolean")
        c = b.get("content")
        if c is not None and not isinstance(c, str):
            _an_type(isinstance(c, list), f"{path}.tool_result.content", "list")
            for j, cb in enumerate(c):
                _an_block(cb, f"{path}.tool_result.content.{j}", role, in_tool_result=True)
        if role != "user":
            raise _an_err(f"{path}: tool_result blocks can only appear in user messages")
    elif t == "thinking":
        _an_req(b, "thinking", f"{path}.thinking")
        _an_req(b, "signature", f"{path}.thinking")
    elif t == "redacted_thinking":
        _an_req(b, "data", f"{path}.redacted_thinking")
    return t


def _an_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _an_validate(body: dict) -> Conv:
    _an_keys(body, _AN_TOP, "")
    for k in ("model", "max_tokens", "messages"):
        _an_req(body, k, "")
    _an_type(isinstance(body["model"], str), "model", "string")
    mt = body["max_tokens"]
    _an_type(is_int(mt), "max_tokens", "integer")
    if mt < 1:
        raise _an_err("max_tokens: Input should be greater than or equal to 1")
    for k, hi in (("temperature", 1.0), ("top_p", 1.0)):
        if k in body:
            _an_type(is_num(body[k]), k, "number")
            if body[k] < 0:
                raise _an_err(f"{k}: Input should be greater than or equal to 0")
            if body[k] > hi:
                raise _an_err(f"{k}: Input should be less than or equal to {hi:g}")
    if "top_k" in body:
        _an_type(is_int(body["top_k"]), "top_k", "integer")
    if "stream" in body:
        _an_type(isinstance(body["stream"], bool), "stream", "boolean")
    stops: list[str] = []
    if "stop_sequences" in body:
        ss = body["stop_sequences"]
        _an_type(isinstance(ss, list) and all(isinstance(s, str) for s in ss), "stop_sequences", "list")
        stops = list(ss)
    if "metadata" in body:
        _an_type(isinstance(body["metadata"], dict), "metadata", "dictionary")
        _an_keys(body["metadata"], {"user_id"}, "metadata")
    if "system" in body:
        s = body["system"]
        if not isinstance(s, str):
            _an_type(isinstance(s, list), "system", "string")
            for j, b in enumerate(s):
                _an_type(isinstance(b, dict), f"system.{j}", "dictionary")
                if b.get("type") != "text":
                    raise _an_err(f"system.{j}.type: Input should be 'text'")
                _an_block(b, f"system.{j}", "system")
    if "thinking" in body:
        th = body["thinking"]
        _an_type(isinstance(th, dict), "thinking", "dictionary")
        tt = th.get("type")
        if tt == "enabled":
            _an_keys(th, {"type", "budget_tokens", "display"}, "thinking.enabled")
            _an_req(th, "budget_tokens", "thinking.enabled")
            if not is_int(th["budget_tokens"]) or th["budget_tokens"] < 1024:
                raise _an_err("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if th["budget_tokens"] >= mt:
                raise _an_err("`max_tokens` must be greater than `thinking.budget_tokens`")
        elif tt == "disabled":
            _an_keys(th, {"type"}, "thinking.disabled")
        elif tt == "adaptive":
            _an_keys(th, {"type", "display"}, "thinking.adaptive")
        else:
            raise _an_err(
                f"thinking: Input tag '{tt}' found using 'type' does not match any of the expected tags: "
                "'enabled', 'disabled', 'adaptive'"
            )
    if "output_config" in body:
        oc = body["output_config"]
        _an_type(isinstance(oc, dict), "output_config", "dictionary")
        _an_keys(oc, {"effort", "format"}, "output_config")
        if oc.get("format") is not None:
            _an_keys(oc["format"], {"type", "schema"}, "output_config.format")

    tool_names: list[str] = []
    if "tools" in body:
        tools = body["tools"]
        _an_type(isinstance(tools, list), "tools", "list")
        for i, t in enumerate(tools):
            _an_type(isinstance(t, dict), f"tools.{i}", "dictionary")
            if t.get("type") not in (None, "custom"):
                _an_req(t, "name", f"tools.{i}")  # server / versioned tool: not validated further
                continue
            p = f"tools.{i}.custom"
            _an_keys(
                t,
                {"name", "input_schema", "description", "cache_control", "defer_loading", "eager_input_streaming",
                 "input_examples", "strict", "type", "allowed_callers"},
                p,
            )  # fmt: skip
            _an_req(t, "name", p)
            _an_req(t, "input_schema", p)
            if not isinstance(t["name"], str) or not _AN_TOOL_NAME.match(t["name"]):
                raise _an_err(f"{p}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
            _an_type(isinstance(t["input_schema"], dict), f"{p}.input_schema", "dictionary")
            if t["input_schema"].get("type") != "object":
                raise _an_err(f"{p}.input_schema.type: Input should be 'object'")
            if "description" in t:
                _an_type(isinstance(t["description"], str), f"{p}.description", "string")
            tool_names.append(t["name"])
    if "tool_choice" in body:
        tc = body["tool_choice"]
        _an_type(isinstance(tc, dict), "tool_choice", "dictionary")
        tct = tc.get("type")
        allowed = {
            "auto": {"type", "disable_parallel_tool_use"},
            "any": {"type", "disable_parallel_tool_use"},
            "tool": {"type", "name", "disable_parallel_tool_use"},
            "none": {"type"},
        }
        if tct not in allowed:
            raise _an_err(
                f"tool_choice: Input tag '{tct}' found using 'type' does not match any of the expected tags: "
                "'auto', 'any', 'tool', 'none'"
            )
        _an_keys(tc, allowed[tct], f"tool_choice.{tct}")
        if tct == "tool":
            _an_req(tc, "name", "tool_choice.tool")
        if tct == "none":
            tool_names = []

    msgs = body["messages"]
    _an_type(isinstance(msgs, list), "messages", "list")
    if not msgs:
        raise _an_err("messages: at least one message is required")
    for i, m in enumerate(msgs):
        p = f"messages.{i}"
        _an_type(isinstance(m, dict), p, "dictionary")
        role = m.get("role")
        if role == "system":
            raise _an_err(
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        _an_req(m, "role", p)
        if role not in ("user", "assistant"):
            raise _an_err(f"{p}.role: Input should be 'user' or 'assistant'")
        _an_keys(m, {"role", "content"}, p)
        _an_req(m, "content", p)
        c = m["content"]
        last = i == len(msgs) - 1
        if isinstance(c, str):
            if not c and not (last and role == "assistant"):
                raise _an_err("messages: text content blocks must be non-empty")
            continue
        _an_type(isinstance(c, list), f"{p}.content", "list")
        if not c and not (last and role == "assistant"):
            raise _an_err(
                f"messages.{i}: all messages must have non-empty content except for the optional final assistant "
                "message"
            )
        for j, b in enumerate(c):
            _an_block(b, f"{p}.content.{j}", role)
    last_m = msgs[-1]
    if last_m["role"] == "assistant":
        txt = _an_text(last_m["content"])
        if txt and txt != txt.rstrip():
            raise _an_err("final assistant content cannot end with trailing whitespace")

    # tool_use / tool_result pairing
    for i, m in enumerate(msgs):
        blocks = m["content"] if isinstance(m["content"], list) else []
        if m["role"] == "assistant":
            ids = [b["id"] for b in blocks if b.get("type") == "tool_use"]
            if not ids:
                continue
            nxt = msgs[i + 1] if i + 1 < len(msgs) else None
            nblocks = nxt["content"] if nxt and isinstance(nxt["content"], list) else []
            got = {b.get("tool_use_id") for b in nblocks if b.get("type") == "tool_result"} if nxt else set()
            missing = [x for x in ids if x not in got]
            if missing:
                raise _an_err(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in "
                    "the next message."
                )
        else:
            results = [(j, b) for j, b in enumerate(blocks) if b.get("type") == "tool_result"]
            if not results:
                continue
            prev = msgs[i - 1] if i > 0 else None
            prev_ids = (
                {b["id"] for b in prev["content"] if b.get("type") == "tool_use"}
                if prev and prev["role"] == "assistant" and isinstance(prev["content"], list)
                else set()
            )
            for j, b in results:
                if b["tool_use_id"] not in prev_ids:
                    raise _an_err(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{b['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` block in "
                        "the previous message."
                    )
            seen_other = False
            for j, b in enumerate(blocks):
                if b.get("type") != "tool_result":
                    seen_other = True
                elif seen_other:
                    raise _an_err(
                        f"messages.{i}.content.{j}: tool_result blocks must come first in the user message content, "
                        "before any other content"
                    )

    conv = Conv(model=body["model"], stream=bool(body.get("stream")), tool_names=tool_names, stop_sequences=stops)
    _an_features(body, msgs, conv)
    for m in reversed(msgs):
        if m["role"] == "user":
            t = _an_text(m["content"])
            if t:
                conv.last_user_text = t
                break
    if last_m["role"] == "user" and isinstance(last_m["content"], list):
        results = [b for b in last_m["content"] if b.get("type") == "tool_result"]
        if results:
            conv.tool_results = [_an_text(b.get("content")) for b in results]
    return conv


def _an_features(body: dict, msgs: list, conv: Conv) -> None:
    """Thinking (and its replay rules), structured output, effort and a forced tool, checked like the API does."""
    th = body.get("thinking")
    conv.thinking = isinstance(th, dict) and th.get("type") in ("enabled", "adaptive")
    if conv.thinking:
        for k in ("temperature", "top_k"):
            if k in body and body[k] != 1:
                raise _an_err(f"`{k}` may only be set to 1 when thinking is enabled or in adaptive mode.")
    oc = body.get("output_config") or {}
    if oc.get("effort") is not None and oc["effort"] not in ("low", "medium", "high", "xhigh", "max"):
        raise _an_err("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
    fmt = oc.get("format")
    if fmt is not None:
        if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise _an_err("output_config.format: a json_schema format with a schema object is required")
        _an_check_schema(fmt["schema"], "schema")
        conv.json, conv.json_schema = True, fmt["schema"]
    tc = body.get("tool_choice")
    if isinstance(tc, dict) and tc.get("type") == "tool":
        conv.forced_tool = tc.get("name")
    for i, m in enumerate(msgs):
        for j, b in enumerate(m["content"] if isinstance(m["content"], list) else []):
            if b.get("type") == "thinking" and b.get("signature") not in ANTHROPIC_THINKING_SIGNATURES:
                raise _an_err(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
    last = msgs[-1]
    in_tool_loop = last["role"] == "user" and isinstance(last["content"], list)
    in_tool_loop = in_tool_loop and any(b.get("type") == "tool_result" for b in last["content"])
    if conv.thinking and in_tool_loop and len(msgs) > 1:
        i = len(msgs) - 2
        content = msgs[i]["content"]
        first = content[0].get("type") if isinstance(content, list) and content else "text"
        if first not in ("thinking", "redacted_thinking"):
            raise _an_err(
                f"messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When "
                "`thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
                "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
                "previous turns. To avoid this requirement, disable `thinking`."
            )


@functools.cache
def _sdk_adapter(endpoint: str, stream: bool) -> TypeAdapter[Any]:
    if endpoint == "count_tokens":
        return TypeAdapter(message_count_tokens_params.MessageCountTokensParams)
    p = message_create_params
    return TypeAdapter(p.MessageCreateParamsStreaming if stream else p.MessageCreateParamsNonStreaming)


def _sdk_validate(endpoint: str, body: dict) -> None:
    """The official SDK's request type, strict (no "5" for 5): types, literals, required fields, every content block by
    type. TypedDicts ignore unknown keys (the checks above refuse them), so the sampling parameters the API still takes
    but the installed SDK dropped (temperature, top_p, top_k) pass here and are range-checked above."""
    stream = body.get("stream") is True
    if endpoint == "count_tokens":
        name = "message_count_tokens_params.MessageCountTokensParams"
    else:
        name = "MessageCreateParamsStreaming" if stream else "MessageCreateParamsNonStreaming"
    try:
        check_sdk_types(lambda: _sdk_adapter(endpoint, stream).validate_python(body, strict=True), name)
    except SdkTypeError as e:
        raise _an_err(f"{e.loc}: {e.message} (anthropic.types.{e.type_name})") from None


# --------------------------------------------------------------------------------------------------------------
# the API

_AN_ERR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}  # fmt: skip


def magic_error(status: int, model: str) -> ApiError:
    """What Anthropic answers with this status (the ERROR <status> magic word)."""
    headers = {"retry-after": "7"} if status == 429 else {}
    msgs = {
        400: "Invalid request (mock ERROR 400).",
        401: "invalid x-api-key",
        403: "Your API key does not have permission to use the specified resource.",
        404: f"model: {model}",
        413: "Request exceeds the maximum allowed number of bytes.",
        429: "Number of request tokens has exceeded your per-minute rate limit.",
        500: "Internal server error",
        529: "Overloaded",
    }
    return ApiError(status, msgs.get(status, f"mock error {status}"), headers=headers)


def _stop(ans: Answer) -> tuple[str, str | None]:
    if ans.finish == "stop_sequence":
        return "stop_sequence", "END"
    return {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use", "refusal": "refusal"}[ans.finish], None


class AnthropicApi(ProviderApi):
    kind = "anthropic"
    stop_sequence_finish = True

    def route(self, method: str, path: str) -> str:
        if method == "POST" and path == "/v1/messages":
            return "messages"
        if method == "POST" and path == "/v1/messages/count_tokens":
            return "count_tokens"
        raise ApiError(404, "Not Found", etype="not_found_error")

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        # Today's Anthropic API (and SDK) also takes the key as "Authorization: Bearer <key>": only that exact value is
        # allowed; any other Authorization header is someone else's credential.
        reject_foreign_credentials(
            headers, ("authorization", "x-goog-api-key", "api-key"), {"authorization": f"Bearer {api_key}"}
        )
        if "key" in query:
            raise ApiError(400, "foreign credential header key (query parameter)")
        key = headers.get("x-api-key")
        if not key and headers.get("authorization") == f"Bearer {api_key}":
            key = api_key
        if not key:
            raise ApiError(401, "x-api-key header is required", etype="authentication_error")
        if key != api_key:
            raise ApiError(401, "invalid x-api-key", etype="authentication_error")
        ver = headers.get("anthropic-version")
        if not ver:
            raise ApiError(400, "anthropic-version: header is required", etype="invalid_request_error")
        if ver not in _AN_VERSIONS:
            raise ApiError(400, f"anthropic-version: invalid version '{ver}'", etype="invalid_request_error")

    def bad_json(self) -> ApiError:
        return ApiError(400, "There was an error parsing the body of your request.", etype="invalid_request_error")

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        if endpoint == "count_tokens":
            _an_keys(body, _AN_TOP - {"max_tokens", "stream", "temperature", "top_p", "top_k"}, "")
            _an_req(body, "model", "")
            _an_req(body, "messages", "")
            conv = Conv(model=body["model"], stream=False, count_tokens=True)
        else:
            conv = _an_validate(body)
        _sdk_validate(endpoint, body)
        if endpoint != "count_tokens":
            model_rules.check_anthropic(body)
        return conv

    def error_body(self, e: ApiError, seq: int) -> dict:
        etype = e.etype or _AN_ERR_TYPES.get(e.status) or ("api_error" if e.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": etype, "message": e.message}, "request_id": f"req_mock{seq:06d}"}

    def magic_error(self, status: int, model: str) -> ApiError:
        return magic_error(status, model)

    def id_headers(self, seq: int) -> dict[str, str]:
        return {"request-id": f"req_mock{seq:06d}"}

    def count_tokens_body(self) -> dict:
        return {"input_tokens": COUNT_TOKENS}

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        content: list[dict] = []
        if ans.thinking:
            sig = ANTHROPIC_THINKING_SIGNATURES[0]
            content.append({"type": "thinking", "thinking": THINKING_TEXT, "signature": sig})
        if ans.text is not None:
            content.append({"type": "text", "text": ans.text})
        for i, (name, args) in enumerate(ans.calls):
            content.append({"type": "tool_use", "id": f"toolu_mock_{i + 1}", "name": name, "input": args})
        stop_reason, stop_seq = _stop(ans)
        details = {"output_tokens_details": {"thinking_tokens": REASONING_TOKENS}} if ans.thinking else {}
        return {
            "id": f"msg_mock{seq:06d}",
            "type": "message",
            "role": "assistant",
            "model": conv.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_seq,
            "usage": {
                "input_tokens": USAGE_IN,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": USAGE_OUT,
                "service_tier": "standard",
                **details,
            },
        }

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        def ev(obj: dict) -> bytes:
            return b"event: " + obj["type"].encode() + b"\ndata: " + dumps(obj) + b"\n\n"

        start = {
            "type": "message_start",
            "message": {
                "id": f"msg_mock{seq:06d}",
                "type": "message",
                "role": "assistant",
                "model": conv.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": USAGE_IN,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        }
        out = [ev(start), ev({"type": "ping"})]
        idx = 0
        if ans.thinking:
            block = {"type": "thinking", "thinking": "", "signature": ""}
            out.append(ev({"type": "content_block_start", "index": idx, "content_block": block}))
            for piece in split(THINKING_TEXT, 2):
                delta = {"type": "thinking_delta", "thinking": piece}
                out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            delta = {"type": "signature_delta", "signature": ANTHROPIC_THINKING_SIGNATURES[0]}
            out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        if ans.text is not None:
            out.append(ev({"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}}))
            for piece in split(ans.text, 4):
                out.append(
                    ev({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": piece}})
                )
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        for i, (name, args) in enumerate(ans.calls):
            block = {"type": "tool_use", "id": f"toolu_mock_{i + 1}", "name": name, "input": {}}
            out.append(ev({"type": "content_block_start", "index": idx, "content_block": block}))
            for frag in ["", *split(dumps(args).decode(), 3)]:
                delta = {"type": "input_json_delta", "partial_json": frag}
                out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        stop_reason, stop_seq = _stop(ans)
        out.append(
            ev({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_seq},
                "usage": {"output_tokens": USAGE_OUT, **(
                    {"output_tokens_details": {"thinking_tokens": REASONING_TOKENS}} if ans.thinking else {}
                )},
            })
        )  # fmt: skip
        out.append(ev({"type": "message_stop"}))
        return out

    def stream_error_event(self) -> bytes:
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded (mock STREAMERROR)"}}
        return b"event: error\ndata: " + dumps(body) + b"\n\n"

    def first_text_event(self, events: list[bytes]) -> int:
        return next((i for i, ev in enumerate(events) if b'"text_delta"' in ev), min(1, len(events) - 1))
