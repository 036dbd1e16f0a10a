"""Lost notices between real ``cmnode run`` processes in network namespaces (tests/chaos/harness.py), with node
records spaced long (every node speaks 0.2.0: a minute or more between unchanged records, so silence alone would
take minutes): a node reported lost that is alive refutes, and is up again everywhere; a node killed with -9 is
down within seconds on a node that was not connected to it, told by a node that was."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from .harness import Cluster, cluster, logged, wait

pytestmark = pytest.mark.slow

NODES = 3


def unavailable(what: str, why: str) -> NoReturn:
    pytest.fail(f"{what} unavailable: {why}", pytrace=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(NODES, tmp_path, unavailable=unavailable) as chaos:
        chaos.start([0])
        chaos.start(range(1, NODES))
        chaos.wait_meshed(2)
        yield chaos


def state(lan: Cluster, index: int, of: int) -> str | None:
    """How node ``index`` lists node ``of`` (None: not at all)."""
    nodes = lan.call(index, "NodeService.List")["nodes"]
    return next((n["state"] for n in nodes if n["node_id"] == lan.nodes[of].node_id), None)


def everywhere(lan: Cluster, of: int, wanted: str, among: range | list[int], timeout: float) -> None:
    wait(lambda: all(state(lan, i, of) == wanted for i in among), timeout, f"node {of} {wanted} on {list(among)}")


def connected(lan: Cluster, index: int, to: int) -> bool:
    peers = lan.call(index, "NodeService.Peers")["peers"]
    return any(p.get("node_id") == lan.nodes[to].node_id for p in peers)


def test_a_node_told_it_is_lost_refutes_and_a_killed_one_is_down_everywhere_in_seconds(lan: Cluster) -> None:
    everywhere(lan, 2, "ready", range(NODES), timeout=30)
    for i in range(NODES):  # every node speaks 0.2.0: records promise a minute or more, not 2 s
        nodes = lan.call(i, "NodeService.List")["nodes"]
        assert all(n["version"] == "0.2.0" for n in nodes), nodes

    # 0 and 2 cannot reach each other; 1 reaches both. 0 finds its connection to 2 dead, cannot dial it, and
    # says 2 is lost; 1 is connected to 2 and ignores that, but passes it on; 2 refutes with a fresh record,
    # which reaches 0 through 1.
    cut = time.time()
    lan.lan.sever([(0, 2)])
    wait(lambda: logged(lan.nodes[2], "says this node is lost: refuting", after=cut) is not None, 45, "2 refuting")
    assert logged(lan.nodes[0], f"peer {lan.nodes[2].node_id} lost", after=cut) is not None
    everywhere(lan, 2, "ready", range(NODES), timeout=10)

    # Now 1 and 2 cannot reach each other (0 and 2 can again): the same, the other way round. Once 1 holds no
    # connection to 2, 2 is killed: 0 sees it go, cannot dial it, and tells 1, which is not connected to 2.
    cut = time.time()
    lan.lan.sever([(1, 2)])
    gone = f"peer disconnected peer={lan.nodes[2].node_id}"  # 1's own view; its swarm may drop a dead one sooner
    wait(lambda: logged(lan.nodes[1], gone, after=cut) is not None and not connected(lan, 1, 2)
         and connected(lan, 0, 2), 45, "1 cut off from 2, 0 connected to it")  # fmt: skip
    everywhere(lan, 2, "ready", range(NODES), timeout=15)  # 1's notice about 2 refuted, if it got to send one
    killed = time.time()
    lan.nodes[2].kill()
    everywhere(lan, 2, "down", [0, 1], timeout=10)
    took = time.time() - killed
    told = logged(lan.nodes[1], f"node {lan.nodes[2].node_id} down: reported lost by {lan.nodes[0].node_id}",
                  after=killed)  # fmt: skip
    assert told is not None, "1 did not learn it from 0's notice"
    print(f"kill -9 to down on a node not connected to it: {took:.2f} s (told after {told - killed:.2f} s)")
    assert took < 10
