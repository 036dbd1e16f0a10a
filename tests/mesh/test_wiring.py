"""The one-way wiring between the node and its mesh (node/link.py), with fakes and no processes: publishes buffer
in the link until the mesh drains them, what peers send waits at the gate until the executor runs, and a node
decides placement through the scheduler. The real start-up order is proven by the cluster tests."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import trio
import trio.testing

from node.config import Config
from node.core import Node
from node.executor import Executor
from node.gossip import Gossip
from node.identity import Identity
from node.link import InboundGate, MeshLink, NoMesh
from node.model import Execution, Job, Placement, State
from node.policy import Policy
from node.replica import Replica
from node.store import Store
from node.trust import Refused, Trust
from node.wire import AllocationMsg, CancelMsg, ExecutionMsg, JobMsg

from .fakes import FakeInbound, receive, signed_cancel, signed_execution, signed_job

# -- the gate -------------------------------------------------------------------------------------


async def test_gate_holds_every_call_until_open(peer: Identity) -> None:
    inner = FakeInbound()
    gate = InboundGate(inner)
    job = signed_job(peer)
    execution = Execution(job_id="j1", node_id=peer.node_id, state=State.RUNNING)
    results: list[Any] = []

    async def call(fn: Any) -> None:
        results.append(await fn())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, lambda: gate.on_job(job))
            nursery.start_soon(call, lambda: gate.on_executions([execution]))
            nursery.start_soon(call, lambda: gate.on_cancel(signed_cancel(peer, "j1")))
            nursery.start_soon(call, lambda: gate.local_logs("j1", None))
            await trio.testing.wait_all_tasks_blocked()
            assert inner.calls == [] and results == [] and not gate.is_open
            gate.open()
    assert sorted(kind for kind, _ in inner.calls) == ["cancel", "execution", "job", "logs"]
    assert len(results) == 4


async def test_an_open_gate_passes_a_job_on_without_a_scheduling_round(peer: Identity) -> None:
    """A job from gossip goes from pubsub's task to the store with no round behind the node's ready tasks
    (``Gossip.forwarded``); waiting on the gate's event, already set, was one."""
    inner = FakeInbound()
    gate = InboundGate(inner)
    gate.open()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            assert await gate.on_job(signed_job(peer, "j1"))
            assert inner.calls == [("job", "j1")] and ran == []


async def test_gossip_waits_at_the_gate_and_then_applies_in_order(me: Identity, peer: Identity) -> None:
    """What peers publish before the executor runs is validated and kept, and applied once the gate opens."""
    inner = FakeInbound()
    gate = InboundGate(inner)
    link = MeshLink(me.node_id)
    gossip = Gossip(identity=me, inbound=gate, outbox=link.outbox)
    job = signed_job(peer, "j1")
    messages = [
        JobMsg(job),
        ExecutionMsg(signed_execution(peer, "j1", state=State.RUNNING)),
        CancelMsg(signed_cancel(peer, "j1")),
    ]
    receive(gossip, peer, messages)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            await trio.testing.wait_all_tasks_blocked()
            assert inner.calls == []
            gate.open()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert inner.calls == [("job", "j1"), ("execution", "j1"), ("cancel", "j1")]
    assert gossip.stats.messages_in == 3 and gossip.stats.dropped == {}


# -- the link -------------------------------------------------------------------------------------


async def test_link_buffers_publishes_until_the_mesh_drains_them(me: Identity, peer: Identity) -> None:
    link = MeshLink(me.node_id)
    job = signed_job(me)
    await link.publish_job(job)
    await link.publish_execution(Execution(job_id=job.job_id, node_id=me.node_id, state=State.PENDING))
    await link.publish_execution(Execution(job_id=job.job_id, node_id=peer.node_id, state=State.PENDING))
    await link.publish_cancel(signed_cancel(me, job.job_id))
    assert link.queued == 3  # another node's execution is never announced by this one
    kinds = [type(link.outbox.receive_nowait()) for _ in range(3)]
    assert kinds == [JobMsg, ExecutionMsg, CancelMsg]


async def test_link_answers_as_no_mesh_until_the_mesh_serves(me: Identity) -> None:
    link = MeshLink(me.node_id)
    assert link.peers() == [] and link.addresses() == []

    class View:
        async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]:
            return {"from": node_id}

        def peers(self) -> list[dict[str, Any]]:
            return [{"node_id": "p", "addresses": []}]

        def addresses(self) -> list[str]:
            return ["/ip4/127.0.0.1/tcp/1"]

        def stats(self) -> dict[str, Any]:
            return {"peers": 1}

    with link.serving(View()):
        assert link.peers() == [{"node_id": "p", "addresses": []}]
        assert link.addresses() == ["/ip4/127.0.0.1/tcp/1"]
        assert link.stats() == {"peers": 1}
        assert await link.fetch_logs("j", "p", None) == {"from": "p"}
    assert link.peers() == [] and link.stats() == {"outbox": 0}


# -- the node: placement through the scheduler, publishing through its outbound -------------------


class FakeExecutor:
    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.accepted: list[tuple[str, bool]] = []
        self.cancelled: list[str] = []
        self.policy = Policy()

    async def submit(self, job: Job) -> None:
        self.submitted.append(job.job_id)

    async def accept(self, job: Job, *, run_here: bool) -> bool:
        self.accepted.append((job.job_id, run_here))
        return True

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


def _trusting(me: Identity, trusted: list[Identity], store: Store) -> tuple[Replica, _Recorder]:
    """A replica whose trust rule lists ``trusted`` (none: every member), and what it asked to run or cancel."""
    seen = _Recorder(store)
    trust = Trust.of(me.node_id, [t.node_id for t in trusted])
    return Replica(store=store, node_id=me.node_id, run=seen.run, cancel=seen.cancel, trust=trust), seen


def _node(me: Identity, store: Store, executor: FakeExecutor, mesh: Any = None) -> Node:
    return Node(config=Config(), identity=me, store=store, executor=cast(Executor, executor), mesh=mesh)


async def test_create_places_through_the_scheduler_and_publishes_through_the_link(me: Identity, store: Store) -> None:
    executor, link = FakeExecutor(), MeshLink(me.node_id)
    node = _node(me, store, executor, link)
    here = await node.create(signed_job(me).spec)
    elsewhere = await node.create(signed_job(me, placement=Placement(mode="nodes", nodes=("someone-else",))).spec)
    mine = await node.create(signed_job(me, placement=Placement(mode="replicas", replicas=2)).spec)
    assert executor.submitted == [here.job_id, mine.job_id]
    assert executor.accepted == [(elsewhere.job_id, False)]
    published = [link.outbox.receive_nowait() for _ in range(4)]
    assert [cast(JobMsg, m).job.job_id for m in (published[0], published[1], published[3])] == [
        here.job_id, elsewhere.job_id, mine.job_id
    ]  # fmt: skip
    allocation = cast(AllocationMsg, published[2]).allocation  # before its job: a peer hearing the job knows where
    assert allocation.job_id == mine.job_id and allocation.nodes == (me.node_id,)  # alone: 1 of 2 placed, here
    assert allocation.note == "1 of 2 replicas placed: 1 ready node"


async def test_create_asks_this_node_s_labels_only_for_a_placement_with_a_selector(me: Identity, store: Store) -> None:
    executor = FakeExecutor()
    node = _node(me, store, executor)
    asked: list[str] = []
    real = node.nodes.get

    def get(node_id: str) -> Any:
        asked.append(node_id)
        return real(node_id)

    node.nodes.get = get  # type: ignore[method-assign]
    plain = await node.create(signed_job(me).spec)
    assert asked == [] and executor.submitted == [plain.job_id]
    other = await node.create(signed_job(me, placement=Placement(selector={"zone": "b"})).spec)
    assert asked == [me.node_id] and executor.accepted == [(other.job_id, False)]


async def test_a_node_without_a_mesh_publishes_nothing(me: Identity, store: Store) -> None:
    node = _node(me, store, FakeExecutor())
    assert isinstance(node.mesh, NoMesh)
    await node.create(signed_job(me).spec)
    assert node.mesh.peers() == []


async def test_jobs_from_peers_are_placed_by_the_same_rule(me: Identity, peer: Identity, store: Store) -> None:
    executor = FakeExecutor()
    node = _node(me, store, executor)
    everywhere = signed_job(peer, "all")
    listed = signed_job(peer, "listed", Placement(mode="nodes", nodes=(me.node_id,)))
    not_listed = signed_job(peer, "not-listed", Placement(mode="nodes", nodes=(peer.node_id,)))
    replicas = signed_job(peer, "replicas", Placement(mode="replicas", replicas=3))
    for job in (everywhere, listed, not_listed, replicas):
        await node.on_job(job)
    assert executor.accepted == [("all", True), ("listed", True)]
    assert await store.get_job("not-listed") is not None and await store.get_job("replicas") is not None


async def test_this_node_s_labels_are_asked_only_for_a_placement_with_a_selector(
    me: Identity, peer: Identity, store: Store
) -> None:
    """They come from the node registry, which builds this node's entry for it: for every job a peer sent."""
    asked: list[int] = []
    ran: list[str] = []

    def labels() -> dict[str, str]:
        asked.append(1)
        return {"zone": "a"}

    async def run(job: Job) -> bool:
        ran.append(job.job_id)
        return True

    async def cancel(job_id: str) -> None:
        pass

    replica = Replica(store=store, node_id=me.node_id, run=run, cancel=cancel, labels=labels)
    await replica.caught_up()
    await replica.on_job(signed_job(peer, "plain"), gossip=True)
    await replica.on_job(signed_job(peer, "listed", Placement(mode="nodes", nodes=(me.node_id,))), gossip=True)
    await replica.on_jobs([(signed_job(peer, "page"), None)])
    assert asked == [] and ran == ["plain", "listed", "page"]
    await replica.on_job(signed_job(peer, "zone-a", Placement(selector={"zone": "a"})), gossip=True)
    await replica.on_job(signed_job(peer, "zone-b", Placement(selector={"zone": "b"})), gossip=True)
    assert len(asked) == 2 and ran == ["plain", "listed", "page", "zone-a"]


async def test_a_cancel_before_its_job_is_kept_until_the_job_arrives(
    me: Identity, peer: Identity, store: Store
) -> None:
    ran: list[str] = []
    cancelled: list[str] = []

    async def run(job: Job) -> bool:
        ran.append(job.job_id)
        return True

    async def cancel(job_id: str) -> None:
        cancelled.append(job_id)

    replica = Replica(store=store, node_id=me.node_id, run=run, cancel=cancel)
    await replica.on_cancel(signed_cancel(peer, "early"))
    assert cancelled == []
    assert await replica.on_job(signed_job(peer, "early"))
    assert ran == [] and cancelled == ["early"]


# -- trust (node/trust.py, applied by node/replica.py for gossip and catch-up alike) ------------------------


class _Recorder:
    """The executor's side of a replica: a job it runs is stored, as the executor does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ran: list[str] = []
        self.cancelled: list[str] = []

    async def run(self, job: Job) -> bool:
        self.ran.append(job.job_id)
        return await self.store.add_job(job)

    async def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)


async def test_an_untrusted_origin_s_job_is_dropped_and_a_trusted_one_runs(
    me: Identity, peer: Identity, stranger: Identity, store: Store
) -> None:
    replica, seen = _trusting(me, [peer], store)
    with pytest.raises(Refused) as caught:
        await replica.on_job(signed_job(stranger, "theirs"))
    assert caught.value.reason == "untrusted"
    assert await store.get_job("theirs") is None and seen.ran == []
    assert await replica.on_job(signed_job(peer, "trusted"))
    assert await replica.on_job(signed_job(me, "mine"))  # this node is always trusted
    assert seen.ran == ["trusted", "mine"]


async def test_a_cancel_is_obeyed_only_from_the_origin_or_a_trusted_peer(
    me: Identity, peer: Identity, stranger: Identity, store: Store
) -> None:
    """Any peer could once cancel any job. Now: by the job's origin, or by a peer that may originate jobs."""
    replica, seen = _trusting(me, [peer], store)
    await replica.on_job(signed_job(peer, "j1"))
    with pytest.raises(Refused) as caught:
        await replica.on_cancel(signed_cancel(stranger, "j1"))
    assert caught.value.reason == "unauthorized" and seen.cancelled == []
    # arriving before the job, or with it through catch-up, the same rule applies
    await replica.on_cancel(signed_cancel(stranger, "j2"))
    await replica.on_job(signed_job(peer, "j2"), cancel=signed_cancel(stranger, "j2"))
    assert seen.cancelled == [] and seen.ran == ["j1", "j2"]
    await replica.on_cancel(signed_cancel(peer, "j1"))
    await replica.on_job(signed_job(peer, "j3"), cancel=signed_cancel(peer, "j3"))
    assert seen.cancelled == ["j1", "j3"] and seen.ran == ["j1", "j2"]
    kept = await store.get_meta("cancel.j1")
    assert kept is not None and json.loads(kept)["by"] == peer.node_id  # passed on by catch-up


async def test_a_job_heard_on_gossip_before_the_first_catch_up_waits_for_it(
    me: Identity, peer: Identity, store: Store
) -> None:
    """A newcomer is handed gossipsub's recent cache: the job of a run that finished everywhere may come before
    its executions. Once that job ran again on the late joiner; now it is decided after the first catch-up."""
    replica, seen = _trusting(me, [], store)
    ran = seen.ran
    finished, fresh = signed_job(peer, "finished"), signed_job(peer, "fresh")
    assert await replica.on_job(finished, gossip=True)
    assert await replica.on_job(fresh, gossip=True)
    assert ran == [] and await store.get_job("finished") is None  # held, not decided
    done = Execution(job_id="finished", node_id=peer.node_id, state=State.COMPLETE, created_at=1.0, updated_at=1.0)
    await replica.on_executions([done])  # what the catch-up page brings
    await replica.caught_up()
    assert ran == ["fresh"]  # the finished job is recorded, not run
    assert await store.get_job("finished") is not None
    assert await replica.on_job(signed_job(peer, "later"), gossip=True)  # after the first round: as usual
    assert ran == ["fresh", "later"]
