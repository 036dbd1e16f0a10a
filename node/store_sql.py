"""What every store module needs to know of SQLite itself: the result codes the store acts on and how to read
one off an exception, the error a full disk becomes, and the query for the change head.

Its own module so that ``store.py`` (opening, full-disk mode), ``store_file.py`` (schema, migrations),
``store_commit.py`` (the group commit), ``store_writes.py`` and ``store_reads.py`` share these without importing
each other's private names.
"""

from __future__ import annotations

import sqlite3

from .errors import StorageFullError

__all__ = ["CHANGE_FLOOR", "DAMAGED", "FULL", "HEAD", "IOERR", "change_head", "result_code", "storage_full"]

FULL = 13  # SQLITE_FULL: "database or disk is full" (the disk, or PRAGMA max_page_count)
IOERR = 10  # SQLITE_IOERR: what opening gives when WAL's -shm file cannot be made on a full disk
DAMAGED = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB

CHANGE_FLOOR = "chg.floor"
"""The head when rows were last deleted (node/purge.py): change numbers are never handed out twice, even when
the rows that held the highest ones are gone, or a peer's watermark past them would skip the new ones."""

HEAD = (
    "SELECT MAX(m) FROM (SELECT MAX(chg) AS m FROM jobs UNION ALL SELECT MAX(chg) FROM executions "
    "UNION ALL SELECT MAX(chg) FROM allocations "
    f"UNION ALL SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{CHANGE_FLOOR}')"
)
"""The highest change number handed out (NULL in an empty store)."""


def change_head(conn: sqlite3.Connection) -> int:
    row = conn.execute(HEAD)
    return int(row.fetchone()[0] or 0)


def result_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc``; None when it is not an SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None


def storage_full() -> StorageFullError:
    return StorageFullError(
        "storage full: the disk holding the job store has no room; nothing was written "
        "(reads still work; retry once space is freed)"
    )
