"""Gossip leaves through one paced publisher (docs/py-libp2p.md, "Outbound queues drop beyond 32 messages").

Issue 12: one peer whose connection died silently never drains its outbound queue, and the publisher waited
for every peer's queue, so a partition stopped all of a node's gossip (to the peers on its own side too) until
the dead connection was closed: part-mates heard of a job's executions only after the heal, and peers that
caught up from them got the jobs a round before their executions. A stalled peer is now not waited for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing
from libp2p.peer.id import ID

from node.gossip import PEER_QUEUE_HIGH, STALLED, Gossip
from node.identity import Identity
from node.link import MeshLink, NoMesh
from node.model import State

from .fakes import FakeInbound, signed_execution, signed_job

DEAD = ID(b"dead-peer")
ALIVE = ID(b"alive-peer")


class FakePubsub:
    """Two peers: DEAD's queue is full and never drains; ALIVE's drains at once. Records what is published."""

    def __init__(self) -> None:
        self.peer_queues: dict[ID, list[bytes]] = {DEAD: [b"x"] * PEER_QUEUE_HIGH, ALIVE: []}
        self.published: list[float] = []

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append(trio.current_time())
        await trio.lowlevel.checkpoint()


async def test_a_peer_that_never_drains_does_not_stop_gossip_to_the_others(
    autojump_clock: trio.testing.MockClock, me: Identity
) -> None:
    link = MeshLink(me.node_id)
    gossip = Gossip(identity=me, inbound=FakeInbound(), outbox=link.outbox)
    pubsub = FakePubsub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gossip.publisher, pubsub)
        start = trio.current_time()
        await link.publish_job(signed_job(me, "j1"))
        for version in range(1, 4):
            await link.publish_execution(signed_execution(me, "j1", state=State.RUNNING, version=version))
        with trio.fail_after(10 * STALLED):
            while len(pubsub.published) < 4:
                await trio.sleep(0.01)
        # the stalled peer is not waited for again: the rest go out at once
        assert pubsub.published[-1] - start <= STALLED + 0.1
        pubsub.peer_queues[DEAD] = []  # it drained (or was closed): paced again like any peer
        pubsub.peer_queues[ALIVE] = [b"x"] * PEER_QUEUE_HIGH
        await link.publish_job(signed_job(me, "j2"))
        await trio.sleep(STALLED / 2)
        assert len(pubsub.published) == 4  # a busy peer that is still draining is waited for
        pubsub.peer_queues[ALIVE] = []
        await trio.sleep(0.01)
        assert len(pubsub.published) == 5
        nursery.cancel_scope.cancel()


# -- a job created here is published in the creating task when the publisher is idle ------------------------------


class TaskPubsub:
    """No peer crowded; records each publish's message kind and the task that made it; ``hold`` keeps the
    first publish open until set."""

    def __init__(self) -> None:
        self.peer_queues: dict[ID, list[bytes]] = {ALIVE: []}
        self.published: list[tuple[str, trio.lowlevel.Task]] = []
        self.hold: trio.Event | None = None

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((json.loads(data)["type"], trio.lowlevel.current_task()))
        if self.hold is not None:
            hold, self.hold = self.hold, None
            await hold.wait()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def _serving(me: Identity, pubsub: TaskPubsub) -> AsyncIterator[tuple[MeshLink, trio.Nursery]]:
    """A link served by a running mesh: its publisher started on ``pubsub`` and idle, ``publish_now`` wired."""
    link = MeshLink(me.node_id)
    gossip = Gossip(identity=me, inbound=FakeInbound(), outbox=link.outbox)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.publisher, pubsub)
            await trio.testing.wait_all_tasks_blocked()
            with link.serving(NoMesh(), gossip.publish_now):
                yield link, nursery
            nursery.cancel_scope.cancel()


async def test_a_job_is_published_in_the_creating_task_while_the_publisher_is_idle(me: Identity) -> None:
    """Through the publisher, Create's job waited a scheduling round behind every ready task of the node."""
    pubsub = TaskPubsub()
    async with _serving(me, pubsub) as (link, _):
        await link.publish_job(signed_job(me, "j1"))
        assert pubsub.published == [("job", trio.lowlevel.current_task())]
        assert link.queued == 0


async def test_a_message_queued_during_a_direct_publish_goes_out_after_it(me: Identity) -> None:
    pubsub = TaskPubsub()
    release = pubsub.hold = trio.Event()
    async with _serving(me, pubsub) as (link, nursery):
        nursery.start_soon(link.publish_job, signed_job(me, "j1"))
        await trio.testing.wait_all_tasks_blocked()  # the job's publish is under way, held
        await link.publish_execution(signed_execution(me, "j1", state=State.RUNNING, version=1))
        await link.publish_job(signed_job(me, "j2"))
        await trio.testing.wait_all_tasks_blocked()
        assert [kind for kind, _ in pubsub.published] == ["job"]  # the publisher waits for it
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert [kind for kind, _ in pubsub.published] == ["job", "execution", "job"]
        assert link.queued == 0


async def test_a_job_is_queued_while_a_peer_is_crowded(me: Identity) -> None:
    pubsub = TaskPubsub()
    pubsub.peer_queues[ALIVE] = [b"x"] * PEER_QUEUE_HIGH
    async with _serving(me, pubsub) as (link, _):
        await link.publish_job(signed_job(me, "j1"))
        assert pubsub.published == []  # paced by the publisher, as before
        pubsub.peer_queues[ALIVE] = []
        while not pubsub.published:  # the publisher looks again every millisecond
            await trio.sleep(0.001)
        assert pubsub.published[0][1] is not trio.lowlevel.current_task()
