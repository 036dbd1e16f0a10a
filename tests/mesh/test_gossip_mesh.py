"""The gossipsub mesh settles: a mesh at its degree grafts no more peers at the heartbeat unless its peers score
badly (node/host.py ``LazyGossipSub``; docs/py-libp2p.md, "Opportunistic grafting churns the mesh"). Against the
real router, no network: the heartbeat's mesh step is called directly."""

from __future__ import annotations

from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.config import Config
from node.host import DEGREE, DEGREE_HIGH, DEGREE_LOW, Host, LazyGossipSub
from node.identity import Identity
from node.wire import TOPIC


def new_identity() -> Identity:
    key_pair = create_new_key_pair()
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


def router_with(tmp_path: Path, peers: list[ID], mesh: list[ID]) -> LazyGossipSub:
    """A host's router that knows ``peers`` on the topic (gossipsub 1.1, as the node speaks) with ``mesh``."""
    host = Host(config=Config(data_dir=tmp_path, listen_address="127.0.0.1", p2p_port=0), identity=new_identity())
    router = host.router
    host.pubsub.peer_topics[TOPIC] = set(peers)
    router.mesh[TOPIC] = set(mesh)
    for peer_id in peers:
        router.peer_protocol[peer_id] = router.protocols[0]
    return router


def test_a_mesh_at_its_degree_stays_as_it_is(tmp_path: Path) -> None:
    """Every peer scores 0 (no invalid messages): py-libp2p grafted two more at each heartbeat, then pruned back to
    D past D_high (60 s backoff for the pruned), so the mesh never settled."""
    peers = [new_identity().peer_id for _ in range(12)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    for _ in range(5):
        graft, prune = router.mesh_heartbeat()
        assert not graft and not prune
    assert router.mesh[TOPIC] == set(peers[:DEGREE])


def test_a_mesh_below_its_low_degree_still_grafts_up_to_d(tmp_path: Path) -> None:
    peers = [new_identity().peer_id for _ in range(12)]
    router = router_with(tmp_path, peers, peers[: DEGREE_LOW - 2])
    graft, _ = router.mesh_heartbeat()
    assert len(graft) == DEGREE - (DEGREE_LOW - 2) and len(router.mesh[TOPIC]) == DEGREE


def test_a_mesh_of_misbehaving_peers_grafts_better_ones(tmp_path: Path) -> None:
    """Opportunistic grafting is kept for what it is for: mesh peers that forwarded invalid messages."""
    peers = [new_identity().peer_id for _ in range(12)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    for peer_id in peers[:DEGREE]:
        for _ in range(3):
            router.scorer.on_invalid_message(peer_id, TOPIC)
    graft, _ = router.mesh_heartbeat()
    assert graft and not set(graft) & set(peers[:DEGREE])
    assert DEGREE < len(router.mesh[TOPIC]) <= DEGREE_HIGH
