"""Rescheduling without a leader, in process: several simulated nodes, each with its own real store, Replica
and Rescheduler, over fake views and a fake network that the tests partition and heal; and the executor's
copies (``node/copies.py``: place/release) on FakeRuntime. The races of docs/scheduling.md: two revisers at
once, a node back during a revision, a 2+3 partition healing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.allocation import Allocation, sign_allocation
from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, Placement, State
from node.nodeview import NodeInfo, NodeState
from node.replica import Replica
from node.rescheduler import Rescheduler
from node.scheduler import allocate, loads_of, ranking, reviser
from node.store import Store

from .test_executor_fake import inline_threads, make_job, running  # noqa: F401  (inline_threads: a fixture)

AFTER = 10.0


class View:
    """One node's ``NodesView``: every node ready unless the test says otherwise."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.down: dict[str, float] = {}

    def nodes(self) -> list[NodeInfo]:
        return [self._info(n) for n in self.ids]

    def get(self, node_id: str) -> NodeInfo | None:
        return self._info(node_id) if node_id in self.ids else None

    def _info(self, n: str) -> NodeInfo:
        if n in self.down:
            return NodeInfo(node_id=n, state=NodeState.DOWN, down_for=self.down[n])
        return NodeInfo(node_id=n)


class Sim:
    """One simulated node: a real store, Replica and Rescheduler; a "container" is a job ID in ``running``."""

    def __init__(self, cluster: Cluster, identity: Identity, store: Store) -> None:
        self.cluster = cluster
        self.identity = identity
        self.id = identity.node_id
        self.store = store
        self.view = View(cluster.ids)
        self.running: set[str] = set()
        self.up = True
        self.replica = Replica(store=store, node_id=self.id, run=self._run, cancel=self._cancel,
                               place=self.place, release=self.release)  # fmt: skip
        self.rescheduler = Rescheduler(node_id=self.id, store=store, nodes=self.view, write=self.write,
                                       place=self.place, release=self.release, reschedule_after=AFTER)  # fmt: skip

    async def _mine(self, job_id: str) -> Execution | None:
        return next((e for e in await self.store.executions_of(job_id) if e.node_id == self.id), None)

    async def _set(self, job_id: str, state: State, before: Execution | None) -> None:
        now = time.time()
        e = before.advance(state=state) if before else Execution(job_id=job_id, node_id=self.id, state=state,
                                                                  created_at=now, updated_at=now)  # fmt: skip
        await self.store.put_execution(e)
        (self.running.add if state == State.RUNNING else self.running.discard)(job_id)
        await self.cluster.send(self, e)

    async def _run(self, job: Job) -> bool:
        new = await self.store.add_job(job)
        await self._set(job.job_id, State.RUNNING, None)
        return new

    async def _cancel(self, job_id: str) -> None:
        raise AssertionError("no cancels here")

    async def place(self, job: Job) -> bool:
        mine = await self._mine(job.job_id)
        if mine is not None and mine.state != State.RELEASED:
            return False
        await self._set(job.job_id, State.RUNNING, mine)
        return True

    async def release(self, job_id: str) -> None:
        mine = await self._mine(job_id)
        if mine is not None and not mine.state.final:
            await self._set(job_id, State.RELEASED, mine)

    async def write(self, allocation: Allocation) -> None:
        signed = sign_allocation(self.identity, allocation)
        await self.replica.on_allocation(signed, local=True)
        await self.cluster.send(self, signed)

    async def create(self, job_id: str, replicas: int) -> Job:
        """As ``Replicas.create``: allocate, keep, run here if chosen, then tell the peers."""
        spec = JobSpec(image="busybox", placement=Placement(mode="replicas", replicas=replicas))
        job = Job(job_id=job_id, spec=spec, origin=self.id, created_at=time.time())
        job = replace(job, signature=self.identity.sign(job.canonical_bytes()))
        loads = loads_of((j.spec, a.nodes) for j, a, _ in await self.store.active_allocations())
        choice = allocate(job, self.view.nodes(), loads)
        allocation = sign_allocation(self.identity, Allocation(
            job_id=job_id, version=1, replicas=replicas, nodes=choice.nodes, by=self.id, at=time.time()))  # fmt: skip
        await self.store.put_allocation(allocation)
        await self.store.add_job(job)
        if self.id in choice.nodes:
            await self.place(job)
        await self.cluster.send(self, allocation)
        await self.cluster.send(self, job)
        return job


class Cluster:
    """The fake network: what a node sends reaches the up nodes of its group at once; ``sync`` is catch-up."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.sims: list[Sim] = []
        self.groups: list[set[str]] = [set(ids)]

    def by_id(self, node_id: str) -> Sim:
        return next(s for s in self.sims if s.id == node_id)

    def reachable(self, a: Sim, b: Sim) -> bool:
        return a.up and b.up and any(a.id in g and b.id in g for g in self.groups)

    async def send(self, sender: Sim, value: Any) -> None:
        for peer in self.sims:
            if peer is not sender and self.reachable(sender, peer):
                await deliver(peer, value)

    def partition(self, *groups: set[str], down_for: float = 30.0) -> None:
        """Split the network; every node sees the nodes outside its group down for ``down_for`` seconds."""
        self.groups = list(groups)
        for sim in self.sims:
            mine = next(g for g in groups if sim.id in g)
            sim.view.down = {n: down_for for n in self.ids if n not in mine}

    def heal(self) -> None:
        self.groups = [set(self.ids)]
        for sim in self.sims:
            sim.view.down = {}

    async def sync(self) -> None:
        """Catch-up between every pair that can reach each other: everything each store holds."""
        for a in self.sims:
            changes = await a.store.changes_since(0, limit=100_000)
            for b in self.sims:
                if b is not a and self.reachable(a, b):
                    for allocation in changes.allocations:
                        await b.replica.on_allocation(allocation)
                    await b.replica.on_executions(changes.executions)
                    for job, _ in changes.jobs:
                        await b.replica.on_job(job)

    async def settle(self, rounds: int = 3) -> int:
        """Rounds of every up node's rescheduler, each followed by catch-up; returns the versions written."""
        written = 0
        for _ in range(rounds):
            for sim in self.sims:
                if sim.up:
                    written += await sim.rescheduler.round()
            await self.sync()
        return written

    async def assert_settled(self, job_id: str, replicas: int) -> Allocation:
        """Every up node holds the same allocation; exactly ``replicas`` copies run, on its distinct nodes."""
        held = {s.id: await s.store.get_allocation(job_id) for s in self.sims if s.up}
        ranks = {a.rank if a else None for a in held.values()}
        assert len(ranks) == 1, held
        allocation = next(iter(held.values()))
        assert allocation is not None
        runners = sorted(s.id for s in self.sims if s.up and job_id in s.running)
        assert len(allocation.nodes) == replicas and runners == sorted(allocation.nodes)
        return allocation


async def deliver(sim: Sim, value: Any) -> None:
    if isinstance(value, Allocation):
        await sim.replica.on_allocation(value)
    elif isinstance(value, Execution):
        await sim.replica.on_executions([value])
    else:
        await sim.replica.on_job(value)


@asynccontextmanager
async def cluster_of(tmp_path: Path, count: int) -> AsyncIterator[Cluster]:
    identities = [load_or_create(tmp_path / f"id{i}") for i in range(count)]
    cluster = Cluster([i.node_id for i in identities])
    async with AsyncExitStack() as stack:
        for identity in identities:
            store = await stack.enter_async_context(Store.open(tmp_path / f"{identity.node_id}.db", durable=False))
            cluster.sims.append(Sim(cluster, identity, store))
        for sim in cluster.sims:
            await sim.replica.caught_up()
        yield cluster


def holders(cluster: Cluster, job_id: str) -> list[str]:
    return sorted(s.id for s in cluster.sims if job_id in s.running)


# -- the basics ------------------------------------------------------------------------------------------


async def test_a_job_heard_before_its_allocation_runs_only_when_the_allocation_arrives(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 3) as c:
        origin, target, other = c.sims
        c.partition({origin.id}, {target.id, other.id}, down_for=0.0)  # nothing reaches them yet
        job = await origin.create("j", 1)
        allocation = await origin.store.get_allocation("j")
        assert allocation is not None
        placed = c.by_id(allocation.nodes[0])
        await deliver(target, job)
        await deliver(other, job)
        assert holders(c, "j") == ([origin.id] if placed is origin else [])  # the job alone runs nowhere
        await deliver(target, allocation)
        await deliver(other, allocation)
        assert holders(c, "j") == [placed.id]


async def test_a_replacement_runs_once_a_holder_is_down_long_enough(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 4) as c:
        await c.sims[0].create("j", 2)
        first = await c.assert_settled("j", 2)
        dead = c.by_id(first.nodes[0])
        dead.up = False
        for sim in c.sims:
            sim.view.down = {dead.id: AFTER - 1}
        assert await c.settle() == 0  # not down long enough: nothing moves
        for sim in c.sims:
            sim.view.down = {dead.id: AFTER}
        assert await c.settle() == 1  # exactly one node revised
        second = await c.assert_settled("j", 2)
        assert dead.id not in second.nodes and first.nodes[1] in second.nodes and second.version == 2


# -- the races --------------------------------------------------------------------------------------------


async def test_two_revisers_at_once_settle_on_the_greater_version(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 6) as c:
        await c.sims[0].create("j", 2)
        first = await c.assert_settled("j", 2)
        dead = c.by_id(first.nodes[0])
        dead.up = False
        live = [s.id for s in c.sims if s.up]
        r0, r1 = ranking("j", live)[:2]
        for sim in c.sims:
            sim.view.down = {dead.id: 60.0}
        c.by_id(r1).view.down[r0] = 1.0  # r1 briefly believes r0 is down: it thinks itself the reviser
        assert reviser("j", c.by_id(r0).view.nodes()) == r0 and reviser("j", c.by_id(r1).view.nodes()) == r1
        c.partition({r0}, {r1}, {n for n in c.ids if n not in (r0, r1)})  # neither hears the other's version
        for sim in c.sims:  # ...but both saw the holder die long ago
            sim.view.down = {dead.id: 60.0} | ({r0: 1.0} if sim.id == r1 else {})
        assert await c.by_id(r0).rescheduler.round() == 1
        assert await c.by_id(r1).rescheduler.round() == 1
        c.heal()
        dead.up = False  # still dead
        for sim in c.sims:
            sim.view.down = {dead.id: 60.0}
        await c.sync()
        await c.settle()
        final = await c.assert_settled("j", 2)
        assert final.version >= 2 and dead.id not in final.nodes


async def test_a_node_back_during_a_revision_stops_its_stale_copy_and_nothing_flaps(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 5) as c:
        await c.sims[0].create("j", 2)
        first = await c.assert_settled("j", 2)
        back = c.by_id(first.nodes[0])
        back.up = False  # killed: its copy is still "running" in its own store when it returns
        for sim in c.sims:
            sim.view.down = {back.id: 30.0}
        assert await c.settle(rounds=1) == 1
        back.up = True  # back while the revision spreads: it still holds version 1, naming itself
        back.view.down = {}
        assert await back.rescheduler.round() == 0 and "j" in back.running  # version 1: its copy stays, for now
        for sim in c.sims:
            sim.view.down = {}
        await c.sync()  # catch-up brings version 2
        assert "j" not in back.running
        assert await c.settle() == 0  # every node ready again, the allocation full: no move back
        final = await c.assert_settled("j", 2)
        assert back.id not in final.nodes and final.version == 2


async def test_a_2_plus_3_partition_heals_to_exactly_n_copies_of_every_job(tmp_path: Path) -> None:
    async with cluster_of(tmp_path, 5) as c:
        jobs = [f"job-{i}" for i in range(10)]
        for i, job_id in enumerate(jobs):
            await c.sims[i % 5].create(job_id, 2)
        for job_id in jobs:
            await c.assert_settled(job_id, 2)
        small, large = set(c.ids[:2]), set(c.ids[2:])
        c.partition(small, large)
        await c.settle()
        for job_id in jobs:  # each side keeps 2 copies of each job on its own nodes meanwhile
            for side in (small, large):
                sims = [c.by_id(n) for n in side]
                running = [s.id for s in sims if job_id in s.running]
                assert len(running) == 2 and set(running) <= side
        c.heal()
        await c.sync()
        await c.settle()
        for job_id in jobs:
            await c.assert_settled(job_id, 2)
        assert await c.settle() == 0  # settled: no more versions


def test_50_nodes_with_one_ready_set_agree_on_one_reviser_per_job_for_1000_jobs() -> None:
    ids = [f"node-{i:02d}" for i in range(50)]
    views = []
    for i in range(5):  # each lists the nodes in its own order and saw the dead ones die at its own time
        view = View(ids[i:] + ids[:i])
        view.down = {"node-07": 10.0 + i, "node-31": 3.0 * i}
        views.append(view)
    for job_id in (f"job-{i}" for i in range(1000)):
        revisers = {reviser(job_id, v.nodes()) for v in views}
        assert len(revisers) == 1 and not revisers & {"node-07", "node-31"}


# -- the executor: a copy placed, released, placed back ------------------------------------------------


async def test_the_executor_places_releases_and_places_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    from node.fake_runtime import FakeRuntime

    rt = FakeRuntime(node_id="fake-node", plan=lambda job, attempt: None)
    async with running(tmp_path, rt) as h:
        job = make_job(placement={"replicas": 1})
        await h.store.add_job(job)
        assert await h.executor.copies.place(job)
        first = await h.until_state(job.job_id, State.RUNNING)
        assert not await h.executor.copies.place(job)  # running already: nothing more
        await h.executor.copies.release(job.job_id)
        released = await h.until_state(job.job_id, State.RELEASED)
        with trio.fail_after(60):  # the container is removed after the release is announced (virtual clock)
            while [c for c in rt.of_job(job.job_id) if c.status == "running"]:
                await trio.sleep(0.1)
        assert released.version > first.version and "released" in (released.error or "")
        assert (await h.store.get_job(job.job_id)) is not None
        assert (await h.store.get_job(job.job_id)).status == "pending"  # type: ignore[union-attr]
        assert await h.executor.copies.place(job)  # placed back: a new run, a newer version
        again = await h.until_state(job.job_id, State.RUNNING)
        assert again.version > released.version and again.attempt == 1 and again.history == ()


async def test_release_of_a_copy_never_started_here_changes_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with running(tmp_path) as h:
        job = make_job(placement={"replicas": 1})
        await h.store.add_job(job)
        await h.executor.copies.release(job.job_id)
        assert await h.store.executions_of(job.job_id) == [] and h.published == []


def test_the_round_after_a_node_reaches_reschedule_after_is_not_a_whole_interval_later() -> None:
    """A death is told at once by a lost notice, so ``down_for`` counts from it: the reviser's next round comes
    when a down node reaches ``reschedule_after``, not up to ``interval`` later."""
    view = View(["a", "b"])

    async def nothing(*args: Any) -> None:
        return None

    rescheduler = Rescheduler(node_id="a", store=None, nodes=view, write=nothing, place=nothing,  # type: ignore[arg-type]
                              release=nothing, interval=2.0, reschedule_after=AFTER)  # fmt: skip
    assert rescheduler.pause() == 2.0  # nobody down
    view.down = {"b": AFTER - 0.5}
    assert rescheduler.pause() == pytest.approx(0.51)
    view.down = {"b": AFTER + 5}  # due long ago: rounds as usual
    assert rescheduler.pause() == 2.0


async def test_a_round_reads_the_store_only_after_a_commit_and_waits_for_one_with_nothing_allocated(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """An idle node read its store every round (2 s) for nothing: now a round with no commit since the last read
    reads nothing, and with nothing allocated the next round waits for a commit."""
    async with cluster_of(tmp_path, 2) as c:
        sim = c.sims[0]
        rescheduler = sim.rescheduler
        assert await rescheduler.round() == 0 and rescheduler.reads == 1
        assert await rescheduler.round() == 0 and rescheduler.reads == 1  # no commit since
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rescheduler.run)
            await trio.sleep(60)
            assert rescheduler.reads == 1  # nothing allocated: no round in a minute
            await sim.create("j", 2)
            await trio.sleep(0.01)
            assert rescheduler.reads == 2  # the commit woke it at once
            await trio.sleep(2.1)  # the round after reads the commits the create made after the first one
            await c.assert_settled("j", 2)
            reads = rescheduler.reads
            await trio.sleep(20)  # rounds every 2 s while something is allocated, with nothing new to read
            assert rescheduler.reads == reads
            await sim.release("j")  # a commit: read again by the next round
            await trio.sleep(2.1)
            assert rescheduler.reads == reads + 1 and "j" in sim.running  # and placed back
            nursery.cancel_scope.cancel()
