"""The follow plumbing on trio's virtual clock: a job's output arrives in order and ends with its execution,
each attempt is followed, a removed container falls back to the stored output, and the bounds hold (a reader that
stops reading is cut off, a limit on follows, the node's stop ends them all)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from node.errors import NotFoundError, QueueFullError
from node.fake_runtime import FakeRuntime
from node.logfollow import Follow, FollowItem, LocalLogs, LogCut, LogEnd, LogFollowers, item_from_json, item_to_json
from node.model import Execution, State
from node.runtime import LogChunk

JOB = "job-1"


class Here:
    """This node's execution of ``JOB``, as the test moves it along, and its stored output."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self.runtime = runtime
        self.execution: Execution | None = None
        self.kept: tuple[int, str, str] | None = None

    async def current(self, job_id: str) -> Execution | None:
        return self.execution if job_id == JOB else None

    async def stored(self, job_id: str) -> tuple[int, str, str] | None:
        return self.kept

    def logs(self) -> LocalLogs:
        return LocalLogs(node_id="n", current=self.current, follow=self.runtime.follow, stored=self.stored)

    def run(self, attempt: int = 1) -> str:
        cid = self.runtime.add(JOB, attempt)
        self.execution = Execution(job_id=JOB, node_id="n", state=State.RUNNING, attempt=attempt, container_id=cid)
        return cid

    def end(self, cid: str, code: int, state: State = State.COMPLETE) -> None:
        self.runtime.exit(cid, code)
        assert self.execution is not None
        self.execution = Execution(job_id=JOB, node_id="n", state=state, attempt=self.execution.attempt,
                                   container_id=cid, exit_code=code)  # fmt: skip


@asynccontextmanager
async def followers(**options: float) -> AsyncIterator[tuple[LogFollowers, trio.Nursery]]:
    hub = LogFollowers(**options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield hub, nursery
        nursery.cancel_scope.cancel()


async def read_all(follow: Follow, timeout: float = 600) -> list[FollowItem]:
    with trio.fail_after(timeout):
        return [item async for item in follow]


async def test_output_arrives_in_order_and_ends_with_the_execution(autojump_clock: trio.testing.MockClock) -> None:
    here = Here(FakeRuntime())
    cid = here.run()
    here.runtime.write(cid, "before\n")

    async def job() -> None:
        for i in range(10):
            here.runtime.write(cid, stdout=f"line {i}\n", stderr=f"err {i}\n" if i % 3 == 0 else "")
            await trio.sleep(0.2)
        here.end(cid, 0)

    async with followers() as (hub, nursery):
        follow = await hub.start(await here.logs().source(JOB, None))
        nursery.start_soon(job)
        got = await read_all(follow)
    assert got[-1] == LogEnd("complete", 0, 1)
    chunks = [c for c in got if isinstance(c, LogChunk)]
    assert "".join(c.text for c in chunks if c.stream == "stdout") == "before\n" + "".join(
        f"line {i}\n" for i in range(10)
    )
    assert [c.text for c in chunks if c.stream == "stderr"] == ["err 0\n", "err 3\n", "err 6\n", "err 9\n"]
    assert chunks.index(LogChunk("stderr", "err 3\n")) == chunks.index(LogChunk("stdout", "line 3\n")) + 1
    assert hub.active == 0


async def test_tail_then_each_attempt(autojump_clock: trio.testing.MockClock) -> None:
    here = Here(FakeRuntime())
    first = here.run()
    for i in range(5):
        here.runtime.write(first, f"old {i}\n")

    async def retried() -> None:
        await trio.sleep(1)
        here.runtime.write(first, "last words\n")
        here.runtime.exit(first, 1)
        await trio.sleep(3)  # backoff: the execution waits for its next attempt, with no container
        here.execution = Execution(job_id=JOB, node_id="n", state=State.PENDING, attempt=2)
        await trio.sleep(3)
        second = here.run(attempt=2)
        here.runtime.write(second, "again\n")
        await trio.sleep(1)
        here.end(second, 0)

    async with followers() as (hub, nursery):
        follow = await hub.start(await here.logs().source(JOB, 2))
        nursery.start_soon(retried)
        got = await read_all(follow)
    assert [c.text for c in got if isinstance(c, LogChunk)] == ["old 3\n", "old 4\n", "last words\n", "again\n"]
    assert got[-1] == LogEnd("complete", 0, 2)


async def test_a_gone_container_gives_the_stored_output(autojump_clock: trio.testing.MockClock) -> None:
    here = Here(FakeRuntime())
    cid = here.run()
    here.end(cid, 3, State.FAILED)
    await here.runtime.remove(cid)
    here.kept = (1, "one\ntwo\nthree\n", "oops\n")
    async with followers() as (hub, _):
        got = await read_all(await hub.start(await here.logs().source(JOB, 2)))
    assert got == [LogChunk("stdout", "two\nthree\n"), LogChunk("stderr", "oops\n"), LogEnd("failed", 3, 1)]
    with pytest.raises(NotFoundError):
        await here.logs().source("another-job", None)


def source_of(n: int, closed: list[str], name: str = "s") -> AsyncGenerator[FollowItem, None]:
    async def gen() -> AsyncGenerator[FollowItem, None]:
        try:
            for i in range(n):
                yield LogChunk("stdout", f"{i}\n")
                await trio.sleep(0.01)
            await trio.sleep_forever()
        finally:
            closed.append(name)

    return gen()


async def test_a_reader_that_stops_reading_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[str] = []
    async with followers(buffer=2, cut_after=5) as (hub, _):
        follow = await hub.start(source_of(100, closed))
        began = trio.current_time()
        await trio.sleep(20)  # reads nothing
        got = await read_all(follow)
        assert hub.cut == 1 and hub.active == 0 and closed == ["s"]
    assert got[:2] == [LogChunk("stdout", "0\n"), LogChunk("stdout", "1\n")]
    assert len(got) == 3  # the two buffered, then the cut: nothing is kept beyond the buffer
    assert isinstance(got[-1], LogCut) and "cut off" in got[-1].reason
    assert trio.current_time() - began == pytest.approx(20)


async def test_a_reader_that_leaves_closes_its_source_at_once(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[str] = []
    async with followers() as (hub, _):
        follow = await hub.start(source_of(3, closed))
        with trio.fail_after(1):
            async for _item in follow:
                break
            follow.close()
            while hub.active:
                await trio.sleep(0.01)
    assert closed == ["s"]


async def test_the_limit_and_the_nodes_stop(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[str] = []
    async with followers(limit=1) as (hub, _):
        first = await hub.start(source_of(1, closed, "first"))
        with pytest.raises(QueueFullError):
            await hub.start(source_of(1, closed, "second"))
        items = first.items(None)
        with trio.fail_after(1):
            assert await items.__anext__() == LogChunk("stdout", "0\n")
            hub.close()  # the node stops
            assert [item async for item in items] == [LogCut("the node stops")]
        with pytest.raises(QueueFullError, match="stopping"):
            await hub.start(source_of(1, closed, "third"))
    assert sorted(closed) == ["first"]  # the refused ones never ran (nothing to clean up)


async def test_a_quiet_follow_pings(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[str] = []
    async with followers() as (hub, _):
        follow = await hub.start(source_of(1, closed))
        seen: list[FollowItem | None] = []
        with trio.fail_after(100):
            async for item in follow.items(ping=10):
                seen.append(item)
                if len(seen) == 3:
                    break
        follow.close()
    assert seen == [LogChunk("stdout", "0\n"), None, None]


@pytest.mark.parametrize(
    "item", [LogChunk("stderr", "x\ny"), LogEnd("failed", 2, 3), LogEnd("cancelled", None, 1), LogCut("why")]
)
def test_items_round_trip(item: FollowItem) -> None:
    assert item_from_json(item_to_json(item)) == item


@pytest.mark.parametrize("value", [None, [], {}, {"stream": "stdin", "text": "x"}, {"end": {}}, {"cut": 1}])
def test_malformed_items_are_refused(value: object) -> None:
    assert item_from_json(value) is None
