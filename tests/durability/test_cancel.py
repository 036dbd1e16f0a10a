"""ContainerService.Stop on one node: a queued job never starts, a running container is stopped and removed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from docker.client import DockerClient

from .conftest import Nodes, base_config, containers_gone, containers_of, hanging_registry

pytestmark = pytest.mark.docker


async def test_stop_a_running_a_pulling_and_a_queued_job(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", worker_count=1))
    rpc = node.rpc
    running = await rpc.create(test_image, ["sleep", "300"])
    await rpc.wait_status(running, "running")
    async with hanging_registry() as image:
        pulling = await rpc.create(image, [])  # holds the only worker: what comes next stays queued
        await rpc.wait_status(pulling, "pulling")
        queued = await rpc.create(test_image, ["echo", "never"])
        assert (await rpc.status(queued))["status"] == "pending"

        with trio.fail_after(10):  # "within a few seconds", with room for a loaded machine
            for job_id in (queued, pulling, running):
                result = await rpc.call("ContainerService.Stop", {"job_id": job_id})
                assert result["job_id"] == job_id
            for job_id in (queued, pulling, running):
                status = await rpc.wait_status(job_id, "cancelled")
                assert status["executions"][0]["state"] == "cancelled"

        # The cancelled pull gave its worker back at once, though the registry still hangs.
        probe = await rpc.create(test_image, ["true"])
        await rpc.wait_status(probe, "complete", timeout=15)

    await containers_gone(docker_client, node.node_id, running, timeout=15)
    found = await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)
    assert queued not in found and pulling not in found
    for job_id in (queued, pulling, running):
        assert (await rpc.status(job_id))["status"] == "cancelled"


async def test_stop_is_idempotent_and_final_jobs_keep_their_state(
    nodes: Nodes, tmp_path: Path, test_image: str
) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    rpc = node.rpc
    job_id = await rpc.create(test_image, ["sleep", "300"])
    await rpc.wait_status(job_id, "running")
    await rpc.call("ContainerService.Stop", {"job_id": job_id})
    await rpc.call("ContainerService.Stop", {"job_id": job_id})
    status = await rpc.wait_status(job_id, "cancelled")
    version = status["executions"][0]["version"]
    await rpc.call("ContainerService.Stop", {"job_id": job_id})
    assert (await rpc.status(job_id))["executions"][0]["version"] == version

    done = await rpc.create(test_image, ["true"])
    await rpc.wait_status(done, "complete")
    await rpc.call("ContainerService.Stop", {"job_id": done})
    assert (await rpc.status(done))["status"] == "complete"

    missing = await rpc.raw("ContainerService.Stop", [{"job_id": "00000000-0000-0000-0000-000000000000"}])
    assert missing["error"]["code"] == -32001


async def test_stop_during_retry_backoff_starts_no_further_attempt(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    rpc = node.rpc
    job_id = await rpc.create(test_image, ["sh", "-c", "exit 1"], retries=5)
    await rpc.wait_for(job_id, lambda s: s["executions"][0]["attempt"] == 2)
    await rpc.call("ContainerService.Stop", {"job_id": job_id})
    status = await rpc.wait_status(job_id, "cancelled")
    attempt = status["executions"][0]["attempt"]
    # Give a would-be next attempt (backoff 2 s, 4 s) the time to start, then check none did.
    probe = await rpc.create(test_image, ["sleep", "5"])
    await rpc.wait_status(probe, "complete", timeout=60)
    status = await rpc.status(job_id)
    assert status["status"] == "cancelled" and status["executions"][0]["attempt"] == attempt
    attempts = {c["Labels"]["cmnode.attempt"] for c in containers_of(docker_client, node.node_id).get(job_id, [])}
    assert attempts <= {str(a) for a in range(1, attempt + 1)}
