"""The cross-node half of durability, with real ``cmnode run`` processes joined by ``--bootstrap``: Stop cancels
a queued and a running job on every node, and the logs of a job are read from another node after the node that
ran it has removed the container."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from docker.client import DockerClient

from tests.mesh.cluster import NodeProc, eventually
from tests.mesh.conftest import Cluster

from .conftest import containers_gone, containers_of, hanging_registry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _joined(cluster: Cluster, count: int, *flags: str) -> list[NodeProc]:
    first = await cluster.start("n1", *flags)
    seed = await cluster.address(first)
    nodes = [first, *await cluster.start_all(*[(f"n{i}", "--bootstrap", seed, *flags) for i in range(2, count + 1)])]

    async def meshed() -> bool:
        for node in nodes:
            peers = {p["node_id"] for p in (await cluster.call(node, "NodeService.Peers"))["peers"]}
            if peers != {n.node_id for n in nodes} - {node.node_id}:
                return False
        return True

    await eventually(meshed, timeout=60)
    return nodes


async def _everywhere(cluster: Cluster, nodes: list[NodeProc], job_id: str, states: set[str]) -> None:
    """Until every node's Status lists every node's execution of ``job_id``, each in ``states``."""

    async def settled() -> bool:
        for node in nodes:
            try:
                executions = (await cluster.call(node, "ContainerService.Status", {"job_id": job_id}))["executions"]
            except Exception:
                return False  # not heard of yet
            if {e["node_id"] for e in executions} != {n.node_id for n in nodes}:
                return False
            if not all(e["state"] in states for e in executions):
                return False
        return True

    await eventually(settled, timeout=60)


async def _create(cluster: Cluster, node: NodeProc, image: str, arguments: list[str]) -> str:
    created: dict[str, Any] = await cluster.call(
        node, "ContainerService.Create", {"image": image, "arguments": arguments}
    )
    return str(created["job_id"])


async def test_stop_cancels_queued_and_running_on_every_node(
    cluster: Cluster, test_image: str, docker_client: DockerClient
) -> None:
    nodes = await _joined(cluster, 3, "--worker-count", "1")
    n1, n2, n3 = nodes
    running = await _create(cluster, n1, test_image, ["sleep", "300"])
    await _everywhere(cluster, nodes, running, {"running"})
    async with hanging_registry() as image:
        blocker = await _create(cluster, n1, image, [])  # takes the only worker of every node
        await _everywhere(cluster, nodes, blocker, {"pulling"})
        queued = await _create(cluster, n3, test_image, ["echo", "never"])
        await _everywhere(cluster, nodes, queued, {"pending"})

        with trio.fail_after(20):  # "within a few seconds" on every node, with room for a loaded machine
            await cluster.call(n2, "ContainerService.Stop", {"job_id": queued})
            await cluster.call(n2, "ContainerService.Stop", {"job_id": running})
            await _everywhere(cluster, nodes, queued, {"cancelled"})
            await _everywhere(cluster, nodes, running, {"cancelled"})
        await cluster.call(n1, "ContainerService.Stop", {"job_id": blocker})
        await _everywhere(cluster, nodes, blocker, {"cancelled"})

    async def containers_gone() -> bool:
        for node in nodes:
            found = await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)
            if running in found or queued in found:
                return False
        return True

    await eventually(containers_gone, timeout=30)
    # Freed workers run what comes next; the cancelled job still never starts anywhere.
    after = await _create(cluster, n2, test_image, ["true"])
    await _everywhere(cluster, nodes, after, {"complete"})
    for node in nodes:
        status = await cluster.call(node, "ContainerService.Status", {"job_id": queued})
        assert status["status"] == "cancelled"
        assert all(e["container_id"] is None for e in status["executions"])
        assert queued not in await trio.to_thread.run_sync(containers_of, docker_client, node.node_id)


async def test_logs_of_10000_lines_from_another_node_after_removal(
    cluster: Cluster, test_image: str, docker_client: DockerClient
) -> None:
    nodes = await _joined(cluster, 2, "--retention", "0")
    n1, n2 = nodes
    job_id = await _create(cluster, n1, test_image, ["sh", "-c", "seq 1 10000; echo bye >&2"])
    await _everywhere(cluster, nodes, job_id, {"complete"})

    await containers_gone(docker_client, n1.node_id, job_id)  # retention 0: removed once the output is stored
    full = await cluster.call(n2, "ContainerService.Logs", {"job_id": job_id, "node_id": n1.node_id})
    assert full["node_id"] == n1.node_id and full["source"] == "store"
    assert full["stdout"].splitlines() == [str(i) for i in range(1, 10001)]
    assert full["stderr"] == "bye\n"
    tail = await cluster.call(n2, "ContainerService.Logs", {"job_id": job_id, "node_id": n1.node_id, "tail": 2})
    assert (tail["stdout"], tail["stderr"]) == ("9999\n10000\n", "bye\n")
    assert await cluster.stop_all(nodes) == [0, 0]
