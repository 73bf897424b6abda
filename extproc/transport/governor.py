"""Where governance counts: the in-process store (the default) or Redis shared by every replica, and the ``Governor``
the servicer asks before forwarding a request and tells when its answer ended.

The decisions (which counters, their limits and windows, prices, answers) are ``core/governance.py``'s; this module
holds the counters. Both stores run the same check: every counter of a request's plan read at once; a request counter
admits one more request under its limit and counts it, a token or money counter admits while it is not over; all
or nothing, atomically (one Lua script in Redis, one synchronous function in the worker).

Most checks never reach Redis (``RedisStore.local``): a worker reserves requests in batches (a *lease*: up to
``redis.max_lease`` requests at once, at most 1/64 of what is left, one at a time near the limit) and admits from
them; a token or money counter is checked against the worker's *view* of it (what Redis last answered, plus its own
charges not sent yet), which Redis's client tracking invalidates as soon as another worker changes the counter (and
which is at most ``redis.view_ttl`` old). Leased requests not used within a second go back. Leases never let a limit
be exceeded; docs/governance.md says what they cost in exactness.

Redis on the request path (the other checks): one ``EVALSHA`` per turn of the event loop, bounded by
``redis.timeout`` (a timer per batch, and the socket's own timeouts), and a circuit breaker
(``redis.breaker_failures`` failures in a row open it for ``redis.breaker_cooldown`` seconds, then one call tries
again). While Redis cannot answer, requests that must ask it are admitted (``fail_open``) or refused with a 503
(``fail_closed``), with a metric and a log line, never a wait.
Charges (tokens and cost when an answer ends) are not on the request path: they are summed in the worker and sent in
one script call every ``FLUSH_EVERY`` seconds; a batch that fails is kept (bounded) and sent with the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from extproc.core import governance as g
from extproc.core.access import ANONYMOUS
from extproc.core.record import Record
from extproc.transport.resp import RespClient, RespError, bulk

log = logging.getLogger("extproc")

FLUSH_EVERY = 0.02  # seconds between charge batches sent to Redis
LEASE_SECONDS = 1.0  # a worker gives back the leased requests it has not used after this long
LEASE_SHARE = 64  # a lease is at most this fraction of what the counter had left (so near the limit it is 1)
SWEEP_EVERY = 0.25  # seconds between sweeps of leases and views
VIEW_KEPT = 120.0  # seconds a view is remembered (for refusals; past its window it is never asked for again)
MAX_PENDING = 10_000  # counters held while Redis is away; past this, new charges are dropped (and counted)
LOG_EVERY = 10.0
MAX_PLANS = 10_000  # plans (and prices) remembered per worker, by key and model
_UNSET: Any = object()  # at most one warning line per this many seconds about the store


# ------------------------------------------------------------------------------------------------------- stores
def _admit(plan: g.Plan, values: list[int]) -> None:
    """The check both stores run, on the counters' current values (request counters first)."""
    plan.refused = -1
    for i, (c, v) in enumerate(zip(plan.counters, values, strict=True)):
        if v + 1 > c.limit if c.kind == g.REQUESTS else v >= c.limit:
            plan.refused = i
            break
    if plan.refused < 0:
        values = [v + 1 if c.kind == g.REQUESTS else v for c, v in zip(plan.counters, values, strict=True)]
    plan.values = values


class MemoryStore:
    """Counters in this worker process (one replica, one worker: see docs/governance.md)."""

    sync = True

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.counters: dict[str, list[float]] = {}  # name -> [value, expires]
        self.days: dict[str, dict[str, dict[str, int]]] = {}  # day -> key -> field -> n
        self._swept = 0.0

    def _value(self, name: str, now: float) -> int:
        entry = self.counters.get(name)
        return int(entry[0]) if entry is not None and entry[1] > now else 0

    def check(self, plan: g.Plan) -> bool:
        now = self.clock()
        if now - self._swept > 60:
            self._sweep(now)
        _admit(plan, [self._value(c.name, now) for c in plan.counters])
        if plan.refused < 0:
            for c in plan.counters:
                if c.kind == g.REQUESTS:
                    self._add(c.name, 1, c.ttl, now)
        return True

    def _add(self, name: str, n: int, ttl: int, now: float) -> None:
        entry = self.counters.get(name)
        if entry is None or entry[1] <= now:
            self.counters[name] = [n, now + ttl]
        else:
            entry[0] += n

    def _sweep(self, now: float) -> None:
        self._swept = now
        for name in [n for n, e in self.counters.items() if e[1] <= now]:
            del self.counters[name]

    def charge(self, charges: list[tuple[str, int, int]], key: str, day: str, fields: list[tuple[str, int]],
               retention_days: int) -> None:  # fmt: skip
        now = self.clock()
        for name, n, ttl in charges:
            self._add(name, n, ttl, now)
        usage = self.days.setdefault(day, {}).setdefault(key, {})
        for f, n in fields:
            if n:
                usage[f] = usage.get(f, 0) + n
        if len(self.days) > retention_days:
            for old in sorted(self.days)[: len(self.days) - retention_days]:
                del self.days[old]

    def usage(self, days: list[str], key: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        return {d: self.days[d] for d in days if d in self.days}

    async def close(self) -> None:
        return None


# The checks of every request that asked in one turn of the event loop, in one call. KEYS: every plan's counters, one
# plan after the other (its request counters first). ARGV[1]: the number of plans; then per plan: n (its counters),
# nreq (its request counters), n limits, n ttls (seconds), nreq lease sizes (requests wanted for each request counter:
# 0 when the worker uses one it already holds). Each plan is checked as if alone, in order (the script runs
# atomically): a request counter admits when one more request fits and grants min(wanted, room); a token or money
# counter admits while it is not over. Out, per plan, flattened: the refused index (0-based) or -1, the value of each
# counter after, the requests granted for each request counter.
_CHECK = """
local out = {}
local a, k = 2, 0
for p = 1, tonumber(ARGV[1]) do
  local n, nreq = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local keys = {}
  for i = 1, n do keys[i] = KEYS[k + i] end
  local vals = redis.call('MGET', unpack(keys))
  local grants = {}
  local refused = -1
  for i = 1, n do
    local v = tonumber(vals[i] or '0')
    vals[i] = v
    if i <= nreq then grants[i] = 0 end
    if refused < 0 then
      local limit = tonumber(ARGV[a + 1 + i])
      if i <= nreq then
        local want = tonumber(ARGV[a + 1 + 2 * n + i])
        if want > 0 then
          if v + 1 > limit then refused = i - 1 else grants[i] = math.min(want, limit - v) end
        end
      elseif v >= limit then refused = i - 1 end
    end
  end
  if refused < 0 then
    for i = 1, nreq do
      if grants[i] > 0 then
        vals[i] = redis.call('INCRBY', keys[i], grants[i])
        if vals[i] == grants[i] then redis.call('EXPIRE', keys[i], ARGV[a + 1 + n + i]) end
      end
    end
  end
  out[#out + 1] = refused
  for i = 1, n do out[#out + 1] = vals[i] end
  for i = 1, nreq do out[#out + 1] = grants[i] end
  a = a + 2 + 2 * n + nreq
  k = k + n
end
return out
"""
# KEYS: counters, then usage hashes. ARGV[1]: number of counters c, ARGV[2]: usage ttl (seconds); then per counter
# (amount, ttl; a negative amount gives unused leased requests back); then per usage hash (number of fields m, then m
# pairs of field, amount). Out: each counter's value after.
_CHARGE = """
local c = tonumber(ARGV[1])
local usage_ttl = ARGV[2]
local a = 3
local out = {}
for i = 1, c do
  out[i] = redis.call('INCRBY', KEYS[i], ARGV[a])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[a + 1]) end
  a = a + 2
end
for i = c + 1, #KEYS do
  local m = tonumber(ARGV[a])
  a = a + 1
  for j = 1, m do
    redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIRE', KEYS[i], usage_ttl)
end
return out
"""


_CHECK_SHA = hashlib.sha1(_CHECK.encode()).hexdigest()
_CHARGE_SHA = hashlib.sha1(_CHARGE.encode()).hexdigest()


class Breaker:
    """Closed: calls go through. ``failures`` failures in a row open it: calls are refused at once for ``cooldown``
    seconds; then it lets one call through (half-open), which closes it again or reopens it."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.clock = clock
        self.count = 0
        self.open_until = 0.0
        self.probing = False
        self.on_change: Callable[[bool], None] | None = None

    @property
    def is_open(self) -> bool:
        return self.count >= self.failures

    def allow(self) -> bool:
        if not self.is_open:
            return True
        if self.probing or self.clock() < self.open_until:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        was = self.is_open
        self.count, self.probing = 0, False
        if was and self.on_change is not None:
            self.on_change(False)

    def failure(self) -> None:
        was = self.is_open
        self.count += 1
        self.probing = False
        if self.is_open:
            self.open_until = self.clock() + self.cooldown
            if not was and self.on_change is not None:
                self.on_change(True)


_Batch = list[tuple[g.Plan, "asyncio.Future[tuple[int, list[int]]]", list[int]]]  # plan, its waiter, lease sizes


class RedisStore:
    """Counters in Redis, shared by every worker of every replica; leases and views let a worker decide most checks
    alone (``local``), the others ask Redis (``ask``)."""

    sync = False

    def __init__(self, url: str, settings: g.RedisSettings, on_failure: Callable[[str, str], None]) -> None:
        self.settings = settings
        self.timeout = settings.timeout
        self.max_lease = settings.max_lease
        self.view_ttl = settings.view_ttl
        self.prefix = settings.key_prefix
        # Client tracking (Redis >= 6): Redis tells this worker which counters other workers changed, so what it last
        # read of a counter (a *view*) stays exact until then
        self.client = RespClient(url, track=f"{self.prefix}c|", on_invalidate=self._invalidated)
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown)
        self._checks: _Batch = []  # asked for in this turn of the loop
        self._sending: asyncio.Future[None] | None = None
        self.on_failure = on_failure
        self.counters: dict[str, list[int]] = {}  # pending charges: name -> [amount, ttl]
        self.hashes: dict[str, dict[str, int]] = {}  # pending usage: hash name -> field -> amount
        # request counter -> [requests held (counted in Redis, not used yet), its value after the last grant,
        # when the held ones go back (monotonic), ttl]
        self.leases: dict[str, list[Any]] = {}
        self.views: dict[str, list[Any]] = {}  # token or money counter -> [its value in Redis as last read, when]
        self.usage_ttl = 400 * 86400
        self._scheduled = False
        self._sweeping = False
        self._flushing: asyncio.Task[None] | None = None

    def _failed(self, op: str, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.client.reset()  # what the connection still owes is not worth waiting for
        self.breaker.failure()
        self.on_failure(op, _reason(exc))

    # ---------------------------------------------------------------------------------------------------- checks
    def local(self, plan: g.Plan) -> bool:
        """Decide ``plan`` without Redis when this worker can (True: ``refused``/``values`` set; False: ask Redis).
        It admits when it holds a leased request for each request counter and a view of each token or money counter
        that Redis has not invalidated (tracking on) and is younger than ``view_ttl``; it refuses when what it knows
        of a token or money counter (the value read and its own charges not sent yet) is over the limit: counters
        only grow within their window, so that is a lower bound even when the view is old."""
        now = time.monotonic()
        tracking = self.client.tracking
        ask = False
        values = []
        for c in plan.counters:
            if c.kind == g.REQUESTS:
                lease = self.leases.get(c.name)
                if lease is None or lease[0] < 1 or lease[2] <= now:
                    ask = True
                    values.append(0 if lease is None else lease[1] - lease[0])
                else:
                    values.append(lease[1] - lease[0] + 1)
                continue
            view = self.views.get(c.name)
            pending = self.counters.get(c.name)
            seen = (view[0] if view is not None else 0) + (pending[0] if pending is not None else 0)
            values.append(seen)
            if seen >= c.limit:
                plan.refused, plan.values = len(values) - 1, values + [0] * (len(plan.counters) - len(values))
                return True
            if view is None or not tracking or now - view[1] >= self.view_ttl:
                ask = True
        if ask:
            return False
        for c in plan.counters:
            if c.kind == g.REQUESTS:
                self.leases[c.name][0] -= 1
        plan.refused, plan.values = -1, values
        return True

    async def check(self, plan: g.Plan) -> bool:
        """``local``, else ``ask``."""
        return True if self.local(plan) else await self.ask(plan)

    async def ask(self, plan: g.Plan) -> bool:
        """True when Redis answered (``plan.values``/``refused`` set), False when it could not in time. The checks
        asked for in one turn of the event loop go in one script call (``_send_checks``)."""
        if not self.breaker.allow():
            self.on_failure("check", "breaker_open")
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, list[int]]] = loop.create_future()
        if not self._checks:
            loop.call_soon(self._send_checks)
        self._checks.append((plan, fut, []))
        try:
            plan.refused, plan.values = await fut  # within redis.timeout: the batch's timer fails it (``_expire``)
        except Exception as exc:  # timeouts, connection refused, script errors: the store did not answer
            self.on_failure("check", _reason(exc))  # (the breaker counts the batch once: ``_checked``)
            return False
        return True

    def _lease_size(self, c: g.Counter, lease: list[Any] | None) -> int:
        """Requests to ask for: 1 near the limit (or before anything was seen), else up to 1/``LEASE_SHARE`` of
        what was left at the last grant, at most ``max_lease``."""
        if lease is None:
            return 1
        share = (c.limit - lease[1]) // LEASE_SHARE
        return min(self.max_lease, share) if share >= 2 else 1

    def _send_checks(self) -> None:
        batch, self._checks = self._checks, []
        keys: list[bytes] = []
        args: list[bytes] = []
        nkeys = nargs = 0
        now = time.monotonic()
        for plan, _, asks in batch:
            parts = plan.memo.get("redis")
            if parts is None:  # the same bytes for every request of this key, model and window
                counters = plan.counters
                nreq = sum(1 for c in counters if c.kind == g.REQUESTS)
                values = [len(counters), nreq, *(c.limit for c in counters), *(c.ttl for c in counters)]
                parts = plan.memo["redis"] = (bulk(*(c.name for c in counters)), bulk(*values), len(counters), nreq)
            for c in plan.counters[: parts[3]]:
                lease = self.leases.get(c.name)
                if lease is not None and lease[0] >= 1 and lease[2] > now:
                    lease[0] -= 1  # one it holds (the others of this plan may still need Redis)
                    asks.append(0)
                else:
                    asks.append(self._lease_size(c, lease))
            keys.append(parts[0])
            args.append(parts[1])
            if asks:
                args.append(bulk(*asks))
            nkeys += parts[2]
            nargs += 2 + 2 * parts[2] + parts[3]
        head = b"*%d\r\n" % (3 + nkeys + 1 + nargs) + bulk("EVALSHA", _CHECK_SHA, nkeys)
        command = b"".join([head, *keys, bulk(len(batch)), *args])
        timer = asyncio.get_running_loop().call_later(self.timeout, self._expire, batch)
        if not self.client.send(command, partial(self._replied, batch, command, timer)):  # not connected yet
            self._sending = asyncio.ensure_future(self._checked(batch, command, timer))

    def _replied(self, batch: _Batch, command: bytes, timer: asyncio.TimerHandle, got: Any) -> None:
        """The reply to a batch sent on a live connection (the common case: no task, no extra turn of the loop)."""
        if isinstance(got, RespError) and str(got).startswith("NOSCRIPT"):  # a restarted Redis: load and send again
            self._sending = asyncio.ensure_future(self._checked(batch, command, timer))
            return
        timer.cancel()
        self._distribute(batch, got)

    def _unwind(self, plan: g.Plan, asks: list[int]) -> None:
        """The held requests a check took (``asks`` 0) go back to their leases: it was not admitted by them."""
        for c, want in zip(plan.counters, asks, strict=False):
            if want == 0:
                lease = self.leases.get(c.name)
                if lease is not None:
                    lease[0] += 1

    def _distribute(self, batch: _Batch, got: Any) -> None:
        if isinstance(got, Exception):
            if any(not fut.done() for _, fut, _ in batch):  # (a batch that timed out was counted by ``_expire``)
                self.breaker.failure()
            for plan, fut, asks in batch:
                if not fut.done():
                    self._unwind(plan, asks)
                    fut.set_exception(got)
            return
        self.breaker.success()
        now = time.monotonic()
        i = 0
        for plan, fut, asks in batch:
            n, nreq = len(plan.counters), len(asks)
            refused, values, grants = got[i], got[i + 1 : i + 1 + n], got[i + 1 + n : i + 1 + n + nreq]
            i += 1 + n + nreq
            gone = fut.done()  # (timed out: decided without this answer; what Redis granted is held)
            if refused >= 0 and not gone:
                self._unwind(plan, asks)
            for j, c in enumerate(plan.counters):
                if j >= nreq:
                    self.views[c.name] = [values[j], now]
                    continue
                lease = self.leases.get(c.name)
                if asks[j] > 0:
                    if lease is None:
                        lease = self.leases[c.name] = [0, 0, 0.0, c.ttl]
                    lease[1] = values[j]
                    if grants[j] > 0:
                        lease[0] += grants[j] - (0 if gone else 1)
                        lease[2] = now + LEASE_SECONDS
                if lease is not None:
                    values[j] = lease[1] - lease[0]  # (what was used, as far as this worker knows)
            if not gone:
                fut.set_result((refused, values))
        if not self._sweeping and (self.leases or self.views):
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def _expire(self, batch: _Batch) -> None:
        """``redis.timeout`` after a batch was sent: whoever still waits stops waiting (one timer per batch), and
        the connection is dropped (what it still owes is not worth waiting for)."""
        self.client.reset()
        self.breaker.failure()
        for plan, fut, asks in batch:
            if not fut.done():
                self._unwind(plan, asks)
                fut.set_exception(TimeoutError())

    async def _checked(self, batch: _Batch, command: bytes, timer: asyncio.TimerHandle) -> None:
        try:
            got = await self.client.script(command, _CHECK)
        except Exception as exc:
            got = exc
        finally:
            timer.cancel()
        self._distribute(batch, got)

    def _invalidated(self, keys: list[bytes] | None) -> None:
        """Redis's client tracking: another connection changed these counters (None: any of them may have changed)."""
        if keys is None:
            self.views.clear()
            return
        views = self.views
        for k in keys:
            views.pop(k.decode() if isinstance(k, bytes) else k, None)

    def _sweep(self, everything: bool = False) -> None:
        """Leases past their time give their held requests back to Redis (a negative charge); old views go."""
        self._sweeping = False
        now = math.inf if everything else time.monotonic()
        for name, lease in list(self.leases.items()):
            if lease[2] <= now:
                if lease[0] > 0:
                    self._pend(name, -lease[0], lease[3])
                del self.leases[name]
        for name in [n for n, v in self.views.items() if now - v[1] > VIEW_KEPT]:
            del self.views[name]
        if not everything and (self.leases or self.views):
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    # ---------------------------------------------------------------------------------------------------- charges
    def charge(self, charges: list[tuple[str, int, int]], key: str, day: str, fields: list[tuple[str, int]],
               retention_days: int) -> None:  # fmt: skip
        self.usage_ttl = retention_days * 86400
        for name, n, ttl in charges:
            self._pend(name, n, ttl)
        h = self.hashes.setdefault(f"{self.prefix}u|{key}|{day}", {})
        for f, n in fields:
            if n:
                h[f] = h.get(f, 0) + n
        self._schedule()

    def _pend(self, name: str, n: int, ttl: int) -> None:
        """An amount to add to a counter with the next batch (``FLUSH_EVERY``)."""
        entry = self.counters.get(name)
        if entry is None:
            if len(self.counters) >= MAX_PENDING:
                self.on_failure("charge", "dropped")
                return
            self.counters[name] = [n, ttl]
        else:
            entry[0] += n
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_EVERY, self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = False
        if self._flushing is not None and not self._flushing.done():
            self._scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_EVERY, self._start_flush)
            return
        self._flushing = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        """Send the pending charges in one script call; kept for the next try if Redis does not take them."""
        if not self.counters and not self.hashes:
            return
        counters, self.counters = self.counters, {}
        hashes, self.hashes = self.hashes, {}
        if not self.breaker.allow():
            self._restore(counters, hashes)
            return
        keys = list(counters)
        args: list[Any] = [len(keys), self.usage_ttl]
        for name in keys:
            args += counters[name]
        for name, fields in hashes.items():
            keys.append(name)
            args.append(len(fields))
            for f, n in fields.items():
                args += [f, n]
        try:
            async with asyncio.timeout(max(self.timeout * 10, 0.2)):  # off the request path: more time
                after = await self.client.evalsha(_CHARGE_SHA, _CHARGE, keys, args)
        except Exception as exc:
            self._failed("charge", exc)
            self._restore(counters, hashes)
            return
        self.breaker.success()
        now = time.monotonic()
        for name, value in zip(keys, after, strict=False):  # (the counters come first)
            if name not in self.leases:
                self.views[name] = [value, now]

    def _restore(self, counters: dict[str, list[int]], hashes: dict[str, dict[str, int]]) -> None:
        for name, (n, ttl) in counters.items():
            entry = self.counters.get(name)
            if entry is not None:
                entry[0] += n
            elif len(self.counters) < MAX_PENDING:
                self.counters[name] = [n, ttl]
        for name, fields in hashes.items():
            h = self.hashes.setdefault(name, {})
            for f, n in fields.items():
                h[f] = h.get(f, 0) + n
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(max(FLUSH_EVERY, 0.25), self._start_flush)

    async def usage(self, days: list[str], key: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
        """Usage on ``days`` of one key, or of every key (found by SCAN); admin only: ``GET /usage``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        wanted = set(days)
        async with asyncio.timeout(5.0):
            if key is not None:
                names = [f"{self.prefix}u|{key}|{day}" for day in days]
            else:
                names, cursor = [], b"0"
                while True:
                    cursor, found = await self.client.call("SCAN", cursor, "MATCH", f"{self.prefix}u|*", "COUNT", 1000)
                    names += [_text(n) for n in found]
                    if cursor in (b"0", 0):
                        break
            for name in names:
                _, who, day = name[len(self.prefix) :].split("|", 2)
                if day not in wanted:
                    continue
                flat = await self.client.call("HGETALL", name)
                if flat:
                    out.setdefault(day, {})[who] = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return out

    async def close(self) -> None:
        self._sweep(everything=True)  # held requests go back
        await self.flush()
        await self.client.close()


def _reason(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


# ------------------------------------------------------------------------------------------------------- governor
class Governor:
    """What the servicer asks: the plan of a request, its check, and its charge when the answer ends."""

    def __init__(self, settings: g.Settings, env: dict[str, str], metrics: Any = None) -> None:
        self.metrics = metrics
        self.settings = settings
        self._last_warning = -LOG_EVERY
        self._suppressed = 0
        self._closing: asyncio.Future[None] | None = None
        self._plans: dict[tuple[str, str], tuple[float, float, g.Plan | None]] = {}
        self._prices: dict[str, g.Price | None] = {}
        self.store: MemoryStore | RedisStore = self._open(settings, env)

    def _open(self, settings: g.Settings, env: dict[str, str]) -> MemoryStore | RedisStore:
        if settings.store == g.REDIS:
            store = RedisStore(env[settings.redis.url_env], settings.redis, self._store_failed)
            store.breaker.on_change = self._breaker_changed
            return store
        return MemoryStore()

    def reconfigure(self, settings: g.Settings, env: dict[str, str]) -> None:
        """A reloaded config: the same store unless where it lives changed (counters in the old one are left)."""
        old = self.settings
        self.settings = settings
        self._plans, self._prices = {}, {}
        if (settings.store, settings.redis) != (old.store, old.redis) or (
            settings.store == g.REDIS and env.get(settings.redis.url_env) != env.get(old.redis.url_env)
        ):
            previous, self.store = self.store, self._open(settings, env)
            self._closing = asyncio.ensure_future(previous.close())

    # -------------------------------------------------------------------------------------------- request path
    def plan(self, key: str | None, model: str) -> g.Plan | None:
        """The plan of a request; the same key and model share one (counters and the store's memo) until the first
        of its windows ends."""
        s = self.settings
        if not s.rules:
            return None
        now = time.time()
        name = key or ANONYMOUS
        hit = self._plans.get((name, model))
        if hit is None or not hit[0] <= now < hit[1]:
            prefix = s.redis.key_prefix if s.store == g.REDIS else ""
            fresh = g.plan(s, name, model, now, prefix)
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            until = min(c.reset for c in fresh.counters) if fresh is not None else now + 60
            hit = self._plans[(name, model)] = (now - now % 60, until, fresh)
        template = hit[2]
        if template is None:
            return None
        return g.Plan(template.counters, template.key, template.model, memo=template.memo)

    def decide(
        self, plan: g.Plan, answered: bool, fmt: str, model_label: str = "other"
    ) -> tuple[g.GatewayError, list[tuple[str, str]]] | None:
        """None to forward; else the error to answer with (and its headers)."""
        if not answered:
            if self.settings.on_failure == g.FAIL_CLOSED:
                return g.unavailable(), []
            return None
        if plan.refused < 0:
            return None
        if self.metrics is not None:
            self.metrics.governance_refused(plan.key, model_label, plan.counters[plan.refused])
        return g.refusal(plan, fmt, time.time())

    # -------------------------------------------------------------------------------------------- the answer ended
    def finish(self, rec: Record, key: str | None, plan: g.Plan | None) -> None:
        """Cost into the record (logs, metrics), charges into the store: a forwarded request whose answer ended (or
        was cut: what was counted by then)."""
        s = self.settings
        name = key or ANONYMOUS
        rec.key = name
        price = self._prices.get(rec.model, _UNSET)
        if price is _UNSET:
            if len(self._prices) >= MAX_PLANS:
                self._prices.clear()
            price = self._prices[rec.model] = s.price(rec.model)
        assert price is None or isinstance(price, g.Price)
        cost = price.micro_usd(rec.usage) if price is not None and rec.usage is not None else 0
        rec.cost = cost / g.MICRO if price is not None else None
        charges = g.charges(plan, rec.usage, cost) if plan is not None and plan.refused < 0 else []
        now = time.time()
        fields = g.usage_fields(rec.model, rec.provider or "", rec.usage, cost)
        self.store.charge(charges, name, g.day_id(now), fields, s.usage_retention_days)

    # -------------------------------------------------------------------------------------------- the store's health
    def _store_failed(self, op: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.governance_store_failed(op, reason)
        now = time.monotonic()
        if now - self._last_warning < LOG_EVERY:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        what = "requests admitted (fail_open)" if self.settings.on_failure == g.FAIL_OPEN else "requests refused (503)"
        log.warning("governance store (redis) did not answer a %s: %s; %s%s", op, reason, what, more)
        self._last_warning, self._suppressed = now, 0

    def _breaker_changed(self, is_open: bool) -> None:
        if self.metrics is not None:
            self.metrics.governance_breaker(is_open)
        if is_open:
            cooldown = self.settings.redis.breaker_cooldown
            log.warning("governance store (redis): circuit breaker open for %.1fs", cooldown)
        else:
            log.info("governance store (redis): reachable again, circuit breaker closed")

    async def close(self) -> None:
        await self.store.close()
