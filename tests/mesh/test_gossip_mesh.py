"""Where gossipsub sends a message and whom it grafts (node/host.py ``LazyGossipSub``; docs/py-libp2p.md, "Our own
messages go only to the mesh" and "A node in backoff with all its peers hears no gossip"). Against the real
router, no network: its choice of peers and its heartbeat's steps are called directly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from node.config import Config
from node.gossip import SCORE_PARAMS
from node.host import Host
from node.identity import Identity
from node.pubsub import DEGREE, FLAT, GOSSIP_PEERS, GRAFT_SLACK, LazyGossipSub
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


def test_our_own_messages_go_to_every_connected_peer_on_the_topic(tmp_path: Path) -> None:
    """Flood publishing (gossipsub 1.1): a job reaches all of the origin's connections at the first hop, not only
    its D mesh peers; what another node published is forwarded to the mesh only."""
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    assert router.pubsub is not None
    me = router.pubsub.my_id
    assert set(router._get_peers_to_send([TOPIC], msg_forwarder=me, origin=me)) == set(peers)
    forwarded = set(router._get_peers_to_send([TOPIC], msg_forwarder=peers[0], origin=peers[5]))
    assert forwarded == set(peers[1:DEGREE])


def test_ihave_reaches_peers_in_prune_backoff(tmp_path: Path) -> None:
    """A node whose every peer is in backoff with it (a hub that pruned them all) still hears of each message by
    IHAVE at the next heartbeat: py-libp2p left such peers out, so it heard of none but through catch-up."""
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    for peer_id in peers[DEGREE:]:
        router._add_back_off(peer_id, TOPIC, False)
    router.mcache.put(rpc_pb2.Message(from_id=peers[0].to_bytes(), seqno=b"\0" * 8, data=b"{}", topicIDs=[TOPIC]))
    told = router.gossip_heartbeat()
    assert len(told) == GOSSIP_PEERS and set(told) <= set(peers[DEGREE:])


def test_a_peer_is_grafted_only_a_few_seconds_after_its_backoff_ended(tmp_path: Path) -> None:
    """Grafting in the very second a backoff ended met the peer's own backoff, set a moment later on our PRUNE:
    refused, and both renewed for 60 s. The heartbeat waits GRAFT_SLACK past the end (go-libp2p's slack)."""
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, [])
    now = int(time.time())
    router.back_off[TOPIC] = dict.fromkeys(peers, now)  # just ended: ``_check_back_off`` says free
    graft, _ = router.mesh_heartbeat()
    assert not graft and not router.mesh[TOPIC]
    router.back_off[TOPIC] = dict.fromkeys(peers, now - GRAFT_SLACK - 1)
    graft, _ = router.mesh_heartbeat()
    assert len(graft) == DEGREE == len(router.mesh[TOPIC])


def test_the_slack_leaves_peers_without_backoff_to_graft(tmp_path: Path) -> None:
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, [])
    router.back_off[TOPIC] = dict.fromkeys(peers[:8], int(time.time()))
    graft, _ = router.mesh_heartbeat()
    assert set(graft) == set(peers[8:])


def test_equal_scores_graft_nobody_beyond_the_mesh(tmp_path: Path) -> None:
    """docs/py-libp2p.md, "Opportunistic grafting on equal scores churns the mesh": with no invalid message
    every score is 0, and py-libp2p grafted two more peers at every heartbeat (then pruned down to D past
    D_high, with a 60 s backoff each); the score passes now wait for scores that differ."""
    p = SCORE_PARAMS  # the lean scorer ``scores_flat`` relies on: only invalid messages (P4) weigh
    assert p.p4_invalid_messages.weight > 0 and p.p5_behavior_penalty_weight == p.p7_ip_colocation_weight == 0
    assert p.p1_time_in_mesh.weight == p.p2_first_message_deliveries.weight == p.p3_mesh_message_deliveries.weight == 0
    assert p.app_specific_score_fn is None
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    assert router.scorer is not None
    router.scorer.invalid_messages[peers[0]][TOPIC] = FLAT / 2  # a rejection decayed for 40 s: no longer counts
    for _ in range(3):
        graft, prune = router.mesh_heartbeat()
        assert not graft and not prune
    assert router.mesh[TOPIC] == set(peers[:DEGREE])
    assert router.scores_flat()


async def test_a_peer_with_invalid_messages_is_handled_as_before(tmp_path: Path) -> None:
    """Once a peer's count reaches FLAT, the library's passes run as they did: opportunistic grafting, and the
    mesh peer that sent invalid messages is replaced by one that sent none (PRUNE to it, GRAFT to the other)."""
    peers = [new_identity().peer_id for _ in range(10)]
    router = router_with(tmp_path, peers, peers[:DEGREE])
    assert router.scorer is not None
    router.scorer.on_invalid_message(peers[0], TOPIC)
    assert not router.scores_flat()
    graft, _ = router.mesh_heartbeat()
    assert len(graft) == 2 and not set(graft) & set(peers[:DEGREE])  # the library's opportunistic grafts

    router = router_with(tmp_path, peers, peers[:DEGREE])
    assert router.scorer is not None
    router.scorer.on_invalid_message(peers[0], TOPIC)
    sent: list[tuple[str, ID]] = []

    async def emit_prune(topic: str, peer: ID, *args: Any) -> None:
        sent.append(("prune", peer))

    async def emit_graft(topic: str, peer: ID) -> None:
        sent.append(("graft", peer))

    router.emit_prune = emit_prune  # type: ignore[method-assign]
    router.emit_graft = emit_graft  # type: ignore[method-assign]
    await router._maintain_mesh_quality(TOPIC)
    assert peers[0] not in router.mesh[TOPIC] and len(router.mesh[TOPIC]) == DEGREE
    (replacement,) = router.mesh[TOPIC] - set(peers[:DEGREE])
    assert sent == [("prune", peers[0]), ("graft", replacement)]
