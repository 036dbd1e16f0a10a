"""Recovery at start on the node's own data directory: adopt, re-queue, or mark lost; never run a job twice.

Each test writes the state a crash at one precise moment leaves behind (see ``arrange.py``), then starts a
real node on it against the real dockerd.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
from docker.client import DockerClient

from node.model import State
from node.store import Store
from tests.node.test_docker_outage import forwarder

from .arrange import arrange, create_unstarted
from .conftest import (
    Nodes,
    base_config,
    containers_gone,
    containers_of,
    hanging_registry,
    listing_fails_until_ping,
)

pytestmark = pytest.mark.docker


async def _containers(client: DockerClient, node_id: str, job_id: str) -> list[str]:
    found = await trio.to_thread.run_sync(containers_of, client, node_id)
    return [c["Id"] for c in found.get(job_id, [])]


@pytest.mark.parametrize("state", [State.PENDING, State.PULLING])
async def test_container_started_just_before_a_crash_is_adopted_not_rerun(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient, state: State
) -> None:
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sh", "-c", "sleep 2; exit 7"])
        await arranged.record(job, state)
        container_id = await arranged.start(job)  # started; "running" never recorded

    node = await nodes.start(config)
    status = await node.rpc.wait_status(job.job_id, "failed", "complete", timeout=30)
    (execution,) = status["executions"]
    assert (execution["container_id"], execution["exit_code"], execution["attempt"]) == (container_id, 7, 1)
    assert await _containers(docker_client, node.node_id, job.job_id) == [container_id]


async def test_container_created_but_never_started_is_replaced_once(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sh", "-c", "echo ran"])
        await arranged.record(job)
        created = create_unstarted(docker_client, arranged.node_id, job)

    node = await nodes.start(config)
    status = await node.rpc.wait_status(job.job_id, "complete", "failed", timeout=30)
    assert status["status"] == "complete"
    remaining = await _containers(docker_client, node.node_id, job.job_id)
    assert remaining == [status["executions"][0]["container_id"]]
    assert created not in remaining


async def test_exits_while_down_get_their_true_exit_codes(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        ended = arranged.make_job(test_image, ["sh", "-c", "exit 7"])
        ended_ok = arranged.make_job(test_image, ["true"])
        still = arranged.make_job(test_image, ["sh", "-c", "sleep 3; exit 5"])
        for job in (ended, ended_ok, still):
            container_id = await arranged.start(job)
            await arranged.record(job, State.RUNNING, container_id=container_id)
        for job in (ended, ended_ok):
            container = docker_client.containers.get((await _containers(docker_client, arranged.node_id,
                                                                        job.job_id))[0])  # fmt: skip
            await trio.to_thread.run_sync(container.wait)

    node = await nodes.start(config)
    for job, code, status in ((ended, 7, "failed"), (ended_ok, 0, "complete"), (still, 5, "failed")):
        result = await node.rpc.wait_status(job.job_id, "failed", "complete", timeout=30)
        assert (result["status"], result["executions"][0]["exit_code"]) == (status, code), job.spec.arguments
        assert len(await _containers(docker_client, node.node_id, job.job_id)) == 1


async def test_container_of_a_stop_recorded_before_a_crash_is_removed_at_start(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    """Stop writes the cancelled flag and the CANCELLED execution in one transaction; a crash before the
    container is removed leaves it running, and nothing here runs it any more: the node removes it."""
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sleep", "300"])
        container_id = await arranged.start(job)
        cancelled = await arranged.record(job, State.CANCELLED, container_id=container_id)
        await arranged.store.mark_cancelled(job.job_id, cancelled)

    node = await nodes.start(config)
    await containers_gone(docker_client, node.node_id, job.job_id, timeout=20)
    assert (await node.rpc.status(job.job_id))["status"] == "cancelled"


async def test_vanished_container_is_lost_then_retried(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["true"], retries=1)
        container_id = await arranged.start(job)
        await arranged.record(job, State.RUNNING, container_id=container_id)
        await arranged.runtime.remove(container_id)  # someone ran `docker rm -f` while the node was down

    node = await nodes.start(config)
    status = await node.rpc.wait_status(job.job_id, "complete", "failed", timeout=30)
    (execution,) = status["executions"]
    assert status["status"] == "complete" and execution["attempt"] == 2
    assert execution["history"][0]["state"] == "lost"
    assert execution["history"][0]["error"] == "container vanished"


async def test_adopted_container_keeps_its_timeout(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    config = base_config(tmp_path / "n")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sleep", "300"], timeout=2)
        container_id = await arranged.start(job)
        await arranged.record(job, State.RUNNING, container_id=container_id, started_at=time.time())

    node = await nodes.start(config)
    status = await node.rpc.wait_status(job.job_id, "failed", "complete", timeout=30)
    assert status["executions"][0]["error"] == "timed out after 2s"


async def test_graceful_stop_keeps_queued_jobs_pending_and_restart_runs_each_once(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    config = base_config(tmp_path / "n", worker_count=1)
    node = await nodes.start(config)
    long = await node.rpc.create(test_image, ["sh", "-c", "sleep 10; exit 4"])
    await node.rpc.wait_status(long, "running")
    async with hanging_registry() as image:
        stuck = await node.rpc.create(image, [])  # holds the only worker
        await node.rpc.wait_status(stuck, "pulling")
        queued = [await node.rpc.create(test_image, ["sh", "-c", f"echo {i}"]) for i in range(5)]
        await node.stop()

    async with Store.open(config.db_path) as store:
        states = {job_id: [e.state for e in await store.executions_of(job_id)] for job_id in [long, stuck, *queued]}
    assert states == {long: [State.RUNNING], stuck: [State.PULLING], **{j: [State.PENDING] for j in queued}}

    node = await nodes.start(config)
    result = await node.rpc.wait_status(long, "failed", timeout=30)
    assert result["executions"][0]["exit_code"] == 4
    for job_id in queued:
        assert (await node.rpc.wait_status(job_id, "complete", "failed", timeout=30))["status"] == "complete"
    failed = await node.rpc.wait_status(stuck, "failed", timeout=60)  # its registry is gone now
    assert "pull" in failed["executions"][0]["error"]
    found = await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)
    assert {job_id: len(found[job_id]) for job_id in [long, *queued]} == {job_id: 1 for job_id in [long, *queued]}
    assert stuck not in found


async def test_daemon_away_at_recovery_still_adopts_instead_of_starting_again(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    """Recovery cannot list containers while the daemon is away; the worker looks before it starts one."""
    socket = tmp_path / "docker.sock"  # a forwarder to the real daemon, down while the node starts
    config = base_config(tmp_path / "n", docker_host=f"unix://{socket}")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sh", "-c", "sleep 3; exit 6"])
        await arranged.record(job, State.PENDING)
        container_id = await arranged.start(job)

    node = await nodes.start(config)
    assert (await node.rpc.call("NodeService.Info"))["docker"]["ok"] is False
    async with forwarder(socket):
        status = await node.rpc.wait_status(job.job_id, "failed", "complete", timeout=30)
    (execution,) = status["executions"]
    assert (execution["container_id"], execution["exit_code"]) == (container_id, 6)
    assert await _containers(docker_client, node.node_id, job.job_id) == [container_id]


async def test_a_lost_listing_while_the_daemon_answers_is_not_the_jobs_failure(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    """The worker's look for an earlier container fails, then the daemon answers a ping: look again, adopt."""
    socket = tmp_path / "docker.sock"
    config = base_config(tmp_path / "n", docker_host=f"unix://{socket}")
    async with arrange(config) as arranged:
        job = arranged.make_job(test_image, ["sh", "-c", "sleep 2; exit 6"])
        await arranged.record(job, State.PENDING)
        container_id = await arranged.start(job)

    async with listing_fails_until_ping(socket):
        node = await nodes.start(config)
        status = await node.rpc.wait_status(job.job_id, "failed", "complete", timeout=30)
    (execution,) = status["executions"]
    assert (execution["container_id"], execution["exit_code"], execution["error"]) == (
        container_id, 6, "exited with code 6"
    )  # fmt: skip
    assert await _containers(docker_client, node.node_id, job.job_id) == [container_id]
