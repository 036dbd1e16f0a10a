"""Create announces its job while the commit is fsynced, and answers once it is on disk (``Store.early``): the
store's syncer is held or failed on demand (``_sync_file`` replaced), with a real SQLite store and FakeRuntime.
What the overlap buys is measured by ``benchmarks/overhead.py``; here, what it must keep: the client is answered
only after the fsync, a job to run here starts only after it, a relaxed write never waits for it, and a failed
fsync fails Create and sends the job's signed cancel after it."""

from __future__ import annotations

import errno
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from node.errors import StorageFullError
from node.jobqueue import JobQueue, WorkItem
from node.model import Job, JobSpec, State
from node.store import Store

from .test_store_faults import a_node, make_job

ELSEWHERE = {"image": "img:1", "placement": {"nodes": ["12D3KooWSomewhereElseSomewhereElseSomewhereElse1"]}}


@asynccontextmanager
async def sync_held(store: Store, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[], None]]:
    """Every fsync of ``store`` waits until the function yielded is called (or the block ends)."""
    gate = threading.Event()
    real = store._sync_file

    def held() -> None:
        gate.wait(30)
        real()

    monkeypatch.setattr(store, "_sync_file", held)
    try:
        yield gate.set
    finally:
        gate.set()


async def wait_for(check: Callable[[], bool]) -> None:
    while not check():
        await trio.sleep(0.001)


async def test_create_announces_its_job_before_the_fsync_and_answers_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with a_node(tmp_path) as (node, mesh):
        answered: list[Job] = []
        with trio.fail_after(30):
            async with sync_held(node.store, monkeypatch) as release, trio.open_nursery() as caller:

                async def create() -> None:
                    answered.append(await node.create(JobSpec.from_json(ELSEWHERE)))

                caller.start_soon(create)
                await wait_for(lambda: len(mesh.jobs) == 1)  # announced while the fsync is held
                await trio.testing.wait_all_tasks_blocked()
                assert answered == []  # but the client waits for the disk
                assert await node.store.get_job(mesh.jobs[0]) is not None  # committed: visible here already
                release()
            assert [job.job_id for job in answered] == mesh.jobs


async def test_a_job_to_run_here_starts_only_once_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with a_node(tmp_path) as (node, mesh):
        runtime = node.executor.runtime
        with trio.fail_after(30):
            async with sync_held(node.store, monkeypatch) as release, trio.open_nursery() as caller:
                caller.start_soon(node.create, JobSpec.from_json({"image": "img:1"}))
                await wait_for(lambda: len(mesh.jobs) == 1)
                await trio.testing.wait_all_tasks_blocked()  # a worker has the job and waits for the fsync
                assert runtime.of_job(mesh.jobs[0]) == []  # type: ignore[attr-defined]
                release()
            await wait_for(lambda: len(runtime.of_job(mesh.jobs[0])) == 1)  # type: ignore[attr-defined]


async def test_a_relaxed_write_does_not_wait_behind_an_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job a peer sent is committed while a local Create's fsync is in progress (before: the writer held the
    commit, and every relaxed write behind it, for the fsync)."""
    async with Store.open(tmp_path / "db") as store:
        with trio.fail_after(30):
            async with sync_held(store, monkeypatch) as release, trio.open_nursery() as nursery:
                local, _ = make_job(1)
                commits = store.commits
                nursery.start_soon(store.add_job, local)
                await wait_for(lambda: store.commits > commits)  # committed; its fsync is held
                peers, _ = make_job(2)
                assert await store.add_job(peers, durable=False)  # returns while the durable one waits
                assert await store.get_job(local.job_id) is not None and nursery.child_tasks  # still held
                release()


async def test_a_failed_fsync_fails_create_and_withdraws_the_announced_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with a_node(tmp_path) as (node, mesh):

        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        with trio.fail_after(30):
            monkeypatch.setattr(node.store, "_sync_file", broken)
            with pytest.raises(OSError, match="Input/output error"):
                await node.create(JobSpec.from_json({"image": "img:1"}))
            (job_id,) = mesh.jobs
            (cancel,) = mesh.cancels  # signed by this node, as Stop's: peers that have the job drop it
            assert cancel.job_id == job_id and cancel.by == node.node_id
            await trio.testing.wait_all_tasks_blocked()
            assert node.executor.runtime.of_job(job_id) == []  # type: ignore[attr-defined]  # never started


async def test_a_full_disk_at_fsync_answers_storage_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with a_node(tmp_path) as (node, mesh):

        def full() -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(node.store, "_sync_file", full)
        with trio.fail_after(30), pytest.raises(StorageFullError):
            await node.create(JobSpec.from_json(ELSEWHERE))
        assert len(mesh.cancels) == 1


async def test_a_failed_fsync_fails_only_its_own_writes_not_a_job_synced_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job Create stored (synced, answered) and queued behind busy workers still starts after a later,
    unrelated write's fsync failed. Before, a worker asked whether every write so far was on disk and failed the
    job's attempt ("the job store failed to sync") for the other write's fsync."""
    real_get, gate = JobQueue.get, trio.Event()

    async def held_get(queue: JobQueue) -> WorkItem:  # the workers are busy elsewhere until the gate opens
        await gate.wait()
        return await real_get(queue)

    monkeypatch.setattr(JobQueue, "get", held_get)
    async with a_node(tmp_path) as (node, _):
        real_sync = node.store._sync_file

        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        with trio.fail_after(30):
            job = await node.create(JobSpec.from_json({"image": "img:1"}))  # on disk, queued
            monkeypatch.setattr(node.store, "_sync_file", broken)
            with pytest.raises(OSError, match="Input/output error"):
                await node.store.set_meta("unrelated", "1")  # a later durable write: its fsync fails
            monkeypatch.setattr(node.store, "_sync_file", real_sync)
            gate.set()
            runtime, executions = node.executor.runtime, node.executor.executions

            def started_or_final() -> bool:  # a final execution is no longer tracked
                return bool(runtime.of_job(job.job_id)) or executions.get(job.job_id) is None  # type: ignore[attr-defined]

            await wait_for(started_or_final)
            (execution,) = await node.store.executions_of(job.job_id)
            assert (execution.state, execution.error) == (State.RUNNING, None)


async def test_on_disk_answers_for_one_write_of_an_early_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Store.on_disk`` waits for the fsync of the block's last write and answers for it alone: a write synced
    before a failed fsync stays good; outside an ``early`` block there is nothing to wait for."""
    assert Store.on_disk() is None
    async with Store.open(tmp_path / "db") as store:
        real_sync = store._sync_file

        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        with trio.fail_after(30):
            with pytest.raises(OSError, match="Input/output error"):
                async with store.early():
                    assert Store.on_disk() is None  # nothing written in the block yet
                    await store.add_job(make_job(1)[0])
                    first = Store.on_disk()
                    assert first is not None and await first()  # on disk before the next write
                    monkeypatch.setattr(store, "_sync_file", broken)
                    await store.add_job(make_job(2)[0])
                    second = Store.on_disk()
                    assert second is not None
            monkeypatch.setattr(store, "_sync_file", real_sync)
            assert await first() and not await second()
