"""A job that two catch-up rounds bring at once is counted and logged once.

After a heal a node catches up with two peers at once, and both pages carry the same jobs. ``Replica.on_jobs``
read what the store held, then recorded the jobs it found missing in one write and called every one of them new:
when the other round had recorded them between that read and the write, each job was logged "job from peer" (the
line ``benchmarks/mesh.py`` and the chaos harness count) and counted in ``SyncStats.jobs`` twice (a 10-node chaos
run logged it 370 times for 303 jobs). Two real stores serve the same finished jobs to a third; a barrier holds
each round just after that read until the other has made it too, the interleaving that double-counted. One node's
rounds no longer merge at the same time (``Sync.catch_up``'s turn, ``test_catch_up_overlap.py``), but ``on_jobs``
must still hold when another writer records a job between its read and its write: here the two rounds are made
by two ``Sync`` instances over the node's one store and ``Replica``, which do not share a turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

import node.replica
from node.identity import load_or_create
from node.model import State
from node.store import Store
from node.sync import Sync
from node.syncpage import Held, held

from .fakes import signed_execution, signed_job
from .test_catch_up_round import replica_node

JOBS = 20


async def test_a_job_two_rounds_bring_at_once_is_counted_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    x_id, y_id, z_id = (load_or_create(tmp_path / name) for name in ("x", "y", "z"))
    jobs = [signed_job(x_id, f"j{i}") for i in range(JOBS)]
    reads, both_read = 0, trio.Event()

    async def read_then_wait_for_the_other(store: Store, job_ids: Iterable[str]) -> Held:
        nonlocal reads
        facts = await held(store, job_ids)
        reads += 1
        if reads == 2:
            both_read.set()
        with trio.fail_after(5):
            await both_read.wait()
        return facts

    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "z.db", z_id) as (z_store, z_sync),
        replica_node(tmp_path / "y.db", y_id) as (y_store, y_sync),
    ):
        for store in (x_store, z_store):  # both sides of the heal hold the same finished jobs
            await store.add_jobs([(job, None) for job in jobs])
            await store.put_executions([signed_execution(x_id, job.job_id, state=State.COMPLETE) for job in jobs])
        monkeypatch.setattr(node.replica, "held", read_then_wait_for_the_other)
        caplog.set_level(logging.INFO, logger="cmnode.sync")
        other = Sync(store=y_store, inbound=y_sync.inbound, identity=y_id)  # another writer: not in y_sync's turn
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(y_sync.catch_up, x_id.node_id, x_sync.serve)
                nursery.start_soon(other.catch_up, z_id.node_id, z_sync.serve)
        assert reads == 2  # both rounds merged the jobs, each having read before either wrote

        assert {job.job_id for job in jobs} <= set(await y_store.job_ids_with_prefix("j", limit=100))
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job from peer")]
        assert len(logged) == JOBS, logged
        assert y_sync.stats.jobs + other.stats.jobs == JOBS
