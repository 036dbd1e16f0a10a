"""CLI start-up benchmark: how long ``cmnode status JOB`` takes, wall clock, against ``python -c pass``.

    .venv/bin/python -m benchmarks.cli [--samples 20]

A client command is a fresh process each time, so its cost is mostly start-up: the interpreter, cyclopts,
the stdlib HTTP client and one round trip to a local node. Runs alternate between the commands, so machine
noise hits all alike. Also shown, for context: ``--json`` output, the rich table, and bare imports.
Target: ``cmnode status`` under 0.3 s (median).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import IMAGE, median, node_process, pct, remove_containers
from rpc.client import Client

TARGET = 0.3
_SCRIPT = Path(sys.executable).with_name("cmnode")
CMNODE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "node"]


def wall(command: list[str], env: dict[str, str]) -> float:
    begin = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    print(f"cmnode CLI start-up benchmark ({os.cpu_count()} CPUs, {args.samples} runs each, wall seconds)")
    with node_process() as url:
        with Client(url) as client:
            job_id = client.call("ContainerService.Create", {"image": IMAGE, "arguments": ["true"]})["job_id"]
            node_id = client.call("NodeService.Info")["node_id"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMNODE_")} | {"CMNODE_URL": url}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import cyclopts'": [sys.executable, "-c", "import cyclopts"],
            "python -c 'import httpx'": [sys.executable, "-c", "import httpx"],
            "cmnode status JOB --json": [*CMNODE, "status", job_id, "--json"],
            "cmnode status JOB (table)": [*CMNODE, "status", job_id],
        }
        for command in commands.values():  # warm the page cache and the byte-code caches
            wall(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.samples):
            for name, command in commands.items():
                times[name].append(wall(command, env))
    remove_containers(f"cmnode.node_id={node_id}")
    base = median(times["python -c pass"])
    for name, values in times.items():
        print(f"  {name:30} median {median(values):.3f}  p95 {pct(values, 95):.3f}  ({median(values) / base:.1f}x)")
    status = median(times["cmnode status JOB (table)"])
    verdict = "meets" if status < TARGET else "MISSES"
    print(f"cmnode status: {status:.3f} s median, {status / base:.1f}x python -c pass; {verdict} the {TARGET} s target")


if __name__ == "__main__":
    main()
