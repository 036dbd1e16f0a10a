"""A frozen node (SIGSTOP) among real ``cmnode run`` processes on loopback: the others cut it and hold it down
within the bound node/liveness.py documents, and once it runs again (SIGCONT) it is up everywhere and catches up
a job created while it was frozen.

A frozen process is what TCP cannot see: its kernel still acknowledges data and accepts connections, so only a
ping it does not answer tells (``Liveness``: cut after ``QUIET + MISSES * INTERVAL + TIMEOUT`` s), and the loss
watch's full dial, whose handshake it cannot complete, makes the lost notice that holds it down on every node
(node/losswatch.py). Node records are a minute or more apart (every node speaks 0.2.0), so silence alone would
take minutes: being down within seconds is the notice's doing.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import pytest
import trio

from node.liveness import INTERVAL, MISSES, QUIET, TIMEOUT
from node.losswatch import PROBE_TIMEOUT

from .cluster import NodeProc, eventually, job_ids
from .conftest import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CUT = QUIET + MISSES * INTERVAL + TIMEOUT
"""node/liveness.py's bound for a frozen peer's connection (16 s): quiet, then misses until the last times out."""
DOWN = CUT + PROBE_TIMEOUT
"""Then the loss watch's full dial fails and its notice marks the node down (gossip to the others: milliseconds)."""
SLACK = 10.0
"""For the loaded 2-core machine: the nodes' loops and the test's RPC wait for a core."""
HOLD = 10.0
"""How long the frozen node must stay down on every other node (redials to it must not bring it back)."""
NOWHERE = "12D3KooWNowhereNowhereNowhereNowhereNowhereNowhere1"
JOB = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
"""Recorded everywhere, run nowhere: no Docker involved."""


async def _view(cluster: Cluster, node: NodeProc, of: NodeProc) -> tuple[str | None, bool]:
    """How ``node`` lists ``of`` (its state, None if not at all) and whether it is connected to it."""
    nodes = (await cluster.call(node, "NodeService.List"))["nodes"]
    state = next((n["state"] for n in nodes if n["node_id"] == of.node_id), None)
    peers = (await cluster.call(node, "NodeService.Peers"))["peers"]
    return state, any(p.get("node_id") == of.node_id for p in peers)


async def _all_see(cluster: Cluster, nodes: Sequence[NodeProc], of: NodeProc, state: str, connected: bool) -> bool:
    views = [await _view(cluster, node, of) for node in nodes]
    return all(view == (state, connected) for view in views)


def _signal(node: NodeProc, sig: int) -> None:
    assert node.proc is not None and node.proc.poll() is None
    os.kill(node.proc.pid, sig)


async def test_a_frozen_node_is_cut_held_down_and_back_with_what_it_missed(cluster: Cluster) -> None:
    seed = await cluster.start("n0")
    address = await cluster.address(seed)
    rest = await cluster.start_all(*[(f"n{i}", "--bootstrap", address) for i in range(1, 4)])
    nodes = [seed, *rest]
    others, frozen = nodes[:3], nodes[3]
    for node in nodes:  # every node ready on every other node
        await eventually(lambda node=node: _ready_everywhere(cluster, nodes, node), timeout=60,
                         what=f"{node.node_id[-6:]} ready everywhere")  # fmt: skip
    await eventually(lambda: _connected_to(cluster, others, frozen), timeout=30, what="a peer of the frozen node")

    _signal(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        await eventually(lambda: _all_see(cluster, others, frozen, "down", False), timeout=DOWN + SLACK,
                         interval=0.2, what="the frozen node cut and down on every other node")  # fmt: skip
        took = time.monotonic() - stopped
        print(f"SIGSTOP to cut and down on all {len(others)} others: {took:.1f} s (bound {DOWN:.0f} s + slack)")

        held_until = trio.current_time() + HOLD  # it stays down: no redial or record brings it back meanwhile
        while trio.current_time() < held_until:
            assert await _all_see(cluster, others, frozen, "down", False), "a frozen node came back up"
            await trio.sleep(0.5)
        missed = (await cluster.call(seed, "ContainerService.Create", JOB))["job_id"]
        await eventually(lambda: _known_to(cluster, others, missed), timeout=30, what="the job on the others")
    finally:
        _signal(frozen, signal.SIGCONT)  # also for the fixture's graceful stop
    resumed = time.monotonic()

    await eventually(lambda: _ready_everywhere(cluster, nodes, frozen), timeout=30, what="the thawed node up")
    await eventually(lambda: _known_to(cluster, [frozen], missed), timeout=30, what="the missed job caught up")
    for node in others:  # and it sees the others up
        await eventually(lambda node=node: _state_on(cluster, frozen, node, "ready"), timeout=30,
                         what=f"{node.node_id[-6:]} ready on the thawed node")  # fmt: skip
    print(f"SIGCONT to up everywhere with the missed job: {time.monotonic() - resumed:.1f} s")


async def _ready_everywhere(cluster: Cluster, nodes: Sequence[NodeProc], of: NodeProc) -> bool:
    return all([await _state_on(cluster, node, of, "ready") for node in nodes if node is not of])


async def _state_on(cluster: Cluster, node: NodeProc, of: NodeProc, state: str) -> bool:
    return (await _view(cluster, node, of))[0] == state


async def _connected_to(cluster: Cluster, nodes: Sequence[NodeProc], of: NodeProc) -> bool:
    return any([(await _view(cluster, node, of))[1] for node in nodes])


async def _known_to(cluster: Cluster, nodes: Sequence[NodeProc], job_id: str) -> bool:
    return all([job_id in await job_ids(node, cluster.client) for node in nodes])
