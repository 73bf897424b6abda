"""The wire formats the gateway speaks, in one place. Everything else asks here and never compares format names.

A new format is one module satisfying ``contract.WireFormat`` plus one line in ``FORMATS``; mypy checks each entry
against the contract, and ``tests/unit/test_registry.py`` exercises every entry through the whole gateway core.
"""

from __future__ import annotations

from extproc.translation.errors import GatewayError
from extproc.translation.formats import (
    anthropic,
    azure,
    bedrock,
    bedrock_anthropic,
    gemini,
    openai,
    responses,
    vertex,
    vertex_anthropic,
)
from extproc.translation.formats.contract import CloudFormat, Endpoint, ProviderFormat, WireFormat

# Order matters only among formats sharing a path prefix: the first one's error shape answers unknown paths there.
FORMATS: dict[str, WireFormat] = {
    "openai": openai,
    "responses": responses,  # shares /openai/ with Chat Completions (whose error shape answers unknown paths there)
    "anthropic": anthropic,
    "gemini": gemini,
}


# Clouds' variants of the formats above: provider side only (their own paths, credentials, errors, stream framing).
CLOUD_FORMATS: dict[str, CloudFormat] = {
    "azure": azure,  # Azure OpenAI's deployment URLs (the /openai/v1/ surface is the openai format itself)
    "vertex": vertex,  # Gemini on Vertex AI
    "vertex_anthropic": vertex_anthropic,  # Claude on Vertex AI (rawPredict / streamRawPredict)
    "bedrock": bedrock,  # AWS Bedrock Converse / ConverseStream (any Bedrock model)
    "bedrock_anthropic": bedrock_anthropic,  # Claude on AWS Bedrock (InvokeModel / InvokeModelWithResponseStream)
}
SSE = "text/event-stream"


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def get(name: str) -> WireFormat:
    """The format called ``name`` (a provider's ``format``, or a client format)."""
    return FORMATS[name]


def provider_names() -> tuple[str, ...]:
    """Every format a provider may speak: the client formats and the clouds' variants."""
    return (*FORMATS, *CLOUD_FORMATS)


def provider(name: str) -> ProviderFormat:
    """The format a provider speaks (``Provider.format``): a client format or a cloud's variant of one."""
    fmt = FORMATS.get(name)
    return fmt if fmt is not None else CLOUD_FORMATS[name]


def passes_through(fmt: ProviderFormat, client: WireFormat) -> bool:
    """A request of ``client``'s format goes to a provider speaking ``fmt`` as the client wrote it (only the model
    name, and for a cloud's variant its path and envelope, adapted): the same format, or a cloud's variant of it."""
    if fmt is client:
        return True
    cloud = CLOUD_FORMATS.get(fmt.NAME)
    return cloud is not None and cloud.PASSTHROUGH_FROM == client.NAME


def stream_content_type(fmt: ProviderFormat) -> str:
    """What a streamed answer of a provider speaking ``fmt`` says its content type is (SSE but for Bedrock's binary
    event stream)."""
    cloud = CLOUD_FORMATS.get(fmt.NAME)
    return cloud.STREAM_CONTENT_TYPE if cloud is not None else SSE


def for_prefix(path: str) -> WireFormat | None:
    """The format whose error shape answers for ``path`` (the first registered with a matching prefix)."""
    for fmt in FORMATS.values():
        if path.startswith(fmt.PATH_PREFIX):
            return fmt
    return None


# Request lines seen, and where they went: clients repeat the same few, and routing them again costs microseconds
# on every request. Bounded; an entry is used only while its format is still the registered one.
_SEEN: dict[tuple[str, str, str], tuple[WireFormat, Endpoint]] = {}
_SEEN_MAX = 1024


def route(method: str, path: str, query: str) -> tuple[WireFormat, Endpoint] | None:
    """The client format and endpoint a request line names. ``None``: no format has that path prefix. A path under a
    known prefix that no format routes is a 404 in the prefix's error shape (raised as ``RoutingError``)."""
    key = (method, path, query)
    seen = _SEEN.get(key)
    if seen is not None and FORMATS.get(seen[0].NAME) is seen[0]:
        return seen
    found = _route(method, path, query)
    if found is not None and len(path) + len(query) <= 512:  # long query strings are routed each time, not kept
        if len(_SEEN) >= _SEEN_MAX:
            _SEEN.clear()
        _SEEN[key] = found
    return found


def _route(method: str, path: str, query: str) -> tuple[WireFormat, Endpoint] | None:
    first = for_prefix(path)
    if first is None:
        return None
    for fmt in FORMATS.values():
        if path.startswith(fmt.PATH_PREFIX):
            try:
                endpoint = fmt.route(method, path, query)
            except GatewayError as err:
                raise RoutingError(fmt, err) from None
            if endpoint is not None:
                return fmt, endpoint
    api = first.PATH_PREFIX.rstrip("/")
    raise RoutingError(first, GatewayError("not_found", f"unknown path {path} (the API here is {api}/...)", 404))


class RoutingError(Exception):
    """A request line under a format's prefix that cannot be served: answer ``error`` in ``fmt``'s shape."""

    def __init__(self, fmt: WireFormat, error: GatewayError) -> None:
        super().__init__(str(error))
        self.fmt = fmt
        self.error = error
