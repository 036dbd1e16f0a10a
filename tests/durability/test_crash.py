"""kill -9 of a real ``cmnode run`` process with ~200 jobs queued and some running, then a restart on the same
data directory: every acknowledged job ends, none runs twice, running containers are re-adopted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from docker.client import DockerClient

from tests.support import FINAL, NodeProcess, Rpc, eventually

from .conftest import containers_of

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

SHORT = 200


async def test_kill_9_with_200_queued_then_restart(
    tmp_path: Path, test_image: str, docker_client: DockerClient, node_processes: list[NodeProcess]
) -> None:
    node = NodeProcess(tmp_path / "data", "--worker-count", "4", "--queue-size", "1000")
    node_processes.append(node)
    await trio.to_thread.run_sync(node.start)
    async with httpx.AsyncClient(timeout=60) as client:
        rpc = Rpc(client, node.rpc_url)
        # Long jobs: three end while the node is down, three are still running when it is back.
        ends_while_down = [await rpc.create(test_image, ["sh", "-c", "sleep 2; exit 7"]) for _ in range(3)]
        outlives = [await rpc.create(test_image, ["sh", "-c", "sleep 15; exit 5"]) for _ in range(3)]
        containers = {}
        for job_id in ends_while_down + outlives:
            containers[job_id] = (await rpc.wait_status(job_id, "running"))["executions"][0]["container_id"]

        expected_code: dict[str, int] = {}

        async def create(first: int, count: int) -> None:
            for i in range(first, first + count):
                code = 3 if i % 4 == 0 else 0
                expected_code[await rpc.create(test_image, ["sh", "-c", f"exit {code}"])] = code

        async with trio.open_nursery() as nursery:  # concurrent Creates, as clients would send them
            for first in range(0, SHORT, SHORT // 8):
                nursery.start_soon(create, first, SHORT // 8)
        assert len(expected_code) == SHORT
        await trio.to_thread.run_sync(node.kill)  # with most of the 200 still queued

        before = await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)
        assert len(set(before) & set(expected_code)) < SHORT  # the kill did come while jobs were queued
        for job_id in ends_while_down:  # these end while no node watches them
            await trio.to_thread.run_sync(docker_client.api.wait, containers[job_id])

        node_id = node.node_id
        await trio.to_thread.run_sync(node.start)
        assert node.node_id == node_id
        rpc = Rpc(client, node.rpc_url)
        everything = [*expected_code, *ends_while_down, *outlives]
        pending = set(everything)

        async def all_ended() -> bool:
            listing = await rpc.call("ContainerService.List", {"limit": 1000})
            pending.difference_update(j["job_id"] for j in listing["jobs"] if j["status"] in FINAL)
            return not pending

        await eventually(all_ended, timeout=240, interval=0.2)

        for job_id in ends_while_down + outlives:
            (execution,) = (await rpc.status(job_id))["executions"]
            want = 7 if job_id in ends_while_down else 5
            assert (execution["state"], execution["exit_code"]) == ("failed", want)
            assert (execution["container_id"], execution["attempt"]) == (containers[job_id], 1)  # adopted
        for job_id, code in expected_code.items():
            (execution,) = (await rpc.status(job_id))["executions"]
            assert (execution["state"], execution["exit_code"], execution["attempt"]) == (
                "complete" if code == 0 else "failed", code, 1
            )  # fmt: skip

    found = await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)
    runs = {job_id: len(found.get(job_id, [])) for job_id in everything}
    assert runs == dict.fromkeys(everything, 1)  # every job ran, and ran once, on this node
    assert set(found) == set(everything)
