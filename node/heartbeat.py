"""This node's heartbeat: its signed record, kept by its own registry and published on the mesh, so every node
knows what it offers and that it is there (``node/registry.py``).

A record whose content changed (load, allocations, addresses, capacity, draining) goes out at the next
``--heartbeat`` tick. One that only says "still here" is spaced out: each costs every node a receipt per gossip
link and a signature check, and at 30 nodes, one every 2 s from each was most of the idle mesh's CPU. Once every
node held up knows lost notices (``Registry.gate``), a death is told by the connections (``node/losswatch.py``)
and the record is only a slow refresh: every max(REFRESH, ``--heartbeat``) x max(1, N / NODES_PER_BEAT) seconds
(3 minutes at 30 nodes; at most MAX_HEARTBEAT). Until then, as older versions do: every ``--heartbeat`` x
max(1, N / NODES_PER_BEAT), so the mesh carries about NODES_PER_BEAT / ``--heartbeat`` records a second. Each
record says the interval it keeps (``heartbeat``), and peers judge a node down after 3 of those unheard.

A record also goes out at once when the registry asks (``Registry.beat_by``): this node was reported lost (the
refutation), or answers a roll call.

A beat is cheap: it reads what the node holds in memory (``Vitals``; its own listen addresses at most every
ADDRESSES_EVERY, so a change of them reaches its record up to that much later), signs, and queues one message that the
mesh's publisher sends (dropped if the outbox is full: the next beat follows); nothing is written to disk
unless the registry sees the name, labels, capacity or draining change. The engine's capacity is read once
(through a worker thread), again later while the engine does not answer; ``--node-cpus`` and
``--node-memory`` override it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import trio

from . import __version__
from .errors import RuntimeFailureError
from .identity import Identity
from .noderecord import MAX_HEARTBEAT, Allocated, Capacity, NodeRecord, sign_record
from .registry import Registry

if TYPE_CHECKING:
    from .core import Node

__all__ = [
    "ADDRESSES_EVERY",
    "CAPACITY_RETRY",
    "NODES_PER_BEAT",
    "REFRESH",
    "Addresses",
    "Heartbeat",
    "Vitals",
    "vitals_of",
]

log = logging.getLogger("cmnode.registry")

CAPACITY_RETRY = 10.0
"""Seconds between two reads of the engine's capacity while it has not answered."""
NODES_PER_BEAT = 10
"""Up to this many nodes, a record goes out every ``--heartbeat``; beyond, unchanged ones are spaced out so the
mesh carries about this many records per ``--heartbeat`` (or per REFRESH, once lost notices are on)."""
REFRESH = 60.0
"""Seconds between two unchanged records up to NODES_PER_BEAT nodes, once every node knows lost notices."""
ADDRESSES_EVERY = 10.0
"""Seconds between two reads of this node's listen addresses (``Addresses``)."""


@dataclass(frozen=True)
class Vitals:
    """What a record says of the node's load and reach, read from memory at each beat."""

    running: int = 0
    queue_depth: int = 0
    docker_ok: bool = True
    addresses: tuple[str, ...] = ()
    rpc_url: str = ""
    allocated: Allocated = field(default_factory=Allocated)


class Addresses:
    """This node's listen addresses as its record says them, read again at most every ``every`` seconds (trio
    time): the vitals are read at every tick (``Heartbeat._due``), and asking the host for its addresses and
    formatting each multiaddr was half of an idle beat's CPU. A change of address (rare: an interface came or
    went) thus reaches the record up to ``every`` seconds later. None read yet (the host not listening): asked
    again at the next call."""

    def __init__(self, read: Callable[[], list[str]], every: float = ADDRESSES_EVERY) -> None:
        self._read = read
        self._every = every
        self._said: tuple[str, ...] = ()
        self._at = -math.inf

    def __call__(self) -> tuple[str, ...]:
        now = trio.current_time()
        if not self._said or now - self._at >= self._every:
            self._said, self._at = tuple(self._read()), now
        return self._said


def vitals_of(
    node: Node, allocated: Callable[[], Allocated] | None = None, addresses: Callable[[], tuple[str, ...]] | None = None
) -> Vitals:
    """``node``'s vitals; ``allocated`` is what placement gave this node (none: nothing counted yet); ``addresses``
    its listen addresses (an ``Addresses``; none: read from the mesh every time)."""
    load = node.executor.load()
    return Vitals(
        running=len(node.executor.executions.running()),
        queue_depth=load.queue_depth,
        docker_ok=load.docker_error is None,
        addresses=addresses() if addresses is not None else tuple(node.mesh.addresses()),
        rpc_url=node.rpc_url,
        allocated=allocated() if allocated is not None else Allocated(),
    )


class Heartbeat:
    """``run`` it in the node's nursery (it beats until cancelled)."""

    def __init__(
        self,
        *,
        identity: Identity,
        registry: Registry,
        publish: Callable[[NodeRecord], Awaitable[None]],
        vitals: Callable[[], Vitals] = Vitals,
        capacity: Callable[[], Awaitable[tuple[float | None, int | None]]] | None = None,
        interval: float = 2.0,
        name: str,
        labels: Mapping[str, str] | None = None,
        cpus: float | None = None,
        memory: int | None = None,
    ) -> None:
        """``capacity``: the engine's (CPUs, memory), read until known; ``cpus``/``memory`` override it."""
        self.identity = identity
        self.registry = registry
        self._publish = publish
        self._vitals = vitals
        self._engine = capacity
        self.interval = interval
        self.name = name
        self.labels = dict(labels or {})
        self._override = Capacity(cpus=cpus, memory=memory)
        self.capacity = self._override
        self.beats = 0
        self._said: tuple[object, ...] | None = None
        """What the last record published said, but for its seq and time: a change goes out at the next tick."""
        self._said_at = 0.0
        self._keeps = interval
        """The interval the last record promised (``NodeRecord.heartbeat``)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Beat at once, then every ``interval`` (and at once when this node's draining changes)."""
        async with trio.open_nursery() as nursery:
            if self._engine is not None and None in (self._override.cpus, self._override.memory):
                nursery.start_soon(self._read_capacity)
            await self.beat()
            task_status.started()
            while True:
                wait = self.interval
                if self.registry.beat_by is not None:
                    wait = min(wait, max(0.0, self.registry.beat_by - trio.current_time()))
                with trio.move_on_after(wait):
                    await self.registry.changed.wait()
                if self._due():
                    await self.beat()
        raise AssertionError("unreachable")

    def spacing(self) -> float:
        """Seconds between two records that say nothing new: ``interval`` (or REFRESH, once every node up knows
        lost notices), stretched beyond NODES_PER_BEAT nodes up (this one included)."""
        up = self.registry.up()
        base = max(REFRESH, self.interval) if self.registry.gate() else self.interval
        return min(MAX_HEARTBEAT, base * max(1.0, up / NODES_PER_BEAT))

    def _due(self) -> bool:
        """Whether a record goes out now: the registry asked for one, its content changed, or the last one is
        ``spacing`` old (a tick early rather than late: the peers' clock of 3 heartbeats started when they heard
        it; and by today's spacing if that is shorter than the one the last record promised, so a node of an
        older version that just joined hears it at the pace it expects)."""
        asked = self.registry.beat_by
        if asked is not None and trio.current_time() >= asked:
            return True
        if self._said != self._content(self._vitals()):
            return True
        return trio.current_time() - self._said_at + self.interval > min(self._keeps, self.spacing())

    def _content(self, vitals: Vitals) -> tuple[object, ...]:
        return (vitals, self.capacity, self.registry.draining(self.identity.node_id))

    def record(self) -> NodeRecord:
        """This node's record now, signed."""
        vitals = self._vitals()
        self._said, self._keeps = self._content(vitals), self.spacing()
        record = NodeRecord(
            node_id=self.identity.node_id, name=self.name, labels=self.labels, capacity=self.capacity,
            allocated=vitals.allocated, running=vitals.running, queue_depth=vitals.queue_depth,
            docker_ok=vitals.docker_ok, version=__version__, addresses=vitals.addresses[:32], rpc_url=vitals.rpc_url,
            draining=self.registry.draining(self.identity.node_id), heartbeat=self._keeps,
            seq=self.registry.next_seq(), at=time.time(),
        )  # fmt: skip
        return sign_record(self.identity, record)

    async def beat(self) -> NodeRecord:
        """Make, keep and publish one record."""
        record = self.record()
        self._said_at = trio.current_time()
        self.registry.own(record)
        await self._publish(record)
        self.beats += 1
        return record

    async def _read_capacity(self) -> None:
        assert self._engine is not None
        while True:
            try:
                cpus, memory = await self._engine()
            except RuntimeFailureError as exc:
                log.debug("engine capacity not known yet: %s", exc.message)
            else:
                self.capacity = Capacity(
                    cpus=self._override.cpus if self._override.cpus is not None else cpus,
                    memory=self._override.memory if self._override.memory is not None else memory,
                )
                if self.capacity.cpus is not None and self.capacity.memory is not None:
                    return
            await trio.sleep(CAPACITY_RETRY)
