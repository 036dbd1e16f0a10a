"""mDNS discovery between ``cmnode run`` processes in network namespaces the test creates: three nodes on a
private bridge (10.200.0.0/24) find each other with no bootstrap, form the mesh and gossip a job. The bridge
lives in a namespace of its own, so no multicast reaches the host's interfaces. Skipped where the test
cannot create namespaces, failed there in CI (``tests.support.missing``); the namespaces (and their interfaces
with them) are always removed."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support import NodeProcess, missing, start_all, stop_all

from .cluster import NodeProc, eventually

pytestmark = pytest.mark.slow

NODES = 3


def _ip(*args: str, ns: str | None = None) -> None:
    command = ["ip", *(["-n", ns] if ns else []), *args]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def lan() -> Iterator[list[str]]:
    """Namespaces ``<tag>n1..n3`` wired to a bridge in namespace ``<tag>sw``; yields the node namespaces."""
    tag = "cm" + secrets.token_hex(2)
    switch, nodes = f"{tag}sw", [f"{tag}n{i}" for i in range(1, NODES + 1)]
    created: list[str] = []
    try:
        for ns in (switch, *nodes):
            _ip("netns", "add", ns)
            created.append(ns)
        _ip("link", "add", "br0", "type", "bridge", ns=switch)
        _ip("link", "set", "br0", "up", ns=switch)
        for i, ns in enumerate(nodes, start=1):
            inner, outer = f"{tag}v{i}", f"{tag}p{i}"
            _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns", switch)
            _ip("link", "set", outer, "master", "br0", ns=switch)
            _ip("link", "set", outer, "up", ns=switch)
            _ip("addr", "add", f"10.200.0.{i}/24", "dev", inner, ns=ns)
            _ip("link", "set", inner, "up", ns=ns)
            _ip("link", "set", "lo", "up", ns=ns)
            _ip("route", "add", "224.0.0.0/4", "dev", inner, ns=ns)
    except (OSError, subprocess.CalledProcessError) as exc:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        missing("network namespaces", f"cannot create them here (needs root and iproute2): {detail}")
    try:
        yield nodes
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


async def _call(ns: str, node: NodeProc, method: str, params: Any = None) -> Any:
    """JSON-RPC from inside the node's namespace (its RPC port is not reachable from the host's)."""
    url = node.rpc_url.replace("0.0.0.0", "127.0.0.1")
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": [params] if params is not None else [], "id": 1})
    command = ["ip", "netns", "exec", ns, "curl", "-sS", "--max-time", "10", "-X", "POST", url,
               "-H", "Content-Type: application/json", "-d", body]  # fmt: skip
    out = await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    assert "error" not in answer, answer
    return answer["result"]


async def test_nodes_find_each_other_with_mdns(lan: list[str], tmp_path: Path) -> None:
    nodes: list[NodeProc] = []
    try:
        nodes += [NodeProcess(tmp_path / f"n{i}", prefix=["ip", "netns", "exec", ns], listen="0.0.0.0", mdns=True)
                  for i, ns in enumerate(lan, start=1)]  # fmt: skip
        await trio.to_thread.run_sync(start_all, nodes)  # at once: none waits for another to start
        ids = {n.node_id for n in nodes}
        for i, (ns, node) in enumerate(zip(lan, nodes, strict=True), start=1):
            info = await _call(ns, node, "NodeService.Info")
            assert info["addresses"], info
            assert all("/0.0.0.0/" not in a for a in info["addresses"]), info["addresses"]
            assert any(a.startswith(f"/ip4/10.200.0.{i}/tcp/") for a in info["addresses"]), info["addresses"]

        for ns, node in zip(lan, nodes, strict=True):

            async def meshed(ns: str = ns, node: NodeProc = node) -> bool:
                peers = await _call(ns, node, "NodeService.Peers")
                return {p["node_id"] for p in peers["peers"]} == ids - {node.node_id}

            await eventually(meshed, timeout=30, interval=0.3)

        spec = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [nodes[0].node_id]}}
        job_id = (await _call(lan[0], nodes[0], "ContainerService.Create", spec))["job_id"]

        async def heard() -> bool:
            status = await _call(lan[2], nodes[2], "ContainerService.List", {"limit": 10})
            return job_id in {j["job_id"] for j in status["jobs"]}

        await eventually(heard, timeout=30, interval=0.3)
    finally:
        codes = await trio.to_thread.run_sync(lambda: stop_all(nodes, signal.SIGINT, timeout=15))  # as Ctrl-C
    assert codes == [0] * NODES, codes  # zeroconf's threads do not hold the process back
    for node in nodes:
        assert "Traceback" not in node.log.read_text()
