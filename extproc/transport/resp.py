"""A small pipelined Redis client (RESP2; RESP3 for client tracking) on an asyncio protocol: what governance needs
on the request path, cheaply.

Measured here (2 cores, Python 3.11, redis-server 7.0 on loopback), one ``EVALSHA`` of governance's check script
cost ~117 us of CPU through ``redis.asyncio`` (``PING`` alone ~80 us: connection pool, command objects, response
callbacks), which cut cross-format throughput by a third. This client writes each command straight to one connection
and matches replies to callers in order (pipelining: many callers, one socket, no pool): ~20 us a call.

Supported: ``redis://`` and ``rediss://`` (TLS, the system's CAs; ``?ssl_cert_reqs=none`` skips verification)
URLs with an optional ``user:password@`` (URL-quoted) and ``/db``, and ``unix:///path/redis.sock?db=N&password=P``
(a socket shared with the Redis container, as docker-compose.yml does); replies of RESP2 (simple strings, errors,
integers, bulk strings, arrays) and of RESP3 (pushes, maps, sets, nulls, booleans, doubles, big numbers, verbatim
strings), which a connection with client tracking speaks. A caller that gives up (its timeout) leaves its reply to
be read and dropped, and ``reset`` closes the connection so the next call opens a fresh one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


def encode(args: tuple[Any, ...]) -> bytes:
    """A command: an array of bulk strings."""
    return b"*%d\r\n" % len(args) + bulk(*args)


def bulk(*args: Any) -> bytes:
    """Bulk strings, to build a command from parts (``encode`` adds the array's header)."""
    out = []
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


_INCOMPLETE = object()


class Push(list[Any]):
    """A RESP3 push (``>``): out of band, not the reply to a command (client tracking's ``invalidate``)."""


def parse(buf: bytes | bytearray, i: int) -> tuple[Any, int]:
    """One reply from ``buf`` at ``i``: (value, next index), or (_INCOMPLETE, i) when more bytes are needed."""
    end = buf.find(b"\r\n", i)
    if end < 0:
        return _INCOMPLETE, i
    kind, line = buf[i], bytes(buf[i + 1 : end])
    nxt = end + 2
    if kind == 58:  # ':'
        return int(line), nxt
    if kind == 36:  # '$'
        n = int(line)
        if n < 0:
            return None, nxt
        if len(buf) < nxt + n + 2:
            return _INCOMPLETE, i
        return bytes(buf[nxt : nxt + n]), nxt + n + 2
    # '*' array; RESP3 (after ``HELLO 3``, for client tracking's invalidation pushes): '>' push, '%' map (flat, like
    # RESP2's HGETALL), '~' set, '|' attribute
    if kind in (42, 62, 37, 126, 124):
        n = int(line)
        if n < 0:
            return None, nxt
        n *= 2 if kind in (37, 124) else 1
        items = []
        for _ in range(n):
            item, nxt = parse(buf, nxt)
            if item is _INCOMPLETE:
                return _INCOMPLETE, i
            items.append(item)
        if kind == 124:  # an attribute annotates the reply that follows it: the reply alone
            value, nxt = parse(buf, nxt)
            return (_INCOMPLETE, i) if value is _INCOMPLETE else (value, nxt)
        return (Push(items) if kind == 62 else items), nxt
    if kind == 43:  # '+'
        return line.decode(), nxt
    if kind == 45:  # '-'
        return RespError(line.decode(errors="replace")), nxt
    if kind == 95:  # '_' null
        return None, nxt
    if kind == 35:  # '#' boolean
        return line == b"t", nxt
    if kind == 44:  # ',' double
        return float(line), nxt
    if kind == 40:  # '(' big number
        return int(line), nxt
    if kind in (61, 33):  # '=' verbatim string ("txt:..."), '!' blob error
        n = int(line)
        if len(buf) < nxt + n + 2:
            return _INCOMPLETE, i
        data = bytes(buf[nxt : nxt + n])
        return (data[4:] if kind == 61 else RespError(data.decode(errors="replace"))), nxt + n + 2
    raise ValueError(f"not a RESP reply: {bytes(buf[i : i + 20])!r}")


class _Connection(asyncio.Protocol):
    def __init__(self, on_push: Callable[[Push | None], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any] | Callable[[Any], None]] = deque()
        self.buf = bytearray()
        self.closed = False
        self.outbox: list[bytes] = []
        self.on_push = on_push  # pushes; None when the connection is gone (what was tracked is unknown since)
        self.tracking = False  # client tracking is on for this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        buf, i = self.buf, 0
        while i < len(buf):
            try:
                value, nxt = parse(buf, i)
            except (ValueError, IndexError):
                self.abort()
                return
            if value is _INCOMPLETE:
                break
            i = nxt
            if type(value) is Push:
                if self.on_push is not None:
                    self.on_push(value)
                continue
            if not self.waiters:  # a reply nobody asked for: the stream is out of step
                self.abort()
                return
            waiter = self.waiters.popleft()
            if not isinstance(waiter, asyncio.Future):
                waiter(value)  # ``send``'s callback, called at once (no loop turn)
            elif not waiter.done():  # a caller that timed out left its future cancelled
                waiter.set_result(value)
        del buf[:i]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tracking and self.on_push is not None:
            self.tracking = False
            self.on_push(None)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not isinstance(waiter, asyncio.Future):
                waiter(ConnectionError("redis connection lost"))
            elif not waiter.done():
                waiter.set_exception(ConnectionError("redis connection lost"))

    def abort(self) -> None:
        self.closed = True
        if self.tracking and self.on_push is not None:
            self.tracking = False
            self.on_push(None)
        if self.transport is not None:
            self.transport.abort()

    def call(self, data: bytes) -> asyncio.Future[Any]:
        """Send a command (written with the others of this loop iteration: one system call) and its reply's future."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self.outbox:
            loop.call_soon(self._write)
        self.outbox.append(data)
        self.waiters.append(fut)
        return fut

    def send(self, data: bytes, on_reply: Callable[[Any], None]) -> None:
        """Write a command now; ``on_reply`` gets its reply (or the error: a ``RespError``, a ``ConnectionError``)
        as soon as it is read."""
        if self.outbox:  # keep the order of commands already waiting for this turn's write
            self._write()
        assert self.transport is not None
        self.transport.write(data)
        self.waiters.append(on_reply)

    def _write(self) -> None:
        out, self.outbox = self.outbox, []
        if out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])


class RespClient:
    """One pipelined connection to the Redis a URL names, (re)opened on demand.

    With ``track`` (a key prefix) and ``on_invalidate``, each connection turns Redis's client tracking on (``HELLO 3``,
    ``CLIENT TRACKING ON BCAST PREFIX track NOLOOP``, Redis 6 or later): ``on_invalidate`` gets the keys under the
    prefix that other connections changed, or None when everything must be taken as changed (the connection was lost,
    or Redis flushed its data). ``tracking`` says whether the current connection has it on (an older Redis: never).
    """

    def __init__(
        self, url: str, track: str | None = None, on_invalidate: Callable[[list[bytes] | None], None] | None = None
    ) -> None:
        u = urlsplit(url)
        if u.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
        query = parse_qs(u.query)
        self.path = u.path if u.scheme == "unix" else None
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 6379
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        if self.username and self.password is None:  # redis://:password@ and redis://password@ both seen in the wild
            self.password, self.username = self.username, None
        if "password" in query:
            self.password = query["password"][-1]
        path = u.path.strip("/")
        self.db = int(query.get("db", ["0"])[-1]) if self.path else (int(path) if path else 0)
        self.ssl: ssl.SSLContext | None = None
        if u.scheme == "rediss":
            self.ssl = ssl.create_default_context()
            if query.get("ssl_cert_reqs", [""])[-1].lower() == "none":
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self.track = track
        self.on_invalidate = on_invalidate

    @property
    def tracking(self) -> bool:
        conn = self._conn
        return conn is not None and conn.tracking and not conn.closed

    def _pushed(self, push: Push | None) -> None:
        if self.on_invalidate is None:
            return
        if push is None:
            self.on_invalidate(None)
        elif len(push) >= 2 and push[0] in (b"invalidate", "invalidate"):
            self.on_invalidate(push[1] if isinstance(push[1], list) else None)  # (null: FLUSHALL/FLUSHDB)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def protocol() -> _Connection:
            return _Connection(self._pushed)

        if self.path is not None:
            _, conn = await loop.create_unix_connection(protocol, self.path)
        else:
            _, conn = await loop.create_connection(
                protocol, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
            )
        try:
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                _check(await conn.call(encode(auth)))
            if self.db:
                _check(await conn.call(encode(("SELECT", self.db))))
            if self.track is not None and self.on_invalidate is not None:
                hello = await conn.call(encode(("HELLO", 3)))
                if not isinstance(hello, RespError):  # (before Redis 6: no RESP3, no tracking)
                    on = ("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self.track, "NOLOOP")
                    conn.tracking = not isinstance(await conn.call(encode(on)), RespError)
        except BaseException:
            conn.abort()
            raise
        return conn

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None or self._connecting.done():  # one connect for every caller waiting on it
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(_retrieve)  # a failed connect nobody waits for any more is not an error
        self._conn = conn = await asyncio.shield(self._connecting)
        return conn

    async def call(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return _check(await conn.call(encode(args)))

    def send(self, data: bytes, on_reply: Callable[[Any], None]) -> bool:
        """Write an encoded command now if connected (the reply goes to ``on_reply``, a ``RespError`` or
        ``ConnectionError`` included); False when there is no connection yet (then use ``raw``, which opens it)."""
        conn = self._conn
        if conn is None or conn.closed:
            return False
        conn.send(data, on_reply)
        return True

    async def raw(self, data: bytes) -> Any:
        """A command already encoded (``encode``)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        return _check(await conn.call(data))

    async def script(self, evalsha: bytes, script: str | bytes) -> Any:
        """An encoded ``EVALSHA``; the script is loaded (``SCRIPT LOAD``) once when Redis does not know it yet."""
        try:
            return await self.raw(evalsha)
        except RespError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
            await self.call("SCRIPT", "LOAD", script)
            return await self.raw(evalsha)

    async def evalsha(self, sha: str, script: str | bytes, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RespError as err:
            if not str(err).startswith("NOSCRIPT"):
                raise
            return await self.call("EVAL", script, len(keys), *keys, *args)

    def reset(self) -> None:
        """Drop the connection (after a timeout: what it still owes is not worth waiting for)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        self._connecting = None

    async def close(self) -> None:
        self.reset()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _check(value: Any) -> Any:
    if isinstance(value, RespError):
        raise value
    return value
