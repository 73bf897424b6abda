"""Strict mock provider servers (OpenAI, Anthropic, Gemini) for the end-to-end tests.

Each MockProvider is a stdlib ThreadingHTTPServer (HTTP/1.1, keep-alive) on 127.0.0.1 in a daemon thread. It
validates requests about as strictly as the real API (field names taken from the installed official SDKs), answers
errors in the provider's real error envelope, and produces deterministic answers driven by the last user text:

    default            text "Hello from mock {kind}. You said: {text}", usage input 11 / output 7
    tools declared     a call to the first declared tool with {"city": "Paris"}; "PARALLEL": + {"city": "Tokyo"}
    tool results turn  text "Tool results: r1 | r2"
    ERROR <status>     that status with the provider's error body (429 adds retry-after: 7; Anthropic 529 overloaded)
    SLEEP <seconds>    sleep before answering
    LENGTH             truncated answer, finish length / max_tokens / MAX_TOKENS
    HTML500            500 with an HTML page
    BADJSON            200 with truncated JSON (streams: one event with truncated JSON data)
    STOPSEQ            Anthropic stop_reason "stop_sequence", stop_sequence "END"
    SLOWSTREAM         0.3 s between stream events
    DROPSTREAM         2 stream events, then the connection is closed without a terminator
    LONGSTREAM         events spread over 8 s in all (longer than the tests' 6 s gateway timeout)
    HTML200            200 with an HTML page instead of JSON
    HUGE               a 200 KB text answer
    STREAMERROR        2 stream events, then the provider's own in-stream error event (overloaded), clean end
    REFUSE             a refusal: finish content_filter / stop_reason refusal / finishReason SAFETY

Request features drive the answer too, as they would on the real APIs:

    reasoning on       (OpenAI reasoning_effort, Anthropic thinking enabled/adaptive, Gemini includeThoughts)
                       Anthropic: a thinking block with a signature from ANTHROPIC_THINKING_SIGNATURES first, and the
                       next turn of a tool loop must replay it unchanged (else 400, like the API); Gemini: a thought
                       part first; usage reports reasoning tokens (OpenAI reasoning_tokens, Anthropic
                       output_tokens_details.thinking_tokens, Gemini thoughtsTokenCount) of REASONING_TOKENS
    JSON output        (response_format json_object/json_schema, output_config.format, responseMimeType JSON)
                       text is a JSON value built from the schema ({"answer": "mock"} without one)
    a named tool       (tool_choice function/tool, Gemini ANY with one allowedFunctionNames) is the one called
    n / candidateCount several choices / candidates ("Hello ..." + " (#i)" for i > 0)
    count_tokens       Anthropic POST /v1/messages/count_tokens -> {"input_tokens": 5}; Gemini :countTokens ->
                       {"totalTokens": 5}
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = ["ANTHROPIC_THINKING_SIGNATURES", "GEMINI_THOUGHT_SIGNATURES", "MockProvider", "Received"]

USAGE_IN = 11
USAGE_OUT = 7
# base64("sig-mock-1"), base64("sig-mock-2"): the signatures the Gemini mock puts on its functionCall parts.
GEMINI_THOUGHT_SIGNATURES = ("c2lnLW1vY2stMQ==", "c2lnLW1vY2stMg==")
# Values Google documents for histories that never saw a real signature (validation is skipped for them).
# Anthropic thinking signatures: standard base64 with "+" and "/" so that a URL-safe re-encoding is caught.
ANTHROPIC_THINKING_SIGNATURES = ("EqQB+mock/sig+01", "EqQB+mock/sig+02")
REASONING_TOKENS = 3
COUNT_TOKENS = 5
_THINKING_TEXT = "Let me think about this."
_GEMINI_SKIP_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")
_LONG_STREAM_SECONDS = 8.0
_SLOW_STREAM_DELAY = 0.3


@dataclass
class Received:
    """One request exactly as the mock received it."""

    method: str
    path: str  # including the query string
    headers: dict[str, str]  # lower-case names
    body: dict | None
    raw: bytes
    status: int | None = None  # status the mock answered
    stream_started_at: float | None = None  # time.monotonic() when the first stream event was written
    stream_finished_at: float | None = None  # time.monotonic() after the last event (or the drop)
    thought_signatures: list[str] = field(default_factory=list)  # Gemini: thoughtSignature values of the request


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        etype: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: list | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.details = details


@dataclass
class _Conv:
    """What the validator extracted from a request: enough to decide the answer."""

    model: str
    stream: bool
    include_usage: bool = False
    last_user_text: str = ""
    tool_results: list[str] | None = None  # set when the last user turn carries tool results
    tool_names: list[str] = field(default_factory=list)  # declared function tools (empty if tool choice is none)
    stop_sequences: list[str] = field(default_factory=list)
    sse: bool = True  # Gemini streams: SSE framing (?alt=sse) or one JSON array
    thinking: bool = False  # reasoning asked for
    json_schema: dict | None = None  # structured output schema
    json: bool = False  # JSON output asked for
    forced_tool: str | None = None  # the tool the request forces
    n: int = 1  # candidates asked for
    count_tokens: bool = False


@dataclass
class _Answer:
    text: str | None
    calls: list[tuple[str, dict]]
    finish: str  # stop | length | tool | stop_sequence | refusal
    thinking: bool = False


def _sample(schema: Any) -> Any:
    """A JSON value that matches a (simple) JSON Schema."""
    if not isinstance(schema, dict):
        return "mock"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _sample(schema[key][0])
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    t = t.lower() if isinstance(t, str) else t
    if t == "object" or "properties" in schema:
        return {k: _sample(v) for k, v in (schema.get("properties") or {}).items()}
    return {"array": [], "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(t, "mock")


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
# small helpers


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _split(s: str, n: int) -> list[str]:
    """Split s into up to n non-empty pieces of similar length."""
    if not s:
        return [s]
    n = max(1, min(n, len(s)))
    size = -(-len(s) // n)
    return [s[i : i + size] for i in range(0, len(s), size)]


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _b64ok(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    t = s.strip()
    try:
        if "-" in t or "_" in t:
            base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
        else:
            base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _camel(k: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), k)


def _snake(k: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", k).lower()


_MAGIC_ERROR = re.compile(r"\bERROR (\d{3})\b")
_MAGIC_SLEEP = re.compile(r"\bSLEEP (\d+(?:\.\d+)?)\b")


def _stream_error_event(kind: str) -> bytes:
    """What each provider sends when it fails after the stream started (e.g. overloaded mid-generation)."""
    if kind == "anthropic":
        body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded (mock STREAMERROR)"}}
        return b"event: error\ndata: " + _dumps(body) + b"\n\n"
    if kind == "openai":
        body = {"error": {"message": "The server had an error (mock STREAMERROR)", "type": "server_error",
                          "param": None, "code": None}}  # fmt: skip
        return b"data: " + _dumps(body) + b"\n\n"
    body = {"error": {"code": 503, "message": "The model is overloaded (mock STREAMERROR)", "status": "UNAVAILABLE"}}
    return b"data: " + _dumps(body) + b"\r\n\r\n"


def _flag(text: str, word: str) -> bool:
    return re.search(rf"\b{word}\b", text) is not None


# --------------------------------------------------------------------------------------------------------------
# OpenAI Chat Completions validation (openai/types/chat/completion_create_params.py and chat_completion_*_param.py)

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
    _oa_type(v, _is_num(v), key, "a decimal")
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


def _oa_validate(body: dict) -> _Conv:
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
            _oa_type(body[k], _is_int(body[k]), k, "an integer")
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

    conv = _Conv(model=body["model"], stream=bool(stream), tool_names=tool_names)
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


# --------------------------------------------------------------------------------------------------------------
# Anthropic Messages validation (anthropic/types/message_create_params.py and *_param.py)

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
        if not _b64ok(src["data"]):
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


def _an_validate(body: dict) -> _Conv:
    _an_keys(body, _AN_TOP, "")
    for k in ("model", "max_tokens", "messages"):
        _an_req(body, k, "")
    _an_type(isinstance(body["model"], str), "model", "string")
    mt = body["max_tokens"]
    _an_type(_is_int(mt), "max_tokens", "integer")
    if mt < 1:
        raise _an_err("max_tokens: Input should be greater than or equal to 1")
    for k, hi in (("temperature", 1.0), ("top_p", 1.0)):
        if k in body:
            _an_type(_is_num(body[k]), k, "number")
            if body[k] < 0:
                raise _an_err(f"{k}: Input should be greater than or equal to 0")
            if body[k] > hi:
                raise _an_err(f"{k}: Input should be less than or equal to {hi:g}")
    if "top_k" in body:
        _an_type(_is_int(body["top_k"]), "top_k", "integer")
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
            if not _is_int(th["budget_tokens"]) or th["budget_tokens"] < 1024:
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

    conv = _Conv(model=body["model"], stream=bool(body.get("stream")), tool_names=tool_names, stop_sequences=stops)
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


def _an_features(body: dict, msgs: list, conv: _Conv) -> None:
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


# --------------------------------------------------------------------------------------------------------------
# Gemini generateContent validation (google/genai/types.py + the _..._to_mldev converters in google/genai/models.py).
# The API parses proto JSON: both lowerCamelCase and snake_case field names are accepted; anything else is
# 'Invalid JSON payload received. Unknown name "x"'.

_GE_TOP = {
    "contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig", "cachedContent",
    "labels", "serviceTier", "store", "continuationToken", "model",
}  # fmt: skip
_GE_GEN = {
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty",
    "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "imageConfig",
    "mediaResolution", "audioTranscriptionConfig",
}  # fmt: skip
_GE_PART = {
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
    "toolCall", "toolResponse", "thought", "thoughtSignature", "videoMetadata", "mediaResolution", "partMetadata",
    "audioTranscription", "mediaProcessing", "speechMetadata", "documentMetadata", "spreadsheetMetadata",
    "audioMetadata",
}  # fmt: skip
_GE_PART_DATA = (
    "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode", "codeExecutionResult",
    "toolCall", "toolResponse",
)  # fmt: skip
_GE_TOOL = {
    "functionDeclarations", "googleSearch", "codeExecution", "urlContext", "googleSearchRetrieval", "fileSearch",
    "computerUse", "googleMaps", "mcpServers",
}  # fmt: skip
_GE_FDECL = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema", "behavior"}
_GE_SCHEMA = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties", "required",
    "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
    "default", "items", "minimum", "maximum", "additionalProperties", "$ref", "$defs", "ref", "defs",
}  # fmt: skip
_GE_TYPES = ("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL")
_GE_FN_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")


def _ge_err(message: str) -> ApiError:
    return ApiError(400, message, etype="INVALID_ARGUMENT")


def _ge_obj(obj: Any, allowed: set[str], path: str) -> dict:
    """Check keys (camelCase or snake_case) and return a copy with camelCase keys."""
    if not isinstance(obj, dict):
        where = f" at '{path}'" if path else ""
        raise _ge_err(f"Invalid JSON payload received. Expected an object{where}, but got {_dumps(obj).decode()}.")
    out = {}
    for k, v in obj.items():
        ck = k if k.startswith("$") else _camel(k)
        if ck not in allowed:
            where = f" at '{path}'" if path else ""
            raise _ge_err(f'Invalid JSON payload received. Unknown name "{k}"{where}: Cannot find field.')
        out[ck] = v
    return out


def _ge_list(v: Any, path: str) -> list:
    if not isinstance(v, list):
        raise _ge_err(f"Invalid JSON payload received. Expected an array at '{path}', but got {_dumps(v).decode()}.")
    return v


def _ge_schema(s: Any, path: str) -> None:
    s = _ge_obj(s, _GE_SCHEMA, path)
    if "type" in s:
        t = s["type"]
        if not isinstance(t, str) or t.upper() not in _GE_TYPES:
            raise _ge_err(
                f"Invalid value at '{path}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "
                f"{_dumps(t).decode()}"
            )
    for k, v in (s.get("properties") or {}).items():
        _ge_schema(v, f"{path}.properties[{k}].value")
    if "items" in s:
        _ge_schema(s["items"], f"{path}.items")
    for j, sub in enumerate(s.get("anyOf") or []):
        _ge_schema(sub, f"{path}.any_of[{j}]")


def _ge_content(c: Any, path: str, system: bool = False) -> dict:
    c = _ge_obj(c, {"role", "parts"}, path)
    role = c.get("role")
    if not system and role not in (None, "", "user", "model"):
        raise _ge_err("Please use a valid role: user, model.")
    parts = _ge_list(c.get("parts", []), f"{path}.parts")
    if not parts:
        raise _ge_err(f"* GenerateContentRequest.{path}.parts: contents.parts must not be empty.\n")
    norm = []
    for j, part in enumerate(parts):
        pp = f"{path}.parts[{j}]"
        part = _ge_obj(part, _GE_PART, pp)
        data = [k for k in _GE_PART_DATA if k in part]
        if not data:
            raise _ge_err(
                f"* GenerateContentRequest.{pp}.data: required oneof field 'data' must have one initialized field\n"
            )
        if len(data) > 1:
            raise _ge_err(
                f"Invalid value at '{pp}' (oneof), oneof field 'data' is already set. Cannot set '{_snake(data[1])}'"
            )
        if "text" in part and not isinstance(part["text"], str):
            raise _ge_err(f"Invalid value at '{pp}.text' (TYPE_STRING), {_dumps(part['text']).decode()}")
        if "inlineData" in part:
            blob = _ge_obj(part["inlineData"], {"mimeType", "data"}, f"{pp}.inline_data")
            if not blob.get("mimeType"):
                raise _ge_err(f"* GenerateContentRequest.{pp}.inline_data.mime_type: mime_type must be set\n")
            if not _b64ok(blob.get("data", "")):
                raise _ge_err(
                    f"Invalid value at '{pp}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for "
                    f"{_dumps(blob.get('data')).decode()[:40]}"
                )
            part["inlineData"] = blob
        if "fileData" in part:
            part["fileData"] = _ge_obj(part["fileData"], {"mimeType", "fileUri"}, f"{pp}.file_data")
            if not part["fileData"].get("fileUri"):
                raise _ge_err(f"* GenerateContentRequest.{pp}.file_data.file_uri: file_uri must be set\n")
        if "functionCall" in part:
            fc = _ge_obj(part["functionCall"], {"id", "name", "args"}, f"{pp}.function_call")
            if not fc.get("name"):
                raise _ge_err(f"* GenerateContentRequest.{pp}.function_call.name: Name cannot be empty.\n")
            if "args" in fc and not isinstance(fc["args"], dict):
                raise _ge_err(
                    f"Invalid value at '{pp}.function_call.args' (type.googleapis.com/google.protobuf.Struct), "
                    f"{_dumps(fc['args']).decode()}"
                )
            part["functionCall"] = fc
        if "functionResponse" in part:
            fr = _ge_obj(
                part["functionResponse"],
                {"id", "name", "response", "parts", "willContinue", "scheduling"},
                f"{pp}.function_response",
            )
            if not fr.get("name"):
                raise _ge_err(f"* GenerateContentRequest.{pp}.function_response.name: Name cannot be empty.\n")
            if "response" in fr and not isinstance(fr["response"], dict):
                raise _ge_err(
                    f"Invalid value at '{pp}.function_response.response' "
                    f"(type.googleapis.com/google.protobuf.Struct), {_dumps(fr['response']).decode()}"
                )
            part["functionResponse"] = fr
        if "thoughtSignature" in part:
            sig = part["thoughtSignature"]
            if not _b64ok(sig):
                raise _ge_err(f"Invalid value at '{pp}.thought_signature' (TYPE_BYTES), Base64 decoding failed")
        norm.append(part)
    c["parts"] = norm
    return c


def _ge_validate(body: dict, model: str, stream: bool, rec: Received) -> _Conv:
    body = _ge_obj(body, _GE_TOP, "")
    if "contents" not in body or not _ge_list(body["contents"], "contents"):
        raise _ge_err("* GenerateContentRequest.contents: contents is not specified\n")
    contents = [_ge_content(c, f"contents[{i}]") for i, c in enumerate(body["contents"])]
    if "systemInstruction" in body:
        _ge_content(body["systemInstruction"], "system_instruction", system=True)
    gc: dict = {}
    if "generationConfig" in body:
        gc = _ge_obj(body["generationConfig"], _GE_GEN, "generation_config")
        for k, lo, hi in (("temperature", 0, 2), ("topP", 0, 1)):
            if k in gc:
                v = gc[k]
                if not _is_num(v):
                    raise _ge_err(
                        f"Invalid value at 'generation_config.{_snake(k)}' (TYPE_FLOAT), {_dumps(v).decode()}"
                    )
                if not lo <= v <= hi:
                    raise _ge_err(
                        f"* GenerateContentRequest.generation_config.{_snake(k)}: {_snake(k)} must be in the range "
                        f"[{lo}, {hi}]\n"
                    )
        for k in ("maxOutputTokens", "topK", "candidateCount", "seed"):
            if k in gc and not _is_int(gc[k]):
                raise _ge_err(
                    f"Invalid value at 'generation_config.{_snake(k)}' (TYPE_INT32), {_dumps(gc[k]).decode()}"
                )
        if "stopSequences" in gc:
            _ge_list(gc["stopSequences"], "generation_config.stop_sequences")
        if "thinkingConfig" in gc:
            _ge_obj(
                gc["thinkingConfig"],
                {"includeThoughts", "thinkingBudget", "thinkingLevel"},
                "generation_config.thinking_config",
            )
        if "responseSchema" in gc:
            _ge_schema(gc["responseSchema"], "generation_config.response_schema")
    tool_names: list[str] = []
    if "tools" in body:
        for i, t in enumerate(_ge_list(body["tools"], "tools")):
            t = _ge_obj(t, _GE_TOOL, f"tools[{i}]")
            for j, fd in enumerate(_ge_list(t.get("functionDeclarations", []), f"tools[{i}].function_declarations")):
                p = f"tools[{i}].function_declarations[{j}]"
                fd = _ge_obj(fd, _GE_FDECL, p)
                name = fd.get("name")
                if not isinstance(name, str) or not _GE_FN_NAME.match(name):
                    raise _ge_err(
                        f"* GenerateContentRequest.{p}.name: Invalid function name. Must start with a letter or an "
                        "underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or "
                        "dashes (-), with a maximum length of 128.\n"
                    )
                if "parameters" in fd and "parametersJsonSchema" in fd:
                    raise _ge_err(
                        f"* GenerateContentRequest.{p}: parameters and parameters_json_schema are mutually exclusive\n"
                    )
                if "parameters" in fd:
                    _ge_schema(fd["parameters"], f"{p}.parameters")
                tool_names.append(name)
    if "toolConfig" in body:
        tc = _ge_obj(
            body["toolConfig"],
            {"functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"},
            "tool_config",
        )
        if "functionCallingConfig" in tc:
            fcc = _ge_obj(
                tc["functionCallingConfig"], {"mode", "allowedFunctionNames"}, "tool_config.function_calling_config"
            )
            mode = fcc.get("mode", "AUTO")
            if mode not in ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"):
                raise _ge_err(
                    "Invalid value at 'tool_config.function_calling_config.mode' "
                    f'(type.googleapis.com/google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"'
                )
            if mode == "NONE":
                tool_names = []
    if "safetySettings" in body:
        for i, s in enumerate(_ge_list(body["safetySettings"], "safety_settings")):
            _ge_obj(s, {"category", "threshold"}, f"safety_settings[{i}]")

    # function call / response pairing
    def fcalls(c: dict) -> list[dict]:
        return [p for p in c["parts"] if "functionCall" in p]

    def fresps(c: dict) -> list[dict]:
        return [p for p in c["parts"] if "functionResponse" in p]

    for i, c in enumerate(contents):
        role = c.get("role") or "user"
        if role == "model" and fcalls(c) and (i == 0 or (contents[i - 1].get("role") or "user") != "user"):
            raise _ge_err(
                "Please ensure that function call turn comes immediately after a user turn or after a function "
                "response turn."
            )
        frs = fresps(c)
        if role == "user" and frs:
            prev = contents[i - 1] if i > 0 else None
            calls = fcalls(prev) if prev and prev.get("role") == "model" else []
            if not calls:
                raise _ge_err("Please ensure that function response turn comes immediately after a function call turn.")
            if len(calls) != len(frs):
                raise _ge_err(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
            for fc, fr in zip(calls, frs, strict=True):
                if fc["functionCall"]["name"] != fr["functionResponse"]["name"]:
                    raise _ge_err(
                        "Please ensure that the name of each function response part matches the name of the "
                        f"function call part at the same position (got '{fr['functionResponse']['name']}', "
                        f"expected '{fc['functionCall']['name']}')."
                    )

    # thought signatures (Gemini 3): the first functionCall part of each model step of the current turn (the
    # contents after the last user message that is not only function responses) must carry its thoughtSignature.
    for c in contents:
        for part in c["parts"]:
            if "thoughtSignature" in part:
                rec.thought_signatures.append(part["thoughtSignature"])
                if part["thoughtSignature"] not in GEMINI_THOUGHT_SIGNATURES + _GEMINI_SKIP_SIGNATURES:
                    raise _ge_err("Corrupted thought signature.")
    start = 0
    for i, c in enumerate(contents):
        if (c.get("role") or "user") == "user" and any("functionResponse" not in p for p in c["parts"]):
            start = i
    for i in range(start, len(contents)):
        c = contents[i]
        calls = fcalls(c) if c.get("role") == "model" else []
        if calls and not calls[0].get("thoughtSignature"):
            raise _ge_err(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to "
                "work correctly, and missing thought_signature may lead to degraded model performance. Additional "
                f"data, function call `default_api:{calls[0]['functionCall']['name']}` , position {i + 1}. Please "
                "refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )

    stops = list(gc.get("stopSequences") or [])
    conv = _Conv(model=model, stream=stream, tool_names=tool_names, stop_sequences=stops)
    tcfg = gc.get("thinkingConfig")
    if isinstance(tcfg, dict):
        tcfg = _ge_obj(tcfg, {"includeThoughts", "thinkingBudget", "thinkingLevel"}, "thinking_config")
        if "thinkingBudget" in tcfg and "thinkingLevel" in tcfg:
            raise _ge_err("thinking_budget and thinking_level are not supported together.")
        conv.thinking = tcfg.get("includeThoughts") is True
    if gc.get("responseMimeType") == "application/json":
        conv.json = True
        conv.json_schema = gc.get("responseJsonSchema") or gc.get("responseSchema")
    conv.n = gc.get("candidateCount") or 1
    if "toolConfig" in body:
        allowed = {"functionCallingConfig", "retrievalConfig", "includeServerSideToolInvocations"}
        fcc = _ge_obj(body["toolConfig"], allowed, "tool_config").get("functionCallingConfig")
        names = (fcc or {}).get("allowedFunctionNames") or (fcc or {}).get("allowed_function_names")
        if (fcc or {}).get("mode") == "ANY" and isinstance(names, list) and len(names) == 1:
            conv.forced_tool = names[0]
    for c in reversed(contents):
        if (c.get("role") or "user") == "user":
            t = "".join(p["text"] for p in c["parts"] if "text" in p)
            if t:
                conv.last_user_text = t
                break
    last = contents[-1]
    if (last.get("role") or "user") == "user" and fresps(last):
        conv.tool_results = [_dumps(p["functionResponse"].get("response", {})).decode() for p in fresps(last)]
    return conv


# --------------------------------------------------------------------------------------------------------------
# error bodies

_OA_ERR_TYPES = {401: "invalid_request_error", 403: "invalid_request_error", 404: "invalid_request_error",
                 429: "requests"}  # fmt: skip
_AN_ERR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}  # fmt: skip
_GE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def _error_body(kind: str, e: ApiError, seq: int) -> dict:
    if kind == "openai":
        etype = (
            e.etype or _OA_ERR_TYPES.get(e.status) or ("server_error" if e.status >= 500 else "invalid_request_error")
        )
        return {"error": {"message": e.message, "type": etype, "param": e.param, "code": e.code}}
    if kind == "anthropic":
        etype = e.etype or _AN_ERR_TYPES.get(e.status) or ("api_error" if e.status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": etype, "message": e.message}, "request_id": f"req_mock{seq:06d}"}
    err: dict[str, Any] = {
        "code": e.status,
        "message": e.message,
        "status": e.etype or _GE_STATUS.get(e.status, "UNKNOWN"),
    }
    if e.details:
        err["details"] = e.details
    return {"error": err}


def _magic_error(kind: str, status: int, model: str) -> ApiError:
    headers = {"retry-after": "7"} if status == 429 else {}
    if kind == "openai":
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
    if kind == "anthropic":
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
    msgs = {
        400: "Request contains an invalid argument.",
        401: "Request had invalid authentication credentials.",
        403: "The caller does not have permission",
        404: f"models/{model} is not found for API version v1beta, or is not supported for generateContent.",
        429: "Resource has been exhausted (e.g. check quota).",
        500: "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
        503: "The model is overloaded. Please try again later.",
        504: "The service is currently unavailable.",
    }
    return ApiError(status, msgs.get(status, f"mock error {status}"), headers=headers)


# --------------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # No Nagle: headers, body and every stream event go out at once (else ~40 ms delayed-ACK stalls).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.conns.discard(self.connection)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _any(self) -> None:
        raw = self._read_body()
        self.server.mock._dispatch(self, raw)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

    def send_body(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # one write for head + body (what end_headers() would do, plus the body)
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        self.wfile.write(head + body)
        self.wfile.flush()

    def start_stream(self, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, mock: MockProvider) -> None:
        self.mock = mock
        self.conns: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), _Handler)


_GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")


class MockProvider:
    """A strict fake of one provider API. See the module docstring for the magic words."""

    def __init__(self, kind: str, api_key: str) -> None:
        if kind not in ("openai", "anthropic", "gemini"):
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.api_key = api_key
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._server: _Server | None = _Server(self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    # ---- public API

    @property
    def base_url(self) -> str:
        if self.kind == "openai":
            return f"http://127.0.0.1:{self.port}/v1"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockProvider:
        if self._server is None:
            self._server = _Server(self)
            self.port = self._server.server_address[1]
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                name=f"mock-{self.kind}-{self.port}",
            )  # fmt: skip
            self._thread.start()
        return self

    def stop(self) -> None:
        srv, self._server = self._server, None
        if srv is None:
            return
        if self._thread is not None:
            srv.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        for c in list(srv.conns):
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        srv.server_close()

    def last(self) -> Received:
        with self._lock:
            if not self.requests:
                raise AssertionError(f"mock {self.kind} received no request")
            return self.requests[-1]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> MockProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MockProvider({self.kind!r}, port={self.port})"

    # ---- request handling

    def _dispatch(self, h: _Handler, raw: bytes) -> None:
        url = urlsplit(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        body = None
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(raw) if raw else None
            body = parsed if isinstance(parsed, dict) else None
        rec = Received(method=h.command, path=h.path, headers=headers, body=body, raw=raw)
        with self._lock:
            self.requests.append(rec)
            self._seq += 1
            seq = self._seq
        model = body.get("model", "") if body and isinstance(body.get("model"), str) else ""
        try:
            conv = self._validate(h.command, url.path, parse_qs(url.query), headers, raw, rec)
            model = conv.model
            self._answer(h, rec, conv, seq)
        except ApiError as e:
            self._send_error(h, rec, e, seq, model)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def _send_error(self, h: _Handler, rec: Received, e: ApiError, seq: int, model: str) -> None:
        rec.status = e.status
        headers = dict(e.headers)
        headers.update(self._id_headers(seq))
        h.send_body(e.status, _dumps(_error_body(self.kind, e, seq)), "application/json", headers)

    def _id_headers(self, seq: int) -> dict[str, str]:
        if self.kind == "openai":
            return {"x-request-id": f"req_mock{seq:06d}", "openai-processing-ms": "1"}
        if self.kind == "anthropic":
            return {"request-id": f"req_mock{seq:06d}"}
        return {"x-mock-request": str(seq)}

    def _validate(
        self, method: str, path: str, query: dict, headers: dict[str, str], raw: bytes, rec: Received
    ) -> _Conv:
        kind = self.kind
        gem = None
        if kind == "openai":
            found = path == "/v1/chat/completions"
        elif kind == "anthropic":
            found = path in ("/v1/messages", "/v1/messages/count_tokens")
        else:
            gem = _GEMINI_PATH.match(path)
            found = gem is not None
        if not found or method != "POST":
            if kind == "openai":
                raise ApiError(404, f"Invalid URL ({method} {path})", etype="invalid_request_error")
            if kind == "anthropic":
                raise ApiError(404, "Not Found", etype="not_found_error")
            raise ApiError(404, f"Method not found: {method} {path}", etype="NOT_FOUND")

        # credentials meant for another provider must never arrive here (the gateway must strip client credentials)
        foreign = {
            "openai": ("x-api-key", "x-goog-api-key", "api-key"),
            "anthropic": ("authorization", "x-goog-api-key", "api-key"),
            "gemini": ("authorization", "x-api-key", "api-key"),
        }[kind]
        for name in foreign:
            if name not in headers:
                continue
            # Today's Anthropic API (and SDK) also takes the key as "Authorization: Bearer <key>": only that exact
            # value is allowed; any other Authorization header is someone else's credential.
            if kind == "anthropic" and name == "authorization" and headers[name] == f"Bearer {self.api_key}":
                continue
            raise ApiError(400, f"foreign credential header {name}")
        if kind != "gemini" and "key" in query:
            raise ApiError(400, "foreign credential header key (query parameter)")

        if kind == "openai":
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
            if auth != f"Bearer {self.api_key}":
                shown = auth.removeprefix("Bearer ")
                raise ApiError(
                    401,
                    f"Incorrect API key provided: {shown[:3]}***{shown[-4:]}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    etype="invalid_request_error",
                    code="invalid_api_key",
                )
        elif kind == "anthropic":
            key = headers.get("x-api-key")
            if not key and headers.get("authorization") == f"Bearer {self.api_key}":
                key = self.api_key
            if not key:
                raise ApiError(401, "x-api-key header is required", etype="authentication_error")
            if key != self.api_key:
                raise ApiError(401, "invalid x-api-key", etype="authentication_error")
            ver = headers.get("anthropic-version")
            if not ver:
                raise ApiError(400, "anthropic-version: header is required", etype="invalid_request_error")
            if ver not in _AN_VERSIONS:
                raise ApiError(400, f"anthropic-version: invalid version '{ver}'", etype="invalid_request_error")
        else:
            keys = [headers[k] for k in ("x-goog-api-key",) if k in headers] + query.get("key", [])
            if not keys:
                # What Google answers a request without any credential.
                raise ApiError(
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). Please use "
                    "API Key or other form of API consumer identity to call this API.",
                    etype="PERMISSION_DENIED",
                )
            if any(k != self.api_key for k in keys):
                # Google answers a wrong key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
                raise ApiError(
                    400,
                    "API key not valid. Please pass a valid API key.",
                    etype="INVALID_ARGUMENT",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                )

        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
            bad = True
        else:
            bad = not isinstance(body, dict)
        if bad or body is None:
            if kind == "openai":
                raise ApiError(
                    400,
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                    "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
                    "center at help.openai.com.)",
                    etype="invalid_request_error",
                )
            if kind == "anthropic":
                raise ApiError(
                    400, "There was an error parsing the body of your request.", etype="invalid_request_error"
                )
            raise ApiError(400, "Invalid JSON payload received. Unexpected token.", etype="INVALID_ARGUMENT")

        if kind == "openai":
            return _oa_validate(body)
        if kind == "anthropic":
            if path.endswith("/count_tokens"):
                _an_keys(body, _AN_TOP - {"max_tokens", "stream", "temperature", "top_p", "top_k"}, "")
                _an_req(body, "model", "")
                _an_req(body, "messages", "")
                return _Conv(model=body["model"], stream=False, count_tokens=True)
            return _an_validate(body)
        assert gem is not None
        if gem.group(3) == "countTokens":
            body = _ge_obj(body, {"contents", "generateContentRequest"}, "")
            for i, c in enumerate(_ge_list(body.get("contents", []), "contents")):
                _ge_content(c, f"contents[{i}]")
            return _Conv(model=gem.group(2), stream=False, count_tokens=True)
        stream = gem.group(3) == "streamGenerateContent"
        conv = _ge_validate(body, gem.group(2), stream, rec)
        conv.sse = query.get("alt", [""])[0] == "sse"
        return conv

    # ---- answering

    def _decide(self, conv: _Conv) -> _Answer:
        ans = self._decide_content(conv)
        ans.thinking = conv.thinking
        return ans

    def _decide_content(self, conv: _Conv) -> _Answer:
        text = conv.last_user_text
        if _flag(text, "LENGTH"):
            full = f"Hello from mock {self.kind}. You said: {text}"
            return _Answer(full[:24], [], "length")
        if _flag(text, "REFUSE"):
            return _Answer("I can't help with that.", [], "refusal")
        if _flag(text, "HUGE"):  # a 200 KB answer, for response-size limits
            return _Answer("x" * 200_000, [], "stop")
        if conv.tool_results is not None:
            return _Answer("Tool results: " + " | ".join(conv.tool_results), [], "stop")
        if conv.tool_names:
            name = conv.forced_tool or conv.tool_names[0]
            calls = [(name, {"city": "Paris"})]
            if _flag(text, "PARALLEL"):
                calls.append((name, {"city": "Tokyo"}))
            return _Answer(None, calls, "tool")
        if conv.json:
            value = _sample(conv.json_schema) if conv.json_schema else {"answer": "mock"}
            return _Answer(_dumps(value).decode(), [], "stop")
        finish = "stop_sequence" if _flag(text, "STOPSEQ") and self.kind == "anthropic" else "stop"
        return _Answer(f"Hello from mock {self.kind}. You said: {text}", [], finish)

    def _answer(self, h: _Handler, rec: Received, conv: _Conv, seq: int) -> None:
        text = conv.last_user_text
        m = _MAGIC_SLEEP.search(text)
        if m:
            time.sleep(float(m.group(1)))
        m = _MAGIC_ERROR.search(text)
        if m:
            raise _magic_error(self.kind, int(m.group(1)), conv.model)
        if _flag(text, "HTML200"):  # a captive portal or misrouted proxy answering 200 with a web page
            rec.status = 200
            h.send_body(200, b"<!DOCTYPE html><html><body>Please sign in</body></html>", "text/html")
            return
        if _flag(text, "HTML500"):
            rec.status = 500
            page = (
                b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>\n"
                b"<body><h1>Internal Server Error</h1><p>The server encountered an internal error.</p></body></html>\n"
            )
            h.send_body(500, page, "text/html; charset=utf-8")
            return
        if conv.count_tokens:
            rec.status = 200
            counted = {"input_tokens": COUNT_TOKENS} if self.kind == "anthropic" else {"totalTokens": COUNT_TOKENS}
            h.send_body(200, _dumps(counted), "application/json", self._id_headers(seq))
            return
        ans = self._decide(conv)
        rec.status = 200
        if not conv.stream:
            obj = self._full(conv, ans, seq)
            data = _dumps(obj)
            if _flag(text, "BADJSON"):
                data = data[: len(data) // 2]
            h.send_body(200, data, "application/json", self._id_headers(seq))
            return
        if self.kind == "gemini" and not conv.sse:
            # streamGenerateContent without alt=sse: one JSON array of responses
            chunks = [orjson.loads(e[len(b"data: ") :]) for e in self._events(conv, ans, seq)]
            h.send_body(200, _dumps(chunks), "application/json", self._id_headers(seq))
            return
        events = self._events(conv, ans, seq)
        if _flag(text, "BADJSON"):
            events = [events[0][: len(events[0]) // 2] + b"\n\n"]
        if _flag(text, "STREAMERROR"):
            events = [*events[:2], _stream_error_event(self.kind)]
        slow = _flag(text, "SLOWSTREAM")
        long_stream = _flag(text, "LONGSTREAM")
        dropping = _flag(text, "DROPSTREAM")
        h.start_stream(self._id_headers(seq))
        try:
            for i, ev in enumerate(events):
                if i and slow:
                    time.sleep(_SLOW_STREAM_DELAY)
                elif i and long_stream:
                    time.sleep(_LONG_STREAM_SECONDS / max(len(events) - 1, 1))
                if dropping and i == 2:
                    rec.stream_finished_at = time.monotonic()
                    h.drop()
                    return
                h.write_chunk(ev)
                if i == 0:
                    rec.stream_started_at = time.monotonic()
            rec.stream_finished_at = time.monotonic()
            h.end_stream()
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    # ---- response bodies

    def _full(self, conv: _Conv, ans: _Answer, seq: int) -> dict:
        if self.kind == "openai":
            message: dict[str, Any] = {"role": "assistant", "content": ans.text, "refusal": None, "annotations": []}
            if ans.calls:
                message["tool_calls"] = [
                    {"id": f"call_mock_{i + 1}", "type": "function",
                     "function": {"name": name, "arguments": _dumps(args).decode()}}
                    for i, (name, args) in enumerate(ans.calls)
                ]  # fmt: skip
            finish = {"stop": "stop", "length": "length", "tool": "tool_calls", "refusal": "content_filter"}.get(
                ans.finish, "stop"
            )
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
                "usage": self._oa_usage(ans.thinking),
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
            }
        if self.kind == "anthropic":
            content: list[dict] = []
            if ans.thinking:
                sig = ANTHROPIC_THINKING_SIGNATURES[0]
                content.append({"type": "thinking", "thinking": _THINKING_TEXT, "signature": sig})
            if ans.text is not None:
                content.append({"type": "text", "text": ans.text})
            for i, (name, args) in enumerate(ans.calls):
                content.append({"type": "tool_use", "id": f"toolu_mock_{i + 1}", "name": name, "input": args})
            stop_reason, stop_seq = self._an_stop(ans)
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
        cands = []
        for i in range(conv.n):
            parts = self._ge_parts(ans)
            if i and ans.text is not None:
                parts[int(ans.thinking)]["text"] = f"{ans.text} (#{i})"
            content = {"parts": parts, "role": "model"}
            cands.append({"content": content, "finishReason": self._ge_finish(ans), "index": i})
        return {
            "candidates": cands,
            "usageMetadata": self._ge_usage(ans.thinking),
            "modelVersion": conv.model,
            "responseId": f"mockresp{seq:06d}",
        }

    @staticmethod
    def _ge_finish(ans: _Answer) -> str:
        return {"length": "MAX_TOKENS", "refusal": "SAFETY"}.get(ans.finish, "STOP")

    @staticmethod
    def _oa_usage(thinking: bool = False) -> dict:
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

    @staticmethod
    def _ge_usage(thinking: bool = False) -> dict:
        out = {
            "promptTokenCount": USAGE_IN,
            "candidatesTokenCount": USAGE_OUT - (REASONING_TOKENS if thinking else 0),
            "totalTokenCount": USAGE_IN + USAGE_OUT,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": USAGE_IN}],
        }
        if thinking:
            out["thoughtsTokenCount"] = REASONING_TOKENS
        return out

    @staticmethod
    def _an_stop(ans: _Answer) -> tuple[str, str | None]:
        if ans.finish == "stop_sequence":
            return "stop_sequence", "END"
        return {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use", "refusal": "refusal"}[ans.finish], None

    @staticmethod
    def _ge_parts(ans: _Answer) -> list[dict]:
        parts: list[dict] = []
        if ans.thinking:
            parts.append({"text": _THINKING_TEXT, "thought": True})
        if ans.text is not None:
            parts.append({"text": ans.text})
        for i, (name, args) in enumerate(ans.calls):
            sig = GEMINI_THOUGHT_SIGNATURES[i % len(GEMINI_THOUGHT_SIGNATURES)]
            parts.append({"functionCall": {"name": name, "args": args}, "thoughtSignature": sig})
        return parts

    def _events(self, conv: _Conv, ans: _Answer, seq: int) -> list[bytes]:
        if self.kind == "openai":
            return self._oa_events(conv, ans, seq)
        if self.kind == "anthropic":
            return self._an_events(conv, ans, seq)
        return self._ge_events(conv, ans, seq)

    def _oa_events(self, conv: _Conv, ans: _Answer, seq: int) -> list[bytes]:
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
            return b"data: " + _dumps(obj) + b"\n\n"

        first: dict[str, Any] = {"role": "assistant", "content": "" if ans.text is not None else None, "refusal": None}
        out = [chunk(first)]
        if ans.text is not None:
            out += [chunk({"content": piece}) for piece in _split(ans.text, 4)]
        for i, (name, args) in enumerate(ans.calls):
            head = {"index": i, "id": f"call_mock_{i + 1}", "type": "function",
                    "function": {"name": name, "arguments": ""}}  # fmt: skip
            out.append(chunk({"tool_calls": [head]}))
            for frag in _split(_dumps(args).decode(), 3):
                out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": frag}}]}))
        finish = {"stop": "stop", "length": "length", "tool": "tool_calls", "refusal": "content_filter"}.get(
            ans.finish, "stop"
        )
        out.append(chunk({}, finish))
        if conv.include_usage:
            usage = {
                "id": f"chatcmpl-mock{seq:06d}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": conv.model,
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
                "choices": [],
                "usage": self._oa_usage(ans.thinking),
            }
            out.append(b"data: " + _dumps(usage) + b"\n\n")
        out.append(b"data: [DONE]\n\n")
        return out

    def _an_events(self, conv: _Conv, ans: _Answer, seq: int) -> list[bytes]:
        def ev(obj: dict) -> bytes:
            return b"event: " + obj["type"].encode() + b"\ndata: " + _dumps(obj) + b"\n\n"

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
            for piece in _split(_THINKING_TEXT, 2):
                delta = {"type": "thinking_delta", "thinking": piece}
                out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            delta = {"type": "signature_delta", "signature": ANTHROPIC_THINKING_SIGNATURES[0]}
            out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        if ans.text is not None:
            out.append(ev({"type": "content_block_start", "index": idx, "content_block": {"type": "text", "text": ""}}))
            for piece in _split(ans.text, 4):
                out.append(
                    ev({"type": "content_block_delta", "index": idx, "delta": {"type": "text_delta", "text": piece}})
                )
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        for i, (name, args) in enumerate(ans.calls):
            block = {"type": "tool_use", "id": f"toolu_mock_{i + 1}", "name": name, "input": {}}
            out.append(ev({"type": "content_block_start", "index": idx, "content_block": block}))
            for frag in ["", *_split(_dumps(args).decode(), 3)]:
                delta = {"type": "input_json_delta", "partial_json": frag}
                out.append(ev({"type": "content_block_delta", "index": idx, "delta": delta}))
            out.append(ev({"type": "content_block_stop", "index": idx}))
            idx += 1
        stop_reason, stop_seq = self._an_stop(ans)
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

    def _ge_events(self, conv: _Conv, ans: _Answer, seq: int) -> list[bytes]:
        pieces: list[list[dict]] = []
        if ans.thinking:
            pieces.append([{"text": _THINKING_TEXT, "thought": True}])
        if ans.text is not None:
            pieces += [[{"text": t}] for t in _split(ans.text, 4)]
        fc_parts = [p for p in self._ge_parts(ans) if "functionCall" in p]
        pieces += [[p] for p in fc_parts]
        out = []
        for i, parts in enumerate(pieces):
            cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            obj: dict[str, Any] = {"candidates": [cand]}
            if i == len(pieces) - 1:
                cand["finishReason"] = self._ge_finish(ans)
                obj["usageMetadata"] = self._ge_usage(ans.thinking)
            obj["modelVersion"] = conv.model
            obj["responseId"] = f"mockresp{seq:06d}"
            out.append(b"data: " + _dumps(obj) + b"\r\n\r\n")
        return out
