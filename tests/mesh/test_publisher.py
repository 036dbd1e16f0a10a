"""Gossip leaves through one paced publisher (docs/py-libp2p.md, "Outbound queues drop beyond 32 messages").

Issue 12: one peer whose connection died silently never drains its outbound queue, and the publisher waited
for every peer's queue, so a partition stopped all of a node's gossip (to the peers on its own side too) until
the dead connection was closed: part-mates heard of a job's executions only after the heal, and peers that
caught up from them got the jobs a round before their executions. A stalled peer is now not waited for.
"""

from __future__ import annotations

import trio
import trio.testing
from libp2p.peer.id import ID

from node.gossip import PEER_QUEUE_HIGH, STALLED, Gossip
from node.identity import Identity
from node.link import MeshLink
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
