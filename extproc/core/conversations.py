"""Conversation state for Responses API clients of non-OpenAI providers: what the gateway keeps and how it reads it.

OpenAI's Responses API keeps each response (``store: true``, its default) so that a client can continue with
``previous_response_id`` or point at an earlier item (``item_reference``, a ``reasoning`` item by id). When the model
behind the gateway is not OpenAI's, the gateway keeps them itself, behind ``ResponseStore``:

- ``put`` keeps one response: its own input items, the response object (output items included) and the id of the
  response it continued. Nothing is copied from earlier turns, so a long conversation costs its length, not its square.
- ``history`` walks a chain back through ``previous_response_id`` links and returns every input and output item in
  order: what the next request is prepended with.
- Everything is scoped by the gateway key's name (``ANONYMOUS`` without gateway keys): an id from another key is
  simply not found, so keys never see each other's conversations.
- A store is bounded: entries expire after a retention time and the oldest go first when it grows past its size cap.

``MemoryStore`` (here) keeps one process's responses in memory (tests; a single worker); ``SqliteStore``
(``extproc.transport.response_store``) is the default, a SQLite file several workers share. A store shared by several
gateway replicas only has to implement the same six methods.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from extproc.translation.errors import GatewayError

ANONYMOUS = ""
MAX_CHAIN = 10_000  # previous_response_id links followed at most (a chain is as long as its conversation)


@dataclass(slots=True, frozen=True)
class StoreSettings:
    """``responses:`` in the config."""

    enabled: bool = True  # keep conversations for store: true requests at all
    data_dir: str = "data"  # where the SQLite file lives (relative to the working directory)
    retention: float = 30 * 86400.0  # seconds an entry is kept
    max_bytes: int = 1024 * 1024 * 1024  # size cap of the whole store; the oldest entries go first beyond it


class HistoryMissing(Exception):
    """A response the chain goes through is no longer stored (expired, deleted, or never was)."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id


class ResponseStore(Protocol):
    """Where the gateway keeps Responses API conversations. Every method is scoped by the gateway key's name."""

    def put(
        self, scope: str, response: dict[str, Any], input_items: list[dict[str, Any]], previous_id: str | None
    ) -> None:
        """Keep ``response`` (a full ``response`` object) and the input items of its request."""
        ...

    def get(self, scope: str, response_id: str) -> dict[str, Any] | None: ...

    def input_items(self, scope: str, response_id: str) -> list[dict[str, Any]] | None: ...

    def history(self, scope: str, response_id: str) -> list[dict[str, Any]]:
        """Every input and output item of the chain ending in ``response_id``, oldest first; ``HistoryMissing`` when
        a response on the way is not stored."""
        ...

    def items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Stored items (input or output) by id, for ``item_reference`` and id-only ``reasoning`` items."""
        ...

    def delete(self, scope: str, response_id: str) -> bool: ...


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the store keeps and lists them, in OpenAI's shape: each with an id, messages with their type,
    a status and their content as parts (a string becomes one ``input_text`` part, ``output_text`` for the
    assistant)."""
    prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
    out = []
    for item in items:
        if isinstance(item, dict):
            kind = item.get("type") or ("message" if "role" in item else None)
            if kind == "message":
                content = item.get("content")
                if isinstance(content, str):
                    part = "output_text" if item.get("role") == "assistant" else "input_text"
                    content = [
                        {"type": part, "text": content, **({"annotations": []} if part == "output_text" else {})}
                    ]
                item = {"type": "message", **item, "content": content, "status": item.get("status") or "completed"}
            if not item.get("id"):
                item = {"id": f"{prefix.get(kind or '', 'item')}_{os.urandom(16).hex()}", **item}
        out.append(item)
    return out


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
    """A ``ResponseStore`` in this process's memory, with the same bounds as the SQLite one."""

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
            ref = (key[0], item.get("id")) if isinstance(item, dict) else None
            if ref is not None and self._items.get(ref, ("",))[0] == key[1]:
                del self._items[ref]
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


def _previous_missing(prev: str, missing: str) -> GatewayError:
    detail = "" if missing == prev else f" (it continues response '{missing}', which is no longer stored)"
    return GatewayError(
        "invalid_request",
        f"Previous response with id '{prev}' not found.{detail}",
        400,
        param="previous_response_id",
        code="previous_response_not_found",
    )


def expand_request(
    body: dict[str, Any], store: ResponseStore | None, scope: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A Responses request made whole from the store: the stored conversation ``previous_response_id`` names goes
    first, and ``item_reference`` items and reasoning items sent by id only are replaced by the stored items (those
    the store does not hold are left for the format to refuse or drop). Returns the body to translate and this
    request's own input items, which ``put`` keeps (after ``with_ids``)."""
    raw = body.get("input")
    if isinstance(raw, str):
        own: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}
        ]
    elif isinstance(raw, list):
        own = raw
    else:
        return body, []  # the format refuses it with the right message
    prev = body.get("previous_response_id")
    history: list[dict[str, Any]] = []
    if prev is not None:
        if not isinstance(prev, str) or not prev:
            raise GatewayError("invalid_request", "'previous_response_id' must be a string", 400,
                               param="previous_response_id")  # fmt: skip
        if store is None:
            raise GatewayError(
                "invalid_request",
                "this gateway keeps no conversations (responses.store is off): send the whole conversation as input",
                400,
                param="previous_response_id",
            )
        try:
            history = store.history(scope, prev)
        except HistoryMissing as exc:
            raise _previous_missing(prev, exc.response_id) from None
    refs = [
        it["id"]
        for it in own
        if isinstance(it, dict)
        and isinstance(it.get("id"), str)
        and (it.get("type") == "item_reference" or (it.get("type") == "reasoning" and not it.get("encrypted_content")))
    ]
    if refs and store is not None:
        found = store.items(scope, refs)
        own = [found.get(it.get("id"), it) if isinstance(it, dict) and it.get("id") in refs else it for it in own]
    if not history and not refs and isinstance(raw, list):
        return body, own
    return {**body, "input": history + own}, own
