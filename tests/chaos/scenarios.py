"""The issue's fault scenarios on a ``Cluster`` (tests/chaos/harness.py), each returning what it measured.

One function per scenario, sized by its arguments: the CI tests run them small and short, ``benchmarks/chaos.py``
at the issue's size (10 nodes, 30 s faults, 100 jobs per part).
"""

from __future__ import annotations

import contextlib
import itertools
import resource
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from .harness import IMAGE, TICKS, Cluster, arrivals, each, logged, wait

__all__ = [
    "Flapping",
    "Loss",
    "Partition",
    "Replica",
    "flapping",
    "isolated_replica",
    "loss",
    "partition",
    "real_job",
    "running_copies",
]


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
    survivors_agree: float | None = None
    """Heal to agreement of the nodes that were not killed (the restarted one is still starting meanwhile)."""
    restart: float | None = None
    """Heal until the killed node's RPC answered again (the process start, on this machine)."""
    restart_phases: dict[str, float] = field(default_factory=dict)
    """The restarted node's start, from its exec (at the heal): ``ready`` (its ready line), ``peer`` (its first
    connection, from its log) and ``caught up`` (the last catch-up that brought it news, from its log)."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds spent from the heal to agreement: by ``survivors`` (the nodes not killed, together), by the
    ``restarted`` node (from its exec; ``restarted at ready``: until its ready line), by the ``harness`` (this
    process: its checks), and by the whole ``machine`` (every process, from /proc/stat): what the restarted
    node's start competed with on a machine of a few cores."""
    rounds: int | None = None
    """Catch-up rounds the nodes not killed completed from the heal to agreement (their ``/metrics``)."""


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
    others = [i for i in cluster.running() if i != kill]
    rounds_before = sum(each(others, lambda i: cluster.counter(i, "cmnode_sync_rounds")))
    cpu_before = _cpu_now(cluster, others)
    cluster.lan.heal()
    healed, healed_at = time.monotonic(), time.time()
    survivors = restart = None
    cpu: dict[str, float] = {}
    if kill is not None:

        def restart_node() -> float:
            cluster.start([kill])
            took = time.monotonic() - healed
            cpu["restarted at ready"] = cluster.nodes[kill].cpu()
            return took

        with ThreadPoolExecutor(1) as pool:  # the restart, while the others are watched
            started = pool.submit(restart_node)
            asked = time.monotonic() - healed
            survivors = asked + cluster.wait_agreement(jobs, timeout=timeout, nodes=others)
            restart = started.result()
    cluster.wait_agreement(jobs, timeout=timeout)
    heal_to_agreement = time.monotonic() - healed
    cpu_after = _cpu_now(cluster, others)
    cpu.update({name: cpu_after[name] - cpu_before[name] for name in cpu_before})
    if kill is not None:
        cpu["restarted"] = cluster.nodes[kill].cpu()
    rounds = int(sum(each(others, lambda i: cluster.counter(i, "cmnode_sync_rounds"))) - rounds_before)
    phases: dict[str, float] = {}
    if kill is not None and restart is not None:
        phases["ready"] = restart
        for name, text, last in (("peer", "peer connected", False), ("caught up", "caught up with peer=", True)):
            at = logged(cluster.nodes[kill], text, after=healed_at, last=last)
            if at is not None:
                phases[name] = at - healed_at
    join = None
    if late is not None:
        joined = time.monotonic()
        cluster.start([late])
        cluster.wait_agreement(jobs, timeout=timeout)
        join = time.monotonic() - joined
    return Partition(heal_to_agreement, join, jobs, survivors, restart, phases, cpu, rounds)


def _cpu_now(cluster: Cluster, nodes: Sequence[int]) -> dict[str, float]:
    """CPU seconds used so far by ``nodes`` together, by this process (the harness) and by the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open("/proc/stat") as stat:  # the first line: the machine's jiffies by kind, idle and iowait 4th and 5th
        jiffies = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(jiffies) - jiffies[3] - jiffies[4]
    return {
        "survivors": sum(cluster.nodes[i].cpu() for i in nodes),
        "harness": usage.ru_utime + usage.ru_stime,
        "machine": busy / TICKS,
    }


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


@dataclass
class Replica:
    replaced_after: float | None
    """Seconds from the cut to the majority running every copy elsewhere (None: not within the cut)."""
    heal_to_agreement: float
    running: int
    """Copies running once settled (or when waiting for that gave up)."""
    heal_to_settled: float
    """Heal until every node sees exactly the wanted number of copies running, and the nodes agree."""
    down_after: float | None = None
    """Seconds from the cut until the witness logged the cut-off node down (None: it did not, during the cut)."""
    aborted_after: float | None = None
    """Seconds from the cut until the witness's last connection to it closed (its log), whoever closed it."""


def running_copies(cluster: Cluster, index: int, job_id: str) -> list[str]:
    """The nodes that node ``index`` sees running a copy of ``job_id``."""
    status = cluster.call(index, "ContainerService.Status", {"job_id": job_id})
    return [e["node_id"] for e in status["executions"] if e["state"] == "running"]


def isolated_replica(cluster: Cluster, creator: int, *, replicas: int, seconds: float, timeout: float = 60) -> Replica:
    """A replicas job created on node ``creator``; once its copies run, a node running one is cut off from every
    other node for ``seconds``. Measures how soon the majority runs the copy elsewhere, then heal to agreement;
    the harness's agreement also holds that no node sees more than ``replicas`` copies running."""
    spec = {"image": IMAGE, "arguments": ["sleep", str(seconds * 4)], "placement": {"replicas": replicas}}
    job = cluster.create(creator, spec, replicas=replicas)
    by_id = {cluster.nodes[i].node_id: i for i in cluster.running()}
    wait(lambda: len(running_copies(cluster, creator, job)) == replicas, timeout, f"{replicas} copies running")
    cut = by_id[sorted(running_copies(cluster, creator, job))[0]]
    witness = next(i for i in cluster.running() if i != cut)
    cluster.lan.isolate(cut)
    began, cut_at = time.monotonic(), time.time()
    replaced = None
    while time.monotonic() - began < seconds:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            copies = running_copies(cluster, witness, job)
            if replaced is None and len(copies) == replicas and cluster.nodes[cut].node_id not in copies:
                replaced = time.monotonic() - began
        time.sleep(0.5)
    cluster.lan.heal()
    healed, cut_id = time.monotonic(), cluster.nodes[cut].node_id
    down = logged(cluster.nodes[witness], f"node {cut_id} down", after=cut_at)
    aborted = logged(cluster.nodes[witness], f"peer disconnected peer={cut_id}", after=cut_at)
    cluster.wait_agreement([job], timeout=timeout)
    took = time.monotonic() - healed

    def settled() -> bool:  # the two sides' revisions merged: every node sees exactly ``replicas`` running
        counts = each(cluster.running(), lambda i: len(running_copies(cluster, i, job)))
        return set(counts) == {replicas} and cluster.agreement([job]).agreed

    with contextlib.suppress(AssertionError):
        wait(settled, timeout, f"{replicas} copies running on every node's view")
    return Replica(replaced, took, len(running_copies(cluster, witness, job)), time.monotonic() - healed,
                   None if down is None or down > cut_at + seconds else down - cut_at,
                   None if aborted is None or aborted > cut_at + seconds else aborted - cut_at)  # fmt: skip
