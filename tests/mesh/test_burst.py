"""1,000 Creates in a burst on one node: every node records all 1,000 jobs. Gossipsub's per-peer queue holds
32 messages and drops the rest silently, so this fails unless publishing is paced (node/gossip.py; see
docs/py-libp2p.md, "Outbound queues drop beyond 32 messages")."""

from __future__ import annotations

import pytest
import trio

from .cluster import NodeProc, eventually, job_ids
from .conftest import Cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BURST = 1000
# No container: the image is absent and never pulled, so each job fails at once on its origin. The others
# record the jobs without running them (placement names the origin only), which keeps 2 cores free for gossip.
ABSENT = "cmnode-test/absent:latest"


async def test_thousand_creates_reach_every_node(cluster: Cluster) -> None:
    n1 = await cluster.start("n1", "--queue-size", "5000", "--worker-count", "4")
    seed = await cluster.address(n1)
    n2, n3 = await cluster.start_all(("n2", "--bootstrap", seed), ("n3", "--bootstrap", seed))

    async def joined() -> bool:
        peers = await cluster.call(n1, "NodeService.Peers")
        return len(peers["peers"]) == 2

    await eventually(joined, timeout=30)
    spec = {"image": ABSENT, "arguments": ["true"], "pull": "never", "placement": {"nodes": [n1.node_id]}}
    created: list[str] = []
    limiter = trio.CapacityLimiter(64)

    async def create() -> None:
        async with limiter:
            created.append((await cluster.call(n1, "ContainerService.Create", spec))["job_id"])

    async with trio.open_nursery() as nursery:
        for _ in range(BURST):
            nursery.start_soon(create)
    assert len(set(created)) == BURST

    for node in (n1, n2, n3):

        async def recorded(node: NodeProc = node) -> bool:
            return set(created) <= await job_ids(node, cluster.client)

        await eventually(recorded, timeout=120, interval=0.5)
