"""A bounded first-in-first-out spool of JSON documents in a local SQLite file.

What must survive a crash of the process while its real destination (the database) is down
waits here: a row is committed to disk before ``push`` returns. Readers take the oldest rows
(``peek``) and delete them only after they were written to the destination (``remove_through``),
so a crash in between writes them again: the destination must ignore repeats. Bounded: past
``max_rows`` the oldest rows are dropped, counted and logged (an outage longer than the bound
loses the oldest log rows, never the process's memory or disk).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DiskSpool:
    def __init__(self, path: str | Path, max_rows: int = 100_000) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.dropped = 0
        self._lock = threading.Lock()  # one connection, used from several threads
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a pushed row survives a power cut, not only a crash
        self._db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc TEXT NOT NULL)")

    def push(self, doc: Any) -> None:
        """Append ``doc`` (JSON-serialisable) durably; drop the oldest rows beyond the bound."""
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._db.execute("INSERT INTO spool (doc) VALUES (?)", (text,)).lastrowid
                n = self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq - self.max_rows,)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if n > 0:
            self.dropped += n
            log.error("spool %s full (%d rows): dropped the %d oldest", self.path.name, self.max_rows, n)

    def peek(self, limit: int = 100) -> list[tuple[int, Any]]:
        """The oldest ``limit`` rows as (seq, doc), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, doc FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(seq, json.loads(doc)) for seq, doc in rows]

    def peek_last(self) -> tuple[int, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT seq, doc FROM spool ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def replace(self, seq: int, doc: Any) -> None:
        """Rewrite row ``seq`` in place (its position in the queue stays)."""
        text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._db.execute("UPDATE spool SET doc = ? WHERE seq = ?", (text, seq))

    def remove_through(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
