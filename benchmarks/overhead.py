"""Gossip overhead (issue 13): cmnode against bare gossip built the same way, at the same time, one machine.

    .venv/bin/python -m benchmarks.overhead [--nodes 10] [--samples 40] [--rate 10] [--code DIR] [--baseline DIR]
    .venv/bin/python -m benchmarks.overhead --plain-bare ...   the bare side of benchmarks/mesh.py instead

``benchmarks/mesh.py`` compares cmnode with bare py-libp2p processes that are not built as a node's host is:
they lack ``node/senderrecord.py`` (so the bare side rebuilds and re-verifies the signed peer record on every
pubsub RPC, work cmnode no longer does), peer scoring, and their message is 300 bytes where a job's is ~430.
That flatters cmnode by an amount that has nothing to do with what cmnode adds. Here the bare side is
``node.host.Host`` itself (the same gossipsub settings, the same library patches, the same topology: it dials the
pairs the cmnode nodes connected), publishing a message of a job's size, with no validator, store or upkeep: what
is left between the two is what cmnode does with a job (create, sign, store, validate, merge) and its idle
upkeep (pings, node records, catch-up).

The cmnode side runs from ``--code`` (a source tree, default: this one); ``--baseline DIR`` runs a second cluster
from another tree at the same time (e.g. ``git archive HEAD | tar -x -C /tmp/base``), so an A/B of two builds
sees the same load. Jobs are created on each side in turn, round robin over its nodes, ``1 / --rate`` s apart per
side. Time until all others have a job: cmnode, from the job's ``created_at`` to the last receiver's "job from
peer" log line (as benchmarks/mesh.py); bare, from just before the publish to the last arrival. Also printed: the
time until the first receiver has it, which holds the origin's part (Create's durable write, signing, publish),
and the CPU each side's processes used while the jobs ran (in % of one core, all of them together, and per job
and node): the sides share two cores, so a side that uses more, its jobs included, waits longer for a core at
every hop. Each job keeps ten processes busy at once, so the time until the last has it follows the CPU the
cluster spends on it: the ratio of the two sides' CPU is close to the ratio of their times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import LoggedNode, call
from benchmarks.mesh import SPEC, Bare, Node, _spans, cpu_seconds, formed, peer_edges, start_bare, summary

HERE = Path(__file__).resolve().parent.parent
MESH_COUNTERS = ("messages_in", "sync_jobs", "dead_connections", "unsubscribed", "trimmed")
"""Summed over a side's nodes and printed: whether gossip carried the jobs (``messages_in``) or catch-up did
(``sync_jobs``), and whether connections churned meanwhile."""
JOB_BYTES = 430
"""About the size of a job's gossip envelope (``node/wire.py``) for benchmarks/mesh.py's SPEC."""


class TreeNode(Node):
    """benchmarks/mesh.py's node, run from the source tree ``code``."""

    def __init__(self, data: Path, bootstrap: str | None, code: Path) -> None:
        LoggedNode.__init__(self, data, *(["--bootstrap", bootstrap] if bootstrap else []), code=code)


@contextmanager
def cluster(n: int, code: Path) -> Iterator[list[Node]]:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        first = TreeNode(Path(tmp) / "n0", None, code)
        stack.callback(first.stop)
        with httpx.Client(timeout=30) as http:
            seed = call(http, first.url, "NodeService.Info")["addresses"][0]
        nodes: list[Node] = [first]

        def start(i: int) -> None:
            node = TreeNode(Path(tmp) / f"n{i}", seed, code)
            nodes.append(node)
            stack.callback(node.stop)

        threads = [threading.Thread(target=start, args=(i,)) for i in range(1, n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(nodes) != n:
            raise SystemExit("not every node started")
        yield nodes


class FairBare(Bare):
    """A bare peer built on ``node.host.Host`` (see the module's docstring)."""

    def __init__(self, code: Path) -> None:  # Bare's, but another command and the node package of ``code``
        env = {**os.environ, "PYTHONPATH": str(HERE)}
        command = f"from benchmarks.overhead import _bare; _bare({str(code)!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
        assert self.proc.stdout is not None
        self.addr = self.proc.stdout.readline().split()[1]
        self.events: dict[tuple[str, str], float] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def _bare(code: str) -> None:
    """The bare peer's process: this module from this tree, ``node`` from ``code``."""
    import trio

    sys.path.insert(0, code)
    trio.run(fair_bare_peer)


async def fair_bare_peer() -> None:
    """As benchmarks/mesh.py's bare peer (the same stdin/stdout lines), on ``node.host.Host``."""
    import trio
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    from node.config import Config
    from node.host import Host
    from node.identity import load_or_create
    from node.wire import TOPIC

    with tempfile.TemporaryDirectory() as tmp:
        identity = load_or_create(Path(tmp))
    host = Host(config=Config(listen_address="127.0.0.1", p2p_port=0, mdns=False), identity=identity)
    host.pubsub.deliver = lambda msg: print("recv", json.loads(msg.data)["id"], time.time(), flush=True)
    async with host.running():
        print("addr", host.addresses()[0], flush=True)
        while line := await trio.to_thread.run_sync(sys.stdin.readline):
            command, _, arg = line.strip().partition(" ")
            if command == "connect":
                await host.host.connect(info_from_p2p_addr(Multiaddr(arg)))
            elif command == "pub":
                data = json.dumps({"type": "job", "id": arg, "padding": ""}).encode()
                data = data.replace(b'""', b'"' + b"x" * (JOB_BYTES - len(data)) + b'"')
                print("sent", arg, time.time(), flush=True)
                await host.pubsub.publish(TOPIC, data)


def first_spans(samples: list[tuple[list[float | None], float | None]]) -> list[float]:
    """Time from the start to the first arrival of each sample that reached everyone."""
    return [min(a for a in arrivals if a is not None) - start for arrivals, start in samples
            if start is not None and None not in arrivals]  # fmt: skip


def run(n: int, samples: int, rate: float, code: Path, baseline: Path | None, plain: bool) -> dict[str, Any]:
    trees = {"cmnode": code, **({"baseline": baseline} if baseline else {})}
    with ExitStack() as stack, httpx.Client(timeout=30) as http:
        sides = {name: stack.enter_context(cluster(n, tree)) for name, tree in trees.items()}
        deadline = time.monotonic() + 60 + 3 * n
        while not all(formed(http, nodes) for nodes in sides.values()):
            if time.monotonic() > deadline:
                print("a mesh did not form (a node is short of its connection target): measuring anyway", flush=True)
                break
            time.sleep(0.5)
        time.sleep(5)  # a few heartbeats: the gossipsub mesh grafts, the first catch-up rounds end
        nodes = sides["cmnode"]
        edges = peer_edges(http, nodes)
        if plain:
            peers, _ = start_bare(n, edges)
        else:
            peers = [FairBare(code) for _ in range(n)]
            for i, j in sorted(edges):
                peers[j].send(f"connect {peers[i].addr}")
            time.sleep(4 + n * 0.3)  # as start_bare: connect and a few heartbeats
        for peer in peers:
            stack.callback(peer.stop)
        jobs: dict[str, list[tuple[str, int]]] = {name: [] for name in sides}
        step = 1 / rate / (len(sides) + 1)
        pids = {**{name: [node.proc.pid for node in side] for name, side in sides.items()},
                "bare": [peer.proc.pid for peer in peers]}  # fmt: skip
        cpu_before = {name: sum(cpu_seconds(pid) for pid in group) for name, group in pids.items()}
        began = time.monotonic()
        for k in range(samples):
            origin = k % n
            for name, side in sides.items():
                jobs[name].append((call(http, side[origin].url, "ContainerService.Create", SPEC)["job_id"], origin))
                time.sleep(step)
            peers[origin].send(f"pub {k}")
            time.sleep(step)
        time.sleep(3)
        elapsed = time.monotonic() - began
        cpu = {name: (sum(cpu_seconds(pid) for pid in group) - cpu_before[name]) / elapsed
               for name, group in pids.items()}  # fmt: skip
        out: dict[str, Any] = {"nodes": n, "samples": samples, "rate": rate, "connections": len(edges),
                               "elapsed": elapsed}  # fmt: skip
        for name, side in sides.items():
            created = {
                job_id: call(http, side[origin].url, "ContainerService.Status", {"job_id": job_id})["created_at"]
                for job_id, origin in jobs[name]
            }
            recorded = [node.recorded() for node in side]
            arrivals = [([recorded[i].get(job_id) for i in range(n) if i != origin], created[job_id])
                        for job_id, origin in jobs[name]]  # fmt: skip
            spans, lost = _spans(arrivals)
            mesh = [call(http, node.url, "NodeService.Info")["mesh"] for node in side]
            counters = {key: sum(m.get(key, 0) for m in mesh) for key in MESH_COUNTERS}
            counters["dropped"] = sum(m.get("dropped_total", 0) for m in mesh)
            out[name] = {**summary(spans), "lost": lost, "first": summary(first_spans(arrivals)), "mesh": counters,
                         "cpu": cpu[name]}  # fmt: skip
    bare = [([peers[i].events.get(("recv", str(k))) for i in range(n) if i != k % n],
             peers[k % n].events.get(("sent", str(k)))) for k in range(samples)]  # fmt: skip
    spans, lost = _spans(bare)
    out["bare"] = {**summary(spans), "lost": lost, "first": summary(first_spans(bare)), "cpu": cpu["bare"]}
    for name in sides:
        side, base = out[name], out["bare"]
        side["ratio_p50"] = side["p50_ms"] / base["p50_ms"]
        side["ratio_p99"] = side["p99_ms"] / base["p99_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--rate", type=float, default=10.0, help="jobs per second on each side")
    parser.add_argument("--code", type=Path, default=HERE, help="the source tree the cmnode nodes run")
    parser.add_argument("--baseline", type=Path, help="a second cmnode cluster from this tree, at the same time")
    parser.add_argument("--plain-bare", action="store_true", help="benchmarks/mesh.py's bare peers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    out = run(args.nodes, args.samples, args.rate, args.code.resolve(),
              args.baseline.resolve() if args.baseline else None, args.plain_bare)  # fmt: skip
    out["load"] = {"before": load_before, "after": os.getloadavg()}  # the figures mean little without it
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"N={args.nodes} time for a job to reach all {args.nodes - 1} others ({args.samples} jobs a side at "
        f"{args.rate:g}/s; {out['connections']} connections; bare: {'plain' if args.plain_bare else 'node.host'})"
    )
    for name in ("cmnode", "baseline", "bare"):
        r = out.get(name)
        if r is None:
            continue
        line = (f"  {name:9s} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  lost {r['lost']}"
                f"  (first receiver p50 {r['first']['p50_ms']:6.1f} ms)")  # fmt: skip
        if "ratio_p50" in r:
            line += f"  ratio p50 {r['ratio_p50']:5.2f}x p99 {r['ratio_p99']:5.2f}x (target <= 1.3x)"
        per_job = r["cpu"] * out["elapsed"] / (args.samples * args.nodes) * 1000
        line += (f"\n            CPU of its {args.nodes} processes while the jobs ran: {r['cpu'] * 100:.0f} % of a core"
                 f" ({per_job:.2f} ms per job and node, idle upkeep included)")  # fmt: skip
        if "mesh" in r:
            line += "\n            " + ", ".join(f"{key} {value}" for key, value in r["mesh"].items())
        print(line, flush=True)
    print("  load average (1, 5, 15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *out["load"]["before"], *out["load"]["after"]))  # fmt: skip


if __name__ == "__main__":
    main()
