"""This node's copies of replicas jobs: started when an allocation places one here, released when a newer one
moves it elsewhere (``node/allocation.py``; the allocation's arrival in ``node/replica.py``, every round of
``node/rescheduler.py``).

Apart from the executor because it is a different question: the executor runs an attempt once it is queued,
whoever queued it; this decides, from the store, whether this node's copy of a job should be queued or stopped
now. It reaches the life of an attempt only through the queue, the single writer of executions and the
executor's two hooks (abandon a start in progress, remove a container), so neither depends on the other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from .backlog import WAITING_FOR_SLOT
from .errors import QueueFullError
from .executions import Executions
from .jobqueue import JobQueue, WorkItem
from .model import Execution, Job, State
from .policy import Policy
from .store import Store

__all__ = ["Copies"]

Spawn = Callable[..., None]
"""Start a task in the executor's nursery: a copy waiting for a slot lives as long as the executor."""


class Copies:
    """``place`` and ``release`` this node's copy of a job; made by the ``Executor``, which lends its parts."""

    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        queue: JobQueue,
        executions: Executions,
        policy: Policy,
        lock: trio.Lock,
        spawn: Spawn,
        abandon_start: Callable[[str], None],
        remove: Callable[[str, int, str], Awaitable[Any]],
    ) -> None:
        """``lock`` is the backlog's: held, the backlog cannot queue the job meanwhile. ``abandon_start`` cancels
        a worker's start of the job in progress; ``remove`` stops and removes a container, its output kept."""
        self._node_id = node_id
        self._store = store
        self._queue = queue
        self._executions = executions
        self._policy = policy
        self._lock = lock
        self._spawn = spawn
        self._abandon_start = abandon_start
        self._remove = remove
        self._placing: set[str] = set()

    async def place(self, job: Job) -> bool:
        """Run here a job already recorded, which a newer allocation placed here (``node/allocation.py``).

        Nothing happens while this node runs it already, or if its copy here ended otherwise than ``released``
        (the reviser never places a job back where it failed). The queue is never waited for: a full one holds
        the job until a slot frees up. True if an execution was started."""
        if self._executions.get(job.job_id) is not None or job.job_id in self._placing:
            return False
        self._placing.add(job.job_id)  # the allocation's arrival and the rescheduler's round may both ask
        try:
            return await self._place(job)
        finally:
            self._placing.discard(job.job_id)

    async def _place(self, job: Job) -> bool:
        mine = await self._mine(job.job_id)
        if mine is None:
            now = time.time()
            new = Execution(job_id=job.job_id, node_id=self._node_id, created_at=now, updated_at=now)
        elif mine.state == State.RELEASED:  # placed back: a new run, a newer version of the same row
            new = mine.advance(
                state=State.PENDING, attempt=1, history=(), container_id=None, exit_code=None, error=None,
                started_at=None, finished_at=None, created_at=time.time(),
            )  # fmt: skip
        else:
            return False
        refusal = self._policy.refusal(job.spec)
        if refusal is not None:
            new = new.advance(state=State.REJECTED, error=str(refusal))
            await self._store.put_execution(new)
            await self._executions.announce(new)
            return False
        try:
            self._queue.reserve()
        except QueueFullError:
            new = replace(new, error=WAITING_FOR_SLOT)
            await self._store.put_execution(new)
            await self._executions.announce(new)
            self._spawn(self._place_when_free, job, new)
            return True
        try:
            await self._store.put_execution(new)
        except BaseException:
            self._queue.release()
            raise
        self._executions.track(job, new)
        await self._executions.announce(new)
        self._queue.put_reserved(WorkItem(job, new.attempt))
        return True

    async def _place_when_free(self, job: Job, waiting: Execution) -> None:
        """Queue a placed job once a slot frees up, unless it was released or cancelled meanwhile."""
        await self._queue.reserve_wait()
        async with self._lock:
            mine = await self._mine(job.job_id)
            if mine is None or mine.version != waiting.version or self._executions.get(job.job_id) is not None:
                self._queue.release()
                return
            self._executions.track(job, waiting)
            self._queue.put_reserved(WorkItem(job, waiting.attempt))

    async def release(self, job_id: str) -> None:
        """Stop this node's copy of a job that a newer allocation moved elsewhere: its execution becomes
        ``released`` (final, counted nowhere) and its container is stopped and removed, its output kept."""
        self._abandon_start(job_id)
        async with self._lock:  # the backlog cannot queue the job meanwhile
            current = self._executions.get(job_id)
            reason = "released: a newer allocation placed this copy on another node"
            if current is not None:
                await self._executions.transition(job_id, current.attempt, state=State.RELEASED, error=reason)
            else:
                mine = await self._mine(job_id)
                if mine is None or mine.state.final:
                    return
                released = mine.advance(state=State.RELEASED, error=reason)
                await self._store.put_execution(released)
                await self._executions.announce(released)
        self._abandon_start(job_id)
        if current is not None and current.container_id is not None:
            self._spawn(self._remove, job_id, current.attempt, current.container_id)

    async def _mine(self, job_id: str) -> Execution | None:
        """This node's stored execution of the job, if any."""
        return next((e for e in await self._store.executions_of(job_id) if e.node_id == self._node_id), None)
