"""``GET /events`` of a real node over real HTTP: a job's life in order, resume with Last-Event-ID, auth and
bad parameters, and the stream's end when the node stops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.node.conftest import NodeFactory
from tests.support import Nodes, base_config

from .sse import Sse, read_events

pytestmark = pytest.mark.docker


async def collect(response: httpx.Response, until: Any, *, timeout: float = 60) -> list[Sse]:
    got: list[Sse] = []
    with trio.fail_after(timeout):
        async for event in read_events(response):
            got.append(event)
            if until(got):
                break
    return got


def ended(job_id: str) -> Any:
    return lambda got: any(e.type == "execution" and e.data["job_id"] == job_id and e.data["status"] == "complete"
                           for e in got)  # fmt: skip


async def test_a_job_life_in_order_and_resume(start_node: NodeFactory, test_image: str) -> None:
    running, rpc = await start_node()
    url = running.rpc_url + "/events"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            job_id = await rpc.create(test_image, ["sh", "-c", "echo hi"])
            got = await collect(response, ended(job_id))
        mine = [e for e in got if e.data.get("job_id") == job_id]
        assert mine[0].type == "job" and mine[0].data["image"] == test_image
        states = [e.data["state"] for e in mine if e.type == "execution"]
        assert states[0] == "pending" and states[-1] == "complete" and "running" in states
        assert [s for s in ["pending", "pulling", "running", "complete"] if s in states] == states  # in order
        ids = [e.id for e in got]
        assert all(isinstance(i, int) for i in ids) and ids == sorted(ids)

        # disconnected after the job's first event: resuming from it brings back exactly the rest
        cut = mine[0].id
        second = await rpc.create(test_image, ["true"])
        headers = {"Last-Event-ID": str(cut)}
        async with client.stream("GET", url, headers=headers) as response:
            resumed = await collect(response, ended(second))
        assert [(e.id, e.type, e.data) for e in resumed[: len(got) - 1]] == [
            (e.id, e.type, e.data) for e in got[got.index(mine[0]) + 1 :]
        ]
        async with client.stream("GET", url, params={"last_event_id": cut, "type": "job"}) as response:
            jobs = await collect(response, lambda g: any(e.data["job_id"] == second for e in g))
        assert [e.data["job_id"] for e in jobs] == [second]


async def test_token_and_bad_parameters(start_node: NodeFactory) -> None:
    running, _ = await start_node(rpc_token="s3cret", rpc_read_token="r3ad")
    url = running.rpc_url + "/events"
    async with httpx.AsyncClient(timeout=30) as client:
        refused = await client.get(url)
        assert refused.status_code == 401
        wrong = await client.get(url, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bad = await client.get(url, params={"type": "jobs"}, headers={"Authorization": "Bearer r3ad"})
        assert bad.status_code == 400 and "jobs" in bad.json()["error"]["message"]
        bad = await client.get(url, headers={"Authorization": "Bearer s3cret", "Last-Event-ID": "x"})
        assert bad.status_code == 400
        async with client.stream("GET", url, headers={"Authorization": "Bearer r3ad"}) as response:
            assert response.status_code == 200  # the read token opens it


async def test_streams_end_when_the_node_stops(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A node with an open stream stops well within its graceful timeout: the stream ends first."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client:
        handle = await Nodes(nursery, client).start(base_config(tmp_path / "node", graceful_timeout=30.0))
        async with client.stream("GET", handle.running.rpc_url + "/events") as response:
            assert response.status_code == 200
            with trio.fail_after(10):  # far below the graceful timeout: the stream did not hold the stop
                async with trio.open_nursery() as inner:
                    inner.start_soon(handle.stop)
                    assert [e async for e in read_events(response)] == []
