"""The bounded job queue: a trio memory channel of ``--queue-size`` feeding the workers.

A slot is reserved *before* a job is written to the store, so that a full queue refuses ``Create``
without recording the job, and an accepted job always finds room in the channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from .errors import QueueFullError
from .model import Job


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One attempt of one job, for a worker to run."""

    job: Job
    attempt: int
    on_disk: Callable[[], Awaitable[bool]] | None = None
    """Waits for the fsync of the job's write, when Create queued it at its commit (``Store.on_disk``); False:
    that fsync failed, so the attempt must not start. None: the job was on disk when queued."""


class JobQueue:
    """``size`` slots; a slot is held from ``reserve`` until a worker ``get``s the item."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = trio.Semaphore(size)
        self._send, self._recv = trio.open_memory_channel[WorkItem](size)

    @property
    def depth(self) -> int:
        """Jobs reserved or waiting for a worker."""
        return self.size - self._slots.value

    def reserve(self) -> None:
        """Take a slot now or refuse.

        Raises:
            QueueFullError: no slot is free; nothing was recorded.
        """
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            raise QueueFullError("job queue is full", data={"queue_size": self.size}) from None

    async def reserve_wait(self) -> None:
        """Wait until a slot is free and take it (for jobs already recorded, which must not be refused)."""
        await self._slots.acquire()

    def release(self) -> None:
        """Give back a slot reserved for a job that was not put after all."""
        self._slots.release()

    def put_reserved(self, item: WorkItem) -> None:
        """Put an item whose slot was reserved; never blocks."""
        self._send.send_nowait(item)

    async def put(self, item: WorkItem) -> None:
        """Wait for a slot, then put: for jobs already accepted (retries, recovery)."""
        await self._slots.acquire()
        self._send.send_nowait(item)

    async def get(self) -> WorkItem:
        item = await self._recv.receive()
        self._slots.release()
        return item


__all__ = ["JobQueue", "WorkItem"]
