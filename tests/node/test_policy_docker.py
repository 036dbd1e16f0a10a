"""The container policy and the bounds on peers' jobs on a real node (real store, dockerd, HTTP): the origin
answers -32602 naming the rule, a peer's job this node refuses is ``rejected`` in Status, an allowed host path is
mounted, and an untrusted origin's flood is refused and counted in Info and /metrics."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
from docker.client import DockerClient

from node.model import Job, JobSpec
from tests.support import RpcError, eventually

from .conftest import NodeFactory

pytestmark = pytest.mark.docker


def peer_job(image: str, *arguments: str, origin: str = "a-peer", **spec: object) -> Job:
    return Job(
        job_id=str(uuid.uuid4()),
        spec=JobSpec.from_json({"image": image, "arguments": list(arguments), **spec}),
        origin=origin,
        created_at=time.time(),
    )


async def test_the_origin_refuses_what_its_policy_refuses_naming_the_rule(
    start_node: NodeFactory, test_image: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    _, rpc = await start_node(allow_image=("cmnode-test/*",), allow_host_path=(str(shared),))
    with pytest.raises(RpcError) as caught:
        await rpc.create("busybox", ["true"])
    assert caught.value.error["code"] == -32602
    assert caught.value.error["data"]["errors"] == [
        {"field": "image", "message": "refused by this node's policy: 'busybox' is not matched by --allow-image "
         "cmnode-test/*"}
    ]  # fmt: skip
    with pytest.raises(RpcError) as caught:
        await rpc.create(test_image, ["true"], volumes=["/etc:/host-etc:ro"])
    assert caught.value.error["code"] == -32602
    [error] = caught.value.error["data"]["errors"]
    assert error["field"] == "volumes[0]" and "is not under --allow-host-path" in error["message"]
    with pytest.raises(RpcError) as caught:
        await rpc.create(test_image, ["true"], volumes=[f"{shared}/../escape:/x"])
    assert caught.value.error["code"] == -32602
    assert (await rpc.call("ContainerService.List", {}))["jobs"] == []  # nothing was recorded

    job_id = await rpc.create(test_image, ["sh", "-c", "echo hi > /out/hi.txt"], volumes=[f"{shared}:/out"])
    assert (await rpc.wait_status(job_id, "complete", "failed"))["status"] == "complete"
    assert (shared / "hi.txt").read_text() == "hi\n"


async def test_a_peer_job_this_nodes_policy_refuses_is_rejected_in_status(
    start_node: NodeFactory, test_image: str, docker_client: DockerClient
) -> None:
    running, rpc = await start_node(allow_image=("cmnode-test/*",))
    job = peer_job("other/image:1", "true", retries=2)
    assert await running.node.executor.accept(job, run_here=True)
    status = await rpc.status(job.job_id)
    assert status["status"] == "rejected"
    [execution] = status["executions"]
    assert (execution["node_id"], execution["state"], execution["attempt"]) == (running.node_id, "rejected", 1)
    assert execution["error"] == (
        "image: refused by this node's policy: 'other/image:1' is not matched by --allow-image cmnode-test/*"
    )
    listed = await rpc.call("ContainerService.List", {"status": "rejected"})
    assert [j["job_id"] for j in listed["jobs"]] == [job.job_id]
    allowed = peer_job(test_image, "true")
    assert await running.node.executor.accept(allowed, run_here=True)
    assert (await rpc.wait_status(allowed.job_id, "complete", "failed"))["status"] == "complete"
    assert not docker_client.containers.list(all=True, filters={"label": f"cmnode.job_id={job.job_id}"})


async def test_an_untrusted_origins_flood_is_refused_and_counted(start_node: NodeFactory, test_image: str) -> None:
    running, rpc = await start_node(worker_count=1, queue_size=2, peer_job_burst=2, peer_job_rate=0.001)
    executor = running.node.executor
    executor.admission.trusted = lambda origin: origin != "stranger"
    jobs = [peer_job(test_image, "true", origin="stranger") for _ in range(6)]
    for job in jobs:
        assert await executor.accept(job, run_here=True)
    statuses = [(await rpc.status(job.job_id))["status"] for job in jobs]
    assert statuses[2:] == ["rejected"] * 4 and "rejected" not in statuses[:2]
    for job in jobs[:2]:
        assert (await rpc.wait_status(job.job_id, "complete", "failed"))["status"] == "complete"
    info = await rpc.call("NodeService.Info")
    assert info["peer_jobs_refused"] == {"rate": 4, "queue": 0}
    base = rpc.url.removesuffix("/jrpc")

    async def scraped() -> str | None:
        async with httpx.AsyncClient() as client:
            text = (await client.get(base + "/metrics")).text
        return text if 'cmnode_peer_jobs_refused_total{reason="rate"} 4.0' in text else None

    await eventually(scraped, timeout=10, what="the refusals in /metrics")
