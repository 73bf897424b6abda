"""Incremental stream framing shared by every format: Server-Sent Events and Gemini's JSON-array stream.

Envoy hands the service a provider stream in arbitrary pieces (an event may arrive split across two messages, down to
one byte each). Both parsers here take one chunk at a time and return the complete frames it finished; they keep only
the unfinished tail, so memory is bounded by the largest single event, not by the length of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEParser:
    """The WHATWG event-stream grammar: LF, CRLF or CR line ends; ``field:value`` with an optional space; comments
    (``:``-lines, keep-alives) ignored; several ``data:`` lines joined with ``\\n``; a blank line dispatches."""

    __slots__ = ("_buf", "_data", "_event", "_has_data", "_pending_cr")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._has_data = False
        self._pending_cr = False  # the last chunk ended in CR: a following LF belongs to it

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._pending_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._pending_cr = False
        buf = self._buf + chunk if self._buf else chunk
        out: list[SSEEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end = cr
                nxt = cr + 1
                if nxt < n:
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._pending_cr = True
            elif lf >= 0:
                end = lf
                nxt = lf + 1
            else:
                break
            self._line(buf[start:end], out)
            start = nxt
        self._buf = buf[start:]
        return out

    def close(self) -> list[SSEEvent]:
        """End of stream: a final event without its blank line is still delivered (providers omit it on [DONE])."""
        out: list[SSEEvent] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            if self._has_data:
                out.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            self._has_data = False
            return
        if line[0] == 0x3A:  # ":" comment / keep-alive
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # "id" and "retry" carry nothing the gateway needs.


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """One SSE frame, LF-framed, as every provider writes them."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class JSONArrayStreamParser:
    """Gemini's ``streamGenerateContent`` without ``alt=sse``: one JSON array written element by element.

    Returns each top-level element's bytes as soon as its closing brace arrives, tracking strings and escapes so that
    brackets inside strings don't count. Whitespace, commas and the array's own brackets are skipped.
    """

    __slots__ = ("_buf", "_depth", "_escape", "_in_string", "_scan")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._scan = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self._buf
        buf += chunk
        i = self._scan
        depth = self._depth
        in_string = self._in_string
        escape = self._escape
        n = len(buf)
        start = 0
        while i < n:
            c = buf[i]
            if in_string:
                if escape:
                    escape = False
                elif c == 0x5C:  # backslash
                    escape = True
                elif c == 0x22:
                    in_string = False
            elif depth == 0:
                if c == 0x7B:  # "{" opens an element
                    depth = 1
                    start = i
                else:  # "[", ",", "]", whitespace between elements
                    start = i + 1
            elif c == 0x22:
                in_string = True
            elif c == 0x7B or c == 0x5B:
                depth += 1
            elif c == 0x7D or c == 0x5D:
                depth -= 1
                if depth == 0:
                    out.append(bytes(buf[start : i + 1]))
                    start = i + 1
            i += 1
        del buf[:start]
        self._scan = i - start
        self._depth = depth
        self._in_string = in_string
        self._escape = escape
        return out

    def pending(self) -> bool:
        """True while an element is started but not finished (a truncated stream)."""
        return self._depth > 0
