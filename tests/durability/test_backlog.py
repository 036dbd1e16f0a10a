"""Peers' jobs beyond a full queue, against the real dockerd: stored pending and run in turn, never refused."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from docker.client import DockerClient

from node.backlog import WAITING_FOR_SLOT
from node.model import Job, JobSpec

from .conftest import Nodes, base_config, containers_of, hanging_registry

pytestmark = pytest.mark.docker


async def test_peer_jobs_beyond_the_queue_all_run(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", worker_count=1, queue_size=2))
    executor = node.running.node.executor
    async with hanging_registry() as image:
        blocker = await node.rpc.create(image, [])  # holds the only worker
        await node.rpc.wait_status(blocker, "pulling")
        jobs = [
            Job(job_id=str(uuid.uuid4()), spec=JobSpec.from_json({"image": test_image, "arguments": ["true"]}),
                origin="a-peer", created_at=time.time())
            for _ in range(6)
        ]  # fmt: skip
        for job in jobs:
            assert await executor.accept(job, run_here=True)
        waiting = await node.rpc.status(jobs[-1].job_id)
        assert (waiting["status"], waiting["executions"][0]["error"]) == ("pending", WAITING_FOR_SLOT)
        await node.rpc.call("ContainerService.Stop", {"job_id": blocker})
        for job in jobs:
            assert (await node.rpc.wait_status(job.job_id, "complete", "failed", timeout=60))["status"] == "complete"
    found = containers_of(docker_client, node.node_id)
    assert {job.job_id: len(found[job.job_id]) for job in jobs} == {job.job_id: 1 for job in jobs}


async def test_a_trusted_origins_jobs_beyond_its_rate_wait_and_all_run(
    nodes: Nodes, tmp_path: Path, test_image: str
) -> None:
    """Beyond its burst and rate, a trusted origin's jobs are never refused: stored pending, then run in turn."""
    node = await nodes.start(base_config(tmp_path / "n", worker_count=1, peer_job_burst=2, peer_job_rate=0.001))
    executor = node.running.node.executor
    jobs = [
        Job(job_id=str(uuid.uuid4()), spec=JobSpec.from_json({"image": test_image, "arguments": arguments}),
            origin="a-friend", created_at=time.time())
        for arguments in [["sleep", "5"]] + [["true"]] * 4
    ]  # fmt: skip
    for job in jobs:
        assert await executor.accept(job, run_here=True)
    waiting = await node.rpc.status(jobs[-1].job_id)  # the first holds the only worker for 5 s
    assert (waiting["status"], waiting["executions"][0]["error"]) == ("pending", WAITING_FOR_SLOT)
    for job in jobs:
        assert (await node.rpc.wait_status(job.job_id, "complete", "failed", timeout=60))["status"] == "complete"
    assert (await node.rpc.call("NodeService.Info"))["peer_jobs_refused"] == {"rate": 0, "queue": 0}
