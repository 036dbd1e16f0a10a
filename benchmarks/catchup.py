"""Catch-up benchmark: a node whose store holds a year of jobs, and a fresh node joining it.

    .venv/bin/python -m benchmarks.catchup [--jobs 100000] [--baseline REF] [--old-joiner REF]

The sender's store is filled directly (through ``Store.add_jobs``, not RPC): ``--jobs`` finished jobs accepted by
three nodes in turn, each signed by its origin, each with one finished execution by one of the three nodes (the
sender's own unsigned, as the node keeps them; the others signed by their node). Filling is not measured; the
filled store is kept under /tmp and copied for each run. Then a real ``cmnode run`` serves that store and a
fresh ``cmnode run --bootstrap <sender>`` joins it. Figures:

* the time from the joiner's launch until its store holds every job and execution (target <= 30 s), and jobs/s;
* both processes' peak RSS (VmHWM);
* the sender's RPC latency (``NodeService.Info`` every 50 ms) while it serves: p50/p99 (target p99 <= 100 ms).

``--baseline REF`` first runs the same measurement with both nodes at git revision REF (``git archive``, run from
a temporary directory: e.g. the commit before the catch-up work, with its 200-job pages) and prints each figure's
ratio to it. ``--old-joiner REF`` runs the joiner at REF against today's sender: an older node still catches up.
Both nodes point at a Docker socket that does not exist: the jobs are finished, nothing is to run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import trio

from benchmarks.common import IMAGE, LoggedNode, call, median, pct
from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.store import Store
from node.trust import sign_execution

NO_DOCKER = "unix:///nonexistent/cmnode-bench/docker.sock"
ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0
TARGET_RPC_P99_MS = 100.0
PROBE_INTERVAL = 0.05
FILL_BATCH = 5_000


# -- the sender's store ---------------------------------------------------------------------------


async def fill(data_dir: Path, others: list[Identity], jobs: int) -> None:
    """``jobs`` finished jobs, origins and executing nodes in turn among the sender and ``others``."""
    me = load_or_create(data_dir)
    nodes = [me, *others]
    async with Store.open(data_dir / "cmnode.db", durable=False) as store:
        # a year's worth of jobs by count, dated within the last day: the node's --job-retention (7 days by
        # default) would purge older ones as it starts
        base = time.time() - 86400
        step = 86400 / max(jobs, 1)
        for first in range(0, jobs, FILL_BATCH):
            batch: list[tuple[Job, Execution | None]] = []
            for i in range(first, min(jobs, first + FILL_BATCH)):
                origin, runner = nodes[i % 3], nodes[(i // 3) % 3]
                at = base + i * step
                spec = JobSpec(image=IMAGE, arguments=("true",), labels={"bench": str(i % 10)})
                job = Job(job_id=str(uuid.uuid4()), spec=spec, origin=origin.node_id, created_at=at)
                job = replace(job, signature=origin.sign(job.canonical_bytes()))
                state = State.COMPLETE if i % 5 else State.FAILED
                execution = Execution(
                    job_id=job.job_id, node_id=runner.node_id, state=state, attempt=1, exit_code=0 if i % 5 else 1,
                    created_at=at, updated_at=at + 1, version=4,
                )  # fmt: skip
                if runner is not me:  # a peer's execution arrived signed; this node keeps its own unsigned
                    execution = sign_execution(runner, execution)
                batch.append((job, execution))
            await store.add_jobs(batch)


def sender_template(jobs: int) -> Path:
    """A data-dir holding ``jobs`` jobs, made once and kept under /tmp (copy it before use: runs write to it)."""
    where = Path(tempfile.gettempdir()) / f"cmnode-bench-catchup-v2-{jobs}"
    if (where / "done").exists():
        return where
    shutil.rmtree(where, ignore_errors=True)
    begin = time.monotonic()
    others = [load_or_create(where / "peers" / name) for name in ("b", "c")]
    trio.run(fill, where / "data", others, jobs)
    (where / "done").write_text("")
    print(f"filled a store with {jobs} jobs in {time.monotonic() - begin:.1f} s (kept in {where})")
    return where


def _counts(db: Path, *, besides: str = "") -> tuple[int, int]:
    """Jobs, and executions by nodes other than ``besides``, in the store at ``db``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        executions = conn.execute("SELECT COUNT(*) FROM executions WHERE node_id != ?", (besides,)).fetchone()[0]
    finally:
        conn.close()
    return int(jobs), int(executions)


# -- processes ------------------------------------------------------------------------------------


def start_node(data: Path, code: Path, *flags: str) -> LoggedNode:
    """A ``cmnode run`` from source tree ``code``, its store in ``data/data``, with no Docker to reach."""
    return LoggedNode(data, "--docker-host", NO_DOCKER, "--log-level", "warning", *flags, code=code)


class Prober(threading.Thread):
    """``NodeService.Info`` against ``url`` every 50 ms; ``latencies`` in ms, kept while ``recording`` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.failures = 0
        self.recording = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.halt.is_set():
                begin = time.perf_counter()
                try:
                    call(http, self.url, "NodeService.Info")
                    took = (time.perf_counter() - begin) * 1000
                    if self.recording.is_set():
                        self.latencies.append(took)
                except Exception:
                    self.failures += 1
                self.halt.wait(max(0.0, PROBE_INTERVAL - (time.perf_counter() - begin)))


@contextmanager
def source_at(ref: str | None) -> Any:
    """The source tree at git revision ``ref`` (extracted with ``git archive``), or this one."""
    if ref is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="cmnode-bench-ref-") as where:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
        yield Path(where)


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    seconds: float
    after_ready: float
    jobs: int
    executions: int
    sender_rss: float
    joiner_rss: float
    sender_cpu: float
    joiner_cpu: float
    rpc_p50: float
    rpc_p99: float
    rpc_samples: int
    rerun: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def run_once(label: str, template: Path, sender_code: Path, joiner_code: Path, timeout: float) -> Result:
    expected = _counts(template / "data" / "cmnode.db")
    with tempfile.TemporaryDirectory(prefix="cmnode-bench-catchup-") as tmp, ExitStack() as stack:
        sender_dir, joiner_dir = Path(tmp) / "sender", Path(tmp) / "joiner"
        shutil.copytree(template / "data", sender_dir / "data")
        sender = start_node(sender_dir, sender_code)
        stack.callback(sender.stop)
        with httpx.Client(timeout=30) as http:
            addresses = call(http, sender.url, "NodeService.Info")["addresses"]
            prober = Prober(sender.url)
            prober.start()
            stack.callback(prober.halt.set)
            time.sleep(1.0)  # a few idle samples first, so the prober's connection is warm
            prober.recording.set()
            sender_cpu = sender.cpu_seconds()
            joiner = start_node(joiner_dir, joiner_code, "--bootstrap", addresses[0])
            stack.callback(joiner.stop)
            deadline = joiner.launched + timeout
            while True:
                mesh = call(http, joiner.url, "NodeService.Info")["mesh"]
                if mesh.get("sync_jobs", 0) >= expected[0] and mesh.get("sync_executions", 0) >= expected[1]:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{label}: not caught up after {timeout:.0f} s: {mesh}")
                time.sleep(0.1)
            done = time.monotonic()
            prober.recording.clear()
        sender_rss, joiner_rss = sender.peak_rss_mb(), joiner.peak_rss_mb()
        sender_cpu, joiner_cpu = sender.cpu_seconds() - sender_cpu, joiner.cpu_seconds()
        joiner.stop()
        got = _counts(joiner.data_dir / "cmnode.db", besides=joiner.node_id)
        if got != expected:
            raise SystemExit(f"{label}: the joiner holds {got} (jobs, executions), the sender {expected}")
        rerun = _counts(joiner.data_dir / "cmnode.db")[1] - got[1]  # finished jobs the joiner took for active
    latencies = prober.latencies or [float("nan")]
    return Result(
        label=label,
        seconds=done - joiner.launched,
        after_ready=done - joiner.ready,
        jobs=expected[0],
        executions=expected[1],
        sender_rss=sender_rss,
        joiner_rss=joiner_rss,
        sender_cpu=sender_cpu,
        joiner_cpu=joiner_cpu,
        rpc_p50=median(latencies),
        rpc_p99=pct(latencies, 99),
        rpc_samples=len(prober.latencies),
        rerun=rerun,
    )


def report(result: Result, baseline: Result | None) -> None:
    def ratio(value: float, base: float) -> str:
        return f"   {value / base:5.2f}x baseline" if baseline is not None and base > 0 else ""

    b = baseline
    ok_time = "ok" if result.seconds <= TARGET_SECONDS else "MISSED"
    ok_rpc = "ok" if result.rpc_p99 <= TARGET_RPC_P99_MS else "MISSED"
    print(f"{result.label}: {result.jobs} jobs and {result.executions} executions")
    print(f"  caught up        {result.seconds:7.1f} s from launch ({result.after_ready:.1f} s after ready)"
          f"   target <= {TARGET_SECONDS:.0f} s {ok_time}{ratio(result.seconds, b.seconds if b else 0)}")  # fmt: skip
    print(f"  rate             {result.rate:7.0f} jobs/s{ratio(result.rate, b.rate if b else 0)}")
    print(f"  sender RPC       p50 {result.rpc_p50:5.1f} ms  p99 {result.rpc_p99:6.1f} ms"
          f" ({result.rpc_samples} samples)   target p99 <= {TARGET_RPC_P99_MS:.0f} ms {ok_rpc}"
          f"{ratio(result.rpc_p99, b.rpc_p99 if b else 0)}")  # fmt: skip
    print(f"  peak RSS         sender {result.sender_rss:5.0f} MB   joiner {result.joiner_rss:5.0f} MB"
          f"{ratio(result.joiner_rss, b.joiner_rss if b else 0)}")  # fmt: skip
    print(f"  CPU time         sender {result.sender_cpu:5.1f} s    joiner {result.joiner_cpu:5.1f} s (from launch)"
          f"{ratio(result.joiner_cpu, b.joiner_cpu if b else 0)}")  # fmt: skip
    print(f"  finished jobs the joiner ran again: {result.rerun} (target 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--baseline", metavar="REF", help="first run both nodes at this git revision")
    parser.add_argument("--old-joiner", metavar="REF", help="also run a joiner at this git revision")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(f"cmnode catch-up benchmark ({os.cpu_count()} CPUs)")
    template = sender_template(args.jobs)
    baseline = None
    if args.baseline:
        with source_at(args.baseline) as old:
            baseline = run_once(f"baseline ({args.baseline})", template, old, old, args.timeout)
        report(baseline, None)
    result = run_once("this tree", template, ROOT, ROOT, args.timeout)
    report(result, baseline)
    if args.old_joiner:
        with source_at(args.old_joiner) as old:
            mixed = run_once(f"joiner at {args.old_joiner}, sender this tree", template, ROOT, old, args.timeout)
        report(mixed, None)


if __name__ == "__main__":
    main()
