"""The contract every wire format implements, client side and provider side.

A wire format is one module (``openai``, ``anthropic``, ``gemini``, ...) that satisfies ``WireFormat``; the registry
(``extproc.translation.formats.registry``) lists them, and the rest of the gateway asks the registry, never compares
format names. Adding a format is one module plus one registry line; ``tests/unit/test_registry.py`` checks that every
registered module satisfies the whole contract, and mypy checks the registry's entries against ``WireFormat``.

Everything here is pure: bytes, dicts and canonical dataclasses in and out, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from extproc.translation import canonical as c
from extproc.translation.capabilities import Capabilities
from extproc.translation.errors import GatewayError

# Endpoint kinds every format may route to (a format may define more for itself; the exchange knows these).
GENERATE = "generate"  # a model call: translated or passed through
COUNT_TOKENS = "count_tokens"  # a token count: passed through, or translated where both sides can count
MODELS = "models"  # the model listing, answered by the gateway from the config
LOCAL = "local"  # answered by the gateway itself from its own state (e.g. stored responses); see ``Endpoint.op``
EMBED = "embed"  # embeddings: passed through to a provider of the same format, else translated


@dataclass(slots=True, frozen=True)
class Endpoint:
    """What a client's request line asks for, as the format's ``route`` read it."""

    kind: str  # GENERATE | COUNT_TOKENS | MODELS | LOCAL | EMBED
    methods: tuple[str, ...] = ("POST",)  # what the path allows (others: 405 with ``allow``)
    model: str | None = None  # from the path (Gemini); None when the body names it
    stream: bool = False  # from the path (Gemini); body-carried flags are read by ``request_model``
    model_id: str | None = None  # MODELS: one model's id; None lists them all
    op: str = ""  # LOCAL: which operation (e.g. "get", "delete", "input_items"); "" otherwise
    resource_id: str | None = None  # LOCAL: the id in the path
    opts: Mapping[str, Any] = field(default_factory=dict)  # the format's own path facts (Gemini: version, sse)


@dataclass(slots=True, frozen=True)
class CredentialHeader:
    """Where a provider of this format takes its API key: Envoy injects ``prefix + key`` into ``header``."""

    header: str
    prefix: str = ""


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """A configured model as the listings show it (the format decides the shape)."""

    name: str
    provider: str
    target_model: str = ""
    description: str = ""
    can_count: bool = False  # token counting reaches a provider that counts
    created: int = 0
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    thinking: bool | None = None


@dataclass(slots=True)
class BuildOptions:
    """Everything a provider-side ``build_request`` may need besides the request and the upstream model name."""

    default_max_tokens: int = 4096  # for formats that require a max (Anthropic)
    # What the target model accepts (the request was already shaped to it); the format picks its reasoning knob from
    # it. None: the catalog is switched off, the format falls back to its own guess from the model name.
    capabilities: Capabilities | None = None


@dataclass(slots=True)
class StreamOptions:
    """One options object for stream encoders (client side) and decoders (provider side)."""

    model: str = ""  # the model name the client asked for (encoders echo it)
    include_usage: bool = False  # the client asked for usage in its stream
    created: int = 0  # unix time the gateway started answering
    request_id: str | None = None
    endpoint: Endpoint | None = None  # the client's endpoint (Gemini: SSE or JSON array)
    request: c.Request | None = None  # the parsed client request, for answers that repeat it (Responses)


class StreamEncoder(Protocol):
    """Canonical events in, the client's stream bytes out."""

    media_type: str

    def encode(self, event: c.Event) -> bytes: ...

    def finish(self) -> bytes: ...

    def error(self, err: GatewayError) -> bytes: ...


class StreamDecoder(Protocol):
    """The provider's stream bytes in (cut anywhere), canonical events out."""

    def feed(self, chunk: bytes) -> list[c.Event]: ...

    def close(self) -> list[c.Event]: ...


class PassThroughStream(Protocol):
    """A same-format stream the gateway changed on the way up (e.g. asked for usage): bytes in, the client's bytes
    out, with the usage it saw."""

    usage: c.Usage | None

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class HistoryMissing(Exception):
    """A stored answer a conversation goes through is gone (expired, deleted, another key's, or never kept)."""

    def __init__(self, answer_id: str) -> None:
        super().__init__(answer_id)
        self.answer_id = answer_id


class AnswerStore(Protocol):
    """Where the gateway keeps answers for formats whose clients expect the server to (OpenAI's Responses API:
    ``store``, ``previous_response_id``). Every method is scoped by the gateway key's name, so keys never see each
    other's answers. Implemented in ``extproc.core.conversations`` (in memory) and ``extproc.transport.response_store``
    (SQLite, shared by the workers)."""

    def put(
        self, scope: str, answer: dict[str, Any], input_items: list[dict[str, Any]], previous_id: str | None
    ) -> None:
        """Keep an answer (with its output items), the input items of its request and the answer it continued."""
        ...

    def get(self, scope: str, answer_id: str) -> dict[str, Any] | None: ...

    def input_items(self, scope: str, answer_id: str) -> list[dict[str, Any]] | None: ...

    def history(self, scope: str, answer_id: str) -> list[dict[str, Any]]:
        """Every input and output item of the chain ending in ``answer_id``, oldest first (``HistoryMissing``)."""
        ...

    def items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def delete(self, scope: str, answer_id: str) -> bool: ...


@dataclass(slots=True)
class Conversation:
    """A request made whole from the store (``ConversationState.expand``)."""

    head: dict[str, Any]  # the request to send on (the client's own when nothing changed)
    changed: bool  # ``head`` differs from what the client sent: the body must be re-serialised
    own_items: list[dict[str, Any]]  # this request's own input items (what ``AnswerStore.put`` keeps)
    keep: bool  # the client wants the answer kept (``store``)
    previous_id: str | None = None


class ConversationState(Protocol):
    """The pure pieces a stateful format gives the gateway's store (a format's ``STATE``; None when stateless)."""

    def expand(self, head: dict[str, Any], store: AnswerStore | None, scope: str, *, passthrough: bool) -> Conversation:
        """The request with the stored conversation it continues and the stored items it refers to put in. Towards
        a provider of the same format (which keeps its own), only what only the gateway holds is put in."""
        ...

    def kept(self, resp: c.Response, *, model: str, request: c.Request) -> dict[str, Any]:
        """The answer object to keep for a translated non-streamed answer."""
        ...

    def kept_stream(self, encoder: StreamEncoder) -> dict[str, Any] | None:
        """The answer object to keep once a translated stream ended (None: nothing to keep, e.g. it failed)."""
        ...

    def serve(self, endpoint: Endpoint, query: str, store: AnswerStore | None, scope: str) -> bytes:
        """A ``LOCAL`` endpoint answered from the store (``GatewayError`` 404 for an unknown id)."""
        ...


class ProviderFormat(Protocol):
    """The provider side of a wire format: what the gateway needs to send a request to a provider that speaks it and
    to read the answer. Every ``WireFormat`` is one; a cloud's variant of a format (``CloudFormat``) is only this."""

    NAME: str  # registry key
    CREDENTIAL: CredentialHeader  # where a provider of this format takes its key
    EXTRA_HEADERS: list[tuple[str, str]]  # set on requests translated into this format (e.g. anthropic-version)
    COUNTS_TOKENS: bool  # a provider of this format counts tokens (``build_count_request`` works)
    EMBEDS: bool  # a provider of this format embeds texts (``build_embed_request`` works)

    # ---- provider side
    def upstream_path(self, *, model: str, stream: bool, kind: str = GENERATE) -> str:
        """Path of a translated request, relative to the provider's base URL."""
        ...

    def passthrough_path(self, endpoint: Endpoint, *, model: str, path: str, query: str) -> str:
        """Path of a same-format request (``path``/``query`` are the client's), relative to the provider's base URL."""
        ...

    def passthrough_body(
        self, body: bytes, head: dict[str, Any], *, model: str, stream: bool
    ) -> tuple[bytes, PassThroughStream | None]:
        """The bytes a same-format request goes upstream with: the client's own, with only the top-level model
        value's bytes changed when it differs from ``model``; plus a stream filter when the change needs one."""
        ...

    def build_request(self, req: c.Request, *, model: str, options: BuildOptions | None = None) -> bytes: ...

    def parse_response(self, body: bytes) -> c.Response: ...

    def parse_error(self, status: int, body: bytes) -> GatewayError: ...

    def stream_decoder(self, opts: StreamOptions) -> StreamDecoder: ...

    # ---- token counting, provider side (a format without counting raises a 400 ``GatewayError`` from these)
    def build_count_request(self, req: c.Request, *, model: str) -> bytes: ...

    def parse_count_response(self, body: bytes) -> int: ...

    def fetches_url(self, part: c.Image | c.Document) -> bool | str:
        """Whether a provider of this format reads ``part.url`` itself (True), needs the bytes inline (False), or can
        never use it (a reason)."""
        ...

    # ---- embeddings, provider side (``upstream_path(kind=EMBED)``; without embeddings: a 400 ``GatewayError``)
    def build_embed_request(self, req: c.EmbedRequest, *, model: str) -> bytes: ...

    def parse_embed_response(self, body: bytes) -> c.EmbedResponse: ...


class CloudFormat(ProviderFormat, Protocol):
    """A cloud's variant of a format (Azure OpenAI, Vertex AI, Bedrock): provider side only, with its own paths,
    errors and stream framing. Its requests may be the base format's bodies unchanged (``PASSTHROUGH_FROM``)."""

    # The client format whose requests go to this provider as the client wrote them (``passthrough_path`` and
    # ``passthrough_body`` adapt them); None: every request is translated.
    PASSTHROUGH_FROM: str | None
    STREAM_CONTENT_TYPE: str  # what a streamed answer's content type starts with ("text/event-stream", ...)


class WireFormat(ProviderFormat, Protocol):
    """One wire format, both directions. Implemented by a module; see the module docstrings for each format's API."""

    PATH_PREFIX: str  # client paths start with it ("/openai/"); a prefix may be shared by formats (errors: first one)
    STATE: ConversationState | None  # the server keeps answers its clients continue (Responses); None: stateless

    # ---- client side
    def route(self, method: str, path: str, query: str) -> Endpoint | None:
        """The endpoint a client request line names, or None if this format has no such path (the registry then
        tries the next format with the same prefix, and answers 404 in the first one's error shape). A path of this
        format that is malformed raises ``GatewayError`` (answered in this format's error shape)."""
        ...

    def client_credential(self, headers: Mapping[str, str], query: str) -> str | None:
        """The gateway key a client presents, read from this format's own auth header (or query)."""
        ...

    def request_model(self, endpoint: Endpoint, head: dict[str, Any]) -> tuple[Any, bool]:
        """The client's model name (unvalidated: any JSON value) and stream flag, from the path or the decoded body."""
        ...

    def parse_request(
        self, body: bytes | dict[str, Any], *, model: str | None = None, stream: bool = False
    ) -> c.Request:
        """A client request into the canonical model; ``GatewayError`` (400) for anything the real API refuses."""
        ...

    def build_response(self, resp: c.Response, *, model: str, request: c.Request | None = None) -> bytes:
        """The client's answer; ``request`` is the parsed client request, for formats whose answers repeat it."""
        ...

    def build_error(self, err: GatewayError, *, request_id: str | None) -> bytes: ...

    def stream_encoder(self, opts: StreamOptions) -> StreamEncoder: ...

    def list_models(self, models: list[ModelInfo], model_id: str | None, query: str) -> bytes:
        """The listing (or one model) in this format's shape; ``GatewayError`` 404 for an unknown id."""
        ...

    # ---- token counting, client side: parse a count request, build the answer (400 ``GatewayError`` without)
    def parse_count_request(self, body: bytes | dict[str, Any], *, model: str) -> c.Request: ...

    def build_count_response(self, tokens: int) -> bytes: ...

    # ---- embeddings, client side (a format without an embeddings endpoint never routes to EMBED; these raise 400)
    def parse_embed_request(self, body: bytes | dict[str, Any], *, model: str) -> c.EmbedRequest: ...

    def build_embed_response(self, resp: c.EmbedResponse, *, model: str, request: c.EmbedRequest) -> bytes: ...
