"""Soak: 10,000 trivial jobs through a 3-node cluster of ``cmnode run`` processes, watching for leaks.

    .venv/bin/python -m benchmarks.soak                       # 10,000 jobs, about 10 minutes
    .venv/bin/python -m benchmarks.soak --jobs 300 --job-retention 10s   # a short run while developing

Three nodes on loopback (mDNS off), the second and third bootstrapping through the first, with a short
``--job-retention`` (default 60 s) so that purging (node/purge.py) runs all along, and ``--retention 5`` so
finished containers go 5 s after they exit (node/retention.py). Jobs are created round robin on the three nodes at
``--rate`` per second (default 20: 10,000 in about 8 minutes, then the retention and a few purge passes to settle).

How the 10,000 are reached: a real container costs the engine ~0.3 s here, so 10,000 of them would take far
longer than 10 minutes. A job runs a real container (``true`` in cmnode-test/busybox, ``placement: replicas: 1``
so it runs once in the cluster, through the allocation and the rescheduler) whenever fewer than
``--real-in-flight`` (default 4) real jobs are unfinished: as many as the engine allows. Every other job is
placed on one node by name (``{"nodes": [...]}``, round robin) with an image that is absent and pull ``never``:
that node fails it at once and makes no container. Each is still created, signed, gossiped to all three nodes,
stored, queued, executed up to the image check, recorded final, gossiped again and purged after the retention:
everything but the container. The real count is printed.

Every ``--sample-every`` seconds each node's ``/metrics`` is read (node/metrics.py): RSS and open file
descriptors (``process_*``), trio tasks, the store's db and WAL bytes and its rows per table, the purge's
counters. After the last job, the run waits for the retention to pass and the purge to drain, counts the
containers the nodes left on the engine, then stops them. Targets (exit 1 if one fails):

* RSS growth after warm-up (the first ``--warmup`` of the jobs, default 20 %) <= 20 MB on every node;
* open fds, trio tasks, and the rows of jobs, executions, allocations, labels and logs bounded: their peak in
  the second half of the run (after warm-up) at most their peak in the first half plus a small slack, and the
  job rows back to what is not yet old enough to purge once the retention has passed;
* the idle cluster's trio tasks and fds after the last job, within a small slack of the idle cluster's before
  the first, the benchmark's own HTTP connections closed both times (each open one is a socket and a few tasks
  in the node's HTTP server, kept 75 s: the figures during the run include up to ``POOL`` of them). The tasks of
  libp2p connections are held apart (``CONNECTION_TASKS``): the connections may be more after a reconnection (the
  swarm bounds them per peer), so they are checked per connection, and the rest against the slack; the names
  whose count changed are printed. So are the connections to dockerd (``DOCKER_SOCKETS``), counted with ``ss``;
* zero leftover containers once the retention has passed.

Tombstones (one per purged job) are kept for ``max(4 x retention, 30 days)`` by design (node/tombstones.py):
their rows grow all along and are reported with their size, not held to a bound.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import trio
from docker.client import DockerClient  # not docker.DockerClient: mypy would take the repository's docker/ folder
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import IMAGE, LoggedNode
from node.duration import parse_duration

ABSENT = "cmnode-soak/absent:latest"
FINAL = {"complete", "failed", "cancelled", "lost", "rejected"}
BOUNDED_ROWS = ("jobs", "executions", "allocations", "job_labels", "logs")
RSS_TARGET = 20e6
CREATES = 16
"""Create calls in flight at once, at most."""
POOL = CREATES + 8
"""The benchmark's HTTP connections, at most (creates, Status of the real jobs, scrapes). Each open one is a
socket and a few tasks in the node's HTTP server, kept 75 s idle (rpc/server.py): the run's figures include them."""
SLACK = {"fds": POOL + 8.0, "tasks": 5.0 * POOL}
"""How much above the first half's peak the second half's may go: the benchmark's connections, a sync round's."""
IDLE_SLACK = {"fds": 12.0, "tasks": 8.0}
"""How much above the idle cluster's before the first job the idle cluster's after the last may be (the
benchmark's connections closed both times). Tasks: those of the node itself and of pubsub, not those of libp2p
connections (``CONNECTION_TASKS``, checked per connection): a leak of one task per 100 jobs would show as 100, one
per reconnection (pubsub's orphaned sending loop, fixed in node/host.py) as ~20. Fds: those not connected to
dockerd (``DOCKER_SOCKETS`` apart): one more libp2p connection per peer, an HTTP connection."""
DOCKER_SOCKETS = 60
"""The node's idle connections to dockerd, at most. The Docker SDK (docker/transport/unixconn.py) keeps one
connection pool per request URL, path and query included, up to 25 pools (least recently used first out), each
keeping the connections it opened: after the first containers, ~40-45 stay open (measured the same after 2,000
and 10,000 jobs), bounded by the 25 pools, not by the jobs. They open with the first containers, so they are
counted apart from the rest of the fds."""
CONNECTION_TASKS = ("libp2p.stream_muxer.", "libp2p.network.connection.", "start[daemon=", "node.host._cancel_when")
"""Task names (prefixes) that live as long as one libp2p connection: its muxer and its streams' handlers. Their
number follows the connections, which the swarm bounds (3 per peer: two nodes that dial each other at once keep
both connections), not the jobs: a cluster that reconnected during the run may end with one more connection per
pair than it began with, ~7 tasks on each end."""
RTT_LOOP = "libp2p.stream_muxer.yamux.yamux.Yamux._measure_rtt_loop"
"""One per libp2p connection: counts them."""
CONNECTIONS_PER_PEER = 3
"""py-libp2p's ``max_connections_per_peer``."""
STREAMS_SLACK = 4.0
"""Connection tasks per connection above the idle node's before: a stream opened for a catch-up round, a ping."""


@dataclass
class Sample:
    t: float
    jobs_created: int
    rss: float
    fds: float
    tasks: float
    db: float
    wal: float
    rows: dict[str, float]
    purged: float
    expired: float
    task_names: dict[str, float] = field(default_factory=dict)
    """Trio tasks alive by name (``cmnode_trio_tasks_by_name``): what the idle checks compare."""
    docker_sockets: float = float("nan")
    """The node's connections to dockerd (idle samples only; NaN where ``ss`` cannot say)."""


@dataclass
class SoakNode:
    name: str
    process: LoggedNode
    samples: list[Sample] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The node's base URL (LoggedNode's is that of /jrpc)."""
        return self.process.url.removesuffix("/jrpc")


@dataclass
class Run:
    nodes: list[SoakNode]
    http: httpx.AsyncClient
    created: int = 0
    real: int = 0
    real_busy: int = 0
    """Real jobs being created or not yet final."""
    failed_creates: int = 0
    started: float = field(default_factory=time.monotonic)
    idle: dict[str, tuple[Sample, Sample]] = field(default_factory=dict)
    """Per node, its sample while idle before the first job and after the last, no connection of ours open."""
    submitted_at: float = 0.0
    """Seconds from the start to the last job created."""


async def rpc(run: Run, node: SoakNode, method: str, params: Any) -> Any:
    body = (
        await run.http.post(node.url + "/jrpc", json={"jsonrpc": "2.0", "method": method, "params": [params], "id": 1})
    ).json()
    if "error" in body:
        raise RuntimeError(f"{method} on {node.name}: {body['error']}")
    return body["result"]


async def scrape(run: Run, node: SoakNode) -> None:
    text = (await run.http.get(node.url + "/metrics")).text
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    task_names: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
            if s.name == "cmnode_trio_tasks_by_name":
                task_names[s.labels["name"]] = s.value

    def get(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), float("nan"))

    rows = {table: get("cmnode_store_rows", table=table) for table in (*BOUNDED_ROWS, "tombstones")}
    node.samples.append(Sample(
        t=time.monotonic() - run.started, jobs_created=run.created, rss=get("process_resident_memory_bytes"),
        fds=get("process_open_fds"), tasks=get("cmnode_trio_tasks"), db=get("cmnode_store_bytes", file="db"),
        wal=get("cmnode_store_bytes", file="wal"), rows=rows, purged=get("cmnode_jobs_purged_total"),
        expired=get("cmnode_tombstones_expired_total"), task_names=task_names,
    ))  # fmt: skip


async def sample_all(run: Run) -> None:
    async with trio.open_nursery() as nursery:
        for node in run.nodes:
            nursery.start_soon(scrape, run, node)


async def sampler(run: Run, every: float) -> None:
    while True:
        await sample_all(run)
        await trio.sleep(every)


async def create(run: Run, on: SoakNode, spec: dict[str, Any]) -> str | None:
    try:
        job = await rpc(run, on, "ContainerService.Create", spec)
    except (RuntimeError, httpx.HTTPError) as exc:
        run.failed_creates += 1
        print(f"create failed: {exc}", file=sys.stderr)
        return None
    job_id: str = job["job_id"]
    return job_id


async def real_job(run: Run, on: SoakNode, slot: trio.Semaphore) -> None:
    """Create a real job and hold its place among the real ones until it is final (its Status, read on the node
    that created it)."""
    try:
        try:
            job_id = await create(run, on, {"image": IMAGE, "arguments": ["true"], "env": {},
                                            "placement": {"replicas": 1}})  # fmt: skip
        finally:
            slot.release()
        if job_id is None:
            run.real -= 1
            return
        with trio.move_on_after(120):  # a job stuck past this frees its place (and shows in the rows)
            while True:
                try:
                    status = await rpc(run, on, "ContainerService.Status", {"job_id": job_id})
                except (RuntimeError, httpx.HTTPError) as exc:
                    print(f"status failed: {exc}", file=sys.stderr)
                    break
                if status["status"] in FINAL:
                    break
                await trio.sleep(0.25)
    finally:
        run.real_busy -= 1


async def fast_job(run: Run, on: SoakNode, target: SoakNode, slot: trio.Semaphore) -> None:
    try:
        await create(run, on, {"image": ABSENT, "pull": "never", "arguments": [], "env": {},
                               "placement": {"nodes": [target.process.node_id]}})  # fmt: skip
    finally:
        slot.release()


async def submit(run: Run, jobs: int, rate: float, real_cap: int, deadline: float) -> None:
    """Create ``jobs`` jobs at ``rate`` per second, round robin, a real one whenever fewer than ``real_cap`` are
    unfinished; stops early at ``deadline`` (seconds since the start)."""
    creators = itertools.cycle(run.nodes)
    targets = itertools.cycle(run.nodes[1:] + run.nodes[:1])  # another node than the creator
    slot = trio.Semaphore(CREATES)
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(jobs):
            if time.monotonic() - run.started > deadline:
                print(f"submission stopped at the --duration bound after {i} jobs", file=sys.stderr)
                break
            await trio.sleep_until(begin + i / rate)
            await slot.acquire()  # a slow cluster slows the submission down rather than piling creates up
            on, target = next(creators), next(targets)
            run.created += 1
            if run.real_busy < real_cap:
                run.real += 1
                run.real_busy += 1
                nursery.start_soon(real_job, run, on, slot)
            else:
                nursery.start_soon(fast_job, run, on, target, slot)
        run.submitted_at = time.monotonic() - run.started


def leftovers(node_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The containers (running or not) the nodes labelled, still on the engine."""
    client = DockerClient.from_env(timeout=60)
    try:
        return [c for n in node_ids for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={n}"})]
    finally:
        client.close()


def remove(containers: list[dict[str, Any]]) -> None:
    client = DockerClient.from_env(timeout=60)
    try:
        for c in containers:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
    finally:
        client.close()


async def settle(run: Run, retention: float, interval: float, limit: float) -> tuple[float, list[dict[str, Any]]]:
    """After the last job: wait for the retention to pass on it and the purge to drain it, then until no
    container is left (at most ``limit`` seconds more); returns the seconds waited and what is left."""
    begin = time.monotonic()
    await trio.sleep(retention + 2 * interval)
    node_ids = [n.process.node_id for n in run.nodes]
    left = await trio.to_thread.run_sync(leftovers, node_ids)
    with trio.move_on_after(limit):
        while left or run.real_busy:
            await trio.sleep(1)
            left = await trio.to_thread.run_sync(leftovers, node_ids)
    await sample_all(run)
    return time.monotonic() - begin, left


async def idle_samples(run: Run) -> list[Sample]:
    """One sample per node through a fresh connection, the client's pool closed first (and the nodes given a
    moment to end their side of it), with its connections to dockerd counted."""
    await run.http.aclose()
    run.http = client()
    await trio.sleep(2)
    await sample_all(run)
    samples = [node.samples.pop() for node in run.nodes]
    counts = await trio.to_thread.run_sync(docker_sockets, [node.process.proc.pid for node in run.nodes])
    for sample, count in zip(samples, counts, strict=True):
        sample.docker_sockets = count
    return samples


def docker_sockets(pids: Sequence[int]) -> list[float]:
    """Per process, its unix sockets whose other end is dockerd's (``ss``: the daemon's end is named after its
    socket file); NaN for all when ``ss`` is missing or fails."""
    try:
        out = subprocess.run(["ss", "-xanp"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return [float("nan")] * len(pids)
    rows = [line.split() for line in out.splitlines()[1:]]
    daemon = {row[5] for row in rows if len(row) >= 8 and row[4].endswith("docker.sock")}
    return [float(sum(1 for row in rows if len(row) >= 9 and row[7] in daemon and f"pid={pid}," in row[8]))
            for pid in pids]  # fmt: skip


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL))


# -- the verdict -----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.lines.append(f"  {'PASS' if ok else 'FAIL'}  {what}")
        if not ok:
            self.failed.append(what)


GAUGES: dict[str, Callable[[Sample], float]] = {"fds": lambda s: s.fds, "tasks": lambda s: s.tasks}
"""The process gauges held to a bound during the run and compared while idle."""


def after_warmup(node: SoakNode, warm_jobs: int) -> list[Sample]:
    return [s for s in node.samples if s.jobs_created >= warm_jobs]


def halves(samples: list[Sample], end: float) -> tuple[list[Sample], list[Sample]]:
    """The samples up to the last job, split in two at their middle in time."""
    during = [s for s in samples if s.t <= end]
    if len(during) < 4:
        return during, during
    middle = (during[0].t + during[-1].t) / 2
    return [s for s in during if s.t <= middle], [s for s in during if s.t > middle]


def nan_to_0(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def idle_tasks(sample: Sample) -> tuple[float, float, float]:
    """The node's own tasks (pubsub's included), its libp2p connections' tasks, and its libp2p connections."""
    names = sample.task_names
    of_connections = sum(n for name, n in names.items() if name.startswith(CONNECTION_TASKS))
    return sample.tasks - of_connections, of_connections, names.get(RTT_LOOP, 0.0)


def task_diff(before: Sample, after: Sample) -> str:
    """The task names whose count differs between two samples, most changed first."""
    names = set(before.task_names) | set(after.task_names)
    diff = {n: after.task_names.get(n, 0) - before.task_names.get(n, 0) for n in names}
    changed = sorted((n for n in names if diff[n]), key=lambda n: (-abs(diff[n]), n))
    counts = (f"{n} {before.task_names.get(n, 0):.0f}->{after.task_names.get(n, 0):.0f}" for n in changed)
    return ", ".join(counts) or "none"


def report(run: Run, args: argparse.Namespace, retention: float, left: list[dict[str, Any]], waited: float) -> Verdict:
    v = Verdict()
    notes: list[str] = []
    warm_jobs = int(args.warmup * run.created)
    mb = 1e6
    print(f"\nsoak: {run.created:,} jobs ({run.real:,} real containers, {run.created - run.real:,} failed at once "
          f"on an absent image, {run.failed_creates} creates refused) through {len(run.nodes)} nodes in "
          f"{run.submitted_at:.0f} s ({run.created / max(run.submitted_at, 1e-9):.1f} jobs/s), job retention "
          f"{retention:g} s; settled {waited:.0f} s after the last job")  # fmt: skip
    print(f"{'node':5} {'RSS warm':>9} {'RSS end':>8} {'growth':>7} {'RSS max':>8} {'fds w/max/end':>14} "
          f"{'tasks w/max/end':>16} {'db+wal MB max/end':>18} {'jobs max/end':>13} {'exec end':>8} "
          f"{'tombs':>6} {'purged':>7}")  # fmt: skip
    for node in run.nodes:
        warm = after_warmup(node, warm_jobs)
        if not warm:
            v.check(False, f"{node.name}: no sample after warm-up")
            continue
        first, second = halves(warm, run.submitted_at)
        base, last = warm[0], node.samples[-1]
        growth = last.rss - base.rss
        rss_max = max(s.rss for s in warm)
        sizes = [s.db + s.wal for s in warm]
        jobs_max = max(s.rows["jobs"] for s in warm)
        print(f"{node.name:5} {base.rss / mb:8.1f}M {last.rss / mb:7.1f}M {growth / mb:+6.1f}M {rss_max / mb:7.1f}M "
              f"{base.fds:4.0f}/{max(s.fds for s in warm):4.0f}/{last.fds:4.0f} "
              f"{base.tasks:5.0f}/{max(s.tasks for s in warm):5.0f}/{last.tasks:4.0f} "
              f"{max(sizes) / mb:8.2f}/{sizes[-1] / mb:8.2f} {jobs_max:6.0f}/{last.rows['jobs']:6.0f} "
              f"{last.rows['executions']:8.0f} {last.rows['tombstones']:6.0f} {last.purged:7.0f}")  # fmt: skip
        v.check(max(growth, rss_max - base.rss) <= RSS_TARGET,
                f"{node.name}: RSS growth after warm-up {growth / mb:+.1f} MB (peak {(rss_max - base.rss) / mb:+.1f})"
                f" <= {RSS_TARGET / mb:.0f} MB")  # fmt: skip
        for name, get in GAUGES.items():
            a, b = max(map(get, first)), max(map(get, second))
            v.check(b <= a + SLACK[name] and get(last) <= a + SLACK[name],
                    f"{node.name}: {name} bounded: peak {a:.0f} then {b:.0f}, end {get(last):.0f}")  # fmt: skip
        for table in BOUNDED_ROWS:
            a = max(s.rows[table] for s in first)
            b = max(s.rows[table] for s in second)
            slack = 0.25 * a + 50
            v.check(b <= a + slack, f"{node.name}: {table} rows bounded: peak {a:.0f} then {b:.0f}")
        idle_before, idle_after = run.idle[node.name]
        fds_b, fds_a = (s.fds - nan_to_0(s.docker_sockets) for s in (idle_before, idle_after))
        v.check(fds_a <= fds_b + IDLE_SLACK["fds"] and nan_to_0(idle_after.docker_sockets) <= DOCKER_SOCKETS,
                f"{node.name}: fds of the idle node (not to dockerd) {fds_b:.0f} before the first job, {fds_a:.0f} "
                f"after the last; to dockerd {idle_before.docker_sockets:.0f} then {idle_after.docker_sockets:.0f} "
                f"(at most {DOCKER_SOCKETS}; all: {idle_before.fds:.0f}, {idle_after.fds:.0f})")  # fmt: skip
        (own_b, conn_b, n_b), (own_a, conn_a, n_a) = idle_tasks(idle_before), idle_tasks(idle_after)
        v.check(own_a <= own_b + IDLE_SLACK["tasks"],
                f"{node.name}: tasks of the idle node (not a connection's) {own_b:.0f} before the first job, "
                f"{own_a:.0f} after the last (all: {idle_before.tasks:.0f}, {idle_after.tasks:.0f})")  # fmt: skip
        peers = len(run.nodes) - 1
        v.check(n_a <= CONNECTIONS_PER_PEER * peers and conn_a / max(n_a, 1) <= conn_b / max(n_b, 1) + STREAMS_SLACK,
                f"{node.name}: libp2p connections of the idle node {n_b:.0f} then {n_a:.0f} (at most "
                f"{CONNECTIONS_PER_PEER} x {peers} peers), their tasks {conn_b:.0f} then {conn_a:.0f}")  # fmt: skip
        notes.append(f"  {node.name}: idle tasks by name, before -> after: {task_diff(idle_before, idle_after)}")
        v.check(
            last.rows["jobs"] <= 0.01 * run.created + 10,
            f"{node.name}: job rows after the retention {last.rows['jobs']:.0f} (of {run.created:,} jobs)",
        )
        a, b = max(s.db + s.wal for s in first), max(s.db + s.wal for s in second)
        notes.append(f"  {node.name}: store (db+wal) peak {a / mb:.2f} MB in the first half, {b / mb:.2f} MB in "
                     f"the second; at the end db {last.db / mb:.2f} MB + wal {last.wal / mb:.2f} MB holding "
                     f"{last.rows['tombstones']:.0f} tombstones (kept 30 days by design)")  # fmt: skip
    for note in notes:
        print(note)
    v.check(not left, f"leftover containers once the retention passed: {len(left)}")
    return v


# -- main --------------------------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, root: Path) -> int:
    retention = parse_duration(args.job_retention)
    interval = min(60.0, max(0.5, retention / 10))  # node/purge.py's pass interval
    flags = ("--job-retention", args.job_retention, "--retention", "5", "--log-level", "warning")
    first = LoggedNode(root / "n0", *flags)
    procs = [first]
    try:
        async with client() as http:
            info = (await http.post(first.url, json={"jsonrpc": "2.0", "method": "NodeService.Info",
                                                               "params": [], "id": 1})).json()["result"]  # fmt: skip
            for i in (1, 2):
                procs.append(LoggedNode(root / f"n{i}", *flags, "--bootstrap", info["addresses"][0]))
            run = Run([SoakNode(f"n{i}", p) for i, p in enumerate(procs)], http)

            async def peers(node: SoakNode) -> bool:
                listed = (await rpc(run, node, "NodeService.List", {}))["nodes"]
                return len(listed) == len(procs) and all(n["state"] == "ready" for n in listed)

            with trio.fail_after(60):
                for node in run.nodes:
                    while not await peers(node):
                        await trio.sleep(0.2)
            run.started = time.monotonic()
            before = await idle_samples(run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler, run, args.sample_every)
                await submit(run, args.jobs, args.rate, args.real_in_flight, args.duration)
                waited, left = await settle(run, retention, interval, limit=60 + 2 * retention)
                nursery.cancel_scope.cancel()
            after = await idle_samples(run)
            await run.http.aclose()
            run.idle = {n.name: (b, a) for n, b, a in zip(run.nodes, before, after, strict=True)}
            verdict = report(run, args, retention, left, waited)
            if args.out:
                Path(args.out).write_text(json.dumps({n.name: [s.__dict__ for s in n.samples] for n in run.nodes}))
            for line in verdict.lines:
                print(line)
            if left:
                names = ", ".join(f"{c['Names'][0].lstrip('/')} ({c['State']})" for c in left[:10])
                print(f"  left: {names}")
                await trio.to_thread.run_sync(remove, left)
            print("soak:", "PASS" if not verdict.failed else f"FAIL ({len(verdict.failed)})")
            return 1 if verdict.failed else 0
    finally:
        for p in procs:
            p.stop()
        await trio.to_thread.run_sync(remove, await trio.to_thread.run_sync(leftovers, [p.node_id for p in procs]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="jobs created per second (default 20)")
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="seconds after which no more jobs are created, whatever --jobs says (default 600)",
    )
    parser.add_argument("--job-retention", default="60s", help="the nodes' --job-retention (default 60s)")
    parser.add_argument("--real-in-flight", type=int, default=4, help="real container jobs unfinished at once")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between two reads of /metrics")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the jobs before RSS is a baseline")
    parser.add_argument("--out", help="write every sample here (JSON)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM (timeout) still stops the nodes
    with tempfile.TemporaryDirectory(prefix="cmnode-soak-") as tmp:
        return trio.run(soak, args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
