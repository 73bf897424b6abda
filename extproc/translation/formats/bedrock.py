"""AWS Bedrock's Converse API (``POST /model/{modelId}/converse``, ``/converse-stream``, ``/count-tokens``): any
Bedrock model (Claude, Llama, Nova, Mistral, ...) through one request shape (provider side only).

Shapes follow botocore's service model of ``bedrock-runtime`` (``ConverseRequest``, ``ConverseResponse``,
``ConverseStreamOutput``). Requests are signed by Envoy (AWS SigV4 over the final body, ``aws_request_signing`` on
the provider's cluster); the service holds no AWS credential. Notes on the mapping:

- System prompts are ``system: [{"text"}]``; sampling is ``inferenceConfig`` (``maxTokens``, ``temperature``,
  ``topP``, ``stopSequences``); ``top_k`` and Claude's thinking go in ``additionalModelRequestFields`` (models that
  take neither get neither).
- Content blocks are one-key unions: ``text``, ``image`` (``format`` + base64 ``source.bytes``), ``document``
  (``format``, a neutral ``name``, bytes), ``toolUse`` (``input`` an object), ``toolResult`` (``content`` blocks and
  ``status: error``), ``reasoningContent`` (``reasoningText`` with its ``signature``, or ``redactedContent``).
  Bedrock reads no URL: images and documents go inline (``image_fetch`` downloads URLs when allowed).
- Roles alternate strictly: consecutive turns of one role are merged.
- Structured output is ``outputConfig.textFormat`` (``json_schema`` with the schema as a JSON string).
- Usage counts input exclusive of the cache (``cacheReadInputTokens``, ``cacheWriteInputTokens``); the canonical
  usage is inclusive.
- Streams are AWS event streams (``application/vnd.amazon.eventstream``: binary frames with CRCs, decoded
  incrementally by botocore's ``EventStreamBuffer``); each event's ``:event-type`` header names it
  (``messageStart``, ``contentBlockStart``, ``contentBlockDelta``, ``contentBlockStop``, ``messageStop``,
  ``metadata``); failures arrive as ``:message-type: exception`` frames.
- Errors are ``{"message": ...}`` with the status (the exception's name is in a header the gateway does not read):
  a signature or token refused is the client's auth error, an unknown model identifier its unknown-model error.
"""

from __future__ import annotations

import base64
import re
import uuid
from typing import Any
from urllib.parse import quote

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from extproc.translation import embeddings
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
    StreamError,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolResult,
    Usage,
    UsageUpdate,
)
from extproc.translation.errors import GatewayError, invalid, type_for_status
from extproc.translation.formats.contract import (
    COUNT_TOKENS,
    EMBED,
    GENERATE,
    BuildOptions,
    CredentialHeader,
    Endpoint,
    PassThroughStream,
    StreamOptions,
)

NAME = "bedrock"
# Nothing is injected from a file: Envoy signs each request (AWS SigV4). Kept for the contract.
CREDENTIAL = CredentialHeader("authorization")
EXTRA_HEADERS: list[tuple[str, str]] = []
COUNTS_TOKENS = True
EMBEDS = True  # Titan Text Embeddings and Cohere Embed, through InvokeModel
PASSTHROUGH_FROM: str | None = None  # no client speaks Converse: every request is translated
STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

_STOP_IN = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif",
                  "image/webp": "webp"}  # fmt: skip
_DOC_FORMATS = {
    "application/pdf": "pdf", "text/plain": "txt", "text/csv": "csv", "text/markdown": "md", "text/html": "html",
    "application/msword": "doc", "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}  # fmt: skip
_BUDGET_BY_EFFORT = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576, "max": 32768}
_DOC_NAME = re.compile(r"[^A-Za-z0-9\-()\[\] ]+")


def is_claude(model: str) -> bool:
    """A Claude model id (``anthropic.claude-...``, ``us.anthropic.claude-...``, or an ARN naming one)."""
    return "anthropic." in model or "claude" in model


def _model_path(model: str) -> str:
    return "/model/" + quote(model, safe="")


# ---------------------------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------------------------
def upstream_path(*, model: str, stream: bool, kind: str = GENERATE) -> str:
    if kind == COUNT_TOKENS:
        return _model_path(model) + "/count-tokens"
    if kind == EMBED:
        return _model_path(model) + "/invoke"
    return _model_path(model) + ("/converse-stream" if stream else "/converse")


def passthrough_path(endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
    raise invalid("no client speaks Bedrock's Converse API: requests to it are translated")


def passthrough_body(
    body: bytes, head: dict[str, Any], *, model: str, stream: bool
) -> tuple[bytes, PassThroughStream | None]:
    raise invalid("no client speaks Bedrock's Converse API: requests to it are translated")


def _args(call: ToolCall) -> Any:
    try:
        value = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        raise invalid(f"tool call {call.id}: arguments are not valid JSON") from None
    return value if isinstance(value, dict) else {"value": value}


def _image(img: Image) -> dict[str, Any]:
    if img.data is None:
        raise invalid("Bedrock takes images inline only (enable image_fetch for image URLs)")
    fmt = _IMAGE_FORMATS.get((img.media_type or "").lower())
    if fmt is None:
        raise invalid(f"Bedrock takes png, jpeg, gif and webp images, not {img.media_type or 'unknown'}")
    return {"image": {"format": fmt, "source": {"bytes": img.data}}}


def _document(doc: Document, n: int) -> dict[str, Any]:
    if doc.data is None:
        raise invalid("Bedrock takes documents inline only (enable image_fetch for document URLs)")
    fmt = _DOC_FORMATS.get((doc.media_type or "").lower())
    if fmt is None:
        raise invalid(f"Bedrock cannot read documents of type {doc.media_type or 'unknown'}")
    name = " ".join(_DOC_NAME.sub(" ", (doc.name or "").rsplit(".", 1)[0]).split()) or f"document {n}"
    return {"document": {"format": fmt, "name": name[:200], "source": {"bytes": doc.data}}}


def _result_content(parts: list[Part], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, Image):
            out.append(_image(p))
        elif isinstance(p, Document):
            out.append(_document(p, n))
    return out or [{"text": ""}]


def _blocks(msg: Message, docs: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in msg.parts:
        if isinstance(p, Text):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, Image):
            out.append(_image(p))
        elif isinstance(p, Document):
            docs[0] += 1
            out.append(_document(p, docs[0]))
        elif isinstance(p, ToolCall):
            out.append({"toolUse": {"toolUseId": p.id, "name": p.name, "input": _args(p)}})
        elif isinstance(p, ToolResult):
            block: dict[str, Any] = {"toolUseId": p.tool_call_id, "content": _result_content(p.content, docs[0])}
            if p.is_error:
                block["status"] = "error"
            out.append({"toolResult": block})
        elif isinstance(p, Thinking) and msg.role == "assistant":
            # Only signed reasoning can be replayed (Claude checks it); unsigned text is another model's.
            if p.redacted:
                out.append({"reasoningContent": {"redactedContent": p.redacted}})
            elif p.signature:
                out.append({"reasoningContent": {"reasoningText": {"text": p.text, "signature": p.signature}}})
    return out


def _messages(req: Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    docs = [0]
    for msg in req.messages:
        blocks = _blocks(msg, docs)
        if not blocks:
            continue
        if out and out[-1]["role"] == msg.role:
            out[-1]["content"].extend(blocks)  # Converse needs strictly alternating roles
        else:
            out.append({"role": msg.role, "content": blocks})
    return out


def _tool_config(req: Request, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not req.tools:
        return None
    uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    choice = req.tool_choice
    if choice is not None and choice.mode == "none" and not uses_tools:
        return None  # Converse has no "none": the tools are left out (unless the history needs them declared)
    tools = []
    for t in req.tools:
        spec: dict[str, Any] = {"name": t.name, "inputSchema": {"json": t.parameters or {"type": "object"}}}
        if t.description:
            spec["description"] = t.description
        tools.append({"toolSpec": spec})
    cfg: dict[str, Any] = {"tools": tools}
    if choice is not None and choice.mode == "required":
        cfg["toolChoice"] = {"any": {}}
    elif choice is not None and choice.mode == "tool" and choice.name:
        cfg["toolChoice"] = {"tool": {"name": choice.name}}
    elif choice is not None and choice.mode == "auto":
        cfg["toolChoice"] = {"auto": {}}
    return cfg


def _thinking_budget(req: Request) -> int:
    if req.thinking_budget is not None:
        return req.thinking_budget if req.thinking_budget > 0 else (8192 if req.thinking_budget < 0 else 0)
    if req.reasoning_effort and req.reasoning_effort != "none":
        return _BUDGET_BY_EFFORT.get(req.reasoning_effort, 8192)
    return 0


def build_request(req: Request, *, model: str, options: BuildOptions | None = None) -> bytes:
    messages = _messages(req)
    if not messages:
        raise invalid("the conversation has no content Bedrock can take")
    body: dict[str, Any] = {"messages": messages}
    system = [{"text": p.text} for p in req.system if isinstance(p, Text) and p.text]
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if req.max_tokens is not None:
        inference["maxTokens"] = req.max_tokens
    if req.temperature is not None:
        inference["temperature"] = req.temperature
    if req.top_p is not None:
        inference["topP"] = req.top_p
    if req.stop:
        inference["stopSequences"] = req.stop[:4]
    extra: dict[str, Any] = {}
    claude = is_claude(model)
    if req.top_k is not None:
        if claude:
            extra["top_k"] = req.top_k
        elif "nova" in model:
            extra["inferenceConfig"] = {"topK": req.top_k}
    budget = _thinking_budget(req) if claude else 0
    if budget:
        budget = max(budget, 1024)
        extra["thinking"] = {"type": "enabled", "budget_tokens": budget}
        inference["maxTokens"] = max(inference.get("maxTokens", 0), budget + 1024)
        inference.pop("temperature", None)  # Claude thinks only at the default sampling
        inference.pop("topP", None)
        extra.pop("top_k", None)
    if inference:
        body["inferenceConfig"] = inference
    if extra:
        body["additionalModelRequestFields"] = extra
    tools = _tool_config(req, messages)
    if tools is not None:
        body["toolConfig"] = tools
    rf = req.response_format
    if rf is not None and rf.type in ("json_schema", "json_object"):
        schema = rf.schema if rf.type == "json_schema" and rf.schema else {"type": "object"}
        definition: dict[str, Any] = {"schema": orjson.dumps(schema).decode(), "name": rf.name or "response"}
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}
    return orjson.dumps(body)


# ---------------------------------------------------------------------------------------------------------------------
# Response and errors
# ---------------------------------------------------------------------------------------------------------------------
def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def usage_in(u: Any) -> Usage | None:
    """Converse ``usage`` (input exclusive of the cache) -> canonical (inclusive) usage."""
    if not isinstance(u, dict):
        return None
    cached, written = _int(u.get("cacheReadInputTokens")), _int(u.get("cacheWriteInputTokens"))
    return Usage(
        _int(u.get("inputTokens")) + cached + written,
        _int(u.get("outputTokens")),
        cached_tokens=cached,
        cache_creation_tokens=written,
    )


def _bad(what: str) -> GatewayError:
    return GatewayError("server_error", f"invalid Bedrock Converse response: {what}", 502)


def parse_response(body: bytes) -> Response:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad("body is not JSON") from None
    msg = (
        data.get("output", {}).get("message")
        if isinstance(data, dict) and isinstance(data.get("output"), dict)
        else None
    )
    if not isinstance(msg, dict) or not isinstance(msg.get("content"), list):
        raise _bad("no output.message")
    parts: list[Part] = []
    for block in msg["content"]:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            parts.append(Text(block["text"]))
        elif isinstance(block.get("toolUse"), dict):
            tu = block["toolUse"]
            parts.append(ToolCall(str(tu.get("toolUseId") or f"tooluse_{len(parts)}"), str(tu.get("name") or ""),
                                  orjson.dumps(tu.get("input", {})).decode()))  # fmt: skip
        elif isinstance(block.get("reasoningContent"), dict):
            rc = block["reasoningContent"]
            rt = rc.get("reasoningText")
            if isinstance(rt, dict):
                parts.append(Thinking(str(rt.get("text") or ""), signature=rt.get("signature")))
            elif isinstance(rc.get("redactedContent"), str):
                parts.append(Thinking("", redacted=rc["redactedContent"]))
    reason = _STOP_IN.get(str(data.get("stopReason")), "stop")
    if reason == "stop" and any(isinstance(p, ToolCall) for p in parts):
        reason = "tool_calls"
    return Response(id=f"msg_bdrk_{uuid.uuid4().hex[:24]}", model="", parts=parts, finish_reason=reason,
                    usage=usage_in(data.get("usage")))  # fmt: skip


# Bedrock's exception names (in stream frames' ``:exception-type``) -> gateway error types.
_EXCEPTIONS = {
    "validationexception": ("invalid_request", 400),
    "accessdeniedexception": ("permission", 403),
    "unrecognizedclientexception": ("auth", 401),
    "resourcenotfoundexception": ("not_found", 404),
    "throttlingexception": ("rate_limit", 429),
    "servicequotaexceededexception": ("rate_limit", 429),
    "modeltimeoutexception": ("timeout", 504),
    "modelnotreadyexception": ("overloaded", 503),
    "serviceunavailableexception": ("overloaded", 503),
    "internalserverexception": ("server_error", 500),
    "modelstreamerrorexception": ("server_error", 502),
    "modelerrorexception": ("server_error", 502),
}
_AUTH_WORDS = ("signature", "security token", "missing authentication token", "not authorized to perform")


def error_from(status: int, message: str, exception: str | None = None) -> GatewayError:
    """A Bedrock error (its status, message and, in streams, exception name) as the gateway's."""
    low = message.lower()
    if exception:
        etype, status = _EXCEPTIONS.get(exception.lower(), (type_for_status(status), status))
    else:
        etype = type_for_status(status)
    if status == 403 and any(w in low for w in _AUTH_WORDS[:3]):
        etype, status = "auth", 401  # the gateway's AWS credentials were refused (or missing)
    elif "model identifier is invalid" in low or "could not resolve the foundation model" in low:
        etype, status = "unknown_model", 404
    elif etype == "not_found" and "model" in low:
        etype = "unknown_model"
    return GatewayError(etype, message, status)


def parse_error(status: int, body: bytes) -> GatewayError:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    message = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("Message")
    if not isinstance(message, str) or not message:
        return GatewayError(type_for_status(status), f"Bedrock returned HTTP {status}", status)
    return error_from(status, message)


# ---------------------------------------------------------------------------------------------------------------------
# Streams: AWS event stream frames
# ---------------------------------------------------------------------------------------------------------------------
class EventFrames:
    """Bytes cut anywhere in, whole event-stream messages out as (event type, JSON payload), or a ``GatewayError``
    for an exception frame or a frame that fails its CRC / length checks (the stream is dead after that)."""

    __slots__ = ("_buf", "failed")

    def __init__(self) -> None:
        self._buf = EventStreamBuffer()
        self.failed = False

    def feed(self, chunk: bytes) -> list[tuple[str, dict[str, Any]] | GatewayError]:
        if self.failed:
            return []
        self._buf.add_data(chunk)
        out: list[tuple[str, dict[str, Any]] | GatewayError] = []
        try:
            for msg in self._buf:
                headers = msg.headers
                try:
                    payload = orjson.loads(msg.payload) if msg.payload else {}
                except orjson.JSONDecodeError:
                    payload = {}
                if not isinstance(payload, dict):
                    payload = {}
                kind = headers.get(":message-type", "event")
                if kind == "event":
                    out.append((str(headers.get(":event-type", "")), payload))
                    continue
                self.failed = True
                if kind == "exception":
                    message = str(payload.get("message") or payload.get("Message") or "Bedrock stream failed")
                    out.append(error_from(500, message, str(headers.get(":exception-type", ""))))
                else:  # ":message-type: error"
                    code = str(headers.get(":error-code", "InternalServerException"))
                    out.append(error_from(500, str(headers.get(":error-message", code)), code))
                break
        except ParserError as exc:
            self.failed = True
            out.append(GatewayError("server_error", f"Bedrock sent a broken event stream ({type(exc).__name__})", 502))
        return out


class StreamDecoder:
    """ConverseStream event frames -> canonical events."""

    __slots__ = ("_calls", "_done", "_finished", "_frames", "_started")

    def __init__(self) -> None:
        self._frames = EventFrames()
        self._calls: dict[int, int] = {}  # contentBlockIndex -> tool-call ordinal
        self._started = self._finished = self._done = False

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for item in self._frames.feed(chunk):
            if self._done:
                break
            if isinstance(item, GatewayError):
                self._done = True
                out.append(StreamError(item))
            else:
                self._event(item[0], item[1], out)
        return out

    def close(self) -> list[Event]:
        if not self._done and not self._finished:
            self._done = True
            return [StreamError(GatewayError("network", "provider stream ended early", 502))]
        return []

    def _start(self, out: list[Event]) -> None:
        if not self._started:
            self._started = True
            out.append(MessageStart(f"msg_bdrk_{uuid.uuid4().hex[:24]}", ""))

    def _event(self, kind: str, ev: dict[str, Any], out: list[Event]) -> None:
        self._start(out)
        if kind == "contentBlockStart":
            start = ev.get("start")
            tu = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(tu, dict):
                ordinal = len(self._calls)
                self._calls[_int(ev.get("contentBlockIndex"))] = ordinal
                out.append(ToolCallStart(ordinal, str(tu.get("toolUseId") or f"tooluse_{ordinal}"),
                                         str(tu.get("name") or "")))  # fmt: skip
        elif kind == "contentBlockDelta":
            delta = ev.get("delta")
            if not isinstance(delta, dict):
                return
            if isinstance(delta.get("text"), str) and delta["text"]:
                out.append(TextDelta(delta["text"]))
            elif isinstance(delta.get("toolUse"), dict):
                call = self._calls.get(_int(ev.get("contentBlockIndex")))
                frag = delta["toolUse"].get("input")
                if call is not None and isinstance(frag, str) and frag:
                    out.append(ToolCallDelta(call, frag))
            elif isinstance(delta.get("reasoningContent"), dict):
                rc = delta["reasoningContent"]
                if isinstance(rc.get("text"), str) and rc["text"]:
                    out.append(ThinkingDelta(rc["text"]))
                if isinstance(rc.get("signature"), str):
                    out.append(ThinkingDelta(signature=rc["signature"]))
                if isinstance(rc.get("redactedContent"), str):
                    out.append(ThinkingDelta(redacted=rc["redactedContent"]))
        elif kind == "messageStop":
            reason = _STOP_IN.get(str(ev.get("stopReason")), "stop")
            if reason == "stop" and self._calls:
                reason = "tool_calls"
            self._finished = True
            out.append(Finish(reason))
        elif kind == "metadata":
            usage = usage_in(ev.get("usage"))
            if usage is not None:
                out.append(UsageUpdate(usage))


def stream_decoder(opts: StreamOptions) -> StreamDecoder:
    return StreamDecoder()


def fetches_url(part: Image | Document) -> bool | str:
    """Bedrock reads no URL (only inline bytes or S3 locations): URLs are fetched by the gateway when allowed."""
    return False


# ---------------------------------------------------------------------------------------------------------------------
# Token counting (CountTokens with a Converse input)
# ---------------------------------------------------------------------------------------------------------------------
def build_count_request(req: Request, *, model: str) -> bytes:
    full = orjson.loads(build_request(req, model=model))
    converse = {k: full[k] for k in ("messages", "system", "toolConfig") if k in full}
    return orjson.dumps({"input": {"converse": converse}})


def parse_count_response(body: bytes) -> int:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    tokens = data.get("inputTokens") if isinstance(data, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool):
        raise _bad("CountTokens answer without inputTokens")
    return tokens


def decode_base64_json(data: str) -> dict[str, Any] | None:
    """A base64 JSON object (InvokeModelWithResponseStream's ``chunk.bytes``), or None."""
    try:
        obj = orjson.loads(base64.b64decode(data))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings through InvokeModel: Amazon Titan Text Embeddings (one text per call) and Cohere Embed (a batch)
# ---------------------------------------------------------------------------------------------------------------------
_COHERE_INPUT = {
    "RETRIEVAL_QUERY": "search_query", "CODE_RETRIEVAL_QUERY": "search_query", "QUESTION_ANSWERING": "search_query",
    "FACT_VERIFICATION": "search_query", "RETRIEVAL_DOCUMENT": "search_document", "CLASSIFICATION": "classification",
    "CLUSTERING": "clustering",
}  # fmt: skip


def build_embed_request(req: EmbedRequest, *, model: str) -> bytes:
    if "titan-embed" in model:
        if len(req.inputs) != 1:
            raise invalid(
                f"{model} embeds one text per request (Titan Text Embeddings): send the {len(req.inputs)} inputs "
                "one at a time, or use a Cohere Embed model for batches",
                param="input",
            )
        body: dict[str, Any] = {"inputText": req.inputs[0]}
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        if "text-v2" in model:
            body["normalize"] = True
        return orjson.dumps(body)
    if "cohere.embed" in model:
        cohere: dict[str, Any] = {
            "texts": req.inputs,
            "input_type": _COHERE_INPUT.get(req.task_type or "", "search_document"),
            "embedding_types": ["float"],
        }
        if req.dimensions is not None:
            cohere["output_dimension"] = req.dimensions
        return orjson.dumps(cohere)
    raise invalid(f"model '{model}' is not an embeddings model the gateway knows on Bedrock (amazon.titan-embed-*, "
                  "cohere.embed-*)", param="model")  # fmt: skip


def parse_embed_response(body: bytes) -> EmbedResponse:
    """Titan ``{"embedding": [...], "inputTextTokenCount"}`` or Cohere ``{"embeddings": {"float": [[...]]}}``
    (``embeddings_by_type``) / ``{"embeddings": [[...]]}`` (``embeddings_floats``)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _bad("embeddings body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("embeddings body is not an object")
    if "embedding" in data:
        tokens = data.get("inputTextTokenCount")
        usage = Usage(tokens) if isinstance(tokens, int) and not isinstance(tokens, bool) else None
        return EmbedResponse([embeddings.floats(data["embedding"])], usage=usage)
    vectors = data.get("embeddings")
    if isinstance(vectors, dict):
        vectors = vectors.get("float")
    if not isinstance(vectors, list):
        raise _bad("no embeddings in the answer")
    return EmbedResponse([embeddings.floats(v) for v in vectors])
