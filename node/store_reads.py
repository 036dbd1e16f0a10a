"""The store's reads, table by table: each one SQL query (or one snapshot of a few) on the read connection.

A mixin of ``Store`` (``node/store.py``), with the records its reads return. Rows are built with
``from_valid``: they were checked by the model's schemas on their way in.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from .allocation import Allocation
from .model import Execution, Job
from .store_sql import HEAD

__all__ = ["Change", "Changes", "JobRecord", "Reads"]

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Changes:
    """What changed on this node after a change sequence number: the answer to a peer's catch-up request.

    ``upto`` is the sequence number the requester may remember as seen; ``more`` says another page follows;
    ``head`` is the highest number in the store (lower than what a peer remembers: this store was replaced)."""

    jobs: list[tuple[Job, bool]]
    executions: list[Execution]
    upto: int
    head: int
    more: bool
    allocations: list[Allocation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Change:
    """One record changed, at change number ``chg``: what ``watch`` listeners get for each commit and
    ``changes_in_order`` reads back (node/events.py turns them into the ``/events`` stream).

    ``kind`` is ``job`` (recorded), ``cancel`` (its flag set; ``value`` is None), ``execution`` or
    ``allocation``; ``status`` is the job's status after the commit (jobs, cancels and executions)."""

    chg: int
    kind: str
    job_id: str
    value: Job | Execution | Allocation | None
    status: str | None = None


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    job: Job
    status: str
    cancelled: bool
    seq: int


class Reads:
    """The reads of ``Store``: on the read connection, one worker thread at a time, beside the writer (WAL)."""

    _reader: sqlite3.Connection
    _read_lock: trio.CapacityLimiter

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # The connection is looked up under the limiter: ``_reopen`` may swap it.
        return await trio.to_thread.run_sync(lambda: fn(self._reader), limiter=self._read_lock)

    async def query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the read connection, as ``transact`` does on the writer's."""
        return await self._read(fn)

    async def get_job(self, job_id: str) -> JobRecord | None:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            row = conn.execute("SELECT body, status, cancelled, seq FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return _record(row) if row else None

        return await self._read(read)

    async def job_ids_with_prefix(self, prefix: str, *, limit: int = 6) -> list[str]:
        """Up to ``limit`` job IDs starting with ``prefix``, in order (a range scan of the key): what a short ID
        the CLI shows names."""

        def read(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? ORDER BY job_id LIMIT ?",
                (prefix, prefix + "\U0010ffff", limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._read(read)

    async def get_job_with_executions(self, job_id: str) -> tuple[JobRecord, list[Execution]] | None:
        """The job and every execution of it that this node knows, in one read."""

        def read(conn: sqlite3.Connection) -> tuple[JobRecord, list[Execution]] | None:
            row = conn.execute("SELECT body, status, cancelled, seq FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            rows = conn.execute("SELECT body FROM executions WHERE job_id = ? ORDER BY node_id", (job_id,)).fetchall()
            return _record(row), [Execution.from_valid(json.loads(r[0])) for r in rows]

        return await self._read(read)

    async def get_allocation(self, job_id: str) -> Allocation | None:
        def read(conn: sqlite3.Connection) -> Allocation | None:
            row = conn.execute("SELECT body FROM allocations WHERE job_id = ?", (job_id,)).fetchone()
            return Allocation.from_valid(json.loads(row[0])) if row else None

        return await self._read(read)

    async def active_allocations(self) -> list[tuple[Job, Allocation, list[Execution]]]:
        """Every allocation of a job not cancelled nor complete, with the job and all its executions known here:
        what placement counts as allocated and what rescheduling looks after. One read."""

        def read(conn: sqlite3.Connection) -> list[tuple[Job, Allocation, list[Execution]]]:
            rows = conn.execute(
                "SELECT j.body, a.body FROM allocations a JOIN jobs j USING (job_id) "
                "WHERE j.cancelled = 0 AND j.status != 'complete' ORDER BY j.seq"
            ).fetchall()
            executions: dict[str, list[Execution]] = {}
            for (body,) in conn.execute(
                # CROSS JOIN fixes the order: from the allocations, never a scan of every execution stored
                "SELECT e.body FROM allocations a CROSS JOIN jobs j ON j.job_id = a.job_id "
                "CROSS JOIN executions e ON e.job_id = a.job_id WHERE j.cancelled = 0 AND j.status != 'complete'"
            ):
                execution = Execution.from_valid(json.loads(body))
                executions.setdefault(execution.job_id, []).append(execution)
            out = []
            for job_body, allocation_body in rows:
                job = Job.from_valid(json.loads(job_body))
                out.append((job, Allocation.from_valid(json.loads(allocation_body)), executions.get(job.job_id, [])))
            return out

        return await self._read(read)

    async def executions_of(self, job_id: str) -> list[Execution]:
        def read(conn: sqlite3.Connection) -> list[Execution]:
            rows = conn.execute("SELECT body FROM executions WHERE job_id = ?", (job_id,)).fetchall()
            return [Execution.from_valid(json.loads(r[0])) for r in rows]

        return await self._read(read)

    async def unfinished(self, node_id: str) -> list[tuple[JobRecord, Execution]]:
        """This node's executions not final yet, each with its job, oldest job first: what recovery picks up."""

        def read(conn: sqlite3.Connection) -> list[tuple[JobRecord, Execution]]:
            rows = conn.execute(
                "SELECT j.body, j.status, j.cancelled, j.seq, e.body FROM executions e JOIN jobs j USING (job_id) "
                "WHERE e.node_id = ? AND e.state IN ('pending', 'pulling', 'running') ORDER BY j.created_at, j.seq",
                (node_id,),
            ).fetchall()
            return [(_record(r[:4]), Execution.from_valid(json.loads(r[4]))) for r in rows]

        return await self._read(read)

    async def waiting(self, node_id: str, *, after_seq: int, limit: int) -> list[tuple[JobRecord, Execution]]:
        """This node's pending executions of jobs after ``after_seq``, in arrival order: where the executor
        looks for peers' jobs that found the queue full (``Executor.accept``)."""

        def read(conn: sqlite3.Connection) -> list[tuple[JobRecord, Execution]]:
            rows = conn.execute(
                "SELECT j.body, j.status, j.cancelled, j.seq, e.body FROM executions e JOIN jobs j USING (job_id) "
                "WHERE e.node_id = ? AND e.state = 'pending' AND j.seq > ? ORDER BY j.seq LIMIT ?",
                (node_id, after_seq, limit),
            ).fetchall()
            return [(_record(r[:4]), Execution.from_valid(json.loads(r[4]))) for r in rows]

        return await self._read(read)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        labels: dict[str, str] | None = None,
        limit: int = 100,
        before: tuple[float, int] | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first; ``before`` is the (created_at, seq) cursor of the last job already seen.

        Every query walks one index in order and stops after ``limit`` matches: the time index, the status
        index, or (with labels) the first label's index, the other conditions checked on the way."""

        def read(conn: sqlite3.Connection) -> list[JobRecord]:
            pairs = list((labels or {}).items())
            where: list[str] = []
            args: list[Any] = []
            if pairs:
                key, value = pairs.pop(0)
                sql = "SELECT j.body, j.status, j.cancelled, j.seq FROM job_labels o JOIN jobs j ON j.seq = o.seq"
                order = ("o.created_at", "o.seq")
                where.append("o.key = ? AND o.value = ?")
                args += [key, value]
            else:
                sql = "SELECT j.body, j.status, j.cancelled, j.seq FROM jobs j"
                order = ("j.created_at", "j.seq")
            if status is not None:
                where.append("j.status = ?")
                args.append(status)
            for key, value in pairs:
                where.append(
                    "EXISTS (SELECT 1 FROM job_labels l WHERE l.key = ? AND l.value = ? AND l.job_id = j.job_id)"
                )
                args += [key, value]
            if before is not None:
                where.append(f"({order[0]}, {order[1]}) < (?, ?)")
                args += [before[0], before[1]]
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY {order[0]} DESC, {order[1]} DESC LIMIT ?"
            args.append(limit)
            return [_record(r) for r in conn.execute(sql, args).fetchall()]

        return await self._read(read)

    async def get_logs(self, job_id: str, node_id: str) -> tuple[int, str, str] | None:
        def read(conn: sqlite3.Connection) -> tuple[int, str, str] | None:
            row = conn.execute(
                "SELECT attempt, stdout, stderr FROM logs WHERE job_id = ? AND node_id = ?", (job_id, node_id)
            ).fetchone()
            return (row[0], row[1], row[2]) if row else None

        return await self._read(read)

    async def get_meta(self, key: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        return await self._read(read)

    async def changes_since(self, since: int, *, limit: int = 500) -> Changes:
        """Jobs (with their cancelled flag) and executions written after change ``since``, oldest first, at
        most ``limit`` of each; page on with ``since=result.upto`` while ``result.more``."""

        def read(conn: sqlite3.Connection) -> Changes:
            conn.execute("BEGIN")  # one snapshot for both tables, or a commit between them could be skipped
            try:
                jobs = conn.execute(
                    "SELECT body, cancelled, chg FROM jobs WHERE chg > ? ORDER BY chg LIMIT ?", (since, limit)
                ).fetchall()
                execs = conn.execute(
                    "SELECT body, chg FROM executions WHERE chg > ? ORDER BY chg LIMIT ?", (since, limit)
                ).fetchall()
                allocs = conn.execute(
                    "SELECT body, chg FROM allocations WHERE chg > ? ORDER BY chg LIMIT ?", (since, limit)
                ).fetchall()
                head = conn.execute(HEAD).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            # A full page may hide later rows of its kind: stop both lists at the lower of the full pages' ends.
            # Commits become visible in change order, so the highest number seen is a safe watermark.
            ends = [rows[-1][-1] for rows in (jobs, execs, allocs) if len(rows) == limit]
            upto = min(ends) if ends else max([since, *(r[-1] for r in (*jobs, *execs, *allocs))])
            return Changes(
                jobs=[(Job.from_valid(json.loads(r[0])), bool(r[1])) for r in jobs if r[2] <= upto],
                executions=[Execution.from_valid(json.loads(r[0])) for r in execs if r[1] <= upto],
                allocations=[Allocation.from_valid(json.loads(r[0])) for r in allocs if r[1] <= upto],
                upto=upto,
                head=int(head or 0),
                more=bool(ends),
            )

        return await self._read(read)

    async def changes_in_order(self, since: int, *, limit: int = 500) -> tuple[list[Change], int]:
        """The job, execution and allocation rows changed after ``since``, as ``Change``s in change order, at
        most ``limit`` of each kind, and the change number read up to (page on from it; ``since`` itself when
        nothing changed). Each row shows its state now, once, at its last change: a job cancelled since shows
        as its ``job`` then its ``cancel``, at the cancel's number."""

        def read(conn: sqlite3.Connection) -> tuple[list[Change], int]:
            conn.execute("BEGIN")  # one snapshot of the three tables
            try:
                jobs = conn.execute(
                    "SELECT chg, body, cancelled, status FROM jobs WHERE chg > ? ORDER BY chg LIMIT ?", (since, limit)
                ).fetchall()
                execs = conn.execute(
                    "SELECT e.chg, e.body, j.status FROM executions e LEFT JOIN jobs j USING (job_id) "
                    "WHERE e.chg > ? ORDER BY e.chg LIMIT ?",
                    (since, limit),
                ).fetchall()
                allocs = conn.execute(
                    "SELECT chg, body FROM allocations WHERE chg > ? ORDER BY chg LIMIT ?", (since, limit)
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            ends = [rows[-1][0] for rows in (jobs, execs, allocs) if len(rows) == limit]
            upto = min(ends) if ends else max([since, *(r[0] for r in (*jobs, *execs, *allocs))])
            out: list[Change] = []
            for chg, body, cancelled, status in jobs:
                if chg <= upto:
                    job = Job.from_valid(json.loads(body))
                    out.append(Change(chg, "job", job.job_id, job, status))
                    if cancelled:
                        out.append(Change(chg, "cancel", job.job_id, None, status))
            for chg, body, status in execs:
                if chg <= upto:
                    e = Execution.from_valid(json.loads(body))
                    out.append(Change(chg, "execution", e.job_id, e, status))
            for chg, body in allocs:
                if chg <= upto:
                    a = Allocation.from_valid(json.loads(body))
                    out.append(Change(chg, "allocation", a.job_id, a))
            out.sort(key=lambda c: c.chg)  # stable: a job before its cancel
            return out, upto

        return await self._read(read)

    async def count_by_status(self) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

        return await self._read(read)


def _record(row: tuple[str, str, int, int]) -> JobRecord:
    return JobRecord(job=Job.from_valid(json.loads(row[0])), status=row[1], cancelled=bool(row[2]), seq=row[3])
