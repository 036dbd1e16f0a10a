"""Job history retention (``--job-retention``): finished jobs older than the retention are purged from this node's
store, with everything kept about them (executions, allocation, labels, stored output, signed cancel), and this
node's containers of them removed. Each node decides by itself, from what it knows; a purged job leaves a
tombstone (``node/tombstones.py``) so catch-up and gossip never bring it back, and tombstones expire after
``tombstone_horizon(retention)``. (The containers' own retention, ``--retention``, is ``node/retention.py``.)

A job is finished, as this node sees it, when it has executions and every one is final, or it was cancelled and
none is still in progress (a cancelled job with no execution finished when it was cancelled), and no more copies
are wanted: a replicas job is finished only once cancelled or complete, since placement replaces failed copies.
It finished when its last execution did. A job with no execution anywhere yet (placement found no node) waits
for one and is kept.

Purging runs in ``run``, a task of the node's nursery, one pass every ``retention / 10`` (0.5 s to 60 s). A pass
walks the jobs created before the cutoff, oldest first, ``scan`` at a time on the read connection, and purges
the finished ones of each batch in one short write (each re-checked there, so a job that came back to life
meanwhile is kept), pausing between batches: the writer is never held for long and a large backlog of old
jobs drains at a few thousand a second at most.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import trio

from .duration import format_duration
from .errors import StorageFullError
from .model import State
from .replica import cancel_key
from .store import CHANGE_FLOOR, Store
from .tombstones import Tombstone, tombstone_horizon, tombstone_of

__all__ = ["JobPurge", "PurgeStats", "finished_at"]

log = logging.getLogger("cmnode.purge")

SCAN = 200
"""Jobs looked at per batch (one read), and at most purged per write."""
PAUSE = 0.05
"""Seconds between two batches of a pass."""
INTERVAL_MIN = 0.5
INTERVAL_MAX = 60.0

_JOB = "job_id, created_at, status, cancelled, json_extract(body, '$.spec.placement.mode'), seq"
"""The columns ``_finish_time`` needs of a job row."""

_ACTIVE = "('pending', 'pulling', 'running')"
"""Statuses of a job some execution of which is still in progress (or that has none yet): never finished."""

Cursor = tuple[float, int]
"""(created_at, seq) of the last job a batch looked at."""


def finished_at(
    *,
    executions: Iterable[tuple[State, float | None]],
    cancelled: bool,
    replicas: bool,
    status: str,
    created_at: float,
    cancelled_at: float | None = None,
) -> float | None:
    """When the job finished as this node sees it, or None while it has not (see the module's docstring).

    ``executions``: each known execution's state and when it ended (``finished_at``, else ``updated_at``)."""
    known = list(executions)
    if any(not state.final for state, _ in known):
        return None
    if replicas and not cancelled and status != State.COMPLETE.value:
        return None  # placement keeps replacing its copies until it is stopped
    if not known:
        return (cancelled_at if cancelled_at is not None else created_at) if cancelled else None
    return max((t for _, t in known if t is not None), default=created_at)


@dataclass
class PurgeStats:
    """Counters of the purge, for logs and metrics."""

    passes: int = 0
    purged: int = 0
    expired: int = 0
    containers: int = 0


class JobPurge:
    """Purges this node's finished jobs older than ``retention`` seconds (0: none, ``run`` must not be started).

    Args:
        clock: the wall clock executions are stamped with (a test compresses a month into milliseconds).
        remove: removes one of this node's containers (the executor's ``Retention.remove``); none: left alone.
        horizon: how long tombstones are kept (default ``tombstone_horizon(retention)``).
    """

    def __init__(
        self,
        *,
        store: Store,
        node_id: str,
        retention: float,
        clock: Callable[[], float] = time.time,
        remove: Callable[[str], Awaitable[None]] | None = None,
        horizon: float | None = None,
        scan: int = SCAN,
        pause: float = PAUSE,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.retention = retention
        self.horizon = horizon if horizon is not None else tombstone_horizon(retention)
        self.clock = clock
        self.remove = remove
        self.scan = scan
        self.pause = pause
        self.stats = PurgeStats()

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    @property
    def interval(self) -> float:
        return min(INTERVAL_MAX, max(INTERVAL_MIN, self.retention / 10))

    async def run(self) -> NoReturn:
        """A pass every ``interval`` seconds, forever; a failed pass is logged and the next one tries again."""
        assert self.enabled, "nothing to purge when every job is kept"
        while True:
            try:
                await self.sweep()
            except StorageFullError as exc:
                log.warning("job purge skipped: %s", exc.message)
            except Exception:  # a bug here must not stop the node; the next pass tries again
                log.exception("job purge failed; trying again in %gs", self.interval)
            await trio.sleep(self.interval)

    async def sweep(self) -> tuple[int, int]:
        """One pass: purge every finished job older than the retention, then expire old tombstones; returns
        (jobs purged, tombstones expired)."""
        self.stats.passes += 1
        cutoff = self.clock() - self.retention
        purged = 0
        cursor: Cursor | None = None
        while True:
            ids, cursor = await self.purge_batch(cutoff, cursor)
            purged += len(ids)
            if cursor is None:
                break
            await trio.sleep(self.pause)
        expired = 0
        while True:
            count = await self.expire_batch(self.clock() - self.horizon)
            expired += count
            if count < self.scan:
                break
            await trio.sleep(self.pause)
        if purged or expired:
            log.info("purged %d finished jobs older than --job-retention %s (%d tombstones expired)",
                     purged, format_duration(self.retention), expired)  # fmt: skip
        return purged, expired

    async def purge_batch(self, cutoff: float, after: Cursor | None) -> tuple[list[str], Cursor | None]:
        """Purge the jobs finished before ``cutoff`` among the next ``scan`` created before it (after ``after``),
        oldest first; returns their IDs and the cursor of the next batch (None: the pass is over)."""
        rows, finished = await self.store.query(lambda conn: self._candidates(conn, cutoff, after))
        cursor = (rows[-1][1], rows[-1][5]) if len(rows) == self.scan else None
        if not finished:
            return [], cursor
        now = self.clock()
        purged, containers = await self.store.transact(
            lambda conn: self._purge(conn, finished, cutoff, now), durable=False
        )  # fmt: skip
        self.stats.purged += len(purged)
        if self.remove is not None:
            for container_id in containers:
                await self.remove(container_id)
                self.stats.containers += 1
        return purged, cursor

    async def expire_batch(self, before: float) -> int:
        """Delete up to ``scan`` tombstones of jobs purged before ``before``, oldest first; returns how many."""

        def expired(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute("SELECT 1 FROM tombstones WHERE purged_at < ? LIMIT 1", (before,)).fetchone() is not None
            )

        if not await self.store.query(expired):
            return 0

        def delete(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM tombstones WHERE job_id IN "
                "(SELECT job_id FROM tombstones WHERE purged_at < ? ORDER BY purged_at LIMIT ?)",
                (before, self.scan),
            )
            return cur.rowcount

        count = await self.store.transact(delete, durable=False)
        self.stats.expired += count
        return count

    async def tombstone(self, job_id: str) -> Tombstone | None:
        """The tombstone of ``job_id`` if this node purged it (Status says so)."""
        return await self.store.query(lambda conn: tombstone_of(conn, job_id))

    # -- SQL (the tables are the store's: node/store.py, node/tombstones.py) ---------------------------

    def _candidates(self, conn: sqlite3.Connection, cutoff: float, after: Cursor | None) -> tuple[list[Any], list[str]]:
        # In progress by its status (refreshed with every execution written): not looked at any further.
        sql = f"SELECT {_JOB} FROM jobs WHERE created_at < ? AND (status NOT IN {_ACTIVE} OR cancelled = 1)"
        args: list[Any] = [cutoff]
        if after is not None:
            sql += " AND (created_at, seq) > (?, ?)"
            args += list(after)
        rows = conn.execute(sql + " ORDER BY created_at, seq LIMIT ?", [*args, self.scan]).fetchall()
        finished = []
        for row in rows:
            t = _finish_time(conn, row)
            if t is not None and t < cutoff:
                finished.append(row[0])
        return rows, finished

    def _purge(
        self, conn: sqlite3.Connection, job_ids: list[str], cutoff: float, now: float
    ) -> tuple[list[str], list[str]]:
        """Delete each job still finished before ``cutoff`` and all that is kept about it, leave its tombstone;
        returns the jobs purged and this node's containers of them."""
        purged: list[tuple[str, float]] = []
        containers: list[str] = []
        labels: list[tuple[str, str, str]] = []
        for job_id in job_ids:
            row = conn.execute(
                f"SELECT {_JOB}, json_extract(body, '$.spec.labels') FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            t = _finish_time(conn, row) if row is not None else None
            if t is None or t >= cutoff:
                continue  # gone, or back to life since it was read (a restart, a new allocation)
            purged.append((job_id, t))
            containers += _containers_of(conn, job_id, self.node_id)
            labels += [(k, v, job_id) for k, v in json.loads(row[6] or "{}").items()]
        if not purged:
            return [], []
        keys = [(job_id,) for job_id, _ in purged]
        conn.executemany("DELETE FROM job_labels WHERE key = ? AND value = ? AND job_id = ?", labels)
        for table in ("jobs", "executions", "allocations", "logs"):
            conn.executemany(f"DELETE FROM {table} WHERE job_id = ?", keys)
        conn.executemany("DELETE FROM meta WHERE key = ?", [(cancel_key(job_id),) for job_id, _ in purged])
        conn.executemany(
            "INSERT OR REPLACE INTO tombstones (job_id, purged_at, finished_at, retention, why) "
            "VALUES (?, ?, ?, ?, 'retention')",
            [(job_id, now, t, self.retention) for job_id, t in purged],
        )
        # The rows holding the highest change numbers may be among those deleted: remember the head.
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CHANGE_FLOOR, str(self.store.head)))
        return [job_id for job_id, _ in purged], containers


def _finish_time(conn: sqlite3.Connection, row: Any) -> float | None:
    job_id, created_at, status, cancelled, mode = row[:5]
    executions = [
        (State(state), ended or updated or None)
        for state, ended, updated in conn.execute(
            "SELECT state, json_extract(body, '$.finished_at'), json_extract(body, '$.updated_at') "
            "FROM executions WHERE job_id = ?",
            (job_id,),
        )
    ]
    cancelled_at = None
    if cancelled and not executions:
        found = conn.execute("SELECT value FROM meta WHERE key = ?", (cancel_key(job_id),)).fetchone()
        cancelled_at = float(json.loads(found[0])["at"]) if found else None
    return finished_at(
        executions=executions, cancelled=bool(cancelled), replicas=mode == "replicas", status=status,
        created_at=created_at, cancelled_at=cancelled_at,
    )  # fmt: skip


def _containers_of(conn: sqlite3.Connection, job_id: str, node_id: str) -> list[str]:
    """Every container this node made for the job: its execution's last attempt's and its history's."""
    row = conn.execute("SELECT body FROM executions WHERE job_id = ? AND node_id = ?", (job_id, node_id)).fetchone()
    if row is None:
        return []
    body = json.loads(row[0])
    found = [body.get("container_id"), *(h.get("container_id") for h in body.get("history") or ())]
    return list(dict.fromkeys(c for c in found if isinstance(c, str) and c))
