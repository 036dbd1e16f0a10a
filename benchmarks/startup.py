"""Start-up benchmark: how long a node killed -9 takes, once restarted, to be ready, to meet a peer and to catch up.

    .venv/bin/python -m benchmarks.startup [--runs 3] [--jobs 100] [--baseline REF]

Two real ``cmnode run`` processes on loopback (mDNS off): a peer, and a subject that bootstraps through it and
runs one real container (a busybox ``sleep``, when Docker and the test image are there, so that the restart has
a container to recover and the daemon to reconcile with). Each run kills the subject with SIGKILL, creates
``--jobs`` jobs on the peer while it is down (placed on no node: recorded everywhere, run nowhere), restarts it on
the same data directory and splits its start into phases:

* exec -> ready: from the process's exec until it prints its ready line (RPC answering);
* exec -> first peer: until it logs its first ``peer connected`` (the timestamp in its log line; the mesh starts
  before the RPC server, so this comes before ready);
* first peer -> caught up: until it logs ``caught up with peer=...`` for the jobs it missed;
* exec -> caught up: the two above together;
* exec -> every job listed: the same, seen from outside (``ContainerService.List`` polled every 20 ms);
* CPU used until then: the restarted process's user and system time at that moment. On a machine others load,
  the wall-clock phases vary with their load; this does not.

The medians of ``--runs`` restarts are printed; with ``--baseline REF`` the same runs first with both processes at
git revision REF (``git archive`` into a temporary directory, as ``benchmarks/catchup.py`` does) and each figure
is shown with its ratio to the baseline. Bounded: every wait has a timeout (``--timeout``).

Measured on the 2-core dev machine (``--runs 4 --baseline`` the commit before ``node/startup.py``): exec -> ready
1.46 s -> 1.12 s (1.30x), exec -> caught up 1.63 s -> 1.32 s, CPU 1.62 s -> 1.31 s. The first peer connects
~50 ms before ready (the mesh starts before the RPC server) and the catch-up of 100 jobs takes ~0.2 s after it:
nearly all of a start is imports (``node/startup.py``). Under load from other processes the wall-clock phases
grow with it (2-4.5 s measured for the same start), the CPU figure does not. Then, with the modules a node never
runs left out (``--runs 5 --baseline HEAD``, other work on the machine): CPU 1.27 s -> 1.05 s (1.21x), exec ->
ready 1.17 s -> 0.95 s, exec -> caught up 1.35 s -> 1.09 s.
"""

from __future__ import annotations

import argparse
import calendar
import compileall
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx

from benchmarks.catchup import ROOT, source_at
from benchmarks.common import IMAGE, call, median

READY = re.compile(r"node (\S+) ready, RPC at (\S+)")
NOWHERE = "12D3KooWNowhereNowhereNowhereNowhereNowhereNowhere1"
BULK = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)Z level=\w+ logger=\S+ msg=(.*)$")
POLL = 0.02
T = TypeVar("T")
PHASES = ("exec -> ready", "exec -> first peer", "first peer -> caught up", "exec -> caught up",
          "exec -> every job listed", "CPU used until then")  # fmt: skip
TICKS = os.sysconf("SC_CLK_TCK")


class Proc:
    """A ``cmnode run`` on loopback from the source tree ``code``, logging (info) to ``log``."""

    def __init__(self, code: Path, data: Path, log: Path, *flags: str) -> None:
        self.command = [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0",
                        "--p2p-port", "0", "--no-mdns", "--data-dir", str(data), *flags]  # fmt: skip
        self.code, self.log = code, log
        self.proc: subprocess.Popen[str] | None = None
        self.node_id = self.url = ""
        self.launched = self.ready = 0.0

    def start(self, timeout: float) -> None:
        with self.log.open("a") as log:
            self.launched = time.time()
            self.proc = subprocess.Popen(
                self.command, cwd=self.code, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("CMNODE_")}, "PYTHONUNBUFFERED": "1",
                     "PYTHONPATH": str(self.code)},
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = _line_within(self.proc, timeout)
        self.ready = time.time()
        match = READY.search(line)
        if match is None:
            self.kill()
            raise SystemExit(f"node did not start: {line!r}\n{self.log.read_text()[-2000:]}")
        self.node_id, self.url = match.group(1), match.group(2)

    def cpu(self) -> float:
        """CPU seconds (user and system) the process has used: on a shared machine, the figure load leaves alone."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def _line_within(proc: subprocess.Popen[str], timeout: float) -> str:
    import select

    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], timeout)[0]:
        return ""
    return proc.stdout.readline()


def logged(log: Path, after: float, text: str) -> float | None:
    """When (wall clock) ``log`` first says ``text`` at or after ``after``; None if it does not."""
    for line in log.read_text().splitlines():
        match = STAMP.match(line)
        if match is None or text not in match.group(3):
            continue
        at = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")) + float(match.group(2))
        if at >= after - 0.001:  # the log's milliseconds are truncated
            return at
    return None


def listed(http: httpx.Client, url: str) -> set[str]:
    jobs: set[str] = set()
    cursor = None
    while True:
        page = call(http, url, "ContainerService.List", {"limit": 1000, **({"cursor": cursor} if cursor else {})})
        jobs.update(j["job_id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return jobs


def _has(http: httpx.Client, url: str, jobs: frozenset[str]) -> bool:
    return jobs <= listed(http, url)


def docker_there() -> bool:
    try:
        from docker.client import DockerClient

        client = DockerClient.from_env()
        try:
            client.images.get(IMAGE)
            return True
        finally:
            client.close()
    except Exception:
        return False


def remove_containers(node_id: str) -> None:
    with contextlib.suppress(Exception):
        from docker.client import DockerClient

        client = DockerClient.from_env()
        try:
            for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
                with contextlib.suppress(Exception):
                    client.api.remove_container(c["Id"], force=True)
        finally:
            client.close()


@dataclass
class Result:
    label: str
    phases: dict[str, list[float]]

    def median(self, phase: str) -> float:
        values = self.phases[phase]
        return median(values) if values else float("nan")


def measure(label: str, code: Path, *, runs: int, jobs: int, timeout: float, real: bool) -> Result:
    phases: dict[str, list[float]] = {name: [] for name in PHASES}
    with tempfile.TemporaryDirectory(prefix="cmnode-bench-startup-") as tmp, httpx.Client(timeout=30) as http:
        root = Path(tmp)
        peer = Proc(code, root / "peer", root / "peer.log", "--docker-host", "unix:///nonexistent/docker.sock")
        subject: Proc | None = None
        try:
            peer.start(timeout)
            address = call(http, peer.url, "NodeService.Info")["addresses"][0]
            subject = Proc(code, root / "subject", root / "subject.log", "--bootstrap", address)
            subject.start(timeout)
            if real:  # a container running when it is killed: its restart recovers it and reconciles with Docker
                spec = {"image": IMAGE, "arguments": ["sleep", "600"], "placement": {"nodes": [subject.node_id]}}
                call(http, subject.url, "ContainerService.Create", spec)
            created = {call(http, peer.url, "ContainerService.Create", BULK)["job_id"]}
            _wait(partial(_has, http, subject.url, frozenset(created)), timeout, "the subject's first catch-up")
            for run in range(runs):
                subject.kill()
                created |= {call(http, peer.url, "ContainerService.Create", BULK)["job_id"] for _ in range(jobs)}
                subject.start(timeout)
                began, ready, wanted = subject.launched, subject.ready, frozenset(created)
                _wait(partial(_has, http, subject.url, wanted), timeout, "the restarted subject's catch-up")
                every, cpu = time.time(), subject.cpu()
                peer_at = _wait(partial(logged, subject.log, began, "peer connected"), timeout, "peer connected")
                caught = _wait(partial(logged, subject.log, began, "caught up with peer="), timeout, "caught up")
                figures = (ready - began, peer_at - began, caught - peer_at, caught - began, every - began, cpu)
                for name, value in zip(PHASES, figures, strict=True):
                    phases[name].append(value)
                print(f"  {label} run {run + 1}: " + ", ".join(f"{n} {v:.2f} s" for n, v in zip(PHASES, figures,
                                                                                               strict=True)),
                      flush=True)  # fmt: skip
        finally:
            if subject is not None:
                subject.kill()
                remove_containers(subject.node_id)
            peer.kill()
    return Result(label, phases)


def _wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            if value := check():
                return value
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {timeout:g} s")
        time.sleep(POLL)


def report(result: Result, baseline: Result | None) -> None:
    print(f"{result.label}: median of {len(result.phases[PHASES[0]])} restarts")
    for phase in PHASES:
        value = result.median(phase)
        ratio = ""
        if baseline is not None and value > 0:
            before = baseline.median(phase)
            ratio = f"   {before / value:5.2f}x faster than the baseline ({before:.2f} s)"
        print(f"  {phase:<26} {value:6.2f} s{ratio}")


def compiled(tree: Path) -> Path:
    """``tree`` with its packages' bytecode written, as an install leaves them. A node run from a source tree where
    PYTHONDONTWRITEBYTECODE is set (a developer's or an agent's shell; the nodes inherit it) compiles its ~80
    modules at every start: ~0.08 s of CPU of a ~0.5 s start, and only for the tree that has no bytecode yet, so
    an A/B against a fresh ``git archive`` would measure that too."""
    for package in ("node", "rpc"):
        compileall.compile_dir(tree / package, quiet=1)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=100, help="jobs created on the peer while the subject is down")
    parser.add_argument("--baseline", metavar="REF", help="first run both processes at this git revision")
    parser.add_argument("--timeout", type=float, default=60.0, help="for every wait")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the source tree measured (default: this one)")
    args = parser.parse_args()
    real = docker_there()
    print(f"cmnode start-up benchmark ({os.cpu_count()} CPUs; {'a real container' if real else 'no Docker'})")
    baseline = None
    if args.baseline:
        with source_at(args.baseline) as old:
            baseline = measure(f"baseline ({args.baseline})", compiled(old), runs=args.runs, jobs=args.jobs,
                               timeout=args.timeout, real=real)  # fmt: skip
        report(baseline, None)
    label = "this tree" if args.tree == ROOT else str(args.tree)
    result = measure(label, compiled(args.tree), runs=args.runs, jobs=args.jobs, timeout=args.timeout, real=real)
    report(result, baseline)


if __name__ == "__main__":
    main()
