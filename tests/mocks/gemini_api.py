"""The Gemini generateContent mock: POST /{v1,v1beta,v1alpha}/models/{model}:{generateContent,streamGenerateContent,
countTokens}, x-goog-api-key or ?key=, Google's error envelope.

Requests are checked twice: by hand-written checks that mirror the real API (proto JSON: camelCase or snake_case
names, anything else is 'Unknown name'; function call/response pairing; thought signatures), then against the official
SDK's own pydantic models for each part of the body (``google.genai.types.Content``, ``Tool``, ``ToolConfig``,
``GenerationConfig``, ``SafetySetting``: unknown fields refused, strict types).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from google.genai import types as gtypes
from pydantic import BaseModel

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
    camel,
    check_sdk_types,
    dumps,
    is_int,
    is_num,
    reject_foreign_credentials,
    snake,
    split,
)

# base64("sig-mock-1"), base64("sig-mock-2"): the signatures the Gemini mock puts on its functionCall parts.
GEMINI_THOUGHT_SIGNATURES = ("c2lnLW1vY2stMQ==", "c2lnLW1vY2stMg==")
# Values Google documents for histories that never saw a real signature (validation is skipped for them).
_GEMINI_SKIP_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")


# --------------------------------------------------------------------------------------------------------------
# generateContent validation (google/genai/types.py + the _..._to_mldev converters in google/genai/models.py).
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
        raise _ge_err(f"Invalid JSON payload received. Expected an object{where}, but got {dumps(obj).decode()}.")
    out = {}
    for k, v in obj.items():
        ck = k if k.startswith("$") else camel(k)
        if ck not in allowed:
            where = f" at '{path}'" if path else ""
            raise _ge_err(f'Invalid JSON payload received. Unknown name "{k}"{where}: Cannot find field.')
        out[ck] = v
    return out


def _ge_list(v: Any, path: str) -> list:
    if not isinstance(v, list):
        raise _ge_err(f"Invalid JSON payload received. Expected an array at '{path}', but got {dumps(v).decode()}.")
    return v


def _ge_schema(s: Any, path: str) -> None:
    s = _ge_obj(s, _GE_SCHEMA, path)
    if "type" in s:
        t = s["type"]
        if not isinstance(t, str) or t.upper() not in _GE_TYPES:
            raise _ge_err(
                f"Invalid value at '{path}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "
                f"{dumps(t).decode()}"
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
                f"Invalid value at '{pp}' (oneof), oneof field 'data' is already set. Cannot set '{snake(data[1])}'"
            )
        if "text" in part and not isinstance(part["text"], str):
            raise _ge_err(f"Invalid value at '{pp}.text' (TYPE_STRING), {dumps(part['text']).decode()}")
        if "inlineData" in part:
            blob = _ge_obj(part["inlineData"], {"mimeType", "data"}, f"{pp}.inline_data")
            if not blob.get("mimeType"):
                raise _ge_err(f"* GenerateContentRequest.{pp}.inline_data.mime_type: mime_type must be set\n")
            if not b64ok(blob.get("data", "")):
                raise _ge_err(
                    f"Invalid value at '{pp}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for "
                    f"{dumps(blob.get('data')).decode()[:40]}"
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
                    f"{dumps(fc['args']).decode()}"
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
                    f"(type.googleapis.com/google.protobuf.Struct), {dumps(fr['response']).decode()}"
                )
            part["functionResponse"] = fr
        if "thoughtSignature" in part:
            sig = part["thoughtSignature"]
            if not b64ok(sig):
                raise _ge_err(f"Invalid value at '{pp}.thought_signature' (TYPE_BYTES), Base64 decoding failed")
        norm.append(part)
    c["parts"] = norm
    return c


def _ge_validate(body: dict, model: str, stream: bool, rec: Received) -> Conv:
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
                if not is_num(v):
                    raise _ge_err(f"Invalid value at 'generation_config.{snake(k)}' (TYPE_FLOAT), {dumps(v).decode()}")
                if not lo <= v <= hi:
                    raise _ge_err(
                        f"* GenerateContentRequest.generation_config.{snake(k)}: {snake(k)} must be in the range "
                        f"[{lo}, {hi}]\n"
                    )
        for k in ("maxOutputTokens", "topK", "candidateCount", "seed"):
            # proto JSON takes an integral number for an int32 (google-genai sends top_k as 3.0)
            if k in gc and not (is_int(gc[k]) or (isinstance(gc[k], float) and gc[k].is_integer())):
                raise _ge_err(f"Invalid value at 'generation_config.{snake(k)}' (TYPE_INT32), {dumps(gc[k]).decode()}")
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
    conv = Conv(model=model, stream=stream, tool_names=tool_names, stop_sequences=stops)
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
        conv.tool_results = [dumps(p["functionResponse"].get("response", {})).decode() for p in fresps(last)]
    return conv


# Which SDK model checks each part of a generateContent body. The SDK has no model of the whole REST body (its
# GenerateContentConfig is the Python-side shape), but these are the REST shapes, field for field.
_SDK_MODELS: dict[str, type[BaseModel]] = {
    "systemInstruction": gtypes.Content,
    "toolConfig": gtypes.ToolConfig,
    "generationConfig": gtypes.GenerationConfig,
}
_SDK_LIST_MODELS: dict[str, type[BaseModel]] = {
    "contents": gtypes.Content,
    "tools": gtypes.Tool,
    "safetySettings": gtypes.SafetySetting,
}
# generationConfig fields the REST API takes that google-genai's GenerationConfig model lacks (the SDK sends them from
# GenerateContentConfig): not checked by the SDK model.
_REST_ONLY_GEN = {"imageConfig"}


def _sdk_validate(body: dict) -> None:
    """Each part of the body through the official SDK's pydantic model, from JSON (so bytes are base64, as on the
    wire), strict: unknown fields are refused (extra='forbid'), types are exact."""
    for key, value in body.items():
        ck = camel(key)
        if ck == "generationConfig" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if camel(k) not in _REST_ONLY_GEN}
        if ck in _SDK_MODELS:
            items, model = [(ck, value)], _SDK_MODELS[ck]
        elif ck in _SDK_LIST_MODELS and isinstance(value, list):
            items, model = [(f"{ck}.{i}", v) for i, v in enumerate(value)], _SDK_LIST_MODELS[ck]
        else:
            continue
        for where, item in items:
            raw = orjson.dumps(item)
            try:
                check_sdk_types(lambda m=model, raw=raw: m.model_validate_json(raw, strict=True), model.__name__)
            except SdkTypeError as e:
                raise _ge_err(
                    f"Invalid value at '{where}.{e.loc}' (google.genai.types.{e.type_name}): {e.message}"
                ) from None


# --------------------------------------------------------------------------------------------------------------
# the API

_GE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ABORTED",
    429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent|countTokens)$")


def magic_error(status: int, model: str) -> ApiError:
    """What Gemini answers with this status (the ERROR <status> magic word)."""
    headers = {"retry-after": "7"} if status == 429 else {}
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


def _finish(ans: Answer) -> str:
    return {"length": "MAX_TOKENS", "refusal": "SAFETY"}.get(ans.finish, "STOP")


def _usage(thinking: bool = False) -> dict:
    out = {
        "promptTokenCount": USAGE_IN,
        "candidatesTokenCount": USAGE_OUT - (REASONING_TOKENS if thinking else 0),
        "totalTokenCount": USAGE_IN + USAGE_OUT,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": USAGE_IN}],
    }
    if thinking:
        out["thoughtsTokenCount"] = REASONING_TOKENS
    return out


def _parts(ans: Answer) -> list[dict]:
    parts: list[dict] = []
    if ans.thinking:
        parts.append({"text": THINKING_TEXT, "thought": True})
    if ans.text is not None:
        parts.append({"text": ans.text})
    for i, (name, args) in enumerate(ans.calls):
        sig = GEMINI_THOUGHT_SIGNATURES[i % len(GEMINI_THOUGHT_SIGNATURES)]
        parts.append({"functionCall": {"name": name, "args": args}, "thoughtSignature": sig})
    return parts


class GeminiApi(ProviderApi):
    kind = "gemini"

    def route(self, method: str, path: str) -> str:
        if method != "POST" or not _GEMINI_PATH.match(path):
            raise ApiError(404, f"Method not found: {method} {path}", etype="NOT_FOUND")
        return path

    def authenticate(self, headers: dict[str, str], query: dict[str, list[str]], api_key: str) -> None:
        reject_foreign_credentials(headers, ("authorization", "x-api-key", "api-key"), {})
        keys = [headers[k] for k in ("x-goog-api-key",) if k in headers] + query.get("key", [])
        if not keys:
            # What Google answers a request without any credential.
            raise ApiError(
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use "
                "API Key or other form of API consumer identity to call this API.",
                etype="PERMISSION_DENIED",
            )
        if any(k != api_key for k in keys):
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

    def bad_json(self) -> ApiError:
        return ApiError(400, "Invalid JSON payload received. Unexpected token.", etype="INVALID_ARGUMENT")

    def validate(self, endpoint: str, body: dict, query: dict[str, list[str]], rec: Received) -> Conv:
        m = _GEMINI_PATH.match(endpoint)
        assert m is not None
        model, action = m.group(2), m.group(3)
        if action == "countTokens":
            body = _ge_obj(body, {"contents", "generateContentRequest"}, "")
            for i, c in enumerate(_ge_list(body.get("contents", []), "contents")):
                _ge_content(c, f"contents[{i}]")
            _sdk_validate({"contents": body.get("contents", [])})
            return Conv(model=model, stream=False, count_tokens=True)
        conv = _ge_validate(body, model, action == "streamGenerateContent", rec)
        _sdk_validate(body)
        model_rules.check_gemini(model, body)
        conv.sse = query.get("alt", [""])[0] == "sse"
        return conv

    def error_body(self, e: ApiError, seq: int) -> dict:
        err: dict[str, Any] = {
            "code": e.status,
            "message": e.message,
            "status": e.etype or _GE_STATUS.get(e.status, "UNKNOWN"),
        }
        if e.details:
            err["details"] = e.details
        return {"error": err}

    def magic_error(self, status: int, model: str) -> ApiError:
        return magic_error(status, model)

    def id_headers(self, seq: int) -> dict[str, str]:
        return {"x-mock-request": str(seq)}

    def count_tokens_body(self) -> dict:
        return {"totalTokens": COUNT_TOKENS}

    def full(self, conv: Conv, ans: Answer, seq: int) -> dict:
        cands = []
        for i in range(conv.n):
            parts = _parts(ans)
            if i and ans.text is not None:
                parts[int(ans.thinking)]["text"] = f"{ans.text} (#{i})"
            content = {"parts": parts, "role": "model"}
            cands.append({"content": content, "finishReason": _finish(ans), "index": i})
        return {
            "candidates": cands,
            "usageMetadata": _usage(ans.thinking),
            "modelVersion": conv.model,
            "responseId": f"mockresp{seq:06d}",
        }

    def events(self, conv: Conv, ans: Answer, seq: int) -> list[bytes]:
        pieces: list[list[dict]] = []
        if ans.thinking:
            pieces.append([{"text": THINKING_TEXT, "thought": True}])
        if ans.text is not None:
            pieces += [[{"text": t}] for t in split(ans.text, 4)]
        pieces += [[p] for p in _parts(ans) if "functionCall" in p]
        out = []
        for i, parts in enumerate(pieces):
            cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            obj: dict[str, Any] = {"candidates": [cand]}
            if i == len(pieces) - 1:
                cand["finishReason"] = _finish(ans)
                obj["usageMetadata"] = _usage(ans.thinking)
            obj["modelVersion"] = conv.model
            obj["responseId"] = f"mockresp{seq:06d}"
            out.append(b"data: " + dumps(obj) + b"\r\n\r\n")
        return out

    def unframed(self, events: list[bytes]) -> bytes:
        return dumps([orjson.loads(e[len(b"data: ") :]) for e in events])

    def stream_error_event(self) -> bytes:
        body = {
            "error": {"code": 503, "message": "The model is overloaded (mock STREAMERROR)", "status": "UNAVAILABLE"}
        }
        return b"data: " + dumps(body) + b"\r\n\r\n"

    def first_text_event(self, events: list[bytes]) -> int:
        return next((i for i, ev in enumerate(events) if b'"text"' in ev and b'"thought"' not in ev), 0)
