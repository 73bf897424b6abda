"""The conversation store behind previous_response_id: both implementations (in-memory, SQLite) against the same
contract (chains, items, key scoping, expiry, the size cap), and SQLite shared by several processes."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extproc.core.conversations import MemoryStore, StoreSettings
from extproc.translation.errors import GatewayError
from extproc.translation.formats.contract import AnswerStore, HistoryMissing
from extproc.translation.formats.responses import STATE, with_ids
from extproc.transport.response_store import SqliteStore


def expand_request(body: dict[str, Any], store: Any, scope: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What the exchange asks of the Responses format's STATE: the whole request and its own items (as kept)."""
    conv = STATE.expand(body, store, scope, passthrough=False)
    return conv.head, conv.own_items


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made: list[Any] = []

    def factory(settings: StoreSettings | None = None, clock: Clock | None = None) -> AnswerStore:
        settings = settings or StoreSettings(data_dir=str(tmp_path))
        clock = clock or Clock()
        if request.param == "memory":
            store: Any = MemoryStore(settings, clock)
        else:
            store = SqliteStore(tmp_path / f"db{len(made)}" / "responses.sqlite3", settings, clock)
        made.append(store)
        return store

    yield factory
    for s in made:
        if isinstance(s, SqliteStore):
            s.close()


def response(rid: str, text: str = "answer", pad: int = 0) -> dict[str, Any]:
    out = [
        {
            "id": f"msg_{rid}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": text + "x" * pad, "annotations": []}],
        }
    ]
    return {"id": rid, "object": "response", "output": out}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_chain_of_turns(make: Any) -> None:
    store = make()
    store.put("team-a", response("resp_1", "one"), with_ids([user("q1")]), None)
    store.put("team-a", response("resp_2", "two"), with_ids([user("q2")]), "resp_1")
    store.put("team-a", response("resp_3", "three"), with_ids([user("q3")]), "resp_2")
    history = store.history("team-a", "resp_3")
    texts = [i["content"][0]["text"] for i in history]
    assert texts == ["q1", "one", "q2", "two", "q3", "three"]
    assert store.history("team-a", "resp_1")[-1]["id"] == "msg_resp_1"
    assert store.get("team-a", "resp_2")["output"][0]["content"][0]["text"] == "two"
    assert [i["content"][0]["text"] for i in store.input_items("team-a", "resp_2")] == ["q2"]
    assert all(i["id"].startswith("msg_") for i in store.input_items("team-a", "resp_2"))
    items = store.items("team-a", ["msg_resp_1", "msg_resp_3", "nope"])
    assert sorted(items) == ["msg_resp_1", "msg_resp_3"]


def test_keys_never_see_each_others_conversations(make: Any) -> None:
    store = make()
    store.put("team-a", response("resp_1"), [user("secret")], None)
    assert store.get("team-b", "resp_1") is None
    assert store.input_items("team-b", "resp_1") is None
    assert store.items("team-b", ["msg_resp_1"]) == {}
    with pytest.raises(HistoryMissing):
        store.history("team-b", "resp_1")
    assert store.delete("team-b", "resp_1") is False
    assert store.get("team-a", "resp_1") is not None


def test_delete_and_a_broken_chain(make: Any) -> None:
    store = make()
    store.put("", response("resp_1"), [user("a")], None)
    store.put("", response("resp_2"), [user("b")], "resp_1")
    assert store.delete("", "resp_1") is True
    assert store.delete("", "resp_1") is False
    assert store.items("", ["msg_resp_1"]) == {}
    with pytest.raises(HistoryMissing) as info:
        store.history("", "resp_2")
    assert info.value.answer_id == "resp_1"


def test_entries_expire(make: Any) -> None:
    clock = Clock()
    store = make(StoreSettings(retention=60), clock)
    store.put("", response("resp_1"), [user("a")], None)
    clock.now += 30
    store.put("", response("resp_2"), [user("b")], "resp_1")
    clock.now += 31  # resp_1 is past its retention, resp_2 is not
    assert store.get("", "resp_1") is None and store.get("", "resp_2") is not None
    with pytest.raises(HistoryMissing):
        store.history("", "resp_2")
    assert store.items("", ["msg_resp_1"]) == {}
    clock.now += 3600
    store.put("", response("resp_3"), [user("c")], None)  # a put sweeps what expired
    if isinstance(store, SqliteStore):
        count = store._db().execute("SELECT count(*) FROM responses").fetchone()[0]
        assert count == 1


def test_size_cap_drops_the_oldest(make: Any) -> None:
    store = make(StoreSettings(max_bytes=200_000))
    for i in range(10):
        store.put("", response(f"resp_{i}", pad=30_000), [user(str(i))], None)
    kept = [i for i in range(10) if store.get("", f"resp_{i}") is not None]
    assert kept and kept == list(range(10 - len(kept), 10)) and len(kept) < 10
    if isinstance(store, SqliteStore):
        assert store.stored_bytes() <= 200_000
    store.put("", response("resp_huge", pad=300_000), [user("h")], None)  # larger than the whole cap: not kept
    assert store.get("", "resp_huge") is None and store.get("", "resp_9") is not None


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data" / "responses.sqlite3")
    store.put("", response("resp_1"), [user("a")], None)
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "responses.sqlite3").st_mode) == 0o600
    store.close()


def _writer(path: str, worker: int, count: int) -> None:
    store = SqliteStore(path)
    for i in range(count):
        prev = f"resp_{worker}_{i - 1}" if i else None
        store.put("", response(f"resp_{worker}_{i}", f"w{worker} {i}"), [user(f"{worker}/{i}")], prev)
    store.close()


def test_sqlite_shared_by_processes(tmp_path: Path) -> None:
    """Four processes write chains at once (no 'database is locked'), and a fifth reads all of them."""
    path = str(tmp_path / "responses.sqlite3")
    SqliteStore(path).close()  # schema first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    reader = SqliteStore(path)
    for w in range(4):
        history = reader.history("", f"resp_{w}_39")
        assert len(history) == 80
        assert history[0]["content"][0]["text"] == f"{w}/0"
        assert history[-1]["content"][0]["text"] == f"w{w} 39"
    reader.close()


def test_expand_request_prepends_the_chain_and_resolves_items() -> None:
    store = MemoryStore()
    rs = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "YWlndy1yMS57InQiOiIifQ"}
    first = {
        "id": "resp_1",
        "output": [rs, {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}],
    }
    store.put("k", first, with_ids([user("q1")]), None)
    body = {
        "model": "m",
        "previous_response_id": "resp_1",
        "input": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "item_reference", "id": "fc_1"},
            {"type": "item_reference", "id": "fc_unknown"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    }
    expanded, own = expand_request(body, store, "k")
    kinds = [(i.get("type"), i.get("id")) for i in expanded["input"]]
    assert kinds[:3] == [("message", kinds[0][1]), ("reasoning", "rs_1"), ("function_call", "fc_1")]
    assert expanded["input"][3] == rs  # the id-only reasoning item became the stored one, encrypted_content and all
    assert expanded["input"][5] == {"type": "item_reference", "id": "fc_unknown"}  # left for the format to refuse
    assert [i.get("type") for i in own] == [i.get("type") for i in expanded["input"][3:]]  # this request's own
    assert all(i.get("id") for i in own) and own[0] == rs  # given ids, as kept
    assert body["input"][0] == {"type": "reasoning", "id": "rs_1", "summary": []}  # the caller's body is untouched
    with pytest.raises(GatewayError) as info:
        expand_request({**body, "previous_response_id": "resp_9"}, store, "k")
    assert (info.value.status, info.value.code) == (400, "previous_response_not_found")
    with pytest.raises(GatewayError):
        expand_request(body, store, "other-key")
    with pytest.raises(GatewayError, match="keeps no conversations"):
        expand_request(body, None, "k")
    assert STATE.expand(body, None, "k", passthrough=True).changed is False  # OpenAI keeps its own
    plain = {"model": "m", "input": [user("x")]}
    assert expand_request(plain, store, "k")[0] is plain
    text, own = expand_request({"model": "m", "input": "hello"}, store, "k")
    assert text["input"][0]["content"][0]["text"] == "hello" and own[0]["id"].startswith("msg_")
