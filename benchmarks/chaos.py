"""Chaos benchmark: how fast a cluster of real ``cmnode run`` processes agrees again after the faults of issue 12.

    sudo .venv/bin/python -m benchmarks.chaos [--nodes 10] [--seconds 30] [--jobs 100] [--scenario NAME ...]
        [--runs N] [--baseline REF]

Each node runs in its own network namespace on a private bridge (tests/chaos/harness.py: root, iproute2 and
iptables needed); node 0 starts first and every other node bootstraps through it (as the compose cluster does).
Scenarios, each on a fresh cluster:

- ``partition``: three parts (3+3+4 at 10 nodes) for ``--seconds``; ``--jobs`` jobs created in each part and one
  real job (a busybox container, when Docker and the test image are there); the last node is killed -9 halfway
  and restarted right after the heal. Then a late joiner starts. Target: heal to agreement <= 5 s.
- ``flapping``: the link between two halves goes down 2 s, up 2 s, for ``--seconds``, jobs created throughout.
  Target: last heal to agreement <= 5 s.
- ``loss``: every node drops 10 % of the packets it receives from the others (iptables ``statistic``) for
  ``--seconds`` while ``--jobs`` jobs are created. Target: every job on every node within 10 s of its creation.
- ``replica``: a replicas job (2) on one node, that node cut off for ``--seconds``. Target: agreement <= 5 s
  after the heal, never more than 2 copies running.

Agreement: every node lists the same jobs with the same statuses, and reports the same (node, state, version)
executions of the jobs that run somewhere. Prints one line per scenario, measured against its target. While
a node still lacks created jobs, only that node is asked (``Cluster.agreement``), and checks take at most half
the time: ten full listings five times a second had loaded the 2-core machine the nodes converge on. The
partition also prints the restarted node's start (exec at the heal -> ready, first peer, last catch-up), the CPU
spent from the heal to agreement (by the nodes not killed, the restarted one, the harness and the whole machine:
at ~2x the wall time on 2 cores, the machine was saturated) and the catch-up rounds of the nodes not killed.
Figures move with the machine's load: run it on an otherwise idle machine, and compare builds with ``--baseline
REF`` (the nodes run REF's code, from ``git archive``; the harness is this tree's), alternating with this tree
``--runs`` times each, which prints each build's median. Both trees' bytecode is compiled first, as an install
leaves it (``benchmarks/startup.py``, ``compiled``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from benchmarks.catchup import ROOT, source_at
from benchmarks.startup import compiled
from tests.chaos import scenarios
from tests.chaos.harness import Cluster, cluster, docker_there

SCENARIOS = ("partition", "flapping", "loss", "replica")
HEAL_TARGET = 5.0
LOSS_TARGET = 10.0


def unavailable(what: str, why: str) -> NoReturn:
    raise SystemExit(f"{what} unavailable: {why}")


def thirds(n: int) -> list[list[int]]:
    """3+3+4 at 10: as even as possible, the larger parts last."""
    sizes = [n // 3, n // 3, n - 2 * (n // 3)]
    out, start = [], 0
    for size in sizes:
        out.append(list(range(start, start + size)))
        start += size
    return out


def formed(chaos: Cluster, n: int) -> None:
    chaos.start([0])
    chaos.start(range(1, n))
    chaos.wait_meshed(min(2, n - 1), timeout=120)


def run_partition(chaos: Cluster, n: int, seconds: float, jobs: int) -> tuple[list[str], float]:
    real = docker_there()
    result = scenarios.partition(chaos, thirds(n), seconds=seconds, jobs_per_part=jobs, real=real, kill=n - 1,
                                 late=n, timeout=120)  # fmt: skip
    return [
        line("partition", f"{n} nodes, 3 parts, {seconds:g} s, {len(result.jobs)} jobs, kill -9 + restart"
             f"{', real jobs' if real else ''}: heal to agreement", result.heal_to_agreement, HEAL_TARGET),
        line("partition", "heal to agreement of the 9 nodes not killed" if n == 10 else "heal to agreement of the "
             "nodes not killed", result.survivors_agree or 0.0, None),
        line("partition", "heal to the killed node's restart answering RPC (its process start)", result.restart or 0.0,
             None),
        f"{'partition':<12} the restarted node, from its exec at the heal: "
        + ", ".join(f"{name} {at:.2f} s" for name, at in result.restart_phases.items()),
        f"{'partition':<12} CPU from the heal to agreement: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.cpu.items())
        + f"; catch-up rounds of the nodes not killed: {result.rounds}",
        line("late joiner", "start to agreement", result.join_to_agreement or 0.0, None),
    ], result.heal_to_agreement  # fmt: skip


def run_flapping(chaos: Cluster, n: int, seconds: float, jobs: int) -> tuple[list[str], float]:
    halves = [list(range(n // 2)), list(range(n // 2, n))]
    result = scenarios.flapping(chaos, halves, seconds=seconds, jobs_per_flap=max(1, jobs // 20), timeout=120)
    return [line("flapping", f"{n} nodes, down 2 s / up 2 s for {seconds:g} s, {len(result.jobs)} jobs: last heal "
                 "to agreement", result.heal_to_agreement, HEAL_TARGET)], result.heal_to_agreement  # fmt: skip


def run_loss(chaos: Cluster, n: int, seconds: float, jobs: int) -> tuple[list[str], float]:
    result = scenarios.loss(chaos, probability=0.1, seconds=seconds, jobs=jobs, timeout=120)
    what = f"{n} nodes, 10% loss for {seconds:g} s, {jobs} jobs ({result.lost} not on every node by the end)"
    worst = result.worst if not result.lost else float("inf")
    return [
        line("loss", f"{what}: creation to every node, worst", worst, LOSS_TARGET),
        line("loss", "creation to every node, median", result.p50, None),
    ], worst


def run_replica(chaos: Cluster, n: int, seconds: float, jobs: int) -> tuple[list[str], float]:
    if not docker_there():
        return ["replica      skipped: needs Docker and the test image"], 0.0
    result = scenarios.isolated_replica(chaos, 1, replicas=2, seconds=seconds, timeout=120)
    replaced = "not replaced" if result.replaced_after is None else f"replaced after {result.replaced_after:.1f} s"
    out = [
        line(
            "replica",
            f"{n} nodes, a node running 1 of 2 replicas cut off {seconds:g} s ({replaced}), "
            f"{result.running} running once agreed: heal to agreement",
            result.heal_to_agreement,
            HEAL_TARGET,
        )
    ]
    out.append(line("replica", "heal until every node sees exactly 2 running", result.heal_to_settled, None))
    if result.running != 2:
        out.append(f"replica      MISSED: {result.running} copies running once agreed, wanted 2")
    return out, result.heal_to_agreement  # fmt: skip


def line(name: str, what: str, seconds: float, target: float | None) -> str:
    verdict = "" if target is None else f"  target <= {target:g} s  {'ok' if seconds <= target else 'MISSED'}"
    return f"{name:<12} {what}: {seconds:.2f} s{verdict}"


RUNS: dict[str, Callable[[Cluster, int, float, int], tuple[list[str], float]]] = {
    "partition": run_partition,
    "flapping": run_flapping,
    "loss": run_loss,
    "replica": run_replica,
}


def run_once(name: str, args: argparse.Namespace, label: str, tree: Path) -> tuple[float | None, bool]:
    """One scenario on a fresh cluster whose nodes run the code of ``tree``; its headline figure (None: failed)
    and whether a target was missed."""
    root = Path(tempfile.mkdtemp(prefix=f"cmnode-chaos-{name}-"))
    figure, failed = None, False
    try:
        with cluster(args.nodes + 1, root, unavailable=unavailable, env={"PYTHONPATH": str(tree)}) as chaos:
            formed(chaos, args.nodes)  # one spare namespace above: the late joiner
            lines, figure = RUNS[name](chaos, args.nodes, args.seconds, args.jobs)
            for text in lines:
                print(f"{text}{f'  [{label}]' if label else ''}", flush=True)
                failed |= "MISSED" in text
    except AssertionError as exc:
        print(f"{name:<12} FAILED: {exc}{f'  [{label}]' if label else ''}", flush=True)
        traceback.print_exc(file=sys.stderr)
        failed = True
    if args.keep_logs:
        print(f"{'':<12} logs: {root}", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return figure, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--scenario", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario (with --baseline: of each build, "
                        "alternating); the median is printed")  # fmt: skip
    parser.add_argument("--baseline", metavar="REF", help="also run the nodes at this git revision (git archive), "
                        "alternating with this tree, and print each figure's ratio")  # fmt: skip
    parser.add_argument("--keep-logs", action="store_true", help="keep the nodes' logs (their path is printed)")
    args = parser.parse_args()
    print(f"cmnode chaos benchmark ({os.cpu_count()} CPUs; load {' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    failed = False
    with source_at(args.baseline) as old:
        builds = [("this tree" if args.baseline else "", compiled(ROOT))]
        if args.baseline:
            builds.insert(0, (f"baseline {args.baseline}", compiled(old)))
        for name in args.scenario:
            figures: dict[str, list[float]] = {label: [] for label, _ in builds}
            for _ in range(args.runs):
                for label, tree in builds:
                    figure, missed = run_once(name, args, label, tree)
                    failed |= missed or figure is None
                    if figure is not None:
                        figures[label].append(figure)
            if args.runs > 1 or args.baseline:
                summary(name, figures)
    print(f"load after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    sys.exit(1 if failed else 0)


def summary(name: str, figures: dict[str, list[float]]) -> None:
    """Each build's median headline figure (and every run's), the last build against the first."""
    medians = {label: statistics.median(values) for label, values in figures.items() if values}
    for label, values in figures.items():
        if label in medians:
            runs = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name:<12} median of {len(values)} ({label or 'this tree'}): {medians[label]:.2f} s  [{runs}]")
    labels = list(medians)
    if len(labels) == 2 and medians[labels[1]] > 0:
        print(f"{name:<12} {labels[0]} / {labels[1]}: {medians[labels[0]] / medians[labels[1]]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
