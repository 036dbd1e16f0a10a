"""The cluster's connections and gossipsub mesh as cmnode and py-libp2p 0.8.1 build them, and what gossip and
anti-entropy cost on them: pure counting, no I/O.

Connections (``node/peering.py``): every node bootstraps through node 0 (as ``benchmarks/mesh.py`` starts a
cluster) while node 0's swarm admits inbound connections (its inbound cap); a node that finds it full bootstraps
through a random earlier node instead (an operator's second bootstrap address). Then peer exchange: the bootstrap
peer's sync answer lists its peers (``MAX_EXCHANGED`` of them), and the node dials random ones until it has
``PEER_TARGET`` connections. Every node's swarm refuses inbound connections beyond the cap. Every
``JOINS_PER_SETTLE`` joins, connection upkeep runs: a node above ``PEER_MAX`` closes random connections, one
below ``PEER_TARGET`` dials peers of its peers.

Mesh (``libp2p/pubsub/gossipsub.py``): on joining, a node grafts ``D`` random connected peers (grafts are
mutual); at each heartbeat, a node below ``D_lo`` grafts up to ``D``, one above ``D_hi`` prunes down to ``D``
(a pruned pair backs off). A published message goes to every mesh peer; a node forwards a message it sees first
to every mesh peer but the one it came from and the origin. Gossip: every heartbeat, each node sends IHAVE with
the IDs of the last ``gossip_window`` heartbeats' messages to ``gossip_peers`` (or py-libp2p's ``max(6, 0.25 x
non-mesh peers)``) of its connected non-mesh peers; IWANT follows only for a message the receiver lacks (none in a
lossless run).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from node.peering import MAX_EXCHANGED

from .params import GOSSIP_FACTOR, GOSSIP_LAZY, Params

__all__ = ["Flood", "Topology"]

SETTLE_HEARTBEATS = 3
"""Gossipsub heartbeats simulated after every node joined: the mesh is stable after one or two."""
JOINS_PER_SETTLE = 50
"""Nodes joining between two passes of connection upkeep (trimming settles after 30 s: a cluster started 50
nodes at a time, or slower)."""
SETTLE_ROUNDS = 3


@dataclass(frozen=True)
class Flood:
    """One message flooded over the mesh from ``origin``."""

    sent: list[int]
    """Copies each node sent."""
    received: list[int]
    """Copies each node received (the first, then duplicates)."""
    hops: int
    """Hops to the farthest node."""
    mean_hops: float
    """Hops to a node, on average."""
    reached: int

    @property
    def total(self) -> int:
        return sum(self.sent)


class Topology:
    """``n`` nodes' connections and topic mesh, built with ``params`` (deterministic for one ``rng``)."""

    def __init__(self, n: int, params: Params, rng: random.Random) -> None:
        self.n = n
        self.params = params
        self.conns: list[set[int]] = [set() for _ in range(n)]
        self.inbound = [0] * n
        self.refused_by_seed = 0
        """Nodes that could not bootstrap through node 0: its inbound cap was reached."""
        self._connect(rng)
        self.mesh: list[set[int]] = [set() for _ in range(n)]
        self._graft(rng)
        self._floods: dict[int, Flood] = {}

    # -- building ---------------------------------------------------------------------------------

    def _link(self, dialer: int, listener: int) -> None:
        self.conns[dialer].add(listener)
        self.conns[listener].add(dialer)
        self.inbound[listener] += 1
        self._listener[(min(dialer, listener), max(dialer, listener))] = listener

    def _unlink(self, a: int, b: int) -> None:
        self.conns[a].discard(b)
        self.conns[b].discard(a)
        self.inbound[self._listener.pop((min(a, b), max(a, b)))] -= 1

    def _admits(self, node: int) -> bool:
        return self.inbound[node] < self.params.inbound_cap

    def _connect(self, rng: random.Random) -> None:
        self._listener: dict[tuple[int, int], int] = {}
        self.boot = [0] * self.n
        for i in range(1, self.n):
            boot = 0
            if not self._admits(0):
                self.refused_by_seed += 1
                boot = rng.choice([j for j in range(i) if self._admits(j)] or [0])
            self.boot[i] = boot
            self._link(i, boot)
            room = self.params.peer_target - len(self.conns[i])
            listed = [p for p in self.conns[boot] if p != i]
            listed = rng.sample(listed, min(len(listed), MAX_EXCHANGED))
            for p in listed:
                if room <= 0:
                    break
                if p not in self.conns[i] and self._admits(p):
                    self._link(i, p)
                    room -= 1
            if i % JOINS_PER_SETTLE == 0:
                self._settle(rng)
        self._settle(rng)

    def _settle(self, rng: random.Random) -> None:
        """``Peering._maintain`` on every node, a few times: above ``peer_max`` connections close random ones (not
        the node's own bootstrap peer), below ``peer_target`` dial random peers of peers (what peer exchange told
        it) that have room."""
        target, most = self.params.peer_target, self.params.peer_max
        if most is None:
            return
        for _ in range(SETTLE_ROUNDS):
            order = list(range(self.n))
            rng.shuffle(order)
            for i in order:
                excess = len(self.conns[i]) - most
                if excess > 0:
                    movable = sorted(p for p in self.conns[i] if p != self.boot[i] or i == 0)
                    for p in rng.sample(movable, min(excess, len(movable))):
                        self._unlink(i, p)
            for i in order:
                room = target - len(self.conns[i])
                if room <= 0:
                    continue
                heard = {q for p in self.conns[i] for q in self.conns[p]} - self.conns[i] - {i}
                fit = [q for q in sorted(heard) if len(self.conns[q]) < most and self._admits(q)]
                for q in rng.sample(fit, min(room, len(fit))):
                    self._link(i, q)

    def _graft(self, rng: random.Random) -> None:
        p = self.params
        backoff: set[tuple[int, int]] = set()
        for i in range(self.n):  # joining: D random connected peers
            for peer in rng.sample(sorted(self.conns[i]), min(p.degree, len(self.conns[i]))):
                self.mesh[i].add(peer)
                self.mesh[peer].add(i)
        for _ in range(SETTLE_HEARTBEATS):
            order = list(range(self.n))
            rng.shuffle(order)
            for i in order:
                mesh = self.mesh[i]
                if len(mesh) < p.degree_low:
                    free = [q for q in sorted(self.conns[i] - mesh) if (min(i, q), max(i, q)) not in backoff]
                    for q in rng.sample(free, min(len(free), p.degree - len(mesh))):
                        mesh.add(q)
                        self.mesh[q].add(i)
                elif len(mesh) > p.degree_high:
                    for q in rng.sample(sorted(mesh), len(mesh) - p.degree):
                        mesh.discard(q)
                        self.mesh[q].discard(i)
                        backoff.add((min(i, q), max(i, q)))

    # -- what it costs ----------------------------------------------------------------------------

    @property
    def mean_connections(self) -> float:
        return sum(len(c) for c in self.conns) / self.n

    @property
    def mean_degree(self) -> float:
        """d: the mean number of mesh peers."""
        return sum(len(m) for m in self.mesh) / self.n

    def flood(self, origin: int) -> Flood:
        """A message published by ``origin``, forwarded by every node on first sight (breadth first: equal hop
        latency). Cached: the cost depends only on the origin."""
        cached = self._floods.get(origin)
        if cached is not None:
            return cached
        sent, received = [0] * self.n, [0] * self.n
        depth = [-1] * self.n
        depth[origin] = 0
        queue: deque[tuple[int, int]] = deque([(origin, -1)])
        while queue:
            node, forwarder = queue.popleft()
            for peer in self.mesh[node]:
                if peer in (forwarder, origin):
                    continue
                sent[node] += 1
                received[peer] += 1
                if depth[peer] < 0:
                    depth[peer] = depth[node] + 1
                    queue.append((peer, node))
        reached = [d for d in depth if d >= 0]
        flood = Flood(sent=sent, received=received, hops=max(depth), mean_hops=sum(reached) / max(1, len(reached) - 1),
                      reached=len(reached))  # fmt: skip
        self._floods[origin] = flood
        return flood

    def ihave_peers(self, node: int) -> int:
        """Peers ``node`` sends IHAVE to each heartbeat (when it saw any message in the window)."""
        outside = len(self.conns[node] - self.mesh[node])
        if self.params.gossip_peers is not None:
            return min(outside, self.params.gossip_peers)
        return min(outside, max(GOSSIP_LAZY, int(GOSSIP_FACTOR * outside)))

    def anti_entropy(self, rng: random.Random) -> tuple[list[int], list[int]]:
        """One anti-entropy interval: the rounds each node asks for and serves (each node asks every connected
        peer, or ``sync_peers`` random ones)."""
        asked, served = [0] * self.n, [0] * self.n
        k = self.params.sync_peers
        for i in range(self.n):
            peers = sorted(self.conns[i])
            chosen = peers if k is None else rng.sample(peers, min(k, len(peers)))
            asked[i] = len(chosen)
            for p in chosen:
                served[p] += 1
        return asked, served
