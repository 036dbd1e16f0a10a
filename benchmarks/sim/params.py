"""The constants and functions the simulation and docs/scaling.md's formulas depend on, read from where the code
keeps them, so both follow when the mesh, the connection policy, the heartbeat or the anti-entropy policy change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node import catchup, heartbeat, noderecord, syncserve, topology
from node.config import Config
from node.host import Host
from node.identity import Identity
from node.wire import TOPIC

__all__ = ["Fixed", "Params", "current", "new_identity"]


@dataclass(frozen=True)
class Fixed:
    """A count that does not depend on its argument: what ``--set peer_target=6`` puts in place of a function of
    the cluster's size (the fixed targets before issue 13's fourth round)."""

    value: int

    def __call__(self, _: int) -> int:
        return self.value


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
    gossip_peers: Callable[[int], int]
    """Given a node's connected peers outside its mesh, how many it tells IHAVE each heartbeat at most: the
    router's own count (``_get_adaptive_gossip_peers_count``; the node picks that many of them, or all)."""
    record_interval: float
    """Seconds between a node's records (``--heartbeat``)."""
    nodes_per_beat: int | None
    """Beyond this many nodes, records that say nothing new are spaced out to ``record_interval`` x N / this
    (``node/heartbeat.py``); None: never spaced out."""
    peer_target: Callable[[int], int]
    """Connections a node aims for in a cluster of N nodes (``node/topology.py``'s ``target``)."""
    peer_max: Callable[[int], int] | None
    """Above this many connections in a cluster of N a node closes some (``node/topology.py``'s ``ceiling``);
    None: never."""
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
    record_refresh: float | None = None
    """Seconds between unchanged records up to ``nodes_per_beat`` nodes once every node knows lost notices
    (``node/heartbeat.py``'s REFRESH; at least ``record_interval``); None: ``record_interval``, as before."""
    record_cap: float = noderecord.MAX_HEARTBEAT
    """The longest interval a record may promise: unchanged records are never spaced out further."""


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
    records_every = getattr(catchup, "RECORDS_EVERY", None)
    refresh = getattr(heartbeat, "REFRESH", None)
    return Params(
        degree=router.degree,
        degree_low=router.degree_low,
        degree_high=router.degree_high,
        gossip_heartbeat=float(router.heartbeat_interval),
        gossip_window=router.mcache.window_size,
        gossip_peers=partial(router._get_adaptive_gossip_peers_count, TOPIC),
        record_interval=config.heartbeat,
        nodes_per_beat=per_beat if isinstance(per_beat, int) else None,
        peer_target=topology.target,
        peer_max=topology.ceiling,
        sync_interval=catchup.SYNC_INTERVAL,
        sync_peers=int(sync_peers) if isinstance(sync_peers, int) else None,
        records_every=float(records_every) if isinstance(records_every, int | float) else None,
        max_node_records=syncserve.MAX_NODE_RECORDS,
        inbound_cap=int(host.host.get_network()._inbound_limiter.total_tokens),  # type: ignore[attr-defined]
        record_refresh=max(float(refresh), config.heartbeat) if isinstance(refresh, int | float) else None,
    )
