"""Bad gossip from a bare py-libp2p peer (another process): random bytes, wrong JSON types, a job with a forged
origin, an unsigned job, a spoofed execution and a 1 MiB message are all dropped and counted; the node stays
healthy and still accepts the valid job that follows. A peer offering plaintext only is refused."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest
import trio

from .cluster import eventually, job_ids
from .conftest import Cluster

pytestmark = pytest.mark.slow


def _rogue(mode: str, target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.mesh.rogue_peer", mode, target],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


async def _line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)


async def test_bad_gossip_is_dropped_and_the_node_stays_healthy(cluster: Cluster) -> None:
    node = await cluster.start("n1")
    rogue = _rogue("gossip", await cluster.address(node))
    try:
        line = await _line(rogue)
        assert line.startswith("valid "), line
        valid_job = line.split()[1]

        async def recorded() -> bool:
            return valid_job in await job_ids(node, cluster.client)

        await eventually(recorded, timeout=30)
        info = await cluster.call(node, "NodeService.Info")
        dropped = info["mesh"]["dropped"]
        assert dropped.get("malformed", 0) >= 6, dropped  # random bytes and the five wrong-type envelopes
        assert dropped.get("unverified", 0) >= 2, dropped  # the forged origin and the unsigned job
        assert dropped.get("spoofed", 0) >= 1, dropped
        assert dropped.get("oversized", 0) >= 1, dropped
        assert not ({"forged-origin", "unsigned"} & await job_ids(node, cluster.client))
        async with httpx.AsyncClient() as client:
            health = await client.get(node.url.removesuffix("/jrpc") + "/healthz")
        assert health.status_code == 200
    finally:
        rogue.kill()
        rogue.wait()
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.log.read_text()


async def test_a_peer_offering_plaintext_is_refused(cluster: Cluster) -> None:
    node = await cluster.start("n1")
    rogue = _rogue("plaintext", await cluster.address(node))
    try:
        line = await _line(rogue)
    finally:
        rogue.kill()
        rogue.wait()
    assert line.startswith("refused"), line
    assert (await cluster.call(node, "NodeService.Peers"))["peers"] == []
