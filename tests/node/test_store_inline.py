"""A write of a row or a few (a job or an execution, a peer's or this node's) is committed on the trio thread: a
worker thread's round trip cost 4-5 ms at p50 on a loaded machine, 20 times the commit (``Commits._inline``),
and in the writing task itself when the writer is idle (``Commits._commit_here``). What may block stays off it:
fsyncs (the syncer's thread), big batches, bulk blocks, and every checkpoint (the writer thread)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import trio
import trio.testing

from node.model import Execution, Job, JobSpec, State
from node.store import Store
from node.store_commit import INLINE_RUN


def _job() -> Job:
    return Job(job_id=str(uuid.uuid4()), spec=JobSpec.from_json({"image": "img:1"}), origin="peer",
               created_at=time.time())  # fmt: skip


def _threads(store: Store) -> list[int]:
    """The thread each job insert of ``store`` runs on, from now on."""
    seen: list[int] = []
    insert = store._insert_job

    def recording(conn: object, job: Job, execution: Execution | None) -> bool:
        seen.append(threading.get_ident())
        return insert(conn, job, execution)  # type: ignore[arg-type]

    store._insert_job = recording  # type: ignore[method-assign]
    return seen


def _autocheckpoint(store: Store) -> int:
    value: int = store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    return value


async def test_a_relaxed_job_is_committed_on_the_trio_thread_without_checkpoints(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        seen = _threads(store)
        with trio.fail_after(30):
            assert await store.add_job(_job(), durable=False)
            assert seen == [threading.get_ident()]
            assert _autocheckpoint(store) == 0  # no checkpoint's fsyncs on the trio thread
            assert len(await store.list_jobs()) == 1


async def test_a_durable_job_is_committed_on_the_trio_thread_and_fsynced_on_another(tmp_path: Path) -> None:
    """A job created here: its commit is as quick as a peer's (no fsync: ``synchronous=NORMAL``); the syncer
    fsyncs it on its own thread, and the write returns only after that."""
    async with Store.open(tmp_path / "db") as store:
        seen = _threads(store)
        synced: list[int] = []
        real = store._sync_file

        def sync_file() -> None:
            synced.append(threading.get_ident())
            real()

        store._sync_file = sync_file  # type: ignore[method-assign]
        with trio.fail_after(30):
            assert await store.add_job(_job())
        here = threading.get_ident()
        assert seen == [here] and synced and here not in synced
        assert _autocheckpoint(store) == 0


async def test_a_write_goes_to_the_writer_thread_while_a_batch_is_committed_there(tmp_path: Path) -> None:
    """The connection is the writer thread's while it commits a batch: a quick write then queues behind it
    instead of committing in its own task (the writer task commits it after the batch)."""
    async with Store.open(tmp_path / "db") as store:
        job = _job()
        seen = _threads(store)
        many = [Execution(job_id=job.job_id, node_id=f"n{i}", state=State.RUNNING, version=1) for i in range(50)]
        started, release = threading.Event(), threading.Event()
        put = store._put_executions

        def held(conn: object, batch: list[Execution]) -> list[Execution]:
            started.set()
            release.wait(30)
            return put(conn, batch)  # type: ignore[arg-type]

        store._put_executions = held  # type: ignore[method-assign]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.put_executions, many)  # a big batch: on the writer thread
                assert await trio.to_thread.run_sync(started.wait, 30)
                assert store._thread_busy
                nursery.start_soon(store.add_job, job)
                await trio.testing.wait_all_tasks_blocked()
                assert seen == []  # waiting in the writer's queue, not committed here
                release.set()
        assert len(seen) == 1
        assert len(await store.list_jobs()) == 1


async def test_after_a_run_of_inline_commits_one_goes_to_the_writer_thread(tmp_path: Path) -> None:
    """So that the WAL is checkpointed (on the writer thread) even when only peers' jobs arrive."""
    async with Store.open(tmp_path / "db") as store:
        seen = _threads(store)
        with trio.fail_after(30):
            for _ in range(INLINE_RUN + 1):
                assert await store.add_job(_job(), durable=False)
        here = threading.get_ident()
        assert seen[:INLINE_RUN] == [here] * INLINE_RUN and seen[INLINE_RUN] != here


async def test_a_big_batch_of_executions_stays_on_the_writer_thread(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        job = _job()
        await store.add_job(job, durable=False)
        many = [Execution(job_id=job.job_id, node_id=f"n{i}", state=State.RUNNING, version=1) for i in range(50)]
        seen: list[int] = []
        put = store._put_executions

        def recording(conn: object, batch: list[Execution]) -> list[Execution]:
            seen.append(threading.get_ident())
            return put(conn, batch)  # type: ignore[arg-type]

        store._put_executions = recording  # type: ignore[method-assign]
        with trio.fail_after(30):
            assert len(await store.put_executions(many[:2], durable=False)) == 2
            assert len(await store.put_executions(many[2:], durable=False)) == 48
        assert seen[0] == threading.get_ident() and seen[1] != threading.get_ident()


async def test_a_quick_write_commits_in_the_writing_task_without_a_scheduling_round(tmp_path: Path) -> None:
    """The writer idle: the write is committed in the caller's task, which goes on at once; a task made ready
    before it has not run yet (through the writer task, it took two rounds behind every ready task)."""
    async with Store.open(tmp_path / "db") as store, trio.open_nursery() as nursery:
        await trio.testing.wait_all_tasks_blocked()  # the writer task waits for work
        ran: list[str] = []

        async def other() -> None:
            ran.append("other")

        nursery.start_soon(other)
        job = _job()
        assert await store.add_job(job, durable=False)
        assert ran == []
        assert await store.get_job(job.job_id) is not None


async def test_a_peer_s_job_is_inserted_with_its_status_in_one_statement(tmp_path: Path) -> None:
    """A peer's job took an insert and then an update of its status (the row and its status index written
    twice), on every node for every job gossiped; now one insert, with the status of the executions already
    stored (one may come before its job)."""
    async with Store.open(tmp_path / "db") as store:
        early = _job()
        running = Execution(job_id=early.job_id, node_id="peer", state=State.RUNNING, version=1)
        with trio.fail_after(30):
            await store.put_execution(running)
            statements: list[str] = []
            store._writer.set_trace_callback(statements.append)
            assert await store.add_job(early, durable=False)
            plain = _job()
            assert await store.add_job(plain, durable=False)
            store._writer.set_trace_callback(None)
            assert not [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
            assert [r.status for r in await store.list_jobs() if r.job.job_id == early.job_id] == ["running"]
            assert [r.status for r in await store.list_jobs() if r.job.job_id == plain.job_id] == ["pending"]
