"""Where gossipsub sends a message (node/host.py ``LazyGossipSub``; docs/py-libp2p.md, "Our own messages go only
to the mesh"). Against the real router, no network: its choice of peers is called directly."""

from __future__ import annotations

from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.config import Config
from node.host import DEGREE, Host, LazyGossipSub
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
