"""Past one machine: a cluster of hundreds of nodes simulated in one process, next to docs/scaling.md's formulas.

    .venv/bin/python -m benchmarks.simulate [--nodes 200 1000] [--jobs 20] [--replicas 3] [--all-jobs 1]

Per N: the connections and gossipsub mesh as cmnode and py-libp2p build them (``benchmarks/sim/topology.py``);
every node with its own real store, merge and placement (``benchmarks/sim/cluster.py``) in a temporary
directory; ``--jobs`` jobs with ``replicas`` placement and ``--all-jobs`` with ``all`` created on random nodes,
gossiped and merged on every node, run where the real placement says, their executions (as the executor
publishes them on FakeRuntime) gossiped and merged too. Then a fresh node catches up from one of them with the
real ``Sync``. It prints, with the formula's value and the ratio simulated/formula: gossip transmissions per job
(total and per node), bytes stored per node per job, node-record traffic per node, IHAVE traffic, anti-entropy
rounds per interval, and catch-up time. The parameters are read from the code (``benchmarks/sim/params.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio

from benchmarks.sim import formulas as f
from benchmarks.sim.cluster import Cluster, Counts, cluster_of, lifecycle, store_bytes
from benchmarks.sim.measure import RecordCost, catch_up, fill, periodic_rounds, record_cost, record_of
from benchmarks.sim.params import Fixed, Params, current, new_identity
from benchmarks.sim.topology import Topology
from node.allocation import Allocation, sign_allocation
from node.model import Execution, Job, JobSpec, Placement
from node.registry import Registry
from node.store import Store
from node.sync import Sync
from node.trust import sign_execution

YEAR_OF_JOBS = 100_000
FLOOD_SAMPLE = 100
"""Origins whose node-record floods are counted (every origin costs about the same)."""
CALIBRATION_JOBS = 1_000


@dataclass
class Row:
    name: str
    simulated: float | None
    formula: float | None
    unit: str = ""
    compare: bool = True
    """False: the two columns are two figures, not a simulation and its formula."""

    @property
    def ratio(self) -> float | None:
        if not self.compare or self.simulated is None or not self.formula:
            return None
        return self.simulated / self.formula


@dataclass
class Report:
    n: int
    facts: dict[str, float] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def add(self, name: str, simulated: float | None, formula: float | None, unit: str = "") -> None:
        self.rows.append(Row(name, simulated, formula, unit))

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)


@dataclass(frozen=True)
class Settings:
    jobs: int = 20
    replicas: int = 3
    all_jobs: int = 1
    seed: int = 1


async def calibrate(
    template: list[Execution], directory: Path, jobs: int = CALIBRATION_JOBS, repeat: int = 2
) -> tuple[float, float]:
    """The catch-up rate (rows a second) of a joiner taking ``jobs`` jobs with three executions each, the best of
    ``repeat`` joins (other work on the machine only adds to it); and its fixed cost, taken as nil (a round trip
    in process)."""
    runners = [new_identity() for _ in range(3)]
    async with Store.open(directory / "calibration.db", durable=False) as store:
        rows = await fill(store, runners[0], runners, jobs, template[-1])
        best = float("inf")
        for attempt in range(repeat):
            seconds, got = await catch_up(store, directory / f"calibration-joiner{attempt}.db")
            assert got == rows, (got, rows)
            best = min(best, seconds)
    return rows / best, 0.0


@dataclass(frozen=True)
class Round:
    """An anti-entropy round between two up-to-date nodes, one page, measured on the real ``Sync`` (the
    request/response streams of py-libp2p not included)."""

    bytes: int
    serve: float
    """Seconds of the server's CPU to build the page."""
    take: float
    """Seconds of the asker's CPU to check and merge it."""


async def sync_round(cluster: Cluster, params: Params, *, records: bool) -> Round:
    """An empty page, or (``records``) the first page of a round asked with ``"nodes": true``: every node record."""
    server, asker = cluster.nodes[0], cluster.nodes[1]
    registry = Registry(node_id=server.id, heartbeat=params.record_interval)
    for i, other in enumerate(cluster.nodes):
        registry.on_record(record_of(other.identity, i, params.record_interval))
    sync = Sync(store=server.store, inbound=server.replica, identity=server.identity, directory=registry)  # type: ignore[arg-type]
    began = time.perf_counter()
    answer = await sync.serve({"since": server.store.head, **({"nodes": True} if records else {})})
    size = len(json.dumps(answer, separators=(",", ":")))
    serve = time.perf_counter() - began
    theirs = Registry(node_id=asker.id, heartbeat=params.record_interval)
    taker = Sync(store=asker.store, inbound=asker.replica, identity=asker.identity, directory=theirs)  # type: ignore[arg-type]
    wire = json.loads(json.dumps(answer))
    began = time.perf_counter()
    await taker.apply_page(wire, asker.store.head)
    take = time.perf_counter() - began
    return Round(bytes=size, serve=serve, take=take)


async def simulate(n: int, s: Settings, params: Params, template: list[Execution], rate: tuple[float, float],
                   record: RecordCost) -> Report:  # fmt: skip
    rng = random.Random(s.seed)
    report = Report(n)
    began = time.perf_counter()
    topo = Topology(n, params, rng)
    d, c = topo.mean_degree, topo.mean_connections
    versions = len(template)
    report.facts.update(connections=c, max_connections=max(len(x) for x in topo.conns), degree=d,
                        hops=max(topo.flood(o).hops for o in range(min(n, 20))),
                        mean_hops=statistics.mean(topo.flood(o).mean_hops for o in range(min(n, 20))),
                        reached=min(topo.flood(o).reached for o in range(min(n, 20))),
                        refused_by_seed=topo.refused_by_seed)  # fmt: skip
    most = params.peer_max
    report.add("connections a node seeks (trimmed above)", params.peer_target(n), None if most is None else most(n))
    report.rows[-1].compare = False
    report.add("connections per node, mean", c, None)
    report.add("mesh degree d, mean", d, None)
    report.add("hops to a node, mean", report.facts["mean_hops"], f.hops(n, d))
    report.add("IHAVE peers per node per heartbeat, mean", statistics.mean(topo.ihave_peers(i) for i in range(n)),
               f.ihave_peers(c - d, params.gossip_peers))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cmnode-sim-") as tmp:
        async with cluster_of(topo, Path(tmp), template) as cluster:
            sample = sorted({1, n // 2, n - 1})
            before = [await store_bytes(cluster.nodes[i].store) for i in sample]
            kinds = []
            if s.jobs:
                kinds.append((f"replicas={s.replicas}", Placement(mode="replicas", replicas=s.replicas), s.jobs,
                              min(s.replicas, n)))  # fmt: skip
            if s.all_jobs:
                kinds.append(("all", Placement(), s.all_jobs, n))
            for name, placement, count, runners in kinds:
                counts = Counts()
                for _ in range(count):
                    await cluster.create(cluster.nodes[rng.randrange(n)], placement, counts)
                after = [await store_bytes(cluster.nodes[i].store) for i in sample]
                m = f.job_messages(runners, versions, placement.mode == "replicas")
                report.add(f"gossip messages published per job ({name})", counts.published / count, m)
                report.add(f"gossip transmissions per job ({name})", counts.total / count, f.gossip_per_job(n, d, m))
                report.add(f"  received per node per job ({name})", statistics.mean(counts.received) / count,
                           f.gossip_per_job(n, d, m) / n)  # fmt: skip
                grown = statistics.mean(a - b for a, b in zip(after, before, strict=True)) / count
                report.add(f"bytes stored per node per job ({name})", grown,
                           _stored(template, runners, placement.mode == "replicas"), "B")  # fmt: skip
                before = after
            light = await sync_round(cluster, params, records=False)
            full = await sync_round(cluster, params, records=True)
            joins = [await catch_up(cluster.nodes[0].store, Path(tmp) / f"joiner{i}.db") for i in range(2)]
            joined_s, rows = min(joins)  # the better of two: other work on the machine only adds to it
    _records(report, topo, params, record, rng)
    _anti_entropy(report, topo, params, light, full, rng)
    speed, fixed = rate
    report.add("rows a joiner stores", rows, None)
    report.add("catch-up of those rows (s)", joined_s, f.catch_up_seconds(rows, speed, fixed))
    year = YEAR_OF_JOBS * (2 + s.replicas)
    report.add(f"catch-up of {YEAR_OF_JOBS:,} replicas={s.replicas} jobs (s)", None,
               f.catch_up_seconds(year, speed, fixed))  # fmt: skip
    report.add(f"catch-up of {YEAR_OF_JOBS:,} 'all' jobs (s)", None,
               f.catch_up_seconds(YEAR_OF_JOBS * (1 + n), speed, fixed))  # fmt: skip
    report.facts["seconds"] = time.perf_counter() - began
    return report


def _records(report: Report, topo: Topology, params: Params, record: RecordCost, rng: random.Random) -> None:
    """Node records, the copies of a sample of origins' floods counted: at idle (records that say nothing new
    spaced out, ``node/heartbeat.py``) and busy (every node's load changing: one every ``--heartbeat``)."""
    n, d = topo.n, topo.mean_degree
    origins = rng.sample(range(n), min(n, FLOOD_SAMPLE))
    per_record = statistics.mean(topo.flood(o).total for o in origins) / n  # copies each node receives
    idle = f.record_interval_at(n, params.record_refresh or params.record_interval, params.nodes_per_beat,
                                params.record_cap)  # fmt: skip
    report.add("a silent node is down after (s, idle)", None, f.DOWN_AFTER * idle)
    mean_ihave = f.ihave_peers(topo.mean_connections - d, params.gossip_peers)
    for kind, h in (("idle", idle), ("busy", params.record_interval)):
        copies_s = per_record * n / h
        formula = f.record_copies_per_second(n, d, h)
        report.add(f"node-record copies received per node per s ({kind})", copies_s, formula)
        report.add(f"node-record bytes received per node per s ({kind})", copies_s * record.wire_bytes,
                   formula * record.wire_bytes, "B")  # fmt: skip
        report.add(f"node-record CPU per node (% of a core, {kind})", None, 100 * n / h * record.seconds)
        window = n / h * params.gossip_window * params.gossip_heartbeat
        ihave = [topo.ihave_peers(i) * window * f.ID_HEX_BYTES / params.gossip_heartbeat for i in range(n)]
        report.add(
            f"IHAVE bytes sent per node per s ({kind}, mean)",
            statistics.mean(ihave),
            f.ihave_bytes_per_second(mean_ihave, n, h, params.gossip_window, params.gossip_heartbeat),
            "B",
        )
        report.add(f"IHAVE bytes sent per s ({kind}, busiest node)", max(ihave), None, "B")


def _anti_entropy(report: Report, topo: Topology, params: Params, light: Round, full: Round,
                  rng: random.Random) -> None:  # fmt: skip
    """One idle anti-entropy interval: rounds as the real scheduler starts them, bytes and CPU as measured."""
    n, c = topo.n, topo.mean_connections
    real = periodic_rounds(topo.conns, rng, params.sync_peers) if params.sync_peers is not None else None
    asked, served = real or topo.anti_entropy(rng)  # the real scheduler has no "every peer" any more
    k, interval = params.sync_peers, params.sync_interval
    share = f.records_share(c, k, interval, params.records_every)
    report.add("anti-entropy rounds per interval", sum(served), f.anti_entropy_rounds(n, c, k))
    report.add("  rounds served per interval, busiest node", max(served), None)
    report.add("  bytes of an empty page (of one with the node records)", light.bytes, full.bytes, "B")
    report.rows[-1].compare = False
    per_round_bytes = (1 - share) * light.bytes + share * full.bytes
    report.add("  anti-entropy bytes served per node per s (mean)", statistics.mean(served) * per_round_bytes /
               interval, f.anti_entropy_per_node(n, c, k, light.bytes, full.bytes, share, interval), "B")  # fmt: skip
    report.add("  anti-entropy bytes served per s, busiest node", max(served) * per_round_bytes / interval, None, "B")
    cost = [
        (a * ((1 - share) * light.take + share * full.take) + v * ((1 - share) * light.serve + share * full.serve))
        / interval for a, v in zip(asked, served, strict=True)
    ]  # fmt: skip
    report.add("  anti-entropy CPU per node (% of a core, mean)", 100 * statistics.mean(cost),
               100 * f.anti_entropy_per_node(n, c, k, light.take + light.serve, full.take + full.serve, share,
                                             interval))  # fmt: skip
    report.add("  anti-entropy CPU, busiest node (% of a core)", 100 * max(cost), None)


def _stored(template: list[Execution], runners: int, replicas: bool) -> float:
    """The formula's bytes per job, from the bodies as the store writes them (``json.dumps`` of each record)."""
    origin = new_identity()
    job = Job(job_id=str(uuid.uuid4()), spec=JobSpec(image="busybox", arguments=("true",)), origin=origin.node_id,
              created_at=time.time())  # fmt: skip
    job = replace(job, signature=origin.sign(job.canonical_bytes()))
    execution = sign_execution(origin, replace(template[-1], job_id=job.job_id, node_id=origin.node_id))
    allocation = 0.0
    if replicas:
        nodes = tuple(new_identity().node_id for _ in range(runners))
        signed = sign_allocation(origin, Allocation(job_id=job.job_id, version=1, replicas=runners, nodes=nodes,
                                                    by=origin.node_id, at=time.time()))  # fmt: skip
        allocation = f.allocation_row_bytes(len(json.dumps(signed.to_json())))
    job_row = f.job_row_bytes(len(json.dumps(job.to_json())))
    return f.stored_per_job(job_row, f.execution_row_bytes(len(json.dumps(execution.to_json()))), allocation, runners)


def show(report: Report, params: Params) -> None:
    facts = report.facts
    print(f"\nN = {report.n}: connections mean {facts['connections']:.1f}, max {facts['max_connections']:.0f}; "
          f"mesh degree d = {facts['degree']:.2f}; a message reaches {facts['reached']:.0f} nodes in "
          f"{facts['mean_hops']:.1f} hops on average, {facts['hops']:.0f} at most; "
          f"{facts['refused_by_seed']:.0f} nodes found the bootstrap node full "
          f"({params.inbound_cap} inbound); simulated in {facts['seconds']:.0f} s")  # fmt: skip
    print(f"  {'figure':<52} {'simulated':>13} {'formula':>13} {'ratio':>6}")
    for row in report.rows:
        sim = "" if row.simulated is None else _fmt(row.simulated)
        formula = "" if row.formula is None else _fmt(row.formula)
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        print(f"  {row.name:<52} {sim:>13} {formula:>13} {ratio:>6}")


def markdown(reports: list[Report]) -> str:
    """The figures of every size as one Markdown table (docs/scaling.md), simulated (formula) per column."""
    head = "| figure | " + " | ".join(f"N = {r.n:,}" for r in reports) + " |"
    lines = [head, "|---|" + "---|" * len(reports)]
    for i, row in enumerate(reports[0].rows):
        cells = []
        for report in reports:
            other = report.rows[i]
            shown = [_fmt(v) for v in (other.simulated, other.formula) if v is not None]
            cells.append(f"{shown[0]} ({shown[1]})" if len(shown) == 2 else shown[0])
        lines.append(f"| {row.name.strip()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}"


async def main(
    sizes: list[int],
    s: Settings,
    *,
    calibration: int = CALIBRATION_JOBS,
    quiet: bool = False,
    overrides: dict[str, str] | None = None,
    markdown_table: bool = False,
) -> list[Report]:
    """Simulate each size in ``sizes`` and print its figures (unless ``quiet``); returns the reports.
    ``overrides``: parameters to set instead of the code's (``--set NAME=VALUE``)."""
    params = override(current(), overrides or {})
    template = await lifecycle()
    with tempfile.TemporaryDirectory(prefix="cmnode-sim-") as tmp:
        rate = await calibrate(template, Path(tmp), calibration)
    record = await record_cost(params.record_interval)
    if quiet:
        return [await simulate(n, s, params, template, rate, record) for n in sizes]
    print(
        f"parameters ({'from the code' if not overrides else 'the code, with ' + ', '.join(overrides)}): "
        f"D={params.degree} D_lo={params.degree_low} D_hi={params.degree_high}, "
        f"gossipsub heartbeat {params.gossip_heartbeat:g} s, IHAVE window {params.gossip_window} heartbeats; "
        f"node record every {params.record_interval:g} s"
        f"{'' if params.nodes_per_beat is None else f' (idle: spaced out beyond {params.nodes_per_beat} nodes)'}; "
        f"connections sought (trimmed above): {_per_size(params, sizes)}; "
        f"anti-entropy every {params.sync_interval:g} s with "
        f"{'every connected peer' if params.sync_peers is None else f'{params.sync_peers} random peers'}, node "
        f"records in a round {'always' if params.records_every is None else f'once per {params.records_every:g} s'}"
    )
    print(
        f"measured: a run publishes {len(template)} execution versions "
        f"({', '.join(e.state.value for e in template)}); a node record is {record.wire_bytes:.0f} B on the wire "
        f"and costs {record.seconds * 1e3:.2f} ms of CPU to take in; catch-up runs at {rate[0]:,.0f} rows/s"
    )
    reports = []
    for n in sizes:
        report = await simulate(n, s, params, template, rate, record)
        show(report, params)
        reports.append(report)
    if markdown_table:
        print("\n" + markdown(reports))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the simulation: {peak:.0f} MB")
    return reports


def _per_size(params: Params, sizes: list[int]) -> str:
    """The connection target and ceiling at each simulated size, e.g. ``N=200: 6 (12)``."""
    most = params.peer_max
    return ", ".join(f"N={n}: {params.peer_target(n)} ({'-' if most is None else most(n)})" for n in sizes)


def override(params: Params, overrides: dict[str, str]) -> Params:
    """``params`` with some fields set from text (``none``: None), to see what another setting would cost; a
    number for a function of the cluster's size (``peer_target``, ``peer_max``, ``gossip_peers``) is that number
    at every size.

    Raises:
        SystemExit: an unknown parameter name.
    """
    changes: dict[str, object] = {}
    for name, text in overrides.items():
        if name not in params.__dataclass_fields__:
            raise SystemExit(f"--set {name}: not a parameter (one of {', '.join(params.__dataclass_fields__)})")
        current_value = getattr(params, name)
        if text.lower() == "none":
            changes[name] = None
        elif callable(current_value) or name == "peer_max":
            changes[name] = Fixed(int(text))
        elif isinstance(current_value, int) or name == "sync_peers":
            changes[name] = int(text)
        else:
            changes[name] = float(text)
    return replace(params, **changes)  # type: ignore[arg-type]


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--jobs", type=int, default=20, help="jobs placed with replicas")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--all-jobs", type=int, default=1, help="jobs placed on all nodes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter instead of the code's, e.g. peer_target=2, sync_peers=none")  # fmt: skip
    parser.add_argument("--markdown", action="store_true", help="also print the figures as one Markdown table")
    args = parser.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    settings = Settings(jobs=args.jobs, replicas=args.replicas, all_jobs=args.all_jobs, seed=args.seed)
    trio.run(partial(main, args.nodes, settings, overrides=overrides, markdown_table=args.markdown))


if __name__ == "__main__":
    cli()
