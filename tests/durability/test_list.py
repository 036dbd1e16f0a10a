"""ContainerService.List: newest first, status and label filters, cursor paging; correct with 100,000 jobs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from node.model import Execution, Job, JobSpec, State
from node.store import Store

from .conftest import Nodes, base_config

STATES = (State.COMPLETE, State.FAILED, State.RUNNING, State.PENDING)
STATUS = {State.COMPLETE: "complete", State.FAILED: "failed", State.RUNNING: "running", State.PENDING: "pending"}
TOTAL = 100_000


def _jobs(total: int) -> list[tuple[Job, Execution]]:
    """Jobs three to a timestamp (ties are ordered by arrival), ten teams, a unique label each, four states;
    their executions belong to another node, so the node under test has nothing to recover or run."""
    out = []
    for i in range(total):
        spec = JobSpec(image="busybox", arguments=("true",), labels={"team": f"t{i % 10}", "n": str(i)})
        job = Job(job_id=str(uuid.UUID(int=i)), spec=spec, origin="peer", created_at=1_700_000_000.0 + i // 3)
        execution = Execution(job_id=job.job_id, node_id="peer", state=STATES[i % 4], version=2)
        out.append((job, execution))
    return out


async def _page_all(rpc: Any, limit: int, **filters: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await rpc.call(
            "ContainerService.List", {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert len(page["jobs"]) <= limit
        seen += page["jobs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


@pytest.mark.slow
async def test_list_with_100k_jobs(nodes: Nodes, tmp_path: Path) -> None:
    config = base_config(tmp_path / "n", job_retention=0)  # the jobs are from 2023: keep them all
    config.data_dir.mkdir(parents=True)
    items = _jobs(TOTAL)
    async with Store.open(config.db_path) as store:
        for first in range(0, TOTAL, 20_000):
            assert await store.add_jobs(items[first : first + 20_000]) == 20_000
        # The whole store, a page at a time, straight from the store: every job once, newest first.
        order: list[str] = []
        before = None
        while True:
            page = await store.list_jobs(limit=1000, before=before)
            if not page:
                break
            order += [r.job.job_id for r in page]
            before = (page[-1].job.created_at, page[-1].seq)
    assert order == [job.job_id for job, _ in reversed(items)]

    node = await nodes.start(config)
    rpc = node.rpc
    newest = await rpc.call("ContainerService.List", {"limit": 5})
    assert [j["job_id"] for j in newest["jobs"]] == [items[i][0].job_id for i in range(TOTAL - 1, TOTAL - 6, -1)]
    assert newest["jobs"][0] == {
        "job_id": items[-1][0].job_id, "status": STATUS[STATES[(TOTAL - 1) % 4]], "image": "busybox", "name": None,
        "labels": {"team": f"t{(TOTAL - 1) % 10}", "n": str(TOTAL - 1)}, "origin": "peer",
        "created_at": items[-1][0].created_at,
    }  # fmt: skip

    # team t3 and failed: i % 10 == 3 and i % 4 == 1, i.e. i % 20 == 13: 5,000 jobs, paged by 700.
    both = await _page_all(rpc, 700, status="failed", labels={"team": "t3"})
    assert [j["job_id"] for j in both] == [items[i][0].job_id for i in range(TOTAL - 1, -1, -1) if i % 20 == 13]
    assert all(j["status"] == "failed" and j["labels"]["team"] == "t3" for j in both)

    running = await rpc.call("ContainerService.List", {"status": "running", "limit": 1000})
    assert [j["job_id"] for j in running["jobs"]] == [
        items[i][0].job_id for i in range(TOTAL - 1, -1, -1) if i % 4 == 2
    ][:1000]  # fmt: skip

    one = await rpc.call("ContainerService.List", {"labels": {"n": "12345", "team": "t5"}})
    assert ([j["job_id"] for j in one["jobs"]], one["next_cursor"]) == ([items[12345][0].job_id], None)
    none = await rpc.call("ContainerService.List", {"labels": {"n": "12345", "team": "t4"}})
    assert none == {"jobs": [], "next_cursor": None}


async def test_list_over_rpc_paging_and_errors(nodes: Nodes, tmp_path: Path, test_image: str) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    rpc = node.rpc
    created = [
        await rpc.create(test_image, ["sh", "-c", f"exit {i % 2}"], labels={"batch": "b", "odd": str(i % 2)})
        for i in range(7)
    ]
    for job_id in created:
        await rpc.wait_status(job_id, "complete", "failed")
    listed = await _page_all(rpc, 3)
    assert [j["job_id"] for j in listed] == created[::-1]
    failed = await _page_all(rpc, 2, status="failed", labels={"batch": "b"})
    assert [j["job_id"] for j in failed] == created[1::2][::-1]
    assert [j["job_id"] for j in await _page_all(rpc, 2, labels={"odd": "0", "batch": "b"})] == created[0::2][::-1]

    bad_cursor = await rpc.raw("ContainerService.List", [{"cursor": "nonsense"}])
    assert bad_cursor["error"]["code"] == -32602
    assert "cursor" in bad_cursor["error"]["message"]
    for params in ({"limit": 0}, {"limit": 1001}, {"status": "sleeping"}, {"labels": {"a": 1}}, {"color": "red"}):
        answer = await rpc.raw("ContainerService.List", [params])
        assert answer["error"]["code"] == -32602, params
    with trio.fail_after(5):
        assert (await rpc.call("ContainerService.List", {"labels": {"batch": "none"}}))["jobs"] == []
