"""Merging what peers say into this node: the same for gossip and for catch-up.

Merging is idempotent and order-tolerant: jobs are keyed by ID, executions keep the highest version, a cancel
that arrives before its job is remembered until the job does. It knows the executor only as two callables
(admit a job to run here, cancel a job here), so the node hands them in and nothing reaches back.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from .model import Execution, Job
from .scheduler import runs_here
from .store import Store

__all__ = ["MAX_EARLY_CANCELS", "Replica"]

log = logging.getLogger("cmnode.sync")  # the name benchmarks/mesh.py reads "job from peer" lines under

MAX_EARLY_CANCELS = 10_000


class Replica:
    """Applies jobs, executions and cancels heard from peers to this node's store and executor."""

    def __init__(
        self,
        *,
        store: Store,
        node_id: str,
        run: Callable[[Job], Awaitable[bool]],
        cancel: Callable[[str], Awaitable[None]],
    ) -> None:
        """``run`` admits a job to run here (True if new); ``cancel`` stops and marks a known job here."""
        self.store = store
        self.node_id = node_id
        self._run = run
        self._cancel = cancel
        self._early_cancels: OrderedDict[str, None] = OrderedDict()

    async def on_job(self, job: Job, *, cancelled: bool = False) -> bool:
        """Record a verified job; run it here if placement says so and it is still active. True if new."""
        if job.job_id in self._early_cancels:
            del self._early_cancels[job.job_id]
            cancelled = True
        run = not cancelled and runs_here(job, self.node_id) and await self._still_active(job.job_id)
        if run:
            new = await self._run(job)  # a known job is left as it is
        else:  # only recorded: a peer can tell us again, so no fsync of its own (see Store.add_job)
            new = await self.store.add_job(job, durable=False)
        if cancelled:
            await self._cancel(job.job_id)
        if new:
            log.info("job from peer job_id=%s origin=%s run_here=%s", job.job_id, job.origin, run)
        return new

    async def _still_active(self, job_id: str) -> bool:
        """Not final everywhere: no execution known yet, or some execution still in progress."""
        executions = await self.store.executions_of(job_id)
        return not executions or any(not e.state.final for e in executions)

    async def on_executions(self, executions: list[Execution]) -> int:
        """Keep the newer versions of other nodes' executions (only this node writes its own)."""
        theirs = [e for e in executions if e.node_id != self.node_id]
        if not theirs:
            return 0
        return len(await self.store.put_executions(theirs, durable=False))

    async def on_cancel(self, job_id: str) -> None:
        if await self.store.get_job(job_id) is None:
            self._early_cancels[job_id] = None
            while len(self._early_cancels) > MAX_EARLY_CANCELS:
                self._early_cancels.popitem(last=False)
            return
        await self._cancel(job_id)
