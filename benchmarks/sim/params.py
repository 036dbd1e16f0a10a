"""The constants the simulation and docs/scaling.md's formulas depend on, read from where the code keeps them, so
both follow when the mesh, the heartbeat or the anti-entropy policy change."""

from __future__ import annotations

from dataclasses import dataclass

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node import catchup, heartbeat, peering, sync
from node.config import Config
from node.host import Host
from node.identity import Identity
from node.wire import TOPIC

__all__ = ["GOSSIP_FACTOR", "GOSSIP_LAZY", "Params", "current", "new_identity"]

GOSSIP_LAZY = 6
GOSSIP_FACTOR = 0.25
"""py-libp2p 0.8.1 with adaptive gossip off sends IHAVE to ``max(6, int(0.25 * candidates))`` peers per heartbeat
(``GossipSub._get_adaptive_gossip_peers_count``): hard-coded there, so copied here."""


@dataclass(frozen=True)
class Params:
    degree: int
    """Gossipsub's D: mesh peers each node grafts."""
    degree_low: int
    degree_high: int
    gossip_heartbeat: float
    """Seconds between gossipsub heartbeats (IHAVE emission, mesh upkeep)."""
    gossip_window: int
    """Heartbeats of message IDs an IHAVE lists."""
    record_interval: float
    """Seconds between a node's records (``--heartbeat``)."""
    nodes_per_beat: int | None
    """Beyond this many nodes, records that say nothing new are spaced out to ``record_interval`` x N / this
    (``node/heartbeat.py``); None: never spaced out."""
    peer_target: int
    """Connections a node seeks through peer exchange (besides its bootstrap peer)."""
    peer_max: int | None
    """Above this many connections a node closes some (``Peering._trim``); None: never."""
    sync_interval: float
    """Seconds between anti-entropy rounds."""
    sync_peers: int | None
    """Peers asked per anti-entropy interval; None: every connected peer."""
    records_every: float | None
    """A node's periodic rounds ask for node records at most this often (seconds); None: every round does."""
    max_node_records: int
    """Node records sent with the first page of every catch-up round, at most."""
    inbound_cap: int
    """Inbound connections a node's swarm admits at once (py-libp2p's ``max_connections - min_connections``)."""
    gossip_peers: int | None = None
    """Peers outside the mesh told IHAVE per heartbeat, at most (``node/host.py`` GOSSIP_PEERS); None: py-libp2p's
    own count, ``max(GOSSIP_LAZY, GOSSIP_FACTOR x candidates)``."""


def new_identity() -> Identity:
    key_pair = create_new_key_pair()
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


def current() -> Params:
    """The parameters as the tree has them now (the router as ``Host`` builds it, never started)."""
    config = Config()
    host = Host(config=config, identity=new_identity())
    router = host.router
    sync_peers = getattr(catchup, "SYNC_PEERS", None)
    per_beat = getattr(heartbeat, "NODES_PER_BEAT", None)
    peer_max = getattr(peering, "PEER_MAX", None)
    records_every = getattr(catchup, "RECORDS_EVERY", None)
    return Params(
        degree=router.degree,
        degree_low=router.degree_low,
        degree_high=router.degree_high,
        gossip_heartbeat=float(router.heartbeat_interval),
        gossip_window=router.mcache.window_size,
        record_interval=config.heartbeat,
        nodes_per_beat=per_beat if isinstance(per_beat, int) else None,
        peer_target=peering.PEER_TARGET,
        peer_max=peer_max if isinstance(peer_max, int) else None,
        sync_interval=catchup.SYNC_INTERVAL,
        sync_peers=int(sync_peers) if isinstance(sync_peers, int) else None,
        records_every=float(records_every) if isinstance(records_every, int | float) else None,
        max_node_records=sync.MAX_NODE_RECORDS,
        inbound_cap=int(host.host.get_network()._inbound_limiter.total_tokens),  # type: ignore[attr-defined]
        gossip_peers=router._get_adaptive_gossip_peers_count(TOPIC, 10**6),  # what the router tells at most
    )
