"""A peer that keeps sending invalid gossip is penalised by gossipsub's own peer scoring (node/gossip.py,
``SCORE_PARAMS``) and disconnected, then kept out: a real ``cmnode run`` and a rogue py-libp2p peer
(tests/mesh/rogue_peer.py, ``spam``) publishing invalid messages as fast as it can under one identity."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import trio

from .cluster import eventually
from .conftest import Cluster

pytestmark = pytest.mark.slow


async def test_a_peer_that_keeps_sending_invalid_gossip_is_disconnected(cluster: Cluster) -> None:
    node = await cluster.start("n1")
    rogue = subprocess.Popen(
        [sys.executable, "-m", "tests.mesh.rogue_peer", "spam", await cluster.address(node), "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert rogue.stdout is not None
        me = rogue.stdout.readline().split()[-1]

        async def penalised() -> bool:
            info = await cluster.call(node, "NodeService.Info")
            return bool(info["mesh"]["penalised"] >= 1 and info["peers"] == 0)

        await eventually(penalised, timeout=30)
        line = next(x for x in node.log.read_text().splitlines() if "kept sending invalid gossip" in x)
        assert re.search(rf"peer {me} disconnected for \d+s", line), line
        dropped = (await cluster.call(node, "NodeService.Info"))["mesh"]["dropped_total"]
        assert dropped < 2000  # cut off long before it said everything
        await trio.sleep(3)  # it does not come back: the library's dials from it are refused or cut again
        assert (await cluster.call(node, "NodeService.Peers"))["peers"] == []
    finally:
        rogue.kill()
        rogue.wait()
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.log.read_text()
