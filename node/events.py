"""The node's live event stream (``GET /events``): every change of the store, and node state changes, in order.

The store hands each commit's changes to ``EventHub.on_commit`` (``Store.watch``); the hub turns them into
``Event``s in a bounded ring shared by every subscriber. A subscriber reads the ring by position; one that
resumes from further back than the ring holds reads the store first (``Store.changes_in_order``, a page at
a time) and then joins the ring, so ``Last-Event-ID`` resumes with no gap and no duplicate. A subscriber
whose reader does not keep up falls out of the ring: it gets a last ``dropped`` event and its stream ends,
so a slow reader costs the node nothing but its place in the ring.

Event ids are the store's change numbers; events that are not stored (``node``, ``progress``) carry the id
of the last stored event before them, so the ids of a stream never go down. Replayed from the store, a
record shows its state now, once (a job cancelled since replays as its ``job`` then its ``cancel``).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from .allocation import Allocation
from .model import Execution, Job
from .store import Change, Store

if TYPE_CHECKING:
    from .nodeview import NodeInfo, NodesView

__all__ = ["EVENT_TYPES", "Event", "EventFilter", "EventHub", "event_of"]

log = logging.getLogger("cmnode.events")

EVENT_TYPES = ("job", "execution", "cancel", "allocation", "node", "progress", "dropped")
RING = 4096
"""Events kept for subscribers; one this far behind is dropped (about 1 MB of events)."""
PAGE = 500
"""Rows of each kind read from the store per page while a subscriber catches up."""
PING = 15.0
"""Seconds of silence after which a stream sends a comment, so proxies keep it open."""
NODES_EVERY = 1.0
"""Seconds between two looks at the nodes' states while a stream is open (a node goes down by staying silent)."""
NODES_UNREAD_EVERY = 10.0
"""The same while no stream is open: nobody sees the events at once, and a reader that comes (or comes back with
its last event id) gets them from the ring. Looking every second regardless cost each of 30 idle nodes about a
quarter of a millisecond a second (30 nodes' states built and compared)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One event of the stream: ``id`` orders it (a change number), ``data`` is its JSON object."""

    id: int
    type: str
    data: dict[str, Any]
    stored: bool = True
    """A store change (its id its own number), or not (``node``, ``progress``, ``dropped``)."""

    @property
    def job_id(self) -> str | None:
        value = self.data.get("job_id")
        return value if isinstance(value, str) else None

    def names_node(self, node_id: str) -> bool:
        """Whether the event is about ``node_id``: its execution, its allocation, the node itself."""
        return self.data.get("node_id") == node_id or node_id in (self.data.get("nodes") or ())

    def frame(self) -> bytes:
        """The event as Server-Sent Events put it on the wire."""
        data = json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.type}\ndata: {data}\n\n".encode()


@dataclass(frozen=True)
class EventFilter:
    """Which events a subscriber wants: all of the given job IDs, node IDs and types (none given: any).
    ``dropped`` always passes."""

    job_ids: frozenset[str] = frozenset()
    node_ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, job_id: Iterable[str] = (), node_id: Iterable[str] = (), type: Iterable[str] = ()) -> EventFilter:
        """From query values, each possibly comma-separated."""

        def split(values: Iterable[str]) -> frozenset[str]:
            return frozenset(part.strip() for value in values for part in value.split(",") if part.strip())

        return cls(split(job_id), split(node_id), split(type))

    def unknown_types(self) -> list[str]:
        return sorted(self.types - set(EVENT_TYPES))

    def __call__(self, event: Event) -> bool:
        if event.type == "dropped":
            return True
        if self.types and event.type not in self.types:
            return False
        if self.job_ids and event.job_id not in self.job_ids:
            return False
        return not self.node_ids or any(event.names_node(n) for n in self.node_ids)


def event_of(change: Change) -> Event:
    """The event of one stored change."""
    value = change.value
    if change.kind == "job" and isinstance(value, Job):
        spec = value.spec
        data: dict[str, Any] = {
            "job_id": value.job_id, "status": change.status, "image": spec.image, "name": spec.name,
            "labels": dict(spec.labels), "origin": value.origin, "created_at": value.created_at,
        }  # fmt: skip
    elif change.kind == "execution" and isinstance(value, Execution):
        data = value.to_json()
        data.pop("signature", None)
        data["status"] = change.status
    elif change.kind == "allocation" and isinstance(value, Allocation):
        data = {"job_id": value.job_id, "version": value.version, "nodes": list(value.nodes),
                "replicas": value.replicas, "note": value.note, "by": value.by}  # fmt: skip
    else:  # cancel
        data = {"job_id": change.job_id, "status": change.status}
    return Event(change.chg, change.kind, data)


class EventHub:
    """The ring of recent events and the streams that read it. One per node: ``store.watch(hub.on_commit)``
    is done here; run ``watch_nodes`` in the node's nursery for node events, and ``close`` at shutdown."""

    def __init__(self, store: Store, *, ring: int = RING, page: int = PAGE, ping: float = PING) -> None:
        self._store = store
        self._ring: deque[Event] = deque()
        self._size = max(1, ring)
        self._page = max(1, page)
        self.ping = ping
        self._first = 0
        """The position (count of events ever put in the ring) of the ring's oldest event."""
        store.watch(self.on_commit)
        self._floor = store.head
        """Every stored change after this number is in the ring (older ones: read the store)."""
        self._last = self._floor
        """The id of the latest event: what an event that is not stored is numbered."""
        self._wake = trio.Event()
        self._readers = 0
        """Streams open now: while there is one, node states are looked at every NODES_EVERY."""
        self._reader_came = trio.Event()
        self.closed = False
        self.dropped = 0
        """Streams ended because their reader fell behind (for metrics and tests)."""

    @property
    def last_id(self) -> int:
        return self._last

    # -- what goes in ------------------------------------------------------------------------------

    def on_commit(self, changes: list[Change]) -> None:
        """A commit's changes (the store's listener): into the ring, in change order."""
        for change in changes:
            if change.chg > self._floor:  # older ones are the store's (committed while the hub was made)
                self._put(event_of(change))

    def publish(self, type: str, data: dict[str, Any]) -> None:
        """An event that is not stored (a node's state, pull progress), numbered as the latest one."""
        self._put(Event(self._last, type, data, stored=False))

    def _put(self, event: Event) -> None:
        if self.closed:
            return
        self._ring.append(event)
        self._last = max(self._last, event.id)
        while len(self._ring) > self._size:
            gone = self._ring.popleft()
            self._first += 1
            self._floor = max(self._floor, gone.id)
        self._wake.set()
        self._wake = trio.Event()

    def close(self) -> None:
        """End every stream (the node stops): each returns at once, so the HTTP server's drain need not wait."""
        self.closed = True
        self._wake.set()

    # -- what goes out -----------------------------------------------------------------------------

    def stream(self, since: int | None = None, wanted: EventFilter | None = None) -> AsyncIterator[Event | None]:
        """The events after id ``since`` (None: after the latest one now) that ``wanted`` lets through, until
        ``close``; None is yielded after ``ping`` seconds without one (send a comment). A reader that falls out
        of the ring gets a ``dropped`` event and the stream ends."""
        return self._stream(self._last if since is None else max(0, since), wanted or EventFilter())

    async def _stream(self, since: int, wanted: EventFilter) -> AsyncIterator[Event | None]:
        self._readers += 1
        self._reader_came.set()  # the node states are looked at now, and every NODES_EVERY while it reads
        self._reader_came = trio.Event()
        try:
            async for event in self._events(since, wanted):
                yield event
        finally:
            self._readers -= 1

    async def _events(self, since: int, wanted: EventFilter) -> AsyncIterator[Event | None]:
        while since < self._floor and not self.closed:  # behind the ring: the store has it
            changes, upto = await self._store.changes_in_order(since, limit=self._page)
            for change in changes:
                event = event_of(change)
                if wanted(event):
                    yield event
            if upto <= since:  # the store holds nothing newer: it was replaced by an older copy
                break
            since = upto
        position = self._first + next((i for i, e in enumerate(self._ring) if e.id > since), len(self._ring))
        read = since  # the store may have shown commits the ring has yet to get: skip those there
        while not self.closed:
            if position < self._first:
                self.dropped += 1
                yield Event(since, "dropped", {"reason": "this reader fell behind the node's event buffer",
                                               "last_event_id": since}, stored=False)  # fmt: skip
                return
            if position < self._first + len(self._ring):
                event = self._ring[position - self._first]
                position += 1
                if event.stored and event.id <= read:
                    continue
                since = max(since, event.id)
                if wanted(event):
                    yield event
                continue
            wake = self._wake
            with trio.move_on_after(self.ping) as idle:
                await wake.wait()
            if idle.cancelled_caught and not self.closed:
                yield None

    # -- node events ---------------------------------------------------------------------------------

    async def watch_nodes(
        self, nodes: NodesView, *, every: float = NODES_EVERY, unread_every: float = NODES_UNREAD_EVERY
    ) -> None:
        """Publish a ``node`` event whenever a node appears or its state, name or labels change. A node goes
        down by staying silent, so its state is looked at every ``every`` seconds while a stream is open, every
        ``unread_every`` while none is, and at once when one opens (no event is stored)."""
        seen: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {}
        while True:
            for info in nodes.nodes():
                key = (info.state.value, info.name, tuple(sorted(info.labels.items())))
                if seen.get(info.node_id) != key:
                    seen[info.node_id] = key
                    self.publish("node", node_data(info))
            came = self._reader_came
            with trio.move_on_after(every if self._readers else unread_every):
                await came.wait()


def node_data(info: NodeInfo) -> dict[str, Any]:
    return {"node_id": info.node_id, "name": info.name, "state": info.state.value, "labels": dict(info.labels)}
