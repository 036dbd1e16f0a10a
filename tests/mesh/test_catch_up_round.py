"""Catch-up is complete in one round: whatever a peer changed while apart arrives in the first exchange.

Issue 12: after a partition, executions changed while apart arrived a periodic round (15 s) after the jobs. A
round with a peer that was still running on the old, dead connection when the peer reconnected swallowed the
reconnect: the round failed, and nothing asked that peer again until the next periodic round. Two real stores,
two ``Sync`` instances, the request a plain function call (through ``Catchup``'s scheduling where it matters).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing
from libp2p.peer.id import ID
from libp2p.request_response import RequestTimeoutError

from node.catchup import SYNC_INTERVAL, Catchup
from node.identity import Identity, load_or_create
from node.model import State
from node.replica import Replica
from node.store import Store
from node.sync import PAGE_SIZE, Sync

from .fakes import signed_execution, signed_job


@asynccontextmanager
async def replica_node(path: Path, identity: Identity) -> AsyncIterator[tuple[Store, Sync]]:
    async with Store.open(path, durable=False) as store:

        async def run(job: Any) -> bool:
            return await store.add_job(job, durable=False)

        async def cancel(job_id: str) -> None:
            await store.mark_cancelled(job_id)

        replica = Replica(store=store, node_id=identity.node_id, run=run, cancel=cancel)
        yield store, Sync(store=store, inbound=replica, identity=identity)  # type: ignore[arg-type]


async def test_one_round_brings_jobs_with_their_executions_and_status(tmp_path: Path) -> None:
    x_id, y_id, z_id = (load_or_create(tmp_path / name) for name in ("x", "y", "z"))
    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (
            y_store,
            y_sync,
        ),
    ):
        before = [signed_job(x_id, f"old{i}") for i in range(3)]
        for job in before:
            await x_store.add_job(job)
        await x_store.put_executions([signed_execution(z_id, job.job_id) for job in before])
        await y_sync.catch_up(x_id.node_id, x_sync.serve)
        # apart: more jobs than a page, executions of old jobs and of new ones change, interleaved
        during = [signed_job(x_id, f"new{i}") for i in range(PAGE_SIZE + 50)]
        for i, job in enumerate(during):
            await x_store.add_job(job)
            if i % 40 == 0:
                done = signed_execution(z_id, job.job_id, state=State.COMPLETE, version=3)
                await x_store.put_executions([done])
        for job in before:
            await x_store.put_executions([signed_execution(z_id, job.job_id, state=State.RUNNING, version=2)])

        await y_sync.catch_up(x_id.node_id, x_sync.serve)

        for job in before + during:
            x_record, x_execs = await x_store.get_job_with_executions(job.job_id) or (None, [])
            y_got = await y_store.get_job_with_executions(job.job_id)
            assert y_got is not None, job.job_id
            y_record, y_execs = y_got
            assert x_record is not None
            assert sorted(e.to_json()["version"] for e in y_execs) == sorted(e.version for e in x_execs), job.job_id
            assert y_record.status == x_record.status, job.job_id


class OldConnectionThenNew:
    """A host whose first sync request to the peer hangs on a dead connection until ``fail`` (then times out);
    later ones are answered by ``serve``."""

    def __init__(self, peer: ID, serve: Any) -> None:
        self.peer = peer
        self.serve = serve
        self.requests = 0
        self.fail = trio.Event()
        self.started = trio.Event()
        self.host = self

    def get_connected_peers(self) -> list[ID]:
        return [self.peer]

    def connected(self, peer_id: ID) -> bool:
        return peer_id == self.peer

    async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
        self.requests += 1
        if self.requests == 1:
            self.started.set()
            await self.fail.wait()
            raise RequestTimeoutError("response timed out after 10s")
        return await self.serve(body)


async def test_a_reconnect_during_a_round_on_the_dead_connection_catches_up_at_once(tmp_path: Path) -> None:
    """Real time (the store works in threads, which a virtual clock would jump over); well under a second."""
    x_id, y_id, z_id = (load_or_create(tmp_path / name) for name in ("x", "y", "z"))
    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (
            y_store,
            y_sync,
        ),
    ):
        host = OldConnectionThenNew(x_id.peer_id, x_sync.serve)
        catchup = Catchup(sync=y_sync, peers=list, meet=lambda addresses: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(catchup.run, host)  # type: ignore[arg-type]  # the parts of Host it uses
            catchup.on_connect(host.peer)  # the periodic round, on a connection that died silently
            with trio.fail_after(5):
                await host.started.wait()
            job = signed_job(x_id, "apart")
            await x_store.add_job(job)
            await x_store.put_executions([signed_execution(z_id, job.job_id, state=State.COMPLETE, version=3)])
            catchup.on_connect(host.peer)  # the peer reconnected (a new connection) while that round waits
            await trio.testing.wait_all_tasks_blocked()  # the worker has seen it
            host.fail.set()  # the old round times out
            with trio.fail_after(SYNC_INTERVAL / 3):  # not at the next periodic round
                while (got := await y_store.get_job_with_executions(job.job_id)) is None or not got[1]:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        record, executions = got
        assert record.status == "complete" and [e.version for e in executions] == [3]
