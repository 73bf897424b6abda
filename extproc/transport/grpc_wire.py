"""A small gRPC server on asyncio: HTTP/2 frames, HPACK (the ``hpack`` package) and gRPC length prefixes. I/O only.

Why not grpc.aio: per ext_proc message it spent ~250 us of Python on this project's 2-core benchmark machine (the
poller thread's wake-ups, futures, task steps, one ``sendmsg`` per write), four times the cost of translating the
request. Here one ``data_received`` call parses every frame that arrived, hands each complete gRPC message to the
stream's handler synchronously, and writes all answers with one ``send``. See ``benchmarks/README.md``.

What it speaks is what gRPC clients (Envoy's own client, grpc C-core as in Envoy's ``google_grpc``) use: HTTP/2
over cleartext with prior knowledge, on TCP or a Unix socket; SETTINGS, PING, GOAWAY, RST_STREAM, PRIORITY (ignored),
CONTINUATION, padding, flow control in both directions. No TLS (a mesh's sidecar does that), no compression, no push.

A service is a callable ``(path) -> Call | None``; ``None`` answers UNIMPLEMENTED. A ``Call`` gets each request
message and returns the answer's bytes, or an awaitable of them (the stream's later messages wait their turn); it
answers every message with exactly one message. ``end()`` is called exactly once, however the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger("extproc")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, COMPRESSION_ERROR = 0x6, 0x9
# gRPC status codes used here
OK, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 0, 8, 12, 13

MAX_FRAME = 1 << 18  # what we accept from the peer (SETTINGS_MAX_FRAME_SIZE)
STREAM_WINDOW = 1 << 24  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
CONN_WINDOW = 1 << 30  # our receive window for the connection
MAX_MESSAGE = 128 * 1024 * 1024
MAX_HEADER_LIST = 64 * 1024

_FRAME = struct.Struct(">BHBBL")  # 24-bit length as byte + short, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GRPC_PREFIX = struct.Struct(">BL")


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
_OUR_SETTINGS = frame(
    SETTINGS,
    0,
    0,
    _SETTING.pack(0x4, STREAM_WINDOW) + _SETTING.pack(0x5, MAX_FRAME) + _SETTING.pack(0x6, MAX_HEADER_LIST),
)
_CONN_WINDOW_UPDATE = frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONN_WINDOW - 65535))


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


class CallError(Exception):
    """Raised by a ``Call`` to end its stream with gRPC ``status`` and ``message`` (no traceback is logged)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Call(Protocol):
    def message(self, data: bytes) -> bytes | Awaitable[bytes]: ...

    def end(self) -> None: ...


Service = Callable[[str], "Call | None"]


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
        "unacked",
    )

    def __init__(self, sid: int, call: Call, send_window: int) -> None:
        self.sid = sid
        self.call = call
        self.buf = bytearray()  # received bytes that do not yet make a whole gRPC message
        self.pending: deque[bytes] = deque()  # whole messages waiting while the handler awaits
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


class Connection(asyncio.Protocol):
    """One HTTP/2 connection from a gRPC client."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.inbuf = b""
        self.preface = False
        self.out = bytearray()
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        self.decoder = Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_LIST
        self.paths: dict[bytes, str] = {}  # header blocks that do not change the HPACK table -> their :path
        self.header_sid = 0  # stream whose header block continues in CONTINUATION frames
        self.header_block = b""
        self.header_flags = 0
        self.peer_window = 65535  # initial stream send window (peer's SETTINGS_INITIAL_WINDOW_SIZE)
        self.peer_max_frame = 16384
        self.conn_send_window = 65535
        self.conn_unacked = 0
        self.blocked: list[_Stream] = []
        self.table_update = False  # open our next header block with an HPACK table size update
        self.goaway_sent = False
        self.closing = False

    # ---------------------------------------------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's transports are not asyncio.Transport)
        self.server.connections.add(self)
        self.out += _OUR_SETTINGS
        self.out += _CONN_WINDOW_UPDATE
        if self.server.draining:
            self.goaway()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        for st in list(self.streams.values()):
            self._drop(st)
        self.streams.clear()

    def pause_writing(self) -> None:
        """The peer is not reading what we write: stop reading what it sends until it catches up."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            out, self.out = self.out, bytearray()
            self.transport.write(out)
        if self.goaway_sent and not self.streams and self.transport is not None:
            self.transport.close()

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

    def _fail(self, code: int, why: str) -> None:
        log.warning("gRPC connection closed: %s", why)
        self.closing = True
        self.out += frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(code) + why.encode()[:100])
        if self.transport is not None:
            self.flush()
            self.transport.close()
        self.inbuf = b""

    def goaway(self) -> None:
        """Graceful: no new streams on this connection; it closes when its streams are done."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.out += frame(GOAWAY, 0, 0, _U32.pack(self.last_sid) + _U32.pack(NO_ERROR))

    # ------------------------------------------------------------------------------------------------------- frames
    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.header_sid and ftype != CONTINUATION:
            raise _ConnError(PROTOCOL_ERROR, "header block interrupted")
        if ftype == DATA:
            self._data(flags, sid, payload)
        elif ftype == HEADERS:
            self._headers(flags, sid, payload)
        elif ftype == CONTINUATION:
            if sid != self.header_sid or not sid:
                raise _ConnError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self.header_block += payload
            if len(self.header_block) > MAX_HEADER_LIST * 2:
                raise _ConnError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                self.header_sid = 0
                self._header_block(self.header_flags, sid, self.header_block)
                self.header_block = b""
        elif ftype == SETTINGS:
            if sid:
                raise _ConnError(PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & ACK:
                self._settings(payload)
                self.out += frame(SETTINGS, ACK, 0)
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4:
                raise _ConnError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
            inc = _U32.unpack(payload)[0] & 0x7FFFFFFF
            if not inc and not sid:
                raise _ConnError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if sid == 0:
                self.conn_send_window += inc
                if self.conn_send_window > 0x7FFFFFFF:
                    raise _ConnError(FLOW_CONTROL_ERROR, "connection window overflow")
            elif (st := self.streams.get(sid)) is not None:
                st.send_window += inc
            self._unblock()
        elif ftype == PING:
            if len(payload) != 8 or sid:
                raise _ConnError(PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, payload)
        elif ftype == RST_STREAM:
            st = self.streams.pop(sid, None)
            if st is not None:
                self._drop(st)
        elif ftype == GOAWAY:
            self.goaway_sent = True  # the client is done with this connection: close it when streams are
        elif ftype == PUSH_PROMISE:
            raise _ConnError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as HTTP/2 asks

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise _ConnError(FRAME_SIZE_ERROR, "bad SETTINGS")
        for i in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, i)
            if key == 0x4:
                if value > 0x7FFFFFFF:
                    raise _ConnError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_window
                self.peer_window = value
                for st in self.streams.values():
                    st.send_window += delta
            elif key == 0x5:
                if not 16384 <= value <= 16777215:
                    raise _ConnError(PROTOCOL_ERROR, "bad max frame size")
                self.peer_max_frame = value
            elif key == 0x1:
                # Our blocks never index, but RFC 7541 4.2 wants a size update to open the next block after the
                # peer changes its table size (nghttp2 rejects the block otherwise): size 0 is valid for any limit.
                self.table_update = True
        self._unblock()

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid or not sid & 1:
            raise _ConnError(PROTOCOL_ERROR, "HEADERS on an even stream")
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(flags, sid, payload)
        else:
            self.header_sid, self.header_block, self.header_flags = sid, payload, flags

    def _path(self, block: bytes) -> str:
        """The ``:path`` of a header block. Envoy sends the same bytes for every ext_proc stream (indexed fields and
        a Huffman-coded ``:path`` it never indexes), and Huffman decoding in Python was 15 % of a worker's time: a
        block that leaves the HPACK table as it was is remembered, until any block changes the table."""
        path = self.paths.get(block)
        if path is not None:
            return path
        table = self.decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:
            headers = self.decoder.decode(block, raw=True)  # every block: the HPACK table is per connection
        except HPACKError as exc:
            raise _ConnError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        path = ""
        for name, value in headers:
            if name == b":path":
                path = value.decode("utf-8", "replace")
                break
        if len(entries) == before[0] and (entries[0] if entries else None) is before[1] and table.maxsize == before[2]:
            if len(self.paths) >= 64:
                self.paths.clear()
            self.paths[block] = path
        else:
            self.paths.clear()  # indexed fields in remembered blocks may now mean something else
        return path

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        path = self._path(block)
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
        if self.goaway_sent:
            self.out += frame(RST_STREAM, 0, sid, _U32.pack(0x7))  # REFUSED_STREAM: retry elsewhere
            return
        status, why = (UNIMPLEMENTED, f"unknown method {path[:80]}") if path else (INTERNAL, "no :path")
        try:
            call = self.server.service(path)
        except Exception:
            log.exception("gRPC call setup failed for %s", path)
            call, status, why = None, INTERNAL, "call setup failed"
        if call is None:
            block = _RESPONSE_HEADERS + _trailers(status, why)
            self._header_frame(sid, END_HEADERS | END_STREAM, block)
            if not flags & END_STREAM:
                self.out += frame(RST_STREAM, 0, sid, _U32.pack(NO_ERROR))
            return
        st = _Stream(sid, call, self.peer_window)
        self.streams[sid] = st
        if flags & END_STREAM:
            self._remote_end(st)

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)
        self.conn_unacked += size
        if self.conn_unacked >= CONN_WINDOW // 2:
            self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.conn_unacked))
            self.conn_unacked = 0
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise _ConnError(PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            return  # a stream we already finished (or reset): its data is dropped, the window was given back
        if st.local_closed:  # answered for good (trailers waiting for window): more data is only dropped
            if flags & END_STREAM:
                self._remote_end(st)
            return
        st.unacked += size
        if st.unacked >= STREAM_WINDOW // 2 and not flags & END_STREAM:
            self.out += frame(WINDOW_UPDATE, 0, sid, _U32.pack(st.unacked))
            st.unacked = 0
        buf = st.buf
        if not buf and len(payload) >= 5:  # the common case: one whole message in one frame
            compressed, n = _GRPC_PREFIX.unpack_from(payload)
            if n + 5 == len(payload) and not compressed:
                self._deliver(st, payload[5:])
                payload = b""
        if payload:
            buf += payload
            while len(buf) >= 5 and not st.local_closed:
                compressed, n = _GRPC_PREFIX.unpack_from(buf)
                if compressed:
                    self._finish(st, UNIMPLEMENTED, "compressed messages are not supported")
                    buf.clear()
                    break
                if n > MAX_MESSAGE:
                    self._finish(st, RESOURCE_EXHAUSTED, "message too large")
                    buf.clear()
                    break
                if len(buf) < n + 5:
                    break
                msg = bytes(buf[5 : n + 5])
                del buf[: n + 5]
                self._deliver(st, msg)
        if flags & END_STREAM:
            self._remote_end(st)

    # ----------------------------------------------------------------------------------------------------- streams
    def _remote_end(self, st: _Stream) -> None:
        st.remote_closed = True
        if st.local_closed:
            return  # our trailers are waiting for window; they close the stream
        if not st.busy:
            if st.buf:
                self._finish(st, INTERNAL, "stream ended inside a message")
            else:
                self._finish(st, OK, "")

    def _deliver(self, st: _Stream, msg: bytes) -> None:
        if st.local_closed:
            return
        if st.busy:
            st.pending.append(msg)
            return
        try:
            result = st.call.message(msg)
        except CallError as err:  # the handler refuses this stream's input: ended quietly with its status
            self._finish(st, err.status, err.message)
            return
        except Exception:
            log.exception("gRPC handler failed")
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
        except Exception:
            log.exception("gRPC handler failed")
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
        while st.pending and not st.busy and not st.local_closed:
            self._deliver(st, st.pending.popleft())
        if st.remote_closed and not st.busy and not st.local_closed:
            self._remote_end(st)
        self.flush()

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
        else:
            self._write_data(st, data)

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
        elif n < len(data):
            st.outbox = bytearray(data[n:])
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

    def _finish(self, st: _Stream, status: int, message: str) -> None:
        """Close our side, once: the trailers go now, or after answer bytes still waiting for window."""
        if st.local_closed:
            return
        st.local_closed = True
        if st.outbox:
            st.finish_after = (status, message)
        else:
            self._send_trailers(st, status, message)

    def _send_trailers(self, st: _Stream, status: int, message: str) -> None:
        block = _TRAILERS_OK if status == OK and not message else _trailers(status, message)
        if not st.headers_sent:
            st.headers_sent = True
            block = _RESPONSE_HEADERS + block
        self._header_frame(st.sid, END_HEADERS | END_STREAM, block)
        if not st.remote_closed:
            self.out += frame(RST_STREAM, 0, st.sid, _U32.pack(NO_ERROR))
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
        if st.task is not None:
            st.task.cancel()
            st.task = None
        if inspect.iscoroutine(st.answer) and inspect.getcoroutinestate(st.answer) == inspect.CORO_CREATED:
            st.answer.close()  # its task was cancelled before it ever ran: nothing else would close it
        st.answer = None
        try:
            st.call.end()
        except Exception:
            log.exception("gRPC call end failed")


class _ConnError(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class Server:
    """Listens on TCP or a Unix socket; ``stop(grace)`` drains like grpc's: GOAWAY, wait for streams, close."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.connections: set[Connection] = set()
        self.draining = False
        self._servers: list[asyncio.AbstractServer] = []

    async def listen(self, host: str = "", port: int = 0, path: str = "") -> None:
        loop = asyncio.get_running_loop()
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            srv = await loop.create_unix_server(lambda: Connection(self), path)
        else:
            srv = await loop.create_server(lambda: Connection(self), host or None, port, reuse_address=True)
        self._servers.append(srv)

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
        for conn in list(self.connections):  # past the grace period: streams end now, their calls are told
            conn.connection_lost(None)
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)
