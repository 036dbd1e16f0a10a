"""Recovery: never run an attempt twice when it may already have a container.

At start, this node's unfinished executions are picked up; a pending or pulling attempt may have a container
all the same (a crash between starting it and recording so, or a start cut short by the daemon going away).
Such attempts are "unverified": before a worker starts one, it is looked up in ONE shared listing of our
containers, and adopted if it ran, or its never-started container removed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from .errors import RuntimeFailureError
from .executions import Executions
from .jobqueue import WorkItem
from .model import Execution, Job, State
from .runtime import ContainerInfo, Runtime
from .store import JobRecord

log = logging.getLogger("cmnode.executor")

Key = tuple[str, int]


class Recovery:
    """The unverified attempts and the listing they are checked against.

    Args:
        on_adopted: called with a job and its execution once it follows an adopted container (the timeout).
    """

    def __init__(
        self, *, runtime: Runtime, executions: Executions, on_adopted: Callable[[Job, Execution], None]
    ) -> None:
        self._runtime = runtime
        self._executions = executions
        self._on_adopted = on_adopted
        self._unverified: set[Key] = set()
        self._listing: dict[Key, ContainerInfo] | None = None
        self._lock = trio.Lock()

    def unverified(self, job_id: str, attempt: int) -> bool:
        return (job_id, attempt) in self._unverified

    def suspect(self, job_id: str, attempt: int) -> None:
        """This attempt may have a container we did not record: look before starting it (the listing taken
        before is stale now)."""
        self._unverified.add((job_id, attempt))
        self._listing = None

    async def recover(self, unfinished: list[tuple[JobRecord, Execution]]) -> list[WorkItem]:
        """Adopt or re-queue what was unfinished (already tracked by the executor); returns what to queue.

        Running attempts are left to the exit watcher (the executor's reconcile marks those whose container is
        gone). Without the daemon, the check for the others waits for the worker, which makes it before
        starting anything."""
        with contextlib.suppress(RuntimeFailureError):
            await self._refresh()
        requeue: list[WorkItem] = []
        for record, execution in unfinished:
            if execution.state == State.RUNNING:
                continue
            self._unverified.add((record.job.job_id, execution.attempt))
            if self._listing is None or not await self.adopt_existing(record.job, execution.attempt):
                requeue.append(WorkItem(record.job, execution.attempt))
        return requeue

    async def _refresh(self) -> None:
        """List our containers once for every attempt waiting to be checked. Raises RuntimeFailureError."""
        async with self._lock:
            if self._listing is None:
                self._listing = {(c.job_id, c.attempt): c for c in await self._runtime.list_managed()}

    async def adopt_existing(self, job: Job, attempt: int) -> bool:
        """True if this unverified attempt turned out to have a started container, now followed as running.

        A container that was created but never started has not run: it is removed, and the attempt starts
        afresh. Raises RuntimeFailureError when the daemon cannot list containers.
        """
        key = (job.job_id, attempt)
        if key not in self._unverified:
            return False
        await self._refresh()
        assert self._listing is not None
        found = self._listing.pop(key, None)
        self._unverified.discard(key)
        if not self._unverified:
            self._listing = None
        if found is None:
            return False
        if found.status == "created":
            log.info("removing never-started container job_id=%s attempt=%d", job.job_id, attempt)
            await self._runtime.remove(found.container_id)
            return False
        log.info("adopting container job_id=%s attempt=%d status=%s", job.job_id, attempt, found.status)
        adopted = await self._executions.transition(
            job.job_id, attempt, states=(State.PENDING, State.PULLING), state=State.RUNNING,
            container_id=found.container_id, error=None,
        )  # fmt: skip
        if adopted is not None:
            self._on_adopted(job, adopted)
        return True

    def forget(self, job_id: str, attempt: int) -> None:
        """The attempt is over without a worker looking (cancelled while queued): drop what was kept for it."""
        self._unverified.discard((job_id, attempt))
        if not self._unverified:
            self._listing = None


__all__ = ["Recovery"]
