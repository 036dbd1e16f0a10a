"""The connection target grows with the cluster (node/topology.py): every connection costs CPU while the mesh is
idle, and a fixed 6-12 made an idle 10-node cluster twice as dear as 2 did. Against fakes, on a virtual clock."""

from __future__ import annotations

from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from node import topology
from node.config import Config
from node.gossip import MeshStats
from node.peering import Peering
from node.topology import MAINTAIN_EVERY, PEER_MIN, PEER_TARGET, SETTLE, ceiling, target
from tests.mesh.test_thirty import FakeHost, address, new_identity, queued


@pytest.mark.parametrize(
    ("members", "expected"),
    [(1, 3), (2, 3), (8, 3), (9, 4), (10, 4), (16, 4), (17, 5), (30, 5), (32, 5), (33, 6), (1000, 6)],
)
def test_the_target_is_about_log2_of_the_members_bounded(members: int, expected: int) -> None:
    assert target(members) == expected
    assert PEER_MIN <= target(members) <= PEER_TARGET and ceiling(members) == 2 * expected


def peering_of(tmp_path: Path, host: FakeHost, size: list[int], members: list[str] | None = None) -> Peering:
    p = Peering(
        config=Config(data_dir=tmp_path),
        stats=MeshStats(),
        members=(lambda: list(members)) if members is not None else None,
        size=lambda: size[0],
    )
    p._host = p.topology.host = host  # type: ignore[assignment]
    return p


async def test_a_node_tops_up_as_the_registry_learns_the_cluster_grew(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """An early joiner of a 4-node cluster keeps 3 connections; once its registry holds 30 members it dials up to 5
    from the peers it heard of, without a new exchange."""
    size = [4]
    others = [new_identity().peer_id for _ in range(29)]
    host = FakeHost([others[0]])
    p = peering_of(tmp_path, host, size, [address(peer_id, 4000 + i) for i, peer_id in enumerate(others)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(p._maintain)
        await trio.sleep(MAINTAIN_EVERY + 0.1)
        first = queued(p)
        assert len(first) == target(4) - 1 == 2
        host.host.connected.extend(first)
        p._queued.clear()  # the dialer took them, and they connected
        await trio.sleep(MAINTAIN_EVERY * 3)
        assert queued(p) == []  # at its target: nothing more
        size[0] = 30
        await trio.sleep(MAINTAIN_EVERY)
        more = queued(p)
        nursery.cancel_scope.cancel()
    assert len(more) == target(30) - target(4) == 2 and not set(more) & set(host.host.connected)


async def test_a_ten_node_cluster_trims_a_hub_to_twice_its_target(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """With 10 members a node keeps at most 8 connections (it kept 12 with the fixed PEER_MAX, each one pinged,
    gossiped over and kept up by pubsub)."""
    peers = [new_identity().peer_id for _ in range(9)]
    host = FakeHost(list(peers))
    p = peering_of(tmp_path, host, [10])
    for peer_id in peers:
        p.topology.connected(peer_id)
    await trio.sleep(SETTLE)
    await p.topology.trim()
    assert len(host.host.connected) == ceiling(10) == 8
    trimmed = host.host.closed[0]
    assert p.topology.refuse(trimmed) is False  # back at the ceiling: a trimmed peer is no longer refused
    host.host.connected.append(new_identity().peer_id)
    assert p.topology.refuse(trimmed) is True  # above it, it is


async def test_the_cluster_size_is_at_least_the_connections(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    """Before the registry has heard anyone (or if it fails), the connections say the cluster is at least that big,
    so a bootstrap node everyone dialled is not trimmed to a 2-node cluster's ceiling."""
    peers = [new_identity().peer_id for _ in range(20)]
    host = FakeHost(list(peers))
    p = peering_of(tmp_path, host, [1])
    assert p.topology.members() == 21 and p.topology.target() == target(21)

    def broken() -> int:
        raise RuntimeError("registry")

    p.topology._size = broken
    assert p.topology.members() == 21
    assert topology.Topology(stats=MeshStats()).members() == 1  # no host yet


class Peerstore:
    def addrs(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        return [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4999")]


class StoreHost(FakeHost):
    """A fake host whose peerstore knows an address for every peer (what ``redial`` dials)."""

    def __init__(self, connected: list[ID]) -> None:
        super().__init__(connected)
        self.host.get_peerstore = Peerstore  # type: ignore[attr-defined]


def dials_of(p: Peering) -> list[ID]:
    """Replace the peering's dial with a recorder whose dials connect nowhere."""
    dialled: list[ID] = []

    async def dial(info: PeerInfo, *, known: bool = False) -> bool:
        dialled.append(info.peer_id)
        return False

    p._dial = dial  # type: ignore[method-assign]
    return dialled


async def run_peering(p: Peering, host: FakeHost, bootstrap: ID, seconds: float) -> None:
    """The bootstrap keeper, the top-up and a redial of the bootstrap peer (it just closed us), for ``seconds``."""
    async with trio.open_nursery() as nursery:
        p._nursery = nursery
        nursery.start_soon(p._maintain)
        nursery.start_soon(p._keep_connected, address(bootstrap, 3999))
        p.redial(bootstrap)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_a_node_one_short_after_a_hub_trimmed_it_tops_up_elsewhere(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """At 30 nodes (target 5) a node that its bootstrap node trimmed holds 4: it neither redials the bootstrap node
    nor dials it as its bootstrap peer (the hub would refuse it or trim someone else: the churn of issue 13), and
    tops up from the other members instead."""
    bootstrap, *others = [new_identity().peer_id for _ in range(29)]
    host = StoreHost(others[:4])
    p = peering_of(tmp_path, host, [30], [address(peer_id, 4000 + i) for i, peer_id in enumerate([bootstrap, *others])])
    dialled = dials_of(p)
    await run_peering(p, host, bootstrap, 30.0)
    topped_up = queued(p)
    assert bootstrap not in dialled and bootstrap not in topped_up
    assert len(topped_up) == 1 and topped_up[0] in others[4:]


@pytest.mark.parametrize("left", [0, 2])
async def test_a_node_that_lost_most_of_its_peers_redials_at_once(
    tmp_path: Path, autojump_clock: trio.abc.Clock, left: int
) -> None:
    """A partition or a restart leaves a node with fewer than target - 1: it dials the lost peer back within a
    second (REDIAL_BACKOFF) and its bootstrap peer at once, as before."""
    bootstrap, *others = [new_identity().peer_id for _ in range(29)]
    host = StoreHost(others[:left])
    p = peering_of(tmp_path, host, [30])
    dialled = dials_of(p)
    await run_peering(p, host, bootstrap, 1.0)
    assert dialled.count(bootstrap) >= 2  # the bootstrap keeper's dial, and the redial's


class NegativeCache:
    def __init__(self) -> None:
        self.blocked: list[str] = []

    def mark_failed(self, peer_id: str) -> None:
        self.blocked.append(peer_id)


def blocking_peering(tmp_path: Path, peers: list[ID]) -> tuple[Peering, FakeHost, NegativeCache]:
    """A 10-member node connected to ``peers`` whose swarm has a negative cache (what ``hold_off`` fills)."""
    host = FakeHost(list(peers))
    cache = NegativeCache()
    host.host._negative_peer_cache = cache  # type: ignore[attr-defined]
    host.host.get_network = lambda: host.host  # type: ignore[attr-defined]
    return peering_of(tmp_path, host, [10]), host, cache


async def test_a_refused_peer_is_blocked_for_the_librarys_own_dials(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """A hub refuses a peer it trimmed; pubsub's stream open after the close would dial it straight back (a
    refusal loop several times a second), so the refused peer goes into the swarm's negative cache."""
    peers = [new_identity().peer_id for _ in range(12)]
    p, host, cache = blocking_peering(tmp_path, peers)
    p.topology._trimmed[peers[0]] = trio.current_time() + topology.HOLD
    async with trio.open_nursery() as nursery:
        p._nursery = nursery
        assert p._refuse(peers[0]) is True
    assert cache.blocked == [str(peers[0])] and peers[0] not in host.host.connected


async def test_a_trimmed_peer_is_blocked_for_the_librarys_own_dials(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """Right after a trim, pubsub or a ping may still open a stream to the peer, and the swarm would dial it back
    (then we refuse it): the trimmed peer is blocked as a refused one is."""
    peers = [new_identity().peer_id for _ in range(9)]
    p, host, cache = blocking_peering(tmp_path, peers)
    for peer_id in peers:
        p.topology.connected(peer_id)
    await trio.sleep(SETTLE)
    await p.topology.trim()
    assert cache.blocked == [str(host.host.closed[0])]


def test_remember_parses_each_address_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peer exchange and the registry's members tell the same addresses again and again: each text is parsed
    once (a multiaddr parse took about 0.15 ms), in a cache of at most MAX_PARSED."""
    parses: list[str] = []
    parse = topology.info_from_p2p_addr

    def counted(addr: multiaddr.Multiaddr) -> PeerInfo:
        parses.append(str(addr))
        return parse(addr)

    monkeypatch.setattr(topology, "info_from_p2p_addr", counted)
    monkeypatch.setattr(topology, "MAX_PARSED", 5)
    me, a, b = (new_identity().peer_id for _ in range(3))
    told = [address(a, 4001), address(a, 4002), address(b, 4003), address(me, 4004), "/ip4/1.2.3.4/tcp/1"]
    t = topology.Topology(stats=MeshStats())
    for _ in range(2):
        assert t.remember(told, me) == [a, b]
        assert [str(x) for x in t.known[a].addrs] == ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4002"]
        assert [str(x) for x in t.known[b].addrs] == ["/ip4/127.0.0.1/tcp/4003"]
    assert len(parses) == 5  # once each, the one without /p2p/ (refused) too
    t.remember([address(b, 4005)], me)  # a sixth text: the least recently told goes
    assert len(t._parsed) == 5 and address(a, 4001) not in t._parsed
