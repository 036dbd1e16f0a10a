"""The issue's fault scenarios on a ``Cluster`` (tests/chaos/harness.py), each returning what it measured.

One function per scenario, sized by its arguments: the CI tests run them small and short, ``benchmarks/chaos.py``
at the issue's size (10 nodes, 30 s faults, 100 jobs per part).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .harness import IMAGE, Cluster, arrivals, each

__all__ = ["Flapping", "Loss", "Partition", "flapping", "isolated_replica", "loss", "partition", "real_job"]


def real_job(cluster: Cluster, index: int, seconds: float = 1) -> str:
    """A container job placed on node ``index`` (its executions are compared across nodes)."""
    spec = {
        "image": IMAGE,
        "arguments": ["sleep", str(seconds)],
        "placement": {"nodes": [cluster.nodes[index].node_id]},
    }
    return cluster.create(index, spec, track=True)


@dataclass
class Partition:
    heal_to_agreement: float
    join_to_agreement: float | None
    jobs: list[str] = field(default_factory=list)


def partition(
    cluster: Cluster,
    groups: Sequence[Sequence[int]],
    *,
    seconds: float,
    jobs_per_part: int,
    real: bool,
    kill: int | None = None,
    late: int | None = None,
    timeout: float = 60,
) -> Partition:
    """Split the running nodes into ``groups`` for ``seconds``; create jobs in every part (one real one each if
    ``real``); kill -9 ``kill`` halfway and restart it after the heal; then start ``late`` as a late joiner.
    Measures heal (restart included) to agreement, then the late joiner's start to agreement."""
    cluster.lan.partition(groups)
    began = time.monotonic()
    jobs: list[str] = []
    for group in groups:
        members = [i for i in group if i != kill]
        for k in range(jobs_per_part):
            jobs.append(cluster.create(members[k % len(members)]))
        if real:
            jobs.append(real_job(cluster, members[-1]))
    time.sleep(max(0.0, seconds / 2 - (time.monotonic() - began)))
    if kill is not None:
        cluster.nodes[kill].kill()
    time.sleep(max(0.0, seconds - (time.monotonic() - began)))
    cluster.lan.heal()
    healed = time.monotonic()
    if kill is not None:
        cluster.start([kill])
    cluster.wait_agreement(jobs, timeout=timeout)
    heal_to_agreement = time.monotonic() - healed
    join = None
    if late is not None:
        joined = time.monotonic()
        cluster.start([late])
        cluster.wait_agreement(jobs, timeout=timeout)
        join = time.monotonic() - joined
    return Partition(heal_to_agreement, join, jobs)


@dataclass
class Flapping:
    heal_to_agreement: float
    jobs: list[str]


def flapping(
    cluster: Cluster,
    groups: Sequence[Sequence[int]],
    *,
    seconds: float,
    up: float = 2,
    down: float = 2,
    jobs_per_flap: int = 5,
    timeout: float = 60,
) -> Flapping:
    """The link between ``groups`` goes down for ``down`` s and up for ``up`` s, for ``seconds``, while jobs are
    created on both sides; measures the last time it comes up to agreement."""
    jobs: list[str] = []
    began = time.monotonic()
    creators = itertools.cycle([i for g in groups for i in g])
    while time.monotonic() - began < seconds:
        cluster.lan.partition(groups)
        jobs.extend(cluster.create(next(creators)) for _ in range(jobs_per_flap))
        time.sleep(max(0.0, down - 0.05))
        cluster.lan.heal()
        jobs.extend(cluster.create(next(creators)) for _ in range(jobs_per_flap))
        time.sleep(max(0.0, up - 0.05))
    cluster.lan.partition(groups)
    jobs.extend(cluster.create(next(creators)) for _ in range(jobs_per_flap))
    time.sleep(down)
    cluster.lan.heal()
    healed = time.monotonic()
    cluster.wait_agreement(jobs, timeout=timeout)
    return Flapping(time.monotonic() - healed, jobs)


@dataclass
class Loss:
    latencies: list[float]
    """Per job: seconds from its creation until the last other node recorded it."""
    lost: int
    """Jobs some node had not recorded when the loss ended and the cluster agreed."""

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0


def loss(cluster: Cluster, *, probability: float, seconds: float, jobs: int, timeout: float = 60) -> Loss:
    """Drop ``probability`` of the packets every node receives from another for ``seconds`` while ``jobs`` are
    created across the nodes, evenly in time; then heal and wait for agreement. Arrival times are read from the
    receivers' logs ("job from peer"), creation times from the jobs."""
    nodes = cluster.running()
    cluster.lan.loss(probability)
    created: dict[str, tuple[int, float]] = {}
    began = time.monotonic()
    for k in range(jobs):
        time.sleep(max(0.0, began + k * seconds / jobs - time.monotonic()))
        origin = nodes[k % len(nodes)]
        created[cluster.create(origin)] = (origin, time.time())
    time.sleep(max(0.0, began + seconds - time.monotonic()))
    cluster.lan.heal()
    cluster.wait_agreement(created, timeout=timeout)
    seen = dict(zip(nodes, each([cluster.nodes[i] for i in nodes], arrivals), strict=True))
    latencies, lost = [], 0
    for job_id, (origin, at) in created.items():
        times = [seen[i].get(job_id) for i in nodes if i != origin]
        if any(t is None for t in times):
            lost += 1
            continue
        latencies.append(max(t for t in times if t is not None) - at)
    return Loss(latencies, lost)


def isolated_replica(cluster: Cluster, index: int, *, replicas: int, seconds: float, timeout: float = 60) -> float:
    """A replicas job created on node ``index`` (which runs one copy), then ``index`` cut off from every other node
    for ``seconds``; measures heal to agreement, no more than ``replicas`` copies running on any node's view."""
    spec = {"image": IMAGE, "arguments": ["sleep", str(seconds * 3)], "placement": {"replicas": replicas}}
    job = cluster.create(index, spec, replicas=replicas)
    cluster.lan.isolate(index)
    time.sleep(seconds)
    cluster.lan.heal()
    healed = time.monotonic()
    cluster.wait_agreement([job], timeout=timeout)
    return time.monotonic() - healed
