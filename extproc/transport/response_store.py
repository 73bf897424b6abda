"""The default ``AnswerStore``: one SQLite file (``<responses.data_dir>/responses.sqlite3``) every worker shares.

WAL mode lets the workers read while one writes; ``synchronous=NORMAL`` makes a commit a write to the WAL without an
fsync (a power cut may lose the last commits, never corrupt the file); a busy timeout waits out another worker's
write. Each process opens its own connection on first use. The file and its directory are private to the gateway's
user (conversations are in it).

Bounds (``responses.retention``, ``responses.max_bytes``): every entry carries its expiry time (reads ignore expired
entries; a sweep deletes them, a batch at a time, at most once a minute per process), and each ``put`` deletes the
oldest entries while the pages the database uses (read from SQLite's page counts: no bookkeeping of its own) are over
the cap. An entry larger than the cap on its own is not kept.

A ``put`` costs ~80 us here, nearly all of it SQLite's commit (appending the changed pages to the WAL).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from extproc.core.conversations import MAX_CHAIN, StoreSettings
from extproc.translation.formats.contract import HistoryMissing

FILE_NAME = "responses.sqlite3"
_SWEEP_EVERY = 60.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    scope TEXT NOT NULL, id TEXT NOT NULL, prev TEXT, created REAL NOT NULL, expires REAL NOT NULL,
    size INTEGER NOT NULL, response BLOB NOT NULL, input BLOB NOT NULL, PRIMARY KEY (scope, id));
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
CREATE TABLE IF NOT EXISTS items (
    scope TEXT NOT NULL, id TEXT NOT NULL, response_id TEXT NOT NULL, item BLOB NOT NULL, PRIMARY KEY (scope, id),
    FOREIGN KEY (scope, response_id) REFERENCES responses (scope, id) ON DELETE CASCADE);
CREATE INDEX IF NOT EXISTS items_response ON items (scope, response_id);
"""
_BATCH = 256  # rows deleted per statement when sweeping or shrinking (bounded work per put)
_HISTORY = """
WITH RECURSIVE chain (id, prev, depth, response, input) AS (
    SELECT id, prev, 0, response, input FROM responses WHERE scope = ?1 AND id = ?2 AND expires > ?3
    UNION ALL
    SELECT r.id, r.prev, chain.depth + 1, r.response, r.input FROM responses r
        JOIN chain ON r.scope = ?1 AND r.id = chain.prev AND r.expires > ?3
    WHERE chain.depth < ?4)
SELECT id, prev, response, input FROM chain ORDER BY depth DESC
"""


class SqliteStore:
    """``AnswerStore`` on a SQLite file shared by the worker processes."""

    def __init__(self, path: str | os.PathLike[str], settings: StoreSettings | None = None, clock: Any = time.time):
        self.path = Path(path)
        self.settings = settings or StoreSettings()
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._swept = 0.0

    @classmethod
    def in_dir(cls, settings: StoreSettings) -> SqliteStore:
        return cls(Path(settings.data_dir) / FILE_NAME, settings)

    # ---- connection
    def _db(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not self.path.exists()
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # ---- AnswerStore
    def put(
        self, scope: str, response: dict[str, Any], input_items: list[dict[str, Any]], previous_id: str | None
    ) -> None:
        resp_blob = orjson.dumps(response)
        input_blob = orjson.dumps(input_items)
        items = [
            (scope, item["id"], response["id"], orjson.dumps(item))
            for item in [*input_items, *response.get("output", ())]
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        ]
        size = len(resp_blob) + len(input_blob) + sum(len(i[3]) for i in items)
        if size > self.settings.max_bytes:
            return
        now = self._clock()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM responses WHERE scope = ? AND id = ?", (scope, response["id"]))
            db.execute(
                "INSERT INTO responses (scope, id, prev, created, expires, size, response, input) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, response["id"], previous_id, now, now + self.settings.retention, size, resp_blob, input_blob),
            )
            db.executemany("INSERT OR REPLACE INTO items (scope, id, response_id, item) VALUES (?, ?, ?, ?)", items)
            if now - self._swept > _SWEEP_EVERY:
                self._swept = now
                db.execute(
                    "DELETE FROM responses WHERE rowid IN "
                    "(SELECT rowid FROM responses WHERE created <= ? ORDER BY created LIMIT ?)",
                    (now - self.settings.retention, _BATCH),
                )
            self._shrink(db)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _shrink(self, db: sqlite3.Connection) -> None:
        """Delete the oldest entries while the database file holds more than the size cap (its pages in use,
        indexes included: what the cap bounds is the disk the store takes)."""
        for _ in range(64):
            if self._used(db) <= self.settings.max_bytes:
                return
            cur = db.execute(
                "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses ORDER BY created LIMIT ?)",
                (_BATCH // 8,),
            )
            if cur.rowcount == 0:
                return

    @staticmethod
    def _used(db: sqlite3.Connection) -> int:
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(db.execute("PRAGMA page_size").fetchone()[0])

    def get(self, scope: str, response_id: str) -> dict[str, Any] | None:
        row = (
            self._db()
            .execute(
                "SELECT response FROM responses WHERE scope = ? AND id = ? AND expires > ?",
                (scope, response_id, self._clock()),
            )
            .fetchone()
        )
        return orjson.loads(row[0]) if row else None

    def input_items(self, scope: str, response_id: str) -> list[dict[str, Any]] | None:
        row = (
            self._db()
            .execute(
                "SELECT input FROM responses WHERE scope = ? AND id = ? AND expires > ?",
                (scope, response_id, self._clock()),
            )
            .fetchone()
        )
        return orjson.loads(row[0]) if row else None

    def history(self, scope: str, response_id: str) -> list[dict[str, Any]]:
        rows = self._db().execute(_HISTORY, (scope, response_id, self._clock(), MAX_CHAIN)).fetchall()
        if not rows:
            raise HistoryMissing(response_id)
        if rows[0][1] is not None and len(rows) <= MAX_CHAIN:
            raise HistoryMissing(rows[0][1])  # the oldest one found continued a response that is gone
        out: list[dict[str, Any]] = []
        for _, _, response, input_blob in rows:
            out += orjson.loads(input_blob)
            out += orjson.loads(response).get("output", [])
        return out

    def items(self, scope: str, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not item_ids:
            return {}
        marks = ",".join("?" * len(item_ids))
        rows = (
            self._db()
            .execute(
                f"SELECT i.id, i.item FROM items i JOIN responses r ON r.scope = i.scope AND r.id = i.response_id "
                f"WHERE i.scope = ? AND i.id IN ({marks}) AND r.expires > ?",
                (scope, *item_ids, self._clock()),
            )
            .fetchall()
        )
        return {iid: orjson.loads(blob) for iid, blob in rows}

    def delete(self, scope: str, response_id: str) -> bool:
        cur = self._db().execute(
            "DELETE FROM responses WHERE scope = ? AND id = ? AND expires > ?", (scope, response_id, self._clock())
        )
        return cur.rowcount > 0

    def stored_bytes(self) -> int:
        """Bytes of the database in use (the size cap bounds this)."""
        return self._used(self._db())
