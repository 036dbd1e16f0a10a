"""Peers' jobs that found the queue full: held in the store, not in tasks, and queued as slots free up.

A peer's job placed here cannot be refused (its origin has already answered the client), and one waiting
task per job would let a peer grow this node's memory without bound. So such a job is stored as pending, its
execution saying it waits for a slot (and announced, so every node's Status says so), and ONE task queues
the stored ones in arrival order, one free slot at a time. A restart finds them pending, as recovery does.
"""

from __future__ import annotations

import time
from typing import NoReturn

import trio

from .executions import Executions
from .jobqueue import JobQueue, WorkItem
from .model import Execution, Job
from .store import JobRecord, Store

WAITING_FOR_SLOT = "waiting for a free slot in the job queue"
PAGE = 100


class Backlog:
    """Holds what ``Executor.accept`` could not queue; ``run`` it in the executor's nursery.

    ``lock`` is held while a job moves from the store into the queue, so a Stop (which takes it too) either
    comes first, and the job is never queued, or after, and finds it tracked.
    """

    def __init__(self, *, node_id: str, store: Store, queue: JobQueue, executions: Executions) -> None:
        self._node_id = node_id
        self._store = store
        self._queue = queue
        self._executions = executions
        self.lock = trio.Lock()
        self._waiting = trio.Event()
        self.holding = False
        """True while stored jobs wait: a new peer job then waits behind them, first come, first served."""

    async def hold(self, job: Job) -> bool:
        """Store ``job`` pending for want of a slot, and wake the feeder. True if the job was new."""
        now = time.time()
        waiting = Execution(job_id=job.job_id, node_id=self._node_id, created_at=now, updated_at=now)
        waiting = waiting.advance(error=WAITING_FOR_SLOT)
        new = await self._store.add_job(job, waiting)
        if new:
            self.holding = True
            self._waiting.set()
            await self._executions.announce(waiting)
        return new

    async def run(self) -> NoReturn:
        """Queue the held jobs, oldest first, one free slot at a time."""
        while True:
            await self._waiting.wait()
            self._waiting = trio.Event()
            after = 0
            while True:
                async with self.lock:
                    found = await self._next(after)
                if found is None:
                    break
                await self._queue.reserve_wait()
                async with self.lock:  # look again: it may have been cancelled meanwhile
                    found = await self._next(after)
                    if found is None:
                        self._queue.release()
                        break
                    record, execution = found
                    after = record.seq
                    self._executions.track(record.job, execution)
                    self._queue.put_reserved(WorkItem(record.job, execution.attempt))
            if not self._waiting.is_set():
                self.holding = False

    async def _next(self, after: int) -> tuple[JobRecord, Execution] | None:
        """The oldest stored pending execution of ours after job seq ``after`` that nothing follows yet."""
        while True:
            page = await self._store.waiting(self._node_id, after_seq=after, limit=PAGE)
            for record, execution in page:
                if self._executions.get(record.job.job_id) is None:
                    return record, execution
            if len(page) < PAGE:
                return None
            after = page[-1][0].seq


__all__ = ["WAITING_FOR_SLOT", "Backlog"]
