"""grpc_wire.Server: interop with a real gRPC C-core client (grpcio), HTTP/2 frame by frame, and the real ExtProc.

The server runs on an event loop in a background thread (asyncio's, and uvloop's where it matters); the clients run
in the test's thread: grpcio's synchronous API, or a blocking socket that writes frames by hand (``grpc_wire.frame``
and an ``hpack.Encoder``). A PING sent after the frames under test is the barrier: the server handles frames in order
and writes everything one batch produced before it answers the PING, so "nothing more arrived before the PING ACK"
means "the server sent nothing more", without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import queue
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
import uvloop

from extproc.core.config import build_config
from extproc.core.exchange import Gateway
from extproc.transport import grpc_wire as gw
from extproc.transport.grpc_wire import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    frame,
)
from extproc.transport.servicer import PROCESS_PATH, ExtProc

ROOT = Path(__file__).resolve().parents[2]
PATH = "/test.Echo/Chat"
SETUP_FAILS = "/test.Echo/SetupFails"
MB = 1024 * 1024
# grpcio refuses answers over 4 MB by default
OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# The client's own receive windows kept small (no BDP growth): the server's send side must wait for WINDOW_UPDATEs.
SMALL_WINDOWS = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x4, 0x5
CANCEL, REFUSED_STREAM = 0x8, 0x7


def pattern(n: int) -> bytes:
    """Deterministic bytes that change everywhere, so a lost, repeated or reordered chunk shows."""
    return random.Random(n).randbytes(n)


def wait_until(pred: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


# ------------------------------------------------------------------------------------------------- the test service
class EchoCall:
    """Answers each message by its first word: ``raise``, ``araise`` (async), ``sleep:S:...``, ``wait:...`` (until
    the service's gate opens), ``big:N:...`` (N pattern bytes); anything else is echoed."""

    def __init__(self, service: EchoService) -> None:
        self.service = service
        self.received: list[bytes] = []
        self.ends = 0
        self.awaitables: list[Coroutine[Any, Any, bytes]] = []
        self.end_raises = False

    def message(self, data: bytes) -> bytes | Coroutine[Any, Any, bytes]:
        self.received.append(data)
        cmd, _, arg = data.partition(b":")
        if cmd == b"raise":
            raise RuntimeError("handler bug")
        if cmd == b"big":
            return pattern(int(arg.partition(b":")[0]))
        if cmd == b"sleep":
            return self._keep(self._sleep(float(arg.partition(b":")[0]), data))
        if cmd == b"wait":
            return self._keep(self._wait(data))
        if cmd == b"araise":
            return self._keep(self._raise())
        if cmd == b"endraise":
            self.end_raises = True
        return data

    def _keep(self, coro: Coroutine[Any, Any, bytes]) -> Coroutine[Any, Any, bytes]:
        self.awaitables.append(coro)
        return coro

    @staticmethod
    async def _sleep(delay: float, data: bytes) -> bytes:
        await asyncio.sleep(delay)  # a slow handler: the delay is the behaviour under test, not synchronisation
        return data

    async def _wait(self, data: bytes) -> bytes:
        await self.service.gate().wait()
        return data

    @staticmethod
    async def _raise() -> bytes:
        await asyncio.sleep(0)
        raise RuntimeError("async handler bug")

    def end(self) -> None:
        self.ends += 1
        if self.end_raises:
            raise RuntimeError("end() bug")


class EchoService:
    def __init__(self) -> None:
        self.calls: list[EchoCall] = []
        self.paths: list[str] = []
        self._gate: asyncio.Event | None = None

    def __call__(self, path: str) -> EchoCall | None:
        self.paths.append(path)
        if path == SETUP_FAILS:
            raise RuntimeError("service bug")
        if path != PATH:
            return None
        call = EchoCall(self)
        self.calls.append(call)
        return call

    def gate(self) -> asyncio.Event:  # only on the server's loop
        if self._gate is None:
            self._gate = asyncio.Event()
        return self._gate


# -------------------------------------------------------------------------------- the server in a background thread
class Running:
    def __init__(self, service: Callable[[str], Any], loop: str = "asyncio", limits: gw.Limits | None = None) -> None:
        self.service = service
        self.loop = LOOPS[loop]()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"grpc-wire-{loop}", daemon=True)
        self.thread.start()
        self.server = gw.Server(service, limits)
        self.closed = False

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the server's loop (where the server's state lives)."""

        async def on_loop() -> Any:
            return fn()

        return self.run(on_loop())

    def tcp(self) -> tuple[str, int]:
        self.run(self.server.listen("127.0.0.1", 0))
        return "127.0.0.1", self.server._servers[-1].sockets[0].getsockname()[1]

    def unix(self, path: Path) -> str:
        self.run(self.server.listen(path=str(path)))
        return str(path)

    def active(self) -> int:
        return self.call(self.server.active_streams)

    def open_gate(self) -> None:
        assert isinstance(self.service, EchoService)
        self.call(lambda: self.service.gate().set())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.run(self.server.stop(0))

        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(
        service: Callable[[str], Any] | None = None, loop: str = "asyncio", limits: gw.Limits | None = None
    ) -> Running:
        srv = Running(service if service is not None else EchoService(), loop, limits)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.close()


Echo = tuple[Running, EchoService, tuple[str, int]]  # the echo fixture: server, service, TCP address


@pytest.fixture
def echo(serve: Callable[..., Running]) -> Echo:
    srv = serve()
    return srv, srv.service, srv.tcp()


def target(addr: tuple[str, int] | str) -> str:
    return f"unix:{addr}" if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"


def channel(addr: tuple[str, int] | str, *extra: tuple[str, Any]) -> grpc.Channel:
    return grpc.insecure_channel(target(addr), options=[*OPTIONS, *extra])


def chat(ch: grpc.Channel, path: str = PATH) -> Callable[..., Any]:
    return ch.stream_stream(path)  # no serializers: raw bytes both ways


class Feed:
    """A request iterator the test feeds one message at a time; ``close()`` half-closes the stream."""

    def __init__(self) -> None:
        self.q: queue.Queue[bytes | None] = queue.Queue()

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> bytes:
        item = self.q.get()
        if item is None:
            raise StopIteration
        return item

    def put(self, msg: bytes) -> None:
        self.q.put(msg)

    def close(self) -> None:
        self.q.put(None)


# ---------------------------------------------------------------------------------------------- grpc C-core clients
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_many_messages_on_one_stream_answered_in_order(
    serve: Callable[..., Running], tmp_path: Path, transport: str, loop: str = "asyncio"
) -> None:
    srv = serve(loop=loop)
    addr = srv.tcp() if transport == "tcp" else srv.unix(tmp_path / "wire.sock")
    msgs = [b"m%d-" % i + b"x" * (i % 97) for i in range(2000)]
    with channel(addr) as ch:
        assert list(chat(ch)(iter(msgs), timeout=10)) == msgs
        # a message at a time: each answer arrives before the next request is sent
        feed = Feed()
        answers = chat(ch)(feed, timeout=10)
        for i in range(50):
            feed.put(b"ping-%d" % i)
            assert next(answers) == b"ping-%d" % i
        feed.put(b"")  # an empty message is a message
        assert next(answers) == b""
        feed.close()
        assert list(answers) == []
        assert answers.code() == grpc.StatusCode.OK
    calls = srv.service.calls
    assert [c.received for c in calls] == [msgs, [*(b"ping-%d" % i for i in range(50)), b""]]
    assert [c.ends for c in calls] == [1, 1]
    assert srv.active() == 0


def test_stream_without_messages_ends_ok(echo: Echo) -> None:
    _, service, addr = echo
    with channel(addr) as ch:
        call = chat(ch)(iter([]), timeout=5)
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK
    assert [c.ends for c in service.calls] == [1]


def test_concurrent_streams_on_one_channel(echo: Echo) -> None:
    srv, service, addr = echo

    def one(ch: grpc.Channel, k: int) -> list[bytes]:
        msgs = [b"s%d-m%d" % (k, i) for i in range(40)]
        if k % 3 == 0:  # some answered late: their order must hold while other streams go on
            msgs[5] = b"sleep:0.01:s%d" % k
            msgs[20] = b"sleep:0.005:s%d" % k
        got = list(chat(ch)(iter(msgs), timeout=10))
        assert got == msgs
        return got

    with channel(addr) as ch, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda k: one(ch, k), range(64)))
    assert len(results) == 64
    assert len(service.calls) == 64 and all(c.ends == 1 for c in service.calls)
    assert srv.active() == 0


def test_large_messages_both_ways_with_small_client_windows(
    serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch, loop: str = "asyncio"
) -> None:
    """5 MB and 20 MB each way: frames split, our receive window (16 MB per stream) must be given back, and the
    client's small windows make the server wait for WINDOW_UPDATEs and resume, many times."""
    srv = serve(loop=loop)
    addr = srv.tcp()
    partial_writes = 0
    write_data = gw.Connection._write_data

    def counting(self: gw.Connection, st: Any, data: bytes | bytearray) -> None:
        nonlocal partial_writes
        write_data(self, st, data)
        partial_writes += bool(st.outbox)

    monkeypatch.setattr(gw.Connection, "_write_data", counting)
    req5 = b"big:%d:" % (20 * MB) + pattern(5 * MB)
    req20 = b"big:%d:" % (5 * MB) + pattern(20 * MB)
    echo20 = b"echo" + pattern(20 * MB - 7)
    with channel(addr, *SMALL_WINDOWS) as ch:
        got = list(chat(ch)(iter([req5, req20, echo20, b"small"]), timeout=30))
    assert [len(g) for g in got] == [20 * MB, 5 * MB, len(echo20), 5]
    assert got[0] == pattern(20 * MB) and got[1] == pattern(5 * MB) and got[2] == echo20 and got[3] == b"small"
    call = srv.service.calls[0]
    assert call.received == [req5, req20, echo20, b"small"] and call.ends == 1
    assert partial_writes > 10  # the send side really was flow-controlled


def test_many_large_answers_interleave_on_one_connection(echo: Echo) -> None:
    """Streams share the connection's send window: each blocked stream resumes, none starves or mixes bytes."""
    _, service, addr = echo
    sizes = [1 * MB + k * 4099 for k in range(8)]

    def one(ch: grpc.Channel, n: int) -> None:
        got = list(chat(ch)(iter([b"big:%d" % n, b"big:%d" % (n + 1)]), timeout=20))
        assert got == [pattern(n), pattern(n + 1)]

    with channel(addr, *SMALL_WINDOWS) as ch, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: one(ch, n), sizes))
    assert all(c.ends == 1 for c in service.calls) and len(service.calls) == 8


def test_client_max_frame_size_is_respected(echo: Echo, monkeypatch: pytest.MonkeyPatch) -> None:
    addr = echo[2]
    with channel(addr, ("grpc.http2.max_frame_size", 65536)) as ch:
        got = list(chat(ch)(iter([b"big:%d" % (3 * MB)]), timeout=10))
    assert got == [pattern(3 * MB)]
    with channel(addr) as ch:  # the default 16 KB frames
        assert list(chat(ch)(iter([b"big:%d" % MB]), timeout=10)) == [pattern(MB)]


def test_async_answers_keep_order_and_later_messages_wait(
    echo: Echo,
) -> None:
    _, service, addr = echo
    msgs = [b"first", b"sleep:0.03:a", b"queued-1", b"sleep:0.0:b", b"sleep:0.01:c", b"queued-2", b"big:70000"]
    with channel(addr) as ch:
        got = list(chat(ch)(iter(msgs), timeout=10))
    assert got[:6] == msgs[:6] and got[6] == pattern(70000)
    assert service.calls[0].received == msgs and service.calls[0].ends == 1
    # the stream half-closed while an answer was pending: the trailers still came after all the answers
    with channel(addr) as ch:
        feed = Feed()
        answers = chat(ch)(feed, timeout=10)
        feed.put(b"sleep:0.02:last")
        feed.close()
        assert list(answers) == [b"sleep:0.02:last"] and answers.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("path", ["/test.Echo/Nope", "/envoy.service.ext_proc.v3.ExternalProcessor/Process"])
def test_unknown_method_is_unimplemented(echo: Echo, path: str) -> None:
    _, service, addr = echo
    with channel(addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(chat(ch, path)(iter([b"a", b"b"]), timeout=5))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert path in err.value.details()
        # unary too, and the channel still works
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary(path)(b"x", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert list(chat(ch)(iter([b"ok"]), timeout=5)) == [b"ok"]
    assert service.paths.count(path) == 2


def test_service_setup_failure_answers_and_the_server_goes_on(
    echo: Echo,
) -> None:
    addr = echo[2]
    with channel(addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(chat(ch, SETUP_FAILS)(iter([b"a"]), timeout=5))
        assert err.value.code() != grpc.StatusCode.OK  # (UNIMPLEMENTED today: "unknown method")
        assert list(chat(ch)(iter([b"ok"]), timeout=5)) == [b"ok"]


@pytest.mark.parametrize("bad", [b"raise", b"araise"])
def test_handler_raising_is_internal_and_other_streams_go_on(echo: Echo, bad: bytes) -> None:
    srv, service, addr = echo
    with channel(addr) as ch:
        other = Feed()
        survivor = chat(ch)(other, timeout=10)
        other.put(b"before")
        assert next(survivor) == b"before"
        feed = Feed()
        failing = chat(ch)(feed, timeout=10)
        feed.put(b"one")
        assert next(failing) == b"one"
        feed.put(bad)
        feed.put(b"never answered")
        with pytest.raises(grpc.RpcError) as err:
            next(failing)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert err.value.details() == "handler failed"
        feed.close()
        other.put(b"after")
        assert next(survivor) == b"after"
        other.close()
        assert list(survivor) == [] and survivor.code() == grpc.StatusCode.OK
        assert list(chat(ch)(iter([b"new stream"]), timeout=5)) == [b"new stream"]
    failed = service.calls[1]
    assert failed.received[:2] == [b"one", bad] and b"never answered" not in failed.received[2:]
    wait_until(lambda: all(c.ends == 1 for c in service.calls))
    assert srv.active() == 0


@pytest.mark.parametrize("while_waiting", [False, True])
def test_client_cancel_ends_the_call_once(echo: Echo, while_waiting: bool) -> None:
    srv, service, addr = echo
    with channel(addr) as ch:
        feed = Feed()
        answers = chat(ch)(feed, timeout=10)
        feed.put(b"one")
        assert next(answers) == b"one"
        if while_waiting:  # the handler is awaiting when the stream goes away: its task is cancelled
            feed.put(b"wait:forever")
            wait_until(lambda: len(service.calls[0].received) == 2)
        answers.cancel()
        with pytest.raises(grpc.RpcError) as err:
            next(answers)
        assert err.value.code() == grpc.StatusCode.CANCELLED
        wait_until(lambda: service.calls[0].ends == 1)
        wait_until(lambda: srv.active() == 0)
        # the connection is fine, and a later stream changes nothing for the cancelled one
        assert list(chat(ch)(iter([b"again"]), timeout=5)) == [b"again"]
    if while_waiting:
        wait_until(lambda: inspect.getcoroutinestate(service.calls[0].awaitables[0]) == inspect.CORO_CLOSED)
    assert [c.ends for c in service.calls] == [1, 1]


def test_client_deadline_ends_the_call_once(echo: Echo) -> None:
    srv, service, addr = echo
    with channel(addr) as ch:
        with pytest.raises(grpc.RpcError) as err:
            list(chat(ch)(iter([b"wait:"]), timeout=0.2))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        wait_until(lambda: service.calls[0].ends == 1)
    assert srv.active() == 0


def test_channel_closed_mid_stream_ends_the_call_once(
    echo: Echo,
) -> None:
    srv, service, addr = echo
    ch = channel(addr)
    feed = Feed()
    answers = chat(ch)(feed, timeout=10)
    feed.put(b"hi")
    assert next(answers) == b"hi"
    ch.close()
    feed.close()
    wait_until(lambda: service.calls[0].ends == 1)
    wait_until(lambda: srv.active() == 0)
    assert service.calls[0].ends == 1


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_stop_lets_streams_finish_and_refuses_new_connections(
    serve: Callable[..., Running], tmp_path: Path, transport: str
) -> None:
    srv = serve()
    addr = srv.tcp() if transport == "tcp" else srv.unix(tmp_path / "wire.sock")
    service = srv.service
    with channel(addr) as ch:
        feed = Feed()
        answers = chat(ch)(feed, timeout=10)
        feed.put(b"wait:in flight")
        wait_until(lambda: srv.active() == 1 and len(service.calls[0].received) == 1)
        t0 = time.monotonic()
        stopping = asyncio.run_coroutine_threadsafe(srv.server.stop(10), srv.loop)
        wait_until(lambda: srv.server.draining)

        def refused() -> bool:
            family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
            with socket.socket(family) as s:
                try:
                    s.connect(addr)
                except (ConnectionRefusedError, FileNotFoundError):
                    return True
            return False

        wait_until(refused, 2)
        with channel(addr) as other, pytest.raises(grpc.RpcError) as err:
            list(chat(other)(iter([b"x"]), timeout=2))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # a new stream on the draining connection is not served either
        with pytest.raises(grpc.RpcError) as err:
            list(chat(ch)(iter([b"y"]), timeout=2))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not stopping.done()
        # the stream in flight goes on: its pending answer, more messages, then OK
        srv.open_gate()
        assert next(answers) == b"wait:in flight"
        feed.put(b"more")
        assert next(answers) == b"more"
        feed.close()
        assert list(answers) == [] and answers.code() == grpc.StatusCode.OK
        stopping.result(5)
        assert time.monotonic() - t0 < 5
    assert [c.ends for c in service.calls] == [1]
    assert service.paths == [PATH]


def test_stop_after_grace_closes_streams_still_running(echo: Echo) -> None:
    srv, service, addr = echo
    with channel(addr) as ch:
        feed = Feed()
        answers = chat(ch)(feed, timeout=10)
        feed.put(b"wait:never")
        wait_until(lambda: srv.active() == 1)
        t0 = time.monotonic()
        srv.run(srv.server.stop(0.2))
        assert 0.15 < time.monotonic() - t0 < 3
        with pytest.raises(grpc.RpcError) as err:
            next(answers)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        feed.close()
    wait_until(lambda: service.calls[0].ends == 1)
    wait_until(lambda: inspect.getcoroutinestate(service.calls[0].awaitables[0]) == inspect.CORO_CLOSED)
    assert srv.active() == 0 and service.calls[0].ends == 1


def test_uvloop_serves_clients(serve: Callable[..., Running], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    srv = serve(loop="uvloop")
    addr = srv.tcp()
    probe = Raw(addr)
    try:
        probe.sock.settimeout(1)  # a working server answers a PING in a millisecond; this one never writes
        probe.barrier()
    finally:
        probe.close()
    # served at all: then the same interop as on asyncio's loop
    srv.close()
    test_many_messages_on_one_stream_answered_in_order(serve, tmp_path, "tcp", loop="uvloop")
    test_many_messages_on_one_stream_answered_in_order(serve, tmp_path, "unix", loop="uvloop")
    test_large_messages_both_ways_with_small_client_windows(serve, monkeypatch, loop="uvloop")


# -------------------------------------------------------------------------------------------- HTTP/2 frame by frame
@dataclass
class Frame:
    type: int
    flags: int
    sid: int
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", k, v) for k, v in pairs))


def grpc_msg(data: bytes, compressed: int = 0) -> bytes:
    return struct.pack(">BL", compressed, len(data)) + data


def u32(n: int) -> bytes:
    return struct.pack(">L", n)


def split_messages(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        flag, n = struct.unpack_from(">BL", data, pos)
        assert flag == 0
        out.append(data[pos + 5 : pos + 5 + n])
        pos += 5 + n
    assert pos == len(data)
    return out


class Raw:
    """A blocking HTTP/2 client socket that sends frames as given and decodes what comes back."""

    def __init__(self, addr: tuple[str, int] | str, *pairs: tuple[int, int], preface: bool = True) -> None:
        family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.sock = socket.socket(family)
        self.sock.settimeout(5)
        self.sock.connect(addr)
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.pings = 0
        if preface:
            self.send(PREFACE, settings(*pairs))

    def close(self) -> None:
        self.sock.close()

    def send(self, *parts: bytes) -> None:
        self.sock.sendall(b"".join(parts))

    def block(self, path: str = PATH, **extra: str) -> bytes:
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "test")]
        return self.enc.encode([*headers, ("content-type", "application/grpc"), ("te", "trailers"), *extra.items()])

    def open(self, sid: int, path: str = PATH, end: bool = False) -> bytes:
        return frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, self.block(path))

    def recv(self) -> Frame | None:
        while True:
            if len(self.buf) >= 9:
                hi, lo, ftype, flags, sid = struct.unpack_from(">BHBBL", self.buf)
                n = hi << 16 | lo
                if len(self.buf) >= 9 + n:
                    f = Frame(ftype, flags, sid & 0x7FFFFFFF, bytes(self.buf[9 : 9 + n]))
                    del self.buf[: 9 + n]
                    if ftype == HEADERS:
                        assert flags & END_HEADERS and not flags & PADDED
                        f.headers = {k.decode(): v.decode() for k, v in self.dec.decode(f.payload, raw=True)}
                    return f
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buf += chunk

    def until(self, pred: Callable[[Frame], bool]) -> list[Frame]:
        frames: list[Frame] = []
        while True:
            f = self.recv()
            if f is None:
                raise EOFError(frames)
            frames.append(f)
            if pred(f):
                return frames

    def barrier(self) -> list[Frame]:
        """Everything the server sent before it answered a PING sent now."""
        self.pings += 1
        token = struct.pack(">Q", 0xC0FFEE00 + self.pings)
        self.send(frame(PING, 0, 0, token))
        frames = self.until(lambda f: f.type == PING and f.flags & ACK and f.payload == token)
        return frames[:-1]

    def finish(self, sid: int) -> list[Frame]:
        """Frames up to the stream's trailers (HEADERS with END_STREAM) or its RST_STREAM."""
        return self.until(
            lambda f: f.sid == sid and (f.type == RST_STREAM or (f.type == HEADERS and bool(f.flags & END_STREAM)))
        )

    def rest(self) -> list[Frame]:
        """Everything until the server closes the connection."""
        frames = []
        while (f := self.recv()) is not None:
            frames.append(f)
        return frames


def on(frames: list[Frame], sid: int, *types: int) -> list[Frame]:
    return [f for f in frames if f.sid == sid and (not types or f.type in types)]


def answer(frames: list[Frame], sid: int) -> tuple[list[bytes], dict[str, str]]:
    """The stream's messages and its trailers (the last HEADERS)."""
    heads = on(frames, sid, HEADERS)
    assert heads and heads[-1].flags & END_STREAM
    if len(heads) == 2:
        assert heads[0].headers == {":status": "200", "content-type": "application/grpc"}
    data = b"".join(f.payload for f in on(frames, sid, DATA))
    return split_messages(data), heads[-1].headers


@pytest.fixture
def raw(echo: Echo) -> Iterator[Callable[..., Raw]]:
    opened: list[Raw] = []

    def connect(*pairs: tuple[int, int], preface: bool = True) -> Raw:
        conn = Raw(echo[2], *pairs, preface=preface)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def test_server_preface_settings_ack_and_ping(raw: Callable[..., Raw]) -> None:
    c = raw()
    first = c.barrier()
    assert first[0].type == SETTINGS and not first[0].flags & ACK  # the server's preface comes first
    values = dict(struct.unpack_from(">HL", first[0].payload, i) for i in range(0, len(first[0].payload), 6))
    assert values[INITIAL_WINDOW_SIZE] == gw.STREAM_WINDOW and values[MAX_FRAME_SIZE] == gw.MAX_FRAME
    assert any(f.type == WINDOW_UPDATE and f.sid == 0 for f in first)
    assert [f for f in first if f.type == SETTINGS and f.flags & ACK and not f.payload]  # our SETTINGS acked
    token = b"8 bytes!"
    c.send(frame(PING, 0, 0, token), frame(PING, ACK, 0, b"an ack.."))  # a PING ACK is not answered
    got = c.until(lambda f: f.type == PING)
    assert got[-1].flags == ACK and got[-1].payload == token
    assert not [f for f in c.barrier() if f.type == PING]
    c.send(settings((0x3, 100)), frame(SETTINGS, ACK, 0))  # an ACK of ours is not acked again
    assert [(f.type, f.flags) for f in c.barrier()] == [(SETTINGS, ACK)]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
        [PREFACE[:10] + b"XX" + PREFACE[12:]],
        [b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\n\r" + b"\0" * 20],  # a valid start, then not
        [PREFACE[:5], b"?"],
    ],
)
def test_bad_preface_gets_goaway_and_close(raw: Callable[..., Raw], pieces: list[bytes]) -> None:
    c = raw(preface=False)
    for piece in pieces:
        c.send(piece)
    frames = c.rest()
    assert [f.type for f in frames] == [SETTINGS, WINDOW_UPDATE, GOAWAY]
    assert struct.unpack(">LL", frames[-1].payload[:8]) == (0, gw.PROTOCOL_ERROR)


def test_preface_in_pieces(raw: Callable[..., Raw]) -> None:
    c = raw(preface=False)
    for i in range(0, len(PREFACE), 5):
        c.send(PREFACE[i : i + 5])
    c.send(settings(), c.open(1, end=False), frame(DATA, END_STREAM, 1, grpc_msg(b"hello")))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"hello"] and trailers == {"grpc-status": "0"}


def test_frames_byte_by_byte(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw(preface=False)
    wire = PREFACE + settings() + c.open(1) + frame(DATA, 0, 1, grpc_msg(b"one") + grpc_msg(b"two"))
    wire += frame(DATA, END_STREAM, 1, grpc_msg(b"three"))
    for i in range(len(wire)):
        c.send(wire[i : i + 1])
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"one", b"two", b"three"] and trailers["grpc-status"] == "0"
    assert echo[1].calls[0].ends == 1


def test_headers_split_across_continuation_frames(raw: Callable[..., Raw]) -> None:
    c = raw()
    block = c.block(**{"x-long": "v" * 300})
    parts = [block[:7], block[7:20], block[20:]]
    c.send(
        frame(HEADERS, 0, 1, parts[0]),
        frame(CONTINUATION, 0, 1, parts[1]),
        frame(CONTINUATION, END_HEADERS, 1, parts[2]),
        frame(DATA, END_STREAM, 1, grpc_msg(b"continued")),
    )
    assert answer(c.finish(1), 1)[0] == [b"continued"]
    # END_STREAM on the HEADERS that CONTINUATION completes: a stream without messages
    block = c.block()
    c.send(frame(HEADERS, END_STREAM, 3, block[:5]), frame(CONTINUATION, END_HEADERS, 3, block[5:]))
    msgs, trailers = answer(c.finish(3), 3)
    assert msgs == [] and trailers == {":status": "200", "content-type": "application/grpc", "grpc-status": "0"}


def test_header_block_interrupted_is_a_protocol_error(raw: Callable[..., Raw]) -> None:
    c = raw()
    block = c.block()
    c.send(frame(HEADERS, 0, 1, block[:5]), frame(PING, 0, 0, b"x" * 8))
    goaway = [f for f in c.rest() if f.type == GOAWAY]
    assert struct.unpack(">LL", goaway[0].payload[:8]) == (0, gw.PROTOCOL_ERROR)


def test_padded_and_prioritised_headers_and_padded_data(raw: Callable[..., Raw]) -> None:
    c = raw()
    block = c.block()
    priority = u32(0) + b"\x10"  # stream dependency, weight
    c.send(
        frame(HEADERS, END_HEADERS | PADDED | PRIORITY_FLAG, 1, b"\x04" + priority + block + b"\0" * 4),
        frame(PRIORITY, 0, 1, priority),  # ignored
        frame(DATA, PADDED, 1, b"\x03" + grpc_msg(b"padded") + b"\0\0\0"),
        frame(DATA, PADDED, 1, b"\x00" + grpc_msg(b"zero pad")),
        frame(0xEE, 0, 1, b"unknown frame types are ignored"),
        frame(DATA, PADDED | END_STREAM, 1, b"\x02" + b"\0\0"),  # all padding
    )
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"padded", b"zero pad"] and trailers["grpc-status"] == "0"
    block = c.block()
    c.send(frame(HEADERS, END_HEADERS | PADDED, 3, b"\x10" + block + b"\0" * 16))
    c.send(frame(DATA, END_STREAM, 3, grpc_msg(b"again")))
    assert answer(c.finish(3), 3)[0] == [b"again"]


@pytest.mark.parametrize("bad", [b"\x0a" + b"x" * 9, b""])
def test_bad_padding_is_a_protocol_error(raw: Callable[..., Raw], bad: bytes) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, PADDED, 1, bad))
    goaway = [f for f in c.rest() if f.type == GOAWAY]
    assert struct.unpack(">LL", goaway[0].payload[:8]) == (1, gw.PROTOCOL_ERROR)


def test_messages_split_and_joined_across_data_frames(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 1 << 20))
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1 << 20)))  # the answer is more than the default 64 KB windows
    big = pattern(100_000)
    wire = grpc_msg(b"a") + grpc_msg(big) + grpc_msg(b"") + grpc_msg(b"bc")
    cuts = [0, 2, 3, 5, 6, 9, 4000, 50_000, len(wire) - 3, len(wire) - 1, len(wire)]  # inside prefixes too
    c.send(c.open(1), *(frame(DATA, 0, 1, wire[a:b]) for a, b in itertools.pairwise(cuts)))
    c.send(frame(DATA, END_STREAM, 1, b""))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"a", big, b"", b"bc"] and trailers["grpc-status"] == "0"
    # the prefix alone, then the body
    c.send(c.open(3), frame(DATA, 0, 3, grpc_msg(b"body")[:5]), frame(DATA, END_STREAM, 3, b"body"))
    assert answer(c.finish(3), 3)[0] == [b"body"]
    assert [call.received for call in echo[1].calls] == [[b"a", big, b"", b"bc"], [b"body"]]


def test_client_trailers_end_the_stream(raw: Callable[..., Raw]) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"x")), frame(HEADERS, END_HEADERS | END_STREAM, 1, b""))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [b"x"] and trailers["grpc-status"] == "0"


def test_stream_ending_inside_a_message_is_internal(raw: Callable[..., Raw]) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"truncated")[:-2]))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [] and trailers["grpc-status"] == str(gw.INTERNAL)


def test_compressed_message_is_unimplemented(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"plain") + grpc_msg(b"zipped", compressed=1)))
    frames = c.finish(1)
    msgs, trailers = answer(frames, 1)
    assert msgs == [b"plain"]
    assert trailers["grpc-status"] == str(gw.UNIMPLEMENTED) and "compressed" in trailers["grpc-message"]
    # the client had not half-closed: the server resets the stream after its trailers
    assert [f.payload for f in on(c.barrier(), 1, RST_STREAM)] == [u32(gw.NO_ERROR)]
    assert echo[1].calls[0].received == [b"plain"] and echo[1].calls[0].ends == 1
    # later DATA on that stream is dropped; the connection goes on
    c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"late")), c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"ok")))
    assert answer(c.finish(3), 3)[0] == [b"ok"]
    assert echo[1].calls[0].received == [b"plain"]


def test_oversized_message_is_resource_exhausted(raw: Callable[..., Raw]) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, struct.pack(">BL", 0, gw.Limits().max_message + 1) + b"xx"))
    msgs, trailers = answer(c.finish(1), 1)
    assert msgs == [] and trailers["grpc-status"] == str(gw.RESOURCE_EXHAUSTED)


def test_unknown_method_trailers_only_and_reset(raw: Callable[..., Raw]) -> None:
    c = raw()
    c.send(c.open(1, "/no.Such/Method"), frame(DATA, 0, 1, grpc_msg(b"x")))
    frames = c.finish(1)
    heads = on(frames, 1, HEADERS)
    assert len(heads) == 1 and heads[0].flags & END_STREAM and not on(frames, 1, DATA)
    assert heads[0].headers[":status"] == "200" and heads[0].headers["grpc-status"] == str(gw.UNIMPLEMENTED)
    assert heads[0].headers["grpc-message"] == "unknown method /no.Such/Method"
    assert [f.payload for f in on(c.barrier(), 1, RST_STREAM)] == [u32(gw.NO_ERROR)]
    # half-closed already: no reset; no :path at all: INTERNAL
    c.send(c.open(3, "/no.Such/Method", end=True))
    assert not on(c.finish(3) + c.barrier(), 3, RST_STREAM)
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, c.enc.encode([(":method", "POST")])))
    assert on(c.finish(5), 5, HEADERS)[0].headers["grpc-status"] == str(gw.INTERNAL)
    # a long, non-ASCII path: the message is cut and stays ASCII
    long_path = "/" + "é" * 40 + "/" + "m" * 300
    c.send(c.open(7, long_path, end=True))
    trailers = on(c.finish(7), 7, HEADERS)[0].headers
    assert trailers["grpc-status"] == str(gw.UNIMPLEMENTED) and len(trailers["grpc-message"]) <= 120
    assert trailers["grpc-message"].isascii() and trailers["grpc-message"].startswith("unknown method /")


def test_client_reset_ends_the_call_once(raw: Callable[..., Raw], echo: Echo) -> None:
    srv, service, _ = echo
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"hi")))
    assert answer([*c.barrier(), Frame(HEADERS, END_STREAM, 1, b"")], 1)[0] == [b"hi"]
    c.send(frame(RST_STREAM, 0, 1, u32(CANCEL)), frame(RST_STREAM, 0, 1, u32(CANCEL)))
    c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"after reset")))  # dropped
    assert not on(c.barrier(), 1)
    assert service.calls[0].ends == 1 and service.calls[0].received == [b"hi"]
    assert srv.active() == 0
    # a reset while the answer is awaited: the task is cancelled, no answer is sent
    c.send(c.open(3), frame(DATA, 0, 3, grpc_msg(b"wait:x")))
    wait_until(lambda: len(service.calls) == 2 and service.calls[1].received)
    c.send(frame(RST_STREAM, 0, 3, u32(CANCEL)))
    c.barrier()
    srv.open_gate()
    assert not on(c.barrier(), 3, DATA)
    assert service.calls[1].ends == 1


def test_reset_before_an_async_answer_starts_closes_its_coroutine(raw: Callable[..., Raw], echo: Echo) -> None:
    service = echo[1]
    c = raw()
    c.barrier()
    # one send, one data_received: the task for the answer is created and cancelled before it ever runs
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"wait:x")), frame(RST_STREAM, 0, 1, u32(CANCEL)))
    c.barrier()
    assert service.calls[0].ends == 1
    coro = service.calls[0].awaitables[0]
    state = inspect.getcoroutinestate(coro)
    coro.close()  # (no "never awaited" warning later, whatever the outcome)
    assert state == inspect.CORO_CLOSED, state


def test_connection_closed_ends_every_call_once(raw: Callable[..., Raw], echo: Echo) -> None:
    srv, service, _ = echo
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"wait:1")), c.open(3), frame(DATA, 0, 3, grpc_msg(b"x")))
    c.barrier()
    assert srv.active() == 2
    c.close()
    wait_until(lambda: [call.ends for call in service.calls] == [1, 1])
    wait_until(lambda: srv.active() == 0)


def test_stream_window_from_settings_and_window_updates(raw: Callable[..., Raw]) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 10))
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"hello, world!")))  # 18 bytes to send back
    got = c.barrier()
    assert [f.type for f in on(got, 1)] == [HEADERS, DATA] and on(got, 1, DATA)[0].payload == grpc_msg(
        b"hello, world!"
    )[:10]
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(3)))
    assert [f.payload for f in on(c.barrier(), 1)] == [b", w"]
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1000)))  # the connection's window is not what is missing
    assert not on(c.barrier(), 1)
    c.send(settings((INITIAL_WINDOW_SIZE, 12)))  # +2 for every open stream
    assert [f.payload for f in on(c.barrier(), 1)] == [b"or"]
    c.send(settings((INITIAL_WINDOW_SIZE, 5)))  # the window goes negative (-7): 9 more to get 2
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(7)))
    assert not on(c.barrier(), 1)
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(2)))
    assert [f.payload for f in on(c.barrier(), 1)] == [b"ld"]
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(100)))  # the last byte, then the trailers that waited for it
    rest = on(c.barrier(), 1)
    assert [(f.type, f.payload) for f in rest[:1]] == [(DATA, b"!")]
    assert rest[1].type == HEADERS and rest[1].flags & END_STREAM and rest[1].headers == {"grpc-status": "0"}


def test_zero_window_holds_answers_and_trailers_in_order(raw: Callable[..., Raw]) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 0))
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"one") + grpc_msg(b"two")))
    c.send(frame(DATA, 0, 1, grpc_msg(b"raise")), frame(DATA, END_STREAM, 1, grpc_msg(b"ignored")))
    assert [f.type for f in on(c.barrier(), 1)] == [HEADERS]
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(1000)))
    frames = on(c.barrier(), 1)
    msgs, trailers = answer(frames, 1)
    assert msgs == [b"one", b"two"] and trailers["grpc-status"] == str(gw.INTERNAL)


def test_connection_window_blocks_all_streams_until_updated(raw: Callable[..., Raw]) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 1 << 20))
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"big:100000")))
    first = on(c.barrier(), 1, DATA)
    assert sum(len(f.payload) for f in first) == 65535  # the connection's initial window
    c.send(c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"small")))
    got = c.barrier()
    assert not on(got, 1, DATA) and not on(got, 3, DATA) and on(got, 3, HEADERS)
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(100_000 + 5 - 65535 + 10)))  # stream 1's rest, 10 bytes for stream 3
    got = c.barrier()
    assert sum(len(f.payload) for f in on(got, 1, DATA)) == 100_005 - 65535
    assert on(got, 1, HEADERS)[0].headers == {"grpc-status": "0"}
    assert b"".join(f.payload for f in on(got, 3, DATA)) == grpc_msg(b"small")
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1)))
    msgs, trailers = answer(on(got, 3) + on(c.barrier(), 3), 3)
    assert msgs == [b"small"] and trailers["grpc-status"] == "0"
    assert b"".join(f.payload for f in first + on(got, 1, DATA)) == grpc_msg(pattern(100_000))


def test_reset_while_blocked_drops_the_rest(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 100))
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"big:1000")))
    assert sum(len(f.payload) for f in on(c.barrier(), 1, DATA)) == 100
    c.send(frame(RST_STREAM, 0, 1, u32(CANCEL)), frame(WINDOW_UPDATE, 0, 1, u32(10_000)))
    assert not on(c.barrier(), 1)
    assert echo[1].calls[0].ends == 1 and echo[0].active() == 0


def test_peer_max_frame_size_is_respected(raw: Callable[..., Raw]) -> None:
    c = raw((INITIAL_WINDOW_SIZE, 1 << 24))
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(1 << 24)))
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"big:200000")))
    sizes = [len(f.payload) for f in on(c.finish(1), 1, DATA)]
    assert max(sizes) == 16384 and sum(sizes) == 200_005
    c.send(settings((MAX_FRAME_SIZE, 20000)))
    c.send(c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"big:200000")))
    frames = c.finish(3)
    sizes = [len(f.payload) for f in on(frames, 3, DATA)]
    assert max(sizes) == 20000 and sum(sizes) == 200_005
    assert answer(frames, 3)[0] == [pattern(200_000)]


def test_large_request_gets_window_updates(raw: Callable[..., Raw]) -> None:
    """Our stream window is 16 MB; after half of it the server gives the bytes back on the stream."""
    c = raw()
    c.barrier()
    body = pattern(9 * MB)
    wire = grpc_msg(b"echo" + body)
    chunk = gw.MAX_FRAME
    c.send(c.open(1), *(frame(DATA, 0, 1, wire[i : i + chunk]) for i in range(0, len(wire), chunk)))
    frames = c.barrier()  # the request is whole: its answer has begun, within the default 64 KB windows
    updates = on(frames, 1, WINDOW_UPDATE)
    assert updates and sum(struct.unpack(">L", f.payload)[0] for f in updates) >= gw.STREAM_WINDOW // 2
    assert sum(len(f.payload) for f in on(frames, 1, DATA)) == 65535
    c.send(frame(DATA, END_STREAM, 1, b""))
    c.send(frame(WINDOW_UPDATE, 0, 0, u32(16 * MB)))
    c.send(settings((INITIAL_WINDOW_SIZE, 16 * MB)))
    assert answer(frames + c.finish(1), 1)[0] == [b"echo" + body]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (frame(DATA, 0, 1, b"x" * (gw.MAX_FRAME + 1))[:9], gw.FRAME_SIZE_ERROR),  # the header is enough
        (frame(HEADERS, END_HEADERS, 2, b""), gw.PROTOCOL_ERROR),  # even: a server's stream id
        (frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff"), gw.COMPRESSION_ERROR),
        (frame(CONTINUATION, END_HEADERS, 1, b""), gw.PROTOCOL_ERROR),
        (frame(PING, 0, 0, b"short"), gw.FRAME_SIZE_ERROR),  # RFC 9113 6.7
        (frame(PING, 0, 1, b"8 bytes!"), gw.PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 1, b""), gw.PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, b"12345"), gw.FRAME_SIZE_ERROR),
        (settings((INITIAL_WINDOW_SIZE, 1 << 31)), gw.FLOW_CONTROL_ERROR),
        (settings((MAX_FRAME_SIZE, 100)), gw.PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, b"123"), gw.FRAME_SIZE_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, u32(0x7FFFFFFF)), gw.FLOW_CONTROL_ERROR),
        (frame(5, END_HEADERS, 1, u32(2)), gw.PROTOCOL_ERROR),  # PUSH_PROMISE
    ],
)
def test_connection_errors_get_goaway(
    raw: Callable[..., Raw], serve: Callable[..., Running], frames: bytes, code: int
) -> None:
    c = raw()
    c.send(frames)
    got = c.rest()  # the server closes the connection
    goaway = [f for f in got if f.type == GOAWAY]
    assert len(goaway) == 1 and struct.unpack(">L", goaway[0].payload[4:8])[0] == code


def test_connection_error_ends_open_calls_and_answers_sent_before_it(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"endraise")), c.open(3), frame(DATA, 0, 3, grpc_msg(b"wait:")))
    c.send(frame(PING, 0, 0, b"bad"))
    frames = c.rest()
    assert [f.payload for f in on(frames, 1, DATA)] == [grpc_msg(b"endraise")]  # flushed before the GOAWAY
    assert frames[-1].type == GOAWAY and struct.unpack(">LL", frames[-1].payload[:8]) == (3, gw.FRAME_SIZE_ERROR)
    wait_until(lambda: [call.ends for call in echo[1].calls] == [1, 1])  # one end() raising stops no other
    assert echo[0].active() == 0


def test_stop_sends_goaway_and_refuses_new_streams(raw: Callable[..., Raw], echo: Echo) -> None:
    srv, service, _ = echo
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"first")))
    before = c.barrier()
    stopping = asyncio.run_coroutine_threadsafe(srv.server.stop(5), srv.loop)
    goaway = c.until(lambda f: f.type == GOAWAY)[-1]
    assert struct.unpack(">LL", goaway.payload[:8]) == (1, gw.NO_ERROR)
    c.send(c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"refused")))
    assert [(f.type, f.payload) for f in on(c.barrier(), 3)] == [(RST_STREAM, u32(REFUSED_STREAM))]
    c.send(frame(DATA, END_STREAM, 1, grpc_msg(b"second")))
    msgs, trailers = answer(before + c.finish(1), 1)
    assert msgs == [b"first", b"second"] and trailers["grpc-status"] == "0"
    assert c.rest() == []  # its last stream done, the connection closes
    stopping.result(5)
    assert service.paths == [PATH] and service.calls[0].ends == 1


def test_client_goaway_closes_once_streams_are_done(raw: Callable[..., Raw], echo: Echo) -> None:
    c = raw()
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"x")), frame(GOAWAY, 0, 0, u32(0) + u32(0)))
    frames = c.barrier()
    c.send(frame(DATA, END_STREAM, 1, b""))
    frames += c.rest()
    assert answer(frames, 1) == ([b"x"], {"grpc-status": "0"})


def test_unix_socket_listen_replaces_a_stale_socket_file(serve: Callable[..., Running], tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    path.write_text("left over")
    srv = serve()
    srv.unix(path)
    c = Raw(str(path))
    try:
        c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"unix")))
        assert answer(c.finish(1), 1)[0] == [b"unix"]
    finally:
        c.close()


# ------------------------------------------------------------------------------------- the real service, no Envoy
def load_healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_healthcheck_against_extproc_on_grpc_wire(
    serve: Callable[..., Running], tmp_path: Path, transport: str
) -> None:
    config = build_config({"version": "1", "models": [{"name": "gpt", "provider": "openai"}]}, "t.yaml", {})
    gateway = Gateway(config)
    done: list[object] = []
    srv = serve(ExtProc(gateway, on_done=lambda rec, overhead, active: done.append(rec)))
    addr = srv.tcp() if transport == "tcp" else srv.unix(tmp_path / "extproc.sock")
    health = load_healthcheck()
    address = target(addr)
    assert health.health_status(address, 5) == 200
    assert health.main(["--address", address, "--timeout", "5"]) == 0
    gateway.draining = True
    assert health.health_status(address, 5) == 503
    assert health.main(["--address", address, "--timeout", "5"]) == 1
    assert health.main(["--address", address, "--timeout", "5", "--live"]) == 0
    wait_until(lambda: len(done) == 5)  # one exchange per stream, each ended once
    assert srv.active() == 0
    # another method on the same service: UNIMPLEMENTED, nothing recorded
    with channel(addr) as ch, pytest.raises(grpc.RpcError) as err:
        list(chat(ch, PROCESS_PATH + "X")(iter([b""]), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert len(done) == 5 and len({id(ex) for ex in done}) == 5
    srv.run(srv.server.stop(1))
    assert health.health_status(address, 2) == 0  # nobody listening


# -------------------------------------------------------------------------------------------- header block memo
def test_header_blocks_that_leave_the_table_alone_are_decoded_once() -> None:
    """Envoy repeats the same header block bytes on every stream; only blocks that change the HPACK table (or meet a
    changed table) are decoded again, and indexed fields always mean what the current table says."""
    conn = gw.Connection(gw.Server(lambda path: None))
    enc = hpack.Encoder()
    calls = []
    real = conn.decoder.decode
    conn.decoder.decode = lambda block, raw=False: calls.append(block) or real(block, raw=raw)  # type: ignore[method-assign]
    first = enc.encode([(":method", "POST"), (":path", "/svc/A"), ("x-tag", "one")])  # adds entries
    assert conn._path(first)[0] == "/svc/A"
    same = enc.encode([(":method", "POST"), (":path", "/svc/A"), ("x-tag", "one")])  # now all indexed
    assert conn._path(same)[0] == "/svc/A" and conn._path(same)[0] == "/svc/A" and conn._path(same)[0] == "/svc/A"
    assert len(calls) == 2  # the first block changed the table; the indexed one is decoded once, then remembered
    other = enc.encode([(":path", "/svc/B"), ("x-tag", "two")])  # a new entry: the table changes
    assert conn._path(other)[0] == "/svc/B"
    assert conn.paths == {}  # remembered blocks forgotten: their indices may point elsewhere now
    ref = hpack.Decoder()  # what a decoder that remembers nothing makes of the same sequence
    for block in (first, same, other):
        ref.decode(block)
    stale = dict(ref.decode(same))[":path"]
    assert stale != "/svc/A" and conn._path(same)[0] == stale and len(calls) == 4
    with pytest.raises(gw._ConnError):
        conn._path(b"\xff\xff\xff\xff")  # bad blocks still fail


# ------------------------------------------------------------------------------------------------ review findings
def test_peer_table_size_change_opens_our_next_header_block_with_a_size_update(raw: Callable[..., Raw]) -> None:
    """RFC 7541 4.2: after the peer changes SETTINGS_HEADER_TABLE_SIZE, our next header block starts with a dynamic
    table size update (nghttp2, i.e. Envoy with hpack_table_size set, rejects the block otherwise); only that one."""
    c = raw((0x1, 0))
    c.send(c.open(1), frame(DATA, END_STREAM, 1, grpc_msg(b"x")))
    heads = on(c.finish(1), 1, HEADERS)
    assert heads[0].payload.startswith(b"\x20") and heads[0].headers[":status"] == "200"
    assert not heads[1].payload.startswith(b"\x20")  # the trailers: no change since
    c.send(c.open(3), frame(DATA, END_STREAM, 3, grpc_msg(b"y")))
    assert not any(f.payload.startswith(b"\x20") for f in on(c.finish(3), 3, HEADERS))


def test_data_after_our_trailers_wait_for_window_is_dropped(raw: Callable[..., Raw], echo: Echo) -> None:
    """Once a stream is answered for good (its trailers wait for window), more DATA is not kept nor handled."""
    c = raw((INITIAL_WINDOW_SIZE, 0))
    c.send(c.open(1), frame(DATA, 0, 1, grpc_msg(b"a" * 100)), frame(DATA, 0, 1, grpc_msg(b"", compressed=1)))
    c.barrier()  # the compressed message finished the stream (UNIMPLEMENTED), behind the unsent answer
    c.send(frame(DATA, 0, 1, grpc_msg(b"b" * 50_000)), frame(DATA, END_STREAM, 1, grpc_msg(b"c")))
    c.barrier()
    assert echo[1].calls[0].received == [b"a" * 100]
    (conn,) = echo[0].server.connections
    assert not conn.streams[1].buf  # nothing piles up
    c.send(frame(WINDOW_UPDATE, 0, 1, u32(1000)))
    _, trailers = answer(c.finish(1), 1)
    assert trailers["grpc-status"] == str(gw.UNIMPLEMENTED)


def test_headers_on_a_closed_stream_id_are_refused(raw: Callable[..., Raw]) -> None:
    c = raw()
    c.send(c.open(5), frame(DATA, END_STREAM, 5, grpc_msg(b"x")))
    c.finish(5)
    c.send(c.open(3))  # below the highest stream id seen, never opened: cannot open now
    resets = on(c.barrier(), 3, RST_STREAM)
    assert [f.payload for f in resets] == [u32(0x5)]  # STREAM_CLOSED
    c.send(c.open(3, end=True))  # late trailers of a closed stream (END_STREAM) stay silent
    assert not on(c.barrier(), 3)
