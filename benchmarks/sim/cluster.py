"""Simulated nodes with the real merge (``node/replica.py``), placement (``node/scheduler.py``) and store
(``node/store.py``), over the in-memory mesh of ``topology.py``: what each job costs in gossip and in bytes stored.

A node runs a job as the executor on ``FakeRuntime`` does: the execution versions it publishes are those a real
``Executor`` published for one job on ``FakeRuntime`` (``lifecycle``), re-signed by each runner. Gossip is lossless
here and every message reaches every node (``Topology.flood`` counts the copies); a node applies what it heard in
one batch per job, as ``Gossip.consumer`` batches a burst.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from node.allocation import Allocation, sign_allocation
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.identity import Identity
from node.jobqueue import JobQueue
from node.model import Execution, Job, JobSpec, Placement
from node.nodeview import NodeInfo
from node.replica import Replica
from node.scheduler import allocate, loads_of
from node.store import Store
from node.trust import sign_execution

from .params import new_identity
from .topology import Topology

__all__ = ["Cluster", "SimNode", "lifecycle", "store_bytes"]

CONCURRENCY = 8
"""Nodes applying a job at once (their stores' threads overlap)."""
CACHE_KIB = 128
"""SQLite's page cache per connection (default 2 MiB): a thousand stores, two connections each, stay within a few
hundred MB (the pages themselves are in the files)."""


async def lifecycle() -> list[Execution]:
    """The execution versions a real ``Executor`` publishes for one job that exits 0 at once on ``FakeRuntime``."""
    published: list[Execution] = []
    done = trio.Event()

    async def publish(execution: Execution) -> None:
        published.append(execution)
        if execution.state.final:
            done.set()

    runtime = FakeRuntime(node_id="lifecycle", plan=lambda job, attempt: (0, 0.0))
    async with Store.open("file:lifecycle?mode=memory&cache=shared", durable=False) as store:
        executor = Executor(node_id="lifecycle", store=store, runtime=runtime, queue=JobQueue(10), worker_count=1,
                            publish=publish)  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            job = Job(job_id=str(uuid.uuid4()), spec=JobSpec(image="busybox", arguments=("true",)),
                      origin="lifecycle", created_at=time.time())  # fmt: skip
            await executor.submit(job)
            with trio.fail_after(30):
                await done.wait()
            nursery.cancel_scope.cancel()
    return published


async def store_bytes(store: Store) -> int:
    """The bytes the store's B-tree pages use (SQLite's ``dbstat``: free space inside pages and free pages not
    counted, so a few jobs measure true; the file is that over the pages' fill, 10-30 % more)."""

    def read(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT SUM(pgsize - unused) FROM dbstat").fetchone()[0] or 0)

    return await store.query(read)


@dataclass
class SimNode:
    """One node: its identity, its real store and Replica; what it was told to run is in ``runs``."""

    index: int
    identity: Identity
    store: Store
    replica: Replica = field(init=False)
    runs: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.replica = Replica(store=self.store, node_id=self.id, run=self._run, cancel=self._cancel,
                               place=self._place, release=self._release)  # fmt: skip

    @property
    def id(self) -> str:
        return self.identity.node_id

    async def _run(self, job: Job) -> bool:
        new = await self.store.add_job(job, durable=False)
        self.runs.append(job)
        return new

    async def _place(self, job: Job) -> bool:
        self.runs.append(job)
        return True

    async def _release(self, job_id: str) -> None:
        pass

    async def _cancel(self, job_id: str) -> None:
        await self.store.mark_cancelled(job_id)

    def executions(self, job_id: str, template: list[Execution]) -> list[Execution]:
        """This node's execution versions of a job: ``template``'s (``lifecycle``), unsigned as kept here."""
        return [replace(e, job_id=job_id, node_id=self.id, signature="") for e in template]


@dataclass
class Counts:
    """Gossip copies sent and received per node, and messages published, over the jobs of one kind."""

    published: int = 0
    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)

    def add(self, topology: Topology, origin: int, times: int = 1) -> None:
        flood = topology.flood(origin)
        self.published += times
        if not self.sent:
            self.sent, self.received = [0] * topology.n, [0] * topology.n
        for i in range(topology.n):
            self.sent[i] += flood.sent[i] * times
            self.received[i] += flood.received[i] * times

    @property
    def total(self) -> int:
        return sum(self.sent)


class Cluster:
    """The simulated nodes over one topology."""

    def __init__(self, topology: Topology, nodes: list[SimNode], template: list[Execution]) -> None:
        self.topology = topology
        self.nodes = nodes
        self.template = template
        self.view = [NodeInfo(node_id=n.id) for n in nodes]
        """Every node ready, capacity not counted: what each node's registry says once records settled."""
        self._limit = trio.CapacityLimiter(CONCURRENCY)

    async def create(self, origin: SimNode, placement: Placement, counts: Counts) -> Job:
        """A job created on ``origin`` (``Node._create`` / ``Replicas.create``), gossiped, merged on every node,
        run where placement says; then every runner's execution versions gossiped and merged."""
        spec = JobSpec(image="busybox", arguments=("true",), placement=placement)
        job = Job(job_id=str(uuid.uuid4()), spec=spec, origin=origin.id, created_at=time.time())
        job = replace(job, signature=origin.identity.sign(job.canonical_bytes()))
        allocation: Allocation | None = None
        if placement.mode == "replicas":
            loads = loads_of((j.spec, a.nodes) for j, a, _ in await origin.store.active_allocations())
            choice = allocate(job, self.view, loads)
            allocation = sign_allocation(origin.identity, Allocation(
                job_id=job.job_id, version=1, replicas=placement.replicas or 0, nodes=choice.nodes, by=origin.id,
                at=time.time(), note=choice.note,
            ))  # fmt: skip
            await origin.replica.on_allocation(allocation, local=True)
            counts.add(self.topology, origin.index)
        await origin.replica.on_job(job)  # runs here if placement says so
        counts.add(self.topology, origin.index)

        async def hear(node: SimNode) -> None:
            async with self._limit:
                if allocation is not None:
                    await node.replica.on_allocation(allocation)
                await node.replica.on_job(job, gossip=True)

        await self._each(hear, skip=origin)
        runners = [n for n in self.nodes if n.runs and n.runs[-1].job_id == job.job_id]
        signed: list[Execution] = []
        for runner in runners:
            versions = runner.executions(job.job_id, self.template)
            await runner.store.put_executions(versions, durable=False)
            signed += [sign_execution(runner.identity, e) for e in versions]
            counts.add(self.topology, runner.index, len(versions))

        async def merge(node: SimNode) -> None:
            async with self._limit:
                await node.replica.on_executions(signed)

        await self._each(merge)
        return job

    async def _each(self, fn: object, skip: SimNode | None = None) -> None:
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                if node is not skip:
                    nursery.start_soon(fn, node)  # type: ignore[arg-type]


def _small_cache(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")


@asynccontextmanager
async def cluster_of(topology: Topology, directory: Path, template: list[Execution]) -> AsyncIterator[Cluster]:
    """``topology.n`` nodes, each with its own store in ``directory``, caught up (empty) and ready."""
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(topology.n):
            store = await stack.enter_async_context(Store.open(directory / f"n{i}.db", durable=False))
            await store.query(_small_cache)
            await store.transact(_small_cache, durable=False)
            node = SimNode(index=i, identity=new_identity(), store=store)
            await node.replica.caught_up()
            nodes.append(node)
        yield Cluster(topology, nodes, template)
