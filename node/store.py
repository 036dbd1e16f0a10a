"""The node's SQLite store: jobs, executions and allocations, the single source of truth on this node.

Writes go through one writer task that commits whatever has queued up in a single transaction (group
commit), so ``Create`` can wait for a durable write without paying one fsync per job under load. SQLite
runs in worker threads (``trio.to_thread``), never on the trio thread; reads use their own connection,
which WAL mode lets run beside the writer.

A full disk fails the writes of that commit with ``StorageFullError`` and nothing else: the writer task and
the reads carry on, and the next commit that fits clears it (``full`` says why writes fail meanwhile). A file
that is not a sound database stops the open with ``StoreDamagedError`` (checked with ``PRAGMA quick_check``).

Its size (~870 lines) is more than one job: every SQL statement of the node next to the schema it queries,
plus the full-disk mode (open read-only, probe, reopen) and the allocation and purge statements added since.
The full-disk mode is the first seam along which to split it, the per-table statements the next.
Rows are built with ``from_valid``: they were checked by the model's schemas on their way in.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import trio

from .allocation import Allocation
from .errors import ConfigError, StorageFullError, StoreDamagedError
from .model import Execution, Job, State, derive_status
from .tombstones import SCHEMA as TOMBSTONES_SCHEMA
from .tombstones import is_purged, refuse_purged

T = TypeVar("T")

_FULL = 13  # SQLITE_FULL: "database or disk is full" (the disk, or PRAGMA max_page_count)
_IOERR = 10  # SQLITE_IOERR: what opening gives when WAL's -shm file cannot be made on a full disk
_DAMAGED = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB

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
    return _head(conn)


CHANGE_FLOOR = "chg.floor"
"""The head when rows were last deleted (node/purge.py): change numbers are never handed out twice, even when
the rows that held the highest ones are gone, or a peer's watermark past them would skip the new ones."""

_HEAD = (
    "SELECT MAX(m) FROM (SELECT MAX(chg) AS m FROM jobs UNION ALL SELECT MAX(chg) FROM executions "
    "UNION ALL SELECT MAX(chg) FROM allocations "
    f"UNION ALL SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{CHANGE_FLOOR}')"
)


def _head(conn: sqlite3.Connection) -> int:
    row = conn.execute(_HEAD)
    return int(row.fetchone()[0] or 0)


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


_SPANS: contextvars.ContextVar[list[tuple[int, int]] | None] = contextvars.ContextVar("store_spans", default=None)
"""Where ``Store.spans`` collects the change numbers of the writes made in its block (None: not collected)."""


class _Pending:
    """One write waiting for its group commit."""

    __slots__ = ("done", "durable", "error", "fn", "result", "span")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], durable: bool = True) -> None:
        self.fn = fn
        self.durable = durable
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.span: tuple[int, int] | None = None
        """The change numbers this write handed out, first and last (none: it handed out none)."""


def _connect(path: Path | str, *, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    return conn


class Store:
    """Jobs and executions on disk. Open with ``async with Store.open(path) as store``."""

    def __init__(self, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._read_lock = trio.CapacityLimiter(1)
        self._send, self._recv = trio.open_memory_channel[_Pending](10_000)
        self.commits = 0
        # The local change sequence: every job or execution row written gets the next number, so a peer can
        # ask "what changed after N" (catch-up). Only the writer thread advances it.
        self._chg = 0
        self._fsync = True  # whether commits that must be durable fsync (False only for benchmarks)
        self._synchronous = "FULL"
        self.full: str | None = None
        self._path: Path | str = ""
        self._sync = "FULL"
        self._readonly = False
        """Opened on a full disk: one immutable read-only connection until ``_reopen`` finds room."""
        self._reopen_lock = trio.Lock()
        """Why writes fail while the disk is full (None once a commit fits again); ``/healthz`` shows it."""
        self._listeners: list[Callable[[list[Change]], None]] = []
        self._log: list[tuple[int, str, str, Any]] | None = None
        """The changes of the batch being applied (writer thread), kept only while someone ``watch``es."""
        self._committed: list[Change] = []

    def _next_chg(self) -> int:
        self._chg += 1
        return self._chg

    def watch(self, listener: Callable[[list[Change]], None]) -> None:
        """Hand every commit's changes, in change order, to ``listener``: called on the trio thread right after
        the commit, before its writers return; it must not block (node/events.py appends to a ring)."""
        self._listeners.append(listener)

    def _changed(self, chg: int, kind: str, job_id: str, value: Any = None) -> None:
        if self._log is not None:
            self._log.append((chg, kind, job_id, value))

    @property
    def head(self) -> int:
        """The highest change sequence number handed out so far."""
        return self._chg

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path | str, *, durable: bool = True) -> AsyncIterator[Store]:
        """Open (creating) the database and run its writer task until the block exits.

        ``path`` may be ``":memory:"``-like (``file:name?mode=memory&cache=shared``) for benchmarks;
        ``durable=False`` relaxes fsync (benchmarks only).

        A disk already full does not stop it: the store opens for reads and ``full`` says why writes fail.

        Raises:
            StoreDamagedError: the file is not a sound SQLite database (the message says what to do).
            ConfigError: the file cannot be opened (a path or permission problem).
        """
        sync = "FULL" if durable else "OFF"
        readonly: str | None = None  # why the store is opened read-only
        try:
            writer, reader, head = await trio.to_thread.run_sync(_open_connections, path, sync)
        except sqlite3.Error as exc:
            if isinstance(exc, _Damaged) or _code(exc) in _DAMAGED:
                raise StoreDamagedError(
                    f"the job store {path} is damaged ({exc}): move it aside to start with an empty store "
                    "(peers send their jobs again), or put back a copy from a backup"
                ) from exc
            if _code(exc) not in (_IOERR, _FULL):
                raise ConfigError(f"invalid data-dir: cannot open database {path}: {exc}") from exc
            # A full disk after a clean stop: WAL's index file (-shm) cannot be made. The file itself is whole
            # (the stop checkpointed it), so it is read as it is until a write finds room again (``_reopen``).
            try:
                writer = reader = await trio.to_thread.run_sync(_open_immutable, path)
                head = _head(reader)
            except sqlite3.Error:
                raise ConfigError(f"invalid data-dir: cannot open database {path}: {exc}") from exc
            readonly = str(exc)
        store = cls(writer, reader)
        store._chg = head
        store._fsync = durable
        store._path, store._sync, store._readonly = path, sync, readonly is not None
        if readonly is not None:
            store.full = f"storage full: cannot open {path} for writing ({readonly}); reads only until there is room"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store._write_loop)
                await store.probe()  # a disk full already: ``full`` says so from the start
                try:
                    yield store
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            store._writer.close()
            store._reader.close()

    async def _reopen(self) -> bool:
        """Leave the read-only mode of a store opened on a full disk, if the disk has room now."""
        async with self._reopen_lock:
            if not self._readonly:
                return True
            try:
                writer, reader, head = await trio.to_thread.run_sync(_open_connections, self._path, self._sync)
            except sqlite3.Error:
                return False
            async with self._read_lock:  # no read holds the old connection meanwhile
                old = self._reader
                self._writer, self._reader, self._chg, self._readonly = writer, reader, head, False
                old.close()
            self.full = None
            return True

    # -- plumbing ---------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        async for first in self._recv:
            batch = [first]
            while len(batch) < 1000:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.CancelScope(shield=True):  # a started commit finishes, even at shutdown
                await trio.to_thread.run_sync(self._apply, batch)
            self.commits += 1
            committed, self._committed = self._committed, []
            for listener in self._listeners if committed else ():
                try:
                    listener(committed)
                except Exception:  # a listener's bug costs its events, never the writer
                    logging.getLogger("cmnode.store").exception("a commit listener failed")
            for item in batch:
                item.done.set()

    def _apply(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; an item's own error undoes only that item. A failure of the
        transaction itself (a full disk) fails every item of it and leaves the connection ready for the next."""
        conn = self._writer
        self._log = [] if self._listeners else None
        try:
            # A batch of relaxed writes only commits to the WAL; the next durable commit fsyncs them with it.
            wanted = ("FULL" if any(item.durable for item in batch) else "NORMAL") if self._fsync else "OFF"
            if wanted != self._synchronous:
                conn.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                conn.execute("SAVEPOINT item")
                mark = len(self._log) if self._log is not None else 0
                first = self._chg
                try:
                    item.result = item.fn(conn)
                    conn.execute("RELEASE item")
                    item.span = (first + 1, self._chg) if self._chg > first else None
                except Exception as exc:
                    if _code(exc) == _FULL or not conn.in_transaction:  # the whole transaction cannot go on
                        raise
                    conn.execute("ROLLBACK TO item")
                    conn.execute("RELEASE item")
                    item.error = exc
                    if self._log is not None:
                        del self._log[mark:]
            conn.execute("COMMIT")
            if self._log:
                self._committed = _with_status(conn, self._log)
        except BaseException as exc:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL does)
                with contextlib.suppress(sqlite3.Error):  # nothing more to undo; the next BEGIN starts clean
                    conn.execute("ROLLBACK")
            for item in batch:
                item.error = exc
            if _code(exc) == _FULL:
                self.full = f"storage full: {exc} (writes fail until space is freed; reads work)"
            if not isinstance(exc, Exception):
                raise
        else:
            self.full = None

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` inside the next group commit and return once it is on disk (``durable``) or committed
        (visible to readers, surviving a crash of this process but not of the machine).

        Raises:
            StorageFullError: the disk is full; nothing of this write was kept.
        """
        if self._readonly and not await self._reopen():
            raise _full_error()
        item = _Pending(fn, durable)
        await self._send.send(item)
        await item.done.wait()
        if item.error is not None:
            if _code(item.error) == _FULL:
                raise _full_error() from item.error
            raise item.error
        spans = _SPANS.get()
        if spans is not None and item.span is not None:
            spans.append(item.span)
        result: T = item.result
        return result

    @staticmethod
    @contextlib.contextmanager
    def spans(into: list[tuple[int, int]] | None) -> Iterator[None]:
        """Collect into ``into`` the change numbers (first, last) handed out by each write that the current task
        (and the tasks it starts) makes in this block; ``None`` stops collecting. Every row changed by such a
        write carries a number in its span until it changes again, so catch-up knows which rows hold exactly
        what one peer sent (``node/sync.py``: not sent back to it)."""
        token = _SPANS.set(into)
        try:
            yield
        finally:
            _SPANS.reset(token)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # The connection is looked up under the limiter: ``_reopen`` may swap it.
        return await trio.to_thread.run_sync(lambda: fn(self._reader), limiter=self._read_lock)

    async def transact(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in the writer's next group commit: for a module that keeps its SQL beside its own table
        of this store (node/purge.py); ``fn`` runs on the writer thread and must stay short."""
        return await self._write(fn, durable=durable)

    async def query(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the read connection, as ``transact`` does on the writer's."""
        return await self._read(fn)

    # -- writes -----------------------------------------------------------------------------------

    async def add_job(self, job: Job, execution: Execution | None = None, *, durable: bool = True) -> bool:
        """Record ``job`` (and this node's first execution of it) unless known; True if it was new.

        ``durable=False`` is for what peers told us and can tell us again (catch-up asks them from a watermark
        that is itself written durably, so it is never ahead of what survived): no fsync of its own."""
        return await self._write(lambda conn: self._insert_job(conn, job, execution), durable=durable)

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
        refuse_purged(conn, job.job_id)  # purged here: never stored again (node/tombstones.py)
        chg = self._next_chg()
        cur = conn.execute(
            "INSERT OR IGNORE INTO jobs (job_id, origin, created_at, body, chg) VALUES (?, ?, ?, ?, ?)",
            (job.job_id, job.origin, job.created_at, json.dumps(job.to_json()), chg),
        )
        if cur.rowcount == 0:
            return False
        self._changed(chg, "job", job.job_id, job)
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
        return await self._write(lambda conn: self._put_executions(conn, batch), durable=durable)

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

    async def set_meta(self, key: str, value: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        await self._write(write)

    # -- reads ------------------------------------------------------------------------------------

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
                head = conn.execute(_HEAD).fetchone()[0]
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

    async def probe(self) -> bool:
        """Write a little (no fsync) to learn whether the disk has room; updates ``full``. True if it had."""
        if self._readonly:
            return await self._reopen()
        try:
            await self._write(_touch, durable=False)
        except StorageFullError:
            return False
        return True

    async def ping(self) -> None:
        """Raises sqlite3.Error when the database cannot be read."""
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())


def _open_connections(path: Path | str, sync: str) -> tuple[sqlite3.Connection, sqlite3.Connection, int]:
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


def _open_immutable(path: Path | str) -> sqlite3.Connection:
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


def _full_error() -> StorageFullError:
    return StorageFullError(
        "storage full: the disk holding the job store has no room; nothing was written "
        "(reads still work; retry once space is freed)"
    )


class _Damaged(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found the file damaged."""


def _check_sound(conn: sqlite3.Connection) -> None:
    """Raise ``_Damaged`` unless SQLite's quick check (every page readable, no index contents compared) is ok;
    a damaged page would otherwise fail a query later, after the node said it was ready."""
    found = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
    if found != ["ok"]:
        raise _Damaged("; ".join(" ".join(line.split()) for line in found)[:300])


def _code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc``; None when it is not an SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return code & 0xFF if isinstance(code, int) else None


def _touch(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', strftime('%Y-%m-%dT%H:%M:%f', 'now'))")


def _with_status(conn: sqlite3.Connection, log: list[tuple[int, str, str, Any]]) -> list[Change]:
    """The batch's changes, each with its job's status after the commit (one read on the writer's connection)."""
    ids = list({job_id for _, kind, job_id, _ in log if kind != "allocation"})
    status: dict[str, str] = {}
    for at in range(0, len(ids), 500):
        chunk = ids[at : at + 500]
        marks = ",".join("?" * len(chunk))
        status.update(conn.execute(f"SELECT job_id, status FROM jobs WHERE job_id IN ({marks})", chunk).fetchall())
    return [Change(chg, kind, job_id, value, status.get(job_id)) for chg, kind, job_id, value in log]


def _record(row: tuple[str, str, int, int]) -> JobRecord:
    return JobRecord(job=Job.from_valid(json.loads(row[0])), status=row[1], cancelled=bool(row[2]), seq=row[3])


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


def _refresh_status(conn: sqlite3.Connection, job_id: str) -> None:
    # The status depends on the states only: read the column, not the bodies (parsing them was a third of the
    # cost of recording a job caught up from a peer).
    rows = conn.execute("SELECT node_id, state FROM executions WHERE job_id = ?", (job_id,)).fetchall()
    status = derive_status(Execution(job_id=job_id, node_id=r[0], state=State(r[1])) for r in rows)
    conn.execute("UPDATE jobs SET status = ? WHERE job_id = ?", (status, job_id))
