"""When to catch up, and with whom: on every new connection, when a peer says it has news, and every
SYNC_INTERVAL with SYNC_PEERS peers chosen at random (anti-entropy), plus once with a peer whose periodic
request says its store moved since we last read it.

``sync.py`` is the protocol; this module schedules it over the host's request/response streams, one round per
peer at a time, and carries peer exchange on the same answers (the peers a node knows travel with its sync
page, so bootstrapping through one node still yields a mesh with more than one path).

Rounds that are due to an event, as before: a new connection (a join, a restart, a reconnect after a partition)
starts a round with that peer at once; a reconnect while a round with the peer still runs on the old connection
starts another as soon as it ends. News travels on: a round that brought jobs, executions or allocations gossip
never delivered ends with a round with every other peer whose first request says ``"news": true``, and a node
asked that way catches up with the asker at once (without it, news crossed one hop per periodic round). Since
round five that telling waits SPREAD_AFTER (0.3 s), once for every round that brought news meanwhile, and spares
the peers that read our store since the news came (or are reading it): after a heal they all read each other
directly, and telling each at once cost two rounds per peer per news-bearing round (``Catchup._tell``).

A node's first rounds run at once like any others (a start meets its peers within a second, peer exchange riding
the first answer): ``Sync``'s turn lets one round at a time check and merge a page, so the later rounds find the
rows held and check nothing twice; what they cost is the fetch of pages mostly held (built by the peer, decoded and
skipped here). Until round five the first round ran alone (``FIRST_ALONE``: the others waited for it, up to 5 s),
which saved those fetches and held every other round behind a first peer slow to answer (a busy survivor of a
heal, or one cut off again): ``tests/mesh/test_catch_up_first.py``. Measured (``benchmarks/chaos.py --scenario
partition --runs 3 --baseline``, 10 nodes, 303 jobs, the restart included): heal to agreement 3.42, 4.34, 2.02 s
with it, 2.13, 2.26, 2.07 s without; other work loaded the machine in the first two baseline runs, and the quiet
runs agree: the fetches it saved cost nothing measurable here.

Periodic rounds (anti-entropy, the repair of what gossip lost on a connection that stayed up): every
SYNC_INTERVAL a node asks SYNC_PEERS of its connected peers, chosen uniformly at random among those it is not
already syncing with, for their changes. Until issue 13 it asked every peer: N nodes of degree d made N*d rounds
per interval, N*(N-1) in a full mesh (870 every 15 s at 30 nodes), each one a request even when the page is
empty. Now they make N*k, k = min(SYNC_PEERS, d): linear in N whatever the degree. Changes still converge on a
connected graph:
- A node that misses a change held by a fraction q of its peers fetches it in a given interval with probability
  at least 1-(1-q)^k (0.5 for q = 1/2 and k = 1); a round that brings it spreads it as news.
- A change only one node A holds (gossip lost it everywhere, or A made it while cut off and its connections
  survived) would, by random pulls alone, leave A only when one of A's peers picks A: in a full mesh with
  probability 1-(1-k/d)^d, about 1-e^-k, per interval, so after 1.58 intervals on average for k = 1, and 5 at
  the 99th percentile (1.16 and 3 for k = 2). So the first request of a periodic round carries the asker's
  change counter (``"mark"``: its store's head), and a node that last read another head from the asker (or
  none) pulls from it at once, in a round of its own that carries no mark (so two nodes never ping-pong); if a
  round with the asker runs, once that ends, and only if it did not read that far. A's change then leaves A at
  A's next tick, at most one interval later (half of one on average), and reaches every node as news within a
  few round trips per hop.
So a change that gossip missed reaches every node within one SYNC_INTERVAL (plus a round trip per hop) after it
was made or after the partition that hid it healed. Simulated (the nodes of ``tests/mesh/test_anti_entropy.py``,
30 in a full mesh, 40 runs, connections kept through the partition so that no reconnect helps): a change only
the healed node made reached all 30 in 8.2 s on average and 14.7 s at most (without ``"mark"``: 9.4 s and 23.2 s).
Again with k = 1 (the heal at a random point of the interval, same 40 seeds for both): 7.3 s on average and 15.2 s
at most, as with k = 2 (7.3 s, 15.2 s): the healed node's next tick and its ``"mark"`` carry the change, not the
fan-out, so SYNC_PEERS went from 2 to 1: half the idle rounds, at ~7 ms of CPU each (below), 30 fewer every
15 s at 30 nodes, 1.4 % of a core.
Idle, a cluster makes N*k periodic rounds per interval and no pull-backs (every head a node reports is the one
its peers last read); busy, at most one pull-back per periodic round, so N*2k. Rounds due to events are as
before: a change that gossip missed and catch-up found costs a round per connection as it spreads as news. A
node of the previous version ignores ``"mark"`` and never pulls back: it still converges by random pulls (and
pushes as before, with ``"news"``).

Measured cost of an idle round (two real hosts on loopback, both ends together): about 7 ms CPU for py-libp2p's
request/response (a stream per request) and 6 ms more for 30 node records (checked and verified one by one),
against a SQL read of microseconds. A digest exchanged before the page would cost the same request: the empty
page is the digest. So periodic rounds and pull-backs ask for node records (``"nodes": true``) only once every
RECORDS_EVERY, when due: heartbeats bring records every few seconds on gossip, and connection and news rounds
still ask for them, so a joiner learns every node at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import trio
from libp2p.peer.id import ID
from libp2p.request_response import RequestResponseError

from .errors import NodeError
from .host import Host
from .sync import SYNC_PROTOCOL, Sync
from .wire import WireError

__all__ = ["RECORDS_EVERY", "SYNC_INTERVAL", "SYNC_PEERS", "Catchup", "Rounds"]

log = logging.getLogger("cmnode.p2p")

SYNC_INTERVAL = 15.0
"""Every this often a node catches up with SYNC_PEERS random peers, so a gossip message lost in transit is
repaired."""
SYNC_PEERS = 1
"""Peers asked per periodic round (the fan-out): what the cluster's idle rounds grow with, N * SYNC_PEERS."""
RECORDS_EVERY = 60.0
"""Periodic rounds and pull-backs ask for node records at most this often (rounds on an event always do)."""
SYNC_QUEUE = 1000
SPREAD_AFTER = 0.3
"""News is told to the other peers this long after the round that brought it, once for all the rounds that
brought news meanwhile, and not to a peer that read our store since (``Catchup.spread``)."""
EXCHANGE_FOR = 30.0
"""The peer list our answers carry is read again at least this often, as well as whenever our connections change."""
READ_ON = 10.0
"""A peer served a page with more to follow is taken to read on for this long (a request's timeout): news is not
told to it meanwhile, its next page holds it."""


@dataclass
class Rounds:
    """Catch-up rounds started, by cause (what the simulation and the tests count)."""

    periodic: int = 0
    pull_backs: int = 0
    """Rounds with a peer whose periodic request said its store moved since we last read it."""
    events: int = 0
    """A new connection, a reconnect, news."""
    told: int = 0
    """Peers told of news (each then a round with news, and its own round back)."""
    spared: int = 0
    """Peers not told of news because they had read our store since it came, or were reading it."""


class Catchup:
    """Schedules catch-up rounds for one host and answers peers' sync requests."""

    def __init__(
        self,
        *,
        sync: Sync,
        peers: Callable[[], list[dict[str, Any]]],
        meet: Callable[[list[Any]], None],
        fanout: int = SYNC_PEERS,
        interval: float = SYNC_INTERVAL,
        rng: random.Random | None = None,
        spread_after: float = SPREAD_AFTER,
    ) -> None:
        """``peers`` describes our connections for peer exchange; ``meet`` dials some of a peer's; ``fanout``
        peers are asked every ``interval`` seconds, drawn from ``rng``; news is told ``spread_after`` seconds
        after it came."""
        self.sync = sync
        self.spread_after = spread_after
        self.fanout = fanout
        self.interval = interval
        self.rounds = Rounds()
        self._peers = peers
        self._meet = meet
        self._random = rng or random.Random()
        self._send, self._recv = trio.open_memory_channel[ID](SYNC_QUEUE)
        self._syncing: set[ID] = set()
        self._again: set[ID] = set()
        """Peers that reconnected (or were due) while a round with them ran: that round may have been on the
        old, dead connection, so another follows at once (a subset of ``_syncing``)."""
        self._news: set[ID] = set()
        """Peers whose next round tells them we have news (bounded by the connected peers: the worker forgets
        a peer that is gone)."""
        self._event: set[ID] = set()
        """Peers whose next round is due to an event: a full round, never made light by a tick."""
        self._light: set[ID] = set()
        """Peers whose next round is periodic or a pull-back: node records only if due (``RECORDS_EVERY``)."""
        self._marked: set[ID] = set()
        """Peers whose next round is periodic: its first request carries our store's head (``"mark"``)."""
        self._heads: dict[ID, int] = {}
        """Each peer's store head as its answers said at the end of our last complete round with it (pruned to
        the connected peers every tick)."""
        self._marks: dict[ID, int] = {}
        self._read: dict[ID, int] = {}
        """Our store's head when a peer's read of it last ended (a page with nothing more to follow): the peer
        holds all we held then (pruned to the connected peers every tick)."""
        self._reading: dict[ID, float] = {}
        """When we served a peer a page with more to follow (it is reading our store; pruned as ``_read``)."""
        self._sources: set[ID] = set()
        """The peers whose rounds brought news since news was last told (``spread``)."""
        self._news_head = 0
        """Our store's head after the latest of those rounds."""
        self._news_due = trio.Event()
        """The marks peers sent while a round with them ran (a subset of ``_syncing``)."""
        self._records_at: float | None = None
        self._host: Host | None = None
        self._exchanged: dict[ID, list[Any]] = {}
        """The peer list each peer's answers last carried (pruned to the connected peers every tick): the same
        list again is not handed to ``meet`` (``_exchange``)."""
        self._offered: tuple[frozenset[ID], float, list[dict[str, Any]]] | None = None
        """Our connections as ``peers`` described them, when, and the connected set they were read for."""

    def on_connect(self, peer_id: ID) -> None:
        """Catch up with ``peer_id`` soon (a full round); if the queue is full, a periodic round catches up."""
        self._event.add(peer_id)
        self._light.discard(peer_id)
        self._marked.discard(peer_id)
        self._queue(peer_id)

    def spread(self, source: ID) -> None:
        """We learned news from ``source``: tell the other peers, ``spread_after`` from now (``_tell``)."""
        self._sources.add(source)
        self._news_head = self.sync.store.head
        self._news_due.set()

    def _tell(self) -> None:
        """A round with every peer that may lack the news, telling it so: not one whose read of our store ended
        at the head we had after the news or later (``_read``), nor one still reading (``_reading``: its next
        page holds it), nor the one peer the news came from.

        Why the wait and the check: after a heal every node reconnects to the other parts and reads them itself.
        Told at once, each round that brought news made two more rounds with every other peer (ours telling it,
        and its own back), most of them empty: 166 rounds by the 9 nodes not killed in a 10-node heal, at ~10 ms
        of CPU at each end, on the two cores the restarted node also needs. By the time it is told, most peers
        have read the news themselves. Measured (``benchmarks/chaos.py --scenario partition --runs 2 --baseline``,
        quiet machine): the survivors' rounds 138, 182 -> 122, 107, their CPU 3.04, 3.91 -> 2.75, 2.93 s, heal to
        agreement 2.14, 2.58 -> 1.98, 2.18 s."""
        sources, head = self._sources, self._news_head
        self._sources = set()
        if self._host is None:
            return
        now = trio.current_time()
        for peer_id in self._host.host.get_connected_peers():
            if sources == {peer_id}:
                continue
            if self._read.get(peer_id, -1) >= head or now - self._reading.get(peer_id, -READ_ON) < READ_ON:
                self.rounds.spared += 1
                continue
            self.rounds.told += 1
            self._news.add(peer_id)
            self.on_connect(peer_id)

    async def _teller(self) -> None:
        while True:
            await self._news_due.wait()
            await trio.sleep(self.spread_after)
            self._news_due = trio.Event()
            self._tell()

    def tick(self, host: Host) -> list[ID]:
        """One periodic round: ``fanout`` connected peers at random, among those we are not syncing with (a
        round that runs will do). Returns them. What is kept per peer is pruned to the connected ones."""
        connected = host.host.get_connected_peers()
        for kept in (self._heads, self._marks, self._read, self._reading, self._exchanged):
            for gone in set(kept).difference(connected):
                del kept[gone]
        for flags in (self._news, self._event, self._light, self._marked):
            flags.intersection_update(connected)
        idle = [p for p in connected if p not in self._syncing]
        chosen = self._random.sample(idle, min(self.fanout, len(idle)))
        for peer_id in chosen:
            if peer_id not in self._event:  # else a full round is due already (or its turn was lost to a full queue)
                self._light.add(peer_id)
                self._marked.add(peer_id)
            self._queue(peer_id)
        return chosen

    async def run(self, host: Host) -> None:
        """The periodic rounds and the worker, until cancelled."""
        self._host = host
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker, host, nursery)
            nursery.start_soon(self._teller)
            while True:
                await trio.sleep(self.interval)
                self.tick(host)

    def _queue(self, peer_id: ID) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(peer_id)

    def _pull_back(self, peer_id: ID, mark: int) -> None:
        """A light round with a peer whose store moved since we last read it (its periodic request said so),
        unless one is due already; while a round with it runs, decided when that round ends (it may have read
        the peer's store past ``mark`` already)."""
        if peer_id in self._syncing:
            self._marks[peer_id] = max(mark, self._marks.get(peer_id, 0))
        elif peer_id not in self._event and peer_id not in self._light:
            self._light.add(peer_id)
            self._queue(peer_id)

    async def _worker(self, host: Host, nursery: trio.Nursery) -> None:
        async for peer_id in self._recv:
            # only while connected: a request would dial a peer that is gone (or was disconnected for a reason)
            if peer_id in self._syncing:
                self._again.add(peer_id)
            elif host.connected(peer_id):
                self._syncing.add(peer_id)
                nursery.start_soon(self._round, host, peer_id)
            else:
                for flags in (self._news, self._event, self._light, self._marked):
                    flags.discard(peer_id)

    def _take(self, peer_id: ID) -> tuple[bool, bool, bool]:
        """This round's flags (news, marked, light), cleared for the next one; the round counted by cause."""
        news, marked, light = (peer_id in flags for flags in (self._news, self._marked, self._light))
        for flags in (self._news, self._event, self._light, self._marked):
            flags.discard(peer_id)
        if marked:
            self.rounds.periodic += 1
        elif light:
            self.rounds.pull_backs += 1
        else:
            self.rounds.events += 1
        return news, marked, light

    async def _round(self, host: Host, peer_id: ID) -> None:
        news, marked, light = self._take(peer_id)
        started = trio.current_time()
        records = not light or self._records_at is None or started - self._records_at >= RECORDS_EVERY
        before_records = self._records_at
        if records:  # claimed now, so the tick's other round does not ask for them too; given back if this fails
            self._records_at = started
        first, head = True, None

        async def request(body: dict[str, Any]) -> Any:
            nonlocal first, head
            if first:  # the first request of the round
                first = False
                extra: dict[str, Any] = {"news": True} if news else {}  # "catch up with me"
                if marked:
                    extra["mark"] = self.sync.store.head  # "this is how far my store is": a pull-back if moved
                body = {key: value for key, value in {**body, **extra}.items() if records or key != "nodes"}
            page = await host.request(peer_id, SYNC_PROTOCOL, body)
            if isinstance(page, dict):
                if isinstance(page.get("peers"), list):
                    self._exchange(peer_id, page.pop("peers"))
                if _is_count(page.get("head")):
                    head = page["head"]
            return page

        stats = self.sync.stats
        ok = False
        try:
            merged = await self.sync.catch_up(peer_id.to_base58(), request)  # this round's own (rounds overlap)
            if head is not None:
                self._heads[peer_id] = head
            ok = True
            if merged.jobs or merged.executions or merged.allocations:  # news gossip did not bring (missed, lost)
                log.info("caught up with peer=%s jobs=%d executions=%d allocations=%d pages=%d", peer_id,
                         merged.jobs, merged.executions, merged.allocations, merged.pages)  # fmt: skip
                self.spread(peer_id)
        except (RequestResponseError, WireError, NodeError) as exc:
            stats.failures += 1
            log.debug("catch-up with %s failed: %s", peer_id, exc)
        except Exception as exc:  # anything else a peer's answer provokes fails this round only
            stats.failures += 1
            log.warning("catch-up with %s failed: %r", peer_id, exc, exc_info=exc)
        finally:
            if records and not ok and self._records_at == started:
                self._records_at = before_records
            self._syncing.discard(peer_id)
            mark = self._marks.pop(peer_id, None)
            if mark is not None and (not ok or head is None or head < mark):  # not read that far: pull back
                self._pull_back(peer_id, mark)
            if peer_id in self._again:
                self._again.discard(peer_id)
                self._queue(peer_id)  # with the flags of what asked for it meanwhile (``_take`` cleared ours)
        # Jobs heard on gossip before the first round (node/replica.py) wait for a round to end, done or failed:
        # the store is then as whole as this peer could make it (one that cannot answer sync gives no more).
        await self.sync.inbound.caught_up()

    async def serve(self, request: Any, context: Any) -> dict[str, Any]:
        """A peer's sync request, answered with our changes and the peers we know (peer exchange). A request
        that says it brings news makes us catch up with the asker too; so does a periodic one whose ``mark``
        (the asker's store head) is not the head we last read from it."""
        if isinstance(request, dict):
            mark = request.get("mark")
            if request.get("news") is True:
                self.on_connect(context.peer_id)
            elif _is_count(mark) and self._heads.get(context.peer_id) != mark:
                self._pull_back(context.peer_id, mark)
        answer = await self.sync.serve(request)
        if answer.get("more") is False and _is_count(answer.get("head")):  # its read ended: it holds our store
            self._read[context.peer_id] = answer["head"]
            self._reading.pop(context.peer_id, None)
        elif answer.get("more") is True:
            self._reading[context.peer_id] = trio.current_time()
        if "error" not in answer:
            asker = str(context.peer_id)
            answer["peers"] = [
                f"{addr}/p2p/{p['node_id']}" for p in self._described() if p["node_id"] != asker
                for addr in p["addresses"]
            ]  # fmt: skip
        return answer

    def _exchange(self, peer_id: ID, addresses: list[Any]) -> None:
        """Peer exchange: a peer's list to ``meet``, unless it is the list this peer sent last time. An idle
        peer's answers carry the same list round after round, and ``meet`` parses every multiaddr in it (about
        0.15 ms each, more than the rest of an idle round's asking side); what it learned from that list it holds
        already, and a node short of connections tops up from what it holds every MAINTAIN_EVERY anyway."""
        if self._exchanged.get(peer_id) == addresses:
            return
        self._exchanged[peer_id] = addresses
        self._meet(addresses)

    def _described(self) -> list[dict[str, Any]]:
        """``peers()``, read again only when our connections changed or the last read is EXCHANGE_FOR old (a peer's
        addresses may change while it stays connected, from identify): served on every answer, it read the
        peerstore and formatted every connected peer's multiaddrs each time."""
        connected = frozenset(self._host.host.get_connected_peers()) if self._host is not None else frozenset()
        now = trio.current_time()
        offered = self._offered
        if offered is None or offered[0] != connected or now - offered[1] >= EXCHANGE_FOR:
            offered = self._offered = (connected, now, self._peers())
        return offered[2]


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
