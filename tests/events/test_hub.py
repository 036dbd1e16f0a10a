"""The event hub against a real store (its SQLite calls inline, so trio's virtual clock stays exact): what a
commit becomes, order and ids, resume by id with no gap and no duplicate (from the ring and from the store),
filters, the slow reader dropped with a last event, pings, and the end of every stream at close."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.allocation import Allocation
from node.events import NODES_EVERY, NODES_UNREAD_EVERY, Event, EventFilter, EventHub
from node.model import Execution, Job, JobSpec, State
from node.nodeview import NodeInfo, NodeState
from node.store import Store
from tests.support import run_threads_inline

NODE = "node-a"


@pytest.fixture(autouse=True)
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the store's ``trio.to_thread.run_sync`` calls inline: autojump_clock then jumps only when idle."""

    run_threads_inline(monkeypatch)


def make_job(**spec: Any) -> Job:
    return Job(
        job_id=str(uuid.uuid4()),
        spec=JobSpec.from_json({"image": "img:1", "arguments": ["x"], **spec}),
        origin=NODE,
        created_at=time.time(),
    )


@asynccontextmanager
async def hub_on(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Store, EventHub]]:
    async with Store.open(tmp_path / "db.sqlite") as store:
        yield store, EventHub(store, **options)


async def take(stream: AsyncIterator[Event | None], n: int) -> list[Event]:
    out: list[Event] = []
    with trio.fail_after(5):
        async for event in stream:
            if event is not None:
                out.append(event)
            if len(out) == n:
                break
    return out


async def run_job(store: Store, job: Job, node_id: str = NODE) -> list[Execution]:
    """Record ``job`` and walk its execution through pulling, running, complete."""
    first = Execution(job_id=job.job_id, node_id=node_id, created_at=time.time())
    await store.add_job(job, first)
    steps = [first]
    for state in (State.PULLING, State.RUNNING, State.COMPLETE):
        steps.append(steps[-1].advance(state=state, **({"exit_code": 0} if state is State.COMPLETE else {})))
        await store.put_execution(steps[-1])
    return steps


async def test_a_commit_becomes_events_in_change_order(tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    async with hub_on(tmp_path) as (store, hub):
        stream = hub.stream()
        job = make_job(name="web", labels={"team": "a"})
        await run_job(store, job)
        await store.mark_cancelled(job.job_id)
        allocation = Allocation(job_id=job.job_id, version=1, replicas=1, nodes=(NODE,), by=NODE, at=1.0)
        await store.put_allocation(allocation)
        events = await take(stream, 7)
    assert [e.type for e in events] == ["job", "execution", "execution", "execution", "execution", "cancel",
                                        "allocation"]  # fmt: skip
    assert [e.data.get("state") for e in events[1:5]] == ["pending", "pulling", "running", "complete"]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[0].data == {"job_id": job.job_id, "status": "pending", "image": "img:1", "name": "web",
                              "labels": {"team": "a"}, "origin": NODE, "created_at": job.created_at}  # fmt: skip
    assert events[4].data["status"] == "complete" and events[4].data["exit_code"] == 0
    assert "signature" not in events[4].data
    assert events[5].data == {"job_id": job.job_id, "status": "complete"}
    assert events[6].data["nodes"] == [NODE] and events[6].data["version"] == 1
    assert events[6].frame().startswith(f"id: {events[6].id}\nevent: allocation\ndata: {{".encode())


async def test_resume_from_the_ring_has_no_gap_and_no_duplicate(tmp_path: Path, autojump_clock: Any) -> None:
    async with hub_on(tmp_path) as (store, hub):
        start = hub.last_id
        first = hub.stream()
        for _ in range(3):
            await run_job(store, make_job())
        everything = await take(first, 15)
        cut = everything[6].id
        resumed = await take(hub.stream(cut), 8)
    assert resumed == everything[7:]
    assert await_all_after(everything, start)


def await_all_after(events: list[Event], start: int) -> bool:
    return all(e.id > start for e in events)


async def test_resume_from_behind_the_ring_reads_the_store(tmp_path: Path, autojump_clock: Any) -> None:
    """A reader that comes back after the ring moved on gets every record changed since, from the store, then
    the ring, each change once: here the store pages are small, so several are read."""
    async with hub_on(tmp_path, ring=4, page=3) as (store, hub):
        start = hub.last_id
        jobs = [make_job() for _ in range(5)]
        for job in jobs:
            await run_job(store, job)
        await store.mark_cancelled(jobs[0].job_id)
        stream = hub.stream(start)
        replayed = await take(stream, 11)  # 5 jobs + 5 executions (each once, complete) + 1 cancel
        later = make_job()
        live: list[Event] = []

        async def read() -> None:  # keeping up now: every step, from the ring
            live.extend(await take(stream, 5))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(1)
            await run_job(store, later)
    ids = [e.id for e in replayed + live]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) - 1  # the cancel shares its job's id
    kinds = [(e.type, e.job_id) for e in replayed]
    assert sorted(kinds, key=str) == sorted(
        [("job", j.job_id) for j in jobs] + [("execution", j.job_id) for j in jobs] + [("cancel", jobs[0].job_id)],
        key=str,
    )
    assert all(e.data["state"] == "complete" for e in replayed if e.type == "execution")
    assert [e.data.get("state") for e in live] == [None, "pending", "pulling", "running", "complete"]
    assert {e.job_id for e in live} == {later.job_id}


async def test_resume_after_every_id_gives_exactly_the_rest(tmp_path: Path, autojump_clock: Any) -> None:
    """From the ring: whatever id a reader last saw, it gets the events after it, no more, no fewer."""
    async with hub_on(tmp_path) as (store, hub):
        stream = hub.stream()
        for _ in range(3):
            await run_job(store, make_job())
        everything = await take(stream, 15)
        for at, event in enumerate(everything[:-1]):
            assert await take(hub.stream(event.id), len(everything) - at - 1) == everything[at + 1 :]


async def test_filters(tmp_path: Path, autojump_clock: Any) -> None:
    async with hub_on(tmp_path) as (store, hub):
        one, two = make_job(), make_job()
        by_job = hub.stream(wanted=EventFilter.of(job_id=[one.job_id]))
        by_type = hub.stream(wanted=EventFilter.of(type=["job,cancel"]))
        by_node = hub.stream(wanted=EventFilter.of(node_id=["node-b"]))
        await run_job(store, one)
        await run_job(store, two, node_id="node-b")
        await store.mark_cancelled(two.job_id)
        hub.publish("node", {"node_id": "node-b", "name": "b", "state": "down", "labels": {}})
        assert {e.job_id for e in await take(by_job, 5)} == {one.job_id}
        assert [(e.type, e.job_id) for e in await take(by_type, 3)] == [
            ("job", one.job_id), ("job", two.job_id), ("cancel", two.job_id),
        ]  # fmt: skip
        node_b = await take(by_node, 5)
    assert [e.type for e in node_b] == ["execution"] * 4 + ["node"]
    assert EventFilter.of(type=["job", "nonsense"]).unknown_types() == ["nonsense"]


async def test_a_reader_that_falls_behind_is_dropped(tmp_path: Path, autojump_clock: Any) -> None:
    """The ring holds 4: a reader that stops reading while 8 events go by gets ``dropped`` (with the id to
    resume from) and its stream ends; the ring never holds more than its size."""
    async with hub_on(tmp_path, ring=4) as (store, hub):
        stream = hub.stream()
        await store.add_job(make_job())
        [first] = await take(stream, 1)  # reading the ring
        await run_job(store, make_job())  # 5 events: the reader's next one is gone from the ring
        assert len(hub._ring) == 4
        rest = await take(stream, 1)
        assert [e.type for e in rest] == ["dropped"]
        assert rest[0].data["last_event_id"] == first.id
        with trio.fail_after(1):
            assert [e async for e in stream] == []
        assert hub.dropped == 1


async def test_idle_streams_ping_and_close_ends_them(tmp_path: Path, autojump_clock: Any) -> None:
    async with hub_on(tmp_path, ping=15.0) as (store, hub):
        got: list[Event | None] = []

        async def read() -> None:
            async for event in hub.stream():
                got.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.sleep(31)
            assert got == [None, None]
            hub.close()  # the reader returns: the nursery exits
        await run_job(store, make_job())
        assert [e async for e in hub.stream()] == []  # closed: nothing more, at once


async def test_node_events_on_change_only(tmp_path: Path, autojump_clock: Any) -> None:
    class View:
        def __init__(self) -> None:
            self.infos = [NodeInfo(node_id="n1", name="one")]

        def nodes(self) -> list[NodeInfo]:
            return self.infos

        def get(self, node_id: str) -> NodeInfo | None:
            return None

    view = View()
    async with hub_on(tmp_path) as (_, hub), trio.open_nursery() as nursery:
        stream = hub.stream()
        nursery.start_soon(hub.watch_nodes, view)
        [ready] = await take(stream, 1)
        await trio.sleep(5)  # unchanged: nothing
        view.infos = [NodeInfo(node_id="n1", name="one", state=NodeState.DOWN), NodeInfo(node_id="n2", name="two")]
        events = await take(stream, 2)
        nursery.cancel_scope.cancel()
    assert ready.data == {"node_id": "n1", "name": "one", "state": "ready", "labels": {}}
    assert [(e.data["node_id"], e.data["state"]) for e in events] == [("n1", "down"), ("n2", "ready")]
    assert not ready.stored and ready.id == hub.last_id


async def test_node_states_are_looked_at_every_second_only_while_someone_reads(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Nobody reading: a look every NODES_UNREAD_EVERY (30 idle nodes each built every node's state every second
    for nobody); a stream that opens gets a look at once, then one every NODES_EVERY while it reads."""

    class View:
        looks = 0

        def nodes(self) -> list[NodeInfo]:
            self.looks += 1
            return [NodeInfo(node_id="n1", name="one")]

        def get(self, node_id: str) -> NodeInfo | None:
            return None

    view = View()
    async with hub_on(tmp_path) as (_, hub), trio.open_nursery() as nursery:
        nursery.start_soon(hub.watch_nodes, view)
        await trio.sleep(60.5)
        assert view.looks <= 60 / NODES_UNREAD_EVERY + 1
        before = view.looks

        async def read() -> None:
            async for _ in hub.stream(since=0):
                pass

        nursery.start_soon(read)
        await trio.sleep(0.01)
        assert view.looks == before + 1  # at once
        await trio.sleep(10)
        assert view.looks >= before + 10 / NODES_EVERY
        nursery.cancel_scope.cancel()
