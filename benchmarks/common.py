"""Helpers shared by the benchmarks: start a real ``cmnode run`` process and talk JSON-RPC to it."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

IMAGE = "cmnode-test/busybox:latest"


@contextmanager
def node_process(*flags: str) -> Iterator[str]:
    """A ``cmnode run`` process on loopback (mDNS off, port 0); yields its /jrpc URL."""
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0", "--p2p-port", "0",
             "--no-mdns", "--data-dir", data, "--log-level", "warning", *flags],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"RPC at (\S+)", line)
        if match is None:
            proc.kill()
            raise SystemExit(f"node did not start: {line!r}")
        try:
            yield match.group(1)
        finally:
            proc.terminate()
            proc.wait(timeout=15)


READY = re.compile(r"node (\S+) ready, RPC at (\S+)")


class LoggedNode:
    """A ``cmnode run`` process on loopback (mDNS off, port 0) with its store in ``data/data`` that logs to
    ``data/node.log``, for benchmarks that read its log or outlive one ``with`` block; ``stop`` it.

    ``code``: run the node from that source tree (e.g. an older revision, see benchmarks/catchup.py) instead of
    the installed one. ``launched`` and ``ready`` are the monotonic times of its launch and its ready line."""

    def __init__(self, data: Path, *flags: str, queue_size: int = 10_000, code: Path | None = None) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.log = data / "node.log"
        self.data_dir = data / "data"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if code is not None:
            env["PYTHONPATH"] = str(code)
        self.launched = time.monotonic()
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0",
                 "--p2p-port", "0", "--no-mdns", "--data-dir", str(self.data_dir), "--queue-size", str(queue_size),
                 *flags],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=code,
            )  # fmt: skip
        assert self.proc.stdout is not None
        match = READY.search(self.proc.stdout.readline())
        if match is None:
            self.proc.kill()
            raise SystemExit(f"node did not start:\n{self.log.read_text()[-2000:]}")
        self.ready = time.monotonic()
        self.node_id, self.url = match.group(1), match.group(2)

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (``VmHWM``), in MB; NaN once it has exited."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")

    def cpu_seconds(self) -> float:
        """The CPU time (user and system) the process has used so far, in seconds; NaN once it has exited."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def call(client: httpx.Client, url: str, method: str, params: Any = None) -> Any:
    body = client.post(url, json={"jsonrpc": "2.0", "method": method, "params": [params or {}], "id": 1}).json()
    if "error" in body:
        raise RuntimeError(body["error"])
    return body["result"]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def remove_containers(label: str) -> None:
    from docker.client import DockerClient

    client = DockerClient.from_env()
    for c in client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
    client.close()
