"""The canonical model: the hub every wire format translates to and from.

Formats never import each other. Each decodes its wire shape into these plain slotted dataclasses and encodes them back
out, so N formats need N modules, not N x N translators. Conventions that every format module relies on:

- Roles are only ``user`` and ``assistant``. System prompts live in ``Request.system``. Tool results are
  ``ToolResult`` parts inside a ``user`` message (Anthropic's shape); OpenAI ``tool`` messages and Gemini
  ``functionResponse`` parts decode into that and encode back out of it.
- Tool-call arguments are JSON *text* (``ToolCall.arguments``), as OpenAI and streams carry them. Encoders that need
  an object (Anthropic ``input``, Gemini ``args``) parse it; decoders that get an object serialise it compactly.
- Usage follows OpenAI's inclusive counting: ``input_tokens`` includes cached tokens, ``output_tokens`` includes
  reasoning tokens. ``cached_tokens``/``cache_creation_tokens``/``reasoning_tokens`` are the subsets.
- Finish reasons are ``stop``, ``length``, ``tool_calls``, ``content_filter``. A hit stop
  sequence is ``stop`` with ``Response.stop_sequence`` set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ---------------------------------------------------------------------------------------------------------------------
# Content parts
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Image:
    """An image, either inline (``data`` is base64 without a ``data:`` prefix) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class Document:
    """A document such as a PDF, inline base64 (``data``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    name: str | None = None


@dataclass(slots=True)
class ToolCall:
    """A call the assistant made. ``signature`` carries a Gemini ``thoughtSignature`` across turns."""

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None


@dataclass(slots=True)
class ToolResult:
    """The result of a tool call, sent back by the user side. ``name`` is the called tool's name when known."""

    tool_call_id: str
    name: str | None = None
    content: list[Part] = field(default_factory=list)
    is_error: bool = False


@dataclass(slots=True)
class Thinking:
    """Reasoning content. ``signature`` (Anthropic; an OpenAI Responses reasoning item's id and encrypted content,
    packed by that format) must survive round trips; ``redacted`` holds opaque data. ``raw``: the model's own chain
    of thought rather than a summary of it (Responses ``reasoning_text`` as opposed to ``summary_text``)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    raw: bool = False


Part = Text | Image | Document | ToolCall | ToolResult | Thinking


@dataclass(slots=True)
class Message:
    role: str  # "user" | "assistant"
    parts: list[Part] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema
    strict: bool | None = None  # the client asked for strict schema adherence (OpenAI ``strict``)
    namespace: str | None = None  # Responses ``namespace`` tools: ``name`` is then "{namespace}__{function name}"


@dataclass(slots=True)
class ToolChoice:
    mode: str = "auto"  # "auto" | "none" | "required" | "tool"
    name: str | None = None  # set when mode == "tool"


@dataclass(slots=True)
class ResponseFormat:
    type: str = "text"  # "text" | "json_object" | "json_schema"
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message] = field(default_factory=list)
    system: list[Part] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    include_usage: bool = False  # the client asked for usage in its stream (OpenAI stream_options.include_usage)
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None  # "none" | "minimal" | "low" | "medium" | "high" | "xhigh" | "max"
    thinking_budget: int | None = None  # tokens; 0 disables thinking; -1: on, the provider decides (adaptive)
    n: int | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None
    verbosity: str | None = None  # "low" | "medium" | "high" (OpenAI ``verbosity`` / Responses ``text.verbosity``)
    reasoning_summary: str | None = None  # "auto" | "concise" | "detailed" (Responses ``reasoning.summary``)
    # The client format's own request facts its answer repeats (a Responses ``response`` echoes its id, tools,
    # instructions, ...). Set by that format's ``parse_request``, read only by the same format's builders.
    echo: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class Candidate:
    """A further answer when the client asked for several (OpenAI ``n``, Gemini ``candidateCount``)."""

    parts: list[Part] = field(default_factory=list)
    finish_reason: str = "stop"
    stop_sequence: str | None = None


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: list[Part] = field(default_factory=list)  # Text, ToolCall and Thinking parts, in order
    finish_reason: str = "stop"
    stop_sequence: str | None = None
    usage: Usage | None = None
    created: int = 0
    candidates: list[Candidate] = field(default_factory=list)  # answers after the first (n > 1), in order


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class EmbedRequest:
    """Texts to embed. Task types use Gemini's names (``RETRIEVAL_QUERY``, ``RETRIEVAL_DOCUMENT``,
    ``SEMANTIC_SIMILARITY``, ``CLASSIFICATION``, ``CLUSTERING``, ...); formats without them drop them."""

    model: str
    inputs: list[str] = field(default_factory=list)
    dimensions: int | None = None  # OpenAI ``dimensions``, Gemini ``outputDimensionality``
    encoding: str = "float"  # how the client wants the vectors: "float" or "base64" (float32, little-endian)
    task_type: str | None = None
    title: str | None = None  # Gemini: the document's title (RETRIEVAL_DOCUMENT)
    user: str | None = None
    batch: bool = True  # the client sent a batch (Gemini ``batchEmbedContents``) rather than one input


@dataclass(slots=True)
class EmbedResponse:
    vectors: list[list[float]] = field(default_factory=list)  # one per input, in order
    model: str = ""
    usage: Usage | None = None  # input tokens, when the provider says


# ---------------------------------------------------------------------------------------------------------------------
# Stream events: what a provider StreamDecoder yields and a client StreamEncoder consumes
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class MessageStart:
    id: str
    model: str
    usage: Usage | None = None  # input tokens when the provider reports them up front (Anthropic)


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    text: str = ""
    signature: str | None = None
    redacted: str | None = None
    raw: bool = False  # see ``Thinking.raw``


@dataclass(slots=True)
class ToolCallStart:
    """A new tool call. ``index`` counts tool calls within the message from 0."""

    index: int
    id: str
    name: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """A fragment of a tool call's JSON arguments; fragments concatenate to the whole ``arguments`` text."""

    index: int
    arguments: str


@dataclass(slots=True)
class Finish:
    reason: str
    stop_sequence: str | None = None


@dataclass(slots=True)
class UsageUpdate:
    """Usage so far, cumulative: a later update replaces an earlier one field by field where it is non-zero."""

    usage: Usage


@dataclass(slots=True)
class StreamError:
    """The provider reported an error inside the stream (or the stream broke)."""

    error: Any  # extproc.errors.GatewayError


Event = MessageStart | TextDelta | ThinkingDelta | ToolCallStart | ToolCallDelta | Finish | UsageUpdate | StreamError


THOUGHT_SEP = "__thought__"


def join_tool_id(call_id: str, signature: str | None) -> str:
    """A tool-call id for clients without a place for Gemini thought signatures: ``{id}__thought__{signature}``."""
    return f"{call_id}{THOUGHT_SEP}{signature}" if signature else call_id


def split_tool_id(raw: str) -> tuple[str, str | None]:
    """The inverse of ``join_tool_id``: (id, signature or None), when a client echoes such an id back."""
    call_id, sep, signature = raw.partition(THOUGHT_SEP)
    return (call_id, signature or None) if sep else (raw, None)


def merge_usage(into: Usage, update: Usage) -> Usage:
    """Fold a cumulative usage update into ``into`` (non-zero fields win) and return it."""
    if update.input_tokens:
        into.input_tokens = update.input_tokens
    if update.output_tokens:
        into.output_tokens = update.output_tokens
    if update.cached_tokens:
        into.cached_tokens = update.cached_tokens
    if update.cache_creation_tokens:
        into.cache_creation_tokens = update.cache_creation_tokens
    if update.reasoning_tokens:
        into.reasoning_tokens = update.reasoning_tokens
    return into
