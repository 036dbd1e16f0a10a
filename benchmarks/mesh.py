"""Mesh benchmark: N ``cmnode run`` processes on loopback against N bare py-libp2p gossipsub processes.

    .venv/bin/python -m benchmarks.mesh [--nodes 3 10] [--samples 100] [--rates 10] [--idle 0]
    .venv/bin/python -m benchmarks.mesh --nodes 30 --rates 1 10 --samples 30 --idle 60 --sequential
    .venv/bin/python -m benchmarks.mesh --nodes 30 --rates 1 10 --samples 30 --idle 60 --cmnode-only --baseline main
    .venv/bin/python -m benchmarks.mesh --nodes 30 --rates 1 --samples 10 --idle 180 --settle 60 --cmnode-only
    .venv/bin/python -m benchmarks.mesh --swarm-key [--nodes 3] ...   a private mesh against an open one

For each N, both sides get the same topology (the connections the cmnode nodes made: each bootstraps through the
first and meets a few others by peer exchange; the bare processes then dial the same pairs) and the same
gossipsub settings (node/host.py). cmnode: a job is created on one node (round robin) and the time until every
other node has it in its store is taken from the receivers' "job from peer" log lines against the job's
``created_at``. Bare: one process publishes a ~300-byte message and every other one prints when it arrives.
Both run at the same time, their samples interleaved, so other load on the machine hits both alike. Prints
p50/p99 of the time until all others have it, the ratio cmnode/bare, and each cmnode node's idle RSS.
Before any job, the cluster idles ``--idle`` seconds: the CPU all N nodes use together (in % of one core, node
records, pings and catch-up included) and each node's connections and gossipsub mesh size. Each rate of
``--rates`` (jobs per second) gets ``--samples`` jobs; the bare side is compared at the last rate.
Targets (issue 13): at N = 30, p99 <= 150 ms at 1 job/s and <= 500 ms at 10 jobs/s, idle CPU <= 15 % of a core for
all 30; at N = 10, ratio <= 1.3x at p50 and p99; idle RSS <= 110 MB per node.

``--settle S``: the formed cluster idles S seconds more before that window (default 0). Without it the window
starts 3 s after every node holds its connection target, so it holds the start's last work: the hubs trim their
excess once connections are 30 s old (node/topology.py ``SETTLE``; each trimmed node dials another peer, a new
connection with its catch-up round), and each node's second record, spaced for the few nodes it knew at its start
(node/heartbeat.py). The report also counts the connections all nodes made in the window. Once settled, an idle
cluster's CPU comes in bursts, its node records (each node's every 180 s at 30 nodes): a 60 s window read
7.6 % in one run and 15.3 % in another of the same build, so the figure to hold against the target is one over a
whole cycle, ``--idle 180`` (9.9 %).

``--baseline REF``: first the same cmnode measurement with every node at git revision REF (``git archive``), then
this tree's, one after the other (so under the same load, as far as the machine allows); the second report adds
its ratio to the first. ``--cmnode-only``: no bare side (its processes double the machine's load at N = 30).

``--swarm-key``: two cmnode clusters of N side by side, one run with a swarm key (``--swarm-key``, every
connection encrypted with it under Noise) and one without, jobs created on both alternately; prints the p50/p99
of each and the ratio keyed/open. Target: <= 1.1x.

``--trace``: each job that reached some node later than 150 ms is explained after its round: how many nodes had it
late, by which path (gossip or catch-up), when the origin published it, and for the latest nodes when they
validated and forwarded it and what they logged meanwhile (gossip mesh changes, connections, catch-up rounds, gc
pauses; the nodes log these with ``CMNODE_TRACE=1``, node/runner.py). Without it the report still names the late
jobs and nodes, and each round prints the machine's load average.

The jobs are placed on a node that does not exist (``{"nodes": [...]}``), so they are recorded everywhere and
run nowhere: one gossip message per job, as on the bare side, and no container load on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.catchup import source_at
from benchmarks.common import LoggedNode, call, pct
from node import topology
from node.runner import TRACE_ENV

RECORDED = re.compile(r"^(\S+)Z level=info logger=cmnode.sync msg=job from peer job_id=(\S+)")
NOWHERE = "12D3KooWNowhereNowhereNowhereNowhereNowhereNowhere1"
SPEC = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}


# -- cmnode -------------------------------------------------------------------------------------------


class Node(LoggedNode):
    def __init__(
        self, data: Path, bootstrap: str | None, extra: tuple[str, ...] = (), code: Path | None = None
    ) -> None:
        super().__init__(data, *(["--bootstrap", bootstrap] if bootstrap else []), *extra, code=code)

    def recorded(self) -> dict[str, float]:
        """job_id -> when this node stored it (wall clock, from its log)."""
        out = {}
        for line in self.log.read_text().splitlines():
            if m := RECORDED.match(line):
                out[m.group(2)] = _when(m.group(1))
        return out


@contextmanager
def cmnode_cluster(
    n: int, data_root: str | None = None, extra: tuple[str, ...] = (), code: Path | None = None
) -> Iterator[list[Node]]:
    """``n`` nodes bootstrapped through the first; ``code``: the source tree they run (default: this one)."""
    with tempfile.TemporaryDirectory(dir=data_root) as tmp, ExitStack() as stack:
        first = Node(Path(tmp) / "n0", None, extra, code)
        stack.callback(first.stop)
        with httpx.Client(timeout=30) as http:
            seed = call(http, first.url, "NodeService.Info")["addresses"][0]
        nodes = [first]
        threads = []

        def start(i: int) -> None:
            node = Node(Path(tmp) / f"n{i}", seed, extra, code)
            nodes.append(node)
            stack.callback(node.stop)

        for i in range(1, n):
            threads.append(threading.Thread(target=start, args=(i,)))
            threads[-1].start()
        for t in threads:
            t.join()
        if len(nodes) != n:
            raise SystemExit("not every node started")
        yield nodes


def formed(http: httpx.Client, nodes: list[Node]) -> bool:
    """Every node holds its connection target for a cluster of this size (node/topology.py; at least gossipsub's
    D_low), or all the others when fewer."""
    counts = [len(call(http, node.url, "NodeService.Peers")["peers"]) for node in nodes]
    return all(c >= min(topology.target(len(nodes)), len(nodes) - 1) for c in counts)


@dataclass
class Outcome:
    cmnode: list[float]  # seconds until every other node had the job (at the last rate)
    cmnode_lost: int
    bare: list[float]
    bare_lost: int
    rss: list[float]  # idle RSS of each cmnode node, MB
    bare_rss: list[float]
    edges: set[tuple[int, int]]
    reach: dict[float, tuple[list[float], int]] = field(default_factory=dict)  # jobs/s -> (spans, lost)
    idle_cpu: float | None = None  # % of one core, all nodes together
    gossip_mesh: list[int] = field(default_factory=list)  # each node's gossipsub mesh size, idle
    churn: int = 0  # "peer connected" lines of node 0 (the bootstrap node) while idle
    connections: int = 0  # connections made while idle, all nodes (half their "peer connected" lines)


HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def idle_cpu(nodes: list[Node], seconds: float) -> float:
    """CPU of all ``nodes`` together over ``seconds`` of idling, in % of one core."""
    before, began = [cpu_seconds(node.proc.pid) for node in nodes], time.monotonic()
    time.sleep(seconds)
    after, took = [cpu_seconds(node.proc.pid) for node in nodes], time.monotonic() - began
    return sum(b - a for a, b in zip(before, after, strict=True)) / took * 100


def start_bare(n: int, edges: set[tuple[int, int]]) -> tuple[list[Bare], list[float]]:
    """N bare processes connected as ``edges``; returns them and their idle RSS (MB)."""
    peers = [Bare() for _ in range(n)]
    for i, j in sorted(edges):
        peers[j].send(f"connect {peers[i].addr}")
    time.sleep(4 + n * 0.3)  # connect (~250 ms each) and a few heartbeats
    return peers, [rss_mb(p.proc.pid) for p in peers]


def peer_edges(http: httpx.Client, nodes: list[Node]) -> set[tuple[int, int]]:
    """The cmnode side's connections, as pairs of node indexes: the bare side dials the same ones."""
    index = {node.node_id: i for i, node in enumerate(nodes)}
    return {
        (min(i, index[p["node_id"]]), max(i, index[p["node_id"]]))
        for i, node in enumerate(nodes)
        for p in call(http, node.url, "NodeService.Peers")["peers"]
        if p["node_id"] in index
    }


def run(
    n: int,
    samples: int,
    interval: float,
    data_root: str | None = None,
    sequential: bool = False,
    *,
    rates: tuple[float, ...] = (),
    idle: float = 0.0,
    settle: float = 0.0,
    code: Path | None = None,
    with_bare: bool = True,
    node_args: tuple[str, ...] = (),
) -> Outcome:
    """Both sides at once, their samples interleaved, so that the machine's other load hits both alike; or,
    ``sequential``, cmnode first and then the bare processes, so neither pays for the other's processes.
    ``rates``: jobs per second of the cmnode-only rounds before the compared one (at ``1 / interval``); ``code``:
    the source tree the cmnode nodes run; ``with_bare``: False, no bare side at all; ``node_args``: more
    ``cmnode run`` options for every node (e.g. ``--heartbeat 600``); ``settle``: seconds idled, unmeasured,
    between the mesh's formation and the idle window."""
    with cmnode_cluster(n, data_root, node_args, code=code) as nodes, httpx.Client(timeout=30) as http:
        deadline = time.monotonic() + 60 + 3 * n  # 30 processes take about a minute to start on 2 cores
        while not formed(http, nodes):
            if time.monotonic() > deadline:
                print("the mesh did not form (a node is short of its connection target): measuring anyway", flush=True)
                break
            time.sleep(0.5)
        time.sleep(3 + settle)  # a few heartbeats: the gossipsub mesh grafts (and ``settle``: the start's work ends)
        gossip_mesh = [call(http, node.url, "NodeService.Info")["mesh"].get("gossip_mesh", 0) for node in nodes]
        connects = [node.log.read_text().count("msg=peer connected") for node in nodes]
        cpu = idle_cpu(nodes, idle) if idle > 0 else None
        made = [node.log.read_text().count("msg=peer connected") - c for node, c in zip(nodes, connects, strict=True)]
        churn, connections = made[0], sum(made) // 2  # each connection is logged at both ends
        reach = {rate: _reach(http, nodes, samples, 1 / rate) for rate in rates}
        edges = peer_edges(http, nodes)
        rss = [rss_mb(node.proc.pid) for node in nodes]
        peers: list[Bare] = []
        bare_rss: list[float] = []
        jobs: list[tuple[str, int]] = []
        try:
            if not sequential and with_bare:
                peers, bare_rss = start_bare(n, edges)
            for k in range(samples):
                origin = k % n
                jobs.append((call(http, nodes[origin].url, "ContainerService.Create", SPEC)["job_id"], origin))
                time.sleep(interval / 2)
                if peers:
                    peers[origin].send(f"pub {k}")
                time.sleep(interval / 2)
            time.sleep(3)
            if sequential and with_bare:  # the cmnode nodes stay up but idle meanwhile
                peers, bare_rss = start_bare(n, edges)
                for k in range(samples):
                    peers[k % n].send(f"pub {k}")
                    time.sleep(interval)
                time.sleep(3)
        finally:
            for peer in peers:
                peer.stop()
        created = {
            job_id: call(http, nodes[origin].url, "ContainerService.Status", {"job_id": job_id})["created_at"]
            for job_id, origin in jobs
        }
        recorded = [node.recorded() for node in nodes]
        print_late(nodes, jobs, created, f"{1 / interval:g}/s")
    mesh = [([recorded[i].get(job_id) for i in range(n) if i != origin], created[job_id]) for job_id, origin in jobs]
    bare = [
        (
            [peers[i].events.get(("recv", str(k))) for i in range(n) if i != k % n],
            peers[k % n].events.get(("sent", str(k))),
        )
        for k in range(samples)
        if peers
    ]
    m, m_lost = _spans(mesh)
    b, b_lost = _spans(bare)
    reach[1 / interval] = (m, m_lost)
    return Outcome(cmnode=m, cmnode_lost=m_lost, bare=b, bare_lost=b_lost, rss=rss, bare_rss=bare_rss, edges=edges,
                   reach=reach, idle_cpu=cpu, gossip_mesh=gossip_mesh, churn=churn,
                   connections=connections)  # fmt: skip


def _reach(http: httpx.Client, nodes: list[Node], samples: int, interval: float) -> tuple[list[float], int]:
    """cmnode alone: ``samples`` jobs every ``interval`` s, round robin; the time until all others had each."""
    n, jobs = len(nodes), []
    for k in range(samples):
        origin = k % n
        jobs.append((call(http, nodes[origin].url, "ContainerService.Create", SPEC)["job_id"], origin))
        time.sleep(interval)
    time.sleep(3)
    created = {
        job_id: call(http, nodes[origin].url, "ContainerService.Status", {"job_id": job_id})["created_at"]
        for job_id, origin in jobs
    }
    recorded = [node.recorded() for node in nodes]
    print_late(nodes, jobs, created, f"{1 / interval:g}/s")
    return _spans([([recorded[i].get(job_id) for i in range(n) if i != origin], created[job_id])
                   for job_id, origin in jobs])  # fmt: skip


# -- reach: which nodes had a slow job late, and by which path ------------------------------------------

LATE = 0.150
"""A node that stored a job this long (seconds) after its creation had it late (the 1 job/s target at N = 30)."""
LOG_LINE = re.compile(r"^(\S+)Z level=\w+ logger=(\S+) msg=(.*)$")
VIA = re.compile(r"job_id=(\S+) .*via=(\w+)")
NOTED = ("gossip mesh", "peer connected", "peer disconnected", "caught up with", "trimm", "dead connection", "gc pause")
"""The log lines that tell how a node stood when a job reached it late: its gossipsub mesh (node/host.py) and
its garbage collector's pauses (node/gcwatch.py), both logged with ``--trace`` only, its connections, its
catch-up rounds."""


def _when(stamp: str) -> float:
    """A log line's UTC timestamp (``2026-12-02T12:00:00.123``) as epoch seconds."""
    whole = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return whole + float("0" + stamp[19:])


def log_events(node: Node) -> list[tuple[float, str]]:
    """(when, message) of each log line of ``node``."""
    out = []
    for line in node.log.read_text().splitlines():
        if m := LOG_LINE.match(line):
            out.append((_when(m.group(1)), m.group(3)))
    return out


def late_story(events: list[tuple[float, str]], created: float, arrived: float, names: dict[str, str]) -> str:
    """What a late node logged about its mesh, connections, catch-up and garbage collector from 5 s before the job
    to its arrival (peer IDs as ``names`` gives them: n<index>)."""
    noted = [(t, msg) for t, msg in events if created - 5 <= t <= arrived and msg.startswith(NOTED)]
    before = [(t, msg) for t, msg in events if t < created - 5 and msg.startswith("gossip mesh")]
    parts = [f"last mesh event {created - before[-1][0]:.0f} s before: {before[-1][1]}"] if before else []
    parts += [f"{(t - created) * 1000:+.0f} ms {msg[:90]}" for t, msg in noted[-6:]]
    return re.sub(r"12D3KooW\w+", lambda m: names.get(m.group(0), "n?"), "; ".join(parts))


def job_path(events: list[tuple[float, str]], job_id: str, created: float, names: dict[str, str]) -> str:
    """A job's way through one node, from its debug lines (node/host.py): published, validated, forwarded."""
    steps = [f"{msg.split(' job_id=')[0].removeprefix('gossip ')} {(t - created) * 1000:+.0f} ms"
             + "".join(f" {f}" for f in msg.split()[3:])
             for t, msg in events if msg.startswith("gossip ") and f"job_id={job_id}" in msg]  # fmt: skip
    return re.sub(r"12D3KooW\w+", lambda m: names.get(m.group(0), "n?"), ", ".join(steps))


def explain_late(nodes: list[Node], jobs: list[tuple[str, int]], created: dict[str, float], most: int = 6) -> list[str]:
    """For the slowest jobs over LATE: how many nodes had each late, and for the latest few, when, by which
    path (``via=gossip`` or ``via=sync``, i.e. catch-up; an older node's log says neither) and what that node
    logged meanwhile."""
    events = [log_events(node) for node in nodes]
    names = {node.node_id: f"n{i}" for i, node in enumerate(nodes)}
    arrivals: list[dict[str, tuple[float, str]]] = []
    for node_events in events:
        got: dict[str, tuple[float, str]] = {}
        for t, msg in node_events:
            if msg.startswith("job from peer") and (m := VIA.search(msg)):
                got[m.group(1)] = (t, m.group(2))
            elif msg.startswith("job from peer job_id="):
                got.setdefault(msg.split()[3].removeprefix("job_id="), (t, "?"))
        arrivals.append(got)
    slow = []
    for k, (job_id, origin) in enumerate(jobs):
        late = sorted(((arrivals[i][job_id][0] - created[job_id], i, arrivals[i][job_id][1])
                       for i in range(len(nodes)) if i != origin and job_id in arrivals[i]), reverse=True)  # fmt: skip
        if late and late[0][0] > LATE:
            slow.append((late[0][0], k, job_id, origin, [x for x in late if x[0] > LATE]))
    lines = [f"    {len(slow)} of {len(jobs)} jobs late (sample numbers {[k for _, k, *_ in slow]})"] if slow else []
    for span, k, job_id, origin, late in sorted(slow, reverse=True)[:most]:
        vias = {v: sum(1 for x in late if x[2] == v) for v in sorted({x[2] for x in late})}
        first = min(arrivals[i][job_id][0] for i in range(len(nodes)) if i != origin and job_id in arrivals[i])
        lines.append(f"    job {job_id[:8]} (sample {k}) from node {origin}: {span * 1000:.0f} ms; {len(late)} nodes "
                     "late (" + ", ".join(f"{c} via {v}" for v, c in vias.items())
                     + f"); first stored at {(first - created[job_id]) * 1000:.0f} ms; origin: "
                     + job_path(events[origin], job_id, created[job_id], names))  # fmt: skip
        origin_story = late_story(events[origin], created[job_id], created[job_id], names)
        if origin_story:
            lines.append(f"      origin {origin}: {origin_story}")
        for delay, i, via in late[:3]:
            story = late_story(events[i], created[job_id], created[job_id] + delay, names)
            path = job_path(events[i], job_id, created[job_id], names)
            lines.append(f"      node {i}: {delay * 1000:.0f} ms via {via}" + (f" ({path})" if path else "")
                         + (f"; {story}" if story else ""))  # fmt: skip
    return lines


def gc_pauses(nodes: list[Node], since: float) -> str:
    """The collector's pauses in all nodes' logs since ``since`` (epoch s; logged with ``--trace`` only)."""
    pauses = [float(m.group(2)) for node in nodes for t, msg in log_events(node)
              if t >= since and (m := re.match(r"gc pause gen=(\d) ms=([\d.]+)", msg))]  # fmt: skip
    if not pauses:
        return ""
    return f"; gc pauses (>= 5 ms or full) {len(pauses)}, max {max(pauses):.0f} ms, total {sum(pauses):.0f} ms"


def print_late(nodes: list[Node], jobs: list[tuple[str, int]], created: dict[str, float], rate: str) -> None:
    lines = explain_late(nodes, jobs, created)
    pauses = gc_pauses(nodes, min(created.values())) if created else ""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"  {rate}: load average {load} at the end of the round{pauses}" + (f"; jobs that reached a node later than "
          f"{LATE * 1000:.0f} ms:\n" + "\n".join(lines) if lines else ""), flush=True)  # fmt: skip


def run_swarm_key(n: int, samples: int, interval: float, data_root: str | None = None) -> tuple[Outcome, Outcome]:
    """A cluster with a swarm key and one without, at once, their jobs interleaved; the outcome of each (only
    ``cmnode``, ``cmnode_lost``, ``rss`` and ``edges`` are filled in)."""
    from node.swarmkey import write_swarm_key

    with tempfile.TemporaryDirectory() as keys:
        key = Path(keys) / "swarm.key"
        write_swarm_key(key)
        with (
            cmnode_cluster(n, data_root, ("--swarm-key", str(key))) as keyed,
            cmnode_cluster(n, data_root) as open_,
            httpx.Client(timeout=30) as http,
        ):
            deadline = time.monotonic() + 90
            while not (formed(http, keyed) and formed(http, open_)):
                if time.monotonic() > deadline:
                    raise SystemExit("the meshes did not form")
                time.sleep(0.5)
            time.sleep(3)
            jobs: dict[int, list[tuple[str, int]]] = {0: [], 1: []}
            for k in range(samples):
                order = ((0, keyed), (1, open_)) if k % 2 == 0 else ((1, open_), (0, keyed))  # neither always first
                for side, nodes in order:
                    origin = k % n
                    jobs[side].append(
                        (call(http, nodes[origin].url, "ContainerService.Create", SPEC)["job_id"], origin)
                    )
                    time.sleep(interval / 2)
            time.sleep(3)
            outcomes = []
            for side, nodes in enumerate((keyed, open_)):
                created = {
                    job_id: call(http, nodes[origin].url, "ContainerService.Status", {"job_id": job_id})["created_at"]
                    for job_id, origin in jobs[side]
                }
                recorded = [node.recorded() for node in nodes]
                mesh = [
                    ([recorded[i].get(job_id) for i in range(n) if i != origin], created[job_id])
                    for job_id, origin in jobs[side]
                ]
                spans, lost = _spans(mesh)
                rss = [rss_mb(node.proc.pid) for node in nodes]
                outcomes.append(Outcome(cmnode=spans, cmnode_lost=lost, bare=[], bare_lost=0, rss=rss, bare_rss=[],
                                        edges=set()))  # fmt: skip
    return outcomes[0], outcomes[1]


def _spans(samples: list[tuple[list[float | None], float | None]]) -> tuple[list[float], int]:
    """Time from the start to the last arrival of each sample, and how many never reached everyone."""
    spans, lost = [], 0
    for arrivals, start in samples:
        if start is None or any(t is None for t in arrivals):
            lost += 1
        else:
            spans.append(max(t for t in arrivals if t is not None) - start)
    return spans, lost


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- bare py-libp2p -----------------------------------------------------------------------------------


async def bare_peer() -> None:
    """One bare gossipsub process: prints ``addr``; reads ``connect ADDR`` / ``pub ID`` lines on stdin; prints
    ``sent ID T`` and ``recv ID T`` (wall clock)."""
    import multiaddr
    import trio
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as x25519
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as Noise
    from libp2p.tools.anyio_service import background_trio_service

    key_pair = create_new_key_pair()
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    host = new_host(key_pair=key_pair, sec_opt={NOISE: Noise(key_pair, noise_privkey=x25519().private_key)},
                    listen_addrs=[listen])  # fmt: skip
    router = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False,
                       eclipse_protection_enabled=False)  # fmt: skip
    pubsub = Pubsub(host, router)
    pubsub.counter = time.time_ns()
    padding = "x" * 250
    async with background_trio_service(pubsub), background_trio_service(router), host.run(listen_addrs=[listen]):
        sub = await pubsub.subscribe("jobs")
        print("addr", host.get_addrs()[0], flush=True)

        async def receive() -> None:
            while True:
                msg = await sub.get()
                print("recv", json.loads(msg.data)["id"], time.time(), flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            while line := await trio.to_thread.run_sync(sys.stdin.readline):
                command, _, arg = line.strip().partition(" ")
                if command == "connect":
                    await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(arg)))
                elif command == "pub":
                    data = json.dumps({"type": "job", "id": arg, "padding": padding}).encode()
                    print("sent", arg, time.time(), flush=True)
                    await pubsub.publish("jobs", data)
            nursery.cancel_scope.cancel()


class Bare:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.mesh", "--bare-peer"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.addr = self.proc.stdout.readline().split()[1]
        self.events: dict[tuple[str, str], float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] in ("sent", "recv"):  # the library prints a few lines of its own
                self.events[(parts[0], parts[1])] = float(parts[2])

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- report ---------------------------------------------------------------------------------------------


def summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"p50_ms": pct(latencies, 50) * 1000, "p99_ms": pct(latencies, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--interval", type=float, default=None, help="seconds between jobs (1 / the last rate)")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[10.0],
        help="jobs per second, one round of --samples each; the bare side runs at the last",
    )
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idling measured for CPU (0: none)")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds the formed cluster idles, unmeasured, before the --idle window (default 0: the "
                             "window includes the hubs' first trims at 30 s and every node's first long-spaced "
                             "record, a minute after its start)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object per N")
    parser.add_argument(
        "--data-root",
        help="where the nodes' data directories go (default: the temp dir). All N nodes share one disk here, so "
        "their commits queue behind each other's fsync; /dev/shm shows the latency without that.",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="measure cmnode, then the bare processes, instead of both at once (absolute latencies without the "
        "other side's processes; more exposed to load that changes between the two)",
    )
    parser.add_argument(
        "--swarm-key", action="store_true", help="a cluster with a swarm key against one without (not the bare side)"
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="first the same cmnode run with every node at this git revision"
    )
    parser.add_argument("--cmnode-only", action="store_true", help="no bare side (only the cmnode figures)")
    parser.add_argument(
        "--node-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more `cmnode run` argument for every node, both sides of --baseline (repeat it: "
        "--node-arg=--heartbeat --node-arg=600)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="the nodes log each job's way through them, their gossip mesh's changes and their collector's pauses "
        "(CMNODE_TRACE=1), and the report explains each job that reached a node later than 150 ms with them",
    )
    parser.add_argument("--bare-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_peer:
        import trio

        trio.run(bare_peer)
        return
    if args.swarm_key:
        for n in args.nodes:
            keyed, open_ = run_swarm_key(n, args.samples, args.interval, args.data_root)
            k, o = summary(keyed.cmnode), summary(open_.cmnode)
            line = {
                "nodes": n,
                "swarm_key": {**k, "lost": keyed.cmnode_lost},
                "open": {**o, "lost": open_.cmnode_lost},
                "ratio_p50": k["p50_ms"] / o["p50_ms"],
                "ratio_p99": k["p99_ms"] / o["p99_ms"],
            }
            if args.json:
                print(json.dumps(line))
                continue
            print(
                f"N={n:<3} time for a job to reach all {n - 1} others ({args.samples} jobs per side)\n"
                f"  swarm key  p50 {k['p50_ms']:7.1f} ms  p99 {k['p99_ms']:7.1f} ms  lost {keyed.cmnode_lost}\n"
                f"  open       p50 {o['p50_ms']:7.1f} ms  p99 {o['p99_ms']:7.1f} ms  lost {open_.cmnode_lost}\n"
                f"  ratio      p50 {line['ratio_p50']:7.2f}x    p99 {line['ratio_p99']:7.2f}x   (target <= 1.1x)",
                flush=True,
            )
        return
    if args.trace:
        os.environ[TRACE_ENV] = "1"  # the node processes inherit it
    interval = args.interval or 1 / args.rates[-1]
    for n in args.nodes:
        baseline = None
        if args.baseline:
            with source_at(args.baseline) as old:
                baseline = run(n, args.samples, interval, args.data_root, args.sequential, rates=tuple(args.rates[:-1]),
                               idle=args.idle, settle=args.settle, code=old, with_bare=not args.cmnode_only,
                               node_args=tuple(args.node_arg))  # fmt: skip
            report(n, baseline, args, interval, None, f"baseline {args.baseline}")
        out = run(n, args.samples, interval, args.data_root, args.sequential, rates=tuple(args.rates[:-1]),
                  idle=args.idle, settle=args.settle, with_bare=not args.cmnode_only,
                  node_args=tuple(args.node_arg))  # fmt: skip
        report(n, out, args, interval, baseline, "this tree" if baseline else "")


def report(n: int, out: Outcome, args: argparse.Namespace, interval: float, base: Outcome | None, label: str) -> None:
    """One N's figures, against their targets, and (``base``) as a ratio to the baseline's."""
    rss, bare_rss, edges, mesh_lost, bare_lost = out.rss, out.bare_rss, out.edges, out.cmnode_lost, out.bare_lost
    b, m = summary(out.bare), summary(out.cmnode)
    degree = [sum(1 for e in edges if i in e) for i in range(n)]
    result: dict[str, Any] = {
        "nodes": n,
        "label": label,
        "cmnode": {**m, "lost": mesh_lost},
        "bare": {**b, "lost": bare_lost},
        "reach": {f"{rate:g}/s": {**summary(spans), "lost": lost} for rate, (spans, lost) in out.reach.items()},
        "connections": len(edges),
        "per_node": {
            "connections": [min(degree), max(degree)],
            "gossip_mesh": [min(out.gossip_mesh), max(out.gossip_mesh)],
        },
        "idle_cpu_pct": out.idle_cpu,
        "bootstrap_connects_idle": out.churn,
        "connections_made_idle": out.connections,
        "ratio_p50": m["p50_ms"] / b["p50_ms"],
        "ratio_p99": m["p99_ms"] / b["p99_ms"],
        "idle_rss_mb": {
            "max": max(rss),
            "mean": sum(rss) / len(rss),
            "bare_mean": sum(bare_rss) / len(bare_rss) if bare_rss else float("nan"),
        },
    }
    if args.json:
        print(json.dumps(result))
        return

    def versus(now: float | None, before: float | None) -> str:
        return f"   {now / before:5.2f}x baseline" if base is not None and now and before else ""

    lines = [
        (f"[{label}] " if label else "")
        + f"N={n:<3} time for a job to reach all {n - 1} others ({args.samples} jobs a rate; {len(edges)} "
        f"connections, {min(degree)}-{max(degree)} per node; gossipsub mesh {min(out.gossip_mesh)}-"
        f"{max(out.gossip_mesh)} per node)"
    ]
    for rate, (spans, lost) in sorted(out.reach.items()):
        r = summary(spans)
        target = {1.0: 150, 10.0: 500}.get(rate) if n >= 30 else None
        before = summary(base.reach[rate][0])["p99_ms"] if base is not None and rate in base.reach else None
        lines.append(f"  cmnode {rate:4g}/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  lost {lost}"
                     + (f"   (target at N=30: p99 <= {target} ms)" if target else "")
                     + versus(r["p99_ms"], before))  # fmt: skip
    if out.bare:
        lines += [
            f"  bare  {1 / interval:5g}/s  p50 {b['p50_ms']:7.1f} ms  p99 {b['p99_ms']:7.1f} ms  lost {bare_lost}",
            f"  ratio        p50 {result['ratio_p50']:7.2f}x    p99 {result['ratio_p99']:7.2f}x   (target <= 1.3x)",
        ]
    if out.idle_cpu is not None:
        settled = f" after {args.settle:g} s settling" if args.settle else ""
        lines.append(f"  idle CPU     {out.idle_cpu:6.1f} % of one core, all {n} nodes over {args.idle:g} s{settled}"
                     f"   (target at N=30: <= 15 %)"
                     + versus(out.idle_cpu, base.idle_cpu if base is not None else None))  # fmt: skip
        lines.append(f"  node 0       {out.churn} peers connected while idle (the bootstrap node's churn)"
                     + versus(out.churn, base.churn if base is not None else None))  # fmt: skip
        lines.append(
            f"  all nodes    {out.connections} connections made while idle (baseline {base.connections})"
            if base is not None
            else f"  all nodes    {out.connections} connections made while idle"
        )
    lines.append(
        f"  idle RSS     max {max(rss):6.1f} MB  mean {result['idle_rss_mb']['mean']:6.1f} MB"
        f"  (bare peer {result['idle_rss_mb']['bare_mean']:.1f} MB; target <= 110 MB)"
    )
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
