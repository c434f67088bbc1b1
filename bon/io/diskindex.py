"""A map kept on disk, for work whose memory must stay flat however many records there are:
where each record of the shards lies (`bon merge`), where each sidecar entry starts (resume).

SQLite's private temporary database (filename ""): a file in the temporary directory
($TMPDIR, else /var/tmp or /tmp), deleted when the map is closed; only a small page cache
lives in memory. Keys are text, integers (told apart: 1 is not "1") or bytes; a value is a
pair of integers.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

Key = str | int | bytes


def _blob(key: Key) -> bytes:
    return key if isinstance(key, bytes) else json.dumps(key, ensure_ascii=False).encode("utf-8")


class DiskIndex:
    def __init__(self) -> None:
        # One thread at a time uses it, but not always the one that made it (a run opens its
        # files before its event loop starts).
        self._db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE entries (key BLOB PRIMARY KEY, a INTEGER, b INTEGER) WITHOUT ROWID")
        self.empty = True  # nothing was ever put: lookups need no query

    def get(self, key: Key) -> tuple[int, int] | None:
        if self.empty:
            return None
        row = self._db.execute("SELECT a, b FROM entries WHERE key = ?", (_blob(key),)).fetchone()
        return None if row is None else (row[0], row[1])

    def put(self, key: Key, a: int, b: int = 0) -> None:
        """Set the key's value (a later put wins)."""
        self.empty = False
        self._db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", (_blob(key), a, b))

    def put_many(self, items: Any) -> None:
        """put() for each (key, a, b), in one transaction (much faster for many)."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", ((_blob(k), a, b) for k, a, b in items)
            )
        finally:
            self._db.execute("COMMIT")
        self.empty = self.empty and self._db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def pop(self, key: Key) -> tuple[int, int] | None:
        found = self.get(key)
        if found is not None:
            self._db.execute("DELETE FROM entries WHERE key = ?", (_blob(key),))
        return found

    # a set's interface, for read_records' duplicate check
    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, int, bytes)) and self.get(key) is not None

    def add(self, key: Key) -> None:
        self.put(key, 0)

    def close(self) -> None:
        self._db.close()
