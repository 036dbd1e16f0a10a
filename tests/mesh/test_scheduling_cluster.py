"""Placement between real ``cmnode run`` processes on loopback, with labels: replicas land on distinct nodes, a
selector is respected, Status shows the allocation, and a node killed with -9 has its copy replaced elsewhere
(exactly two running at the end), the killed node stopping its stale copy when it comes back."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from docker.client import DockerClient

from tests.support import eventually

from .cluster import NodeProc, RpcError
from .conftest import Cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]

HEARTBEAT = "0.5"
IMAGE = "cmnode-test/busybox:latest"


async def running_on(cluster: Cluster, node: NodeProc, job_id: str) -> set[str]:
    try:
        status = await cluster.call(node, "ContainerService.Status", {"job_id": job_id})
    except RpcError:  # not heard of there yet
        return set()
    return {e["node_id"] for e in status["executions"] if e["state"] == "running"}


async def start_three(cluster: Cluster, *extra: str) -> list[NodeProc]:
    common = ("--heartbeat", HEARTBEAT, "--reschedule-after", "2", *extra)
    first = await cluster.start("n0", *common, "--node-name", "n0", "--node-label", "zone=a")
    boot = await cluster.address(first)
    nodes = [first]
    for i, zone in ((1, "a"), (2, "b")):
        nodes.append(await cluster.start(f"n{i}", *common, "--node-name", f"n{i}", "--node-label", f"zone={zone}",
                                         "--bootstrap", boot))  # fmt: skip

    async def all_ready(node: NodeProc) -> bool:
        seen = (await cluster.call(node, "NodeService.List"))["nodes"]
        return len(seen) == 3 and all(n["state"] == "ready" for n in seen)

    for node in nodes:
        await eventually(lambda node=node: all_ready(node), timeout=30, what="3 nodes ready")
    return nodes


async def test_replicas_land_on_distinct_matching_nodes_and_move_off_a_killed_one(
    cluster: Cluster, docker_available: DockerClient
) -> None:
    n0, n1, n2 = await start_three(cluster)
    sleeper: dict[str, Any] = {"image": IMAGE, "arguments": ["sleep", "300"], "env": {}}

    zone_a = {"zone": "a"}
    zoned = (
        await cluster.call(n2, "ContainerService.Create", {**sleeper, "placement": {"replicas": 2, "selector": zone_a}})
    )["job_id"]
    for node in (n0, n1, n2):  # every node's Status agrees: the zone=a nodes run it, n2 (zone=b) does not
        await eventually(lambda node=node: _equals(running_on(cluster, node, zoned), {n0.node_id, n1.node_id}),
                         timeout=30, what="the zone=a copies running")  # fmt: skip
    status = await cluster.call(n2, "ContainerService.Status", {"job_id": zoned})
    assert sorted(status["allocation"]["nodes"]) == sorted([n0.node_id, n1.node_id])
    assert status["allocation"]["note"] == "2 of 2 replicas placed"

    three = {**sleeper, "placement": {"replicas": 3, "selector": zone_a}}
    short = (await cluster.call(n0, "ContainerService.Create", three))["job_id"]
    status = await cluster.call(n0, "ContainerService.Status", {"job_id": short})
    assert status["allocation"]["note"] == "2 of 3 replicas placed: 2 ready nodes match zone=a"

    pair = (await cluster.call(n0, "ContainerService.Create", {**sleeper, "placement": {"replicas": 2}}))["job_id"]
    first = await eventually(lambda: _sized(running_on(cluster, n0, pair), 2), timeout=30, what="2 copies")
    victim = next(n for n in (n0, n1, n2) if n.node_id in first and n is not n0)  # n0 answers the RPCs
    victim.stop(9)
    moved = await eventually(
        lambda: _sized(running_on(cluster, n0, pair), 2, without=victim.node_id), timeout=15 + 5,
        what="a replacement running within 15 s",
    )  # fmt: skip
    assert victim.node_id not in moved
    status = await cluster.call(n0, "ContainerService.Status", {"job_id": pair})
    assert status["allocation"]["version"] >= 2 and victim.node_id not in status["allocation"]["nodes"]

    await trio.to_thread.run_sync(victim.start, 60)  # back from the dead with its stale copy running

    async def stale_released() -> bool:
        status = await cluster.call(n0, "ContainerService.Status", {"job_id": pair})
        states = {e["node_id"]: e["state"] for e in status["executions"]}
        return states.get(victim.node_id) == "released"

    await eventually(stale_released, timeout=30, what="the returned node releasing its stale copy")
    assert await running_on(cluster, n0, pair) == moved  # exactly 2, where they were: nothing moved back

    async def stale_stopped() -> bool:
        listed = await trio.to_thread.run_sync(
            lambda: docker_available.containers.list(filters={"label": f"cmnode.node_id={victim.node_id}"})
        )
        return not [c for c in listed if c.labels.get("cmnode.job_id") == pair]

    await eventually(stale_stopped, timeout=30, what="the stale container stopped")


async def test_scale_changes_the_number_of_copies(cluster: Cluster, docker_available: DockerClient) -> None:
    n0, n1, n2 = await start_three(cluster)
    one = {"image": IMAGE, "arguments": ["sleep", "300"], "env": {}, "placement": {"replicas": 1}}
    job = await cluster.call(n1, "ContainerService.Create", one)
    job_id = job["job_id"]
    await eventually(lambda: _sized(running_on(cluster, n1, job_id), 1), timeout=30, what="1 copy")
    answer = await cluster.call(n2, "ContainerService.Scale", {"job_id": job_id, "replicas": 3})
    assert answer["allocation"]["version"] == 2 and len(answer["allocation"]["nodes"]) == 3
    await eventually(lambda: _sized(running_on(cluster, n1, job_id), 3), timeout=30, what="3 copies")
    await cluster.call(n0, "ContainerService.Scale", {"job_id": job_id, "replicas": 1})
    await eventually(lambda: _sized(running_on(cluster, n1, job_id), 1), timeout=30, what="back to 1 copy")


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _sized(value: Any, size: int, *, without: str | None = None) -> set[str] | None:
    found: set[str] = await value
    return found if len(found) == size and (without is None or without not in found) else None
