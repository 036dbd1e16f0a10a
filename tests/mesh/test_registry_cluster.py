"""The node registry between real ``cmnode run`` processes on loopback: every node lists every node with its
name, labels and the engine's capacity; a node killed with -9 is shown down by the others; a drain given on one
node shows everywhere; and the ``cmnode nodes`` and ``cmnode drain NAME`` commands against a real node."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import trio
from docker.client import DockerClient

from tests.support import COMMAND, clean_env, eventually

from .cluster import NodeProc
from .conftest import Cluster

HEARTBEAT = "0.5"


async def listing(cluster: Cluster, node: NodeProc) -> dict[str, dict[str, Any]]:
    result = await cluster.call(node, "NodeService.List")
    return {n["name"]: n for n in result["nodes"]}


async def states(cluster: Cluster, node: NodeProc) -> dict[str, str]:
    return {name: n["state"] for name, n in (await listing(cluster, node)).items()}


def cmnode(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=clean_env(CMNODE_URL=url),
                          timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


async def test_three_nodes_know_each_other_see_a_death_and_a_drain(
    cluster: Cluster, docker_available: DockerClient
) -> None:
    engine = docker_available.info()
    first = await cluster.start("n0", "--heartbeat", HEARTBEAT, "--node-name", "n0", "--node-label", "zone=a")
    boot = await cluster.address(first)
    nodes = [first, *await cluster.start_all(*[(f"n{i}", "--heartbeat", HEARTBEAT, "--node-name", f"n{i}",
             "--node-label", f"zone={zone}", "--bootstrap", boot) for i, zone in ((1, "a"), (2, "b"))])]  # fmt: skip

    async def all_ready(node: NodeProc) -> dict[str, dict[str, Any]] | None:
        seen = await listing(cluster, node)
        ready = sorted(seen) == ["n0", "n1", "n2"] and all(n["state"] == "ready" for n in seen.values())
        return seen if ready and all(n["capacity"]["cpus"] is not None for n in seen.values()) else None

    for node in nodes:
        seen = await eventually(lambda node=node: all_ready(node), timeout=30, what=f"all 3 ready on {node.node_id}")
        assert {name: n["labels"] for name, n in seen.items()} == {"n0": {"zone": "a"}, "n1": {"zone": "a"},
                                                                    "n2": {"zone": "b"}}  # fmt: skip
        for n in seen.values():
            assert n["capacity"] == {"cpus": float(engine["NCPU"]), "memory": engine["MemTotal"]}
            assert n["docker_ok"] is True and n["rpc_url"].startswith("http://127.0.0.1:")
        assert [name for name, n in seen.items() if n["self"]] == [f"n{nodes.index(node)}"]
    info = await cluster.call(nodes[1], "NodeService.Info")
    assert (info["name"], info["labels"]) == ("n1", {"zone": "a"})

    # kill -9: the others see it down within a bounded wait (3 heartbeats of 0.5 s, and slack for a busy machine)
    await trio.to_thread.run_sync(nodes[2].kill)
    started = trio.current_time()
    for node in nodes[:2]:
        await eventually(lambda node=node: _is(states(cluster, node), "n2", "down"), timeout=15, what="n2 down")
    assert trio.current_time() - started < 15

    # a drain given on n0 for n1: draining on both, then undrained on both
    drained = await cluster.call(nodes[0], "NodeService.Drain", {"node_id": "n1"})
    assert (drained["node_id"], drained["draining"]) == (nodes[1].node_id, True)
    for node in nodes[:2]:
        await eventually(lambda node=node: _is(states(cluster, node), "n1", "draining"), timeout=15, what="draining")
    record = (await listing(cluster, nodes[0]))["n1"]
    assert record["state"] == "draining"
    await cluster.call(nodes[0], "NodeService.Undrain", {"node_id": nodes[1].node_id[:20]})  # a prefix works too
    for node in nodes[:2]:
        await eventually(lambda node=node: _is(states(cluster, node), "n1", "ready"), timeout=15, what="undrained")

    # the CLI against a real node: the table within 80 columns, drain by name, an unknown name is exit 1
    table = await trio.to_thread.run_sync(lambda: cmnode("nodes", url=nodes[0].url))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "NAME", "STATE"] and all(len(line) <= 80 for line in lines), lines
    rows = {line.split()[1]: line.split() for line in lines[1:]}
    assert rows["n2"][2] == "down" and rows["n0"][2] == "ready" and rows["n0"][0].endswith("*")
    out = await trio.to_thread.run_sync(lambda: cmnode("drain", "n0", url=nodes[1].url))
    assert out.returncode == 0 and out.stdout.strip() == f"node {nodes[0].node_id} draining", out
    await eventually(lambda: _is(states(cluster, nodes[0]), "n0", "draining"), timeout=15, what="n0 drained")
    as_json = await trio.to_thread.run_sync(lambda: cmnode("nodes", "--json", url=nodes[0].url))
    assert {n["name"]: n["state"] for n in json.loads(as_json.stdout)["nodes"]}["n0"] == "draining"
    unknown = await trio.to_thread.run_sync(lambda: cmnode("undrain", "nobody", url=nodes[0].url))
    assert unknown.returncode == 1 and "unknown node 'nobody'" in unknown.stderr and "Traceback" not in unknown.stderr
    await trio.to_thread.run_sync(lambda: cmnode("undrain", "n0", url=nodes[0].url))

    # the killed node restarted: heard again, ready again, with its name
    await trio.to_thread.run_sync(nodes[2].start)
    await eventually(lambda: _is(states(cluster, nodes[0]), "n2", "ready"), timeout=30, what="n2 back")


async def _is(found: Any, name: str, state: str) -> bool:
    return (await found).get(name) == state
