"""ContainerService.Logs on the node that ran the job: from the container while it exists, from the store's
bounded tail once the container is removed (retention), with ``tail``."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from docker.client import DockerClient

from node.model import Execution, State

from .arrange import arrange
from .conftest import Nodes, base_config, containers_gone, hanging_registry

pytestmark = pytest.mark.docker

TEN_THOUSAND = ["sh", "-c", "seq 1 10000; echo done >&2"]


async def test_logs_outlive_the_container(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", retention=0))
    job_id = await node.rpc.create(test_image, TEN_THOUSAND)
    await node.rpc.wait_status(job_id, "complete")
    await containers_gone(docker_client, node.node_id, job_id)

    full = await node.rpc.call("ContainerService.Logs", {"job_id": job_id})
    assert full["source"] == "store"
    assert full["stdout"].splitlines() == [str(i) for i in range(1, 10001)]
    assert full["stderr"] == "done\n"
    assert full["node_id"] == node.node_id and full["state"] == "complete" and full["attempt"] == 1

    tail = await node.rpc.call("ContainerService.Logs", {"job_id": job_id, "tail": 3})
    assert tail["stdout"] == "9998\n9999\n10000\n"
    assert tail["stderr"] == "done\n"
    assert (await node.rpc.call("ContainerService.Logs", {"job_id": job_id, "tail": 0}))["stdout"] == ""


async def test_logs_of_a_running_container_come_from_docker(nodes: Nodes, tmp_path: Path, test_image: str) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    job_id = await node.rpc.create(test_image, ["sh", "-c", "echo one; echo two; echo three; sleep 300"])
    await node.rpc.wait_status(job_id, "running")

    async def three() -> dict[str, str]:
        with trio.fail_after(20):
            while True:
                logs: dict[str, str] = await node.rpc.call("ContainerService.Logs", {"job_id": job_id, "tail": 2})
                if logs["stdout"] == "two\nthree\n":
                    return logs
                await trio.sleep(0.1)

    logs = await three()
    assert logs["source"] == "container" and logs["state"] == "running"


async def test_logs_of_the_last_attempt_survive_retries(
    nodes: Nodes, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = await nodes.start(base_config(tmp_path / "n", retention=0))
    job_id = await node.rpc.create(test_image, ["sh", "-c", "echo out; echo err >&2; exit 2"], retries=1)
    await node.rpc.wait_status(job_id, "failed", timeout=60)
    await containers_gone(docker_client, node.node_id, job_id)
    logs = await node.rpc.call("ContainerService.Logs", {"job_id": job_id})
    assert (logs["stdout"], logs["stderr"], logs["attempt"], logs["source"]) == ("out\n", "err\n", 2, "store")


async def test_logs_errors(nodes: Nodes, tmp_path: Path, test_image: str) -> None:
    node = await nodes.start(base_config(tmp_path / "n"))
    missing = await node.rpc.raw("ContainerService.Logs", [{"job_id": "00000000-0000-0000-0000-000000000000"}])
    assert missing["error"]["code"] == -32001
    job_id = await node.rpc.create(test_image, ["true"])
    bad_tail = await node.rpc.raw("ContainerService.Logs", [{"job_id": job_id, "tail": -1}])
    assert bad_tail["error"]["code"] == -32602


async def test_logs_while_a_retry_waits_are_the_last_ended_attempts(
    nodes: Nodes, tmp_path: Path, test_image: str
) -> None:
    config = base_config(tmp_path / "n")
    async with hanging_registry() as image:
        async with arrange(config) as arranged:  # attempt 1 ended and was stored; attempt 2 is due
            job = arranged.make_job(image, ["true"], retries=1)
            first = Execution(job_id=job.job_id, node_id=arranged.node_id).advance(state=State.PENDING, attempt=2)
            await arranged.store.add_job(job, first)
            await arranged.store.put_logs(job.job_id, arranged.node_id, 1, "first\n", "oops\n")
        node = await nodes.start(config)
        await node.rpc.wait_status(job.job_id, "pulling")  # attempt 2 hangs on its pull
        logs = await node.rpc.call("ContainerService.Logs", {"job_id": job.job_id})
    assert (logs["attempt"], logs["stdout"], logs["stderr"], logs["source"]) == (1, "first\n", "oops\n", "store")
    assert logs["state"] == "pulling"
