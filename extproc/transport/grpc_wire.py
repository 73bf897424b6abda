"""A small gRPC server on asyncio: HTTP/2 frames, HPACK (the ``hpack`` package) and gRPC length prefixes. I/O only.

Why not grpc.aio: per ext_proc message it spent ~250 us of Python on this project's 2-core benchmark machine (the
poller thread's wake-ups, futures, task steps, one ``sendmsg`` per write), four times the cost of translating the
request. Here one ``data_received`` call parses every frame that arrived, hands each complete gRPC message to the
stream's handler synchronously, and writes all answers with one ``send``. See ``benchmarks/README.md``.

What it speaks is what gRPC clients (Envoy's own client, grpc C-core as in Envoy's ``google_grpc``) use: HTTP/2
with prior knowledge over cleartext (TCP or a Unix socket) or over TLS with ALPN ``h2`` (``server_tls``: client
certificates required); SETTINGS, PING, GOAWAY, RST_STREAM, PRIORITY (ignored), CONTINUATION, padding, flow control
in both directions, ``grpc-timeout``. No compression, no push.

Every peer is held to ``Limits`` (defaults sized for Envoy as the only peer; ``docs/transport.md``): concurrent
streams, message size, bytes buffered per connection each way, header list size and CONTINUATION frames, handshake,
idle and keepalive timers, and budgets for control frames and stream resets. A peer that breaks the protocol or a
budget gets a GOAWAY with the RFC 9113 error code and is disconnected; peer faults are logged as one warning line
per ``log_interval`` (with a count of those suppressed), never with a traceback.

A service is a callable ``(path) -> Call | None``; ``None`` answers UNIMPLEMENTED. A server made with ``metadata``
(header names) calls it as ``(path, {name: value})`` with those of the stream's initial metadata it found (tracing:
Envoy sends ``traceparent`` there); without, no header beyond ``:path`` and ``grpc-timeout`` is looked at. A ``Call``
gets each request message and returns the answer's bytes, or an awaitable of them (the stream's later messages wait
their turn); it answers every message with exactly one message, or raises ``CallError`` to end the stream with that
gRPC status (quietly: no log line). ``end()`` is called exactly once, however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import ssl as _ssl
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from hpack import Decoder
from hpack.exceptions import HPACKError

from extproc.transport.hpack_lean import Hole, LeanDecoder

log = logging.getLogger("extproc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# HTTP/2 error codes (RFC 9113 section 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED = (
    0x0,
    0x1,
    0x2,
    0x3,
    0x4,
    0x5,
)
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x8, 0x9, 0xB
# gRPC status codes (for CallError and our own trailers)
OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 3, 4
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 9, 12, 13, 14

MAX_FRAME = 1 << 18  # what we accept from the peer (SETTINGS_MAX_FRAME_SIZE)
STREAM_WINDOW = 1 << 24  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
_STREAM_HALF = STREAM_WINDOW >> 1  # a stream's window is given back once this much of it is used
MAX_WINDOW = 0x7FFFFFFF
MiB = 1024 * 1024
_REMEMBER_BLOCK = 1024  # header blocks remembered by their bytes are at most this long (Envoy's are ~100 bytes)


@dataclass(slots=True, frozen=True)
class Limits:
    """What one peer may cost a worker. Defaults assume Envoy is the only peer: a few HTTP/2 connections per Envoy
    worker thread, one stream per HTTP request, messages up to the gateway's ``max_request_bytes`` (32 MiB by
    default) plus protobuf overhead, streams that stay open and silent for minutes while an LLM answers. Times are
    seconds; 0 turns a timer off. ``docs/transport.md`` gives the reason for each default."""

    # streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS): more are refused (REFUSED_STREAM);
    # four times as many until the peer has acknowledged our SETTINGS
    max_concurrent_streams: int = 1024
    # one gRPC message; larger ones end their stream with RESOURCE_EXHAUSTED
    max_message: int = 33 * MiB
    # request bytes held per connection (partial messages, messages waiting for a busy handler or for the answers
    # to drain). Past it the stream that brought the bytes ends with RESOURCE_EXHAUSTED.
    max_buffered_in: int = 128 * MiB
    # answer bytes per connection waiting for the peer's flow-control window. Past it the connection takes no more
    # work (messages wait, receive windows are not re-opened) until half of it has drained.
    max_buffered_out: int = 8 * MiB
    # our connection receive window: what a peer can send while the windows are not re-opened
    connection_window: int = 16 * MiB
    # decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); the HPACK-encoded block may be at most twice this
    max_header_list: int = 64 * 1024
    # CONTINUATION frames in one header block
    max_continuations: int = 16
    # from accepting the connection (TLS handshake included) to the client preface and its SETTINGS
    handshake_timeout: float = 10.0
    # a connection with no open stream for this long is closed (GOAWAY NO_ERROR); longer than Envoy's own idle
    # timeout for upstream connections (1 h by default), so that Envoy, which can do it without a race, closes first
    idle_timeout: float = 3900.0
    # a PING every keepalive_interval; no ACK within keepalive_timeout and the connection is closed
    keepalive_interval: float = 60.0
    keepalive_timeout: float = 20.0
    # PING, SETTINGS, PRIORITY, empty DATA and unknown frames: a burst of this many, then this many per second;
    # past it: GOAWAY ENHANCE_YOUR_CALM
    control_burst: int = 200
    control_rate: float = 20.0
    # streams the peer resets before we answered anything, and streams we refuse: a burst, then per second (rapid
    # reset; Envoy resets each ext_proc stream when its request is done, after our answers, which does not count)
    reset_burst: int = 1024
    reset_rate: float = 100.0
    # warnings about peer faults: at most one line per interval, with a count of the ones suppressed
    log_interval: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"gRPC limit {f.name} must not be negative")
        if self.max_concurrent_streams < 1 or self.max_message < 1 or self.max_header_list < 1:
            raise ValueError("max_concurrent_streams, max_message and max_header_list must be at least 1")

    def replace(self, **changes: float) -> Limits:
        """A copy with some limits changed; values given as text (``"2048"``) are converted to the field's type."""
        kinds = {f.name: f.type for f in fields(self)}
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in changes.items():
            if name not in kinds:
                raise ValueError(f"unknown gRPC limit {name!r}; known: {', '.join(kinds)}")
            values[name] = int(value) if kinds[name] in ("int", int) else float(value)
        return Limits(**values)


_FRAME = struct.Struct(">BHBBL")  # 24-bit length as byte + short, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GRPC_PREFIX = struct.Struct(">BL")
_KEEPALIVE = b"ka-probe"


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def _hpack_int(value: int) -> bytes:
    """An HPACK integer with a 7-bit prefix (string lengths, Huffman bit clear)."""
    if value < 127:
        return bytes([value])
    out = bytearray([127])
    value -= 127
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman: encoder state never changes."""
    return b"\x00" + _hpack_int(len(name)) + name + _hpack_int(len(value)) + value


# Response headers: ":status: 200" is static-table entry 8; content-type (entry 31) with a literal value.
_RESPONSE_HEADERS = b"\x88" + b"\x0f\x10" + bytes([16]) + b"application/grpc"


def _trailers(status: int, message: str) -> bytes:
    block = _literal(b"grpc-status", str(status).encode())
    if message:
        # gRPC percent-encodes grpc-message's UTF-8 bytes outside printable ASCII, and "%" itself
        raw = message.encode()[:200]
        text = "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)
        if len(text) > 120:  # kept short; never cut inside a %XX
            text = text[:120]
            text = text[: text.rfind("%")] if "%" in text[-2:] else text
        block += _literal(b"grpc-message", text.encode())
    return block


_TRAILERS_OK = _trailers(OK, "")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def _grpc_timeout(value: bytes) -> float | None:
    """``grpc-timeout``: 1 to 8 digits and a unit; anything else is ignored (no deadline)."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 0 < len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * unit


def server_tls(cert: str, key: str, client_ca: str) -> _ssl.SSLContext:
    """A server TLS context for mTLS: our certificate chain and key, client certificates required and checked
    against ``client_ca``, TLS 1.2 or later, ALPN ``h2`` (RFC 9113 section 9.2: AEAD ciphers, no renegotiation)."""
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = _ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=client_ca)
    ctx.set_alpn_protocols(["h2"])
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")  # TLS 1.2 only; TLS 1.3 suites are all AEAD
    ctx.options |= _ssl.OP_NO_COMPRESSION | _ssl.OP_NO_RENEGOTIATION
    return ctx


class CallError(Exception):
    """Raised by ``Call.message`` (or its awaitable) to end the stream with this gRPC status and message, quietly:
    e.g. INVALID_ARGUMENT for a message that does not parse, FAILED_PRECONDITION for one out of order."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Call(Protocol):
    def message(self, data: bytes) -> bytes | Awaitable[bytes]: ...

    def end(self) -> None: ...


Service = Callable[..., "Call | None"]  # (path) -> Call | None, or (path, metadata) with ``Server(metadata=...)``


class QuietLog:
    """Warnings about peers, at most one line per ``interval``; the next line says how many were left out."""

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -1e18
        self.suppressed = 0

    def warning(self, msg: str, *args: object, exc_info: bool = False, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        self.last = now
        if self.suppressed:
            msg += " (and %d more peer faults in the last %.0fs, not logged)"
            args = (*args, self.suppressed, self.interval)
            self.suppressed = 0
        log.log(level, msg, *args, exc_info=exc_info, stacklevel=2)


class _Bucket:
    """A token bucket: ``burst`` at once, refilled at ``rate`` per second."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Stream:
    __slots__ = (
        "answer",
        "blocked",
        "buf",
        "busy",
        "call",
        "ended",
        "finish_after",
        "headers_sent",
        "local_closed",
        "outbox",
        "pending",
        "remote_closed",
        "send_window",
        "sid",
        "task",
        "timer",
        "unacked",
    )

    def __init__(self, sid: int, call: Call, send_window: int) -> None:
        self.sid = sid
        self.call = call
        self.buf = bytearray()  # received bytes that do not yet make a whole gRPC message
        self.pending: deque[bytes] = deque()  # whole messages waiting (handler busy, or the connection backed up)
        self.busy = False
        self.task: asyncio.Task[None] | None = None
        self.answer: Awaitable[bytes] | None = None  # the handler's pending answer (closed if never started)
        self.remote_closed = False
        self.local_closed = False
        self.headers_sent = False
        self.send_window = send_window
        self.outbox = bytearray()  # framed answer bytes waiting for flow-control window
        self.blocked = False
        self.finish_after: tuple[int, str] | None = None  # trailers to send once the outbox drains
        self.unacked = 0  # received DATA bytes not yet given back with WINDOW_UPDATE
        self.ended = False
        self.timer: asyncio.TimerHandle | None = None  # the grpc-timeout deadline


class Connection(asyncio.Protocol):
    """One HTTP/2 connection from a gRPC client."""

    __slots__ = (
        "backlog",
        "blocked",
        "born",
        "buffered_in",
        "closing",
        "congested",
        "conn_half",
        "conn_send_window",
        "conn_unacked",
        "conn_window",
        "continuations",
        "control",
        "decoder",
        "flush_pending",
        "goaway_sent",
        "handshaken",
        "header_block",
        "header_flags",
        "header_sid",
        "hole",
        "idle_since",
        "inbuf",
        "last_sid",
        "limits",
        "linger",
        "max_streams",
        "out",
        "paths",
        "peer_max_frame",
        "peer_window",
        "ping_out",
        "pinged",
        "preface",
        "resets",
        "server",
        "streams",
        "table_update",
        "transport",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        limits = self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.flush_pending = False  # a write at the end of this turn of the event loop (``_flush_soon``)
        self.inbuf = b""
        self.preface = False
        self.handshaken = False  # the client preface and its first SETTINGS arrived
        self.out = bytearray()
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        # With tracing (metadata asked for), Envoy's traceparent makes every block new: the lean decoder is cheaper.
        self.decoder: Decoder | LeanDecoder = LeanDecoder() if server.metadata else Decoder()
        self.decoder.max_header_list_size = limits.max_header_list
        # header blocks that do not change the HPACK table -> their :path and grpc-timeout
        self.paths: dict[bytes, tuple[str, float | None, dict[str, str] | None]] = {}
        self.hole: Hole | None = None  # with tracing: the last block but for its traceparent (``Hole``)
        self.header_sid = 0  # stream whose header block continues in CONTINUATION frames
        self.header_block = b""
        self.header_flags = 0
        self.continuations = 0
        self.peer_window = 65535  # initial stream send window (peer's SETTINGS_INITIAL_WINDOW_SIZE)
        self.peer_max_frame = 16384
        self.conn_send_window = 65535
        self.conn_window = max(65535, min(limits.connection_window, MAX_WINDOW))  # our receive window
        self.conn_half = self.conn_window >> 1
        # Until the peer acknowledges our SETTINGS it may not know the limit yet (Envoy puts every pending request on a
        # new connection before its SETTINGS arrive): four times as many are tolerated until then.
        self.max_streams = 4 * limits.max_concurrent_streams
        self.conn_unacked = 0  # received DATA bytes not yet given back to the connection window
        self.blocked: list[_Stream] = []
        self.backlog = 0  # answer bytes in outboxes (waiting for the peer's window)
        self.buffered_in = 0  # request bytes held in streams' buffers and pending messages
        self.congested = False  # backlog went over max_buffered_out: take no more work until half of it is gone
        self.table_update = False  # open our next header block with an HPACK table size update
        self.goaway_sent = False
        self.closing = False
        self.control = _Bucket(limits.control_burst, limits.control_rate)
        self.resets = _Bucket(limits.reset_burst, limits.reset_rate)
        self.born = time.monotonic()
        self.pinged = self.born  # when our last keepalive PING went out
        self.ping_out = 0.0  # the same while its ACK has not come back (0: none outstanding)
        self.idle_since: float | None = None
        self.linger = 0.0  # after an idle GOAWAY: not closed before this (streams already in flight get refused)

    # ---------------------------------------------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's transports are not asyncio.Transport)
        self.server.connections.add(self)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() != "h2":
            self.server.quiet.warning("gRPC connection from %s refused: TLS without ALPN h2", self._peer())
            self.closing = True
            transport.close()
            return
        self.out += self.server.preface
        if self.server.draining:
            self.goaway()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        for st in list(self.streams.values()):
            self._drop(st)
        self.streams.clear()
        self.buffered_in = self.backlog = 0

    def pause_writing(self) -> None:
        """The peer is not reading what we write: stop reading what it sends until it catches up."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def flush(self) -> None:
        transport = self.transport
        if self.out and transport is not None and not transport.is_closing():
            out, self.out = self.out, bytearray()
            transport.write(out)
        if (
            self.goaway_sent
            and not self.streams
            and transport is not None
            and not self.closing
            and (not self.linger or time.monotonic() >= self.linger)
        ):
            self.closing = True
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return  # after a connection error: nothing more is read
        buf = self.inbuf + data if self.inbuf else data
        pos = 0
        try:
            if not self.preface:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(buf):
                        raise _ConnError(PROTOCOL_ERROR, "not an HTTP/2 client")
                    self.inbuf = buf
                    return
                if not buf.startswith(PREFACE):
                    raise _ConnError(PROTOCOL_ERROR, "not an HTTP/2 client")
                self.preface = True
                pos = len(PREFACE)
            end = len(buf)
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = _FRAME.unpack_from(buf, pos)
                length = hi << 16 | lo
                if length > MAX_FRAME:
                    raise _ConnError(FRAME_SIZE_ERROR, "frame too large")
                stop = pos + 9 + length
                if stop > end:
                    break
                self._frame(ftype, flags, sid & 0x7FFFFFFF, buf[pos + 9 : stop])
                pos = stop
            self.inbuf = buf[pos:] if pos < end else b""
        except _ConnError as err:
            self._fail(err.code, str(err))
        self.flush()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return str(peer) if peer else "a local peer"

    def _fail(self, code: int, why: str) -> None:
        """A connection error: GOAWAY with ``code``, close, and abort if the peer does not take our last bytes."""
        self.server.quiet.warning("gRPC connection from %s closed: %s", self._peer(), why)
        self.closing = True
        self.out += frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(code) + why.encode()[:100])
        self.inbuf = b""
        transport = self.transport
        if transport is not None:
            if self.out and not transport.is_closing():
                out, self.out = self.out, bytearray()
                transport.write(out)
            transport.close()
            with contextlib.suppress(RuntimeError):  # no running loop (a test driving the protocol by hand)
                asyncio.get_running_loop().call_later(self.limits.keepalive_timeout or 5.0, transport.abort)

    def goaway(self) -> None:
        """Graceful: no new streams on this connection; it closes when its streams are done."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out += frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(NO_ERROR))

    def _calm(self, what: str) -> None:
        raise _ConnError(ENHANCE_YOUR_CALM, f"too many {what}")

    def tick(self, now: float) -> None:
        """The server's timer, about once a second: handshake, keepalive and idle timeouts."""
        if self.closing or self.transport is None:
            return
        limits = self.limits
        if not self.handshaken:
            if limits.handshake_timeout and now - self.born >= limits.handshake_timeout:
                code = SETTINGS_TIMEOUT if self.preface else PROTOCOL_ERROR
                self._fail(code, f"no HTTP/2 client preface and SETTINGS within {limits.handshake_timeout:g}s")
            return
        if limits.keepalive_interval:  # a PING every interval (nothing per read on the hot path); its ACK is due
            if self.ping_out and now - self.ping_out >= limits.keepalive_timeout:
                self.server.quiet.warning("gRPC connection from %s closed: no answer to a keepalive PING", self._peer())
                self.closing = True
                self.transport.abort()
                return
            if not self.ping_out and now - self.pinged >= limits.keepalive_interval:
                self.ping_out = self.pinged = now
                self.out += frame(PING, 0, 0, _KEEPALIVE)
                self.flush()
        if self.streams:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif limits.idle_timeout and now - self.idle_since >= limits.idle_timeout and not self.goaway_sent:
            self.linger = now + 1.0  # a stream Envoy opened meanwhile is refused (and retried), not lost
            self.goaway()
            self.flush()
        elif self.goaway_sent:
            self.flush()  # closes it once the linger is over

    # ------------------------------------------------------------------------------------------------------- frames
    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.header_sid and ftype != CONTINUATION:
            raise _ConnError(PROTOCOL_ERROR, "header block interrupted")
        if ftype == DATA:
            self._data(flags, sid, payload)
        elif ftype == HEADERS:
            self._headers(flags, sid, payload)
        elif not self.handshaken and ftype != SETTINGS:
            raise _ConnError(PROTOCOL_ERROR, "the client preface must end with SETTINGS")
        elif ftype == CONTINUATION:
            if sid != self.header_sid or not sid:
                raise _ConnError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self.continuations += 1
            if self.continuations > self.limits.max_continuations:
                self._calm("CONTINUATION frames in one header block")
            self.header_block += payload
            if len(self.header_block) > self.limits.max_header_list * 2:
                raise _ConnError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                self.header_sid = 0
                self._header_block(self.header_flags, sid, self.header_block)
                self.header_block = b""
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ConnError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
            inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
            if sid == 0:
                if not inc:
                    raise _ConnError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                self.conn_send_window += inc
                if self.conn_send_window > MAX_WINDOW:
                    raise _ConnError(FLOW_CONTROL_ERROR, "connection window overflow")
            elif (st := self.streams.get(sid)) is not None:
                st.send_window += inc
                if not inc or st.send_window > MAX_WINDOW:  # stream errors (RFC 9113 6.9, 6.9.1)
                    self._reset(st, PROTOCOL_ERROR if not inc else FLOW_CONTROL_ERROR)
                    return
            elif sid > self.last_sid or not sid & 1:
                raise _ConnError(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            self._unblock()
        elif ftype == SETTINGS:
            if sid:
                raise _ConnError(PROTOCOL_ERROR, "SETTINGS on a stream")
            if flags & ACK:
                if payload:
                    raise _ConnError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
                if not self.control.take():
                    self._calm("SETTINGS frames")
                self.max_streams = self.limits.max_concurrent_streams  # our SETTINGS are known now
                return
            if self.handshaken and not self.control.take():
                self._calm("SETTINGS frames")
            self._settings(payload)
            self.handshaken = True
            self.out += frame(SETTINGS, ACK, 0)
        elif ftype == PING:
            if len(payload) != 8:
                raise _ConnError(FRAME_SIZE_ERROR, "PING of the wrong size")
            if sid:
                raise _ConnError(PROTOCOL_ERROR, "PING on a stream")
            if flags & ACK and self.ping_out and payload == _KEEPALIVE:
                self.ping_out = 0.0  # the peer is alive (the ACK of our own PING costs it nothing)
                return
            if not self.control.take():
                self._calm("PINGs")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, payload)
        elif ftype == RST_STREAM:
            if not sid:
                raise _ConnError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise _ConnError(FRAME_SIZE_ERROR, "bad RST_STREAM")
            if sid > self.last_sid or not sid & 1:
                raise _ConnError(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            st = self.streams.pop(sid, None)
            if st is not None:
                # Envoy resets every ext_proc stream once its request is done (we have answered by then): only a
                # stream reset before any answer is what rapid reset does
                if not st.headers_sent and not self.resets.take():
                    self._calm("streams reset")
                self._drop(st)
        elif ftype == GOAWAY:
            if sid:
                raise _ConnError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnError(FRAME_SIZE_ERROR, "bad GOAWAY")
            self.goaway_sent = True  # the client is done with this connection: close it when streams are
        elif ftype == PRIORITY:
            if not sid:
                raise _ConnError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if not self.control.take():
                self._calm("PRIORITY frames")
            if len(payload) != 5 and (st := self.streams.get(sid)) is not None:
                self._reset(st, FRAME_SIZE_ERROR)
        elif ftype == PUSH_PROMISE:
            raise _ConnError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        elif not self.control.take():  # unknown frame types are ignored, as HTTP/2 asks, within the budget
            self._calm("unknown frames")

    def _settings(self, payload: bytes) -> None:
        """One pass over the entries, then the window change applied to each stream once (not entry x stream)."""
        if len(payload) % 6:
            raise _ConnError(FRAME_SIZE_ERROR, "bad SETTINGS")
        window = None
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == 0x4:
                if value > MAX_WINDOW:
                    raise _ConnError(FLOW_CONTROL_ERROR, "initial window too large")
                window = value
            elif key == 0x5:
                if not 16384 <= value <= 16777215:
                    raise _ConnError(PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
            elif key == 0x2:
                if value > 1:
                    raise _ConnError(PROTOCOL_ERROR, "bad ENABLE_PUSH")
            elif key == 0x1:
                # Our blocks never index, but RFC 7541 4.2 wants a size update to open the next block after the
                # peer changes its table size (nghttp2 rejects the block otherwise): size 0 is valid for any limit.
                self.table_update = True
        if window is not None and window != self.peer_window:
            delta = window - self.peer_window
            self.peer_window = window
            for st in self.streams.values():
                st.send_window += delta
                if st.send_window > MAX_WINDOW:
                    raise _ConnError(FLOW_CONTROL_ERROR, "a stream window overflowed")
        self._unblock()

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid or not sid & 1:
            raise _ConnError(PROTOCOL_ERROR, "HEADERS on an even stream")
        if not self.handshaken:
            raise _ConnError(PROTOCOL_ERROR, "the client preface must end with SETTINGS")
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise _ConnError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(flags, sid, payload)
        else:
            self.header_sid, self.header_block, self.header_flags = sid, payload, flags
            self.continuations = 0

    def _path(self, block: bytes) -> tuple[str, float | None, dict[str, str] | None]:
        """The ``:path``, ``grpc-timeout`` and the metadata the server asked for (None: none asked) of a header
        block. Envoy sends the same bytes for every ext_proc stream
        (indexed fields and a Huffman-coded ``:path`` it never indexes), and Huffman decoding in Python was 15 % of a
        worker's time: a short block that leaves the HPACK table as it was is remembered, until any block changes
        the table. With tracing each block has another ``traceparent``: the table is off (our SETTINGS) and the
        last block is remembered but for that value (``Hole``), so only the value is decoded."""
        known = self.paths.get(block)
        if known is not None:
            return known
        decoder = self.decoder
        hole = self.hole
        if hole is not None and decoder.header_table.maxsize == 0:  # tracing: Envoy's block, another traceparent
            try:
                value = hole.value(block, decoder.max_header_list_size)
            except HPACKError as exc:
                raise _ConnError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
            if value is not None:
                known_path, known_timeout, others = hole.found
                return known_path, known_timeout, {**others, self.server.marked: value.decode("latin-1")}
        table = decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:  # every block: the HPACK table is per connection
            if isinstance(decoder, LeanDecoder):
                headers: Iterable[tuple[bytes, bytes]] = decoder.decode(block, raw=True, mark=self.server.marked_raw)
            else:
                headers = decoder.decode(block, raw=True)
        except HPACKError as exc:
            raise _ConnError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        path = ""
        timeout = None
        wanted = self.server.metadata
        meta: dict[str, str] | None = {} if wanted else None
        for name, value in headers:
            if name == b":path":
                path = value.decode("utf-8", "replace")
            elif name == b"grpc-timeout":
                timeout = _grpc_timeout(value)
            elif meta is not None and name in wanted:
                meta[name.decode("latin-1")] = value.decode("latin-1")
        found = (path, timeout, meta)
        marked = decoder.marked if isinstance(decoder, LeanDecoder) else None
        if marked is not None and meta is not None and table.maxsize == 0 == before[2] and not entries:
            # the table is off (our SETTINGS_HEADER_TABLE_SIZE 0): this block but for that value, for the next ones
            rest = sum(len(n) + len(v) + 32 for n, v in headers) - len(meta[self.server.marked])
            others = {k: v for k, v in meta.items() if k != self.server.marked}
            self.hole = Hole(block, marked[0], marked[1], rest, (path, timeout, others))
            return found
        if len(entries) == before[0] and (entries[0] if entries else None) is before[1] and table.maxsize == before[2]:
            if len(block) <= _REMEMBER_BLOCK:
                if len(self.paths) >= 64:
                    self.paths.clear()
                self.paths[block] = found
        else:
            self.paths.clear()  # indexed fields in remembered blocks may now mean something else
        return found

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        path, timeout, meta = self._path(block)
        st = self.streams.get(sid)
        if st is not None:  # trailers from the client: only END_STREAM matters
            if flags & END_STREAM:
                self._remote_end(st)
            return
        if sid <= self.last_sid:
            if not flags & END_STREAM:  # not late trailers: a stream that is closed (or never was) cannot open
                self.out += frame(RST_STREAM, 0, sid, _U32.pack(STREAM_CLOSED))
            return  # a closed stream's trailers
        self.last_sid = sid
        if self.goaway_sent or len(self.streams) >= self.max_streams:
            if not self.goaway_sent and not self.resets.take():
                self._calm("streams refused")
            self.out += frame(RST_STREAM, 0, sid, _U32.pack(REFUSED_STREAM))  # retry elsewhere (or later)
            return
        status, why = (UNIMPLEMENTED, f"unknown method {path[:80]}") if path else (INTERNAL, "no :path")
        try:
            call = self.server.service(path) if meta is None else self.server.service(path, meta)
        except Exception:
            self.server.bugs.warning("gRPC call setup failed for %s", path[:80], exc_info=True, level=logging.ERROR)
            call, status, why = None, INTERNAL, "call setup failed"
        if call is None:
            block = _RESPONSE_HEADERS + _trailers(status, why)
            self._header_frame(sid, END_HEADERS | END_STREAM, block)
            if not flags & END_STREAM:
                self.out += frame(RST_STREAM, 0, sid, _U32.pack(NO_ERROR))
            return
        st = _Stream(sid, call, self.peer_window)
        self.streams[sid] = st
        if timeout is not None:
            st.timer = asyncio.get_running_loop().call_later(timeout, self._deadline, st)
        if flags & END_STREAM:
            self._remote_end(st)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        if not size and not flags & END_STREAM and not self.control.take():
            self._calm("empty DATA frames")
        self.conn_unacked += size
        if self.conn_unacked >= self.conn_half:
            if self.conn_unacked > self.conn_window:
                raise _ConnError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
            if not self.congested:
                self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.conn_unacked))
                self.conn_unacked = 0
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            if sid > self.last_sid or not sid & 1:
                raise _ConnError(PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we already finished (or reset): its data is dropped, the window was given back
        st.unacked += size
        if st.unacked >= _STREAM_HALF:
            if st.unacked > STREAM_WINDOW:
                raise _ConnError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
            if not flags & END_STREAM and not self.congested:
                self.out += frame(WINDOW_UPDATE, 0, sid, _U32.pack(st.unacked))
                st.unacked = 0
        if st.local_closed:  # answered for good (trailers waiting for window): more data is only dropped
            if flags & END_STREAM:
                self._remote_end(st)
            return
        buf = st.buf
        if not buf and len(payload) >= 5:  # the common case: one whole message in one frame
            compressed, n = _GRPC_PREFIX.unpack_from(payload)
            if n + 5 == len(payload) and not compressed:
                self._deliver(st, payload[5:])
                payload = b""
        if payload:
            buf += payload
            self.buffered_in += len(payload)
            while len(buf) >= 5 and not st.local_closed:
                compressed, n = _GRPC_PREFIX.unpack_from(buf)
                if compressed:
                    self._finish(st, UNIMPLEMENTED, "compressed messages are not supported")
                    break
                if n > self.limits.max_message:
                    self._finish(st, RESOURCE_EXHAUSTED, f"message larger than {self.limits.max_message} bytes")
                    break
                if len(buf) < n + 5:
                    break
                msg = bytes(buf[5 : n + 5])
                del buf[: n + 5]
                self.buffered_in -= n + 5
                self._deliver(st, msg)
            if self.buffered_in > self.limits.max_buffered_in and buf and not st.local_closed:
                self._finish(st, RESOURCE_EXHAUSTED, "too many request bytes buffered on this connection")
        if flags & END_STREAM:
            self._remote_end(st)

    # ----------------------------------------------------------------------------------------------------- streams
    def _remote_end(self, st: _Stream) -> None:
        st.remote_closed = True
        if st.local_closed:
            return  # our trailers are waiting for window; they close the stream
        if not st.busy and not st.pending:
            if st.buf:
                self._finish(st, INTERNAL, "stream ended inside a message")
            else:
                self._finish(st, OK, "")

    def _deliver(self, st: _Stream, msg: bytes) -> None:
        if st.local_closed:
            return
        if st.busy or self.congested:
            st.pending.append(msg)
            self.buffered_in += len(msg)
            if self.buffered_in > self.limits.max_buffered_in:
                self._finish(st, RESOURCE_EXHAUSTED, "too many request bytes buffered on this connection")
            return
        try:
            result = st.call.message(msg)
        except CallError as err:  # the handler refuses this stream's input: ended quietly with its status
            self._finish(st, err.status, err.message)
            return
        except Exception:
            self.server.bugs.warning("gRPC handler failed", exc_info=True, level=logging.ERROR)
            self._finish(st, INTERNAL, "handler failed")
            return
        if type(result) is bytes:
            self._send(st, result)
        else:
            st.busy = True
            st.answer = result  # type: ignore[assignment]
            st.task = asyncio.get_running_loop().create_task(self._wait(st, result))  # type: ignore[arg-type]

    async def _wait(self, st: _Stream, result: Awaitable[bytes]) -> None:
        try:
            answer = await result
            if type(answer) is not bytes:
                raise TypeError(f"a gRPC handler answered with {type(answer).__name__}, not bytes")
        except asyncio.CancelledError:
            return
        except CallError as err:
            st.busy = False
            st.answer = st.task = None
            self._finish(st, err.status, err.message)
            self.flush()
            return
        except Exception:
            self.server.bugs.warning("gRPC handler failed", exc_info=True, level=logging.ERROR)
            st.busy = False
            st.answer = st.task = None
            self._finish(st, INTERNAL, "handler failed")
            self.flush()
            return
        st.busy = False
        st.answer = st.task = None
        if st.ended:
            return
        self._send(st, answer)
        self._drain(st)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Write at the end of this turn of the event loop: answers that waited for the same thing (a store's reply)
        finish in the same turn and go out in one write, as answers of one read do."""
        if not self.flush_pending:
            self.flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.flush_pending = False
        self.flush()

    def _drain(self, st: _Stream) -> None:
        """Hand the stream's waiting messages to its handler, while it answers synchronously and nothing backs up."""
        while st.pending and not st.busy and not st.local_closed and not self.congested:
            msg = st.pending.popleft()
            self.buffered_in -= len(msg)
            self._deliver(st, msg)
        if st.remote_closed and not st.busy and not st.local_closed and not st.pending:
            self._remote_end(st)

    def _send(self, st: _Stream, msg: bytes) -> None:
        if st.local_closed:
            return
        if not st.headers_sent:
            st.headers_sent = True
            self._header_frame(st.sid, END_HEADERS, _RESPONSE_HEADERS)
        n = len(msg) + 5
        if n <= self.peer_max_frame and n <= st.send_window and n <= self.conn_send_window and not st.outbox:
            self.out += _FRAME.pack(n >> 16, n & 0xFFFF, DATA, 0, st.sid) + _GRPC_PREFIX.pack(0, n - 5)
            self.out += msg
            st.send_window -= n
            self.conn_send_window -= n
            return
        data = _GRPC_PREFIX.pack(0, len(msg)) + msg
        if st.outbox:
            st.outbox += data
            self.backlog += len(data)
        else:
            self._write_data(st, data)
        if self.backlog > self.limits.max_buffered_out and not self.congested:
            self.congested = True  # answers are backed up: take no more work until the peer reads them

    def _write_data(self, st: _Stream, data: bytes | bytearray) -> None:
        n = min(len(data), st.send_window, self.conn_send_window)
        if n > 0:
            step = self.peer_max_frame
            out = self.out
            for i in range(0, n, step):
                j = min(i + step, n)
                out += _FRAME.pack((j - i) >> 16, (j - i) & 0xFFFF, DATA, 0, st.sid)
                out += data[i:j]
            st.send_window -= n
            self.conn_send_window -= n
        n = max(n, 0)
        if data is st.outbox:
            del st.outbox[:n]  # in place: a big answer trickling out through a small window is copied once
            self.backlog -= n
        elif n < len(data):
            st.outbox = bytearray(data[n:])
            self.backlog += len(st.outbox)
        if st.outbox and not st.blocked:
            st.blocked = True
            self.blocked.append(st)

    def _unblock(self) -> None:
        if not self.blocked:
            return
        waiting, self.blocked = self.blocked, []
        for st in waiting:
            st.blocked = False
            if st.ended:
                continue
            self._write_data(st, st.outbox)
            if not st.outbox and st.finish_after is not None:
                status, message = st.finish_after
                st.finish_after = None
                self._send_trailers(st, status, message)
        if self.congested and self.backlog <= self.limits.max_buffered_out >> 1:
            self._resume()

    def _resume(self) -> None:
        """The answers drained: give back the receive windows held back, then the waiting messages go on."""
        self.congested = False
        if self.closing:
            return
        if self.conn_unacked >= self.conn_half:
            self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.conn_unacked))
            self.conn_unacked = 0
        for st in list(self.streams.values()):
            if st.unacked >= _STREAM_HALF and not st.remote_closed:
                self.out += frame(WINDOW_UPDATE, 0, st.sid, _U32.pack(st.unacked))
                st.unacked = 0
        for st in list(self.streams.values()):
            if self.congested:
                break
            if st.pending and not st.busy:
                self._drain(st)

    def _deadline(self, st: _Stream) -> None:
        """``grpc-timeout`` passed: DEADLINE_EXCEEDED now, whatever answer bytes were still waiting."""
        st.timer = None
        if st.ended or self.closing:
            return
        self._release(st)
        st.finish_after = None
        self._send_trailers(st, DEADLINE_EXCEEDED, "deadline exceeded", CANCEL)
        self.flush()

    def _finish(self, st: _Stream, status: int, message: str) -> None:
        """Close our side, once: the trailers go now, or after answer bytes still waiting for window."""
        if st.local_closed:
            return
        st.local_closed = True
        if st.buf or st.pending:
            self._release(st, keep_outbox=True)
        if st.outbox:
            st.finish_after = (status, message)
        else:
            self._send_trailers(st, status, message)

    def _release(self, st: _Stream, keep_outbox: bool = False) -> None:
        """Forget what the stream holds: request bytes (and unless told otherwise, answer bytes)."""
        if st.buf or st.pending:
            self.buffered_in -= len(st.buf) + sum(map(len, st.pending))
            st.buf.clear()
            st.pending.clear()
        if st.outbox and not keep_outbox:
            self.backlog -= len(st.outbox)
            st.outbox.clear()
            if self.congested and self.backlog <= self.limits.max_buffered_out >> 1:
                self._resume()

    def _send_trailers(self, st: _Stream, status: int, message: str, reset: int = NO_ERROR) -> None:
        block = _TRAILERS_OK if status == OK and not message else _trailers(status, message)
        if not st.headers_sent:
            st.headers_sent = True
            block = _RESPONSE_HEADERS + block
        self._header_frame(st.sid, END_HEADERS | END_STREAM, block)
        if not st.remote_closed:
            self.out += frame(RST_STREAM, 0, st.sid, _U32.pack(reset))
        self._close(st)

    def _reset(self, st: _Stream, code: int) -> None:
        """A stream error: RST_STREAM with ``code``; the stream is gone."""
        self.out += frame(RST_STREAM, 0, st.sid, _U32.pack(code))
        self._close(st)

    def _header_frame(self, sid: int, flags: int, block: bytes) -> None:
        if self.table_update:
            self.table_update = False
            block = b"\x20" + block  # dynamic table size update: 0
        self.out += frame(HEADERS, flags, sid, block)

    def _close(self, st: _Stream) -> None:
        self.streams.pop(st.sid, None)
        self._drop(st)

    def _drop(self, st: _Stream) -> None:
        """The stream is gone (finished, reset, or the connection closed): tell its call, once."""
        if st.ended:
            return
        st.ended = True
        st.local_closed = True
        if st.buf or st.pending or st.outbox:
            self._release(st)
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        if st.task is not None:
            st.task.cancel()
            st.task = None
        if inspect.iscoroutine(st.answer) and inspect.getcoroutinestate(st.answer) == inspect.CORO_CREATED:
            st.answer.close()  # its task was cancelled before it ever ran: nothing else would close it
        st.answer = None
        try:
            st.call.end()
        except Exception:
            self.server.bugs.warning("gRPC call end failed", exc_info=True, level=logging.ERROR)


class _ConnError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Server:
    """Listens on TCP or a Unix socket, in clear or with TLS; ``stop(grace)`` drains like grpc's: GOAWAY, wait for
    streams, close."""

    def __init__(self, service: Service, limits: Limits | None = None, metadata: tuple[str, ...] = ()) -> None:
        self.service = service
        self.metadata = frozenset(name.lower().encode("latin-1") for name in metadata)
        # with metadata: the one name whose value may change from block to block (``Hole``), Envoy's traceparent
        self.marked = metadata[0].lower() if len(metadata) == 1 else ""
        self.marked_raw = self.marked.encode("latin-1") or None
        self.limits = limits = limits if limits is not None else Limits()
        self.connections: set[Connection] = set()
        self.draining = False
        self.quiet = QuietLog(limits.log_interval)  # peer faults
        self.bugs = QuietLog(limits.log_interval)  # our own handlers' failures (with their tracebacks)
        self._servers: list[asyncio.AbstractServer] = []
        self._ticker: asyncio.TimerHandle | None = None
        settings = [
            (0x3, limits.max_concurrent_streams),
            (0x4, STREAM_WINDOW),
            (0x5, MAX_FRAME),
            (0x6, limits.max_header_list),
        ]
        if metadata:  # tracing: no HPACK table (SETTINGS_HEADER_TABLE_SIZE 0), so Envoy's blocks differ only in
            settings.insert(0, (0x1, 0))  # the traceparent (Hole); with a table, each new one shifted the others
        conn_window = max(65535, min(limits.connection_window, MAX_WINDOW))
        self.preface = frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings))
        if conn_window > 65535:
            self.preface += frame(WINDOW_UPDATE, 0, 0, _U32.pack(conn_window - 65535))
        timers = [limits.handshake_timeout, limits.idle_timeout, limits.keepalive_interval, limits.keepalive_timeout]
        self.tick_every = max(0.01, min([1.0, *(t / 4 for t in timers if t)]))

    async def listen(self, host: str = "", port: int = 0, path: str = "", ssl: _ssl.SSLContext | None = None) -> None:
        """Accept connections on ``host:port`` or the Unix socket ``path``; with ``ssl`` (see ``server_tls``) every
        connection is TLS, and the TLS handshake counts towards ``handshake_timeout``."""
        loop = asyncio.get_running_loop()
        timeout = (self.limits.handshake_timeout or None) if ssl is not None else None
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            srv = await loop.create_unix_server(lambda: Connection(self), path, ssl=ssl, ssl_handshake_timeout=timeout)
        else:
            srv = await loop.create_server(
                lambda: Connection(self), host or None, port, reuse_address=True, ssl=ssl, ssl_handshake_timeout=timeout
            )
        self._servers.append(srv)
        if self._ticker is None:
            self._ticker = loop.call_later(self.tick_every, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            try:
                conn.tick(now)
            except Exception:  # a timer must never stop
                self.bugs.warning("gRPC connection timer failed", exc_info=True, level=logging.ERROR)
        self._ticker = asyncio.get_running_loop().call_later(self.tick_every, self._tick)

    def active_streams(self) -> int:
        return sum(len(c.streams) for c in self.connections)

    async def stop(self, grace: float) -> None:
        self.draining = True
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.goaway()
            conn.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.active_streams() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for conn in list(self.connections):  # past the grace period: streams end now, their calls are told
            conn.connection_lost(None)
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
