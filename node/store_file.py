"""The store's file: its schema and migrations, opening it (checked sound), and the read-only open of a full disk.

What ``node/store.py`` opens and reopens; nothing here runs SQL on a node's data once it is open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from .store_sql import change_head
from .tombstones import SCHEMA as TOMBSTONES_SCHEMA

__all__ = ["Damaged", "open_connections", "open_immutable", "touch"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    cancelled INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC, seq DESC);
CREATE TABLE IF NOT EXISTS job_labels (
    job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    created_at REAL NOT NULL DEFAULT 0, seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, value, job_id)
);
CREATE TABLE IF NOT EXISTS executions (
    job_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, node_id)
);
CREATE INDEX IF NOT EXISTS executions_by_node_state ON executions (node_id, state);
CREATE TABLE IF NOT EXISTS allocations (
    job_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    by_node TEXT NOT NULL,
    body TEXT NOT NULL,
    chg INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS allocations_by_change ON allocations (chg);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL, node_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    stdout TEXT NOT NULL, stderr TEXT NOT NULL, PRIMARY KEY (job_id, node_id)
);
"""


_CHANGE_COLUMNS = """
CREATE INDEX IF NOT EXISTS jobs_by_change ON jobs (chg);
CREATE INDEX IF NOT EXISTS executions_by_change ON executions (chg);
"""


def _migrate(conn: sqlite3.Connection) -> int:
    """Add the change sequence (``chg``) to databases made before the mesh; returns its highest value."""
    for table in ("jobs", "executions"):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if "chg" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN chg INTEGER NOT NULL DEFAULT 0")
    conn.executescript(_CHANGE_COLUMNS)
    return change_head(conn)


def _migrate_labels(conn: sqlite3.Connection) -> None:
    """Give each label row its job's (created_at, seq), so a label filter walks one index newest first
    instead of checking every job (databases made before List had them lack the columns)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(job_labels)")}
    if "seq" not in columns:
        conn.execute("ALTER TABLE job_labels ADD COLUMN created_at REAL NOT NULL DEFAULT 0")
        conn.execute("ALTER TABLE job_labels ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        conn.execute(
            "UPDATE job_labels SET (created_at, seq) = "
            "(SELECT created_at, seq FROM jobs WHERE jobs.job_id = job_labels.job_id) "
            "WHERE job_id IN (SELECT job_id FROM jobs)"
        )
    conn.execute("CREATE INDEX IF NOT EXISTS job_labels_by_time ON job_labels (key, value, created_at DESC, seq DESC)")


def _connect(path: Path | str, *, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


def open_connections(path: Path | str, sync: str) -> tuple[sqlite3.Connection, sqlite3.Connection, int]:
    """The writer (schema made or migrated) and the reader of a sound store, and its change head."""
    writer = _connect(path, synchronous=sync)
    try:
        _check_sound(writer)
        writer.executescript(_SCHEMA + TOMBSTONES_SCHEMA)
        head = _migrate(writer)
        _migrate_labels(writer)
        reader = _connect(path, synchronous=sync)
    except BaseException:
        writer.close()
        raise
    return writer, reader, head


def open_immutable(path: Path | str) -> sqlite3.Connection:
    """A read-only connection that needs no -shm file and takes no lock (the file must not change meanwhile:
    this process is its only writer, and it writes nothing while on it)."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True, check_same_thread=False,
                           isolation_level=None)  # fmt: skip
    try:
        _check_sound(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class Damaged(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged."""


def _check_sound(conn: sqlite3.Connection) -> None:
    """Raise ``Damaged`` unless SQLite's quick check (every page readable, no index contents compared) is ok;
    a damaged page would otherwise fail a query later, after the node said it was ready."""
    found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        raise Damaged("; ".join(" ".join(line.split()) for line in found)[:300])


def touch(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', strftime('%Y-%m-%dT%H:%M:%f', 'now'))")
