"""The OpenAI Chat Completions mock: POST /v1/chat/completions, Bearer key, OpenAI's error envelope.

Requests are checked twice: by hand-written checks that mirror the real API (its messages, unknown fields refused, the
field combinations and tool-call pairing it refuses), then against the official SDK's own request types
(``openai.types.chat.completion_create_params.CompletionCreateParams{Streaming,NonStreaming}``, strict).
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any

from openai.types.chat import completion_create_params
from pydantic import TypeAdapter

from tests.mocks import model_rules
from tests.mocks.server import (
    REASONING_TOKENS,
    USAGE_IN,
    USAGE_OUT,
    Answer,
    ApiError,
    Conv,
    ProviderApi,
    Received,
    SdkTypeError,
    check_sdk_types,
    dumps,
    is_int,
    is_num,
    reject_foreign_credentials,
    split,
)

# --------------------------------------------------------------------------------------------------------------
# Chat Completions validation (openai/types/chat/completion_create_params.py and chat_completion_*_param.py)

_OA_TOP = {
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "messages", "metadata", "modalities", "model", "moderation", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options",
}  # fmt: skip
_OA_MSG_KEYS = {
    "system": {"role", "content", "name"},
    "developer": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "refusal", "tool_calls", "function_call", "audio"},
    "tool": {"role", "content", "tool_call_id"},
    "function": {"role", "content", "name"},
}
_OA_PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
_OA_PART_KEYS = {
    "text": {"type", "text", "prompt_cache_breakpoint"},
    "image_url": {"type", "image_url", "prompt_cache_breakpoint"},
    "input_audio": {"type", "input_audio", "prompt_cache_breakpoint"},
    "file": {"type", "file", "prompt_cache_breakpoint"},
    "refusal": {"type", "refusal"},
}
_OA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _oa_tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a decimal"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _oa_err(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, etype="invalid_request_error", param=param, code=code)


def _oa_type(v: Any, ok: bool, param: str, expected: str) -> None:
    if not ok:
        raise _oa_err(
            f"Invalid type for '{param}': expected {expected}, but got {_oa_tname(v)} instead.", param, "invalid_type"
        )


def _oa_keys(obj: dict, allowed: set[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            raise _oa_err(f"Additional properties are not allowed ('{k}' was unexpected) - '{path}'", path)


def _oa_required(obj: dict, key: str, path: str) -> None:
    if key not in obj:
        p = f"{path}.{key}" if path else key
        raise _oa_err(f"Missing required parameter: '{p}'.", p, "missing_required_parameter")


def _oa_enum(v: Any, allowed: tuple[str, ...], param: str) -> None:
    if v not in allowed:
        quoted = [f"'{a}'" for a in allowed]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
        raise _oa_err(f"Invalid value: '{v}'. Supported values are: {listed}.", param, "invalid_value")


def _oa_range(body: dict, key: str, lo: float, hi: float) -> None:
    if key not in body or body[key] is None:
        return
    v = body[key]
    _oa_type(v, is_num(v), key, "a decimal")
    if v < lo:
        raise _oa_err(
            f"Invalid '{key}': decimal below minimum value. Expected a value >= {lo:g}, but got {v} instead.",
            key,
            "decimal_below_min_value",
        )
    if v > hi:
        raise _oa_err(
            f"Invalid '{key}': decimal above maximum value. Expected a value <= {hi:g}, but got {v} instead.",
            key,
            "decimal_above_max_value",
        )


def _oa_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _oa_content(msg: dict, role: str, path: str, required: bool) -> None:
    if "content" not in msg:
        if required:
            _oa_required(msg, "content", path)
        return
    c = msg["content"]
    p = f"{path}.content"
    if c is None:
        if role in ("assistant", "function"):
            return
        raise _oa_err(f"Invalid type for '{p}': expected one of a string or array of objects, but got null instead.", p)
    if isinstance(c, str):
        return
    _oa_type(c, isinstance(c, list), p, "one of a string or array of objects")
    if not c and role != "assistant":
        raise _oa_err(
            f"Invalid '{p}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            p,
            "empty_array",
        )
    for j, part in enumerate(c):
        pp = f"{p}[{j}]"
        _oa_type(part, isinstance(part, dict), pp, "an object")
        _oa_required(part, "type", pp)
        _oa_enum(part["type"], _OA_PART_TYPES[role], f"{pp}.type")
        t = part["type"]
        _oa_keys(part, _OA_PART_KEYS[t], pp)
        if t == "text":
            _oa_required(part, "text", pp)
            _oa_type(part["text"], isinstance(part["text"], str), f"{pp}.text", "a string")
        elif t == "refusal":
            _oa_required(part, "refusal", pp)
        elif t == "image_url":
            _oa_required(part, "image_url", pp)
            iu = part["image_url"]
            _oa_type(iu, isinstance(iu, dict), f"{pp}.image_url", "an object")
            _oa_keys(iu, {"url", "detail"}, f"{pp}.image_url")
            _oa_required(iu, "url", f"{pp}.image_url")
            _oa_type(iu["url"], isinstance(iu["url"], str), f"{pp}.image_url.url", "a string")
            if "detail" in iu:
                _oa_enum(iu["detail"], ("auto", "low", "high", "original"), f"{pp}.image_url.detail")
        elif t == "input_audio":
            _oa_required(part, "input_audio", pp)
            ia = part["input_audio"]
            _oa_type(ia, isinstance(ia, dict), f"{pp}.input_audio", "an object")
            _oa_keys(ia, {"data", "format"}, f"{pp}.input_audio")
            _oa_required(ia, "data", f"{pp}.input_audio")
            _oa_required(ia, "format", f"{pp}.input_audio")
            _oa_enum(ia["format"], ("wav", "mp3"), f"{pp}.input_audio.format")
        elif t == "file":
            _oa_required(part, "file", pp)
            f = part["file"]
            _oa_type(f, isinstance(f, dict), f"{pp}.file", "an object")
            _oa_keys(f, {"file_data", "file_id", "filename"}, f"{pp}.file")


def _oa_tool_calls(calls: Any, path: str) -> list[str]:
    _oa_type(calls, isinstance(calls, list), path, "an array")
    ids = []
    for j, tc in enumerate(calls):
        p = f"{path}[{j}]"
        _oa_type(tc, isinstance(tc, dict), p, "an object")
        _oa_required(tc, "type", p)
        _oa_enum(tc["type"], ("function", "custom"), f"{p}.type")
        _oa_required(tc, "id", p)
        _oa_type(tc["id"], isinstance(tc["id"], str), f"{p}.id", "a string")
        ids.append(tc["id"])
        if tc["type"] == "function":
            _oa_keys(tc, {"id", "type", "function"}, p)
            _oa_required(tc, "function", p)
            fn = tc["function"]
            _oa_type(fn, isinstance(fn, dict), f"{p}.function", "an object")
            _oa_keys(fn, {"name", "arguments"}, f"{p}.function")
            _oa_required(fn, "name", f"{p}.function")
            _oa_required(fn, "arguments", f"{p}.function")
            _oa_type(fn["name"], isinstance(fn["name"], str), f"{p}.function.name", "a string")
            _oa_type(fn["arguments"], isinstance(fn["arguments"], str), f"{p}.function.arguments", "a string")
        else:
            _oa_keys(tc, {"id", "type", "custom"}, p)
            _oa_required(tc, "custom", p)
            _oa_keys(tc["custom"], {"name", "input"}, f"{p}.custom")
    return ids


def _oa_tools(tools: Any) -> list[str]:
    _oa_type(tools, isinstance(tools, list), "tools", "an array")
    names = []
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        _oa_type(t, isinstance(t, dict), p, "an object")
        _oa_required(t, "type", p)
        _oa_enum(t["type"], ("function", "custom"), f"{p}.type")
        if t["type"] == "function":
            _oa_keys(t, {"type", "function"}, f"tools.{i}")
            _oa_required(t, "function", p)
            fn = t["function"]
            _oa_type(fn, isinstance(fn, dict), f"{p}.function", "an object")
            _oa_keys(fn, {"name", "description", "parameters", "strict"}, f"tools.{i}.function")
            _oa_required(fn, "name", f"{p}.function")
            name = fn["name"]
            if not isinstance(name, str) or not _OA_NAME.match(name):
                raise _oa_err(
                    f"Invalid '{p}.function.name': string does not match pattern. Expected a string that matches "
                    "the pattern '^[a-zA-Z0-9_-]+$'.",
                    f"{p}.function.name",
                    "invalid_value",
                )
            if "parameters" in fn:
                _oa_type(fn["parameters"], isinstance(fn["parameters"], dict), f"{p}.function.parameters", "an object")
            names.append(name)
        else:
            _oa_keys(t, {"type", "custom"}, f"tools.{i}")
            _oa_required(t, "custom", p)
            _oa_keys(t["custom"], {"name", "description", "format"}, f"tools.{i}.custom")
    return names


def _oa_validate(body: dict) -> Conv:
    for k in body:
        if k not in _OA_TOP:
            raise _oa_err(f"Unrecognized request argument supplied: {k}")
    if "model" not in body:
        raise _oa_err("you must provide a model parameter")
    _oa_type(body["model"], isinstance(body["model"], str), "model", "a string")
    _oa_required(body, "messages", "")
    msgs = body["messages"]
    _oa_type(msgs, isinstance(msgs, list), "messages", "an array")
    if not msgs:
        raise _oa_err(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    stream = body.get("stream")
    if stream is not None:
        _oa_type(stream, isinstance(stream, bool), "stream", "a boolean")
    so = body.get("stream_options")
    if so is not None:
        if not stream:
            raise _oa_err("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
        _oa_type(so, isinstance(so, dict), "stream_options", "an object")
        _oa_keys(so, {"include_usage", "include_obfuscation"}, "stream_options")
    _oa_range(body, "temperature", 0, 2)
    _oa_range(body, "top_p", 0, 1)
    _oa_range(body, "presence_penalty", -2, 2)
    _oa_range(body, "frequency_penalty", -2, 2)
    for k in ("max_tokens", "max_completion_tokens", "n"):
        if body.get(k) is not None:
            _oa_type(body[k], is_int(body[k]), k, "an integer")
            if body[k] < 1:
                raise _oa_err(
                    f"Invalid '{k}': integer below minimum value. Expected a value >= 1, but got {body[k]} instead.",
                    k,
                    "integer_below_min_value",
                )
    stop = body.get("stop")
    if stop is not None:
        ok = isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
        _oa_type(stop, ok, "stop", "one of a string or array of strings")
        if isinstance(stop, list) and len(stop) > 4:
            raise _oa_err(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with "
                f"length {len(stop)} instead.",
                "stop",
                "array_above_max_length",
            )
    rf = body.get("response_format")
    if rf is not None:
        _oa_type(rf, isinstance(rf, dict), "response_format", "an object")
        _oa_required(rf, "type", "response_format")
        _oa_enum(rf["type"], ("text", "json_object", "json_schema"), "response_format.type")
        if rf["type"] == "json_schema":
            _oa_keys(rf, {"type", "json_schema"}, "response_format")
            _oa_required(rf, "json_schema", "response_format")
            js = rf["json_schema"]
            _oa_type(js, isinstance(js, dict), "response_format.json_schema", "an object")
            _oa_keys(js, {"name", "description", "schema", "strict"}, "response_format.json_schema")
            _oa_required(js, "name", "response_format.json_schema")
        else:
            _oa_keys(rf, {"type"}, "response_format")

    tool_names: list[str] = []
    if body.get("tools") is not None:
        tool_names = _oa_tools(body["tools"])
    tc = body.get("tool_choice")
    if tc is not None:
        if not body.get("tools"):
            raise _oa_err(
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.",
                "tool_choice",
            )
        if isinstance(tc, str):
            _oa_enum(tc, ("none", "auto", "required"), "tool_choice")
        else:
            _oa_type(tc, isinstance(tc, dict), "tool_choice", "one of a string or object")
            _oa_required(tc, "type", "tool_choice")
            _oa_enum(tc["type"], ("function", "custom", "allowed_tools"), "tool_choice.type")
            if tc["type"] == "function":
                _oa_keys(tc, {"type", "function"}, "tool_choice")
                _oa_required(tc, "function", "tool_choice")
                _oa_keys(tc["function"], {"name"}, "tool_choice.function")
    if tc == "none":
        tool_names = []

    # messages + tool-call pairing
    pending: list[str] | None = None  # tool_call ids of the last assistant message still waiting for answers
    answered: set[str] = set()
    prev_calls: list[str] | None = None
    for i, m in enumerate(msgs):
        p = f"messages[{i}]"
        _oa_type(m, isinstance(m, dict), p, "an object")
        _oa_required(m, "role", p)
        role = m["role"]
        _oa_enum(role, ("system", "assistant", "user", "function", "tool", "developer"), f"{p}.role")
        _oa_keys(m, _OA_MSG_KEYS[role], f"messages.{i}")
        if "name" in m:
            _oa_type(m["name"], isinstance(m["name"], str), f"{p}.name", "a string")
        if role == "tool":
            _oa_content(m, role, p, True)
            _oa_required(m, "tool_call_id", p)
            tcid = m["tool_call_id"]
            _oa_type(tcid, isinstance(tcid, str), f"{p}.tool_call_id", "a string")
            if prev_calls is None:
                raise _oa_err(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                    "'tool_calls'.",
                    f"messages.[{i}].role",
                )
            if tcid not in prev_calls:
                raise _oa_err(
                    f"Invalid parameter: 'tool_call_id' of '{tcid}' not found in 'tool_calls' of previous message.",
                    f"messages.[{i}].tool_call_id",
                )
            answered.add(tcid)
            continue
        if pending:
            missing = [x for x in pending if x not in answered]
            if missing:
                raise _oa_err(
                    "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                    f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(missing)}",
                    f"messages.[{i}].role",
                )
        pending, prev_calls, answered = None, None, set()
        if role == "function":
            _oa_required(m, "name", p)
            _oa_content(m, role, p, True)
        elif role == "assistant":
            _oa_content(m, role, p, False)
            if m.get("tool_calls") is not None:
                prev_calls = _oa_tool_calls(m["tool_calls"], f"{p}.tool_calls")
                pending = list(prev_calls)
            if m.get("content") is None and not m.get("tool_calls") and not m.get("function_call"):
                raise _oa_err("Invalid value for 'content': expected a string, got null.", f"messages.[{i}].content")
        else:
            _oa_content(m, role, p, True)
    if pending:
        missing = [x for x in pending if x not in answered]
        if missing:
            raise _oa_err(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(missing)}",
                f"messages.[{len(msgs) - 1}].role",
            )

    conv = Conv(model=body["model"], stream=bool(stream), tool_names=tool_names)
    effort = body.get("reasoning_effort")
    if effort is not None:
        _oa_enum(effort, ("none", "minimal", "low", "medium", "high", "xhigh"), "reasoning_effort")
        conv.thinking = effort != "none"
    if isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"):
        conv.json = True
        conv.json_schema = (rf.get("json_schema") or {}).get("schema")
    if isinstance(tc, dict) and tc.get("type") == "function":
        conv.forced_tool = tc["function"].get("name")
    conv.n = body.get("n") or 1
    conv.include_usage = bool(stream and isinstance(so, dict) and so.get("include_usage"))
    for m in reversed(msgs):
        if m["role"] == "user":
            conv.last_user_text = _oa_text(m.get("content"))
            break
    if msgs[-1]["role"] in ("tool", "function"):
        trailing = []
        for m in reversed(msgs):
            if m["role"] not in ("tool", "function"):
                break
            trailing.append(_oa_text(m.get("content")))
        conv.tool_results = list(reversed(trailing))
    return conv


@functools.cache
def _sdk_adapter(stream: bool) -> TypeAdapter[Any]:
    p = completion_create_params
    return TypeAdapter(p.CompletionCreateParamsStreaming if stream else p.CompletionCreateParamsNonStreaming)


def _sdk_validate(body: dict) -> None:
    """The official SDK's request type for ``chat.completions.create``, strict (no "1" for 1): types, literals,
    required fields, each message and part by role and type. (TypedDicts ignore unknown keys; the checks above refuse
    them.)"""
    stream = body.get("stream") is True
    name = "CompletionCreateParamsStreaming" if stream else "CompletionCreateParamsNonStreaming"
    try:
        check_sdk_types(lambda: _sdk_adapter(stream).validate_python(body, strict=True), name)
    except SdkTypeError as e:
        raise _oa_err(
            f"Invalid value for '{e.loc}': {e.message} (openai.types.chat.completion_create_params.{e.type_name}).",
            e.loc or None,
            "invalid_type",
        ) from None


# --------------------------------------------------------------------------------------------------------------
# the API

_OA_ERR_TYPES = {401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
                 429: "requests"}  # fmt: skip
_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls", "refusal": "content_filter"}


def magic_error(status: int, model: str) -> ApiError:
    """What OpenAI answers with this status (the ERROR <status> magic word)."""
    headers = {"retry-after": "7"} if status == 429 else {}
    msgs = {
        400: ("Invalid request (mock ERROR 400).", "invalid_request_error", None),
        401: ("Incorrect API key provided: sk-mock***. You can find your API key at "
              "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
        403: ("You are not allowed to sample from this model", "invalid_request_error", None),
        404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        429: (f"Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 3, Used "
              "3, Requested 1. Please try again in 7s.", "requests", "rate_limit_exceeded"),
        500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    }  # fmt: skip
    msg, etype, code = msgs.get(status, (f"mock error {status}", None, None))
    return ApiError(status, msg, etype=etype, code=code, headers=headers)


def usage(thinking: bool = False) -> dict:
    return {
        "prompt_tokens": USAGE_IN,
        "completion_tokens": USAGE_OUT,
        "total_tokens": USAGE_IN + USAGE_OUT,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": REASONING_TOKENS if thinking else 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class OpenAIApi(ProviderApi):
    kind = "openai"

    def base_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1"

    def route(self, method: str, path: str) -> str:
        if method != "POST" or path != "/v1/chat/completions":
            raise ApiError(404, f"Invalid URL ({method} {path})", etype="invalid_request_error")
        return "chat"

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        reject_foreign_credentials(headers, ("x-api-key", "x-goog-api-key", "api-key"), {})
        if "key" in query:
            raise ApiError(400, "foreign credential header key (query parameter)")
        auth = headers.get("authorization")
        if not auth:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header using "
                "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
                "if you're accessing the API from your browser and are prompted for a username and password. You "
                "can obtain an API key from https://platform.openai.com/account/api-keys.",
                etype="invalid_request_error",
            )
        if auth != f"Bearer {api_key}":
            shown = auth.removeprefix("Bearer ")
            raise ApiError(
                401,
                f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                etype="invalid_request_error",
                code="invalid_api_key",
            )

    def bad_json(self) -> ApiError:
        return ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
            "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
            "center at help.openai.com.)",
            etype="invalid_request_error",
        )

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        conv = _oa_validate(body)
        _sdk_validate(body)
        model_rules.check_openai(body)
        return conv

    def error_body(self, e: ApiError, seq: int) -> dict:
        etype = (
            e.etype or _OA_ERR_TYPES.get(e.status) or ("server_error" if e.status >= 500 else "invalid_request_error")
        )
        return {"error": {"message": e.message, "type": etype, "param": e.param, "code": e.code}}

    def magic_error(self, status: int, model: str) -> ApiError:
        return magic_error(status, model)

    def id_headers(self, seq: int) -> dict[str, str]:
        return {"x-request-id": f"req_mock{seq:06d}", "openai-processing-ms": "1"}

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": ans.text, "refusal": None, "annotations": []}
        if ans.calls:
            message["tool_calls"] = [
                {"id": f"call_mock_{i + 1}", "type": "function",
                 "function": {"name": name, "arguments": dumps(args).decode()}}
                for i, (name, args) in enumerate(ans.calls)
            ]  # fmt: skip
        finish = _FINISH.get(ans.finish, "stop")
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
        for i in range(1, conv.n):
            extra = {**message, "content": f"{ans.text} (#{i})" if ans.text is not None else None}
            choices.append({"index": i, "message": extra, "logprobs": None, "finish_reason": finish})
        return {
            "id": f"chatcmpl-mock{seq:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": conv.model,
            "choices": choices,
            "usage": usage(ans.thinking),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": f"chatcmpl-mock{seq:06d}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": conv.model,
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if conv.include_usage:
                obj["usage"] = None
            return b"data: " + dumps(obj) + b"\n\n"

        first: dict[str, Any] = {"role": "assistant", "content": "" if ans.text is not None else None, "refusal": None}
        out = [chunk(first)]
        if ans.text is not None:
            out += [chunk({"content": piece}) for piece in split(ans.text, 4)]
        for i, (name, args) in enumerate(ans.calls):
            head = {"index": i, "id": f"call_mock_{i + 1}", "type": "function",
                    "function": {"name": name, "arguments": ""}}  # fmt: skip
            out.append(chunk({"tool_calls": [head]}))
            for frag in split(dumps(args).decode(), 3):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
        out.append(chunk({}, _FINISH.get(ans.finish, "stop")))
        if conv.include_usage:
            last = {
                "id": f"chatcmpl-mock{seq:06d}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": conv.model,
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
                "choices": [],
                "usage": usage(ans.thinking),
            }
            out.append(b"data: " + dumps(last) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    def stream_error_event(self) -> bytes:
        body = {"error": {"message": "The server had an error (mock STREAMERROR)", "type": "server_error",
                          "param": None, "code": None}}  # fmt: skip
        return b"data: " + dumps(body) + b"\n\n"

    def first_text_event(self, events: list[bytes]) -> int:
        return next((i for i, ev in enumerate(events) if re.search(rb'"content":"[^"]', ev)), min(1, len(events) - 1))
