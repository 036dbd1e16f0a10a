"""A private mesh (``--swarm-key``): real ``cmnode run`` processes on loopback.

Nodes with different keys (or one without) never connect, and the dialling node says why in one log line
within 5 s (py-libp2p alone gives up after 20-40 s, silently). Nodes with the same key connect and a job reaches
both. A node without a key warns at start that its mesh is open."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import trio

from node.swarmkey import write_swarm_key

from .cluster import eventually, job_ids
from .conftest import Cluster

pytestmark = pytest.mark.slow

HANDSHAKE_LINE = re.compile(r"did not complete the handshake within [0-9.]+ s: it has a different swarm key")


def _key(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    write_swarm_key(path)
    return str(path)


async def _line(log: Path, pattern: re.Pattern[str], timeout: float) -> str:
    with trio.fail_after(timeout):
        while True:
            found = [line for line in log.read_text().splitlines() if pattern.search(line)]
            if found:
                return found[0]
            await trio.sleep(0.1)


@pytest.mark.parametrize("second", ["other key", "no key"])
async def test_nodes_with_different_keys_never_connect_and_say_so_within_5_s(
    cluster: Cluster, tmp_path: Path, second: str
) -> None:
    n1 = await cluster.start("n1", "--swarm-key", _key(tmp_path, "k1"))
    seed = await cluster.address(n1)
    extra = ["--swarm-key", _key(tmp_path, "k2")] if second == "other key" else []
    started = time.monotonic()
    n2 = await cluster.start("n2", "--bootstrap", seed, *extra)
    line = await _line(n2.log, HANDSHAKE_LINE, timeout=15)
    assert time.monotonic() - started < 5 + 3, line  # the bound, plus the process's own start on a busy machine
    assert n1.node_id in line and "/tcp/" in line, line
    await trio.sleep(3)  # a retry or two later: still apart, still one line
    assert len(HANDSHAKE_LINE.findall(n2.log.read_text())) == 1
    assert (await cluster.call(n1, "NodeService.Peers"))["peers"] == []
    assert (await cluster.call(n2, "NodeService.Peers"))["peers"] == []
    assert await cluster.stop_all([n1, n2]) == [0, 0]
    for node in (n1, n2):
        assert "Traceback" not in node.log.read_text()


async def test_nodes_with_the_same_key_connect_and_share_jobs(cluster: Cluster, tmp_path: Path) -> None:
    key = _key(tmp_path, "k")
    n1 = await cluster.start("n1", "--swarm-key", key)
    n2 = await cluster.start("n2", "--swarm-key", key, "--bootstrap", await cluster.address(n1))

    async def connected() -> bool:
        return len((await cluster.call(n2, "NodeService.Peers"))["peers"]) == 1

    await eventually(connected, timeout=20)
    # placed on a node that does not exist: recorded everywhere, run nowhere (no Docker needed)
    spec = {"image": "busybox", "arguments": ["true"], "placement": {"nodes": ["nobody"]}}
    job_id = (await cluster.call(n1, "ContainerService.Create", spec))["job_id"]

    async def everywhere() -> bool:
        return job_id in await job_ids(n2, cluster.client)

    await eventually(everywhere, timeout=20)
    for node in (n1, n2):
        log = node.log.read_text()
        assert "no swarm key" not in log and "did not complete the handshake" not in log


async def test_a_node_without_a_key_warns_that_its_mesh_is_open(cluster: Cluster) -> None:
    node = await cluster.start("n1")
    line = await _line(node.log, re.compile("no swarm key: this mesh is open"), timeout=10)
    assert "WARNING" in line.upper() and "--swarm-key" in line
