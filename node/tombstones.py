"""What purging a job's history leaves behind: a tombstone per purged job (its ID, when it was purged, when it had
finished, the ``--job-retention`` in force, why), so that no peer and no gossip replay ever brings the job back.

The table lives in the node's store, which refuses, inside the write itself, a job that has a tombstone
(``JobPurged``) and drops executions, allocations and output of one (``is_purged``): checked in the same
transaction as the insert, a purge racing a peer's copy of the job cannot lose. ``node/purge.py`` writes the
tombstones and expires them after a horizon (``tombstone_horizon``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from .duration import format_duration

__all__ = ["HORIZON_MIN", "SCHEMA", "JobPurged", "Tombstone", "is_purged", "refuse_purged", "tombstone_horizon",
           "tombstone_of"]  # fmt: skip

SCHEMA = """
CREATE TABLE IF NOT EXISTS tombstones (
    job_id TEXT PRIMARY KEY,
    purged_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    retention REAL NOT NULL,
    why TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_by_time ON tombstones (purged_at);
"""

HORIZON_MIN = 30 * 86400.0
"""Tombstones are kept at least this long (and at least 4x the retention): longer than any peer is expected to
stay away holding the job, or to keep it after its own retention; a job a peer sends after that is stored again
and, being finished long ago, purged again by the next pass (it never runs: its executions are final)."""


def tombstone_horizon(retention: float) -> float:
    """How long the tombstone of a job purged under ``retention`` is kept."""
    return max(4 * retention, HORIZON_MIN)


@dataclass(frozen=True, kw_only=True)
class Tombstone:
    job_id: str
    purged_at: float
    finished_at: float
    retention: float
    why: str = "retention"

    @property
    def reason(self) -> str:
        """What ``Status`` says of the job: ``purged on 2025-01-08 10:00:00 UTC after --job-retention 7d``."""
        when = datetime.fromtimestamp(self.purged_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"purged on {when} after --job-retention {format_duration(self.retention)}"


class JobPurged(Exception):
    """A job this node purged was offered again (a peer still holding it, an old gossip replay): not stored."""

    def __init__(self, tombstone: Tombstone) -> None:
        super().__init__(f"job {tombstone.job_id} was {tombstone.reason}")
        self.tombstone = tombstone


def tombstone_of(conn: sqlite3.Connection, job_id: str) -> Tombstone | None:
    row = conn.execute(
        "SELECT purged_at, finished_at, retention, why FROM tombstones WHERE job_id = ?", (job_id,)
    ).fetchone()
    if row is None:
        return None
    return Tombstone(job_id=job_id, purged_at=row[0], finished_at=row[1], retention=row[2], why=row[3])


def is_purged(conn: sqlite3.Connection, job_id: str) -> bool:
    return conn.execute("SELECT 1 FROM tombstones WHERE job_id = ?", (job_id,)).fetchone() is not None


def refuse_purged(conn: sqlite3.Connection, job_id: str) -> None:
    """Raises JobPurged when ``job_id`` has a tombstone."""
    tombstone = tombstone_of(conn, job_id)
    if tombstone is not None:
        raise JobPurged(tombstone)
