"""Replicas jobs as this node writes their allocations: version 1 at Create, the next at a Scale, and every
version the rescheduler (``node/rescheduler.py``) writes, all through ``write``.

Apart from ``Node`` (``node/core.py``), which only wires the node's parts to its API: writing an allocation
is one job with its own lock (two writers at once must each count the other's copies) and its own order (the
allocation goes out before the job). Not to be confused with ``node/replica.py``, the merge of what peers tell
this node, through which a written allocation is kept and acted on here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import trio

from .allocation import Allocation, sign_allocation
from .errors import ValidationError
from .executor import Executor
from .identity import Identity
from .link import Outbound
from .model import Execution, Job
from .nodeview import NodesView
from .replica import Replica
from .scheduler import allocate, loads_of, revise
from .store import JobRecord, Store

__all__ = ["Replicas", "allocation_view"]


@dataclass(kw_only=True, eq=False)
class Replicas:
    """Create and scale replicas jobs; ``write`` is also the rescheduler's way to write a version."""

    identity: Identity
    store: Store
    nodes: NodesView
    executor: Executor
    mesh: Outbound
    replica: Replica
    reschedule_after: float
    _allocating: trio.Lock = field(default_factory=trio.Lock, init=False, repr=False)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def create(self, job: Job) -> Job:
        """Allocate, keep the allocation, then the job (run here if allocated here); the allocation goes out
        first, so a peer hearing the job finds where it runs (heard the other way round, it runs on arrival
        of the allocation)."""
        async with self._allocating:  # two Creates at once each see the other's copies when counting load
            loads = loads_of((j.spec, a.nodes) for j, a, _ in await self.store.active_allocations())
            choice = allocate(job, self.nodes.nodes(), loads)
            allocation = sign_allocation(self.identity, Allocation(
                job_id=job.job_id, version=1, replicas=job.spec.placement.replicas or 0, nodes=choice.nodes,
                by=self.node_id, at=time.time(), note=choice.note,
            ))  # fmt: skip
            await self.store.put_allocation(allocation)
        if self.node_id in allocation.nodes:
            await self.executor.submit(job)
        else:
            await self.executor.accept(job, run_here=False)
        await self.mesh.publish_allocation(allocation)
        await self.mesh.publish_job(job)
        return job

    async def scale(self, record: JobRecord, executions: list[Execution], replicas: int) -> dict[str, Any]:
        """A new allocation version with ``replicas`` copies: more are placed as for Create, fewer keep the
        running ones. Any node may scale (its trust rule lets peers believe it as for a Stop).

        Raises:
            ValidationError: not a replicas job, or stopped.
        """
        job_id = record.job.job_id
        if record.job.spec.placement.mode != "replicas":
            raise ValidationError([{"field": "job_id", "message": "is not a replicas job (placement has no replicas)"}])
        if record.cancelled:
            raise ValidationError([{"field": "job_id", "message": "was stopped"}])
        with trio.CancelScope(shield=True):
            async with self._allocating:
                current = await self.store.get_allocation(job_id)
                if current is None:
                    current = Allocation(job_id=job_id, version=0, replicas=0, nodes=(), by="", at=0.0)
                active = await self.store.active_allocations()
                loads = loads_of((j.spec, a.nodes) for j, a, _ in active)
                states = {e.node_id: e.state for e in executions}
                choice = revise(
                    record.job, current, self.nodes.nodes(), loads, states,
                    reschedule_after=self.reschedule_after, replicas=replicas,
                )  # fmt: skip
                assert choice is not None  # a new count always gives a choice
                allocation = Allocation(
                    job_id=job_id, version=current.version + 1, replicas=replicas, nodes=choice.nodes,
                    by=self.node_id, at=time.time(), note=choice.note,
                )  # fmt: skip
                signed = await self.write(allocation)
        return {"job_id": job_id, "allocation": allocation_view(signed)}

    async def write(self, allocation: Allocation) -> Allocation:
        """Sign a new allocation version, keep it, act on it here and tell the mesh."""
        signed = sign_allocation(self.identity, allocation)
        await self.replica.on_allocation(signed, local=True)
        await self.mesh.publish_allocation(signed)
        return signed


def allocation_view(a: Allocation) -> dict[str, Any]:
    """What Status shows of an allocation: where the copies run and, when fewer than wanted, why."""
    placed = f"{len(a.nodes)} of {a.replicas} replicas placed"
    return {"version": a.version, "replicas": a.replicas, "nodes": list(a.nodes), "by": a.by, "at": a.at,
            "note": a.note or placed}  # fmt: skip
