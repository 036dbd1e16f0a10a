"""Retries and timeouts against the real dockerd: every attempt is visible in Status."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.client import DockerClient

from .conftest import Nodes, base_config, containers_of

pytestmark = pytest.mark.docker


async def test_retries_run_three_attempts_then_fail(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    job_id = await node.rpc.create(test_image, ["sh", "-c", "echo attempt; exit 1"], retries=2)
    status = await node.rpc.wait_status(job_id, "failed", "complete", timeout=60)
    assert status["status"] == "failed"
    (execution,) = status["executions"]
    assert execution["attempt"] == 3
    assert execution["exit_code"] == 1
    assert execution["error"] == "exited with code 1"
    history = execution["history"]
    assert [h["attempt"] for h in history] == [1, 2]
    assert all(h["state"] == "failed" and h["exit_code"] == 1 for h in history)
    # Three attempts, three distinct containers, each run once.
    ids = {h["container_id"] for h in history} | {execution["container_id"]}
    assert len(ids) == 3 and None not in ids
    assert sorted(c["Labels"]["cmnode.attempt"] for c in containers_of(docker_client, node.node_id)[job_id]) == [
        "1", "2", "3"
    ]  # fmt: skip
    # Backoff between attempts: the second started after the first finished.
    assert history[1]["started_at"] > history[0]["finished_at"]


async def test_timeout_stops_the_container_and_fails_with_a_reason(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    job_id = await node.rpc.create(test_image, ["sleep", "30"], timeout=1)
    status = await node.rpc.wait_status(job_id, "failed", "complete", timeout=25)
    (execution,) = status["executions"]
    assert status["status"] == "failed"
    assert execution["error"] == "timed out after 1s"
    assert execution["finished_at"] - execution["started_at"] < 20  # stopped, not run to its end
    container = docker_client.containers.get(execution["container_id"])
    assert container.status == "exited"


async def test_timeout_with_retries_times_out_every_attempt(nodes: Nodes, tmp_path: Path, test_image: str) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    job_id = await node.rpc.create(test_image, ["sleep", "30"], timeout=1, retries=1)
    status = await node.rpc.wait_status(job_id, "failed", "complete", timeout=40)
    (execution,) = status["executions"]
    assert execution["attempt"] == 2
    assert execution["error"] == "timed out after 1s"
    assert [h["error"] for h in execution["history"]] == ["timed out after 1s"]
