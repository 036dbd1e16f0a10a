"""What keeps a mesh of 30 nodes whole and quiet, against fakes: peer exchange dials up to the connection target
(node/topology.py: it grows with the cluster, tests/mesh/test_topology.py), a node with too many connections trims
them, records that say nothing new are spaced out beyond 10 nodes, and a
peer's signed pubsub record is checked once, not on every RPC (the real 30-node figures: benchmarks/mesh.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from node import senderrecord, topology
from node.config import Config
from node.gossip import MeshStats
from node.heartbeat import Heartbeat, Vitals
from node.host import Host
from node.identity import Identity
from node.mesh import REPAIR_EVERY, UNSUBSCRIBED_FOR, cut_unsubscribed
from node.noderecord import NodeRecord, sign_record
from node.peering import Peering
from node.pubsub import GOSSIP_PEERS
from node.registry import Registry
from node.topology import SETTLE
from node.wire import TOPIC

D_LOW = 3
"""Gossipsub's lower mesh degree (node/host.py): fewer connections than this and the mesh cannot form."""
THIRTY = 30


def new_identity() -> Identity:
    key_pair = create_new_key_pair()
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


class FakeNetwork:
    def __init__(self, connected: list[ID]) -> None:
        self.connected = connected
        self.closed: list[ID] = []

    def get_connected_peers(self) -> list[ID]:
        return list(self.connected)

    async def disconnect(self, peer_id: ID) -> None:
        self.connected.remove(peer_id)
        self.closed.append(peer_id)


class FakeHost:
    def __init__(self, connected: list[ID]) -> None:
        self.peer_id = new_identity().peer_id
        self.host = FakeNetwork(connected)

    def connected(self, peer_id: ID) -> bool:
        return peer_id in self.host.connected


def address(peer_id: ID, port: int) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id.to_base58()}"


def queued(p: Peering) -> list[ID]:
    out = []
    while True:
        try:
            out.append(p._dial_recv.receive_nowait().peer_id)
        except trio.WouldBlock:
            return out


@pytest.mark.trio
async def test_peer_exchange_dials_up_to_the_gossip_degree(tmp_path: Path) -> None:
    """With 2 connections (the old target) a node's gossip mesh could not reach D_low and 30 nodes fell apart."""
    p = Peering(config=Config(data_dir=tmp_path), stats=MeshStats(), size=lambda: THIRTY)
    bootstrap = new_identity().peer_id
    p._host = p.topology.host = FakeHost([bootstrap])  # type: ignore[assignment]
    others = [new_identity().peer_id for _ in range(20)]
    p.meet([address(peer_id, 4000 + i) for i, peer_id in enumerate(others)])
    dialled = queued(p)
    assert len(dialled) + 1 >= D_LOW
    assert len(dialled) == topology.target(THIRTY) - 1 and set(dialled) <= set(others)


@pytest.mark.trio
async def test_known_peers_top_up_the_connections_later(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """Peers heard of once are remembered: when connections drop, the node dials them without a new exchange."""
    p = Peering(config=Config(data_dir=tmp_path), stats=MeshStats(), size=lambda: THIRTY)
    host = FakeHost([new_identity().peer_id for _ in range(topology.target(THIRTY))])
    p._host = p.topology.host = host  # type: ignore[assignment]
    others = [new_identity().peer_id for _ in range(10)]
    p.meet([address(peer_id, 4000 + i) for i, peer_id in enumerate(others)])
    assert queued(p) == []  # enough connections: nothing dialled
    host.host.connected[:3] = []
    p._top_up(list(p.topology.known))
    assert len(queued(p)) == 3


@pytest.mark.trio
async def test_a_node_with_too_many_connections_trims_settled_ones(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A bootstrap node that everyone dialled keeps twice its target, not the whole mesh; never its own bootstrap
    peers nor connections too young to have exchanged peers."""
    p = Peering(config=Config(data_dir=tmp_path), stats=MeshStats(), size=lambda: THIRTY)
    peers = [new_identity().peer_id for _ in range(29)]
    host = FakeHost(list(peers))
    p._host = p.topology.host = host  # type: ignore[assignment]
    for peer_id in peers[:25]:
        p.topology.connected(peer_id)
    await trio.sleep(SETTLE)
    for peer_id in peers[25:]:
        p.topology.connected(peer_id)  # young
    p.topology.bootstrap.add(peers[0])
    await p.topology.trim()
    most = topology.ceiling(THIRTY)
    assert len(host.host.connected) == most == 10
    assert peers[0] in host.host.connected and set(peers[25:]) <= set(host.host.connected)
    assert p.stats.trimmed == 29 - most
    trimmed = host.host.closed[0]
    p._top_up([trimmed])
    assert queued(p) == []  # held off: not dialled back by us


def record_of(identity: Identity, seq: int, heartbeat: float = 2.0) -> NodeRecord:
    record = NodeRecord(node_id=identity.node_id, name=f"n{seq % 1000}", seq=seq, at=time.time(), heartbeat=heartbeat)
    return sign_record(identity, record)


@pytest.mark.trio
@pytest.mark.parametrize(("others", "records"), [(4, 30), (29, 10)])
async def test_records_that_say_nothing_new_are_spaced_out_beyond_ten_nodes(
    autojump_clock: trio.abc.Clock, others: int, records: int
) -> None:
    """At 30 nodes a record every 2 s from each was most of the idle mesh's CPU: unchanged records go out every
    2 s x N / 10 (and say so, so peers wait 3 of those before calling the node down); up to 10 nodes, as before."""
    me = new_identity()
    registry = Registry(node_id=me.node_id, name="me", heartbeat=2.0)
    peers = [new_identity() for _ in range(others)]
    sent: list[NodeRecord] = []

    async def publish(record: NodeRecord) -> None:
        sent.append(record)
        for seq, peer in enumerate(peers):  # the others keep beating
            registry.on_record(record_of(peer, len(sent) * 100 + seq, heartbeat=record.heartbeat))

    beat = Heartbeat(identity=me, registry=registry, publish=publish, interval=2.0, name="me")
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        await trio.sleep(59.9)
        nursery.cancel_scope.cancel()
    assert abs(len(sent) - records) <= 1, len(sent)
    assert sent[-1].heartbeat == pytest.approx(2.0 * max(1, (others + 1) / 10))


@pytest.mark.trio
async def test_a_changed_record_goes_out_at_the_next_tick(autojump_clock: trio.abc.Clock) -> None:
    me = new_identity()
    registry = Registry(node_id=me.node_id, name="me", heartbeat=2.0)
    for seq in range(29):
        registry.on_record(record_of(new_identity(), seq + 1, heartbeat=60.0))
    running = [0]
    sent: list[NodeRecord] = []

    async def publish(record: NodeRecord) -> None:
        sent.append(record)

    beat = Heartbeat(identity=me, registry=registry, publish=publish, interval=2.0, name="me",
                     vitals=lambda: Vitals(running=running[0]))  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        await trio.sleep(2.5)
        assert len(sent) == 1  # nothing new yet: spaced out to 6 s
        running[0] = 1
        await trio.sleep(2.0)
        assert len(sent) == 2 and sent[-1].running == 1
        nursery.cancel_scope.cancel()


def test_a_peers_signed_record_is_checked_once_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p verified the sender's signed record on every pubsub RPC, duplicates included."""
    checked: list[bytes] = []

    def consume(msg: Any, host: Any, peer_id: ID) -> bool:
        record: bytes = msg.senderRecord
        checked.append(record)
        return record != b"forged"

    monkeypatch.setattr(senderrecord, "_consume", consume)
    host, peer = FakeHost([]), new_identity().peer_id
    first, second = rpc_pb2.RPC(senderRecord=b"record-1"), rpc_pb2.RPC(senderRecord=b"record-2")
    assert all(senderrecord.consume(first, host, peer) for _ in range(5))
    assert checked == [b"record-1"]
    assert senderrecord.consume(second, host, peer) and checked[-1] == b"record-2"
    forged = rpc_pb2.RPC(senderRecord=b"forged")
    assert not senderrecord.consume(forged, host, peer) and not senderrecord.consume(forged, host, peer)
    assert checked.count(b"forged") == 2  # a refused record is never taken as checked
    assert senderrecord.consume(rpc_pb2.RPC(), host, peer)  # none attached: nothing to check


class FakePubsub:
    def __init__(self) -> None:
        self.peer_topics: dict[str, set[ID]] = {"jobs": set()}


@pytest.mark.trio
async def test_a_connection_without_pubsub_is_cut_so_both_ends_start_afresh(autojump_clock: trio.abc.Clock) -> None:
    """At 30 nodes a third of the connections carried no gossip: pubsub never heard the peer's subscription."""
    quiet, fine, late = (new_identity().peer_id for _ in range(3))
    host = FakeHost([quiet, fine])
    pubsub = FakePubsub()
    pubsub.peer_topics["jobs"].add(fine)
    host.pubsub = pubsub  # type: ignore[attr-defined]
    stats = MeshStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cut_unsubscribed, host, stats)
        await trio.sleep(UNSUBSCRIBED_FOR - REPAIR_EVERY)
        host.host.connected.append(late)
        await trio.sleep(REPAIR_EVERY * 2 + 0.1)
        assert host.host.closed == [quiet] and stats.unsubscribed == 1
        pubsub.peer_topics["jobs"].add(late)  # its hello came in time
        await trio.sleep(UNSUBSCRIBED_FOR * 2)
        assert host.host.closed == [quiet]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_node_short_of_connections_dials_the_members_the_registry_knows(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """An early joiner heard of few peers by exchange; the node records say where every member listens."""
    members = [new_identity().peer_id for _ in range(20)]
    p = Peering(
        config=Config(data_dir=tmp_path),
        stats=MeshStats(),
        members=lambda: [address(peer_id, 4000 + i) for i, peer_id in enumerate(members)],
        size=lambda: len(members) + 1,
    )
    p._host = p.topology.host = FakeHost([members[0]])  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p._maintain)
        await trio.sleep(topology.MAINTAIN_EVERY + 0.1)
        nursery.cancel_scope.cancel()
    dialled = queued(p)
    assert len(dialled) == topology.target(len(members) + 1) - 1 and members[0] not in dialled


def test_every_pubsub_rpc_says_when_its_peer_was_last_heard(monkeypatch: pytest.MonkeyPatch) -> None:
    """What spares a talking peer its liveness ping (node/liveness.py): any RPC, with or without a record."""
    monkeypatch.setattr(senderrecord, "_consume", lambda msg, host, peer_id: True)
    host, talker, stranger = FakeHost([]), new_identity().peer_id, new_identity().peer_id
    assert senderrecord.quiet_for(host, talker) == float("inf")
    senderrecord.consume(rpc_pb2.RPC(), host, talker)
    assert senderrecord.quiet_for(host, talker) < 1.0
    senderrecord.consume(rpc_pb2.RPC(senderRecord=b"record"), host, talker)
    assert senderrecord.quiet_for(host, talker) < 1.0 and senderrecord.quiet_for(host, stranger) == float("inf")


def test_the_heartbeat_announces_messages_to_a_few_peers_outside_the_mesh(tmp_path: Path) -> None:
    """IHAVE goes to GOSSIP_PEERS (3) peers outside the gossip mesh at each heartbeat, not py-libp2p's max(6, 25 %)
    of them: with node records always in the window, that was an RPC a second to each of them (node/host.py)."""
    host = Host(config=Config(data_dir=tmp_path, listen_address="127.0.0.1", p2p_port=0), identity=new_identity())
    router, peers = host.router, [new_identity().peer_id for _ in range(11)]
    router.mesh[TOPIC] = set(peers[:3])
    host.pubsub.peer_topics[TOPIC] = set(peers)
    for peer_id in peers:
        router.peer_protocol[peer_id] = router.protocols[0]
    assert router.gossip_heartbeat() == {}  # nothing in the window: nothing to announce
    router.mcache.put(rpc_pb2.Message(from_id=peers[5].to_bytes(), seqno=b"\0" * 8, data=b"{}", topicIDs=[TOPIC]))
    told = router.gossip_heartbeat()
    assert len(told) == GOSSIP_PEERS == 3 and not set(told) & router.mesh[TOPIC]
