"""Gossip on the topic ``jobs``: the one publisher, and validating, buffering and applying what peers publish.

Out: every message enters through ``MeshLink`` (link.py) and leaves through ``Gossip.publisher``, the only task
that calls ``pubsub.publish``, paced so that no peer's outbound queue overflows (docs/py-libp2p.md, "Outbound
queues drop beyond 32 messages").

In: pubsub calls ``validate`` (parse and check once; a rejected message is neither delivered nor forwarded) and
then ``deliver``, which only queues into a large inbox; ``consumer`` applies the inbox in batches through the
node's ``Inbound``. Nothing a peer sends may raise out of these: an unexpected exception costs that one message,
counted in ``MeshStats.dropped`` under ``error`` (and logged once with its stack), never the node.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from .errors import NodeError
from .link import Inbound
from .wire import TOPIC, Envelope, ExecutionMsg, JobMsg, WireError, decode

__all__ = ["Gossip", "MeshStats"]

log = logging.getLogger("cmnode.p2p")

PEER_QUEUE_HIGH = 24
"""Publish waits while a peer's outbound queue holds this many RPCs: the library drops beyond 32."""
INBOX_SIZE = 100_000
INBOX_BATCH = 500
VALIDATED_CACHE = 10_000


@dataclass
class MeshStats:
    """Counters of the gossip layer and of dialling, read by the metrics endpoint."""

    messages_in: int = 0
    messages_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dials: int = 0
    dial_failures: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Gossip:
    """This node's gossip: ``validate`` and ``deliver`` are pubsub's callbacks; run ``publisher`` and
    ``consumer`` in the mesh's nursery."""

    def __init__(self, *, node_id: str, inbound: Inbound, outbox: trio.MemoryReceiveChannel[bytes]) -> None:
        self.node_id = node_id
        self.inbound = inbound
        self.stats = MeshStats()
        self._outbox = outbox
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, Envelope]](INBOX_SIZE)
        self._validated: OrderedDict[bytes, Envelope] = OrderedDict()
        self._warned = False

    # -- out --------------------------------------------------------------------------------------

    async def publisher(self, pubsub: Pubsub) -> None:
        """The one task that publishes, paced by the peers' outbound queues so none overflows."""
        async for data in self._outbox:
            while any(len(q) >= PEER_QUEUE_HIGH for q in list(pubsub.peer_queues.values())):
                await trio.sleep(0.001)  # the library offers no "queue drained" event to wait on
            try:
                await pubsub.publish(TOPIC, data)
                self.stats.messages_out += 1
            except Exception as exc:  # a library failure must not stop publishing; catch-up repairs it
                log.warning("publish failed: %s", exc)

    # -- in ---------------------------------------------------------------------------------------

    def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Topic validator: a rejected message is neither delivered nor forwarded. Never raises."""
        try:
            sender = ID(msg.from_id).to_base58()
            if sender == self.node_id:
                return True
            envelope = decode(msg.data, sender=sender)
        except WireError as exc:
            self.stats.drop(exc.reason)
            log.debug("gossip dropped via=%s: %s", forwarder, exc)
            return False
        except Exception as exc:
            self._unexpected("validating gossip", exc)
            return False
        # Pubsub delivers it next (unless it turns out to be a duplicate): keep the parsed value for deliver.
        self._validated[msg.from_id + msg.seqno] = envelope
        while len(self._validated) > VALIDATED_CACHE:
            self._validated.popitem(last=False)
        return True

    def deliver(self, msg: rpc_pb2.Message) -> None:
        """Pubsub's delivery of a validated message: queue it, or count it dropped when the inbox is full."""
        try:
            envelope = self._validated.pop(msg.from_id + msg.seqno, None)
            if envelope is None or ID(msg.from_id).to_base58() == self.node_id:
                return
            self._inbox_send.send_nowait((ID(msg.from_id).to_base58(), envelope))
        except trio.WouldBlock:
            self.stats.drop("overload")
        except Exception as exc:
            self._unexpected("delivering gossip", exc)

    async def consumer(self) -> None:
        """Apply what arrived in batches: one task per job, so messages about a job keep their order while
        different jobs share the store's group commits instead of paying one fsync each. Until the node's
        inbound gate opens, the first message waits there and the rest wait in the inbox."""
        async for first in self._inbox_recv:
            batch = [first]
            while len(batch) < INBOX_BATCH:
                try:
                    batch.append(self._inbox_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            by_job: dict[str, list[tuple[str, Envelope]]] = {}
            for sender, msg in batch:
                self.stats.messages_in += 1
                by_job.setdefault(_job_of(msg), []).append((sender, msg))
            if len(by_job) == 1:  # the usual case when not in a burst: no task to spawn
                await self.apply(next(iter(by_job.values())))
                continue
            async with trio.open_nursery() as nursery:
                for messages in by_job.values():
                    nursery.start_soon(self.apply, messages)

    async def apply(self, messages: list[tuple[str, Envelope]]) -> None:
        """Merge messages about one job, in order. Never raises (but for cancellation)."""
        for sender, msg in messages:
            try:
                if isinstance(msg, JobMsg):
                    await self.inbound.on_job(msg.job)
                elif isinstance(msg, ExecutionMsg):
                    await self.inbound.on_executions([msg.execution])
                else:
                    await self.inbound.on_cancel(msg.job_id)
            except NodeError as exc:  # e.g. the local queue is full: the job is recorded, not run
                log.warning("cannot apply gossip from %s: %s", sender, exc.message)
            except Exception as exc:  # e.g. a value SQLite cannot store: this message only
                self._unexpected(f"applying gossip from {sender}", exc)

    def _unexpected(self, doing: str, exc: Exception) -> None:
        self.stats.drop("error")
        if not self._warned:  # a bug or an attack we did not foresee: once with the stack, then quietly
            self._warned = True
            log.warning("gossip dropped: error %s: %r; later ones are logged at debug", doing, exc, exc_info=exc)
        else:
            log.debug("gossip dropped: error %s: %r", doing, exc)


def _job_of(msg: Envelope) -> str:
    if isinstance(msg, JobMsg):
        return msg.job.job_id
    if isinstance(msg, ExecutionMsg):
        return msg.execution.job_id
    return msg.job_id
