"""Answers the gateway keeps for stateful formats' clients (OpenAI's Responses API) when the provider keeps none.

OpenAI's Responses API keeps each response (``store: true``, its default) so that a client can continue with
``previous_response_id`` or point at an earlier item (``item_reference``, a ``reasoning`` item by id). When the model
behind the gateway is not OpenAI's, the gateway keeps them itself, behind ``contract.AnswerStore``:

- ``put`` keeps one response: its own input items, the response object (output items included) and the id of the
  response it continued. Nothing is copied from earlier turns, so a long conversation costs its length, not its square.
- ``history`` walks a chain back through ``previous_response_id`` links and returns every input and output item in
  order: what the next request is prepended with.
- Everything is scoped by the gateway key's name (``access.ANONYMOUS`` without gateway keys): an id from another key
  is simply not found, so keys never see each other's conversations.
- A store is bounded: entries expire after a retention time and the oldest go first when it grows past its size cap.

``MemoryStore`` (here) keeps one process's responses in memory (tests; a single worker); ``SqliteStore``
(``extproc.transport.response_store``) is the default, a SQLite file several workers share. A store shared by several
gateway replicas only has to implement the same six methods. What the items look like is the format's business
(``extproc.translation.formats.responses``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.translation.formats.contract import HistoryMissing

MAX_CHAIN = 10_000  # previous_response_id links followed at most (a chain is as long as its conversation)


@dataclass(slots=True, frozen=True)
class StoreSettings:
    """``responses:`` in the config."""

    enabled: bool = True  # keep conversations for store: true requests at all
    data_dir: str = "data"  # where the SQLite file lives (a relative path is taken from the config file's directory)
    retention: float = 30 * 86400.0  # seconds an entry is kept
    max_bytes: int = 1024 * 1024 * 1024  # size cap of the whole store; the oldest entries go first beyond it


def entry_size(response: dict[str, Any], input_items: list[dict[str, Any]]) -> int:
    return len(orjson.dumps(response)) + len(orjson.dumps(input_items))


@dataclass(slots=True)
class _Entry:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    previous_id: str | None
    expires: float
    size: int


class MemoryStore:
    """An ``AnswerStore`` in this process's memory, with the same bounds as the SQLite one."""

    def __init__(self, settings: StoreSettings | None = None, clock: Any = time.time) -> None:
        self.settings = settings or StoreSettings()
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()  # oldest first
        self._items: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._bytes = 0

    def put(
        self, scope: str, response: dict[str, Any], input_items: list[dict[str, Any]], previous_id: str | None
    ) -> None:
        size = entry_size(response, input_items)
        if size > self.settings.max_bytes:
            return
        self._expire()
        key = (scope, response["id"])
        self._drop(key)
        self._entries[key] = _Entry(response, input_items, previous_id, self._clock() + self.settings.retention, size)
        self._bytes += size
        for item in [*input_items, *response.get("output", ())]:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self._items[(scope, item["id"])] = (response["id"], item)
        while self._bytes > self.settings.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[str, str]) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        for item in [*entry.input_items, *entry.response.get("output", ())]:
            iid = item.get("id") if isinstance(item, dict) else None
            if not isinstance(iid, str):
                continue
            owner = self._items.get((key[0], iid))
            if owner is not None and owner[0] == key[1]:
                del self._items[(key[0], iid)]
        return True

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.expires <= now]:
            self._drop(key)

    def _entry(self, scope: str, response_id: str) -> _Entry | None:
        entry = self._entries.get((scope, response_id))
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def get(self, scope: str, response_id: str) -> dict[str, Any] | None:
        entry = self._entry(scope, response_id)
        return entry.response if entry else None

    def input_items(self, scope: str, response_id: str) -> list[dict[str, Any]] | None:
        entry = self._entry(scope, response_id)
        return entry.input_items if entry else None

    def history(self, scope: str, response_id: str) -> list[dict[str, Any]]:
        chain: list[_Entry] = []
        rid: str | None = response_id
        while rid is not None and len(chain) < MAX_CHAIN:
            entry = self._entry(scope, rid)
            if entry is None:
                raise HistoryMissing(rid)
            chain.append(entry)
            rid = entry.previous_id
        out: list[dict[str, Any]] = []
        for entry in reversed(chain):
            out += entry.input_items
            out += entry.response.get("output", [])
        return out

    def items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for iid in item_ids:
            found = self._items.get((scope, iid))
            if found is not None and self._entry(scope, found[0]) is not None:
                out[iid] = found[1]
        return out

    def delete(self, scope: str, response_id: str) -> bool:
        if self._entry(scope, response_id) is None:
            return False
        return self._drop((scope, response_id))
