"""grpc_wire's limits, one by one, in process: each with small values so that the test crosses it quickly, and each
checked on both sides of the line (just under it the connection is served; past it, the stream or connection ends
with the error the limit names). The same attacks against a real worker on both transports, at the default limits,
are in ``test_grpc_adversarial.py``.

Clients are the blocking raw-frame client of ``test_grpc_wire.py``; a PING answered is its barrier ("the server
handled everything sent before it").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import hpack
import pytest
import trustme

from extproc.transport import grpc_wire as gw
from extproc.transport.grpc_wire import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PRIORITY,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)
from tests.unit.test_grpc_wire import (
    CANCEL,
    INITIAL_WINDOW_SIZE,
    PATH,
    REFUSED_STREAM,
    EchoService,
    Frame,
    Raw,
    Running,
    answer,
    chat,
    grpc_msg,
    on,
    pattern,
    serve,  # noqa: F401  (the fixture)
    settings,
    u32,
    wait_until,
)

MAX_CONCURRENT_STREAMS = 0x3
KB = 1024


def goaway(frames: list[Frame]) -> tuple[int, int]:
    """(last stream id, error code) of the one GOAWAY among ``frames``."""
    (g,) = [f for f in frames if f.type == GOAWAY]
    return struct.unpack(">LL", g.payload[:8])


class CallErrors(EchoService):
    """Echo, except ``bad`` (raises CallError at once) and ``abad`` (from the awaited answer)."""

    def __call__(self, path: str) -> Any:
        call = super().__call__(path)
        if call is None:
            return None
        plain = call.message

        def message(data: bytes) -> Any:
            if data == b"bad":
                call.received.append(data)
                raise gw.CallError(gw.INVALID_ARGUMENT, "bad message: not an ext_proc request")
            if data == b"abad":
                call.received.append(data)

                async def later() -> bytes:
                    await asyncio.sleep(0)
                    raise gw.CallError(gw.FAILED_PRECONDITION, "the exchange is over")

                return later()
            return plain(data)

        call.message = message  # type: ignore[method-assign]
        return call


@pytest.fixture
def limited(serve: Callable[..., Running]) -> Iterator[Callable[..., tuple[Running, Any, Callable[..., Raw]]]]:  # noqa: F811
    """A server with the given limits: (server, its service, connect(*settings, preface=True) -> Raw)."""
    opened: list[Raw] = []

    def start(service: Any = None, **limits: Any) -> tuple[Running, Any, Callable[..., Raw]]:
        srv = serve(service, limits=gw.Limits(**limits))
        addr = srv.tcp()

        def connect(*pairs: tuple[int, int], preface: bool = True) -> Raw:
            conn = Raw(addr, *pairs, preface=preface)
            opened.append(conn)
            return conn

        return srv, srv.service, connect

    yield start
    for conn in opened:
        conn.close()


# ---------------------------------------------------------------------------------------------------- streams
def test_max_concurrent_streams_is_advertised_and_enforced(limited: Callable[..., Any]) -> None:
    _srv, service, connect = limited(max_concurrent_streams=2)
    c = connect()
    c.send(frame(SETTINGS, ACK, 0))  # our SETTINGS are known: the limit holds from now on
    first = c.barrier()
    ours = first[0]
    values = dict(struct.unpack_from(">HL", ours.payload, i) for i in range(0, len(ours.payload), 6))
    assert values[MAX_CONCURRENT_STREAMS] == 2
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"one")), c.open(3), frame(DATA, 0, 3, grpc_msg(b"three")))
    c.send(c.open(5), frame(DATA, 0, 5, grpc_msg(b"five")))
    got = c.barrier()
    assert [f.payload for f in on(got, 5)] == [u32(REFUSED_STREAM)]  # the third open stream: refused, not served
    assert [b"".join(f.payload for f in on(got, s, DATA)) for s in (1, 3)] == [grpc_msg(b"one"), grpc_msg(b"three")]
    c.send(frame(DATA, END_STREAM, 1, b""))  # stream 1 ends: room for one more
    c.finish(1)
    c.send(c.open(7), frame(DATA, END_STREAM, 7, grpc_msg(b"seven")))
    assert answer(c.finish(7), 7)[0] == [b"seven"]
    assert [call.received for call in service.calls] == [[b"one"], [b"three"], [b"seven"]]


def test_streams_sent_before_our_settings_are_known_are_tolerated_fourfold(limited: Callable[..., Any]) -> None:
    """A client may open streams before it has our SETTINGS (Envoy does, with every request waiting for a new
    connection): until it acknowledges them, up to four times the limit are served, then the limit holds."""
    _, service, connect = limited(max_concurrent_streams=2)
    c = connect()  # no SETTINGS ACK yet
    c.send(*(c.open(sid) + frame(DATA, 0, sid, grpc_msg(b"early")) for sid in range(1, 19, 2)))  # 9 streams
    got = c.barrier()
    assert [f.sid for f in got if f.type == RST_STREAM] == [17]  # the ninth: past 4 x 2
    assert len(service.calls) == 8
    c.send(frame(SETTINGS, ACK, 0), c.open(19))
    assert [f.payload for f in on(c.barrier(), 19)] == [u32(REFUSED_STREAM)]  # 8 open, limit 2


def test_rapid_reset_is_stopped_by_the_reset_budget(limited: Callable[..., Any]) -> None:
    srv, service, connect = limited(reset_burst=5, reset_rate=0.01)
    c = connect()
    for sid in range(1, 11, 2):  # five streams opened and reset at once: within the budget
        c.send(c.open(sid), frame(RST_STREAM, 0, sid, u32(CANCEL)))
    c.barrier()
    assert len(service.calls) == 5 and all(call.ends == 1 for call in service.calls)
    c.send(c.open(11), frame(RST_STREAM, 0, 11, u32(CANCEL)))  # the sixth
    assert goaway(c.rest()) == (11, gw.ENHANCE_YOUR_CALM)
    wait_until(lambda: srv.active() == 0)


def test_streams_refused_past_the_limit_spend_the_reset_budget(limited: Callable[..., Any]) -> None:
    _, _, connect = limited(max_concurrent_streams=1, reset_burst=3, reset_rate=0.01)
    c = connect()
    c.send(frame(SETTINGS, ACK, 0), c.open(1))
    c.send(*(c.open(sid) for sid in (3, 5, 7)))
    assert [f.sid for f in c.barrier() if f.type == RST_STREAM] == [3, 5, 7]
    c.send(c.open(9))
    assert goaway(c.rest()) == (9, gw.ENHANCE_YOUR_CALM)


# --------------------------------------------------------------------------------------------- control frames
@pytest.mark.parametrize(
    "flood",
    [
        pytest.param(lambda i: frame(PING, 0, 0, struct.pack(">Q", i)), id="PING"),
        pytest.param(lambda i: settings((0x3, 100 + i)), id="SETTINGS"),
        pytest.param(lambda i: frame(SETTINGS, ACK, 0), id="SETTINGS-ACK"),
        pytest.param(lambda i: frame(PRIORITY, 0, 101, u32(0) + b"\x10"), id="PRIORITY"),
        pytest.param(lambda i: frame(0xEE, 0, 0, b"unknown"), id="unknown-type"),
        pytest.param(lambda i: frame(DATA, 0, 1, b""), id="empty-DATA"),
    ],
)
def test_control_frame_flood_gets_enhance_your_calm(limited: Callable[..., Any], flood: Callable[[int], bytes]) -> None:
    _, _, connect = limited(control_burst=6, control_rate=0.01)
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"hi")))
    c.send(*(flood(i) for i in range(6)))  # the burst: served
    c.send(frame(DATA, 0, 1, grpc_msg(b"still here")))
    got = c.until(lambda f: f.type == DATA and f.payload == grpc_msg(b"still here"))
    assert not [f for f in got if f.type == GOAWAY]
    c.send(flood(7))
    assert goaway(c.rest())[1] == gw.ENHANCE_YOUR_CALM


def test_continuation_frames_per_header_block_are_capped(limited: Callable[..., Any]) -> None:
    _, _, connect = limited(max_continuations=4)
    c = connect()
    block = c.block()
    # HEADERS + 4 CONTINUATION (two of them empty): the limit, served
    parts = [block[:3], block[3:6], b"", b"", block[6:]]
    c.send(frame(HEADERS, 0, 1, parts[0]), *(frame(CONTINUATION, 0, 1, p) for p in parts[1:-1]))
    c.send(frame(CONTINUATION, END_HEADERS, 1, parts[-1]), frame(DATA, END_STREAM, 1, grpc_msg(b"ok")))
    assert answer(c.finish(1), 1)[0] == [b"ok"]
    # endless empty CONTINUATION frames: the fifth ends the connection
    c.send(frame(HEADERS, 0, 3, c.block()), *(frame(CONTINUATION, 0, 3, b"") for _ in range(5)))
    assert goaway(c.rest()) == (1, gw.ENHANCE_YOUR_CALM)


def test_hpack_bomb_is_a_compression_error(limited: Callable[..., Any]) -> None:
    """A 2 KB header value enters the peer's HPACK table once; then each 1-byte reference to it decodes to 2 KB. The
    decoded header list is capped (max_header_list), not the 90-byte block that carries it."""
    _, _, connect = limited(max_header_list=16 * KB)
    c = connect()
    big = ("x-big", "v" * 2000)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block(**dict([big]))))  # enters the table
    assert answer(c.finish(1), 1)[1]["grpc-status"] == "0"
    ref = c.enc.encode([big])  # now an indexed field: one byte
    assert len(ref) == 1
    base = c.block()  # same headers as before: all indexed
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, base + ref * 6))  # 12 KB decoded: under the cap
    assert answer(c.finish(3), 3)[1]["grpc-status"] == "0"
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, base + ref * 80))  # 160 KB decoded from 90 bytes
    assert goaway(c.rest()) == (3, gw.COMPRESSION_ERROR)


# --------------------------------------------------------------------------------------------- bytes buffered
def test_partial_messages_are_capped_per_connection(limited: Callable[..., Any]) -> None:
    srv, service, connect = limited(max_buffered_in=100 * KB)
    c = connect((INITIAL_WINDOW_SIZE, 1 << 20))
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1 << 20)))  # room for the 80 KB answer
    body1, body3 = pattern(80 * KB), pattern(81 * KB)
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(body1)[: 60 * KB]))
    c.send(c.open(3), frame(DATA, 0, 3, grpc_msg(body3)[: 30 * KB]))  # 90 KB held: under the cap
    assert not [f for f in c.barrier() if f.sid == 3]
    c.send(frame(DATA, 0, 3, grpc_msg(body3)[30 * KB : 50 * KB]))  # 110 KB: this stream is the one that ends
    frames = c.finish(3)
    msgs, trailers = answer(frames, 3)
    assert msgs == [] and trailers["grpc-status"] == str(gw.RESOURCE_EXHAUSTED)
    c.send(frame(DATA, END_STREAM, 1, grpc_msg(body1)[60 * KB :]))  # the other stream still completes
    assert answer(c.finish(1), 1)[0] == [body1]
    (conn,) = srv.server.connections
    assert srv.call(lambda: conn.buffered_in) == 0
    assert service.calls[1].received == [] and service.calls[1].ends == 1


def test_messages_waiting_for_a_busy_handler_count_towards_the_cap(limited: Callable[..., Any]) -> None:
    _srv, service, connect = limited(max_buffered_in=50 * KB)
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"wait:") + grpc_msg(pattern(30 * KB))))
    assert not on(c.barrier(), 1, HEADERS)  # the handler is waiting; the second message waits in memory
    c.send(frame(DATA, 0, 1, grpc_msg(pattern(30 * KB))))
    msgs, trailers = answer(c.finish(1), 1)
    assert trailers["grpc-status"] == str(gw.RESOURCE_EXHAUSTED) and msgs == []
    assert service.calls[0].received == [b"wait:"]
    wait_until(lambda: service.calls[0].ends == 1)


def test_answers_backed_up_pause_the_connection_until_the_peer_reads(limited: Callable[..., Any]) -> None:
    """The peer keeps our send window at 0 and sends requests: past max_buffered_out of waiting answers no message is
    handled and no receive window re-opened; once the answers drain below half, work resumes where it stopped."""
    srv, service, connect = limited(max_buffered_out=10 * KB, connection_window=200 * KB)
    c = connect((INITIAL_WINDOW_SIZE, 0))
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"big:%d" % (12 * KB))))  # 12 KB answer, no window to send it
    c.barrier()
    c.send(frame(DATA, 0, 1, grpc_msg(b"second")), c.open(3), frame(DATA, 0, 3, grpc_msg(b"on stream 3")))
    c.send(frame(DATA, 0, 1, grpc_msg(pattern(110 * KB))))  # past half the connection window
    got = c.barrier()
    assert not [f for f in got if f.type == WINDOW_UPDATE]  # windows stay closed while answers are backed up
    assert [call.received for call in service.calls] == [[b"big:%d" % (12 * KB)], []]
    (conn,) = srv.server.connections
    assert srv.call(lambda: conn.congested)
    # the peer reads: window for everything; the paused messages are handled in order
    c.send(settings((INITIAL_WINDOW_SIZE, 1 << 20)), frame(WINDOW_UPDATE, 0, 0, u32(1 << 20)))
    got = c.barrier()
    assert [f.sid for f in got if f.type == WINDOW_UPDATE] == [0]  # the held-back connection window comes back
    data1 = b"".join(f.payload for f in on(got, 1, DATA))
    assert data1 == grpc_msg(pattern(12 * KB)) + grpc_msg(b"second") + grpc_msg(pattern(110 * KB))
    assert b"".join(f.payload for f in on(got, 3, DATA)) == grpc_msg(b"on stream 3")
    assert not srv.call(lambda: conn.congested)


def test_data_beyond_a_closed_window_is_a_flow_control_error(limited: Callable[..., Any]) -> None:
    _, _, connect = limited(max_buffered_out=1 * KB, connection_window=100 * KB)
    c = connect((INITIAL_WINDOW_SIZE, 0))
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"big:5000")))  # congested: windows are not re-opened
    c.barrier()
    chunk = frame(DATA, 0, 1, b"\0" * (16 * KB))
    first = frame(DATA, 0, 1, struct.pack(">BL", 0, 1 << 20) + b"\0" * (16 * KB - 5))  # a 1 MB message begins
    c.send(first, *([chunk] * 5))  # 96 KB of the 100 KB window: taken
    assert not [f for f in c.barrier() if f.type == GOAWAY]
    c.send(chunk)
    assert goaway(c.rest()) == (1, gw.FLOW_CONTROL_ERROR)


def test_data_beyond_a_stream_window_is_a_flow_control_error(limited: Callable[..., Any]) -> None:
    """Our stream window (16 MiB) holds too: with the connection window larger, one stream may still not send more
    than its own window while we hold its WINDOW_UPDATEs back."""
    _, _, connect = limited(max_buffered_out=1 * KB, connection_window=64 * 1024 * KB)
    c = connect((INITIAL_WINDOW_SIZE, 0))
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"big:5000")))  # congested: windows are not re-opened
    c.barrier()
    step = 256 * KB
    body = struct.pack(">BL", 0, 32 * 1024 * KB) + b"\0" * (gw.STREAM_WINDOW - 5)  # exactly the stream window
    c.send(c.open(3), *(frame(DATA, 0, 3, body[i : i + step]) for i in range(0, len(body), step)))
    assert not [f for f in c.barrier() if f.type == GOAWAY]
    c.send(frame(DATA, 0, 3, b"\0"))  # one byte more
    assert goaway(c.rest()) == (3, gw.FLOW_CONTROL_ERROR)


# ------------------------------------------------------------------------------------------------------ timers
def test_handshake_timeout(limited: Callable[..., Any]) -> None:
    _, _, connect = limited(handshake_timeout=0.3)
    silent = connect(preface=False)  # never sends a byte
    t0 = time.monotonic()
    frames = silent.rest()
    assert goaway(frames)[1] == gw.PROTOCOL_ERROR and 0.25 < time.monotonic() - t0 < 3
    half = connect(preface=False)
    half.send(gw.PREFACE)  # the preface, but never its SETTINGS
    assert goaway(half.rest())[1] == gw.SETTINGS_TIMEOUT
    ok = connect()  # a real client: served long after the timeout
    time.sleep(0.5)  # (what is tested: that nothing happens to it)
    ok.send(ok.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"late")))
    assert answer(ok.finish(1), 1)[0] == [b"late"]


def test_idle_timeout_counts_only_time_without_streams(limited: Callable[..., Any]) -> None:
    _srv, service, connect = limited(idle_timeout=0.4, keepalive_interval=0)
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"a long silent stream")))
    before = c.barrier()
    time.sleep(1.2)  # three idle timeouts with a stream open: nothing happens (an LLM answer can take minutes)
    c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"still served")))
    assert answer(before + c.finish(1), 1)[0] == [b"a long silent stream", b"still served"]
    t0 = time.monotonic()
    frames = c.rest()  # no stream now: GOAWAY NO_ERROR, then the close
    assert goaway(frames) == (1, gw.NO_ERROR) and 0.3 < time.monotonic() - t0 < 4
    assert service.calls[0].ends == 1


def test_keepalive_closes_a_connection_whose_peer_stopped_answering(limited: Callable[..., Any]) -> None:
    srv, service, connect = limited(keepalive_interval=0.3, keepalive_timeout=0.3, idle_timeout=0)
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"open")))
    c.barrier()
    for _ in range(2):  # a live peer answers our PINGs: the connection and its stream stay
        ping = c.until(lambda f: f.type == PING and not f.flags & ACK)[-1]
        c.send(frame(PING, ACK, 0, ping.payload))
    c.until(lambda f: f.type == PING and not f.flags & ACK)  # the next one is never answered
    t0 = time.monotonic()
    with pytest.raises((EOFError, ConnectionResetError)):
        c.until(lambda f: False)
    assert time.monotonic() - t0 < 3
    wait_until(lambda: service.calls[0].ends == 1)
    wait_until(lambda: srv.active() == 0)


def test_grpc_timeout_is_honoured(limited: Callable[..., Any]) -> None:
    _srv, service, connect = limited()
    c = connect()

    def open_with(sid: int, timeout: str) -> bytes:
        return frame(HEADERS, END_HEADERS, sid, c.block(**{"grpc-timeout": timeout}))

    t0 = time.monotonic()
    c.send(open_with(1, "200m"), frame(DATA, 0, 1, grpc_msg(b"wait:")))
    frames = c.finish(1)
    elapsed = time.monotonic() - t0
    trailers = on(frames, 1, HEADERS)[-1].headers
    assert trailers["grpc-status"] == str(gw.DEADLINE_EXCEEDED) and 0.15 < elapsed < 2
    assert [f.payload for f in on(c.barrier(), 1, RST_STREAM)] == [u32(CANCEL)]
    wait_until(lambda: service.calls[0].ends == 1)
    # a deadline that has not passed changes nothing; a malformed one is ignored
    c.send(open_with(3, "30S"), frame(DATA, END_STREAM, 3, grpc_msg(b"in time")))
    assert answer(c.finish(3), 3) == ([b"in time"], {"grpc-status": "0"})
    c.send(open_with(5, "1x"), frame(DATA, END_STREAM, 5, grpc_msg(b"no deadline")))
    assert answer(c.finish(5), 5)[0] == [b"no deadline"]


@pytest.mark.parametrize(("value", "seconds"), [("1H", 3600), ("2M", 120), ("3S", 3), ("4m", 0.004), ("5u", 5e-6)])
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert gw._grpc_timeout(value.encode()) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "123456789S", "10s", "1.5S", "-1S"])
def test_grpc_timeout_malformed(value: str) -> None:
    assert gw._grpc_timeout(value.encode()) is None


# -------------------------------------------------------------------------------------------- quiet endings
def test_call_error_ends_the_stream_quietly(limited: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    _srv, service, connect = limited(CallErrors())
    caplog.set_level(logging.DEBUG, logger="extproc")
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"fine") + grpc_msg(b"bad") + grpc_msg(b"never handled")))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"fine"] and trailers["grpc-status"] == str(gw.INVALID_ARGUMENT)
    assert trailers["grpc-message"] == "bad message: not an ext_proc request"
    c.send(c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"abad")))
    _, trailers = answer(c.finish(3), 3)
    assert trailers["grpc-status"] == str(gw.FAILED_PRECONDITION)
    assert trailers["grpc-message"] == "the exchange is over"
    assert [call.received for call in service.calls] == [[b"fine", b"bad"], [b"abad"]]
    wait_until(lambda: [call.ends for call in service.calls] == [1, 1])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_peer_faults_are_one_warning_line_per_interval(
    limited: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, connect = limited(log_interval=0.5)
    caplog.set_level(logging.WARNING, logger="extproc")
    for _ in range(20):
        bad = connect(preface=False)
        bad.send(b"GET / HTTP/1.1\r\n\r\n")
        assert goaway(bad.rest())[1] == gw.PROTOCOL_ERROR
    lines = [r for r in caplog.records if r.name == "extproc"]
    assert len(lines) == 1 and "not an HTTP/2 client" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    time.sleep(0.6)  # the interval passes: the next fault is logged with the count of those left out
    bad = connect(preface=False)
    bad.send(b"\0" * 24)
    bad.rest()
    lines = [r.getMessage() for r in caplog.records if r.name == "extproc"]
    assert len(lines) == 2 and "and 19 more peer faults" in lines[1]


# ------------------------------------------------------------------------------ RFC 9113: errors on stream 0
@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(frame(DATA, 0, 0, b"x"), gw.PROTOCOL_ERROR, id="DATA-on-0"),
        pytest.param(frame(DATA, 0, 9, b"x"), gw.PROTOCOL_ERROR, id="DATA-on-idle"),
        pytest.param(frame(DATA, 0, 2, b"x"), gw.PROTOCOL_ERROR, id="DATA-on-even"),
        pytest.param(frame(RST_STREAM, 0, 0, u32(CANCEL)), gw.PROTOCOL_ERROR, id="RST-on-0"),
        pytest.param(frame(RST_STREAM, 0, 9, u32(CANCEL)), gw.PROTOCOL_ERROR, id="RST-on-idle"),
        pytest.param(frame(RST_STREAM, 0, 1, b"abc"), gw.FRAME_SIZE_ERROR, id="RST-size"),
        pytest.param(frame(GOAWAY, 0, 1, u32(0) + u32(0)), gw.PROTOCOL_ERROR, id="GOAWAY-on-stream"),
        pytest.param(frame(GOAWAY, 0, 0, b"1234"), gw.FRAME_SIZE_ERROR, id="GOAWAY-size"),
        pytest.param(frame(PRIORITY, 0, 0, u32(1) + b"\x10"), gw.PROTOCOL_ERROR, id="PRIORITY-on-0"),
        pytest.param(frame(SETTINGS, ACK, 0, b"\0" * 6), gw.FRAME_SIZE_ERROR, id="SETTINGS-ACK-payload"),
        pytest.param(settings((0x2, 2)), gw.PROTOCOL_ERROR, id="ENABLE_PUSH-2"),
        pytest.param(frame(PING, ACK, 0, b"1234567"), gw.FRAME_SIZE_ERROR, id="PING-ACK-size"),
        pytest.param(frame(WINDOW_UPDATE, 0, 9, u32(1)), gw.PROTOCOL_ERROR, id="WINDOW_UPDATE-on-idle"),
        pytest.param(frame(HEADERS, END_HEADERS | 0x20, 9, b"\0\0"), gw.FRAME_SIZE_ERROR, id="HEADERS-priority-cut"),
    ],
)
def test_connection_errors_as_rfc_9113_requires(limited: Callable[..., Any], frames: bytes, code: int) -> None:
    _, _, connect = limited()
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"x")))  # stream 1 is open
    c.barrier()
    c.send(frames)
    assert goaway(c.rest())[1] == code


def test_first_frame_after_the_preface_must_be_settings(limited: Callable[..., Any]) -> None:
    _, _, connect = limited()
    c = connect(preface=False)
    c.send(gw.PREFACE, frame(PING, 0, 0, b"12345678"))
    assert goaway(c.rest())[1] == gw.PROTOCOL_ERROR
    c = connect(preface=False)
    c.send(gw.PREFACE, c.open(1))
    assert goaway(c.rest())[1] == gw.PROTOCOL_ERROR


@pytest.mark.parametrize(("increment", "code"), [(0, gw.PROTOCOL_ERROR), (0x7FFFFFFF, gw.FLOW_CONTROL_ERROR)])
def test_stream_window_errors_reset_only_that_stream(limited: Callable[..., Any], increment: int, code: int) -> None:
    _, service, connect = limited()
    c = connect()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"x")), c.open(3), frame(DATA, 0, 3, grpc_msg(b"y")))
    c.barrier()
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(increment)))
    assert [f.payload for f in on(c.barrier(), 1, RST_STREAM)] == [u32(code)]
    c.send(frame(DATA, END_STREAM, 3, grpc_msg(b"z")))
    assert answer(c.finish(3), 3)[1]["grpc-status"] == "0"
    wait_until(lambda: service.calls[0].ends == 1)


class CountingStreams(dict):  # type: ignore[type-arg]
    """A connection's stream table that counts walks over all its streams."""

    walks = 0

    def values(self) -> Any:
        self.walks += 1
        return super().values()


def test_settings_apply_the_window_change_once() -> None:
    """Many INITIAL_WINDOW_SIZE entries in one frame: the open streams are walked once (not once per entry), and each
    stream's window moves by the difference to the last value."""
    conn = gw.Connection(gw.Server(lambda path: None))
    conn.streams = CountingStreams()
    for sid in (1, 3):
        conn.streams[sid] = gw._Stream(sid, EchoService()(PATH), conn.peer_window)
    conn.streams[3].send_window -= 1000  # it sent 1000 bytes
    entries = b"".join(struct.pack(">HL", 0x4, v) for v in [10, 1 << 20, 5, 70000] * 5000)
    conn._settings(entries)
    assert conn.streams.walks == 1
    assert conn.peer_window == 70000
    assert [conn.streams[s].send_window for s in (1, 3)] == [70000, 69000]


# --------------------------------------------------------------------------------------------------- Limits
def test_limits_replace_converts_and_checks() -> None:
    base = gw.Limits()
    changed = base.replace(max_concurrent_streams="2048", idle_timeout="1.5")
    assert changed.max_concurrent_streams == 2048 and changed.idle_timeout == 1.5
    assert changed.max_message == base.max_message
    with pytest.raises(ValueError, match="unknown gRPC limit 'nope'"):
        base.replace(nope="1")
    with pytest.raises(ValueError):
        base.replace(max_message="-5")
    with pytest.raises(ValueError):
        base.replace(max_concurrent_streams="0")


# ------------------------------------------------------------------------------------------------------- mTLS
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, the service's certificate (``extproc.test``), a client certificate from that CA, and one from another."""
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    files = {}
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    files["ca"] = str(d / "ca.pem")
    for name, issuer, ident in [("server", ca, "extproc.test"), ("client", ca, "envoy"), ("stranger", other, "envoy")]:
        cert = issuer.issue_cert(ident)
        cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(d / f"{name}.pem"))
        files[name], files[f"{name}_key"] = str(d / f"{name}.pem"), str(d / f"{name}.key")
    return files


def tls_channel(addr: tuple[str, int], pki: dict[str, str], client: str | None) -> grpc.Channel:
    def read(name: str) -> bytes:
        with open(pki[name], "rb") as f:
            return f.read()

    if client is None:
        creds = grpc.ssl_channel_credentials(read("ca"))
    else:
        creds = grpc.ssl_channel_credentials(read("ca"), read(f"{client}_key"), read(client))
    options = [("grpc.ssl_target_name_override", "extproc.test")]
    return grpc.secure_channel(f"{addr[0]}:{addr[1]}", creds, options=options)


def test_mtls_serves_only_clients_with_a_certificate_from_the_ca(
    serve: Callable[..., Running],  # noqa: F811
    pki: dict[str, str],
) -> None:
    srv = serve()
    context = gw.server_tls(pki["server"], pki["server_key"], pki["ca"])
    srv.run(srv.server.listen("127.0.0.1", 0, ssl=context))
    addr = ("127.0.0.1", srv.server._servers[-1].sockets[0].getsockname()[1])
    with tls_channel(addr, pki, "client") as ch:
        assert list(chat(ch)(iter([b"over mTLS", b"two"]), timeout=10)) == [b"over mTLS", b"two"]
    for client in (None, "stranger"):  # no certificate; a certificate from another CA
        with tls_channel(addr, pki, client) as ch, pytest.raises(grpc.RpcError) as err:
            list(chat(ch)(iter([b"x"]), timeout=5))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with socket.create_connection(addr) as plain:  # cleartext HTTP/2 on the TLS port: never served
        plain.settimeout(5)
        plain.sendall(gw.PREFACE + settings() + frame(PING, 0, 0, b"12345678"))
        got = b""
        with contextlib.suppress(OSError):
            while chunk := plain.recv(4096):
                got += chunk
        assert srv.server.preface not in got and frame(PING, ACK, 0, b"12345678") not in got
    assert len(srv.service.calls) == 1


def test_mtls_requires_alpn_h2(serve: Callable[..., Running], pki: dict[str, str]) -> None:  # noqa: F811
    srv = serve()
    context = gw.server_tls(pki["server"], pki["server_key"], pki["ca"])
    srv.run(srv.server.listen("127.0.0.1", 0, ssl=context))
    port = srv.server._servers[-1].sockets[0].getsockname()[1]
    pong = frame(PING, ACK, 0, b"12345678")

    def ping_over_tls(alpn: list[str] | None) -> bytes:
        client = ssl.create_default_context(cafile=pki["ca"])
        client.load_cert_chain(pki["client"], pki["client_key"])
        if alpn:
            client.set_alpn_protocols(alpn)
        with (
            socket.create_connection(("127.0.0.1", port)) as raw_sock,
            client.wrap_socket(raw_sock, server_hostname="extproc.test") as tls,
        ):
            tls.settimeout(5)
            tls.sendall(gw.PREFACE + settings() + frame(PING, 0, 0, b"12345678"))
            got = b""
            with contextlib.suppress(OSError):  # (a TLS connection closed under us)
                while pong not in got and (chunk := tls.recv(4096)):
                    got += chunk
            return got

    assert pong in ping_over_tls(["h2"])
    assert pong not in ping_over_tls(["http/1.1"])  # TLS without h2: closed before any HTTP/2
    assert pong not in ping_over_tls(None)


# ---------------------------------------------------------------------------------------------- HPACK memo
def test_only_short_header_blocks_are_remembered() -> None:
    """Blocks are remembered by their bytes; a peer sending long blocks that leave the table alone must not make the
    memo hold 64 x 256 KB."""
    conn = gw.Connection(gw.Server(lambda path: None))
    enc = hpack.Encoder()

    def block(*pairs: tuple[str, str]) -> bytes:  # literals never indexed: the HPACK table stays as it is
        return enc.encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in pairs])

    short = block((":path", "/a"), ("x", "y"))
    long = block((":path", "/b"), ("x-pad", "p" * 2000))
    assert conn._path(short) == ("/a", None) and conn._path(long) == ("/b", None)
    assert short in conn.paths and long not in conn.paths
