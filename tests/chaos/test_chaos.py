"""Issue 12's faults on real ``cmnode run`` processes in network namespaces (tests/chaos/harness.py), sized for CI:
fewer nodes and shorter faults than ``benchmarks/chaos.py``, the same scenarios. Every test ends with every node
agreeing on jobs, statuses, executions and allocations. Where namespaces or iptables cannot be made the tests
fail (they are the only proof that partitions heal; a skip would hide a machine that cannot run them); the replica
test also needs Docker and the test image, and is skipped without them unless everything is required
(``CMNODE_REQUIRE_ALL=1``, CI).

The bounds here are generous for a loaded 2-core runner; the benchmark holds the issue's targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support import missing

from . import scenarios
from .harness import Cluster, cluster, docker_there

pytestmark = pytest.mark.slow

NODES = 4


def unavailable(what: str, why: str) -> NoReturn:
    pytest.fail(f"{what} unavailable: {why}", pytrace=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Cluster]:
    """``NODES`` running nodes meshed through node 0, plus one free namespace for a late joiner. Replicas are
    moved off a node 3 s after it is found down (its neighbours' first missed ping, 5-7 s into the cut, and a
    1.2 s TCP check: a lost notice; with 0.1.0's records, 6 s unheard), so a cut of 15 s sees it replaced."""
    with cluster(NODES + 1, tmp_path, unavailable=unavailable, flags=["--reschedule-after", "3"]) as chaos:
        chaos.start([0])
        chaos.start(range(1, NODES))
        chaos.wait_meshed(2)
        yield chaos


def test_a_partition_heals_with_a_restart_and_a_late_joiner(lan: Cluster) -> None:
    real = docker_there()
    result = scenarios.partition(lan, [[0, 1], [2, 3]], seconds=12, jobs_per_part=20, real=real, kill=3, late=NODES,
                                 timeout=45)  # fmt: skip
    assert len(result.jobs) == 40 + 2 * real
    print(f"heal to agreement {result.heal_to_agreement:.2f} s, late joiner {result.join_to_agreement:.2f} s")
    if real:  # the real jobs ran to the end on their nodes, and every node says so
        tracked = list(lan.tracked)
        for job_id in tracked:
            status = lan.call(0, "ContainerService.Status", {"job_id": job_id})
            assert status["status"] == "complete", status


def test_a_flapping_link_settles(lan: Cluster) -> None:
    result = scenarios.flapping(lan, [[0, 1], [2, 3]], seconds=8, jobs_per_flap=3, timeout=45)
    print(f"last heal to agreement {result.heal_to_agreement:.2f} s")


def test_every_job_reaches_every_node_through_packet_loss(lan: Cluster) -> None:
    result = scenarios.loss(lan, probability=0.1, seconds=8, jobs=24, timeout=45)
    print(f"creation to every node: median {result.p50:.2f} s, worst {result.worst:.2f} s")
    assert result.lost == 0
    assert result.worst <= 10, result.latencies


def test_a_replica_cut_off_is_replaced_and_once_healed_exactly_n_run(lan: Cluster) -> None:
    if not docker_there():
        missing("Docker and the test image", "the replica scenario runs real containers")
    result = scenarios.isolated_replica(lan, 0, replicas=2, seconds=15, timeout=45)
    print(f"replaced after {result.replaced_after} s, heal to agreement {result.heal_to_agreement:.2f} s, "
          f"to exactly 2 running {result.heal_to_settled:.2f} s")  # fmt: skip
    assert result.replaced_after is not None, "the majority did not run the cut-off copy elsewhere"
    assert result.running == 2
