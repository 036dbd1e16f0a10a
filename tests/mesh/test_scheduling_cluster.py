"""Placement between real ``cmnode run`` processes on loopback, with labels: replicas land on distinct nodes, a
selector is respected, Status shows the allocation, and a node killed with -9 has its copy replaced elsewhere
(exactly two running at the end), the killed node stopping its stale copy when it comes back.

The five-node test is the issue's: on top of that, a drained node hands its copy over, a ``restart: always``
service is restarted, published ports answer, and two jobs wanting one host port land on different nodes.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
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

    await eventually(lambda: _no_container(docker_available, victim.node_id, pair), timeout=30,
                     what="the stale container stopped")  # fmt: skip


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


ZONES = ("a", "a", "b", "b", "b")


async def start_five(cluster: Cluster) -> list[NodeProc]:
    """n0..n4 labelled zone=a, a, b, b, b, every one seeing all five ready."""
    common = ("--heartbeat", HEARTBEAT, "--reschedule-after", "2")
    first = await cluster.start("n0", *common, "--node-name", "n0", "--node-label", f"zone={ZONES[0]}")
    boot = await cluster.address(first)
    nodes = [first]
    for i in range(1, len(ZONES)):
        nodes.append(await cluster.start(f"n{i}", *common, "--node-name", f"n{i}", "--node-label",
                                         f"zone={ZONES[i]}", "--bootstrap", boot))  # fmt: skip

    async def all_ready(node: NodeProc) -> bool:
        seen = (await cluster.call(node, "NodeService.List"))["nodes"]
        return len(seen) == len(ZONES) and all(n["state"] == "ready" for n in seen)

    for node in nodes:
        await eventually(lambda node=node: all_ready(node), timeout=60, what="5 nodes ready")
    return nodes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_five_nodes_place_move_drain_restart_and_publish(
    cluster: Cluster, docker_available: DockerClient
) -> None:
    nodes = await start_five(cluster)
    n0 = nodes[0]  # answers the RPCs; never killed nor drained
    by_id = {n.node_id: n for n in nodes}
    sleeper: dict[str, Any] = {"image": IMAGE, "arguments": ["sleep", "300"], "env": {}}

    # a selector is respected: only the two zone=a nodes, whoever creates it
    zone_a = {**sleeper, "placement": {"replicas": 2, "selector": {"zone": "a"}}}
    zoned = (await cluster.call(nodes[4], "ContainerService.Create", zone_a))["job_id"]
    await eventually(lambda: _equals(running_on(cluster, n0, zoned), {nodes[0].node_id, nodes[1].node_id}),
                     timeout=30, what="the zone=a copies running")  # fmt: skip

    # replicas 2 on 2 distinct nodes; its containers carry the job's name, the node and the attempt
    pair = (await cluster.call(n0, "ContainerService.Create",
                               {**sleeper, "name": "pair", "placement": {"replicas": 2}}))["job_id"]  # fmt: skip
    holders = await eventually(lambda: _sized(running_on(cluster, n0, pair), 2), timeout=30, what="2 copies")
    names = await trio.to_thread.run_sync(lambda: _container_names(docker_available, pair))
    assert sorted(names) == sorted(f"pair-{h[-8:]}-1" for h in holders)

    # kill -9 of a holder: a replacement runs elsewhere within 15 s
    victim = by_id[next(h for h in sorted(holders) if h != n0.node_id)]
    victim.stop(9)
    with trio.fail_after(15):
        moved = await eventually(lambda: _sized(running_on(cluster, n0, pair), 2, without=victim.node_id),
                                 timeout=15, what="a replacement running within 15 s")  # fmt: skip
    assert len(moved & holders) == 1  # the live copy stayed where it was

    # the killed node, back, stops its stale copy; exactly 2 run at the end, where the allocation says
    await trio.to_thread.run_sync(victim.start, 60)
    await eventually(lambda: _state_of(cluster, n0, pair, victim.node_id, "released"), timeout=30,
                     what="the returned node releasing its stale copy")  # fmt: skip
    await eventually(lambda: _no_container(docker_available, victim.node_id, pair), timeout=30,
                     what="the stale container stopped")  # fmt: skip
    status = await cluster.call(n0, "ContainerService.Status", {"job_id": pair})
    assert await running_on(cluster, n0, pair) == moved == set(status["allocation"]["nodes"])

    # a drained node hands its copy over, and releases it
    drained = by_id[next(h for h in sorted(moved) if h != n0.node_id)]
    await cluster.call(n0, "NodeService.Drain", {"node_id": "n" + str(nodes.index(drained))})  # by name
    after = await eventually(lambda: _sized(running_on(cluster, n0, pair), 2, without=drained.node_id),
                             timeout=30, what="the drained node's copy moved")  # fmt: skip
    await eventually(lambda: _state_of(cluster, n0, pair, drained.node_id, "released"), timeout=30,
                     what="the drained node releasing its copy")  # fmt: skip
    assert drained.node_id not in (await cluster.call(n0, "ContainerService.Status", {"job_id": pair}))[
        "allocation"]["nodes"]  # fmt: skip
    listed = {n["node_id"]: n for n in (await cluster.call(n0, "NodeService.List"))["nodes"]}
    assert listed[drained.node_id]["state"] == "draining"
    await cluster.call(n0, "NodeService.Undrain", {"node_id": drained.node_id})
    assert await running_on(cluster, n0, pair) == after  # undraining moves nothing back

    # a service with restart: always whose process exits is restarted
    service = {"image": IMAGE, "arguments": ["sh", "-c", "echo up; exit 0"], "env": {}, "restart": "always",
               "placement": {"replicas": 1}}  # fmt: skip
    restarted = (await cluster.call(n0, "ContainerService.Create", service))["job_id"]

    async def attempt_two() -> bool:
        status = await cluster.call(n0, "ContainerService.Status", {"job_id": restarted})
        return any(e["attempt"] >= 2 and e["history"] for e in status["executions"])

    await eventually(attempt_two, timeout=30, what="the service restarted")

    # published ports answer; two jobs wanting one host port land on different nodes (one engine serves all
    # five nodes here, so the second binds another loopback address)
    port = free_port()
    webs = {}
    for address, text in (("127.0.0.1", "first"), ("127.0.0.2", "second")):
        script = f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"
        spec = {"image": IMAGE, "arguments": ["sh", "-c", script], "env": {}, "restart": "always",
                "ports": [f"{address}:{port}:8080"], "placement": {"replicas": 1}}  # fmt: skip
        webs[address] = (await cluster.call(n0, "ContainerService.Create", spec))["job_id"]
    placed = [
        (await cluster.call(n0, "ContainerService.Status", {"job_id": job_id}))["allocation"]["nodes"]
        for job_id in webs.values()
    ]
    assert len(placed[0]) == len(placed[1]) == 1 and placed[0] != placed[1]
    async with httpx.AsyncClient(timeout=2) as client:
        for address, text in (("127.0.0.1", "first"), ("127.0.0.2", "second")):

            async def answer(address: str = address) -> str | None:
                try:
                    return (await client.get(f"http://{address}:{port}/")).text
                except httpx.TransportError:
                    return None

            assert await eventually(answer, timeout=30, what=f"an answer on {address}:{port}") == f"{text}\n"


async def _state_of(cluster: Cluster, node: NodeProc, job_id: str, node_id: str, state: str) -> bool:
    status = await cluster.call(node, "ContainerService.Status", {"job_id": job_id})
    return any(e["node_id"] == node_id and e["state"] == state for e in status["executions"])


def _running(docker: DockerClient, *labels: str) -> list[dict[str, Any]]:
    """The running containers carrying every label given, as one listing says (no inspect of each: a container
    removed meanwhile must not fail the look)."""
    return list(docker.api.containers(filters={"label": list(labels)}))


def _container_names(docker: DockerClient, job_id: str) -> list[str]:
    return [c["Names"][0].lstrip("/") for c in _running(docker, f"cmnode.job_id={job_id}")]


async def _no_container(docker: DockerClient, node_id: str, job_id: str) -> bool:
    listed = await trio.to_thread.run_sync(_running, docker, f"cmnode.node_id={node_id}", f"cmnode.job_id={job_id}")
    return not listed


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _sized(value: Any, size: int, *, without: str | None = None) -> set[str] | None:
    found: set[str] = await value
    return found if len(found) == size and (without is None or without not in found) else None
