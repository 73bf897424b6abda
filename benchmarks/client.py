"""A minimal HTTP/1.1 keep-alive client over raw asyncio sockets, for what wrk cannot do.

* ``ttfb``: unloaded time to first byte (response head) and to the first body byte (first SSE event) of a stream, for
  two targets sample by sample, alternating, so noise hits both alike.
* ``fire``: exactly N requests (memory check "after 1k requests").
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass


@dataclass(slots=True)
class Target:
    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def raw(self) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1", f"host: {self.host}:{self.port}", "content-type: application/json"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"content-length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Timing:
    status: int
    head: float  # seconds from the request's first byte sent to the whole response head received
    first_body: float  # ... to the first body bytes received
    total: float
    body: bytes


class Conn:
    def __init__(self, target: Target) -> None:
        self.target = target
        self.raw = target.raw()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.reader = self.writer = None

    async def send(self) -> Timing:
        if self.writer is None:
            await self._open()
        reader, writer = self.reader, self.writer
        assert reader is not None and writer is not None
        t0 = time.perf_counter()
        writer.write(self.raw)
        head = await reader.readuntil(b"\r\n\r\n")
        t_head = time.perf_counter()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        hdrs = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                hdrs[name.strip().lower()] = value.strip()
        body = bytearray()
        t_first: float | None = None
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body += await reader.readexactly(n) if n else b""
            t_first = time.perf_counter()
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if t_first is None and size:
                    t_first = time.perf_counter()
                if size == 0:
                    break
                body += data[:-2]
        else:  # read to close
            body += await reader.read()
            t_first = time.perf_counter()
            await self.close()
        t_end = time.perf_counter()
        if hdrs.get("connection", "").lower() == "close":
            await self.close()
        return Timing(status, t_head - t0, (t_first or t_end) - t0, t_end - t0, bytes(body))


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p90_ms": round(_pct(values, 0.9) * 1000, 3),
        "p99_ms": round(_pct(values, 0.99) * 1000, 3),
        "n": len(values),
    }


async def _ttfb(targets: dict[str, Target], samples: int, warmup: int) -> dict[str, dict]:
    conns = {name: Conn(t) for name, t in targets.items()}
    heads: dict[str, list[float]] = {n: [] for n in targets}
    firsts: dict[str, list[float]] = {n: [] for n in targets}
    bad: dict[str, int] = dict.fromkeys(targets, 0)
    try:
        for i in range(samples + warmup):
            for name, conn in conns.items():
                t = await conn.send()
                if t.status != 200:
                    bad[name] += 1
                    continue
                if i >= warmup:
                    heads[name].append(t.head)
                    firsts[name].append(t.first_body)
                await asyncio.sleep(0.002)  # unloaded: one request at a time, a short pause between
    finally:
        for conn in conns.values():
            await conn.close()
    return {n: {"head": summary_ms(heads[n]), "first_event": summary_ms(firsts[n]), "non_200": bad[n]} for n in targets}


def ttfb(targets: dict[str, Target], samples: int = 300, warmup: int = 20) -> dict[str, dict]:
    return asyncio.run(_ttfb(targets, samples, warmup))


async def _fire(target: Target, n: int, concurrency: int) -> int:
    left = n
    ok = 0

    async def worker() -> None:
        nonlocal left, ok
        conn = Conn(target)
        try:
            while left > 0:
                left -= 1
                t = await conn.send()
                ok += t.status == 200
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def fire(target: Target, n: int, concurrency: int = 4) -> int:
    """Send exactly ``n`` requests; returns how many answered 200."""
    return asyncio.run(_fire(target, n, concurrency))


def one(target: Target) -> Timing:
    async def go() -> Timing:
        conn = Conn(target)
        try:
            return await conn.send()
        finally:
            await conn.close()

    return asyncio.run(go())
