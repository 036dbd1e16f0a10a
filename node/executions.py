"""The single writer of this node's executions.

``Executions`` holds the latest version of each execution this node runs that is not final yet, and every
change to one goes through it: ``transition`` updates the in-memory version synchronously (no await between
reading and writing, so workers, the exit watcher and cancellation never race), then stores and announces the
new version. Only this node writes its executions, and in this node only this class does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from .errors import StorageFullError
from .model import Execution, Job, State
from .store import Store

log = logging.getLogger("cmnode.executor")

Publish = Callable[[Execution], Awaitable[None]]
UNSAVED_RETRY = 2.0
"""Seconds between attempts to store what a full disk refused."""


class Executions:
    """The active executions of this node and the one way to change them.

    Args:
        on_attempt_over: called synchronously, inside the change, when an attempt ends (it became final or
            was superseded by the next attempt): the executor cancels that attempt's timeout there.
    """

    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        publish: Publish | None,
        on_attempt_over: Callable[[str, int], None] = lambda job_id, attempt: None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.publish = publish
        self._on_attempt_over = on_attempt_over
        self._active: dict[str, Execution] = {}
        self._jobs: dict[str, Job] = {}
        self._unsaved: dict[str, Execution] = {}
        self._unsaved_waiting = trio.Event()

    # -- reading ----------------------------------------------------------------------------------

    def get(self, job_id: str) -> Execution | None:
        return self._active.get(job_id)

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def is_current(self, job_id: str, attempt: int) -> bool:
        """Whether (job_id, attempt) is being run here now."""
        current = self._active.get(job_id)
        return current is not None and current.attempt == attempt

    def running(self) -> list[Execution]:
        return [e for e in self._active.values() if e.state == State.RUNNING]

    def __len__(self) -> int:
        return len(self._active)

    # -- writing ----------------------------------------------------------------------------------

    def track(self, job: Job, execution: Execution) -> None:
        """Follow an execution already stored (a new job's first, or one recovered at start)."""
        self._jobs[job.job_id] = job
        self._active[job.job_id] = execution

    def _advance(self, current: Execution, **changes: Any) -> Execution:
        new = current.advance(**changes)
        if new.state.final or new.attempt != current.attempt:
            self._on_attempt_over(current.job_id, current.attempt)
        if new.state.final:
            del self._active[current.job_id]
            self._jobs.pop(current.job_id, None)
        else:
            self._active[current.job_id] = new
        return new

    async def transition(
        self, job_id: str, attempt: int, /, *, states: tuple[State, ...] | None = None, **changes: Any
    ) -> Execution | None:
        """Apply ``changes`` to the active execution if it is still at ``attempt`` (and in ``states``)."""
        current = self._active.get(job_id)
        if current is None or current.attempt != attempt or (states is not None and current.state not in states):
            return None
        new = self._advance(current, **changes)
        if await self._store(new):
            await self.announce(new)
        return new

    async def _store(self, execution: Execution) -> bool:
        """Store a new version; on a full disk keep it for ``keep_unsaved`` (announced once stored), so the
        attempt goes on in memory and no task dies of a failed write. True if stored now."""
        try:
            await self.store.put_execution(execution)
        except StorageFullError as exc:
            if not self._unsaved:
                log.warning("cannot store executions (%s): kept in memory, stored when there is room", exc.message)
            self._unsaved[execution.job_id] = execution
            self._unsaved_waiting.set()
            return False
        self._unsaved.pop(execution.job_id, None)
        return True

    async def keep_unsaved(self, *, interval: float = UNSAVED_RETRY) -> NoReturn:
        """Store (then announce) the versions a full disk refused, every ``interval`` until it has room."""
        while True:
            await self._unsaved_waiting.wait()
            while self._unsaved:
                await trio.sleep(interval)
                pending = list(self._unsaved.values())
                try:
                    await self.store.put_executions(pending)
                except StorageFullError:
                    continue
                for execution in pending:
                    if self._unsaved.get(execution.job_id) is execution:
                        del self._unsaved[execution.job_id]
                    await self.announce(execution)
                log.info("stored %d execution(s) kept in memory while the disk was full", len(pending))
            self._unsaved_waiting = trio.Event()

    async def cancel(self, job_id: str, *, untracked: Execution | None = None) -> Execution | None:
        """Flag the job cancelled and end this node's execution of it, in ONE store write.

        ``untracked`` is this node's stored execution when it is not followed in memory (a peer's job still
        waiting for a queue slot). Returns the CANCELLED execution, or None if there was nothing to end.
        """
        current = self._active.get(job_id)
        new: Execution | None = None
        if current is not None:
            new = self._advance(current, state=State.CANCELLED, error="cancelled by request")
        elif untracked is not None and not untracked.state.final:
            new = untracked.advance(state=State.CANCELLED, error="cancelled by request")
        await self.store.mark_cancelled(job_id, new)
        if new is not None:
            await self.announce(new)
        return new

    async def announce(self, execution: Execution) -> None:
        """Log a stored version and tell the mesh."""
        # exit_code and error only when there is one: a "running" line with exit_code=None error=None is noise.
        known = (("exit_code", execution.exit_code), ("error", execution.error))
        outcome = "".join(f" {key}={value}" for key, value in known if value is not None)
        log.info(
            "execution job_id=%s node_id=%s state=%s attempt=%d%s",
            execution.job_id, self.node_id, execution.state.value, execution.attempt, outcome,
        )  # fmt: skip
        if self.publish is not None:
            await self.publish(execution)


__all__ = ["Executions", "Publish"]
