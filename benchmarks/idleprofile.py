"""Where an idle cluster's CPU goes, by trio task: N ``cmnode run`` processes on loopback, each with a trio
instrument that counts every task's steps and the CPU they took, summed by task name over an idle window.

    .venv/bin/python -m benchmarks.idleprofile --nodes 30 --idle 60
    .venv/bin/python -m benchmarks.idleprofile --nodes 30 --idle 60 --baseline main   # main first, then this tree
    .venv/bin/python -m benchmarks.idleprofile --nodes 10 --idle 30 --node-arg=--heartbeat --node-arg=600

Run it under the heavy lock (``flock /tmp/cmnode-heavy.lock ...``): 30 nodes load both cores while they start.

What it prints, per node (averaged over the N nodes), for the task names that took the most CPU: steps a second,
CPU in ms a second (``time.thread_time`` around each step), tasks spawned a second; the collector's pauses on rows
of their own (``<gc genN>``, not charged to the step they interrupted); then the process's whole CPU (``/proc``:
threads and trio's own loop included), the part the task steps account for, and trio's I/O waits a second (each
one a wakeup of the event loop); and what the mesh did meanwhile (``NodeService.Info``'s counters: messages,
dials, trims, catch-up rounds, lost probes, and the connections the nodes logged). The instrument itself costs
about a third of what it measures, so the ratios between rows (and between the two sides of ``--baseline``) are
what count, not the absolute figures; ``benchmarks/mesh.py --idle`` measures the cluster's idle CPU without it.

How it gets into the nodes without a change to them: this file is copied into a temporary directory with a
``sitecustomize.py`` that imports it, and that directory goes first on the nodes' ``PYTHONPATH`` (before the
source tree they run; with ``--baseline``, both go into the extracted tree itself). ``install`` wraps
``trio.run`` to add the instrument and makes SIGUSR1 write the counters so far (cumulative) to
``$CMNODE_IDLEPROFILE/<pid>.json``; the window's figures are the difference of two dumps. Nothing here is
imported by the node itself: without the variable, ``install`` does nothing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

ENV = "CMNODE_IDLEPROFILE"


class TaskCounter:
    """A trio instrument (duck-typed: trio calls the hooks it finds): per task name, steps, thread CPU and spawns;
    and the event loop's I/O waits."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[float]] = {}
        """name -> [steps, CPU seconds, spawned]; the collector's pauses under ``<gc genN>`` (collections, CPU),
        not charged to the step they interrupted."""
        self.waits = 0
        self._began = 0.0
        self._gc_began = 0.0
        self._gc_in_step = 0.0

    def collecting(self, phase: str, info: dict[str, Any]) -> None:
        """A ``gc.callbacks`` entry: a collection's CPU goes to its own row."""
        if phase == "start":
            self._gc_began = time.thread_time()
            return
        took = time.thread_time() - self._gc_began
        self._gc_in_step += took
        row = self._row(f"<gc gen{info.get('generation', '?')}>")
        row[0] += 1
        row[1] += took

    def task_spawned(self, task: Any) -> None:
        self._row(task.name)[2] += 1

    def before_task_step(self, task: Any) -> None:
        self._gc_in_step = 0.0
        self._began = time.thread_time()

    def after_task_step(self, task: Any) -> None:
        row = self._row(task.name)
        row[0] += 1
        row[1] += time.thread_time() - self._began - self._gc_in_step

    def before_io_wait(self, timeout: float) -> None:
        self.waits += 1

    def _row(self, name: str) -> list[float]:
        row = self.tasks.get(name)
        if row is None:
            row = self.tasks[name] = [0, 0.0, 0]
        return row

    def snapshot(self) -> dict[str, Any]:
        return {
            "tasks": {name: list(row) for name, row in self.tasks.items()},
            "waits": self.waits,
            "cpu": time.process_time(),
            "wall": time.monotonic(),
        }


def install() -> None:
    """In a node process (from ``sitecustomize``): add the instrument to every ``trio.run``, dump on SIGUSR1."""
    where = os.environ.get(ENV)
    if not where:
        return
    import gc

    import trio

    counter = TaskCounter()
    gc.callbacks.append(counter.collecting)
    original = trio.run

    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = (*kwargs.get("instruments", ()), counter)
        return original(*args, **kwargs)

    def dump(signum: int, frame: Any) -> None:
        path = Path(where) / f"{os.getpid()}.json"
        path.with_suffix(".tmp").write_text(json.dumps(counter.snapshot()))
        path.with_suffix(".tmp").replace(path)

    trio.run = run  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, dump)


def _hook_dir(hook: Path) -> Path:
    """``hook`` (made if need be) with this module and a ``sitecustomize`` that installs it."""
    hook.mkdir(exist_ok=True)
    (hook / "_cmnode_idleprofile.py").write_text(Path(__file__).read_text())
    (hook / "sitecustomize.py").write_text("import _cmnode_idleprofile\n_cmnode_idleprofile.install()\n")
    return hook


def _dump_all(pids: list[int], out: Path, timeout: float = 10.0) -> dict[int, dict[str, Any]]:
    """SIGUSR1 to every node, then each one's dump (written after the signal)."""
    asked = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    dumps: dict[int, dict[str, Any]] = {}
    while len(dumps) < len(pids):
        for pid in pids:
            path = out / f"{pid}.json"
            if pid not in dumps and path.exists() and path.stat().st_mtime >= asked:
                dumps[pid] = json.loads(path.read_text())
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pids) - len(dumps)} nodes did not dump their counters within {timeout:g} s")
        time.sleep(0.05)
    return dumps


def profile(n: int, idle: float, node_args: tuple[str, ...], code: Path | None, settle: float) -> dict[str, Any]:
    """One cluster of ``n`` nodes (``code``: their source tree), formed and settled, then ``idle`` s counted."""
    import tempfile

    import httpx

    from benchmarks import mesh

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "dumps"
        out.mkdir()
        saved = {key: os.environ.get(key) for key in ("PYTHONPATH", ENV)}
        if code is None:  # this tree: the hook first on the path
            tree = Path(__file__).resolve().parent.parent
            os.environ["PYTHONPATH"] = f"{_hook_dir(root / 'hook')}:{tree}"
        else:  # another revision's extracted tree, which the nodes get as their path and working directory
            _hook_dir(code)
        os.environ[ENV] = str(out)
        try:
            with mesh.cmnode_cluster(n, extra=node_args, code=code) as nodes, httpx.Client(timeout=30) as http:
                deadline = time.monotonic() + 60 + 3 * n
                while not mesh.formed(http, nodes) and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(settle)
                pids = [node.proc.pid for node in nodes]
                before, counted = _dump_all(pids, out), _counters(http, nodes)
                time.sleep(idle)
                after, counters = _dump_all(pids, out), _counters(http, nodes)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    result = _difference(before, after)
    result["mesh"] = {key: (counters[key] - counted[key]) / idle / n for key in counters}
    return result


COUNTED = ("messages_in", "messages_out", "dials", "dial_failures", "trimmed", "unsubscribed", "sync_rounds",
           "dead_connections", "lost_probes", "lost_reported")  # fmt: skip
"""The mesh counters (``NodeService.Info``) whose change over the window is printed: what the idle mesh did."""


def _counters(http: Any, nodes: list[Any]) -> dict[str, float]:
    """The ``COUNTED`` mesh counters summed over ``nodes``, and the connections they logged so far."""
    from benchmarks.common import call

    total = dict.fromkeys(COUNTED, 0.0)
    total["connects"] = 0.0
    for node in nodes:
        mesh = call(http, node.url, "NodeService.Info")["mesh"]
        for key in COUNTED:
            total[key] += mesh.get(key, 0)
        total["connects"] += node.log.read_text().count("msg=peer connected")
    return total


def _difference(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per node and second: each task name's steps, CPU and spawns; the process CPU, the steps' CPU, I/O waits."""
    n = len(after)
    tasks: dict[str, list[float]] = {}
    cpu = steps_cpu = waits = 0.0
    for pid, end in after.items():
        start = before[pid]
        seconds = end["wall"] - start["wall"]
        cpu += (end["cpu"] - start["cpu"]) / seconds
        waits += (end["waits"] - start["waits"]) / seconds
        for name, row in end["tasks"].items():
            old = start["tasks"].get(name, [0, 0.0, 0])
            total = tasks.setdefault(name, [0.0, 0.0, 0.0])
            for k in range(3):
                total[k] += (row[k] - old[k]) / seconds
            steps_cpu += (row[1] - old[1]) / seconds
    return {
        "nodes": n,
        "tasks": {name: [v / n for v in row] for name, row in tasks.items()},
        "cpu_ms": cpu / n * 1000,
        "steps_ms": steps_cpu / n * 1000,
        "waits": waits / n,
    }


def report(result: dict[str, Any], top: int, base: dict[str, Any] | None = None) -> str:
    """The table: the ``top`` task names by CPU, per node and second (with the baseline's beside, if any)."""
    rows = sorted(result["tasks"].items(), key=lambda item: -item[1][1])[:top]
    old = base["tasks"] if base is not None else {}
    lines = [f"{'task':<78} {'steps/s':>8} {'ms/s':>7} {'spawn/s':>8}" + ("  base ms/s" if base else "")]
    for name, (steps, cpu, spawned) in rows:
        line = f"{name[-78:]:<78} {steps:8.2f} {cpu * 1000:7.3f} {spawned:8.3f}"
        if base is not None:
            line += f"  {old.get(name, [0, 0.0, 0])[1] * 1000:9.3f}"
        lines.append(line)
    lines.append(
        f"per node: process CPU {result['cpu_ms']:.2f} ms/s, task steps {result['steps_ms']:.2f} ms/s, "
        f"I/O waits {result['waits']:.1f}/s ({result['nodes']} nodes)"
        + (f"; baseline {base['cpu_ms']:.2f}, {base['steps_ms']:.2f} ms/s, {base['waits']:.1f}/s" if base else "")
    )
    if "mesh" in result:
        lines.append("per node and second: " + ", ".join(f"{key} {value:.3f}" for key, value in result["mesh"].items()))
    if base is not None and "mesh" in base:
        lines.append("baseline:            " + ", ".join(f"{key} {value:.3f}" for key, value in base["mesh"].items()))
    return "\n".join(lines)


def main() -> None:
    import argparse
    import subprocess

    from benchmarks.catchup import source_at

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds counted")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds idled after the mesh formed, uncounted")
    parser.add_argument("--top", type=int, default=25, help="task names printed")
    parser.add_argument("--node-arg", action="append", default=[], metavar="ARG", help="`cmnode run` argument")
    parser.add_argument("--baseline", metavar="REF", help="first the same run with the nodes at this git revision")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    node_args = tuple(args.node_arg)
    base = None
    if args.baseline:
        with source_at(args.baseline) as old:
            base = profile(args.nodes, args.idle, node_args, old, args.settle)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = profile(args.nodes, args.idle, node_args, None, args.settle)
    if args.json:
        print(json.dumps({"result": result, "baseline": base, "load": load}))
        return
    print(report(result, args.top, base))
    print(f"load before this tree's run: {load}")


if __name__ == "__main__":
    main()
