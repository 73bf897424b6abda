"""What the logs, the metrics and Envoy's access log need to know of one exchange, filled in as it goes.

The exchange and its response handler write it; observability (``metrics``, ``logs``) and the servicer (access-log
metadata) only read it. Nothing here steers a request.
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc.translation.canonical import Usage
from extproc.translation.capabilities import Adaptation

GATEWAY = "gateway"  # ``client`` of the gateway's own endpoints (/health, /metrics): not counted or logged


@dataclass(slots=True)
class Record:
    started: float  # time.monotonic() when the exchange began
    request_id: str | None = None
    client: str = ""  # the client's wire format ("" until the path says; GATEWAY for own endpoints)
    path: str = ""
    model: str = ""  # what the client asked for
    model_label: str = "other"  # the metric label: a configured model name, else "other"
    provider: str | None = None
    upstream_path: str = ""
    stream: bool = False
    status: int = 0
    usage: Usage | None = None
    error_type: str | None = None
    ttft: float | None = None  # seconds to the first content event of a stream
    # Models with several targets: attempts Envoy made, the target (provider/model) that answered, and every
    # attempt's target and status; ``attempt``: the record of one attempt's own stream (not counted).
    fallback: bool = False  # sent to a fallback route (several targets)
    attempts: int = 0
    served_by: str | None = None
    attempt_log: list[tuple[str, int]] | None = None  # (provider/model, status or 0) per attempt, from Envoy
    attempt: bool = False
    adaptations: list[Adaptation] | None = None  # what the request was changed in for its target (``shape``)
    # What the provider's answer says of itself (traces: gen_ai.response.*), when it was read
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    key: str | None = None  # the gateway key's name, with governance configured (never the key itself)
    cost: float | None = None  # USD, from governance's price table (None: no price for the model)

    @property
    def counted(self) -> bool:
        """A client request (metrics and request log), not the gateway's own endpoint, an unknown path or one
        attempt of a request (counted apart)."""
        return bool(self.client) and self.client != GATEWAY and not self.attempt


def outcome(status: int, error_type: str | None = None) -> str:
    """How an upstream attempt ended, for ``proxy_upstream_attempts_total``: no_response (connect failure, reset,
    timeout: nothing came back), success, rate_limited, client_error, server_error."""
    if status == 0 or error_type in ("network", "timeout", "overloaded"):
        return "no_response"
    if status < 400:
        return "success"
    if status == 429:
        return "rate_limited"
    return "client_error" if status < 500 else "server_error"
