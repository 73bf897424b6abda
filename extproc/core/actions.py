"""What an exchange asks the servicer to do with an ext_proc message (turned into protobuf by the servicer)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Forward:
    """Let the message through, optionally changed (a ``CommonResponse``, plus a response body mode switch)."""

    set_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes | None = None  # None: unchanged; b"": clear it (hold a partial stream event)
    clear_route_cache: bool = False
    response_body_mode: str | None = None  # "NONE" | "STREAMED" (mode_override on response headers)
    metadata: dict[str, str] | None = None  # dynamic metadata for Envoy now (fallback routes: the attempts' context)
    replace: bool = False  # request headers answered with the whole new body (CONTINUE_AND_REPLACE)
    request_body_mode: str | None = None  # "BUFFERED": send the request body after all (mode_override on headers)


@dataclass(slots=True)
class Reply:
    """Answer the client now (an ``ImmediateResponse``): errors and the endpoints the service serves itself. The
    exchange ends with it."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)


class ServeMetrics:
    """Answer ``GET /metrics``: the servicer renders every worker's metrics (I/O the core never does)."""

    __slots__ = ()


CONTINUE = Forward()
METRICS = ServeMetrics()
