"""``--name`` names the containers: ``NAME-<node>-<attempt>``, unique when several nodes share one engine; a
container of this node's that already has the name (an earlier run of the same attempt that recovery did not
adopt) is removed if it never started, else renamed aside; a container of someone else's keeps the name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import trio
from docker.client import DockerClient

from node.docker_runtime import DockerRuntime, container_name
from node.model import Job, JobSpec
from node.runtime import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, LABEL_NODE

NODE = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


def job(name: str | None, job_id: str = "job-1") -> Job:
    spec = {"image": "cmnode-test/busybox:latest", "arguments": ["sleep", "60"], "env": {}}
    if name is not None:
        spec["name"] = name
    return Job(job_id=job_id, spec=JobSpec.from_json(spec), origin="o", created_at=1.0)


def test_a_name_is_made_of_the_jobs_name_the_node_and_the_attempt() -> None:
    assert container_name(job("web"), NODE, 3) == f"web-{NODE[-8:]}-3"
    assert container_name(job("my-app_v2.1"), NODE, 12) == f"my-app_v2.1-{NODE[-8:]}-12"
    assert container_name(job(None), NODE, 1) is None  # Docker picks one


@pytest.fixture
async def runtime(node_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(node_id=node_id, docker_timeout=30, pull_timeout=30)
    yield rt
    rt.close()


@pytest.mark.docker
@pytest.mark.slow
async def test_a_name_taken_by_an_earlier_run_is_freed_and_one_of_another_owner_is_left(
    runtime: DockerRuntime, node_id: str, test_image: str, docker_available: DockerClient
) -> None:
    name = f"names-{uuid.uuid4().hex[:8]}"
    first = job(name, job_id=f"job-{uuid.uuid4().hex[:8]}")
    wanted = container_name(first, node_id, 1)
    assert wanted is not None
    ours = {LABEL_JOB: first.job_id, LABEL_NODE: node_id, LABEL_ATTEMPT: "1", LABEL_MANAGED: "1"}

    def make(status: str, labels: dict[str, str]) -> str:
        c = docker_available.containers.create(test_image, ["sleep", "60"], name=wanted, labels=labels)
        if status == "running":
            c.start()
        return str(c.id)

    for status in ("running", "created"):
        earlier = await trio.to_thread.run_sync(make, status, ours)
        started = await runtime.start(first, 1)
        assert started != earlier
        now = await trio.to_thread.run_sync(lambda: docker_available.containers.get(started))  # noqa: B023
        assert now.name == wanted
        listed = await trio.to_thread.run_sync(lambda: docker_available.containers.list(all=True))
        left = [c for c in listed if c.id == earlier]
        if status == "running":  # renamed aside, still running: its stop and removal go on by ID
            assert [c.name for c in left] == [f"{wanted}-{earlier[:12]}"] and left[0].status == "running"
        else:  # never started: removed
            assert left == []
        await runtime.remove(started)
        for c in left:
            c.remove(force=True)

    foreign = await trio.to_thread.run_sync(make, "created", {"owner": "someone-else"})
    try:
        started = await runtime.start(first, 1)
        now = await trio.to_thread.run_sync(lambda: docker_available.containers.get(started))
        assert now.name != wanted and now.labels[LABEL_JOB] == first.job_id
        assert (await trio.to_thread.run_sync(lambda: docker_available.containers.get(foreign))).name == wanted
    finally:
        await trio.to_thread.run_sync(lambda: docker_available.containers.get(foreign).remove(force=True))
