"""Anti-entropy that does not grow with the square of the cluster (issue 13), on simulated nodes.

Every node's real ``Catchup`` schedules rounds over an in-memory network; each node's ``Sync`` is a log of items
with change numbers (``MemorySync``: the protocol's shape, a watermark per peer, an empty page when idle), so
that the virtual clock (``autojump_clock``) runs many SYNC_INTERVALs in milliseconds. A partition makes requests
across it fail while the connections stay up: the worst case, where no reconnect starts a round at the heal and
only the periodic rounds can repair. The real protocol is tested in ``test_catch_up_round.py`` and the real
processes in ``test_catch_up.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.request_response import RequestTimeoutError

from node.catchup import RECORDS_EVERY, SYNC_INTERVAL, SYNC_PEERS, Catchup
from node.sync import Merged, SyncStats

LATENCY = 0.005
"""One request's round trip on the simulated network."""


class MemorySync:
    """What ``Catchup`` needs of ``Sync``: items kept with a local change number, served after a watermark."""

    def __init__(self) -> None:
        self.stats = SyncStats()
        self.items: dict[str, int] = {}
        self.head = 0
        self.store = self  # Catchup reads ``sync.store.head``
        self.inbound = self  # and awaits ``sync.inbound.caught_up()``
        self._watermarks: dict[str, int] = {}

    def add(self, item: str) -> bool:
        if item in self.items:
            return False
        self.head += 1
        self.items[item] = self.head
        return True

    async def serve(self, request: Any) -> dict[str, Any]:
        since = request["since"]
        changed = sorted((chg, item) for item, chg in self.items.items() if chg > since)
        upto = changed[-1][0] if changed else since
        return {"jobs": [item for _, item in changed], "executions": [], "allocations": [], "upto": upto,
                "head": self.head, "more": False}  # fmt: skip

    async def catch_up(self, peer_id: str, request: Any) -> Merged:
        page = await request({"since": self._watermarks.get(peer_id, 0), "limit": 10_000, "max_bytes": 10**6,
                              "nodes": True})  # fmt: skip
        merged = Merged(pages=1, jobs=sum(self.add(item) for item in page["jobs"]))
        self.stats.jobs += merged.jobs
        self._watermarks[peer_id] = page["upto"]
        self.stats.rounds += 1
        return merged

    async def caught_up(self) -> None:
        pass


@dataclass
class Context:
    peer_id: ID


class Network:
    """Simulated nodes, every pair connected; ``cut`` nodes cannot exchange requests (their connections stay)."""

    def __init__(self, n: int, seed: int) -> None:
        self.ids = [_peer_id(i) for i in range(n)]
        self.syncs = {p: MemorySync() for p in self.ids}
        rng = random.Random(seed)
        self.nodes = {p: self._catchup(self.syncs[p], random.Random(rng.random())) for p in self.ids}
        self.cut: set[ID] = set()
        self.requests: list[tuple[ID, ID, dict[str, Any]]] = []

    @staticmethod
    def _catchup(sync: MemorySync, rng: random.Random) -> Catchup:
        return Catchup(sync=sync, peers=list, meet=lambda addresses: None, rng=rng)  # type: ignore[arg-type]

    def host(self, me: ID) -> Any:
        network = self

        class Host:
            host: Any = None

            def get_connected_peers(self) -> list[ID]:
                return [p for p in network.ids if p != me]

            def connected(self, peer_id: ID) -> bool:
                return peer_id != me

            async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
                await trio.sleep(LATENCY)
                if {me, peer_id} & network.cut:
                    raise RequestTimeoutError("partitioned")
                network.requests.append((me, peer_id, body))
                return await network.nodes[peer_id].serve(body, Context(me))

        host = Host()
        host.host = host
        return host

    def connect_all(self) -> None:
        """What peering does as the connections come up: a round with every peer."""
        for me, catchup in self.nodes.items():
            for peer in self.ids:
                if peer != me:
                    catchup.on_connect(peer)

    def holders(self, item: str) -> int:
        return sum(item in sync.items for sync in self.syncs.values())


def _peer_id(i: int) -> ID:
    return ID.from_pubkey(create_new_key_pair(i.to_bytes(32, "big")).public_key)


async def _settle() -> None:
    """Until the rounds in flight are over (the virtual clock jumps once nothing else is runnable)."""
    await trio.sleep(1.0)


async def _idle_rounds(n: int, intervals: int) -> tuple[int, int, int]:
    """Requests, periodic rounds and pull-backs of an idle full mesh of ``n`` nodes over ``intervals``."""
    network = Network(n, seed=n)
    async with trio.open_nursery() as nursery:
        for peer, catchup in network.nodes.items():
            nursery.start_soon(catchup.run, network.host(peer))
        network.connect_all()
        await _settle()
        assert all(s.stats.rounds == n - 1 for s in network.syncs.values())  # a round per connection, as before
        network.requests.clear()
        start = {p: (c.rounds.periodic, c.rounds.pull_backs) for p, c in network.nodes.items()}
        await trio.sleep(intervals * SYNC_INTERVAL)
        nursery.cancel_scope.cancel()
    periodic = sum(c.rounds.periodic - start[p][0] for p, c in network.nodes.items())
    pull_backs = sum(c.rounds.pull_backs - start[p][1] for p, c in network.nodes.items())
    return len(network.requests), periodic, pull_backs


async def test_idle_rounds_per_interval_grow_with_the_nodes_not_their_square(autojump_clock: Any) -> None:
    intervals = 8
    counts = {n: await _idle_rounds(n, intervals) for n in (5, 20)}
    for n, (requests, periodic, pull_backs) in counts.items():
        # each node asks SYNC_PEERS peers per interval; an idle peer's head has not moved: no pull-back
        assert periodic == n * SYNC_PEERS * intervals, (n, counts)
        assert pull_backs == 0, (n, counts)
        assert requests == periodic  # an idle round is one request (an empty page)
        assert requests < n * (n - 1) * intervals  # what every peer every interval made
    assert counts[20][0] == 4 * counts[5][0]  # linear: 4x the nodes, 4x the rounds (not 19x)


async def test_periodic_rounds_fetch_node_records_only_when_due(autojump_clock: Any) -> None:
    network = Network(6, seed=1)
    intervals = 12
    async with trio.open_nursery() as nursery:
        for peer, catchup in network.nodes.items():
            nursery.start_soon(catchup.run, network.host(peer))
        network.connect_all()
        await _settle()
        connects = network.requests[:]
        network.requests.clear()
        await trio.sleep(intervals * SYNC_INTERVAL)
        nursery.cancel_scope.cancel()
    assert all(body.get("nodes") is True for _, _, body in connects)  # rounds on a connection: always
    assert all(isinstance(body.get("mark"), int) for _, _, body in network.requests)
    by_node: dict[ID, int] = {}
    for asker, _, body in network.requests:
        by_node[asker] = by_node.get(asker, 0) + (body.get("nodes") is True)
    due = intervals * SYNC_INTERVAL / RECORDS_EVERY
    assert all(due - 1 <= count <= due + 1 for count in by_node.values()), by_node  # ~ once a minute each


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_change_made_while_a_node_was_partitioned_reaches_it_and_its_own_reaches_all(
    autojump_clock: Any, seed: int
) -> None:
    """Node Q is cut off (its connections stay up) while the others learn one change by gossip and Q makes one
    of its own. After the heal, with no reconnect to start a round, both reach every node within one interval
    (plus round trips): Q pulls from a random peer at its next tick, and its tick's ``mark`` makes its peers
    pull from it, after which the news spreads."""
    n = 12
    network = Network(n, seed=seed)
    q = network.ids[seed]
    async with trio.open_nursery() as nursery:
        for peer, catchup in network.nodes.items():
            nursery.start_soon(catchup.run, network.host(peer))
        network.connect_all()
        await _settle()
        network.cut.add(q)
        await trio.sleep(SYNC_INTERVAL * 0.3)
        for peer, sync in network.syncs.items():  # gossip reached everyone but Q
            if peer != q:
                sync.add("while-q-was-away")
        network.syncs[q].add("made-by-q-while-away")
        await trio.sleep(2 * SYNC_INTERVAL)  # periodic rounds with Q fail meanwhile
        assert network.holders("while-q-was-away") == n - 1 and network.holders("made-by-q-while-away") == 1
        network.cut.clear()  # healed; nobody reconnects
        healed = trio.current_time()
        with trio.fail_after(SYNC_INTERVAL + 1):
            while network.holders("while-q-was-away") < n or network.holders("made-by-q-while-away") < n:
                await trio.sleep(LATENCY)
        took = trio.current_time() - healed
        nursery.cancel_scope.cancel()
    assert took <= SYNC_INTERVAL + 1, took
    assert sum(c.rounds.pull_backs for c in network.nodes.values()) >= 1  # Q's mark: how its change left Q
