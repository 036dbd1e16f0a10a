"""Rescheduling without a leader: every node looks after the replicas jobs it knows, every heartbeat.

Each round, for every active allocation this node holds:

* it reconciles its own copy: the allocation names this node and it runs no copy, so it starts one; it no
  longer names this node and a copy runs here, so it releases it (a node back from the dead or from a
  partition stops the copies it no longer holds, once it has heard the newer allocation);
* if this node is the job's reviser (the first ready node in the job's rendezvous ranking, ``scheduler.py``)
  and a holder is down longer than ``reschedule_after``, draining, or its copy ended failed, lost or rejected,
  or the allocation is short and room appeared, it writes the next version (``scheduler.revise``).

The store is read again only after a commit (``Store.commits``): a round with nothing new reuses what the last
one read, and with nothing allocated the next round waits for a commit rather than the next tick (an idle node
read its store every 2 s for nothing). Replicas jobs' allocations only change by a commit; the views of nodes,
which change by themselves (``down_for``), are read every round while something is allocated.

Two nodes with briefly different views may both revise: the greater (version, writer) wins everywhere, and the
loser's choice is released where it started. docs/scheduling.md has the argument for why this converges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

from .allocation import Allocation
from .model import Execution, Job, State
from .noderecord import Allocated
from .nodeview import NodeState, NodesView
from .scheduler import Load, loads_of, move, revise, reviser
from .store import Store

__all__ = ["Rescheduler"]

log = logging.getLogger("cmnode.scheduler")


class Rescheduler:
    """Run ``run`` in a nursery the node's lifetime owns; ``round`` is one pass (tests call it directly)."""

    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        nodes: NodesView,
        write: Callable[[Allocation], Awaitable[object]],
        place: Callable[[Job], Awaitable[bool]],
        release: Callable[[str], Awaitable[None]],
        interval: float = 2.0,
        reschedule_after: float = 10.0,
    ) -> None:
        """``write`` signs, keeps, applies and publishes a new allocation version (``Node``); ``place`` and
        ``release`` start and stop this node's copy (the executor)."""
        self.node_id = node_id
        self.store = store
        self.nodes = nodes
        self._write = write
        self._place = place
        self._release = release
        self.interval = interval
        self.reschedule_after = reschedule_after
        self.revisions = 0
        self.reads = 0
        """Store reads the rounds made (a round with no commit since the last makes none)."""
        self._here = Load()
        self._active: list[tuple[Job, Allocation, list[Execution]]] = []
        self._read_at: int | None = None
        """``store.commits`` before the last read (None: never read)."""

    async def run(self) -> NoReturn:
        while True:
            await trio.sleep(self.pause())
            if self._read_at is not None and not self._active:  # nothing allocated: only a commit changes that
                await self.store.committed_since(self._read_at)
            try:
                await self.round()
            except Exception as exc:  # a bad round costs this round, never the node
                log.warning("rescheduling round failed: %r", exc, exc_info=exc)

    def pause(self) -> float:
        """Seconds until the next round: ``interval``, or less when a down node reaches ``reschedule_after``
        sooner, so its replicas move then rather than up to a round later. A death is now told at once by a lost
        notice (``node/lost.py``) and ``down_for`` counts from it, no longer from a record up to a heartbeat
        before the death; without this the wait for the round would have made a kill -9 to replicas elsewhere
        about a second slower on average."""
        pause = self.interval
        for info in self.nodes.nodes() if self._active or self._read_at is None else ():  # none: no job to move
            if info.state is NodeState.DOWN and info.down_for < self.reschedule_after:
                pause = min(pause, self.reschedule_after - info.down_for + 0.01)
        return pause

    async def round(self) -> int:
        """One pass over the active allocations; returns how many new versions this node wrote."""
        commits = self.store.commits  # before the read: a commit during it makes the next round read again
        if commits != self._read_at:
            self._active = await self.store.active_allocations()
            self._read_at = commits
            self.reads += 1
        active = self._active
        if not active:
            self._here = Load()
            return 0
        nodes = self.nodes.nodes()
        loads = loads_of((job.spec, allocation.nodes) for job, allocation, _ in active)
        written = 0
        for job, allocation, executions in active:
            try:
                await self._reconcile(job, allocation, executions)
                if reviser(job.job_id, nodes) != self.node_id:
                    continue
                states = {e.node_id: e.state for e in executions}
                choice = revise(job, allocation, nodes, loads, states, reschedule_after=self.reschedule_after)
                if choice is None:
                    continue
                revised = Allocation(
                    job_id=job.job_id, version=allocation.version + 1, replicas=allocation.replicas,
                    nodes=choice.nodes, by=self.node_id, at=time.time(), note=choice.note,
                )  # fmt: skip
                log.info(
                    "allocation revised job_id=%s version=%d nodes=%s (was %s)%s",
                    job.job_id, revised.version, ",".join(revised.nodes), ",".join(allocation.nodes),
                    f": {choice.note}" if choice.note else "",
                )  # fmt: skip
                move(loads, job.spec, allocation.nodes, revised.nodes)
                await self._write(revised)
                written += 1
            except Exception as exc:  # one job's failure must not cost the others their turn
                log.warning("cannot reschedule job %s: %r", job.job_id, exc)
        self.revisions += written
        self._here = loads.get(self.node_id, Load())
        return written

    def allocated(self) -> Allocated:
        """What the allocations known at the last round give this node (its node record's ``allocated``)."""
        here = self._here
        return Allocated(cpus=here.cpus, memory=here.memory, jobs=here.count)

    async def _reconcile(self, job: Job, allocation: Allocation, executions: list[Execution]) -> None:
        """Start or release this node's copy as the allocation this node holds says."""
        mine = next((e for e in executions if e.node_id == self.node_id), None)
        if self.node_id in allocation.nodes:
            if mine is None or mine.state == State.RELEASED:
                await self._place(job)
        elif mine is not None and not mine.state.final:
            await self._release(job.job_id)
