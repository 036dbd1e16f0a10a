"""Three ``cmnode run`` processes on loopback joined by ``--bootstrap`` to the first (and to each other by peer
exchange): a job created on one node runs on all three, Status on any node lists every execution, Logs reach
another node's output, Stop cancels everywhere."""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from node.identity import load_or_create

from .cluster import NodeProc, eventually
from .conftest import Cluster


async def _three(cluster: Cluster) -> list[NodeProc]:
    first = await cluster.start("n1")
    seed = await cluster.address(first)
    others = await cluster.start_all(*[(f"n{i}", "--bootstrap", seed) for i in (2, 3)])
    nodes = [first, *others]

    async def full_mesh() -> bool:  # both joined through node 1; peer exchange connects them to each other
        for node in nodes:
            peers = await cluster.call(node, "NodeService.Peers")
            if {p["node_id"] for p in peers["peers"]} != {n.node_id for n in nodes} - {node.node_id}:
                return False
        return True

    await eventually(full_mesh, timeout=30)
    return nodes


async def _status_everywhere(
    cluster: Cluster, nodes: list[NodeProc], job_id: str, states: set[str], timeout: float = 60
) -> list[dict[str, Any]]:
    """Wait until every node's Status lists one execution per node, all in ``states``."""
    wanted = {n.node_id for n in nodes}

    async def settled(node: NodeProc) -> dict[str, Any] | None:
        try:
            status: dict[str, Any] = await cluster.call(node, "ContainerService.Status", {"job_id": job_id})
        except Exception:
            return None  # not heard of yet
        executions = status["executions"]
        ok = {e["node_id"] for e in executions} == wanted and all(e["state"] in states for e in executions)
        return status if ok else None

    return [await eventually(lambda n=node: settled(n), timeout=timeout) for node in nodes]


@pytest.mark.docker
async def test_job_created_on_one_node_completes_on_all_three(cluster: Cluster, test_image: str) -> None:
    nodes = await _three(cluster)
    n1, n2, n3 = nodes
    info = await cluster.call(n3, "NodeService.Info")
    assert info["node_id"] == n3.node_id and info["peers"] >= 1
    addresses = info["addresses"]
    assert addresses and all("/0.0.0.0/" not in a and a.endswith("/p2p/" + n3.node_id) for a in addresses)

    created = await cluster.call(n1, "ContainerService.Create", {"image": test_image, "arguments": ["echo", "hello"]})
    job_id = created["job_id"]
    statuses = await _status_everywhere(cluster, nodes, job_id, {"complete"})
    on_n3 = statuses[2]
    assert on_n3["status"] == "complete" and on_n3["origin"] == n1.node_id
    assert len(on_n3["executions"]) == 3
    assert all(e["exit_code"] == 0 for e in on_n3["executions"])

    # The output of node 1's run, asked of node 3, travels over /cmnode/logs/1.
    logs = await cluster.call(n3, "ContainerService.Logs", {"job_id": job_id, "node_id": n1.node_id})
    assert logs["node_id"] == n1.node_id and logs["stdout"] == "hello\n"

    # Stop on node 2 cancels the running job on every node.
    long = await cluster.call(n1, "ContainerService.Create", {"image": test_image, "arguments": ["sleep", "300"]})
    await _status_everywhere(cluster, nodes, long["job_id"], {"running"})
    await cluster.call(n2, "ContainerService.Stop", {"job_id": long["job_id"]})
    await _status_everywhere(cluster, nodes, long["job_id"], {"cancelled"})

    assert await cluster.stop_all(nodes, signal.SIGINT) == [0, 0, 0]
    for node in nodes:
        assert "Traceback" not in node.log.read_text()


async def test_bootstrap_peer_started_later_is_dialled_again(cluster: Cluster, tmp_path: Path) -> None:
    """The bootstrap peer is not up yet: the node keeps retrying (with backoff) and joins once it is."""
    seed_id = load_or_create(tmp_path / "seed").node_id  # the seed's identity, made before it runs
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    early = await cluster.start("early", "--bootstrap", f"/ip4/127.0.0.1/tcp/{port}/p2p/{seed_id}")
    await trio.sleep(3)  # let a few dials fail first: that is the case under test
    assert (await cluster.call(early, "NodeService.Peers"))["peers"] == []
    seed = await cluster.start("seed", p2p_port=port)
    assert seed.node_id == seed_id

    async def joined() -> bool:
        peers = await cluster.call(early, "NodeService.Peers")
        return [p["node_id"] for p in peers["peers"]] == [seed_id]

    await eventually(joined, timeout=30)
