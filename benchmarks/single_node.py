"""Single-node benchmark: cmnode against the raw Docker SDK and a bare Quart-Trio endpoint, side by side.

    .venv/bin/python -m benchmarks.single_node [--samples 20] [--burst 60] [--seconds 4]

Prints (1) median/p95 time from Create to running and to complete for a trivial container, against the raw
SDK doing create+start+wait; (2) trivial containers per second at worker-count 10 against 10 raw SDK threads;
(3) Status requests per second against a bare Quart-Trio endpoint returning a constant. Every ratio is
measured in this one run, interleaved where it can be, so machine noise hits both sides alike.
Targets: (1) <= 1.15x, (2) >= 0.9x, (3) >= 0.7x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import trio
from docker.client import DockerClient  # not docker.DockerClient: mypy would take the repository's docker/ folder

from benchmarks.common import IMAGE, call, median, node_process, pct, remove_containers

RAW_LABEL = "cmnode-bench.raw=1"

BARE_APP = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio
app = QuartTrio("bare")
@app.post("/jrpc")
async def jrpc():
    body = b'{"jsonrpc":"2.0","result":{"status":"complete","job_id":"x"},"id":1}'
    return Response(body, content_type="application/json")
config = Config(); config.bind = ["127.0.0.1:0"]; config.accesslog = None; config.loglevel = "WARNING"
async def main():
    async with trio.open_nursery() as n:
        binds = await n.start(serve, app, config)
        print(binds[0], flush=True)
trio.run(main)
"""


def raw_run(client: DockerClient) -> tuple[float, float]:
    """create+start+wait of the trivial container; returns (to running, to exit) in seconds."""
    t0 = time.time()
    c = client.containers.create(IMAGE, ["true"], labels={"cmnode-bench.raw": "1"}, init=True)
    c.start()
    t1 = time.time()
    c.wait()
    return t1 - t0, time.time() - t0


def cmnode_run(http: httpx.Client, url: str) -> tuple[float, float]:
    t0 = time.time()
    spec = {"image": IMAGE, "arguments": ["true"], "env": {}}
    job_id = call(http, url, "ContainerService.Create", spec)["job_id"]
    while True:
        status = call(http, url, "ContainerService.Status", {"job_id": job_id})
        if status["status"] in ("complete", "failed"):
            break
        time.sleep(0.05)  # the timing comes from the node's own timestamps, not from this poll
    e = status["executions"][0]
    assert e["state"] == "complete", e
    return e["started_at"] - t0, e["finished_at"] - t0


def latency(samples: int, url: str) -> None:
    client = DockerClient.from_env()
    raw: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    with httpx.Client(timeout=30) as http:
        raw_run(client)
        cmnode_run(http, url)  # warm both paths
        for _ in range(samples):
            raw.append(raw_run(client))
            ours.append(cmnode_run(http, url))
    print("(1) latency of one trivial container, ms (median / p95)")
    for i, what in enumerate(("to running", "to complete")):
        r = [x[i] * 1000 for x in raw]
        o = [x[i] * 1000 for x in ours]
        print(
            f"    {what:12} cmnode {median(o):6.1f} / {pct(o, 95):6.1f}"
            f"   raw SDK {median(r):6.1f} / {pct(r, 95):6.1f}   ratio {median(o) / median(r):.2f}x (target <= 1.15x)"
        )
    client.close()


def throughput(burst: int, url: str) -> None:
    client = DockerClient.from_env(max_pool_size=16)
    t0 = time.time()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: raw_run(client), range(burst)))
    raw_rate = burst / (time.time() - t0)
    with httpx.Client(timeout=60) as http:
        t0 = time.time()
        with ThreadPoolExecutor(10) as pool:
            spec = {"image": IMAGE, "arguments": ["true"]}
            jobs = list(pool.map(lambda _: call(http, url, "ContainerService.Create", spec)["job_id"], range(burst)))
        finished = []
        for job_id in jobs:
            while (s := call(http, url, "ContainerService.Status", {"job_id": job_id}))["status"] not in (
                "complete",
                "failed",
            ):
                time.sleep(0.05)
            finished.append(s["executions"][0]["finished_at"])
    ours_rate = burst / (max(finished) - t0)
    print(f"(2) throughput of {burst} trivial containers: cmnode {ours_rate:.2f}/s, raw SDK 10 threads {raw_rate:.2f}/s"
          f", ratio {ours_rate / raw_rate:.2f}x (target >= 0.9x)")  # fmt: skip
    client.close()


async def _hammer(url: str, body: bytes, seconds: float, concurrency: int) -> float:
    count = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def loop() -> None:
            nonlocal count
            while True:
                r = await http.post(url, content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 200
                count += 1

        with trio.move_on_after(seconds):
            async with trio.open_nursery() as n:
                for _ in range(concurrency):
                    n.start_soon(loop)
    return count / seconds


def status_rps(seconds: float, url: str, job_id: str) -> None:
    bare = subprocess.Popen([sys.executable, "-c", BARE_APP], stdout=subprocess.PIPE, text=True)
    assert bare.stdout is not None
    bare_url = bare.stdout.readline().strip() + "/jrpc"
    request = {"jsonrpc": "2.0", "method": "ContainerService.Status", "params": [{"job_id": job_id}], "id": 1}
    body = json.dumps(request).encode()
    try:
        trio.run(_hammer, bare_url, body, 0.5, 8)  # warm-up
        trio.run(_hammer, url, body, 0.5, 8)
        ours, base = [], []
        for _ in range(2):  # interleave: noise hits both
            base.append(trio.run(_hammer, bare_url, body, seconds / 2, 8))
            ours.append(trio.run(_hammer, url, body, seconds / 2, 8))
    finally:
        bare.terminate()
        bare.wait()
    o, b = sum(ours) / len(ours), sum(base) / len(base)
    print(
        f"(3) Status requests/s: cmnode {o:.0f}, bare Quart-Trio constant {b:.0f}, ratio {o / b:.2f}x (target >= 0.7x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"cmnode single-node benchmark ({os.cpu_count()} CPUs)")
    with node_process("--worker-count", "10", "--queue-size", "1000") as url:
        with httpx.Client() as http:
            node_id = call(http, url, "NodeService.Info")["node_id"]
        try:
            latency(args.samples, url)
            throughput(args.burst, url)
            with httpx.Client() as http:
                job_id = call(http, url, "ContainerService.Create", {"image": IMAGE, "arguments": ["true"]})["job_id"]
            status_rps(args.seconds, url, job_id)
        finally:
            remove_containers(RAW_LABEL)
            remove_containers(f"cmnode.node_id={node_id}")


if __name__ == "__main__":
    main()
