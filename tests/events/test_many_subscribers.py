"""The issue's bar: ``GET /events`` of one node holds 100 concurrent subscribers while 50 jobs run, and each
subscriber sees every event once and in order (the same sequence as a reader that resumes afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.node.conftest import NodeFactory

from .sse import Sse, read_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SUBSCRIBERS = 100
JOBS = 50


async def test_100_subscribers_50_jobs(start_node: NodeFactory, test_image: str) -> None:
    running, rpc = await start_node(worker_count=4)
    url = running.rpc_url + "/events"
    limits = httpx.Limits(max_connections=SUBSCRIBERS + 10, max_keepalive_connections=SUBSCRIBERS + 10)
    seen: list[list[Sse]] = [[] for _ in range(SUBSCRIBERS)]
    job_ids: set[str] = set()
    all_made = trio.Event()

    def finished(got: list[Sse]) -> bool:
        done = {e.data["job_id"] for e in got if e.type == "execution" and e.data["status"] == "complete"}
        return all_made.is_set() and job_ids <= done

    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), limits=limits) as client:
        start = (await client.get(url, params={"type": "nope"})).status_code  # warm: the route answers
        assert start == 400
        opened = trio.Semaphore(0)

        async def subscribe(i: int) -> None:
            async with client.stream("GET", url) as response:
                assert response.status_code == 200
                opened.release()
                async for event in read_events(response):
                    if event.type != "node":
                        seen[i].append(event)
                    if finished(seen[i]):
                        return

        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                for i in range(SUBSCRIBERS):
                    nursery.start_soon(subscribe, i)
                for _ in range(SUBSCRIBERS):
                    await opened.acquire()
                await trio.sleep(0.5)  # every stream past its opening block (no event can go before them)
                for _ in range(JOBS):
                    job_ids.add(await rpc.create(test_image, ["true"]))
                all_made.set()
        first = seen[0]
        # a reader that resumes from before the first event afterwards gets the same sequence
        async with client.stream("GET", url, params={"last_event_id": first[0].id - 1}) as response:
            replay = [e async for e in _until(read_events(response), len(first))]
    key = [(e.id, e.type, e.data) for e in first]
    assert all([(e.id, e.type, e.data) for e in s] == key for s in seen), "subscribers saw different sequences"
    assert [(e.id, e.type, e.data) for e in replay] == key
    ids = [e.id for e in first]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, each once
    assert {e.data["job_id"] for e in first if e.type == "job"} == job_ids
    for job_id in job_ids:
        states = [e.data["state"] for e in first if e.type == "execution" and e.data["job_id"] == job_id]
        assert states[0] == "pending" and states[-1] == "complete"


async def _until(events: AsyncIterator[Sse], n: int) -> AsyncIterator[Sse]:
    got = 0
    async for event in events:
        if event.type == "node":
            continue
        yield event
        got += 1
        if got == n:
            return
