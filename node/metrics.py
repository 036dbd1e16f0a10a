"""A node's Prometheus metrics, served at ``GET /metrics`` in the text exposition format.

Each node has its own ``CollectorRegistry`` (never the global one), so several nodes can run in one
process, as they do in tests. RPC calls are counted as they happen (``on_call``, the Dispatcher's hook);
everything else is read from the node when scraped: jobs by status from the store, the queue and
workers from the executor, and the gossip counters from the mesh's ``stats()`` (``node/mesh.py``), whose
keys are those of ``MeshStatsSource``. A node without a mesh reports them as 0.

What shows a leak is here too (``benchmarks/soak.py`` watches it): the process's RSS and open file descriptors
(prometheus_client's standard ``process_*`` collector), the trio tasks alive (also by name, to tell a leak from a
bounded set such as one per peer), the store's file sizes and rows per
table, and the job purge's counters (``node/purge.py``). The first three are the process's: several nodes run in
one process (tests) share them.
"""

from __future__ import annotations

import collections
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import State

if TYPE_CHECKING:
    from .core import Node

PREFIX = "cmnode"
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds; most calls take about a millisecond, Logs from a peer up to its 30 s request bound."""
TABLES = ("jobs", "executions", "allocations", "logs", "job_labels", "tombstones", "meta")
"""The store's tables whose rows are counted (node/store.py, node/tombstones.py)."""
TASK_NAMES = 100
"""Distinct task names reported at most (the rest as ``other``): a node runs about 60."""


class MeshStatsSource(TypedDict, total=False):
    """The part of the mesh's ``stats()`` dict read here (``node/mesh.py``: ``Mesh.stats``)."""

    messages_in: int
    messages_out: int
    dropped: dict[str, int]
    peers: int
    sync_rounds: int
    sync_failures: int


class NodeMetrics:
    """The metrics of one node. Pass ``on_call`` to the Dispatcher and ``render`` to the HTTP server."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            f"{PREFIX}_rpc_requests",
            "JSON-RPC calls by method and outcome (code is 'ok' or the JSON-RPC error code).",
            ["method", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            f"{PREFIX}_rpc_request_duration_seconds",
            "Time to validate and run a JSON-RPC call, by method.",
            ["method"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self._jobs: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._tasks: collections.Counter[str] = collections.Counter()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_open_fds, CPU...
        self.registry.register(_Scraped(self))

    def on_call(self, method: str, seconds: float, error_code: int | None) -> None:
        """The Dispatcher's hook: one call to a known method finished."""
        self._requests.labels(method, "ok" if error_code is None else str(error_code)).inc()
        self._latency.labels(method).observe(seconds)

    async def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type; reads the store first (it is async, collectors are not)."""
        self._jobs = await self.node.store.count_by_status()
        self._rows = await self.node.store.query(_count_rows)
        self._tasks = trio_tasks_by_name()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def trio_tasks() -> int:
    """The tasks alive in this trio run (every nursery's children, from the root task down)."""
    return sum(trio_tasks_by_name().values())


def trio_tasks_by_name(limit: int = TASK_NAMES) -> collections.Counter[str]:
    """The tasks alive in this trio run by name (trio's: the function's module and qualified name), walked from
    the root task down through every nursery; past ``limit`` distinct names the rarest are counted as ``other``,
    so the metric's label set stays bounded."""
    root = trio.lowlevel.current_root_task()
    names: collections.Counter[str] = collections.Counter()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        names[task.name] += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    if len(names) > limit:
        kept = names.most_common(limit - 1)
        names = collections.Counter({**dict(kept), "other": names.total() - sum(n for _, n in kept)})
    return names


def store_files(db: Path) -> dict[str, int]:
    """Bytes of the database file and its write-ahead log (0 where absent)."""
    sizes = {}
    for name, path in (("db", db), ("wal", db.with_name(db.name + "-wal"))):
        try:
            sizes[name] = os.stat(path).st_size
        except OSError:
            sizes[name] = 0
    return sizes


def _count_rows(conn: sqlite3.Connection) -> dict[str, int]:
    rows = {}
    for table in TABLES:
        try:
            rows[table] = int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        except sqlite3.Error:  # a table an older store lacks
            rows[table] = 0
    return rows


class _Scraped(Collector):
    """Values read from the node at scrape time rather than counted here."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        node = self._metrics.node
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs this node knows, by status.", labels=["status"])
        counts = self._metrics._jobs
        for state in State:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs

        load = node.executor.load()
        yield _gauge("queue_depth", "Jobs waiting for a worker (or reserved for one).", load.queue_depth)
        yield _gauge("queue_size", "Capacity of the job queue (--queue-size).", load.queue_size)
        yield _gauge("workers_busy", "Workers running an attempt now.", load.busy)
        yield _gauge("workers", "Workers (--worker-count).", load.workers)
        yield _gauge("docker_up", "1 when the Docker daemon answers, else 0.", load.docker_error is None)
        refused = CounterMetricFamily(
            f"{PREFIX}_peer_jobs_refused", "Peers' jobs refused here (rate, full queue), by reason.", labels=["reason"]
        )
        for reason, count in sorted(load.peer_jobs_refused.items()):
            refused.add_metric([reason], count)
        yield refused

        stats = _mesh_stats(node.mesh.stats)
        yield _counter("gossip_messages_received", "Gossip messages received.", stats.get("messages_in", 0))
        yield _counter("gossip_messages_sent", "Gossip messages published.", stats.get("messages_out", 0))
        dropped = CounterMetricFamily(
            f"{PREFIX}_gossip_messages_dropped", "Gossip messages dropped, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.get("dropped", {}).items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield _gauge("peers_connected", "Peers this node has a connection to.", stats.get("peers", 0))
        yield _counter("sync_rounds", "Catch-up rounds with peers.", stats.get("sync_rounds", 0))
        yield _counter("sync_failures", "Catch-up rounds that failed.", stats.get("sync_failures", 0))

        tasks = self._metrics._tasks
        yield _gauge("trio_tasks", "Trio tasks alive in this process.", tasks.total())
        by_name = GaugeMetricFamily(
            f"{PREFIX}_trio_tasks_by_name", "Trio tasks alive in this process, by task name.", labels=["name"]
        )
        for name, count in sorted(tasks.items()):
            by_name.add_metric([name], count)
        yield by_name
        sizes = GaugeMetricFamily(f"{PREFIX}_store_bytes", "Size of the store's files (db, wal).", labels=["file"])
        for name, size in store_files(node.config.db_path).items():
            sizes.add_metric([name], size)
        yield sizes
        rows = GaugeMetricFamily(f"{PREFIX}_store_rows", "Rows in the store, by table.", labels=["table"])
        for table, count in self._metrics._rows.items():
            rows.add_metric([table], count)
        yield rows
        purge = node.purge.stats
        yield _counter("purge_passes", "Passes of the job purge (--job-retention).", purge.passes)
        yield _counter("jobs_purged", "Finished jobs purged after --job-retention.", purge.purged)
        yield _counter("tombstones_expired", "Tombstones of purged jobs expired.", purge.expired)
        yield _counter("purge_containers_removed", "Containers removed with their purged jobs.", purge.containers)


def _mesh_stats(source: Callable[[], Mapping[str, Any]]) -> MeshStatsSource:
    """The mesh's counters; a missing or failing source reads as all zero (metrics must never fail a scrape)."""
    try:
        stats = dict(source())
    except Exception:
        return {}
    out: MeshStatsSource = {}
    for key in ("messages_in", "messages_out", "peers", "sync_rounds", "sync_failures"):
        value = stats.get(key)
        if isinstance(value, int):
            out[key] = value  # type: ignore[literal-required]
    dropped = stats.get("dropped")
    if isinstance(dropped, dict):
        out["dropped"] = {str(k): int(v) for k, v in dropped.items() if isinstance(v, int)}
    return out


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=float(value))
