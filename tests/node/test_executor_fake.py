"""The executor against FakeRuntime and a real (inline) store, on trio's virtual clock: retries, backoff,
timeouts, cancellation, the daemon away and back, recovery, and the bounds on what it keeps and spawns.

The store's SQLite calls run on the trio thread here (``inline_threads``), so autojump_clock only advances
when the executor is really idle. Each behaviour also has a test against dockerd (tests/node, tests/durability).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import node.executor as executor_module
from node.admission import Admission
from node.backlog import WAITING_FOR_SLOT
from node.errors import StorageFullError
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.jobqueue import JobQueue
from node.model import Execution, Job, JobSpec, State
from node.policy import Policy
from node.store import Store
from tests.support import run_threads_inline

NODE = "fake-node"


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``trio.to_thread.run_sync`` calls inline: only the store uses threads in these tests."""

    run_threads_inline(monkeypatch)


def make_job(image: str = "img:1", *, origin: str = "origin", **spec: Any) -> Job:
    return Job(
        job_id=str(uuid.uuid4()),
        spec=JobSpec.from_json({"image": image, "arguments": ["x"], **spec}),
        origin=origin,
        created_at=time.time(),
    )


class Harness:
    """An executor on FakeRuntime; ``until`` waits for what it publishes, never by sleeping."""

    def __init__(self, store: Store, runtime: FakeRuntime, queue_size: int, workers: int, **options: Any) -> None:
        self.store = store
        self.runtime = runtime
        self.latest: dict[str, Execution] = {}
        self.published: list[Execution] = []
        self._changed = trio.Event()
        self.executor = Executor(
            node_id=NODE, store=store, runtime=runtime, queue=JobQueue(queue_size), worker_count=workers,
            publish=self._publish, **options,
        )  # fmt: skip
        self.nursery: trio.Nursery | None = None

    async def _publish(self, execution: Execution) -> None:
        self.published.append(execution)
        known = self.latest.get(execution.job_id)
        if known is None or execution.version > known.version:  # merged by version, as every receiver does:
            self.latest[execution.job_id] = execution  # two tasks' writes may return, so publish, in either order
        self._changed.set()
        self._changed = trio.Event()

    async def until(self, predicate: Callable[[], bool], timeout: float = 3600) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    def state(self, job_id: str) -> State | None:
        e = self.latest.get(job_id)
        return e.state if e else None

    async def until_state(self, job_id: str, *states: State) -> Execution:
        await self.until(lambda: self.state(job_id) in states)
        return self.latest[job_id]

    async def stored(self, job_id: str) -> Execution:
        (e,) = await self.store.executions_of(job_id)
        return e


@asynccontextmanager
async def running(
    tmp_path: Path,
    runtime: FakeRuntime | None = None,
    *,
    queue_size: int = 10,
    workers: int = 2,
    before: Callable[[Store], Any] | None = None,
    **options: Any,
) -> AsyncIterator[Harness]:
    """``options``: more of ``Executor``'s arguments (``policy``, ``admission``)."""
    async with Store.open(tmp_path / "db.sqlite", durable=False) as store:
        if before is not None:
            await before(store)
        h = Harness(store, runtime or FakeRuntime(node_id=NODE), queue_size, workers, **options)
        async with trio.open_nursery() as nursery:
            h.nursery = nursery
            await nursery.start(h.executor.run)
            yield h
            nursery.cancel_scope.cancel()


async def test_exit_codes_complete_and_fail(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (int(job.spec.labels["code"]), 5.0))
    async with running(tmp_path, rt) as h:
        ok, bad = make_job(labels={"code": "0"}), make_job(labels={"code": "3"})
        await h.executor.submit(ok)
        await h.executor.submit(bad)
        assert (await h.until_state(ok.job_id, State.COMPLETE)).exit_code == 0
        failed = await h.until_state(bad.job_id, State.FAILED)
        assert (failed.exit_code, failed.error) == (3, "exited with code 3")
        assert (await h.stored(bad.job_id)).state == State.FAILED


async def test_image_is_inspected_once_and_pulling_is_reported(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, images={"absent:1": "pulls"}, pull_time=30)
    async with running(tmp_path, rt, workers=1) as h:
        present, absent = make_job("img:1"), make_job("absent:1")
        await h.executor.submit(present)
        await h.until_state(present.job_id, State.RUNNING)
        assert [c for c in rt.calls if c != "list"] == ["inspect_image", "start"]
        rt.calls.clear()
        await h.executor.submit(absent)
        await h.until_state(absent.job_id, State.RUNNING)
        assert [c for c in rt.calls if c != "list"] == ["inspect_image", "pull", "start"]
        assert [e.state for e in h.published if e.job_id == absent.job_id] == [State.PULLING, State.RUNNING]


async def test_pull_failures_fail_the_job_with_the_reason(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, images={"bad:1": "fails", "slow:1": "hangs"}, pull_timeout=300)
    async with running(tmp_path, rt) as h:
        bad, never, slow = make_job("bad:1"), make_job("bad:1", pull="never"), make_job("slow:1")
        for job in (bad, never, slow):
            await h.executor.submit(job)
        assert (await h.until_state(bad.job_id, State.FAILED)).error == "pull of 'bad:1' failed: connection refused"
        assert "pull policy is never" in (await h.until_state(never.job_id, State.FAILED)).error  # type: ignore[operator]
        began = trio.current_time()
        assert (await h.until_state(slow.job_id, State.FAILED)).error == "pull of 'slow:1' timed out after 300s"
        assert trio.current_time() - began == pytest.approx(300, abs=1)


async def test_retry_delays_never_exceed_the_60s_cap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: 1 s, 2 s, 4 s... (+-20 %, at most 60 s). The worst jitter once made a wait of 72 s."""
    monkeypatch.setattr(executor_module.random, "uniform", lambda low, high: high)
    starts: list[float] = []

    def plan(job: Job, attempt: int) -> tuple[int, float]:
        starts.append(trio.current_time())
        return 1, 0.0

    rt = FakeRuntime(node_id=NODE, plan=plan)
    async with running(tmp_path, rt) as h:
        job = make_job(retries=9)
        await h.executor.submit(job)
        final = await h.until_state(job.job_id, State.FAILED)
        assert final.attempt == 10
    delays = [b - a for a, b in itertools.pairwise(starts)]
    assert delays[:5] == pytest.approx([1.2, 2.4, 4.8, 9.6, 19.2], abs=0.01)
    assert max(delays) == pytest.approx(60, abs=0.01), delays
    waits = [e.error for e in h.published if e.error and "retrying in" in e.error]
    assert waits[-1].endswith("retrying in 60.0s")


async def test_timeout_stops_each_attempt(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    async with running(tmp_path) as h:
        job = make_job(timeout=30, retries=1)
        await h.executor.submit(job)
        final = await h.until_state(job.job_id, State.FAILED)
        assert (final.attempt, final.error, final.exit_code) == (2, "timed out after 30s", 143)
        assert [x["error"] for x in final.history] == ["timed out after 30s"]
        assert all(c.status == "exited" for c in h.runtime.of_job(job.job_id))


async def test_stop_while_pulling_frees_the_worker_and_starts_nothing(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, images={"slow:1": "hangs"}, plan=lambda job, attempt: (0, 1.0))
    async with running(tmp_path, rt, workers=1) as h:
        pulling, queued = make_job("slow:1"), make_job()
        await h.executor.submit(pulling)
        await h.until_state(pulling.job_id, State.PULLING)
        await h.executor.submit(queued)
        await h.executor.cancel(pulling.job_id)
        assert h.state(pulling.job_id) == State.CANCELLED
        assert (await h.until_state(queued.job_id, State.COMPLETE)).exit_code == 0
        assert rt.of_job(pulling.job_id) == []
        record = await h.store.get_job(pulling.job_id)
        assert record is not None and record.cancelled and record.status == "cancelled"


async def test_stop_is_one_store_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancelled flag and the CANCELLED execution go in one transaction: no crash can fall between them."""
    async with running(tmp_path) as h:
        job = make_job()
        await h.executor.submit(job)
        await h.until_state(job.job_id, State.RUNNING)
        writes: list[object] = []
        write = h.store._write

        async def counting(fn: Any, **kw: Any) -> Any:
            writes.append(fn)
            return await write(fn, **kw)

        monkeypatch.setattr(h.store, "_write", counting)
        await h.executor.cancel(job.job_id)
        assert len(writes) == 1
        record, [execution] = await h.store.get_job_with_executions(job.job_id)  # type: ignore[misc]
        assert record.cancelled and execution.state == State.CANCELLED


async def test_stop_during_backoff_starts_no_further_attempt(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (1, 0.5))
    async with running(tmp_path, rt) as h:
        job = make_job(retries=5)
        await h.executor.submit(job)
        await h.until(lambda: (e := h.latest.get(job.job_id)) is not None and e.attempt == 2)
        await h.executor.cancel(job.job_id)
        await trio.sleep(600)
        assert h.state(job.job_id) == State.CANCELLED
        assert {c.attempt for c in rt.of_job(job.job_id)} <= {1, 2}


def per_job_state(executor: Executor) -> dict[str, int]:
    """Every dict or set the executor and its parts keep: each must empty once jobs are final."""
    sizes = {}
    for owner in (executor, executor.executions, executor.recovery):
        for name, value in vars(owner).items():
            if isinstance(value, dict | set):
                sizes[f"{type(owner).__name__}.{name}"] = len(value)
    return sizes


async def test_nothing_is_kept_per_job_once_jobs_are_final(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Cancelled jobs once stayed in ``Executor._cancelled`` forever."""
    rt = FakeRuntime(node_id=NODE, images={"slow:1": "hangs"}, plan=lambda job, attempt: (0, 10.0))
    async with running(tmp_path, rt, queue_size=100, workers=2) as h:
        jobs = [make_job("slow:1" if i % 5 == 0 else "img:1", timeout=60 if i % 3 else None) for i in range(40)]
        for job in jobs:
            await h.executor.submit(job)
        await h.until(lambda: sum(h.state(j.job_id) == State.RUNNING for j in jobs) >= 1)
        for job in jobs[::2]:  # some running, some pulling, some queued
            await h.executor.cancel(job.job_id)
        for job in jobs[1::2]:
            if job.spec.image == "slow:1":
                await h.executor.cancel(job.job_id)
        await h.until(lambda: all((s := h.state(j.job_id)) is not None and s.final for j in jobs))
        await trio.sleep(60)  # removals of cancelled containers finish
        assert set(per_job_state(h.executor).values()) == {0}, per_job_state(h.executor)


async def test_peer_jobs_beyond_the_queue_wait_in_the_store_not_in_tasks(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """``accept`` once spawned one waiting task per peer job; now a full queue leaves them stored pending,
    saying why, and one task queues them in arrival order as slots free up."""
    order: list[str] = []

    def plan(job: Job, attempt: int) -> None:
        order.append(job.job_id)  # runs until the test ends it

    rt = FakeRuntime(node_id=NODE, plan=plan, images={"slow:1": "hangs"})
    async with running(tmp_path, rt, queue_size=2, workers=1) as h:
        assert h.nursery is not None
        blocker = make_job("slow:1")  # holds the only worker
        await h.executor.accept(blocker, run_here=True)
        await h.until_state(blocker.job_id, State.PULLING)
        [executor_task] = h.nursery.child_tasks

        def tasks() -> int:
            return len(executor_task.child_nurseries[0].child_tasks)

        tasks_before = tasks()
        jobs = [make_job() for _ in range(30)]
        for job in jobs:
            assert await h.executor.accept(job, run_here=True)
        assert not await h.executor.accept(jobs[0], run_here=True)  # known already
        assert tasks() <= tasks_before + 1
        assert h.executor.queue.depth <= 2
        waiting = await h.stored(jobs[-1].job_id)
        assert (waiting.state, waiting.error) == (State.PENDING, WAITING_FOR_SLOT)
        await h.executor.cancel(jobs[-2].job_id)  # one of the waiting ones: it never runs
        await h.executor.cancel(blocker.job_id)

        def settled() -> bool:
            return all(h.state(j.job_id) in (State.COMPLETE, State.CANCELLED) for j in jobs)

        for _ in range(40):
            await h.until(lambda: settled() or any(c.status == "running" for c in rt.containers.values()))
            for c in list(rt.containers.values()):
                rt.exit(c.container_id, 0)
            assert tasks() <= tasks_before + 3
        await h.until(settled)
        assert h.state(jobs[-2].job_id) == State.CANCELLED
        assert order == [j.job_id for j in jobs if j is not jobs[-2]]  # first come, first served
        assert (await h.stored(jobs[-1].job_id)).error is None


async def test_daemon_down_then_up(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    rt = FakeRuntime(node_id=NODE)
    rt.down()
    async with running(tmp_path, rt) as h:
        assert h.executor.docker_error is not None and "cannot connect" in h.executor.docker_error
        job = make_job()
        await h.executor.submit(job)
        await h.until(
            lambda: job.job_id in h.latest and "waiting for the Docker daemon" in str(h.latest[job.job_id].error)
        )
        assert h.state(job.job_id) == State.PENDING
        rt.up()
        running_ = await h.until_state(job.job_id, State.RUNNING)
        assert h.executor.docker_error is None
        # An exit while the daemon is away is learnt when it is back, with its true code.
        rt.down()
        with trio.fail_after(60):  # health is not published: look on the virtual clock
            while h.executor.docker_error is None:
                await trio.sleep(0.1)
        assert running_.container_id is not None
        rt.exit(running_.container_id, 137)
        await trio.sleep(5)
        assert h.state(job.job_id) == State.RUNNING
        rt.up()
        assert (await h.until_state(job.job_id, State.FAILED)).exit_code == 137
        assert len(rt.of_job(job.job_id)) == 1


async def _recorded(store: Store, job: Job, state: State = State.PENDING, **fields: Any) -> None:
    now = time.time()
    execution = Execution(job_id=job.job_id, node_id=NODE, created_at=now, updated_at=now)
    if state != State.PENDING or fields:
        execution = execution.advance(state=state, **fields)
    await store.add_job(job, execution)


async def test_recovery_adopts_requeues_and_replaces_a_never_started_container(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    adopted, requeued, unstarted, running_ = make_job(), make_job(), make_job(), make_job()
    started = {j.job_id: rt.add(j.job_id, 1) for j in (adopted, running_)}
    never = rt.add(unstarted.job_id, 1, status="created")

    async def before(store: Store) -> None:
        await _recorded(store, adopted, State.PULLING)
        await _recorded(store, requeued)
        await _recorded(store, unstarted)
        await _recorded(store, running_, State.RUNNING, container_id=started[running_.job_id])

    async with running(tmp_path, rt, before=before) as h:
        await h.until(lambda: all(h.state(j.job_id) == State.RUNNING for j in (adopted, requeued, unstarted)))
        assert h.latest[adopted.job_id].container_id == started[adopted.job_id]
        assert [c.container_id for c in rt.of_job(adopted.job_id)] == [started[adopted.job_id]]
        assert len(rt.of_job(requeued.job_id)) == 1
        assert never not in rt.containers and len(rt.of_job(unstarted.job_id)) == 1
        rt.exit(started[running_.job_id], 5)
        assert (await h.until_state(running_.job_id, State.FAILED)).exit_code == 5


async def test_container_of_a_cancelled_execution_is_removed_at_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Stop wrote the flag and CANCELLED in one go, then the node died before removing the container."""
    rt = FakeRuntime(node_id=NODE)
    job = make_job()
    container = rt.add(job.job_id, 1)

    async def before(store: Store) -> None:
        await _recorded(store, job, State.CANCELLED, container_id=container)
        await store.mark_cancelled(job.job_id)

    async with running(tmp_path, rt, before=before):
        with trio.fail_after(60):
            while container in rt.containers:
                await trio.sleep(1)


@pytest.mark.parametrize("state", [State.PENDING, State.RUNNING])
async def test_a_cancelled_job_with_an_unfinished_execution_is_cancelled_at_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, state: State
) -> None:
    """A store from the version whose Stop took two writes may hold the flag without the final execution."""
    rt = FakeRuntime(node_id=NODE)
    job = make_job()
    container = rt.add(job.job_id, 1) if state == State.RUNNING else None

    async def before(store: Store) -> None:
        await _recorded(store, job, state, container_id=container)
        await store.mark_cancelled(job.job_id)

    async with running(tmp_path, rt, before=before) as h:
        assert (await h.until_state(job.job_id, State.CANCELLED)).attempt == 1
        with trio.fail_after(60):  # the removal publishes nothing: look on the fake clock
            while rt.of_job(job.job_id):
                await trio.sleep(1)


# -- peers' jobs are bounded (issue 9, finding 11), and the container policy ------------------------------------


async def test_an_untrusted_origins_flood_is_bounded_refused_and_counted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """300 jobs from one peer at queue size 100 were all stored pending and all run. Now an untrusted origin
    gets its burst (bounded by the queue); the rest is refused, recorded ``rejected`` saying why, and counted."""
    rt = FakeRuntime(node_id=NODE, images={"slow:1": "hangs"})
    admission = Admission(rate=1.0, burst=100, trusted=lambda origin: origin != "stranger")
    async with running(tmp_path, rt, queue_size=100, workers=1, admission=admission) as h:
        blocker = make_job("slow:1")  # holds the only worker: nothing leaves the queue
        await h.executor.submit(blocker)
        await h.until_state(blocker.job_id, State.PULLING)
        jobs = [make_job(origin="stranger") for _ in range(300)]
        for job in jobs:
            assert await h.executor.accept(job, run_here=True)
        assert h.executor.queue.depth == 100
        stored = [await h.stored(job.job_id) for job in jobs]
        assert not h.executor.backlog.holding and all(e.error != WAITING_FOR_SLOT for e in stored)  # none held
        states = [e.state for e in stored]
        assert states == [State.PENDING] * 100 + [State.REJECTED] * 200
        refused = await h.stored(jobs[-1].job_id)
        assert refused.error is not None and refused.error.startswith("refused: ")
        assert h.latest[jobs[-1].job_id].state == State.REJECTED  # announced: every node's Status says so
        assert sum(h.executor.load().peer_jobs_refused.values()) == 200
        assert not await h.executor.accept(jobs[-1], run_here=True)  # heard again: not retried, not recounted
        assert sum(h.executor.load().peer_jobs_refused.values()) == 200
        await trio.sleep(3600)  # its bucket refills: later jobs are taken again, at its rate
        await h.executor.cancel(blocker.job_id)
        late = make_job(origin="stranger")
        assert await h.executor.accept(late, run_here=True)
        assert (await h.stored(late.job_id)).state != State.REJECTED
        assert h.state(jobs[-1].job_id) == State.REJECTED and rt.of_job(jobs[-1].job_id) == []


async def test_a_trusted_origins_excess_waits_and_all_of_it_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (0, 1.0))
    admission = Admission(rate=1.0, burst=5)  # every origin trusted
    async with running(tmp_path, rt, queue_size=10, workers=2, admission=admission) as h:
        jobs = [make_job(origin="friend") for _ in range(60)]
        for job in jobs:
            assert await h.executor.accept(job, run_here=True)
        assert h.executor.queue.depth <= 10
        waited = {e.job_id for e in h.published if e.error == WAITING_FOR_SLOT}
        assert len(waited) >= 40  # beyond its burst and rate: held in the store, not refused
        await h.until(lambda: all(h.state(j.job_id) == State.COMPLETE for j in jobs))
        assert h.executor.load().peer_jobs_refused == {"rate": 0, "queue": 0}


async def test_a_job_this_nodes_policy_refuses_is_rejected_not_run_not_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (0, 1.0))
    policy = Policy(allow_images=("img:*",))
    async with running(tmp_path, rt, policy=policy) as h:
        ok, other, mount = make_job("img:1"), make_job("other:1", retries=3), make_job("img:1", volumes=["/etc:/e"])
        for job in (ok, other, mount):
            assert await h.executor.accept(job, run_here=True)
        assert (await h.until_state(ok.job_id, State.COMPLETE)).exit_code == 0
        rejected = await h.stored(other.job_id)
        assert (rejected.state, rejected.attempt) == (State.REJECTED, 1)
        assert rejected.error == "image: refused by this node's policy: 'other:1' is not matched by --allow-image img:*"
        assert (await h.stored(mount.job_id)).error == (
            "volumes[0]: refused by this node's policy: host path '/etc' refused: no --allow-host-path is set"
        )
        assert h.state(other.job_id) == State.REJECTED
        assert not await h.executor.accept(other, run_here=True)
        await trio.sleep(600)
        assert rt.of_job(other.job_id) == [] and rt.of_job(mount.job_id) == []
        record = await h.store.get_job(other.job_id)
        assert record is not None and record.status == "rejected"
        assert h.executor.load().peer_jobs_refused == {"rate": 0, "queue": 0}  # a policy refusal is no flood


async def test_a_queued_job_a_stricter_policy_now_refuses_is_rejected_at_start(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The node restarted with a stricter policy: what it had queued is rejected, not run."""
    job = make_job("other:1")

    async def before(store: Store) -> None:
        await _recorded(store, job)

    async with running(tmp_path, before=before, policy=Policy(allow_images=("img:*",))) as h:
        rejected = await h.until_state(job.job_id, State.REJECTED)
        assert rejected.error is not None and "--allow-image" in rejected.error
        assert h.runtime.of_job(job.job_id) == []


async def test_every_container_gets_the_policys_limits(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    rt = FakeRuntime(node_id=NODE, policy=Policy(pids_limit=64, memory=2**28))
    async with running(tmp_path, rt) as h:
        plain, own = make_job(), make_job(resources={"memory": "64m"}, volumes=["cache:/c:ro"])
        for job in (plain, own):
            await h.executor.submit(job)
            await h.until_state(job.job_id, State.RUNNING)
        [(cid, options), (_, options2)] = rt.options.items()
        assert rt.containers[cid].job_id == plain.job_id
        assert (options.no_new_privileges, options.pids_limit, options.memory, options.mounts) == (True, 64, 2**28, ())
        assert (options2.no_new_privileges, options2.memory, len(options2.mounts)) == (True, 64 * 2**20, 1)


async def test_a_full_disk_while_jobs_run_kills_nothing_and_the_states_are_stored_when_room_returns(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a state change that could not be stored made the worker fail the job, which wrote again: the
    exception reached the executor's nursery and the node died."""
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (0, 5.0))
    async with running(tmp_path, rt) as h:
        full = True
        put_execution, put_executions = h.store.put_execution, h.store.put_executions

        async def refuse_one(execution: Execution, **kw: Any) -> Any:
            if full:
                raise StorageFullError("storage full: database or disk is full")
            return await put_execution(execution, **kw)

        async def refuse_many(executions: Any, **kw: Any) -> Any:
            if full:
                raise StorageFullError("storage full: database or disk is full")
            return await put_executions(executions, **kw)

        job = make_job()
        await h.executor.submit(job)
        monkeypatch.setattr(h.store, "put_execution", refuse_one)
        monkeypatch.setattr(h.store, "put_executions", refuse_many)
        await trio.sleep(60)  # the container starts and exits meanwhile; nothing can be stored
        assert h.state(job.job_id) is None or not h.state(job.job_id).final  # type: ignore[union-attr]
        assert h.executor.active(job.job_id) is None  # in memory, the attempt is over
        full = False
        done = await h.until_state(job.job_id, State.COMPLETE)
        assert done.exit_code == 0 and (await h.stored(job.job_id)).state == State.COMPLETE


SANDBOX = "failed to update the store state of sandbox: open : no such file or directory"
"""What dockerd being restarted answered a container start with (one run in three of the real restart test)."""


async def test_a_daemon_not_ready_yet_delays_the_start_and_is_not_the_attempts_failure(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    rt.fail("start", SANDBOX, times=3, not_ready=True)
    async with running(tmp_path, rt) as h:
        job = make_job()
        began = trio.current_time()
        await h.executor.submit(job)
        ran = await h.until_state(job.job_id, State.RUNNING)
        assert (ran.attempt, ran.history, ran.error) == (1, (), None)
        assert trio.current_time() - began == pytest.approx(0.5 + 1.0 + 2.0, abs=0.1)
        waits = [e.error for e in h.published if e.job_id == job.job_id and e.error]
        assert waits == [f"waiting for the Docker daemon: cannot start container for job {job.job_id}: {SANDBOX}"] * 3
        assert rt.calls.count("start") == 4 and len(rt.of_job(job.job_id)) == 1
        assert h.executor.docker_error is None  # the daemon answered all along


async def test_a_daemon_that_stays_not_ready_fails_the_attempt_in_the_end(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    rt.fail("start", SANDBOX, times=len(executor_module.NOT_READY_PAUSES) + 1, not_ready=True)
    async with running(tmp_path, rt) as h:
        job = make_job()
        began = trio.current_time()
        await h.executor.submit(job)
        failed = await h.until_state(job.job_id, State.FAILED)
        assert failed.error == f"cannot start container for job {job.job_id}: {SANDBOX}"
        assert trio.current_time() - began == pytest.approx(sum(executor_module.NOT_READY_PAUSES), abs=0.1)
        assert rt.of_job(job.job_id) == []


async def test_stop_while_waiting_for_a_daemon_not_ready_frees_the_worker(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    rt.fail("start", SANDBOX, times=4, not_ready=True)
    async with running(tmp_path, rt, workers=1) as h:
        waiting, queued = make_job(), make_job()
        await h.executor.submit(waiting)
        await h.until(lambda: rt.calls.count("start") == 4)  # now in its longest wait yet (4 s)
        await h.executor.submit(queued)
        stopped = trio.current_time()
        await h.executor.cancel(waiting.job_id)
        await h.until_state(queued.job_id, State.RUNNING)
        assert trio.current_time() - stopped < 0.1
        assert h.state(waiting.job_id) == State.CANCELLED and rt.of_job(waiting.job_id) == []
