"""Catch-up rounds that run at once check each row once, and each logs what it merged itself.

After a 3+3+4 heal every survivor caught up with 6 to 10 reconnected peers at once (its first round was long
over), several bringing the same rows: each round read what the store held before any
had merged its page, so each checked (schema and signatures) the same rows again; and each logged "caught up ...
jobs=N" from the shared counters, so overlapping rounds counted each other's rows. Three real stores hold the same
jobs and executions, each a few of its own; a barrier holds each round after that read until all three have read
(or a quarter of a second has passed), the interleaving that made them check three times.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import trio

from node.catchup import Catchup
from node.identity import load_or_create
from node.model import State

from .fakes import signed_execution, signed_job
from .test_catch_up_first import Interleave, Peers
from .test_catch_up_round import replica_node

SHARED = 20
OWN = 3
"""Jobs (each with an execution) that only one peer holds."""


async def test_rounds_at_once_check_each_row_once_and_log_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real time (the stores work in threads); about a second (the barrier waits in vain while a round has the turn)."""
    ids = [load_or_create(tmp_path / name) for name in ("a", "b", "c", "e", "y")]
    a_id, b_id, c_id, empty_id, y_id = ids
    shared = [signed_job(a_id, f"j{i}") for i in range(SHARED)]
    async with (
        replica_node(tmp_path / "a.db", a_id) as (a_store, a_sync),
        replica_node(tmp_path / "b.db", b_id) as (b_store, b_sync),
        replica_node(tmp_path / "c.db", c_id) as (c_store, c_sync),
        replica_node(tmp_path / "e.db", empty_id) as (_, e_sync),
        replica_node(tmp_path / "y.db", y_id) as (y_store, y_sync),
    ):
        done = [signed_execution(a_id, job.job_id, state=State.COMPLETE) for job in shared]
        for peer, store in zip((a_id, b_id, c_id), (a_store, b_store, c_store), strict=True):
            own = [signed_job(peer, f"{peer.node_id[-6:]}-{i}") for i in range(OWN)]
            await store.add_jobs([(job, None) for job in shared + own])  # what the parts agreed on while apart
            await store.put_executions(done + [signed_execution(peer, j.job_id, state=State.COMPLETE) for j in own])
        interleave = Interleave(monkeypatch, wait=0.25)
        caplog.set_level(logging.INFO, logger="cmnode.p2p")
        peers = Peers({empty_id.peer_id: e_sync.serve})
        catchup = Catchup(sync=y_sync, peers=list, meet=lambda addresses: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(catchup.run, peers)  # type: ignore[arg-type]  # the parts of Host it uses
            catchup.on_connect(empty_id.peer_id)  # this node's first round: long over when the heal comes
            with trio.fail_after(10):
                while y_sync.stats.rounds < 1:
                    await trio.sleep(0.02)
            interleave.reads = 0  # the barrier again, for the three rounds of the heal
            peers.serve.update({i.peer_id: s.serve for i, s in ((a_id, a_sync), (b_id, b_sync), (c_id, c_sync))})
            for peer_id in (a_id.peer_id, b_id.peer_id, c_id.peer_id):  # the heal: all three reconnect at once
                catchup.on_connect(peer_id)
            with trio.fail_after(10):
                while y_sync.stats.rounds < 4:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()

        jobs, executions = SHARED + 3 * OWN, SHARED + 3 * OWN
        assert len(set(await y_store.job_ids_with_prefix("", limit=1000))) == jobs
        rows = interleave.rows
        assert sorted(rows) == sorted(set(rows)), "a row was checked by more than one round"
        assert len(rows) == jobs + executions  # was up to three times the shared ones
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("caught up with")]
        counts = [re.search(r"jobs=(\d+) executions=(\d+)", line) for line in lines]
        assert all(counts), lines
        assert sum(int(m[1]) for m in counts if m) == jobs, lines  # each round its own: none counted twice
        assert sum(int(m[2]) for m in counts if m) == executions, lines
        assert y_sync.stats.jobs == jobs and y_sync.stats.executions == executions
