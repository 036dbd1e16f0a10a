"""The rounds a node starts with: the peers it meets as it starts neither make it check the same rows twice nor wait
for one another.

A node restarted after a heal met six peers within a second (peer exchange rides the first answer) and caught up
with all six at once: each round read what the store held before any had written, so each checked (schema and
signature) the same 203 jobs, on a node that had a fifth of a core. The rounds now take turns from that read to
the end of their page's merge (``Sync``'s turn), so the later ones find the rows held. Three real stores hold the
same jobs; a barrier holds each round after that read until all three have read (or half a second has passed), the
interleaving that made them check three times.

Until round five, the first round also ran alone (``FIRST_ALONE``: the others waited for it, up to 5 s), which
the turn made redundant for checking, and which held every other round behind a first peer that answered slowly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

import node.sync
from node.catchup import Catchup
from node.identity import load_or_create
from node.store import Store
from node.synccheck import Checked, check_in_threads
from node.syncpage import Held, held

from .fakes import signed_job
from .test_catch_up_round import replica_node

JOBS = 20


class Peers:
    """The parts of ``Host`` that ``Catchup`` uses: three connected peers, each answering from its own store."""

    def __init__(self, serve: dict[ID, Any]) -> None:
        self.serve = serve
        self.host = self

    def get_connected_peers(self) -> list[ID]:
        return list(self.serve)

    def connected(self, peer_id: ID) -> bool:
        return peer_id in self.serve

    async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
        return await self.serve[peer_id](body)


class Interleave:
    """Stand-ins for ``node.sync``'s ``held`` and ``check_in_threads``: a round waits after its read of what the
    store holds until ``rounds`` rounds have read (or ``wait`` seconds have passed), the interleaving that made
    each check the same rows; ``rows`` records every row checked (a job by its id, an execution as job@node)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rounds: int = 3, wait: float = 0.5) -> None:
        self.rounds, self.wait = rounds, wait
        self.reads, self.all_read = 0, trio.Event()
        self.rows: list[str] = []
        monkeypatch.setattr(node.sync, "held", self.held)
        monkeypatch.setattr(node.sync, "check_in_threads", self.check)

    async def held(self, store: Store, job_ids: Iterable[str]) -> Held:
        facts = await held(store, job_ids)
        self.reads += 1
        if self.reads == self.rounds:
            self.all_read.set()
        with trio.move_on_after(self.wait):
            await self.all_read.wait()
        return facts

    async def check(self, jobs: list[Any], executions: list[Any], allocations: list[Any]) -> Checked:
        self.rows.extend(entry["job"]["job_id"] for entry in jobs)
        self.rows.extend(f"{entry['job_id']}@{entry['node_id']}" for entry in executions)
        return await check_in_threads(jobs, executions, allocations)


async def test_the_rounds_of_a_start_check_each_job_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real time (the stores work in threads); under a second."""
    ids = [load_or_create(tmp_path / name) for name in ("a", "b", "c", "y")]
    jobs = [signed_job(ids[0], f"j{i}") for i in range(JOBS)]

    async with (
        replica_node(tmp_path / "a.db", ids[0]) as (a_store, a_sync),
        replica_node(tmp_path / "b.db", ids[1]) as (b_store, b_sync),
        replica_node(tmp_path / "c.db", ids[2]) as (c_store, c_sync),
        replica_node(tmp_path / "y.db", ids[3]) as (y_store, y_sync),
    ):
        for store in (a_store, b_store, c_store):  # what the others agreed on while this node was down
            await store.add_jobs([(job, None) for job in jobs])
        interleave = Interleave(monkeypatch)
        peers = Peers({i.peer_id: s.serve for i, s in zip(ids, (a_sync, b_sync, c_sync), strict=False)})
        catchup = Catchup(sync=y_sync, peers=list, meet=lambda addresses: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(catchup.run, peers)  # type: ignore[arg-type]  # the parts of Host it uses
            for peer_id in peers.serve:  # met at once, as a restarted node meets them
                catchup.on_connect(peer_id)
            with trio.fail_after(10):
                while y_sync.stats.rounds < 3:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert {job.job_id for job in jobs} <= set(await y_store.job_ids_with_prefix("j", limit=100))
        assert len(interleave.rows) == JOBS  # three rounds, each job checked once (was three times)


async def test_a_slow_first_peer_holds_no_other_round(tmp_path: Path) -> None:
    """Real time (the stores work in threads). The first peer met answers only when the test ends; the jobs only
    the second peer holds arrive at once (with the first round alone they waited up to 5 s for it)."""
    ids = [load_or_create(tmp_path / name) for name in ("slow", "b", "y")]
    slow_id, b_id, _ = ids
    jobs = [signed_job(b_id, f"j{i}") for i in range(JOBS)]
    released = trio.Event()
    async with (
        replica_node(tmp_path / "slow.db", slow_id) as (_, slow_sync),
        replica_node(tmp_path / "b.db", b_id) as (b_store, b_sync),
        replica_node(tmp_path / "y.db", ids[2]) as (y_store, y_sync),
    ):
        await b_store.add_jobs([(job, None) for job in jobs])

        async def slow(body: dict[str, Any]) -> Any:
            await released.wait()
            return await slow_sync.serve(body)

        peers = Peers({slow_id.peer_id: slow, b_id.peer_id: b_sync.serve})
        catchup = Catchup(sync=y_sync, peers=list, meet=lambda addresses: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(catchup.run, peers)  # type: ignore[arg-type]  # the parts of Host it uses
            catchup.on_connect(slow_id.peer_id)  # met first: its round is the node's first
            catchup.on_connect(b_id.peer_id)
            with trio.fail_after(2):  # was 5 s (FIRST_ALONE)
                while y_sync.stats.rounds < 1:
                    await trio.sleep(0.02)
            released.set()
            nursery.cancel_scope.cancel()
        assert {job.job_id for job in jobs} <= set(await y_store.job_ids_with_prefix("j", limit=100))
