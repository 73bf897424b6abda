"""Structured logs: one JSON line per finished request on stdout, with the seed's fields plus tokens and error type.

Only what is listed here is ever logged: never headers, never bodies (unless ``--verbose`` asks, and then through
``redact``), so provider keys and client credentials cannot reach a log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from typing import Any

import orjson

from extproc.core.record import Record

_SECRET_RE = re.compile(
    rb'(?i)("?(?:authorization|x-api-key|x-goog-api-key|api[_-]?key|key)"?\s*[:=]\s*"?)(?:Bearer\s+)?[^"&\s,}]+'
)


def redact(data: bytes) -> bytes:
    """Mask anything that looks like a credential in a body or header dump (for ``--verbose`` debug lines)."""
    return _SECRET_RE.sub(rb"\1[REDACTED]", data)


def _now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class _Lines:
    """Request lines are batched: one write per 100 ms (or 64 KiB) instead of a flushed write per request, which
    cost a syscall on the hot path. Process-level lines (logging) and shutdown flush at once."""

    __slots__ = ("buf", "scheduled")

    def __init__(self) -> None:
        self.buf: list[bytes] = []
        self.scheduled = False

    def add(self, line: bytes) -> None:
        self.buf.append(line)
        if len(self.buf) >= 256:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(0.1, self.flush)
                self.scheduled = True
            except RuntimeError:  # no event loop (tests, tools): write now
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if self.buf:
            data, self.buf = b"".join(self.buf), []
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


_lines = _Lines()
flush = _lines.flush


def write(record: dict[str, Any]) -> None:
    _lines.add(orjson.dumps(record) + b"\n")


def request_line(rec: Record, duration: float) -> dict[str, Any]:
    status = rec.status or 0
    out: dict[str, Any] = {
        "timestamp": _now(),
        "level": "error" if status >= 500 else ("warn" if status >= 400 else "info"),
        "request_id": rec.request_id,
        "message": "request completed" if status < 400 else "request failed",
        "duration_ms": round(duration * 1000, 2),
        "status_code": status,
        "format": rec.client,
        "model": rec.model,
        "provider": rec.provider,
        "streaming": rec.stream,
    }
    if rec.usage is not None:
        out["input_tokens"] = rec.usage.input_tokens
        out["output_tokens"] = rec.usage.output_tokens
    if rec.error_type:
        out["error_type"] = rec.error_type
    if rec.key is not None:  # governance on: the key's name (never the key) and what the request cost
        out["key"] = rec.key
        if rec.cost is not None:
            out["cost_usd"] = round(rec.cost, 6)
    if rec.ttft is not None:
        out["ttft_ms"] = round(rec.ttft * 1000, 2)
    if rec.fallback:
        out["attempts"] = rec.attempts
        out["served_by"] = rec.served_by
        out["attempt_log"] = [{"target": t, "status": code or None} for t, code in rec.attempt_log or ()]
    if rec.adaptations:
        out["adapted"] = ",".join(str(a) for a in rec.adaptations)
    return out


def adaptation_line(rec: Record) -> dict[str, Any]:
    """The debug line for a request changed for its target model: one entry per parameter, what was done."""
    return {
        "timestamp": _now(),
        "level": "debug",
        "request_id": rec.request_id,
        "message": "request adapted to the target model",
        "model": rec.model,
        "provider": rec.provider,
        "adaptations": [
            {"parameter": a.parameter, "action": a.action, **({"value": a.value} if a.value is not None else {})}
            for a in rec.adaptations or ()
        ],
    }


class JSONFormatter(logging.Formatter):
    """Process-level log lines (start, stop, config faults) in the same JSON shape."""

    def format(self, record: logging.LogRecord) -> str:
        _lines.flush()  # keep request lines before this one
        out: dict[str, Any] = {"timestamp": _now(), "level": record.levelname.lower(), "message": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("grpc").setLevel(logging.WARNING)
