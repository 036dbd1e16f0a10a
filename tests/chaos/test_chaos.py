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

from node.liveness import INTERVAL, QUIET, TIMEOUT
from node.reach import REACH_TIMEOUT
from tests.support import missing

from . import scenarios
from .harness import Cluster, cluster, docker_there

pytestmark = pytest.mark.slow

NODES = 4
RESCHEDULE_AFTER = 3

FOUND = QUIET + INTERVAL + TIMEOUT + REACH_TIMEOUT
"""Seconds from a cut until the other nodes hold the cut-off node down, at most (13.2 s). Its neighbours heard it
last at the cut at the latest, so each pings it within ``QUIET + INTERVAL`` s of the cut; the ping's miss
(``TIMEOUT``) starts the loss watch's TCP check, which a cut link does not answer within ``REACH_TIMEOUT``: the
lost notice goes out. Usually the kernel is first: a neighbour's connection to it is aborted ``USER_TIMEOUT``
(8 s) after what it sent into the cut went unacknowledged, and the same TCP check follows. Measured (3 runs):
the witness's connection closed 9.1-9.4 s into the cut, down 1.2 s later (with 0.1.0's 2 s records, a node
was down after 6 s unheard)."""
STARTED = 3.0
"""The rescheduling round, the new copy's ``docker run`` and its execution's gossip to the witness, polled every
0.5 s, on a loaded 2-core machine (0.3-0.6 s measured)."""
REPLACED = FOUND + RESCHEDULE_AFTER + STARTED
"""The cut's length (19.2 s): the copy must be running elsewhere before it ends. Measured 13.7-14.2 s (12.6-14.1 s
last round): the 15 s the cut used to last left under a second of margin, and none when the pings find the cut
before the kernel does (up to 13.2 + 3 s and the start)."""


def unavailable(what: str, why: str) -> NoReturn:
    pytest.fail(f"{what} unavailable: {why}", pytrace=False)


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Cluster]:
    """``NODES`` running nodes meshed through node 0, plus one free namespace for a late joiner. Replicas are
    moved off a node ``RESCHEDULE_AFTER`` s after it is found down (``REPLACED``)."""
    with cluster(NODES + 1, tmp_path, unavailable=unavailable,
                 flags=["--reschedule-after", str(RESCHEDULE_AFTER)]) as chaos:  # fmt: skip
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
    result = scenarios.isolated_replica(lan, 0, replicas=2, seconds=REPLACED, timeout=45)
    print(f"connection closed after {result.aborted_after} s, down after {result.down_after} s, replaced after "
          f"{result.replaced_after} s (cut {REPLACED:g} s), heal to agreement {result.heal_to_agreement:.2f} s, "
          f"to exactly 2 running {result.heal_to_settled:.2f} s")  # fmt: skip
    assert result.replaced_after is not None, "the majority did not run the cut-off copy elsewhere"
    assert result.running == 2
