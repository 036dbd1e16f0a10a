"""Store benchmark: what a durable store costs Create, and how soon a node holding 100,000 jobs serves again.

    .venv/bin/python -m benchmarks.store [--seconds 4] [--rounds 5] [--concurrency 32] [--jobs 100000]

(1) Create throughput: concurrent JSON-RPC Creates against a real ``cmnode run`` whose data-dir is on disk
(SQLite WAL, synchronous=FULL, group commit), and against the same node with its data-dir on a RAM disk
(/dev/shm: fsync costs nothing there), rounds interleaved so machine noise hits both sides. Both nodes point at
a Docker socket that does not exist, so their workers park on "waiting for the Docker daemon" and the figure is
the accept path alone: validate, sign, store durably, queue. Target >= 0.8x.
(2) Restart: a node whose store holds 100,000 finished jobs, from process start to its first RPC answers
(NodeService.Info, then a List page), beside the same for an empty store; and, in this process, the store's
own part: opening it and the recovery scan. Target <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import trio

from benchmarks.common import IMAGE, call, median
from node.identity import load_or_create
from node.model import Execution, Job, JobSpec, State
from node.store import Store

NO_DOCKER = "unix:///nonexistent/cmnode-bench/docker.sock"
RAM_DISK = Path("/dev/shm")


@contextmanager
def node_at(data_dir: Path, *flags: str) -> Iterator[tuple[str, float]]:
    """A ``cmnode run`` process on ``data_dir``; yields its /jrpc URL and the seconds it took to answer RPC."""
    begin = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0", "--p2p-port", "0",
         "--no-mdns", "--data-dir", str(data_dir), "--log-level", "warning", "--docker-host", NO_DOCKER, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        match = re.search(r"RPC at (\S+)", proc.stdout.readline())
        if match is None:
            raise SystemExit(f"node on {data_dir} did not start")
        url = match.group(1)
        with httpx.Client(timeout=30) as http:
            call(http, url, "NodeService.Info")
            call(http, url, "ContainerService.List", {"limit": 10})
        yield url, time.monotonic() - begin
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _creates(url: str, seconds: float, concurrency: int) -> float:
    """Creates acknowledged per second by ``concurrency`` clients hammering ``url`` for ``seconds``."""
    done = 0
    spec = {"image": IMAGE, "arguments": ["true"], "env": {"A": "1"}}
    body = {"jsonrpc": "2.0", "method": "ContainerService.Create", "params": [spec], "id": 1}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def client() -> None:
            nonlocal done
            while True:
                answer = (await http.post(url, json=body)).json()
                if "result" not in answer:
                    raise SystemExit(f"Create failed: {answer}")
                done += 1

        begin = time.monotonic()
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(client)
        return done / (time.monotonic() - begin)


def create_throughput(seconds: float, rounds: int, concurrency: int) -> None:
    flags = ("--queue-size", "1000000", "--worker-count", "10")
    with (
        tempfile.TemporaryDirectory(prefix="cmnode-bench-disk-") as disk,
        tempfile.TemporaryDirectory(prefix="cmnode-bench-ram-", dir=RAM_DISK) as ram,
        node_at(Path(disk), *flags) as (disk_url, _),
        node_at(Path(ram), *flags) as (ram_url, _),
    ):
        sides = {"disk": disk_url, "ram": ram_url}
        for url in sides.values():  # warm-up: connections, first commits, code paths
            trio.run(_creates, url, 0.5, concurrency)
        rates: dict[str, list[float]] = {"disk": [], "ram": []}
        for i in range(rounds):
            for name in ("disk", "ram") if i % 2 == 0 else ("ram", "disk"):
                rates[name].append(trio.run(_creates, sides[name], seconds, concurrency))
    d, r = median(rates["disk"]), median(rates["ram"])
    print(f"(1) Create throughput, {concurrency} concurrent clients, {rounds} x {seconds:g} s rounds interleaved:")
    print(f"    durable store on disk {d:7.0f}/s   {' '.join(f'{x:.0f}' for x in rates['disk'])}")
    print(f"    store on a RAM disk   {r:7.0f}/s   {' '.join(f'{x:.0f}' for x in rates['ram'])}")
    print(f"    ratio {d / r:.2f}x (target >= 0.8x)")


async def _fill(data_dir: Path, jobs: int) -> None:
    """``jobs`` finished jobs of this node, written through the store API, 10,000 to a commit."""
    node_id = load_or_create(data_dir).node_id
    async with Store.open(data_dir / "cmnode.db") as store:
        base = time.time() - jobs
        for first in range(0, jobs, 10_000):
            batch = []
            for i in range(first, min(jobs, first + 10_000)):
                job = Job(
                    job_id=str(uuid.uuid4()),
                    spec=JobSpec(image=IMAGE, arguments=("true",), labels={"bench": str(i % 10)}),
                    origin=node_id,
                    created_at=base + i,
                )
                state = State.COMPLETE if i % 5 else State.FAILED
                execution = Execution(job_id=job.job_id, node_id=node_id, state=state, exit_code=0 if i % 5 else 1,
                                      created_at=base + i, updated_at=base + i, version=4)  # fmt: skip
                batch.append((job, execution))
            await store.add_jobs(batch)


async def _open_and_scan(data_dir: Path) -> tuple[float, int]:
    """Seconds to open the store and run recovery's scan plus a first List page, as a starting node does."""
    node_id = load_or_create(data_dir).node_id
    begin = time.monotonic()
    async with Store.open(data_dir / "cmnode.db") as store:
        unfinished = await store.unfinished(node_id)
        await store.list_jobs(limit=100)
        return time.monotonic() - begin, len(unfinished)


def restart_time(jobs: int, rounds: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="cmnode-bench-full-") as full,
        tempfile.TemporaryDirectory(prefix="cmnode-bench-empty-") as empty,
    ):
        begin = time.monotonic()
        trio.run(_fill, Path(full), jobs)
        print(f"(2) restart: wrote {jobs} jobs through the store API in {time.monotonic() - begin:.1f} s")
        with node_at(Path(empty)):
            pass  # creates the empty store and identity, so both sides restart an existing node
        times: dict[str, list[float]] = {"full": [], "empty": []}
        for _ in range(rounds):
            for name, where in (("full", full), ("empty", empty)):
                with node_at(Path(where)) as (_, took):
                    times[name].append(took)
        store_open, unfinished = trio.run(_open_and_scan, Path(full))
    f, e = median(times["full"]), median(times["empty"])
    print(f"    process start to RPC served, {jobs} jobs {f:5.2f} s   {' '.join(f'{x:.2f}' for x in times['full'])}")
    print(f"    same with an empty store     {e:5.2f} s   {' '.join(f'{x:.2f}' for x in times['empty'])}")
    print(f"    store open + recovery scan + List page: {store_open * 1000:.0f} ms ({unfinished} to recover)")
    print(f"    {f:.2f} s (target <= 3 s); the jobs add {f - e:+.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    if not RAM_DISK.is_dir():
        raise SystemExit(f"{RAM_DISK} (a RAM disk) is needed for the in-memory side")
    print(f"cmnode store benchmark ({os.cpu_count()} CPUs)")
    create_throughput(args.seconds, args.rounds, args.concurrency)
    restart_time(args.jobs, args.rounds)


if __name__ == "__main__":
    main()
