"""The store's group commit: one writer task commits whatever has queued up in a single transaction, and a
syncer task makes the durable ones durable.

Durable writes are fsynced apart from their commit: every commit is made with ``synchronous=NORMAL`` (in the WAL,
surviving a crash of this process), and a syncer task then fdatasyncs the WAL for every durable write of that
commit and of the commits made meanwhile, while the writer goes on committing. So a relaxed write (a job a peer
sent) never waits behind a local Create's fsync, and a caller may act on a committed write before it is on disk
(``early``: Create publishes its job meanwhile). The WAL synced after the commit holds what a ``FULL`` commit
would have synced; SQLite syncs the WAL itself before a checkpoint copies it back and the database after.

A failed fsync fails the writes of its batch, and only those (each write waits for its own verdict). A known
limit: Linux may drop the dirty pages of a failed fsync, so the WAL can hold a hole before later frames; should
the machine then crash, SQLite's recovery stops at the hole, and later writes whose own fsync succeeded are lost
with it. The error is logged at ``error`` level, for the operator to look at the disk.

A base of ``Writes`` (``node/store_writes.py``, the statements that run in these commits), itself a mixin of
``Store`` (``node/store.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import trio

from .store_reads import Change
from .store_sql import FULL, result_code, storage_full

__all__ = ["INLINE_BATCH", "INLINE_RUN", "Commits", "Pending", "Quick"]

T = TypeVar("T")


_EARLY: contextvars.ContextVar[list[Pending] | None] = contextvars.ContextVar("store_early", default=None)
"""The durable writes of the current ``Store.early`` block that returned at their commit (None: not in one)."""
_SPANS: contextvars.ContextVar[list[tuple[int, int]] | None] = contextvars.ContextVar("store_spans", default=None)
"""Where ``Store.spans`` collects the change numbers of the writes made in its block (None: not collected)."""


class Pending:
    """One write waiting for its group commit (``Store`` opens the channel that carries them to the writer)."""

    __slots__ = ("committed", "done", "durable", "error", "fn", "quick", "result", "span")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], durable: bool = True) -> None:
        self.fn = fn
        self.durable = durable
        self.quick = isinstance(fn, Quick)
        """A write of a row or a few: may be committed on the trio thread (``Commits._inline``)."""
        self.committed = trio.Event()
        """Set once its commit ended (on disk or not); ``done`` once it is as durable as it asked."""
        self.done = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.span: tuple[int, int] | None = None
        """The change numbers this write handed out, first and last (none: it handed out none)."""

    async def on_disk(self) -> bool:
        """Wait until this write is as durable as it asked; False if it failed (its commit, or the fsync after it).

        The verdict is this write's own: an fsync that failed for a later commit says nothing of a write synced
        before it (``Commits.on_disk``)."""
        await self.done.wait()
        return self.error is None


class Quick(Generic[T]):
    """A write of a row or a few, which may be committed on the trio thread (``Commits._inline``)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[sqlite3.Connection], T]) -> None:
        self.fn = fn

    def __call__(self, conn: sqlite3.Connection) -> T:
        return self.fn(conn)


class Commits:
    """The group commit of ``Store``: the writer task's loop, the syncer, and the queue every statement goes
    through (``_write``)."""

    _writer: sqlite3.Connection
    _send: trio.MemorySendChannel[Pending]
    _recv: trio.MemoryReceiveChannel[Pending]
    commits: int
    """Commits made so far (each a batch of writes, whatever they wrote): a reader that keeps what it read may
    read again only once this moved (``Rescheduler``), and wait for it to (``committed_since``)."""
    _commit_came: trio.Event | None
    """Set by the next commit; made only while a task waits for one (``committed_since``), not for every commit."""
    _chg: int
    _fsync: bool
    _synchronous: str
    _bulk: int
    _bulk_on: bool
    full: str | None
    _readonly: bool
    _listeners: list[Callable[[list[Change]], None]]
    _log: list[tuple[int, str, str, Any]] | None
    _committed: list[Change]
    _path: Path | str
    _syncing: trio.MemorySendChannel[Pending] | None = None
    """Durable writes committed and waiting for the syncer (set by ``_write_loop``)."""
    _inline_run = 0
    """Commits made on the trio thread since the last one made on the writer thread."""
    _checkpoints_held: int | None = None
    """The writer's ``wal_autocheckpoint`` while commits on the trio thread hold it at 0 (None: not held)."""
    _thread_busy = False
    """The writer task is committing a batch on its thread: the connection is not free for a commit here."""
    _writing = 0
    """Writes begun (``_write``) and not yet returned to their callers. One is committed in its caller's task
    only when it is the only one: writes return in the order they were committed. Without that, a write sent to
    a writer already waiting on the channel (handed over directly, the buffer stays empty) was overtaken by one
    committed here meanwhile, and one committed earlier whose caller had not run yet returned after it: the
    executor published a job's CANCELLED before the RUNNING it had stored first."""

    async def _reopen(self) -> bool:
        """Leave the read-only mode of a store opened on a full disk (``Store``)."""
        raise NotImplementedError

    def _next_chg(self) -> int:
        self._chg += 1
        return self._chg

    def _changed(self, chg: int, kind: str, job_id: str, value: Any = None) -> None:
        if self._log is not None:
            self._log.append((chg, kind, job_id, value))

    # -- plumbing ---------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        """Commit what is queued, batch after batch; the syncer (started here) makes the durable ones durable."""
        send, recv = trio.open_memory_channel[Pending](math.inf)  # bounded by the writes queued (``_send``)
        self._syncing = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sync_loop, recv)
                await self._commit_loop(send)
        finally:
            self._syncing = None  # no commit in a caller's task once the writer is gone

    async def _commit_loop(self, syncing: trio.MemorySendChannel[Pending]) -> None:
        async for first in self._recv:
            batch = [first]
            while len(batch) < 1000:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            if self._inline(batch):
                self._inline_run += 1
                self._apply(batch, inline=True)
            else:
                self._inline_run = 0
                self._thread_busy = True
                try:
                    with trio.CancelScope(shield=True):  # a started commit finishes, even at shutdown
                        await trio.to_thread.run_sync(self._apply, batch)
                finally:
                    self._thread_busy = False
            self._finish(batch, syncing)

    def _finish(self, batch: list[Pending], syncing: trio.MemorySendChannel[Pending]) -> None:
        """After a batch's commit: tell the listeners, and each write that it is committed, and durable (a
        durable one once the syncer has synced it)."""
        self.commits += 1
        if self._commit_came is not None:
            self._commit_came.set()
            self._commit_came = None
        committed, self._committed = self._committed, []
        for listener in self._listeners if committed else ():
            try:
                listener(committed)
            except Exception:  # a listener's bug costs its events, never the writer
                logging.getLogger("cmnode.store").exception("a commit listener failed")
        for item in batch:
            item.committed.set()
            if item.durable and self._fsync and item.error is None:
                syncing.send_nowait(item)
            else:
                item.done.set()

    async def committed_since(self, commits: int) -> None:
        """Return once ``commits`` is above ``commits`` (at once if it is)."""
        while self.commits <= commits:
            if self._commit_came is None:
                self._commit_came = trio.Event()
            await self._commit_came.wait()

    def _commit_here(self, item: Pending) -> bool:
        """Commit ``item`` at once in the calling task, as the writer task would inline, if the writer is idle:
        no other write begun and not returned (``_writing``: it would overtake it), no batch on the writer thread
        (which holds the connection), and ``_inline`` allows it. False: it goes through the writer task's queue.

        Why: handing a write to the writer task and waiting for it took two trio scheduling rounds, each behind
        every other task ready in the node. A receiver's job waited there 0.4 ms at p50 and 6-8 ms at p90 on the
        loaded 2-core machine of ``benchmarks/overhead.py``, before its commit of 0.2 ms."""
        syncing = self._syncing
        if (
            syncing is None  # the writer task is not running (its syncer neither)
            or self._thread_busy
            or self._readonly
            or self._writing > 1  # another write has not returned: it may not be overtaken
            or not self._inline([item])
        ):
            return False
        self._inline_run += 1
        self._apply([item], inline=True)
        self._finish([item], syncing)
        return True

    async def _sync_loop(self, recv: trio.MemoryReceiveChannel[Pending]) -> None:
        """fdatasync the WAL for every durable write committed since the last one (one fsync for all)."""
        async for first in recv:
            batch = [first]
            while True:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            with trio.CancelScope(shield=True):  # as a commit: a started fsync finishes, even at shutdown
                try:
                    await trio.to_thread.run_sync(self._sync_file)
                except OSError as exc:  # e.g. EIO: what was committed may not be on disk; each write says so
                    logging.getLogger("cmnode.store").error("fsync of the job store failed: %s", exc)
                    for item in batch:
                        item.error = exc
            for item in batch:
                item.done.set()

    def _sync_file(self) -> None:
        """fdatasync the WAL, where every commit is until a checkpoint copies it back (the database file when
        there is no WAL: then SQLite synced it when it checkpointed). Opened each time: a reopened store
        (``_reopen``) may have a new WAL file."""
        path = str(self._path)
        for name in (path + "-wal", path):
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            return

    @staticmethod
    def on_disk() -> Callable[[], Awaitable[bool]] | None:
        """How to wait for the fsync of the last durable write made in the current ``early`` block, which returned
        at its commit (None: outside such a block, or none made in it; a write outside one returns on disk).

        For what must not act on that write before it is on disk: the executor starting the container of a job
        Create queued at its commit (``Executor.submit``). It asks about that one write: after a failed fsync,
        the writes synced before it stay good (they are on disk), and only those of the failed batch fail. A
        check of "every write so far" failed jobs queued and synced earlier, which Create had answered as
        stored, because a later, unrelated write's fsync failed."""
        written = _EARLY.get()
        return written[-1].on_disk if written else None

    def _inline(self, batch: list[Pending]) -> bool:
        """Whether to commit ``batch`` on the trio thread: a few quick writes (a job or an execution, from a peer
        or made here), outside a bulk block, and at most INLINE_RUN in a row.

        Why: such a commit takes 0.2-0.3 ms of the writer's time, but handing it to a worker thread and back cost
        4-5 ms at p50 on a loaded 2-core machine (two thread wake-ups, each waiting for a core), and that was
        the largest part of each receiver's time until it had a job (``benchmarks/overhead.py``); for a job
        created here, it came before the publish. What could block the trio thread is kept off it: no fsync
        (every commit is ``synchronous=NORMAL``; a durable write's fsync is the syncer's, on its own thread) and
        no checkpoint (``wal_autocheckpoint`` is 0 for these commits; the next commit on the writer thread, at
        the latest after INLINE_RUN of them, checkpoints as usual)."""
        return (
            self._bulk == 0
            and self._inline_run < INLINE_RUN
            and len(batch) <= INLINE_BATCH
            and all(item.quick for item in batch)
        )

    def _apply(self, batch: list[Pending], *, inline: bool = False) -> None:
        """One transaction for the batch; an item's own error undoes only that item. A failure of the
        transaction itself (a full disk) fails every item of it and leaves the connection ready for the next."""
        conn = self._writer
        self._log = [] if self._listeners else None
        try:
            # Every commit goes to the WAL without an fsync; the syncer syncs the WAL for the durable ones (and
            # with it every relaxed write before them).
            wanted = "NORMAL" if self._fsync else "OFF"
            if wanted != self._synchronous:
                conn.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
            if not inline and self._checkpoints_held is not None:  # back on the thread: checkpoints as before
                conn.execute(f"PRAGMA wal_autocheckpoint={self._checkpoints_held}")
                self._checkpoints_held = None
            if (self._bulk > 0) != self._bulk_on:
                self._bulk_on = self._bulk > 0
                for pragma in _BULK_PRAGMAS if self._bulk_on else _PLAIN_PRAGMAS:
                    conn.execute(pragma)
            if inline and self._checkpoints_held is None:  # never a checkpoint's fsyncs on the trio thread
                self._checkpoints_held = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
                conn.execute("PRAGMA wal_autocheckpoint=0")
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
                    if result_code(exc) == FULL or not conn.in_transaction:  # the whole transaction cannot go on
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
            if result_code(exc) == FULL:
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
            raise storage_full()
        item = Pending(fn, durable)
        await trio.lowlevel.checkpoint_if_cancelled()  # yields only when cancelled
        self._writing += 1
        try:
            result: T = await self._write_item(item, durable)
        finally:
            self._writing -= 1
        return result

    async def _write_item(self, item: Pending, durable: bool) -> Any:
        if not self._commit_here(item):
            await self._send.send(item)
        early = _EARLY.get() if durable else None
        waited = item.done if early is None else item.committed
        if not waited.is_set():  # waiting on a set event would still yield to every other ready task
            await waited.wait()
        if early is not None and item.error is None:
            early.append(item)
        if item.error is not None:
            if result_code(item.error) == FULL:
                raise storage_full() from item.error
            raise item.error
        spans = _SPANS.get()
        if spans is not None and item.span is not None:
            spans.append(item.span)
        return item.result

    @staticmethod
    @contextlib.asynccontextmanager
    async def early() -> AsyncIterator[None]:
        """Durable writes made in this block (by the current task and those it starts) return once committed,
        visible and surviving a crash of this process; leaving the block waits until they are on disk.

        What a caller does meanwhile overlaps the fsync: Create publishes its job (``node/core.py``).

        Raises:
            StorageFullError, OSError: on leaving, an fsync of those writes failed: they may be lost with the
            machine (they were committed; whatever the block did meanwhile stands).
        """
        written: list[Pending] = []
        token = _EARLY.set(written)
        try:
            yield
        finally:
            _EARLY.reset(token)
            for item in written:
                await item.done.wait()
        for item in written:
            if item.error is not None:
                if isinstance(item.error, OSError) and item.error.errno == errno.ENOSPC:
                    raise storage_full() from item.error
                raise item.error

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

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Writes many rows in this block (catch-up bringing thousands of jobs): the writer keeps more of the
        database in memory and checkpoints its WAL less often meanwhile (``_BULK_PRAGMAS`` says why). Neither
        changes what a commit guarantees."""
        self._bulk += 1
        try:
            yield
        finally:
            self._bulk -= 1

    async def transact(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in the writer's next group commit: for a module that keeps its SQL beside its own table
        of this store (node/purge.py); ``fn`` runs on the writer thread and must stay short."""
        return await self._write(fn, durable=durable)


def _with_status(conn: sqlite3.Connection, log: list[tuple[int, str, str, Any]]) -> list[Change]:
    """The batch's changes, each with its job's status after the commit (one read on the writer's connection)."""
    ids = list({job_id for _, kind, job_id, _ in log if kind != "allocation"})
    status: dict[str, str] = {}
    for at in range(0, len(ids), 500):
        chunk = ids[at : at + 500]
        marks = ",".join("?" * len(chunk))
        status.update(conn.execute(f"SELECT job_id, status FROM jobs WHERE job_id IN ({marks})", chunk).fetchall())
    return [Change(chg, kind, job_id, value, status.get(job_id)) for chg, kind, job_id, value in log]


INLINE_RUN = 50
"""Commits on the trio thread in a row at most (``Commits._inline``): then one on the writer thread, where SQLite
checkpoints the WAL if it grew past ``wal_autocheckpoint`` meanwhile (50 small commits: a few hundred pages)."""
INLINE_BATCH = 4
"""Quick writes a commit on the trio thread holds at most (each a row or a few)."""

_BULK_PRAGMAS = ("PRAGMA cache_size=-16000", "PRAGMA wal_autocheckpoint=8000")
"""The writer's settings in a ``bulk`` block. A page of catch-up inserts hundreds of random job IDs into each of
three keyed indexes (jobs, executions, labels), touching a page of each per row: with SQLite's default 2 MB cache
those are read back from the file each time, and with its default checkpoint every 1,000 WAL pages (4 MB) nearly
every commit copied its pages into the database and fsynced it. 16 MB of cache at most (taken only as pages are
read) and a checkpoint every 32 MB of WAL halved the writer's time in ``benchmarks/catchup.py``. Neither touches
durability: a commit is in the WAL, synced as its ``synchronous`` says, whenever the WAL is copied back."""
_PLAIN_PRAGMAS = ("PRAGMA cache_size=-2000", "PRAGMA wal_autocheckpoint=1000")
"""SQLite's defaults, back after a ``bulk`` block: the cache shrinks to them again."""
