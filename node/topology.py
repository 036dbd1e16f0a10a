"""How many connections a node keeps, and to whom: the target as a function of the cluster's size, the peers
heard of (where a node short of connections tops up), and trimming a node that holds too many.

``node/peering.py`` dials; this module decides. Every connection costs CPU while the mesh is idle (its pings,
the gossip copies each message makes over it, pubsub's per-peer upkeep), so a node keeps only as many as a
gossip mesh of the cluster's size needs: about log2 of the members, between PEER_MIN and PEER_TARGET.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from .gossip import MeshStats
from .host import Host

__all__ = [
    "HOLD",
    "MAINTAIN_EVERY",
    "MAX_EXCHANGED",
    "MAX_KNOWN",
    "MAX_PARSED",
    "PEER_MAX",
    "PEER_MIN",
    "PEER_TARGET",
    "SETTLE",
    "Topology",
    "ceiling",
    "hold_off",
    "target",
]

log = logging.getLogger("cmnode.p2p")

PEER_MIN = 3
"""The fewest connections a node aims for, whatever the cluster's size: gossipsub's lower degree D_low
(node/host.py), so a node's gossip mesh can form, and two links to spare when one goes."""
PEER_TARGET = 6
"""The most a node aims for (gossipsub's degree D is lower: node/host.py). At 30 nodes, with 2 connections each,
the mesh fell apart (the bootstrap node pruned its gossip mesh and the rest hung on one link each); with 6 to 12
each, an idle 10-node cluster cost twice the CPU it did with 2. The target in between grows with the cluster
(``target``)."""
PEER_MAX = 2 * PEER_TARGET
"""The most connections a node keeps in the largest clusters; in general ``ceiling``: twice the target."""
MAINTAIN_EVERY = 2.0
"""Seconds between two checks of the connection count (topping up from known peers, trimming)."""
SETTLE = 30.0
"""A connection younger than this is never trimmed: a newcomer first learns other peers through it."""
HOLD = 60.0
"""A trimmed peer is not dialled by us, and (while we are above the ceiling) not accepted from, for this long; a
peer we lost is not chosen to top up for as long (its own redial covers it)."""
MAX_KNOWN = 1000
MAX_EXCHANGED = 200
MAX_PARSED = 2000
"""Address texts whose parse ``Topology.remember`` keeps (the least recently told forgotten first)."""


def target(members: int) -> int:
    """Connections a node aims for in a cluster of ``members`` nodes (itself included): ceil(log2 members),
    bounded to [PEER_MIN, PEER_TARGET]. A random graph whose nodes each dial that many others is connected
    with a high probability and few hops across (about log(N) / log(degree)); each node also accepts others'
    dials, so it holds about twice as many on average. 3 up to 8 nodes, 4 up to 16, 5 up to 32, 6 beyond."""
    return max(PEER_MIN, min(PEER_TARGET, math.ceil(math.log2(max(members, 2)))))


def ceiling(members: int) -> int:
    """Above this many connections a node trims: twice its target (a bootstrap node that everyone dialled
    first need not stay connected to the whole mesh)."""
    return 2 * target(members)


def hold_off(host: Host, peer_id: ID) -> None:
    """A peer we trimmed or refused goes into the swarm's negative cache (what a failed dial sets, 60 s in
    py-libp2p). Pubsub and our other users of the connection may still open a stream to it after we closed it,
    and ``new_stream`` then dials the peer, which we refuse again: at 30 nodes the bootstrap node dialled a peer it
    had just trimmed 4 times a second for 8 s. Blocked, those implicit dials fail at once; our own dials lift
    the block first (``Peering._dial``). The cache is the swarm's private attribute: without it, nothing is
    blocked (docs/py-libp2p.md, "A failed dial blocks the peer for 60 s")."""
    with contextlib.suppress(Exception):
        network: Any = host.host.get_network()
        network._negative_peer_cache.mark_failed(str(peer_id))


class Topology:
    """The connection-count policy of one node; ``Peering`` dials what ``top_up`` chooses, and runs
    ``maintain``."""

    def __init__(
        self,
        *,
        stats: MeshStats,
        members: Callable[[], list[str]] | None = None,
        size: Callable[[], int] | None = None,
    ) -> None:
        """``members``: the addresses of the nodes the registry knows (where a node short of connections looks
        when peer exchange told it too few); ``size``: how many nodes the registry holds as up, this one
        included (what the target follows)."""
        self.stats = stats
        self._members = members
        self._size = size
        self.host: Host | None = None
        self.known: OrderedDict[ID, PeerInfo] = OrderedDict()
        """Peers heard of by peer exchange, newest last (bounded by MAX_KNOWN): where ``top_up`` looks."""
        self._since: dict[ID, float] = {}
        """When each connected peer connected (trio time; forgotten on disconnect)."""
        self._held: dict[ID, float] = {}
        """Peers trimmed or lost, until when they are not chosen (bounded: pruned every MAINTAIN_EVERY)."""
        self._trimmed: dict[ID, float] = {}
        """Peers we trimmed, until when they are refused while we are above the ceiling (pruned likewise)."""
        self.bootstrap: set[ID] = set()
        self._parsed: OrderedDict[str, tuple[ID, multiaddr.Multiaddr] | None] = OrderedDict()
        """Each address text told, parsed: its peer and the address without /p2p/ (None: not one to dial)."""

    # -- the numbers ---------------------------------------------------------------------------------

    def members(self) -> int:
        """The cluster's size as this node sees it: the registry's up nodes, or at least who it is connected to."""
        connected = len(self.host.host.get_connected_peers()) + 1 if self.host is not None else 1
        counted = 0
        if self._size is not None:
            with contextlib.suppress(Exception):  # a registry failure: what the connections say
                counted = self._size()
        return max(counted, connected)

    def target(self) -> int:
        return target(self.members())

    def ceiling(self) -> int:
        return ceiling(self.members())

    def enough(self) -> bool:
        """Whether this node holds its target: nothing to top up."""
        return self.host is not None and len(self.host.host.get_connected_peers()) >= self.target()

    def wants_back(self) -> bool:
        """Whether a lost peer or a bootstrap peer is worth dialling back: only when this node is short by more
        than one connection (below ``target - 1``, never below PEER_MIN). One short is what a node holds right
        after a hub trimmed it (``trim``); dialling the hub back then was refused, or accepted and made the hub
        trim someone else, so at 30 nodes the bootstrap node saw about two new connections a second. One short
        is topped up from other known peers instead (``top_up``; the lost peer is held off meanwhile), while a
        node cut off by a partition or a restart (all or most of its peers gone) still redials them at once."""
        if self.host is None:
            return False
        return len(self.host.host.get_connected_peers()) < max(PEER_MIN, self.target() - 1)

    # -- what peering tells it ------------------------------------------------------------------------

    def connected(self, peer_id: ID) -> None:
        self._since.setdefault(peer_id, trio.current_time())

    def disconnected(self, peer_id: ID) -> None:
        self._since.pop(peer_id, None)

    def hold(self, peer_id: ID) -> None:
        """A peer we lost: not a top-up choice for HOLD (its redial covers it)."""
        self._held[peer_id] = max(self._held.get(peer_id, 0.0), trio.current_time() + HOLD)

    def remember(self, addresses: list[Any], me: ID) -> list[ID]:
        """Peer exchange: remember the peers at ``addresses`` (multiaddrs with /p2p/); returns their IDs."""
        candidates: dict[ID, PeerInfo] = {}
        for address in addresses[:MAX_EXCHANGED]:
            parsed = self._parse(str(address))
            if parsed is None or parsed[0] == me:
                continue
            peer_id, addr = parsed
            if peer_id in candidates:
                candidates[peer_id].addrs.append(addr)
            else:
                candidates[peer_id] = PeerInfo(peer_id, [addr])
        for peer_id, info in candidates.items():
            self.known.pop(peer_id, None)
            self.known[peer_id] = info
        while len(self.known) > MAX_KNOWN:
            self.known.popitem(last=False)
        return list(candidates)

    def _parse(self, text: str) -> tuple[ID, multiaddr.Multiaddr] | None:
        """``text`` as a peer and its address, parsed once (a multiaddr's parse took about 0.15 ms, and the same
        few dozen addresses are told again and again: by peer exchange, and the registry's members while short)."""
        if text in self._parsed:
            self._parsed.move_to_end(text)
            return self._parsed[text]
        parsed = None
        with contextlib.suppress(Exception):
            info = info_from_p2p_addr(multiaddr.Multiaddr(text))
            parsed = (info.peer_id, info.addrs[0])
        self._parsed[text] = parsed
        while len(self._parsed) > MAX_PARSED:
            self._parsed.popitem(last=False)
        return parsed

    # -- deciding --------------------------------------------------------------------------------------

    def top_up(self, among: list[ID], busy: set[ID]) -> list[PeerInfo]:
        """Random peers of ``among`` (known, not connected, not ``busy`` being dialled, not held) to dial, as many
        as this node is short of its target (``busy`` counted as connections to be)."""
        host = self.host
        if host is None:
            return []
        room = self.target() - len(host.host.get_connected_peers()) - len(busy)
        if room <= 0:
            return []
        now = trio.current_time()
        chosen = [
            peer_id
            for peer_id in among
            if peer_id in self.known
            and peer_id not in busy
            and self._held.get(peer_id, now) <= now
            and not host.connected(peer_id)
        ]
        random.shuffle(chosen)  # so that nodes told the same list do not all pick the same few peers
        return [self.known[peer_id] for peer_id in chosen[:room]]

    def short(self, busy: int) -> bool:
        return self.host is not None and len(self.host.host.get_connected_peers()) + busy < self.target()

    def lookup_members(self, me: ID) -> None:
        """A node short of connections: the registry's members as peers heard of (a failure costs this round)."""
        if self._members is not None:
            with contextlib.suppress(Exception):
                self.remember(self._members(), me)

    def prune(self) -> None:
        """Forget the holds that ran out."""
        now = trio.current_time()
        for held in (self._held, self._trimmed):
            for peer_id in [p for p, until in held.items() if until <= now]:
                del held[peer_id]

    async def trim(self) -> None:
        """Above the ceiling, close the excess (settled connections, not our bootstrap peers, chosen at random),
        down to the ceiling. The peer's top-up finds others, and it is held off meanwhile (``refuse``)."""
        host = self.host
        assert host is not None
        peers = list(host.host.get_connected_peers())
        most = self.ceiling()
        excess = len(peers) - most
        if excess <= 0:
            return
        now = trio.current_time()
        movable = [p for p in peers if p not in self.bootstrap and now - self._since.get(p, now) >= SETTLE]
        random.shuffle(movable)
        for peer_id in movable[:excess]:
            self._held[peer_id] = self._trimmed[peer_id] = now + HOLD
            log.debug("closing the connection to %s: %d connections, more than %d", peer_id, len(peers), most)
            hold_off(host, peer_id)
            with contextlib.suppress(Exception):
                await host.host.disconnect(peer_id)
        self.stats.trimmed += min(excess, len(movable))

    def refuse(self, peer_id: ID) -> bool:
        """Whether a new connection is one to close again, quietly: a peer we trimmed, back while we are still
        above the ceiling."""
        host = self.host
        if host is None or self._trimmed.get(peer_id, 0.0) <= trio.current_time():
            return False
        return len(host.host.get_connected_peers()) > self.ceiling()
