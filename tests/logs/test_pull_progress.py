"""Pull progress: Docker's per-layer lines summed into bytes done of total, reported about once a second (the
same ``PullProgress`` DockerRuntime feeds), and a scripted pull through the executor reporting while its
execution is ``pulling``, with the report the event stream carries."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node.events import EventHub
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.jobqueue import JobQueue
from node.model import Execution, Job, JobSpec, State
from node.pullprogress import PullProgress, PullReport
from node.store import Store
from tests.support import run_threads_inline


def downloading(layer: str, current: int, total: int) -> dict[str, Any]:
    return {"status": "Downloading", "id": layer, "progressDetail": {"current": current, "total": total}}


def test_layers_are_summed_and_reports_throttled() -> None:
    now = [0.0]
    progress = PullProgress(job_id="j", node_id="n", image="img", clock=lambda: now[0])
    assert progress.feed({"status": "Pulling from library/img", "id": "latest"}) is None  # nothing known yet
    assert progress.feed({"status": "Pulling fs layer", "id": "a"}) is None
    assert progress.feed({"status": "Already exists", "id": "b"}) is None  # present: nothing to fetch
    first = progress.feed(downloading("a", 100, 1000))
    assert first == PullReport("j", "n", "img", 100, 1000)
    reports = []
    for step in range(1, 40):  # ten lines a second for four seconds
        now[0] = step / 10
        report = progress.feed(downloading("a", 100 + step * 20, 1000) if step % 2 else downloading("c", step, 500))
        if report is not None:
            reports.append((now[0], report))
    assert [at for at, _ in reports] == [1.0, 2.0, 3.0]
    assert all(r.total == 1500 for _, r in reports)
    assert [r.done for _, r in reports] == [100 + 9 * 20 + 10, 100 + 19 * 20 + 20, 100 + 29 * 20 + 30]
    assert progress.feed({"status": "Extracting", "id": "a", "progressDetail": {"current": 5, "total": 9}}) is None
    now[0] = 3.5
    last = progress.finish()  # sent at once, whatever the time
    assert last == PullReport("j", "n", "img", 1500, 1500)
    assert progress.finish() is None  # nothing new
    assert last.to_json() == {"job_id": "j", "node_id": "n", "image": "img", "done": 1500, "total": 1500}


def test_odd_lines_change_nothing() -> None:
    progress = PullProgress(job_id="j", node_id="n", image="img", clock=lambda: 0.0)
    for line in ({}, {"id": 3}, {"status": "Downloading", "id": "a", "progressDetail": {"current": -1, "total": 9}},
                 {"status": "Downloading", "id": "a", "progressDetail": "50%"}, {"error": "x"}):  # fmt: skip
        assert progress.feed(line) is None
    assert progress.now() == PullReport("j", "n", "img", 0, None)


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's calls inline, so autojump_clock advances only when the executor idles."""

    run_threads_inline(monkeypatch)


async def test_a_pull_reports_about_once_a_second_while_pulling(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    states: dict[str, State] = {}
    reports: list[tuple[float, State | None, PullReport]] = []

    def report(r: PullReport) -> None:
        reports.append((trio.current_time(), states.get(r.job_id), r))
        hub.publish("progress", r.to_json())

    started = trio.Event()

    async def publish(execution: Execution) -> None:
        states[execution.job_id] = execution.state
        if execution.state == State.RUNNING:
            started.set()

    layers = (3_000_000, 7_000_000, 500_000)
    runtime = FakeRuntime(node_id="n", images={"big:1": "pulls"}, pull_time=8.0, layers=layers, on_progress=report)
    job = Job(job_id=str(uuid.uuid4()), spec=JobSpec.from_json({"image": "big:1", "arguments": ["x"]}),
              origin="o", created_at=time.time())  # fmt: skip
    async with Store.open(tmp_path / "db.sqlite", durable=False) as store:
        hub = EventHub(store)
        executor = Executor(node_id="n", store=store, runtime=runtime, queue=JobQueue(10), worker_count=1,
                            publish=publish)  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            stream = hub.stream(None)
            began = trio.current_time()
            await executor.submit(job)
            with trio.fail_after(60):
                await started.wait()
            events = []
            with trio.fail_after(1):
                async for event in stream:
                    if event is not None and event.type == "progress":
                        events.append(event)
                    if event is not None and event.type == "progress" and event.data["done"] == sum(layers):
                        break
            nursery.cancel_scope.cancel()
    times = [at - began for at, _, _ in reports]
    assert 8 <= len(reports) <= 10, times  # about one a second over eight seconds, and the last
    assert all(b - a >= 1.0 - 1e-9 for a, b in itertools.pairwise(times[:-1])), times  # the last comes at once
    assert all(state == State.PULLING for _, state, _ in reports)
    dones = [r.done for _, _, r in reports]
    assert dones == sorted(dones) and reports[-1][2].done == reports[-1][2].total == sum(layers)
    assert [e.data for e in events] == [r.to_json() for _, _, r in reports]
    assert events[-1].data == {"job_id": job.job_id, "node_id": "n", "image": "big:1", "done": sum(layers),
                               "total": sum(layers)}  # fmt: skip
