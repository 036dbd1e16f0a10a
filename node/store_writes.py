"""The statements of the store's writes: jobs, executions, allocations, logs and meta, each run in a group commit
(``node/store_commit.py``).

A mixin of ``Store`` (``node/store.py``). Its size is one job: every statement that writes, since the batched ones
(a catch-up page is a thousand rows) and the change numbers and spans they hand out are read together.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable

from .allocation import Allocation
from .model import Execution, Job, State, derive_status
from .store_commit import INLINE_BATCH, Commits, Quick
from .tombstones import is_purged, refuse_purged

__all__ = ["Writes"]


class Writes(Commits):
    """The writes of ``Store``: every statement, each through the group commit (``Commits._write``)."""

    # -- writes -----------------------------------------------------------------------------------

    async def add_job(self, job: Job, execution: Execution | None = None, *, durable: bool = True) -> bool:
        """Record ``job`` (and this node's first execution of it) unless known; True if it was new.

        ``durable=False`` is for what peers told us and can tell us again (catch-up asks them from a watermark
        committed after them, so it is never ahead of what survived): no fsync of its own."""
        return await self._write(Quick(lambda conn: self._insert_job(conn, job, execution)), durable=durable)

    async def add_jobs(self, items: Iterable[tuple[Job, Execution | None]], *, durable: bool = True) -> int:
        """Record many jobs in one commit (catch-up, bulk loads); returns how many were new. ``durable`` as for
        ``add_job``."""
        batch = list(items)
        return await self._write(
            lambda conn: sum(self._insert_job(conn, job, e) for job, e in batch if not is_purged(conn, job.job_id)),
            durable=durable,
        )

    async def add_jobs_each(self, items: Iterable[tuple[Job, Execution | None]], *, durable: bool = True) -> list[bool]:
        """As ``add_jobs``, one flag per item: whether that job was new. What a caller that counts or logs each
        new job needs: another writer (gossip, a second catch-up round) may record some of them between that
        caller's read and this write (``Replica.on_jobs``)."""
        batch = list(items)
        return await self._write(lambda conn: self._insert_jobs(conn, batch), durable=durable)

    def _insert_jobs(self, conn: sqlite3.Connection, items: list[tuple[Job, Execution | None]]) -> list[bool]:
        """As ``_insert_job`` for each item (a purged job is not stored: False), in a few statements: a page of
        catch-up is a thousand jobs, and one statement per row, plus a status update per job, was most of the
        writer's time. Each new job is inserted with its status, read from the executions already stored."""
        ids = json.dumps([job.job_id for job, _ in items])
        skipped = {r[0] for r in conn.execute(_IN_IDS.format("job_id FROM tombstones"), (ids,))}
        skipped |= {r[0] for r in conn.execute(_IN_IDS.format("job_id FROM jobs"), (ids,))}
        fresh: dict[str, tuple[Job, Execution | None]] = {}
        for job, execution in items:
            if job.job_id not in skipped and job.job_id not in fresh:
                fresh[job.job_id] = (job, execution)
        if not fresh:
            return [False] * len(items)
        states: dict[str, dict[str, tuple[int, str]]] = {}
        for job_id, node_id, version, state in conn.execute(
            _IN_IDS.format("job_id, node_id, version, state FROM executions"), (json.dumps(list(fresh)),)
        ):
            states.setdefault(job_id, {})[node_id] = (version, state)
        rows = []
        for job_id, (job, execution) in fresh.items():
            held = states.setdefault(job_id, {})
            if execution is not None and execution.version > held.get(execution.node_id, (-1, ""))[0]:
                held[execution.node_id] = (execution.version, execution.state.value)
            status = _status_of(tuple(sorted(state for _, state in held.values())))
            rows.append((job_id, job.origin, job.created_at, status, json.dumps(job.to_json()), self._next_chg()))
        first = rows[0][-1]
        conn.executemany(
            "INSERT OR IGNORE INTO jobs (job_id, origin, created_at, status, body, chg) VALUES (?, ?, ?, ?, ?, ?)", rows
        )
        seqs = dict(conn.execute("SELECT job_id, seq FROM jobs WHERE chg BETWEEN ? AND ?", (first, rows[-1][-1])))
        labels = []
        for job_id, *_, chg in rows:
            job, _ = fresh[job_id]
            self._changed(chg, "job", job_id, job)
            labels += [(job_id, k, v, job.created_at, seqs[job_id]) for k, v in job.spec.labels.items()]
        conn.executemany(
            "INSERT OR IGNORE INTO job_labels (job_id, key, value, created_at, seq) VALUES (?, ?, ?, ?, ?)", labels
        )
        for _, execution in fresh.values():
            if execution is not None:  # a job made here, with its first execution: the status counted it
                self._put_execution(conn, execution)
        new = set(fresh)
        out = []
        for job, _ in items:
            out.append(job.job_id in new)
            new.discard(job.job_id)
        return out

    def _insert_job(self, conn: sqlite3.Connection, job: Job, execution: Execution | None) -> bool:
        """Insert one job (with this node's first execution of it, if given); False if it was known.

        A peer's job (no execution) is inserted with its status, read from the executions already stored (one
        may come before its job): as ``_insert_jobs`` does, not an insert and then an update, which rewrote the
        row and its status index entry on every node for every job gossiped (``benchmarks/overhead.py``)."""
        refuse_purged(conn, job.job_id)  # purged here: never stored again (node/tombstones.py)
        chg = self._next_chg()
        status = None if execution is not None else _stored_status(conn, job.job_id)
        cur = conn.execute(
            "INSERT OR IGNORE INTO jobs (job_id, origin, created_at, status, body, chg) VALUES (?, ?, ?, ?, ?, ?)",
            (job.job_id, job.origin, job.created_at, status or "pending", json.dumps(job.to_json()), chg),
        )
        if cur.rowcount == 0:
            return False
        self._changed(chg, "job", job.job_id, job)
        if job.spec.labels:
            conn.executemany(
                "INSERT OR IGNORE INTO job_labels (job_id, key, value, created_at, seq) VALUES (?, ?, ?, ?, ?)",
                [(job.job_id, k, v, job.created_at, cur.lastrowid) for k, v in job.spec.labels.items()],
            )
        if execution is not None:
            self._put_execution(conn, execution)
            _refresh_status(conn, job.job_id)
        return True

    def _put_execution(self, conn: sqlite3.Connection, execution: Execution) -> bool:
        chg = self._next_chg()
        applied = _put_execution(conn, execution, chg)
        if applied:
            self._changed(chg, "execution", execution.job_id, execution)
        return applied

    async def put_execution(self, execution: Execution) -> bool:
        """Keep ``execution`` if its version is newer than the stored one; True if it was applied."""

        def write(conn: sqlite3.Connection) -> bool:
            applied = self._put_execution(conn, execution)
            if applied:
                _refresh_status(conn, execution.job_id)
            return applied

        return await self._write(write)

    async def put_executions(self, executions: Iterable[Execution], *, durable: bool = True) -> list[Execution]:
        """Apply many executions in one commit; returns those that were newer than what was stored.
        ``durable=False`` as for ``add_job``: for other nodes' executions, which catch-up can bring again."""
        batch = list(executions)
        write = functools.partial(self._put_executions, batch=batch)
        return await self._write(Quick(write) if len(batch) <= INLINE_BATCH else write, durable=durable)

    def _put_executions(self, conn: sqlite3.Connection, batch: list[Execution]) -> list[Execution]:
        """As ``_put_execution`` for each and the jobs' statuses refreshed, in a few statements (a catch-up
        page holds a thousand executions)."""
        if len(batch) < 4:  # a few: one by one is as quick
            applied = [e for e in batch if self._put_execution(conn, e)]
            for job_id in {e.job_id for e in applied}:
                _refresh_status(conn, job_id)
            return applied
        ids = _ids_of(batch)
        purged = {r[0] for r in conn.execute(_IN_IDS.format("job_id FROM tombstones"), (ids,))}
        query = _IN_IDS.format("job_id, node_id, version FROM executions")
        stored = {(r[0], r[1]): r[2] for r in conn.execute(query, (ids,))}
        applied, rows = [], []
        for e in batch:  # only the newer versions are written (a repeat in the batch as it would be one by one)
            if e.job_id not in purged and e.version > stored.get((e.job_id, e.node_id), -1):
                stored[(e.job_id, e.node_id)] = e.version
                chg = self._next_chg()
                applied.append(e)
                rows.append((e.job_id, e.node_id, e.state.value, e.version, json.dumps(e.to_json()), chg))
                self._changed(chg, "execution", e.job_id, e)
        conn.executemany(
            "INSERT INTO executions (job_id, node_id, state, version, body, chg) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id, node_id) DO UPDATE SET state = excluded.state, version = excluded.version, "
            "body = excluded.body, chg = excluded.chg WHERE excluded.version > executions.version",
            rows,
        )
        if applied:
            states: dict[str, list[str]] = {}
            for job_id, state in conn.execute(
                "SELECT e.job_id, e.state FROM executions e WHERE e.job_id IN "
                "(SELECT job_id FROM jobs WHERE job_id IN (SELECT value FROM json_each(?)))",
                (_ids_of(applied),),
            ):
                states.setdefault(job_id, []).append(state)
            conn.executemany(
                "UPDATE jobs SET status = ?1 WHERE job_id = ?2 AND status != ?1",
                [(_status_of(tuple(sorted(found))), job_id) for job_id, found in states.items()],
            )
        return applied

    async def mark_cancelled(self, job_id: str, execution: Execution | None = None) -> bool:
        """Flag the job cancelled and keep ``execution`` (this node's, now CANCELLED) in the same transaction,
        so a Stop is one write and no crash falls between the two; True if the flag was not set already."""

        def write(conn: sqlite3.Connection) -> bool:
            chg = self._next_chg()
            cur = conn.execute(
                "UPDATE jobs SET cancelled = 1, chg = ? WHERE job_id = ? AND cancelled = 0", (chg, job_id)
            )
            if cur.rowcount > 0:
                self._changed(chg, "cancel", job_id)
            if execution is not None and self._put_execution(conn, execution):
                _refresh_status(conn, job_id)
            return cur.rowcount > 0

        return await self._write(write)

    async def put_allocation(self, allocation: Allocation, *, durable: bool = True) -> bool:
        """Keep ``allocation`` if it ranks above the stored one (version, then writer); True if it did. It may
        come before its job: the job, arriving later, finds it here."""
        a = allocation

        def write(conn: sqlite3.Connection) -> bool:
            if is_purged(conn, a.job_id):
                return False
            chg = self._next_chg()
            cur = conn.execute(
                "INSERT INTO allocations (job_id, version, by_node, body, chg) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id) DO UPDATE SET version = excluded.version, by_node = excluded.by_node, "
                "body = excluded.body, chg = excluded.chg "
                "WHERE (excluded.version, excluded.by_node) > (allocations.version, allocations.by_node)",
                (a.job_id, a.version, a.by, json.dumps(a.to_json()), chg),
            )
            if cur.rowcount > 0:
                self._changed(chg, "allocation", a.job_id, a)
            return cur.rowcount > 0

        return await self._write(write, durable=durable)

    async def put_logs(self, job_id: str, node_id: str, attempt: int, stdout: str, stderr: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if is_purged(conn, job_id):  # a container of a purged job swept late: its output goes with it
                return
            conn.execute(
                "INSERT OR REPLACE INTO logs (job_id, node_id, attempt, stdout, stderr) VALUES (?, ?, ?, ?, ?)",
                (job_id, node_id, attempt, stdout, stderr),
            )

        await self._write(write)

    async def set_meta(self, key: str, value: str, *, durable: bool = True) -> None:
        """``durable=False``: committed without an fsync of its own (see ``_write``), for a value that may be
        lost with the rows written before it but never survive them (a catch-up watermark, ``node/sync.py``)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        await self._write(write, durable=durable)


def _put_execution(conn: sqlite3.Connection, e: Execution, chg: int) -> bool:
    if is_purged(conn, e.job_id):  # an execution of a job purged here is dropped, as its job would be
        return False
    cur = conn.execute(
        "INSERT INTO executions (job_id, node_id, state, version, body, chg) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (job_id, node_id) DO UPDATE SET state = excluded.state, version = excluded.version, "
        "body = excluded.body, chg = excluded.chg WHERE excluded.version > executions.version",
        (e.job_id, e.node_id, e.state.value, e.version, json.dumps(e.to_json()), chg),
    )
    return cur.rowcount > 0


_IN_IDS = "SELECT {} WHERE job_id IN (SELECT value FROM json_each(?))"


def _ids_of(executions: list[Execution]) -> str:
    return json.dumps(sorted({e.job_id for e in executions}))


@functools.lru_cache(maxsize=256)
def _status_of(states: tuple[str, ...]) -> str:
    """A job's status from its executions' states (sorted): ``derive_status``, once per combination."""
    return derive_status(Execution(job_id="", node_id=str(i), state=State(s)) for i, s in enumerate(states))


def _stored_status(conn: sqlite3.Connection, job_id: str) -> str:
    """The status a job has by the executions stored for it."""
    # The status depends on the states only: read the column, not the bodies (parsing them was a third of the
    # cost of recording a job caught up from a peer).
    rows = conn.execute("SELECT state FROM executions WHERE job_id = ?", (job_id,)).fetchall()
    return _status_of(tuple(sorted(r[0] for r in rows)))


def _refresh_status(conn: sqlite3.Connection, job_id: str) -> None:
    conn.execute("UPDATE jobs SET status = ? WHERE job_id = ?", (_stored_status(conn, job_id), job_id))
