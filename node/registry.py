"""The node registry: what this node knows of every node in the mesh (itself included), for placement.

Every node publishes a signed record of itself (``node/heartbeat.py``); the ``Registry`` keeps the highest
``seq`` of each, heard by gossip or catch-up, and when it last heard one, on trio's clock (so tests run on the
autojump clock). Whether a node is ``down`` is judged by the rules of ``node/verdicts.py`` (silence, lost
notices, roll calls); a node whose latest drain order (``DrainOrder``, latest ``at`` wins) says so is
``draining``; this node is always ready unless draining.

Once every node held up speaks a version that knows lost notices (``gate``), an unchanged record goes out only
every minute or more, and death is told by the connections: a notice (``on_lost``) marks its node down here,
``down_for`` counting from the notice's arrival, unless a newer record of it is known or this node is connected
to it itself (``vouch``). A notice about this node is refuted at once with a fresh record. A node heard again
while held down makes this node republish too (at most every ROLL_JITTER), so after a partition heals both sides
hear each other at once.

Every node ever seen is kept (up to ``MAX_NODES``, the least recently heard going first) and survives a
restart: the records are stored in the store's ``meta`` table when a node is first seen or its name, labels,
capacity or draining change (never because of a heartbeat alone), under one key (the store reads meta by key
only), written at most every ``PERSIST_EVERY`` seconds. A node loaded from there is down until heard.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from .errors import StorageFullError, ValidationError
from .lost import LostNotice, speaks_lost
from .noderecord import DrainOrder, NodeRecord, default_name, parse_labels
from .nodeview import NodeInfo, NodeState
from .trust import Refused, Trust
from .verdicts import DOWN_AFTER, ROLL_JITTER, Allowance, Heard, RollCall

if TYPE_CHECKING:
    from .config import Config
    from .store import Store

__all__ = [
    "MAX_NODES",
    "Registry",
]

log = logging.getLogger("cmnode.registry")

MAX_NODES = 10_000
PERSIST_EVERY = 2.0
"""Seconds between two writes of the registry to the store (a burst of first-seen nodes is one write)."""
META_KEY = "registry"


class Registry:
    """The ``NodesView`` of a node in a mesh: fed by ``on_record`` and ``on_drain`` (gossip, catch-up, RPC)."""

    def __init__(
        self,
        *,
        node_id: str,
        name: str = "",
        labels: Mapping[str, str] | None = None,
        heartbeat: float = 2.0,
        may_order: Callable[[str], bool] = lambda by: True,
        limit: int = MAX_NODES,
    ) -> None:
        """``may_order``: whether a node may drain other nodes (``Trust.may_originate``); a node may always
        drain itself."""
        self.node_id = node_id
        self.name = name or node_id[-8:]
        self.labels = dict(labels or {})
        self.heartbeat = heartbeat
        self._may_order = may_order
        self._limit = max(1, limit)
        self._known: dict[str, Heard] = {}
        """This node included: its own record is "heard" when made."""
        self._drains: OrderedDict[str, DrainOrder] = OrderedDict()
        self._seq_floor = 0
        """The highest seq of this node's records seen anywhere (a copy a peer kept from before a restart)."""
        self._dirty = trio.Event()
        self.changed = trio.Event()
        """Set when this node's own draining changes or it is asked to republish (``beat_by``), so the heartbeat
        looks at once (then replaced)."""
        self.refused = 0
        self.beat_by: float | None = None
        """When this node's next record is due at the latest (trio time), asked by a roll call or a refutation;
        None: when the heartbeat's own rules say. Cleared by ``own``."""
        self.vouch: Callable[[str], bool] = lambda node_id: False
        """Whether this node is connected to that node itself (the mesh sets it): a notice or a roll call does
        not make it down here."""
        self.lost = 0
        """Nodes made down by a lost notice or a missed roll call."""
        self._own_at = -1e9
        self._mute: frozenset[str] | None = None
        """The nodes whose record says a version that does not know lost notices (``gate``); None: to be counted
        again, after any record changed."""
        self._call = RollCall()
        self._allowance = Allowance()

    @classmethod
    def of(cls, config: Config, node_id: str, trust: Trust | None = None) -> Registry:
        """The registry of a node run with ``config``: its name and labels, heartbeat and trust rule (``trust``,
        the node's own; none given: built from ``config``)."""
        trust = trust or Trust.of(node_id, config.trusted_peer)
        return cls(
            node_id=node_id, name=config.node_name or default_name(), labels=parse_labels(config.node_label),
            heartbeat=config.heartbeat, may_order=trust.may_originate,
        )  # fmt: skip

    # -- what this node learns ---------------------------------------------------------------------

    def on_record(self, record: NodeRecord, *, age: float = 0.0) -> bool:
        """A verified record; kept if newer than what is known. ``age``: seconds since the peer that relayed it
        (catch-up) heard it, so a record of a node long gone does not make it look alive. True if kept."""
        if record.node_id == self.node_id:
            self._seq_floor = max(self._seq_floor, record.seq)  # ours from before a restart: beat above it
            return False
        if self.holds(record.node_id, record.seq):
            return False
        known = self._known.get(record.node_id)
        now = trio.current_time()
        back = known is not None and known.down_since(now) is not None
        age = min(max(age, 0.0), 1e9)
        entry = Heard(record=record, heard=now - age, seen_at=time.time() - age)
        if known is None or known.record.identity() != record.identity():
            self._dirty.set()
        self._known[record.node_id] = entry
        self._mute = None
        if known is None:
            self._bound()
        if back and entry.down_since(now) is None and self.gate():
            self._ask(now)  # back after an outage: its side may hold this node down too
        return True

    def holds(self, node_id: str, seq: int) -> bool:
        """Whether a record of ``node_id`` at ``seq`` or later is held, so that ``on_record`` would drop one at
        ``seq`` unread (this node's own: its seq floor, which no earlier record moves)."""
        if node_id == self.node_id:
            return seq <= self._seq_floor
        known = self._known.get(node_id)
        return known is not None and seq <= known.record.seq

    def own(self, record: NodeRecord) -> None:
        """This node's record as the heartbeat just made it."""
        known = self._known.get(self.node_id)
        if known is None or known.record.identity() != record.identity():
            self._dirty.set()
        self._seq_floor = max(self._seq_floor, record.seq)
        now = trio.current_time()
        self._known[self.node_id] = Heard(record=record, heard=now, seen_at=time.time())
        self._own_at, self.beat_by = now, None
        self._mute = None

    def next_seq(self) -> int:
        """The seq of this node's next record: above every earlier one, across restarts (time in ms)."""
        return max(self._seq_floor + 1, int(time.time() * 1000))

    def on_drain(self, order: DrainOrder) -> bool:
        """A verified drain order; kept if later than the one known for its node. True if kept.

        Raises:
            Refused: its giver may not drain that node (only itself, or a node that may originate jobs).
        """
        if order.by != order.node_id and not self._may_order(order.by):
            self.refused += 1
            raise Refused("unauthorized", f"drain order of {order.node_id} by {order.by}: not a trusted peer")
        known = self._drains.get(order.node_id)
        if known is not None and order.order_key() <= known.order_key():
            return False
        before = self.draining(order.node_id)
        self._drains[order.node_id] = order
        self._drains.move_to_end(order.node_id)
        while len(self._drains) > self._limit:
            self._drains.popitem(last=False)
        self._dirty.set()
        if order.node_id == self.node_id and self.draining(self.node_id) != before:
            self.changed.set()
            self.changed = trio.Event()
        return True

    def on_lost(self, notice: LostNotice) -> bool:
        """A verified lost notice: ``notice.node_id`` is down from now, unless a record of it newer than
        ``notice.seq`` is known, or this node is connected to it (``vouch``); about this node, a fresh record at
        once. Every notice taken also opens a roll call (or joins the open one). True if it made a node down."""
        now = trio.current_time()
        if not self._allowance.take(notice.by, now):
            self.refused += 1
            log.debug("lost notice of %s by %s dropped: too many from that node", notice.node_id, notice.by)
            return False
        if notice.node_id == self.node_id:
            log.info("node %s says this node is lost: refuting with a fresh record", notice.by)
            self._wake(now)
            return False
        self._roll(now)
        known = self._known.get(notice.node_id)
        if known is None or known.record.seq > notice.seq or known.down_since(now) is not None:
            return False
        if self.vouch(notice.node_id):
            log.debug("lost notice of %s by %s ignored: connected to it", notice.node_id, notice.by)
            return False
        known.lost_at = now
        self.lost += 1
        log.info("node %s down: reported lost by %s", notice.node_id, notice.by)
        return True

    def gate(self) -> bool:
        """Whether every node held up (this one included) knows lost notices (``node/lost.py``): only then
        are notices sent and unchanged records spaced out long; otherwise this node behaves as older ones do."""
        mute = self._mute
        if mute is None:  # a regex per record: counted again only when records change, not at every heartbeat
            mute = self._mute = frozenset(n for n, k in self._known.items() if not speaks_lost(k.record.version))
        if not mute:
            return True
        now = trio.current_time()
        return all(n != self.node_id and self._known[n].down_since(now) is not None for n in mute)

    def _wake(self, by: float) -> None:
        """This node's next record is due by ``by`` (trio time): the heartbeat is woken to look."""
        self.beat_by = by if self.beat_by is None else min(self.beat_by, by)
        self.changed.set()
        self.changed = trio.Event()

    def _ask(self, now: float) -> None:
        """Republish within ROLL_JITTER, unless this node did or is about to (a roll call's answer)."""
        if self.beat_by is None and now - self._own_at >= ROLL_JITTER:
            self._wake(now + random.uniform(0.0, ROLL_JITTER))

    def _roll(self, now: float) -> None:
        """A notice arrived: answer the roll call (republish), and open one unless one is open."""
        self._close_roll(now)
        self._call.join(now)
        self._ask(now)

    def _close_roll(self, now: float) -> None:
        """Once ROLL_WINDOW has passed since the open roll call began, every node not heard since ROLL_JITTER
        before it (and not connected to this one, and of a version that answers roll calls) is down from its
        start."""
        began = self._call.close(now)
        if began is None:
            return
        for node_id, known in self._known.items():
            if node_id == self.node_id or not known.missed(began):
                continue
            answers = speaks_lost(known.record.version)  # an older node does not answer roll calls
            if answers and known.down_since(now) is None and not self.vouch(node_id):
                known.lost_at = began
                self.lost += 1
                log.info("node %s down: not heard in the roll call of %.0f s ago", node_id, now - began)

    def _bound(self) -> None:
        """Over the limit, forget the nodes heard least recently (never this node)."""
        self._mute = None
        while len(self._known) > self._limit + (self.node_id in self._known):
            del self._known[min((k for k in self._known if k != self.node_id), key=lambda k: self._known[k].heard)]

    # -- what placement and the API read ---------------------------------------------------------------

    def draining(self, node_id: str) -> bool:
        """The latest order, if any, else what the node's own record says."""
        order = self._drains.get(node_id)
        if order is not None:
            return order.draining
        known = self._known.get(node_id)
        return known is not None and known.record.draining

    def _info(self, node_id: str, known: Heard | None, now: float) -> NodeInfo:
        draining = self.draining(node_id)
        if known is None:  # only this node, before its first heartbeat
            return NodeInfo(node_id=node_id, name=self.name, labels=self.labels, last_seen=time.time(),
                            state=NodeState.DRAINING if draining else NodeState.READY)  # fmt: skip
        record = known.record
        state, down_for = NodeState.READY, 0.0
        if node_id == self.node_id:
            last_seen = time.time()
        else:
            last_seen = known.seen_at
            since = known.down_since(now)
            if since is not None:
                state, down_for = NodeState.DOWN, now - since
        if draining and state is NodeState.READY:
            state = NodeState.DRAINING
        return NodeInfo(
            node_id=node_id, name=record.name, labels=record.labels, state=state, cpus=record.capacity.cpus,
            memory=record.capacity.memory, down_for=down_for, last_seen=last_seen, allocated=record.allocated,
        )  # fmt: skip

    def nodes(self) -> list[NodeInfo]:
        now = trio.current_time()
        self._close_roll(now)
        infos = [self._info(node_id, known, now) for node_id, known in self._known.items()]
        if self.node_id not in self._known:
            infos.append(self._info(self.node_id, None, now))
        return sorted(infos, key=lambda info: info.node_id)

    def up(self) -> int:
        """How many nodes are up (this one included, draining or not): ``nodes()``'s count of those not DOWN,
        without a ``NodeInfo`` of each (the heartbeat's spacing and the connection target read it every few
        seconds)."""
        now = trio.current_time()
        self._close_roll(now)
        return 1 + sum(1 for n, known in self._known.items() if n != self.node_id and known.down_since(now) is None)

    def get(self, node_id: str) -> NodeInfo | None:
        known = self._known.get(node_id)
        if known is None and node_id != self.node_id:
            return None
        now = trio.current_time()
        self._close_roll(now)
        return self._info(node_id, known, now)

    def record(self, node_id: str) -> NodeRecord | None:
        known = self._known.get(node_id)
        return known.record if known is not None else None

    def listing(self) -> list[dict[str, Any]]:
        """Every node known, as ``NodeService.List`` shows it."""
        out = []
        for info in self.nodes():
            record = self.record(info.node_id)
            entry: dict[str, Any] = {
                "node_id": info.node_id,
                "name": info.name,
                "state": info.state.value,
                "labels": dict(info.labels),
                "capacity": {"cpus": info.cpus, "memory": info.memory},
                "allocated": {"cpus": 0.0, "memory": 0, "jobs": 0},
                "running": 0,
                "queue_depth": 0,
                "docker_ok": None,
                "version": None,
                "addresses": [],
                "rpc_url": None,
                "last_seen": round(info.last_seen, 3),
                "down_for": round(info.down_for, 3),
                "self": info.node_id == self.node_id,
            }
            if record is not None:
                entry.update(
                    allocated=record.signed_fields()["allocated"], running=record.running,
                    queue_depth=record.queue_depth, docker_ok=record.docker_ok, version=record.version,
                    addresses=list(record.addresses), rpc_url=record.rpc_url,
                )  # fmt: skip
            out.append(entry)
        return out

    def resolve(self, text: str, *, strict: bool = True) -> str:
        """The node ID that ``text`` names: a full node ID, a name, or a unique prefix of an ID.

        ``strict=False``: an unknown ``text`` comes back as it is (a caller that knows nodes the registry
        does not, such as the executions of a job).

        Raises:
            ValidationError: ambiguous, or (strict) unknown; the message lists the candidates.
        """
        ids = [info.node_id for info in self.nodes()]
        if text in ids:
            return text
        for what, found in (
            ("named", [info.node_id for info in self.nodes() if info.name == text]),
            ("with the prefix", [node_id for node_id in ids if node_id.startswith(text)]),
        ):
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                some = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
                raise ValidationError(
                    [{"field": "node_id", "message": f"{len(found)} nodes {what} {text!r}: {some}"}],
                    f"node {text!r} is ambiguous: {len(found)} nodes {what} {text!r} ({some}); give (more of) an ID",
                )
        if not strict:
            return text
        raise ValidationError(
            [{"field": "node_id", "message": f"no node known by the ID, name or ID prefix {text!r}"}],
            f"unknown node {text!r}: no node known by that ID, name or ID prefix (see NodeService.List)",
        )

    def known(self, limit: int) -> tuple[list[tuple[NodeRecord, float]], list[DrainOrder]]:
        """The latest records (each with seconds since heard), most recently heard first, and the latest drain
        orders, at most ``limit`` of each: what catch-up serves, so a node that joins learns every node. A node
        reported lost (or that missed a roll call) is served as silent for DOWN_AFTER of its intervals at least: a
        node that was away when the notice flooded (restarting, cut off) would otherwise take its last record for
        a sign of life, and hold it up until its long refresh ran out."""
        now = trio.current_time()
        self._close_roll(now)
        latest = sorted(self._known.values(), key=lambda k: k.heard, reverse=True)[:limit]
        records = [(k.record, k.served_age(now)) for k in latest]
        return records, list(reversed(self._drains.values()))[:limit]

    # -- on disk -------------------------------------------------------------------------------------

    async def load(self, store: Store) -> int:
        """The nodes and drain orders stored by an earlier run; each node is down until heard. Returns how many
        nodes were loaded (entries that do not parse are skipped: they were checked on the way in)."""
        raw = await store.get_meta(META_KEY)
        if not raw:
            return 0
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("stored node registry is not JSON: starting without it")
            return 0
        loaded = 0
        for entry in data.get("drains") or ():
            try:
                order = DrainOrder.from_json(entry)
            except ValidationError:
                continue
            self._drains[order.node_id] = order
        now = trio.current_time()
        for entry in data.get("nodes") or ():
            try:
                record = NodeRecord.from_json(entry)
            except ValidationError:
                continue
            if record.node_id == self.node_id:
                self._seq_floor = max(self._seq_floor, record.seq)
                continue
            heard = now - DOWN_AFTER * record.heartbeat  # down from now on: ``down_for`` counts from the load
            self._known[record.node_id] = Heard(record=record, heard=heard, seen_at=record.at, unheard_since=now)
            loaded += 1
        self._mute = None
        self._bound()
        return loaded

    def _snapshot(self) -> str:
        return json.dumps(
            {
                "nodes": [k.record.to_json() for k in self._known.values()],
                "drains": [order.to_json() for order in self._drains.values()],
            },
            separators=(",", ":"),
        )

    async def keep(self, store: Store, *, every: float = PERSIST_EVERY) -> NoReturn:
        """Store the registry whenever what is worth keeping changed, at most every ``every`` seconds."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                await store.set_meta(META_KEY, self._snapshot())
            except StorageFullError:
                self._dirty.set()  # tried again later; the registry itself lives on in memory
            except Exception as exc:  # a failed write costs this write, not the node
                log.warning("cannot store the node registry: %r", exc)
                self._dirty.set()
            await trio.sleep(every)
