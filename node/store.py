"""The node's SQLite store: jobs, executions and allocations, the single source of truth on this node.

Writes go through one writer task that commits whatever has queued up in a single transaction (group
commit), and a syncer that fsyncs the WAL for the durable ones meanwhile, so ``Create`` can wait for a durable
write without paying one fsync per job under load. SQLite runs in worker threads (``trio.to_thread``), but
for a quick relaxed commit of a row or a few, which never fsyncs nor checkpoints (``store_commit.py``); reads
use their own connection, which WAL mode lets run beside the writer.

A full disk fails the writes of that commit with ``StorageFullError`` and nothing else: the writer task and
the reads carry on, and the next commit that fits clears it (``full`` says why writes fail meanwhile). A file
that is not a sound database stops the open with ``StoreDamagedError`` (checked with ``PRAGMA quick_check``).

This module opens the store and holds its modes (full disk: open read-only, probe, reopen); the rest is in
``store_file.py`` (schema, migrations, opening the file), ``store_commit.py`` (the group commit and its fsyncs),
``store_writes.py`` (every write statement) and ``store_reads.py`` (the reads, table by table).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from .errors import ConfigError, StorageFullError, StoreDamagedError
from .store_commit import Pending
from .store_file import Damaged, open_connections, open_immutable, touch
from .store_reads import Change, Changes, JobRecord, Reads
from .store_sql import CHANGE_FLOOR, DAMAGED, FULL, IOERR, change_head, result_code
from .store_writes import Writes

__all__ = ["CHANGE_FLOOR", "Change", "Changes", "JobRecord", "Store"]


class Store(Writes, Reads):
    """Jobs and executions on disk. Open with ``async with Store.open(path) as store``."""

    def __init__(self, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._read_lock = trio.CapacityLimiter(1)
        self._send, self._recv = trio.open_memory_channel[Pending](10_000)
        self.commits = 0
        self._commit_came = None
        # The local change sequence: every job or execution row written gets the next number, so a peer can
        # ask "what changed after N" (catch-up). Only the writer thread advances it.
        self._chg = 0
        self._fsync = True  # whether commits that must be durable fsync (False only for benchmarks)
        self._synchronous = "FULL"
        self._bulk = 0
        """Callers in a ``bulk`` block now; the writer's settings follow it at its next commit."""
        self._bulk_on = False
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

    def watch(self, listener: Callable[[list[Change]], None]) -> None:
        """Hand every commit's changes, in change order, to ``listener``: called on the trio thread right after
        the commit, before its writers return; it must not block (node/events.py appends to a ring)."""
        self._listeners.append(listener)

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
            writer, reader, head = await trio.to_thread.run_sync(open_connections, path, sync)
        except sqlite3.Error as exc:
            if isinstance(exc, Damaged) or result_code(exc) in DAMAGED:
                raise StoreDamagedError(
                    f"the job store {path} is damaged ({exc}): move it aside to start with an empty store "
                    "(peers send their jobs again), or put back a copy from a backup"
                ) from exc
            if result_code(exc) not in (IOERR, FULL):
                raise ConfigError(f"invalid data-dir: cannot open database {path}: {exc}") from exc
            # A full disk after a clean stop: WAL's index file (-shm) cannot be made. The file itself is whole
            # (the stop checkpointed it), so it is read as it is until a write finds room again (``_reopen``).
            try:
                writer = reader = await trio.to_thread.run_sync(open_immutable, path)
                head = change_head(reader)
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
                writer, reader, head = await trio.to_thread.run_sync(open_connections, self._path, self._sync)
            except sqlite3.Error:
                return False
            async with self._read_lock:  # no read holds the old connection meanwhile
                old = self._reader
                self._writer, self._reader, self._chg, self._readonly = writer, reader, head, False
                old.close()
            self.full = None
            return True

    async def probe(self) -> bool:
        """Write a little (no fsync) to learn whether the disk has room; updates ``full``. True if it had."""
        if self._readonly:
            return await self._reopen()
        try:
            await self._write(touch, durable=False)
        except StorageFullError:
            return False
        return True

    async def ping(self) -> None:
        """Raises sqlite3.Error when the database cannot be read."""
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
