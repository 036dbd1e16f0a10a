"""Faults under a node, fast: a full disk (SQLite's ``max_page_count`` makes SQLITE_FULL on demand), a damaged
store file, and a caller that goes away in the middle of Create or Stop. The real counterparts (a small tmpfs,
a real ``cmnode run`` on a damaged file, real HTTP clients hanging up) are in tests/cli/test_faults.py."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.config import Config
from node.core import Node
from node.errors import StorageFullError, StoreDamagedError
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.identity import load_or_create
from node.jobqueue import JobQueue
from node.link import NoMesh
from node.model import Execution, Job, JobSpec, State
from node.store import Store
from rpc.methods import build_methods
from rpc.protocol import Dispatcher


def make_job(n: int = 0) -> tuple[Job, Execution]:
    job = Job(
        job_id=str(uuid.uuid4()),
        spec=JobSpec.from_json({"image": "img:1", "arguments": [f"{n}" * 400]}),
        origin="me",
        created_at=time.time(),
    )
    return job, Execution(job_id=job.job_id, node_id="me", created_at=1.0, updated_at=1.0)


def fill_limit(store: Store) -> None:
    """From now on the database may not grow by one page: SQLITE_FULL, as a full disk gives it."""
    conn = store._writer  # the writer connection: max_page_count is a per-connection limit
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def lift_limit(store: Store) -> None:
    store._writer.execute("PRAGMA max_page_count = 1073741823")


async def test_a_full_disk_fails_writes_only_and_the_store_recovers(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        first, execution = make_job()
        assert await store.add_job(first, execution)
        fill_limit(store)
        with trio.fail_after(30):
            with pytest.raises(StorageFullError, match="storage full"):
                for n in range(200):  # the first rows may still fit in the pages there are
                    await store.add_job(*make_job(n))
            assert store.full is not None and "full" in store.full
            assert (await store.get_job(first.job_id)) is not None  # reads work
            with pytest.raises(StorageFullError):  # and the writer task is still there, failing cleanly
                await store.add_job(*make_job())
            lift_limit(store)
            assert await store.probe()
            assert store.full is None
            job, execution = make_job()
            assert await store.add_job(job, execution)
            assert (await store.get_job(job.job_id)) is not None


async def test_an_item_failing_alone_still_undoes_only_itself(tmp_path: Path) -> None:
    """The savepoint path is unchanged: one bad write in a batch does not fail the others."""
    async with Store.open(tmp_path / "db") as store:

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO no_such_table VALUES (1)")

        async def good() -> None:
            assert await store.add_job(*make_job())

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(good)
                with pytest.raises(sqlite3.OperationalError):
                    await store._write(bad)
                nursery.start_soon(good)
        assert store.full is None
        assert len(await store.list_jobs()) == 2


def damage(path: Path) -> None:
    """A store whose header is sound but whose middle pages are not: it opens, and a query fails later."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40 * 4096] = b"\xff" * (40 * 4096)
    path.write_bytes(bytes(data))


async def test_a_damaged_file_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "cmnode.db"
    async with Store.open(path) as store:
        await store.add_jobs(make_job(n) for n in range(300))
    damage(path)
    with pytest.raises(StoreDamagedError, match=rf"the job store {path} is damaged .*move it aside"):
        async with Store.open(path):
            pass
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 500)
    with pytest.raises(StoreDamagedError, match="file is not a database"):
        async with Store.open(garbage):
            pass


# -- the node: Create and Stop -------------------------------------------------------------------------------


@dataclass
class RecordingMesh(NoMesh):
    """A mesh that only remembers what the node published."""

    jobs: list[str] = field(default_factory=list)
    cancels: list[Any] = field(default_factory=list)

    async def publish_job(self, job: Job) -> None:
        self.jobs.append(job.job_id)

    async def publish_cancel(self, cancel: Any) -> None:  # type: ignore[override]  # its type is another's
        self.cancels.append(cancel)


@asynccontextmanager
async def a_node(tmp_path: Path) -> AsyncIterator[tuple[Node, RecordingMesh]]:
    """A node on FakeRuntime (containers run until told otherwise) and a real store, its executor running."""
    config = Config(listen_address="127.0.0.1", port=0, p2p_port=0, mdns=False, data_dir=tmp_path)
    identity = load_or_create(tmp_path)
    mesh = RecordingMesh()
    async with Store.open(config.db_path) as store, trio.open_nursery() as nursery:
        runtime = FakeRuntime(node_id=identity.node_id)
        executor = Executor(node_id=identity.node_id, store=store, runtime=runtime, queue=JobQueue(100),
                            worker_count=2)  # fmt: skip
        await nursery.start(executor.run)
        yield Node(config=config, identity=identity, store=store, executor=executor, mesh=mesh), mesh
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def writer_held(store: Store) -> AsyncIterator[Callable[[], None]]:
    """Hold the store's writer inside a commit until the function yielded is called (or the block ends):
    writes queued meanwhile wait for it."""
    gate = threading.Event()

    def held(conn: sqlite3.Connection) -> None:
        gate.wait(30)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store._write, held)
        await trio.testing.wait_all_tasks_blocked()
        try:
            yield gate.set
        finally:
            gate.set()


async def test_a_create_cancelled_after_its_write_was_queued_is_still_queued_and_announced(tmp_path: Path) -> None:
    """Finding 10, made deterministic: the caller's scope is cancelled while its job waits for the commit (an
    HTTP client hanging up does just that); the job is then stored, so it must also be queued and gossiped."""
    spec = JobSpec.from_json({"image": "img:1"})
    async with a_node(tmp_path) as (node, mesh):
        with trio.fail_after(30):
            async with writer_held(node.store) as release, trio.open_nursery() as caller:
                caller.start_soon(node.create, spec)
                await trio.testing.wait_all_tasks_blocked()  # Create waits for the held commit
                caller.cancel_scope.cancel()
                release()
            records = await node.store.list_jobs()
            assert len(records) == 1  # the commit went through, whatever the caller did
            job_id = records[0].job.job_id
            assert node.executor.active(job_id) is not None  # queued (a worker runs it), not stranded
            assert mesh.jobs == [job_id]  # and announced


async def test_a_stop_cancelled_after_its_write_was_queued_is_still_announced(tmp_path: Path) -> None:
    spec = JobSpec.from_json({"image": "img:1"})
    async with a_node(tmp_path) as (node, mesh):
        with trio.fail_after(30):
            job = await node.create(spec)
            async with writer_held(node.store) as release, trio.open_nursery() as caller:
                caller.start_soon(node.stop, job.job_id)
                await trio.testing.wait_all_tasks_blocked()
                caller.cancel_scope.cancel()
                release()
            record = await node.store.get_job(job.job_id)
            assert record is not None and record.cancelled
            assert len(mesh.cancels) == 1
            assert node.executor.active(job.job_id) is None  # this node's execution ended too
            (execution,) = await node.store.executions_of(job.job_id)
            assert execution.state == State.CANCELLED


async def test_create_on_a_full_disk_answers_storage_full_and_reads_still_work(tmp_path: Path) -> None:
    async with a_node(tmp_path) as (node, _):
        dispatcher = Dispatcher(build_methods(node))

        async def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
            body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
            answer = await dispatcher.handle(body)
            assert answer is not None
            parsed: dict[str, Any] = json.loads(answer)
            return parsed

        with trio.fail_after(30):
            first = (await call("ContainerService.Create", {"image": "img:1"}))["result"]["job_id"]
            fill_limit(node.store)
            for n in range(200):
                answer = await call("ContainerService.Create", {"image": "img:1", "arguments": ["x" * 400, str(n)]})
                if "error" in answer:
                    break
            assert answer["error"]["code"] == -32007
            assert answer["error"]["message"].startswith("storage full:")
            assert len(await node.store.list_jobs(limit=1000)) == n + 1  # the refused job left nothing behind
            assert (await call("ContainerService.Status", {"job_id": first}))["result"]["job_id"] == first
            assert "result" in await call("ContainerService.List", {})
            lift_limit(node.store)
            again = await call("ContainerService.Create", {"image": "img:1"})
            assert "result" in again, again
            assert node.store.full is None
