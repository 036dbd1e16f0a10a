"""``Gossip.police`` looks at the peers' scores only after a rejected message (node/gossip.py): a score falls
only then, so an idle node never wakes for it, and a peer that keeps sending invalid gossip is still cut within
about a second of crossing DISCONNECT_SCORE, and let back in when its ban runs out. Fakes, virtual time."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
import trio.testing
from libp2p.peer.id import ID

from node.gossip import BAN_SECONDS, DISCONNECT_SCORE, POLICE_EVERY, Gossip
from node.identity import Identity
from node.link import MeshLink

from .fakes import FakeInbound, pubsub_message


@dataclass
class FakeScorer:
    scores: dict[ID, float] = field(default_factory=dict)
    looked: int = 0

    def score(self, peer: ID, topics: list[str]) -> float:
        self.looked += 1
        return self.scores.get(peer, 0.0)


class FakeLibHost:
    def __init__(self, peers: list[ID]) -> None:
        self.peers = list(peers)
        self.disconnected: list[ID] = []

    def get_connected_peers(self) -> list[ID]:
        return list(self.peers)

    async def disconnect(self, peer: ID) -> None:
        self.disconnected.append(peer)
        if peer in self.peers:
            self.peers.remove(peer)


@dataclass
class FakePubsub:
    blacklist: set[ID] = field(default_factory=set)

    def add_to_blacklist(self, peer: ID) -> None:
        self.blacklist.add(peer)

    def remove_from_blacklist(self, peer: ID) -> None:
        self.blacklist.discard(peer)


class FakeHost:
    def __init__(self, peers: list[ID]) -> None:
        self.host = FakeLibHost(peers)
        self.pubsub = FakePubsub()
        self.router = type("Router", (), {"scorer": FakeScorer()})()


async def test_scores_are_looked_at_only_after_a_rejection(
    autojump_clock: trio.testing.MockClock, me: Identity, peer: Identity
) -> None:
    gossip = Gossip(identity=me, inbound=FakeInbound(), outbox=MeshLink(me.node_id).outbox)
    honest = ID(b"honest")
    host = FakeHost([peer.peer_id, honest])
    scorer = host.router.scorer
    async with trio.open_nursery() as nursery:
        nursery.start_soon(gossip.police, host)
        await trio.sleep(60)
        assert scorer.looked == 0  # idle: nothing rejected, nothing looked at (it was 2 a second)

        scorer.scores[peer.peer_id] = DISCONNECT_SCORE - 5  # what many rejections from it did
        assert not gossip.validate(peer.peer_id, pubsub_message(peer, b"not an envelope"))
        rejected_at = trio.current_time()
        while peer.peer_id not in host.host.disconnected:
            await trio.sleep(0.1)
        assert trio.current_time() - rejected_at <= POLICE_EVERY + 0.2
        assert gossip.stats.penalised == 1 and host.pubsub.blacklist == {peer.peer_id}
        assert honest in host.host.peers

        looked = scorer.looked
        await trio.sleep(60)
        assert scorer.looked == looked  # nothing rejected since: no more looks
        await trio.sleep(BAN_SECONDS)
        assert host.pubsub.blacklist == set()  # the ban ran out
        nursery.cancel_scope.cancel()
