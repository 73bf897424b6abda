"""Wire formats, one module each: ``openai``, ``anthropic``, ``gemini``.

Every format module is pure (bytes and dicts in, bytes and dataclasses out; no gRPC, no I/O, no globals that change)
and exposes the same API, both directions, so the servicer can pair any client format with any provider format:

Client side (the client speaks this format):
    parse_request(body: bytes | dict, *, model: str | None = None, stream: bool = False) -> canonical.Request
        ``body`` may be the already-decoded JSON object (the exchange decodes once to read ``model``).
        Gemini passes the model and stream flag from the URL path; the others read them from the body.
        Raises errors.GatewayError("invalid_request", ..., 400, param=...) for anything the real API refuses.
    build_response(resp: canonical.Response, *, model: str) -> bytes
    build_error(err: errors.GatewayError, *, request_id: str | None) -> bytes
    StreamEncoder(*, model: str, include_usage: bool, ...)   .encode(event) -> bytes, .finish() -> bytes,
        .error(err) -> bytes, .media_type

Provider side (the provider speaks this format):
    build_request(req: canonical.Request, *, model: str) -> bytes
    upstream_path(*, model: str, stream: bool) -> str       (relative to the provider's base URL)
    auth_headers(api_key: str) -> list[tuple[str, str]]
    EXTRA_HEADERS: list[tuple[str, str]]                     (set on translated requests, e.g. anthropic-version)
    parse_response(body: bytes) -> canonical.Response
    parse_error(status: int, body: bytes) -> errors.GatewayError
    StreamDecoder()   .feed(chunk: bytes) -> list[canonical.Event], .close() -> list[canonical.Event]
"""
