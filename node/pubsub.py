"""py-libp2p's pubsub and gossipsub router as cmnode runs them: ``DirectPubsub`` (how a validated message
reaches ``node/gossip.py``) and ``LazyGossipSub`` (the mesh degrees, whom IHAVE and our own messages go to, when
to graft), with the debug trace of each job's way through a node. ``node/host.py`` builds them into the host;
each departure from the library says which section of ``docs/py-libp2p.md`` explains it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from .wire import TOPIC

__all__ = [
    "DEGREE",
    "DEGREE_HIGH",
    "DEGREE_LOW",
    "FLAT",
    "GOSSIP_PEERS",
    "GRAFT_SLACK",
    "DirectPubsub",
    "LazyGossipSub",
    "mesh_log",
    "traced_job",
]

_HELD: contextvars.ContextVar[list[rpc_pb2.Message] | None] = contextvars.ContextVar("pubsub_held", default=None)
"""The validated messages ``DirectPubsub.push_msg`` hands to ``forwarded`` once forwarded (None: not in one)."""


class DirectPubsub(Pubsub):
    """Pubsub that hands every validated message to ``deliver`` instead of a 32-slot subscription queue
    (docs/py-libp2p.md, "Subscription queues hold 32 messages"); or, when ``forwarded`` is set, to ``forwarded``
    once the library has forwarded it, awaited in the task that received it.

    The library delivers before it forwards (``push_msg``: validate, deliver, then the router queues the message
    to each peer's sending task); ``forwarded`` comes after both, so what it does costs the next hop only the
    time it runs, not trio scheduling rounds (``Gossip.forwarded``). If forwarding fails, the message goes to
    ``deliver`` as before."""

    deliver: Callable[[rpc_pb2.Message], None] = staticmethod(lambda msg: None)  # type: ignore[assignment]
    forwarded: Callable[[rpc_pb2.Message], Awaitable[None]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registering: dict[ID, trio.Lock] = {}

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if TOPIC in publish_message.topicIDs:
            held = _HELD.get()
            if held is not None:
                held.append(publish_message)
            else:
                self.deliver(publish_message)
            if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(publish_message.data)):
                mesh_log.debug("gossip validated job_id=%s", job_id)

    async def publish(self, topic_id: str | list[str], data: bytes) -> None:
        if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(data)):
            mesh_log.debug("gossip publish job_id=%s", job_id)
        await super().publish(topic_id, data)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if self.forwarded is None:
            await super().push_msg(msg_forwarder, msg)
            return
        held: list[rpc_pb2.Message] = []
        token = _HELD.set(held)  # this task's: ``notify_subscriptions`` runs in it, between validate and forward
        try:
            await super().push_msg(msg_forwarder, msg)
        except BaseException:
            for validated in held:
                self.deliver(validated)
            raise
        finally:
            _HELD.reset(token)
        for validated in held:
            await self.forwarded(validated)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        """One registration of a peer at a time ("Two connections at once leave a pubsub sending loop behind"):
        the library checks ``peers`` before it opens the stream, so two at once each started a sending loop, and
        the one whose queue the other replaced waited for ever. The second now finds the peer registered."""
        lock = self._registering.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                await super()._handle_new_peer(peer_id)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting and self._registering.get(peer_id) is lock:
                del self._registering[peer_id]


mesh_log = logging.getLogger("cmnode.p2p.mesh")
"""At debug level: each job's way through this node (published, validated, forwarded) and each change of the
gossipsub mesh, for ``benchmarks/mesh.py`` (``--node-arg=--log-level --node-arg=debug``) to explain a late job."""
_JOB_ID = re.compile(rb'^\{"type":"job","job":\{.*?"job_id":"([0-9a-f-]{36})"')


def traced_job(data: bytes) -> str | None:
    """The job ID of a gossip message that carries a job (``wire.encode``'s layout), else None; debug only."""
    match = _JOB_ID.match(data)
    return match.group(1).decode() if match else None


DEGREE, DEGREE_LOW, DEGREE_HIGH = 3, 3, 6
"""Gossipsub's mesh degrees D, D_low, D_high ("Every connection costs while idle"). Each node receives every
message once per mesh neighbour and forwards it to the others, and on an idle mesh those messages are the node
records: at 30 nodes, copies of records were most of the cluster's CPU. D = 3 instead of 4 cuts the copies by about
a third (``benchmarks/simulate.py`` at N = 30: 20 -> 14 record copies a second per node) for about 0.4 hops more
across. D_low stays 3, the fewest connections a node seeks (``node/topology.py`` PEER_MIN): a node grafts back as
soon as its mesh falls below 3, so a copy lost on one link still arrives on two others. Measured at 30 nodes
(``benchmarks/mesh.py``, two runs against one of main): idle CPU 90 -> 76-77 % of a core, a job on all others at
10 jobs/s p99 888 -> 179-484 ms."""
GOSSIP_PEERS = 3
"""IHAVE goes to this many peers outside the mesh at each heartbeat (``LazyGossipSub``)."""


GRAFT_SLACK = 3.0
"""Seconds past a prune backoff's end before this node grafts that peer (go-libp2p: two heartbeats)."""
FLAT = 0.05
"""A peer's decayed invalid-message count below which it counts as none (``LazyGossipSub.scores_flat``): 30 s
after a single rejection at SCORE_PARAMS' 10 % a second, and half the 0.1 a mesh peer replacement needs."""


class LazyGossipSub(GossipSub):
    """GossipSub whose heartbeat announces (IHAVE) recent messages to GOSSIP_PEERS peers outside the mesh, not
    py-libp2p's ``max(6, 25 %)`` of them (docs/py-libp2p.md, "IHAVE goes to every peer outside the mesh"): with
    records flowing every second, that was an RPC each second to every such peer, which they nearly always
    already had. IHAVE is the lazy repair of a lost copy; catch-up is the backstop. Its score passes run only
    while scores differ (``scores_flat``)."""

    def scores_flat(self) -> bool:
        """Whether every peer's score is the same, so that the heartbeat's score passes are skipped
        (docs/py-libp2p.md, "Opportunistic grafting on equal scores churns the mesh"): SCORE_PARAMS weighs
        only invalid messages, so scores differ only while some peer's count is FLAT or more."""
        scorer = self.scorer
        return scorer is None or all(n < FLAT for counts in scorer.invalid_messages.values() for n in counts.values())

    def _perform_opportunistic_grafting(self, topic: str, peers_to_graft: defaultdict[ID, list[str]]) -> int:
        """Grafts beyond D only to replace low scorers, as go-libp2p does: py-libp2p grafts the first two peers
        whose score reaches half the mesh's median, so with equal scores any two, at every heartbeat."""
        return 0 if self.scores_flat() else super()._perform_opportunistic_grafting(topic, peers_to_graft)

    async def _maintain_mesh_quality(self, topic: str) -> None:
        """Replaces the worst mesh peer with one scoring 0.1 more: none while scores are flat."""
        if not self.scores_flat():
            await super()._maintain_mesh_quality(topic)

    def _get_adaptive_gossip_peers_count(self, topic: str, total_peers: int) -> int:
        if self.adaptive_gossip_enabled:
            return super()._get_adaptive_gossip_peers_count(topic, total_peers)
        return max(0, min(GOSSIP_PEERS, total_peers))

    def gossip_heartbeat(self) -> defaultdict[ID, dict[str, list[bytes]]]:
        """IHAVE of the recent messages to GOSSIP_PEERS peers outside the mesh, chosen whether or not a prune
        backoff stands between us (docs/py-libp2p.md, "A node in backoff with all its peers hears no gossip").
        py-libp2p leaves peers in backoff out, as it does when grafting; a node whose mesh had emptied while every
        peer it holds was in backoff with it then heard of no message but through catch-up, seconds later. A
        backoff is about the mesh; go-libp2p gossips to such peers too."""
        told: defaultdict[ID, dict[str, list[bytes]]] = defaultdict(dict)
        if self.pubsub is None:
            return told
        for topic, mesh in self.mesh.items():
            msg_ids = self.mcache.window(topic)
            if not msg_ids or topic not in self.pubsub.peer_topics:
                continue
            others = [p for p in self.pubsub.peer_topics[topic] if p not in mesh and p in self.peer_protocol]
            for peer in self.select_from_minus(self._get_adaptive_gossip_peers_count(topic, len(others)), others, ()):
                told[peer][topic] = list(msg_ids)
        return told

    def _get_in_topic_gossipsub_peers_from_minus(
        self, topic: str, num_to_select: int, minus: Iterable[ID], backoff_check: bool = False
    ) -> list[ID]:
        """Peers to graft: a peer whose backoff ended less than GRAFT_SLACK seconds ago is not grafted yet (go-libp2p
        keeps the same slack; docs/py-libp2p.md, "A node in backoff with all its peers hears no gossip"). Without
        it a node grafted a peer in the very second its own backoff ended, while the peer's (set a moment later,
        on our PRUNE) still ran: refused, both backoffs renewed for 60 s, and again."""
        if not backoff_check:
            return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, minus, False)
        until, now = self.back_off.get(topic, {}), time.time()
        for peer in [p for p, t in until.items() if t + GRAFT_SLACK <= now]:
            del until[peer]  # ended, slack included (the library deletes an entry as soon as it ends)
        return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, set(minus) | set(until), False)

    def _get_peers_to_send(
        self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Iterable[ID]:
        """Our own messages go to every connected peer on the topic, not only the mesh: gossipsub 1.1's flood
        publishing (go-libp2p's default; docs/py-libp2p.md, "Our own messages go only to the mesh"). A job then
        reaches all of the origin's connections (5-29 at 30 nodes, ~6 on average) at the first hop instead of
        its D mesh peers: one hop fewer across the cluster, for a few more copies of the node's own messages.
        What others publish is forwarded to the mesh only, as before."""
        topic_ids = list(topic_ids)
        peers = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        if self.pubsub is not None and origin == msg_forwarder == self.pubsub.my_id:
            for topic in topic_ids:
                peers.update(p for p in self.pubsub.peer_topics.get(topic, ()) if p in self.peer_protocol)
            peers.discard(origin)
        return peers

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(pubsub_msg.data)):
            mesh_log.debug("gossip forward job_id=%s from=%s mesh=%d", job_id, msg_forwarder,
                           len(self.mesh.get(TOPIC, ())))  # fmt: skip
        await super().publish(msg_forwarder, pubsub_msg)

    # -- the mesh's changes, at debug level (benchmarks/mesh.py ``--trace`` reads them: which node had no mesh
    # when a job reached it late) -----------------------------------------------------------------------------

    def mesh_heartbeat(self) -> tuple[Any, Any]:
        graft, prune = super().mesh_heartbeat()
        if (graft or prune) and mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh heartbeat size=%d grafted=%d pruned=%d", len(self.mesh.get(TOPIC, ())),
                           len(graft), len(prune))  # fmt: skip
        return graft, prune

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        await super().handle_graft(graft_msg, sender_peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh graft from=%s accepted=%s size=%d", sender_peer_id,
                           sender_peer_id in self.mesh.get(TOPIC, ()), len(self.mesh.get(TOPIC, ())))  # fmt: skip

    async def handle_prune(self, prune_msg: rpc_pb2.ControlPrune, sender_peer_id: ID) -> None:
        await super().handle_prune(prune_msg, sender_peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh prune from=%s size=%d", sender_peer_id, len(self.mesh.get(TOPIC, ())))

    def remove_peer(self, peer_id: ID) -> None:
        super().remove_peer(peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh removed=%s size=%d", peer_id, len(self.mesh.get(TOPIC, ())))
