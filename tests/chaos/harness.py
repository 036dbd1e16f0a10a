"""The chaos harness: real ``cmnode run`` processes, each in its own network namespace on a private bridge, and
the faults a user's network has: partitions, a flapping link, packet loss, kill -9 and restart, a late joiner.

Shared by the CI tests (``tests/chaos/``, small clusters, short faults) and the benchmark (``benchmarks/chaos.py``,
10 nodes, the issue's full scenarios). Synchronous on purpose: the benchmark has no event loop, and what it waits
on (processes, iptables, JSON-RPC over the bridge) is blocking anyway; work on every node at once runs in threads.

The network: a namespace ``<tag>sw`` holds the bridge; every node namespace ``<tag>n<i>`` has a veth on it with
``10.A.B.i/24``, and the root namespace has one too (``.254``) so the harness reaches every node's RPC directly.
Faults are iptables rules in one chain, ``CHAOS``, hooked into INPUT and OUTPUT of each node namespace and
replaced atomically (``iptables-restore --noflush``); traffic with the harness's address is never touched, so
RPC keeps working through a partition. Everything is removed on ``close`` (the namespaces take their interfaces
with them), whatever happened before.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import random
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
from docker.client import DockerClient

from tests.support import NodeProcess, missing, remove_containers

__all__ = [
    "BULK",
    "IMAGE",
    "NOWHERE",
    "P2P_PORT",
    "TICKS",
    "Agreement",
    "ChaosNode",
    "Cluster",
    "Lan",
    "NetworkUnavailable",
    "Snapshot",
    "arrivals",
    "cluster",
    "docker_there",
    "each",
    "logged",
    "wait",
]

T = TypeVar("T")

P2P_PORT = 4001
"""Every node listens on its own address, so all may use the same port."""
NOWHERE = "12D3KooWNowhereNowhereNowhereNowhereNowhereNowhere1"
"""Jobs placed on this node are recorded everywhere and run nowhere: load for the mesh, none for Docker."""
IMAGE = "cmnode-test/busybox:latest"
BULK = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
RECORDED = re.compile(r"^(\S+)Z level=info logger=cmnode.sync msg=job from peer job_id=(\S+)")
STAMPED = re.compile(r"^(\S+)Z level=")
TICKS = os.sysconf("SC_CLK_TCK")


class NetworkUnavailable(RuntimeError):
    """Namespaces, veths or iptables cannot be made here (not root, no iproute2/iptables)."""


def _run(*command: str, stdin: str | None = None) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, input=stdin, timeout=20)
    except subprocess.CalledProcessError as exc:
        raise NetworkUnavailable(f"{' '.join(command)}: {exc.stderr.strip()}") from exc
    except OSError as exc:
        raise NetworkUnavailable(f"{command[0]}: {exc}") from exc


def each(items: Iterable[T], fn: Callable[[T], Any]) -> list[Any]:
    """``fn`` on every item at once (threads), results in order; the first error is raised."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return list(pool.map(fn, items))


class Lan:
    """``size`` node namespaces on a bridge, and the iptables chain that breaks their links."""

    def __init__(self, size: int) -> None:
        self.tag = "cx" + secrets.token_hex(2)
        self.size = size
        self.prefix = f"10.{random.randint(200, 253)}.{random.randint(1, 254)}"
        self.switch = f"{self.tag}sw"
        self.namespaces = [f"{self.tag}n{i}" for i in range(size)]
        self.host_ip = f"{self.prefix}.254"
        self._created: list[str] = []
        self._host_link = f"{self.tag}h"

    def ip(self, index: int) -> str:
        return f"{self.prefix}.{index + 1}"

    def create(self) -> None:
        """Build it all; on failure remove what was made and raise ``NetworkUnavailable``."""
        try:
            for ns in (self.switch, *self.namespaces):
                _run("ip", "netns", "add", ns)
                self._created.append(ns)
            sw = ("ip", "-n", self.switch)
            _run(*sw, "link", "add", "br0", "type", "bridge")
            _run(*sw, "link", "set", "br0", "up")
            for i, ns in enumerate(self.namespaces):
                inner, outer = f"{self.tag}v{i}", f"{self.tag}p{i}"
                _run("ip", "link", "add", inner, "netns", ns, "type", "veth", "peer", "name", outer, "netns",
                     self.switch)  # fmt: skip
                _run(*sw, "link", "set", outer, "master", "br0")
                _run(*sw, "link", "set", outer, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", inner)
                _run("ip", "-n", ns, "link", "set", inner, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "link", "add", self._host_link, "type", "veth", "peer", "name", f"{self.tag}q", "netns",
                 self.switch)  # fmt: skip
            _run(*sw, "link", "set", f"{self.tag}q", "master", "br0")
            _run(*sw, "link", "set", f"{self.tag}q", "up")
            _run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self._host_link)
            _run("ip", "link", "set", self._host_link, "up")
            chain = "*filter\n:CHAOS - [0:0]\n-A INPUT -j CHAOS\n-A OUTPUT -j CHAOS\nCOMMIT\n"
            each(self.namespaces, lambda ns: _run("ip", "netns", "exec", ns, "iptables-restore", stdin=chain))
            self._rules(["-A CHAOS -m statistic --mode random --probability 0.5 -j RETURN"])  # the match exists
            self.heal()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Remove every namespace (and with them every interface made); never raises."""
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)
        self._created.clear()
        subprocess.run(["ip", "link", "del", self._host_link], capture_output=True, timeout=20, check=False)

    # -- faults: each replaces every rule of the chain, in every namespace at once --------------------------

    def _rules(self, rules: Sequence[str] | Callable[[int], Sequence[str]]) -> None:
        def apply(i: int) -> None:
            mine = rules(i) if callable(rules) else rules
            keep = ["-A CHAOS -i lo -j RETURN", f"-A CHAOS -s {self.host_ip} -j RETURN",
                    f"-A CHAOS -d {self.host_ip} -j RETURN"]  # fmt: skip
            table = "\n".join(["*filter", "-F CHAOS", *(keep if mine else []), *mine, "COMMIT", ""])
            _run("ip", "netns", "exec", self.namespaces[i], "iptables-restore", "--noflush", stdin=table)

        each(range(self.size), apply)

    def heal(self) -> None:
        self._rules([])

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Only nodes of one group reach each other (a node in no group reaches no one)."""
        group_of = {i: g for g, members in enumerate(groups) for i in members}

        def rules(i: int) -> list[str]:
            others = [j for j in range(self.size) if j != i and group_of.get(j, -1 - j) != group_of.get(i, -2)]
            return [
                r for j in others for r in (f"-A CHAOS -s {self.ip(j)} -j DROP", f"-A CHAOS -d {self.ip(j)} -j DROP")
            ]

        self._rules(rules)

    def sever(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Only the nodes of each pair cannot reach each other; every other link works (a partial cut)."""
        cut = {frozenset(pair) for pair in pairs}

        def rules(i: int) -> list[str]:
            others = [j for j in range(self.size) if frozenset((i, j)) in cut]
            return [
                r for j in others for r in (f"-A CHAOS -s {self.ip(j)} -j DROP", f"-A CHAOS -d {self.ip(j)} -j DROP")
            ]

        self._rules(rules)

    def isolate(self, index: int) -> None:
        """``index`` reaches no other node; the rest reach each other."""
        self.partition([[i for i in range(self.size) if i != index], [index]])

    def loss(self, probability: float) -> None:
        """Every packet a node receives from another is dropped with ``probability`` (INPUT only: one draw per
        packet, so the loss on each path is ``probability``, not twice it)."""
        self._rules([f"-A CHAOS -m statistic --mode random --probability {probability} -j DROP"])


class ChaosNode:
    """One ``cmnode run`` in namespace ``index`` of ``lan``; survives kill -9 and restart on its data dir."""

    def __init__(
        self, lan: Lan, index: int, root: Path, bootstrap: Sequence[str] = (), *flags: str,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """``env``: added to the node's environment (``PYTHONPATH``: run another source tree, a baseline)."""
        self.lan = lan
        self.index = index
        self.ip = lan.ip(index)
        boot = [f for address in bootstrap for f in ("--bootstrap", address)]
        prefix = ["ip", "netns", "exec", lan.namespaces[index]]
        self.process = NodeProcess(root / f"n{index}", *boot, *flags, env=dict(env or {}), prefix=prefix,
                                   listen=self.ip, p2p_port=P2P_PORT)  # fmt: skip
        self.node_id = ""
        self.url = ""

    @property
    def log(self) -> Path:
        return self.process.log

    @property
    def address(self) -> str:
        return f"/ip4/{self.ip}/tcp/{P2P_PORT}/p2p/{self.node_id}"

    def start(self) -> ChaosNode:
        self.process.start(timeout=90)
        self.node_id, self.url = self.process.node_id, self.process.rpc_url
        return self

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        """Stop it gracefully: a node killed -9 with a container create or start in flight gets that container
        from dockerd after the harness has removed the node's (a leak)."""
        self.process.stop(signal.SIGTERM)

    @property
    def running(self) -> bool:
        return self.process.proc is not None and self.process.proc.poll() is None

    def cpu(self) -> float:
        """CPU seconds (user and system, all threads) this process has used; 0 if it is not running. ``ip netns
        exec`` execs the node, so the process started is the node."""
        if not self.running or self.process.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass(frozen=True)
class Snapshot:
    """What one node knows: every job's status, and the executions and allocation (version, by, nodes) of the
    jobs that run somewhere."""

    jobs: dict[str, str]
    executions: dict[str, frozenset[tuple[str, str, int]]]
    allocations: dict[str, tuple[int, str, tuple[str, ...]] | None]


@dataclass(frozen=True)
class Agreement:
    agreed: bool
    detail: str


class Cluster:
    """Nodes on a ``Lan``: start, fault, create jobs, and read whether they agree."""

    def __init__(
        self, lan: Lan, root: Path, http: httpx.Client, flags: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> None:
        """``flags``: added to every node's command line; ``env``: to every node's environment."""
        self.lan = lan
        self.flags = tuple(flags)
        self.env = dict(env or {})
        self.root = root
        self.http = http
        self.nodes: dict[int, ChaosNode] = {}
        self.tracked: dict[str, int] = {}
        """Jobs that run somewhere (their executions are compared), with the replicas each may have (0: any)."""
        self._laggard: int | None = None
        """The node that lacked the most expected jobs at the last check: asked alone first (``agreement``)."""

    # -- nodes ----------------------------------------------------------------------------------------

    def start(self, indexes: Iterable[int], bootstrap: Sequence[int] = (0,)) -> list[ChaosNode]:
        """Start nodes (at once) that bootstrap through the running nodes ``bootstrap``."""
        addresses = [self.nodes[b].address for b in bootstrap if b in self.nodes and self.nodes[b].running]
        started = []
        for i in indexes:
            if i not in self.nodes:  # a restart keeps its first bootstrap list (and its data dir)
                self.nodes[i] = ChaosNode(self.lan, i, self.root, addresses, *self.flags, env=self.env)
            started.append(self.nodes[i])
        each(started, ChaosNode.start)
        return started

    def stop_all(self) -> None:
        each(list(self.nodes.values()), ChaosNode.stop)

    def call(self, index: int, method: str, params: Any = None) -> Any:
        body = {"jsonrpc": "2.0", "method": method, "params": [params] if params is not None else [], "id": 1}
        answer = self.http.post(self.nodes[index].url, json=body).json()
        if "error" in answer:
            raise RuntimeError(f"node {index} {method}: {answer['error']}")
        return answer["result"]

    def running(self) -> list[int]:
        return [i for i, node in sorted(self.nodes.items()) if node.running]

    def counter(self, index: int, name: str) -> float:
        """A counter of node ``index``'s ``/metrics`` (``cmnode_sync_rounds``: its ``_total`` sample); 0 if absent."""
        text = self.http.get(self.nodes[index].process.url + "/metrics").text
        for line in text.splitlines():
            if line.startswith(f"{name}_total "):
                return float(line.split()[1])
        return 0.0

    def meshed(self, minimum: int = 1) -> bool:
        """Every running node has at least ``minimum`` peers."""
        counts = each(self.running(), lambda i: len(self.call(i, "NodeService.Peers")["peers"]))
        return all(c >= minimum for c in counts)

    def wait_meshed(self, minimum: int = 1, timeout: float = 60) -> None:
        wait(lambda: self.meshed(minimum), timeout, f"every node with {minimum} peer(s)")

    # -- jobs -----------------------------------------------------------------------------------------

    def create(self, index: int, spec: dict[str, Any] | None = None, *, replicas: int = 0, track: bool = False) -> str:
        job_id: str = self.call(index, "ContainerService.Create", spec or BULK)["job_id"]
        if track or replicas:
            self.tracked[job_id] = replicas
        return job_id

    def jobs_of(self, index: int) -> dict[str, str]:
        """Every job node ``index`` lists, with its status."""
        jobs: dict[str, str] = {}
        cursor = None
        while True:
            page = self.call(index, "ContainerService.List", {"limit": 1000, **({"cursor": cursor} if cursor else {})})
            jobs.update((j["job_id"], j["status"]) for j in page["jobs"])
            cursor = page["next_cursor"]
            if not cursor:
                return jobs

    def snapshot(self, index: int) -> Snapshot:
        jobs = self.jobs_of(index)
        executions = {}
        allocations: dict[str, tuple[int, str, tuple[str, ...]] | None] = {}
        for job_id in self.tracked:
            if job_id in jobs:
                status = self.call(index, "ContainerService.Status", {"job_id": job_id})
                executions[job_id] = frozenset((e["node_id"], e["state"], e["version"]) for e in status["executions"])
                a = status.get("allocation")
                allocations[job_id] = (a["version"], a["by"], tuple(sorted(a["nodes"]))) if a else None
        return Snapshot(jobs, executions, allocations)

    def agreement(self, expected_jobs: Iterable[str] = (), nodes: Sequence[int] | None = None) -> Agreement:
        """Whether every running node knows the same jobs (``expected_jobs`` among them) with the same statuses,
        and the same (node, state, version) executions of the tracked jobs; and no replicas job runs more
        copies than it asked for."""
        indexes = list(nodes) if nodes is not None else self.running()
        expected = set(expected_jobs)
        laggard = self._laggard
        if expected and laggard in indexes:
            # The node that lagged last time, alone: while one node still lacks jobs (a restarted one catching
            # up), asking all of them for every job would load the machine the nodes converge on, and slow
            # what is measured (ten full listings five times a second).
            try:
                lacking = len(expected - set(self.jobs_of(laggard)))
            except (httpx.HTTPError, RuntimeError) as exc:
                return Agreement(False, f"node {laggard} did not answer: {exc!r}")
            if lacking:
                return Agreement(False, f"node {laggard} lacks {lacking} created job(s)")
        try:
            snaps = dict(zip(indexes, each(indexes, self.snapshot), strict=True))
        except (httpx.HTTPError, RuntimeError) as exc:
            return Agreement(False, f"a node did not answer: {exc!r}")
        lacks = {i: len(expected - set(snap.jobs)) for i, snap in snaps.items()}
        self._laggard = max(lacks, key=lambda i: lacks[i]) if any(lacks.values()) else None
        first = snaps[indexes[0]]
        if self._laggard is not None:
            return Agreement(False, f"node {self._laggard} lacks {lacks[self._laggard]} created job(s)")
        for i, snap in snaps.items():
            if set(snap.jobs) != set(first.jobs):
                return Agreement(False, f"nodes {indexes[0]} and {i} know {len(first.jobs)} and {len(snap.jobs)} "
                                        f"jobs, {len(set(snap.jobs) ^ set(first.jobs))} not on both")  # fmt: skip
            if snap.jobs != first.jobs:
                differ = sum(snap.jobs[j] != first.jobs[j] for j in snap.jobs)
                return Agreement(False, f"nodes {indexes[0]} and {i} differ in {differ} job status(es)")
            if snap.executions != first.executions:
                return Agreement(False, f"nodes {indexes[0]} and {i} differ in executions")
            if snap.allocations != first.allocations:
                return Agreement(False, f"nodes {indexes[0]} and {i} differ in allocations")
        for job_id, replicas in self.tracked.items():
            running = [e for e in first.executions.get(job_id, ()) if e[1] == "running"]
            if replicas and len(running) > replicas:
                return Agreement(False, f"job {job_id} runs {len(running)} copies, wanted {replicas}")
            allocation = first.allocations.get(job_id)
            if replicas and allocation is not None and {e[0] for e in running} - set(allocation[2]):
                return Agreement(False, f"job {job_id} runs a copy its allocation does not name")
        return Agreement(True, f"{len(indexes)} nodes agree on {len(first.jobs)} jobs")

    def wait_agreement(
        self,
        expected_jobs: Iterable[str] = (),
        timeout: float = 60,
        interval: float = 0.1,
        nodes: Sequence[int] | None = None,
    ) -> float:
        """Seconds until the nodes (``nodes``, or all running) agree (measured to the start of the snapshot that
        showed it).

        Raises:
            AssertionError: not within ``timeout``; says what differed last.
        """
        expected = set(expected_jobs)
        start = time.monotonic()
        last = Agreement(False, "not checked")
        while time.monotonic() - start < timeout:
            began = time.monotonic()
            last = self.agreement(expected, nodes)
            if last.agreed:
                return began - start
            time.sleep(max(interval, time.monotonic() - began))  # checks take at most half of the nodes' time
        raise AssertionError(f"no agreement within {timeout}s: {last.detail}")


def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            if check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)


def _remove_containers(chaos: Cluster) -> None:
    """The containers the nodes' real jobs left (none if Docker is not there)."""
    with contextlib.suppress(Exception):
        client = DockerClient.from_env()
        try:
            remove_containers(client, *(node.node_id for node in chaos.nodes.values() if node.node_id))
        finally:
            client.close()


def docker_there() -> bool:
    """Whether real jobs can run (dockerd answers and the test image is built)."""
    try:
        client = DockerClient.from_env()
    except Exception:
        return False
    try:
        client.images.get(IMAGE)
        return True
    except Exception:
        return False
    finally:
        client.close()


def arrivals(node: ChaosNode) -> dict[str, float]:
    """job_id -> when ``node`` recorded it from a peer (wall clock, from its log)."""
    out = {}
    for line in node.log.read_text().splitlines():
        if m := RECORDED.match(line):
            out[m.group(2)] = _stamp(m.group(1))
    return out


def logged(node: ChaosNode, text: str, *, after: float, last: bool = False) -> float | None:
    """When (wall clock) ``node`` first (or ``last``) logged a line holding ``text`` at or after ``after``."""
    found = None
    for line in node.log.read_text().splitlines():
        if (m := STAMPED.match(line)) and text in line:
            at = _stamp(m.group(1))
            if at >= after - 0.001:  # the log's milliseconds are truncated
                found = at
                if not last:
                    break
    return found


def _stamp(text: str) -> float:
    """``2026-01-02T03:04:05.678`` (UTC) as seconds since the epoch."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + text[19:])


@contextlib.contextmanager
def cluster(
    size: int,
    root: Path,
    *,
    unavailable: Callable[[str, str], NoReturn] = missing,
    flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """A ``Lan`` of ``size`` and a ``Cluster`` on it (every node started with ``flags`` and ``env``), no node started;
    everything removed afterwards. Where the network cannot be made, ``unavailable(what, why)``: by default the
    test is skipped, and failed where everything is required (CI)."""
    lan = Lan(size)
    try:
        lan.create()
    except NetworkUnavailable as exc:
        unavailable("network namespaces and iptables", f"{exc} (needs root, iproute2, iptables)")
    try:
        with httpx.Client(timeout=15) as http:
            chaos = Cluster(lan, root, http, flags, env)
            try:
                yield chaos
            finally:
                http.close()  # a kept-alive connection would hold each node's graceful stop for its full timeout
                chaos.stop_all()
                _remove_containers(chaos)
    finally:
        lan.close()
