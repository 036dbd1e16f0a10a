"""Helpers shared by the benchmarks: start a real ``cmnode run`` process and talk JSON-RPC to it."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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
    import docker

    client = docker.from_env()
    for c in client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
    client.close()
