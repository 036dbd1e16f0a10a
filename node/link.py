"""The two interfaces between the node and its mesh, so each is wired one way.

The node is built first and knows the mesh only as an ``Outbound`` (publish, fetch another node's logs,
describe peers); the mesh is built after it and knows the node only as an ``Inbound`` (what peers tell it,
and its own logs for a peer that asks). Neither holds the other's class.

Two orderings at start-up matter, and the objects here keep them without a back-reference:

* The executor's recovery announces the executions it changes before the node serves, possibly before the
  mesh listens. ``MeshLink`` buffers those publishes in a bounded outbox that the mesh's one publisher drains
  once it runs (the mesh is started before the executor, so the outbox never fills while nobody drains it).
* What peers send must not reach the executor before it runs (it would accept jobs into a queue no worker
  reads yet, and recovery would race with them). The mesh listens and buffers from the start, but it calls
  the node through an ``InboundGate`` that holds every call until ``open()``, which the node's owner calls
  once the executor runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Protocol

import trio

from .allocation import Allocation
from .errors import NotFoundError
from .logfollow import Follow, Source
from .lost import LostNotice
from .model import Cancel, Execution, Job
from .noderecord import DrainOrder, NodeRecord
from .wire import AllocationMsg, CancelMsg, DrainMsg, Envelope, ExecutionMsg, JobMsg, LostMsg, NodeMsg

__all__ = ["OUTBOX_SIZE", "Directory", "Inbound", "InboundGate", "MeshLink", "MeshView", "NoMesh", "Outbound"]

OUTBOX_SIZE = 10_000
"""Messages waiting for the publisher (which signs this node's executions and encodes); a publish waits only
when this many are queued."""


class Inbound(Protocol):
    """What the mesh may tell this node: verified values from peers, and requests for its own logs."""

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        """Record a job from a peer (and run it here if placement says so); True if it was new. ``cancel``: a
        verified cancel that came with it (catch-up). ``gossip``: heard on the topic, where a newcomer may be
        handed messages older than what it knows (gossipsub's IHAVE/IWANT replays its recent cache).

        Raises:
            Refused: the trust rule refuses it (node/trust.py).
        """
        ...

    async def on_executions(self, executions: list[Execution]) -> int:
        """Keep newer versions of other nodes' executions; returns how many changed."""
        ...

    async def on_cancel(self, cancel: Cancel) -> None:
        """A verified cancel; raises Refused when its signer may not cancel that job."""
        ...

    async def on_allocation(self, allocation: Allocation) -> bool:
        """A verified allocation: kept if it ranks above the one known, and acted on here (run or release a
        copy). True if kept; raises Refused when its writer may not write allocations."""
        ...

    async def on_jobs(self, jobs: list[tuple[Job, Cancel | None]]) -> list[bool | Exception]:
        """A catch-up page's verified jobs (each with its verified cancel, if any), decided together: each one's
        outcome, True if new, False if known, or the exception ``on_job`` would have raised for it."""
        ...

    async def caught_up(self) -> None:
        """A catch-up round with a peer ended (done, or failed as far as that peer could answer)."""
        ...

    async def local_logs(self, job_id: str, tail: int | None) -> dict[str, Any]: ...

    async def local_follow(self, job_id: str, tail: int | None) -> Follow:
        """This node's output of the job as it is written, for a peer's follower (node/logfollow.py)."""
        ...


class Directory(Protocol):
    """What the mesh tells the node registry (``node/registry.py``) and serves from it: node records and drain
    orders, verified. Apart from ``Inbound``: it is in memory, and needs not wait for the executor."""

    def on_record(self, record: NodeRecord, *, age: float = 0.0) -> bool:
        """Keep a newer record; ``age``: seconds since the peer that relayed it heard it. True if kept."""
        ...

    def holds(self, node_id: str, seq: int) -> bool:
        """Whether a record of ``node_id`` at ``seq`` or later is held: ``on_record`` would drop one at ``seq``."""
        ...

    def on_drain(self, order: DrainOrder) -> bool:
        """Keep a later drain order; True if kept. Raises Refused when its giver may not drain that node."""
        ...

    def known(self, limit: int) -> tuple[list[tuple[NodeRecord, float]], list[DrainOrder]]:
        """The latest records (with their age) and drain orders, at most ``limit`` of each."""
        ...

    def on_lost(self, notice: LostNotice) -> bool:
        """A verified lost notice (``node/lost.py``); True if it made its node down here."""
        ...

    def record(self, node_id: str) -> NodeRecord | None:
        """The latest record of ``node_id``, if any."""
        ...

    def gate(self) -> bool:
        """Whether every node held up knows lost notices (the version gate)."""
        ...

    def up(self) -> int:
        """How many nodes are up, this one included (what the connection target follows)."""
        ...

    vouch: Callable[[str], bool]
    """Whether this node is connected to that node itself (set by the mesh)."""


class MeshView(Protocol):
    """What a running mesh answers about itself and other nodes."""

    async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]: ...

    async def follow_logs(self, job_id: str, node_id: str, tail: int | None) -> Source: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def addresses(self) -> list[str]: ...

    def stats(self) -> dict[str, Any]: ...


class Outbound(MeshView, Protocol):
    """What the node may ask of its mesh."""

    async def publish_job(self, job: Job) -> None: ...

    async def publish_execution(self, execution: Execution) -> None: ...

    async def publish_cancel(self, cancel: Cancel) -> None: ...

    async def publish_node(self, record: NodeRecord) -> None: ...

    async def publish_drain(self, order: DrainOrder) -> None: ...

    async def publish_allocation(self, allocation: Allocation) -> None: ...


class NoMesh:
    """The ``Outbound`` of a node without a mesh: publishes go nowhere, there are no peers."""

    async def publish_job(self, job: Job) -> None:
        pass

    async def publish_execution(self, execution: Execution) -> None:
        pass

    async def publish_cancel(self, cancel: Cancel) -> None:
        pass

    async def publish_node(self, record: NodeRecord) -> None:
        pass

    async def publish_drain(self, order: DrainOrder) -> None:
        pass

    async def publish_allocation(self, allocation: Allocation) -> None:
        pass

    async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]:
        raise NotFoundError(f"node {node_id} is not reachable from this node")

    async def follow_logs(self, job_id: str, node_id: str, tail: int | None) -> Source:
        raise NotFoundError(f"node {node_id} is not reachable from this node")

    def peers(self) -> list[dict[str, Any]]:
        return []

    def addresses(self) -> list[str]:
        return []

    def stats(self) -> dict[str, Any]:
        return {}


class MeshLink(NoMesh):
    """The node's ``Outbound``, built before the mesh: an outbox the mesh drains, and its view while it runs.

    Every gossip message enters here (and nowhere else), so gossip goes out from one place: the mesh's
    publisher, the only reader of ``outbox``. Until the mesh runs, queries answer as a node without a mesh.
    """

    def __init__(self, node_id: str, *, size: int = OUTBOX_SIZE) -> None:
        self.node_id = node_id
        self._send, self.outbox = trio.open_memory_channel[Envelope](size)
        self._view: MeshView | None = None
        self._publish_now: Callable[[Envelope], Awaitable[bool]] | None = None

    @property
    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def publish_job(self, job: Job) -> None:
        """Published in this task when the mesh's publisher is idle (``Gossip.publish_now``), else queued."""
        msg = JobMsg(job)
        if self._publish_now is None or not await self._publish_now(msg):
            await self._put(msg)

    async def publish_execution(self, execution: Execution) -> None:
        if execution.node_id == self.node_id:  # only this node announces its own executions
            await self._put(ExecutionMsg(execution))

    async def publish_cancel(self, cancel: Cancel) -> None:
        await self._put(CancelMsg(cancel))

    async def publish_node(self, record: NodeRecord) -> None:
        """A heartbeat never waits: with the outbox full it is dropped (the next one follows)."""
        with suppress(trio.WouldBlock):
            self._send.send_nowait(NodeMsg(record))

    async def publish_drain(self, order: DrainOrder) -> None:
        await self._put(DrainMsg(order))

    async def publish_allocation(self, allocation: Allocation) -> None:
        await self._put(AllocationMsg(allocation))

    async def publish_lost(self, notice: LostNotice) -> None:
        """The mesh's own notice of a lost peer (``node/losswatch.py``): it waits for room like the rest, so a
        notice is not dropped while records are."""
        await self._put(LostMsg(notice))

    async def _put(self, msg: Envelope) -> None:
        await self._send.send(msg)

    @contextmanager
    def serving(
        self, view: MeshView, publish_now: Callable[[Envelope], Awaitable[bool]] | None = None
    ) -> Iterator[None]:
        """While the mesh runs, queries go to it, and a job may be published at once through ``publish_now``."""
        self._view, self._publish_now = view, publish_now
        try:
            yield
        finally:
            self._view = self._publish_now = None

    async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]:
        if self._view is None:
            return await super().fetch_logs(job_id, node_id, tail)
        return await self._view.fetch_logs(job_id, node_id, tail)

    async def follow_logs(self, job_id: str, node_id: str, tail: int | None) -> Source:
        if self._view is None:
            return await super().follow_logs(job_id, node_id, tail)
        return await self._view.follow_logs(job_id, node_id, tail)

    def peers(self) -> list[dict[str, Any]]:
        return self._view.peers() if self._view is not None else []

    def addresses(self) -> list[str]:
        return self._view.addresses() if self._view is not None else []

    def stats(self) -> dict[str, Any]:
        return self._view.stats() if self._view is not None else {"outbox": self.queued}


class InboundGate:
    """An ``Inbound`` that holds every call until ``open()``: peers' messages wait until the executor runs."""

    def __init__(self, inbound: Inbound) -> None:
        self._inbound = inbound
        self._open = trio.Event()

    def open(self) -> None:
        self._open.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        if not self._open.is_set():  # waiting on a set event would yield to every ready task: a job from gossip
            await self._open.wait()  # is applied without one (``Gossip.forwarded``)
        return await self._inbound.on_job(job, cancel=cancel, gossip=gossip)

    async def on_jobs(self, jobs: list[tuple[Job, Cancel | None]]) -> list[bool | Exception]:
        await self._open.wait()
        return await self._inbound.on_jobs(jobs)

    async def caught_up(self) -> None:
        await self._open.wait()
        await self._inbound.caught_up()

    async def on_executions(self, executions: list[Execution]) -> int:
        await self._open.wait()
        return await self._inbound.on_executions(executions)

    async def on_cancel(self, cancel: Cancel) -> None:
        await self._open.wait()
        await self._inbound.on_cancel(cancel)

    async def on_allocation(self, allocation: Allocation) -> bool:
        await self._open.wait()
        return await self._inbound.on_allocation(allocation)

    async def local_logs(self, job_id: str, tail: int | None) -> dict[str, Any]:
        await self._open.wait()
        return await self._inbound.local_logs(job_id, tail)

    async def local_follow(self, job_id: str, tail: int | None) -> Follow:
        await self._open.wait()
        return await self._inbound.local_follow(job_id, tail)
