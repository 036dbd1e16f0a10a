"""Retention: finished containers of this node are removed after ``--retention`` seconds, their output kept in
the store first; running containers and attempts in progress are never touched."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from docker.client import DockerClient

from node.model import State

from .arrange import arrange
from .conftest import Nodes, base_config, containers_gone, containers_of

pytestmark = pytest.mark.docker


async def _ids(client: DockerClient, node_id: str, job_id: str) -> list[str]:
    found = await trio.to_thread.run_sync(containers_of, client, node_id)
    return [c["Id"] for c in found.get(job_id, [])]


async def test_finished_container_kept_for_retention_then_removed(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", retention=8))
    job_id = await node.rpc.create(test_image, ["sh", "-c", "echo kept"])
    status = await node.rpc.wait_status(job_id, "complete")
    container_id = status["executions"][0]["container_id"]
    assert await _ids(docker_client, node.node_id, job_id) == [container_id]  # well within 8 s of its exit
    await containers_gone(docker_client, node.node_id, job_id, timeout=40)
    assert time.time() - status["executions"][0]["finished_at"] >= 7  # Docker's and our clocks differ by ms
    logs = await node.rpc.call("ContainerService.Logs", {"job_id": job_id})
    assert (logs["stdout"], logs["source"]) == ("kept\n", "store")


async def test_sweep_spares_running_containers(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", retention=0))
    job_id = await node.rpc.create(test_image, ["sleep", "300"])
    status = await node.rpc.wait_status(job_id, "running")
    assert await node.running.node.executor.retention.sweep(0) == 0
    assert await _ids(docker_client, node.node_id, job_id) == [status["executions"][0]["container_id"]]


async def test_sweep_keeps_output_the_node_never_captured(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    """The node recorded the exit but died before reading the output: the sweep reads it before removing."""
    config = base_config(tmp_path / "n", retention=0)
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sh", "-c", "echo from-before; echo warn >&2"])
        container_id = await arranged.start(job)
        await trio.to_thread.run_sync(docker_client.api.wait, container_id)
        await arranged.record(job, State.COMPLETE, container_id=container_id, exit_code=0)

    node = await nodes.start(config)
    await containers_gone(docker_client, node.node_id, job.job_id)
    logs = await node.rpc.call("ContainerService.Logs", {"job_id": job.job_id})
    assert (logs["stdout"], logs["stderr"], logs["source"]) == ("from-before\n", "warn\n", "store")
