"""One error type for the whole gateway, carrying the seed's error vocabulary and an HTTP status.

Format modules turn a provider's error body into a ``GatewayError`` (``parse_error``) and a ``GatewayError`` into the
client's own error body (``build_error``). The ``type`` is one of the seed's types, so each client format can map it
onto its own vocabulary and each official SDK raises its matching exception class.
"""

from __future__ import annotations

# The seed's error types, and the status each gets when nothing more specific is known.
ERROR_TYPES: dict[str, int] = {
    "invalid_request": 400,
    "auth": 401,
    "permission": 403,
    "not_found": 404,
    "unknown_model": 404,
    "request_too_large": 413,
    "rate_limit": 429,
    "server_error": 500,
    "network": 502,
    "overloaded": 503,
    "timeout": 504,
}

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request",
    401: "auth",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit",
    502: "network",
    503: "overloaded",
    504: "timeout",
    529: "overloaded",
}


def type_for_status(status: int) -> str:
    """The seed error type an HTTP status stands for."""
    found = _TYPE_BY_STATUS.get(status)
    if found:
        return found
    return "invalid_request" if 400 <= status < 500 else "server_error"


class GatewayError(Exception):
    """An error to answer a client with, in the client's own format.

    ``param`` names the offending request field where known; ``code`` is a provider's own error code worth passing on;
    ``retry_after`` is passed on as the ``retry-after`` header.
    """

    __slots__ = ("code", "message", "param", "retry_after", "status", "type")

    def __init__(
        self,
        type: str,
        message: str,
        status: int | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.status = status if status is not None else ERROR_TYPES.get(type, 500)
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"GatewayError({self.type!r}, {self.message!r}, {self.status})"


def invalid(message: str, param: str | None = None) -> GatewayError:
    """Shorthand for the common 400."""
    return GatewayError("invalid_request", message, 400, param=param)
