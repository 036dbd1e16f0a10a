"""Gossip on the topic ``jobs``: the one publisher, and validating, buffering and applying what peers publish.

Out: every message enters through ``MeshLink`` (link.py) and leaves through ``Gossip.publisher``, the only task
that calls ``pubsub.publish``, paced so that no peer's outbound queue overflows (docs/py-libp2p.md, "Outbound
queues drop beyond 32 messages"). It signs this node's executions on their way out: whatever wrote a version,
peers accept it only signed by this node.

In: pubsub calls ``validate`` (parse and check once; a rejected message is neither delivered nor forwarded), then
forwards the message, and then, in the same task, ``forwarded`` applies it through the node's ``Inbound`` (the
store is written there and then when nothing holds it up), or queues it into a large inbox that ``consumer``
applies, one lane per job. Validation is on the path of every hop, so it does nothing more; the apply follows the
forward without yielding to the node's other tasks (see ``forwarded``). ``deliver`` is the library's plain
delivery (``node/pubsub.py``'s ``DirectPubsub`` without ``forwarded``): it queues into the inbox. Nothing a peer
sends may raise out of these: an unexpected exception costs that one message, counted in ``MeshStats.dropped``
under ``error`` (and logged once with its stack), never the node.

Penalties: a rejected message lowers its forwarder's gossipsub score (``SCORE_PARAMS``, the library's own
scorer); ``police`` disconnects a peer whose score falls below ``DISCONNECT_SCORE`` and keeps it out for
``BAN_SECONDS`` (docs/py-libp2p.md, "Peer scoring only gates, never disconnects"). It looks at the scores only
after a rejection, the one thing that lowers them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import ScoreParams, TopicScoreParams

from .errors import NodeError
from .identity import Identity
from .link import Directory, Inbound
from .trust import Refused, sign_execution
from .wire import (
    TOPIC,
    AllocationMsg,
    DrainMsg,
    Envelope,
    ExecutionMsg,
    JobMsg,
    LostMsg,
    NodeMsg,
    WireError,
    decode,
    encode,
)

__all__ = ["BAN_SECONDS", "DISCONNECT_SCORE", "SCORE_PARAMS", "Gossip", "MeshStats"]

log = logging.getLogger("cmnode.p2p")

PEER_QUEUE_HIGH = 24
"""Publish waits while a peer's outbound queue holds this many RPCs: the library drops beyond 32."""
STALLED = 1.0
"""A peer whose queue stayed at PEER_QUEUE_HIGH this long (seconds) is not waited for: its connection is dead
or dying (a partition), and waiting would stall gossip to every other peer until it is closed. What it misses,
catch-up brings (docs/py-libp2p.md, "Outbound queues drop beyond 32 messages")."""
INBOX_SIZE = 100_000
PENDING = 500
"""Messages being applied at once (each job's in a task of its own); the rest wait in the inbox."""
VALIDATED_CACHE = 10_000

SCORE_PARAMS = ScoreParams(
    # One rejected message costs 1 point; the count decays by 10% a second, so an honest peer that forwards a
    # rare bad message (a version skew) recovers, while one that keeps sending them sinks.
    p4_invalid_messages=TopicScoreParams(weight=1.0, cap=1_000_000.0, decay=0.9),
    publish_threshold=-50.0,  # below it, the library ignores what the peer forwards
    gossip_threshold=-50.0,
    graylist_threshold=-50.0,
)
"""Gossipsub's peer scoring, counting invalid messages only (the other terms are 0: on a small private mesh
delivery rates say little). ``Host`` hands it to ``GossipSub``."""
DISCONNECT_SCORE = -20.0
"""About 20 rejected messages in quick succession: the peer is disconnected."""
BAN_SECONDS = 600.0
"""How long a disconnected peer is refused (disconnected again as soon as it reconnects)."""
MAX_BANNED = 10_000
POLICE_EVERY = 1.0
"""Seconds between two looks at the scores while messages are being rejected (the rejections of one such second
are judged together)."""


@dataclass
class MeshStats:
    """Counters of the gossip layer and of dialling, read by the metrics endpoint."""

    messages_in: int = 0
    messages_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dials: int = 0
    dial_failures: int = 0
    penalised: int = 0
    trimmed: int = 0
    unsubscribed: int = 0
    """Connections closed because pubsub never heard the peer's subscription on them (``node/mesh.py``)."""
    """Connections closed because this node had more than it keeps (``node/peering.py``, PEER_MAX)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Gossip:
    """This node's gossip: ``validate`` and ``deliver`` are pubsub's callbacks; run ``publisher`` and
    ``consumer`` in the mesh's nursery."""

    def __init__(
        self,
        *,
        identity: Identity,
        inbound: Inbound,
        outbox: trio.MemoryReceiveChannel[Envelope],
        directory: Directory | None = None,
    ) -> None:
        """``directory``: where node records and drain orders go (``node/registry.py``); none: dropped."""
        self.identity = identity
        self.node_id = identity.node_id
        self.inbound = inbound
        self.directory = directory
        self.stats = MeshStats()
        self._outbox = outbox
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, Envelope]](INBOX_SIZE)
        self._own_id = identity.peer_id.to_bytes()
        self._validated: OrderedDict[bytes, tuple[str, Envelope]] = OrderedDict()
        """Messages validated and not yet delivered, by pubsub message ID: their sender and parsed value."""
        self._warned = False
        self._banned: OrderedDict[ID, float] = OrderedDict()
        self._lanes: dict[str, list[tuple[str, Envelope]]] = {}
        """The jobs whose messages are being applied, each with the messages waiting behind the one applied."""
        self._room = trio.Semaphore(PENDING)
        self._taking: str | None = None
        """The lane of the message ``consumer`` took from the inbox and has not yet put in ``_lanes``."""
        self._kick_send, self._kick_recv = trio.open_memory_channel[ID](100)
        self._rejected = trio.Event()
        """Set when ``validate`` rejects a message: ``police``'s cue to look at the scores."""
        self._full_since: dict[ID, float] = {}
        """Peers whose outbound queue is at PEER_QUEUE_HIGH, and since when (bounded by the connected peers)."""
        self._pubsub: Pubsub | None = None
        """The publisher's pubsub while it runs."""
        self._direct = False
        """A ``publish_now`` is under way."""
        self._direct_done = trio.Event()

    # -- out --------------------------------------------------------------------------------------

    async def publisher(self, pubsub: Pubsub) -> None:
        """The one task that publishes what the outbox holds, paced by the peers' outbound queues so none
        overflows; ``publish_now`` may publish in its caller's task while this one waits for the outbox."""
        self._pubsub = pubsub
        try:
            async for msg in self._outbox:
                while self._direct:  # queued while a ``publish_now`` was under way: it goes first
                    await self._direct_done.wait()
                while self._crowded(pubsub):
                    await trio.sleep(0.001)  # the library offers no "queue drained" event to wait on
                await self._publish(pubsub, msg)
        finally:
            self._pubsub = None

    async def publish_now(self, msg: Envelope) -> bool:
        """Publish ``msg`` in the calling task if nothing is before it: the publisher waits on an empty outbox
        (holding no message either), no other ``publish_now`` is under way and no peer's queue is crowded. False:
        the caller queues it in the outbox instead. A library failure is logged, as the publisher does (True).

        Why: a job created here (``Create``) reached the publisher one trio scheduling round later, behind every
        task ready in the node, on the way to every other node (``benchmarks/overhead.py``, the first receiver).
        Order is kept: a message queued meanwhile waits for this one (``publisher``)."""
        pubsub = self._pubsub
        if pubsub is None or self._direct or not self._outbox.statistics().tasks_waiting_receive:
            return False  # not running, or busy: ``tasks_waiting_receive`` 0 means it holds a message
        if self._crowded(pubsub):
            return False
        self._direct = True
        try:
            await self._publish(pubsub, msg)
        finally:
            self._direct = False
            self._direct_done.set()
            self._direct_done = trio.Event()
        return True

    async def _publish(self, pubsub: Pubsub, msg: Envelope) -> None:
        """Sign this node's execution, encode and publish; a library failure is logged, never raised."""
        if isinstance(msg, ExecutionMsg) and msg.execution.node_id == self.node_id:
            msg = ExecutionMsg(sign_execution(self.identity, msg.execution))
        data = encode(msg)
        try:
            await pubsub.publish(TOPIC, data)
            self.stats.messages_out += 1
        except Exception as exc:  # a library failure must not stop publishing; catch-up repairs it
            log.warning("publish failed: %s", exc)

    def _crowded(self, pubsub: Pubsub) -> bool:
        """Whether a peer that is still draining its queue holds PEER_QUEUE_HIGH RPCs (one stalled for STALLED
        seconds no longer counts until it drains)."""
        now, crowded = trio.current_time(), False
        queues = dict(pubsub.peer_queues)
        for peer_id, queue in queues.items():
            if len(queue) < PEER_QUEUE_HIGH:
                self._full_since.pop(peer_id, None)
            elif now - self._full_since.setdefault(peer_id, now) < STALLED:
                crowded = True
        if len(self._full_since) > len(queues):  # peers gone while full
            for gone in set(self._full_since) - set(queues):
                del self._full_since[gone]
        return crowded

    # -- in ---------------------------------------------------------------------------------------

    def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Topic validator: a rejected message is neither delivered nor forwarded. Never raises."""
        try:
            if msg.from_id == self._own_id:
                return True
            sender = _sender(msg.from_id)
            envelope = decode(msg.data, sender=sender)
        except WireError as exc:
            self.stats.drop(exc.reason)
            log.debug("gossip dropped via=%s: %s", forwarder, exc)
            self._rejected.set()
            return False
        except Exception as exc:
            self._unexpected("validating gossip", exc)
            self._rejected.set()
            return False
        # Pubsub delivers it next (unless it turns out to be a duplicate): keep the parsed value for deliver.
        self._validated[msg.from_id + msg.seqno] = (sender, envelope)
        while len(self._validated) > VALIDATED_CACHE:
            self._validated.popitem(last=False)
        return True

    def deliver(self, msg: rpc_pb2.Message) -> None:
        """Pubsub's delivery of a validated message: queue it, or count it dropped when the inbox is full."""
        try:
            validated = self._validated.pop(msg.from_id + msg.seqno, None)
            if validated is not None:  # else ours (validate keeps none), or one validate never saw
                self._queue(validated)
        except Exception as exc:
            self._unexpected("delivering gossip", exc)

    async def forwarded(self, msg: rpc_pb2.Message) -> None:
        """Pubsub forwarded a validated message (``DirectPubsub.forwarded``, in the task that received it): apply
        it here and now, as the lane of its job, unless an earlier message must go first (one in the inbox, or
        one about the same job being applied) or PENDING are being applied: then it joins the inbox. Never raises
        (but for cancellation).

        Why here: through the inbox, a message waited for the consumer, then for its lane's task, each a trio
        scheduling round behind every task ready in the node, and its apply ran interleaved with the forward's
        own writes to the next peers, delaying them. Here the forward is queued to the peers first (their sending
        tasks run next), and the apply (a commit of 0.2 ms when the store is idle, ``Store._commit_here``) needs
        no round at all; benchmarks/overhead.py measures both (the time until the last node has a job)."""
        try:
            validated = self._validated.pop(msg.from_id + msg.seqno, None)
            if validated is None:  # ours (validate keeps none), or one validate never saw
                return
            key = _job_of(validated[1])
            if self._inbox_recv.statistics().current_buffer_used or self._taking is not None or key in self._lanes:
                self._queue(validated)
                return
            try:
                self._room.acquire_nowait()
            except trio.WouldBlock:
                self._queue(validated)
                return
            self.stats.messages_in += 1
            self._lanes[key] = [validated]
        except Exception as exc:
            self._unexpected("delivering gossip", exc)
            return
        await self._lane(key)

    def _queue(self, validated: tuple[str, Envelope]) -> None:
        try:
            self._inbox_send.send_nowait(validated)
        except trio.WouldBlock:
            self.stats.drop("overload")

    async def consumer(self) -> None:
        """Apply what waits in the inbox: one lane (a task) per job, so messages about a job keep their order,
        while a message about another job goes to the store at once, beside the writes in flight, and joins the
        store's next group commit instead of waiting for the previous message's commit to end (a commit behind a
        local Create's fsync takes tens of milliseconds; each was added to the time until every node has a job).
        At most PENDING messages are being applied (here and by ``forwarded``); beyond, the rest wait in the
        inbox. Until the node's inbound gate opens, they wait there."""
        async with trio.open_nursery() as nursery:
            async for sender, msg in self._inbox_recv:
                self.stats.messages_in += 1
                key = self._taking = _job_of(msg)  # ``forwarded`` must not overtake it meanwhile
                try:
                    await self._room.acquire()
                finally:
                    self._taking = None
                lane = self._lanes.get(key)
                if lane is not None:  # a task is applying an earlier message about this job: this one follows
                    lane.append((sender, msg))
                else:
                    self._lanes[key] = [(sender, msg)]
                    nursery.start_soon(self._lane, key)

    async def _lane(self, key: str) -> None:
        """Apply one job's messages in the order they came, until none is left (then the lane is gone)."""
        lane = self._lanes[key]
        try:
            while lane:
                messages = lane[:]
                lane.clear()
                try:
                    await self.apply(messages)
                finally:
                    for _ in messages:
                        self._room.release()
        finally:
            del self._lanes[key]  # no checkpoint since ``lane`` was found empty: nothing was added meanwhile

    async def apply(self, messages: list[tuple[str, Envelope]]) -> None:
        """Merge messages about one job, in order. Never raises (but for cancellation)."""
        for sender, msg in messages:
            try:
                if isinstance(msg, JobMsg):
                    await self.inbound.on_job(msg.job, gossip=True)
                elif isinstance(msg, ExecutionMsg):
                    await self.inbound.on_executions([msg.execution])
                elif isinstance(msg, AllocationMsg):
                    await self.inbound.on_allocation(msg.allocation)
                elif isinstance(msg, NodeMsg):
                    if self.directory is not None:
                        self.directory.on_record(msg.record)
                elif isinstance(msg, DrainMsg):
                    if self.directory is not None:
                        self.directory.on_drain(msg.order)
                elif isinstance(msg, LostMsg):
                    if self.directory is not None:
                        self.directory.on_lost(msg.notice)
                else:
                    await self.inbound.on_cancel(msg.cancel)
            except Refused as exc:  # the trust rule (logged there, once per peer)
                self.stats.drop(exc.reason)
            except NodeError as exc:  # e.g. the local queue is full: the job is recorded, not run
                log.warning("cannot apply gossip from %s: %s", sender, exc.message)
            except Exception as exc:  # e.g. a value SQLite cannot store: this message only
                self._unexpected(f"applying gossip from {sender}", exc)

    # -- penalties ----------------------------------------------------------------------------------

    def banned(self, peer: ID) -> bool:
        """Whether ``peer`` is kept out; if it just connected, it is disconnected again at once."""
        if peer not in self._banned:
            return False
        with contextlib.suppress(trio.WouldBlock):
            self._kick_send.send_nowait(peer)
        return True

    async def police(self, host: Any) -> None:
        """Within a second of a rejected message: disconnect the peers whose gossipsub score fell below
        DISCONNECT_SCORE; and at once, any banned peer that connected again. ``host`` is the mesh's ``Host``."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kick, host)
            await self._score_rounds(host)

    async def _kick(self, host: Any) -> None:
        async for peer in self._kick_recv:
            try:
                await host.host.disconnect(peer)
            except Exception as exc:  # a library failure costs this one, not the node
                log.debug("disconnecting banned %s failed: %r", peer, exc)

    async def _score_rounds(self, host: Any) -> None:
        """A look at the scores each POLICE_EVERY while messages are rejected, none otherwise; a ban is lifted
        when it runs out. A score falls only when ``validate`` rejects a message (the one term ``SCORE_PARAMS``
        weighs; the others are 0), so between rejections no peer can cross DISCONNECT_SCORE: a look every second
        regardless woke each of 30 idle nodes every second for nothing."""
        scorer = host.router.scorer
        while True:
            unban_at = next(iter(self._banned.values())) if self._banned else math.inf
            with trio.move_on_at(unban_at):
                await self._rejected.wait()
            if self._rejected.is_set():
                await trio.sleep(POLICE_EVERY)
                self._rejected = trio.Event()  # a rejection from here on makes another look
            now = trio.current_time()
            while self._banned and next(iter(self._banned.values())) <= now:
                peer, _ = self._banned.popitem(last=False)
                host.pubsub.remove_from_blacklist(peer)
            for peer in list(host.host.get_connected_peers()):
                try:
                    if peer in self._banned:
                        await host.host.disconnect(peer)
                        continue
                    score = scorer.score(peer, [TOPIC]) if scorer is not None else 0.0
                    if score >= DISCONNECT_SCORE:
                        continue
                    self.stats.penalised += 1
                    log.warning(
                        "peer %s disconnected for %ds: it kept sending invalid gossip (score %.1f)",
                        peer, BAN_SECONDS, score,
                    )  # fmt: skip
                    self._banned[peer] = now + BAN_SECONDS
                    while len(self._banned) > MAX_BANNED:
                        old, _ = self._banned.popitem(last=False)
                        host.pubsub.remove_from_blacklist(old)
                    host.pubsub.add_to_blacklist(peer)  # its messages are ignored meanwhile, whoever relays them
                    await host.host.disconnect(peer)
                except Exception as exc:  # a library failure costs this round, not the node
                    log.debug("penalising %s failed: %r", peer, exc)

    def _unexpected(self, doing: str, exc: Exception) -> None:
        self.stats.drop("error")
        if not self._warned:  # a bug or an attack we did not foresee: once with the stack, then quietly
            self._warned = True
            log.warning("gossip dropped: error %s: %r; later ones are logged at debug", doing, exc, exc_info=exc)
        else:
            log.debug("gossip dropped: error %s: %r", doing, exc)


@functools.lru_cache(maxsize=1024)
def _sender(from_id: bytes) -> str:
    """A pubsub ``from`` as a node ID, once per peer: it is on the path of every message before it is forwarded."""
    return ID(from_id).to_base58()


def _job_of(msg: Envelope) -> str:
    if isinstance(msg, JobMsg):
        return msg.job.job_id
    if isinstance(msg, AllocationMsg):
        return msg.allocation.job_id
    if isinstance(msg, NodeMsg):
        return "node:" + msg.record.node_id  # one node's records in order; no job ID looks like this
    if isinstance(msg, DrainMsg):
        return "drain:" + msg.order.node_id
    if isinstance(msg, LostMsg):
        return "node:" + msg.notice.node_id  # in order with the records of the node it is about
    if isinstance(msg, ExecutionMsg):
        return msg.execution.job_id
    return msg.job_id
