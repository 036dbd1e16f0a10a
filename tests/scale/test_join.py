"""A node joining one whose store holds thousands of finished jobs, each with an execution by one of three nodes,
gets every job and execution through catch-up's pages (real processes on loopback), and runs none of them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from benchmarks.catchup import NO_DOCKER, fill
from node.identity import load_or_create
from tests.support import NodeProcess, Rpc, eventually

pytestmark = pytest.mark.slow

JOBS = 4000


def _rows(db: Path) -> tuple[set[str], set[tuple[str, str, int]]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        jobs = {r[0] for r in conn.execute("SELECT job_id FROM jobs")}
        executions = {(r[0], r[1], r[2]) for r in conn.execute("SELECT job_id, node_id, version FROM executions")}
    finally:
        conn.close()
    return jobs, executions


async def test_a_joiner_gets_every_job_and_execution(tmp_path: Path) -> None:
    peers = [load_or_create(tmp_path / name) for name in ("b", "c")]
    await fill(tmp_path / "sender", peers, JOBS)
    sender = NodeProcess(tmp_path / "sender", "--docker-host", NO_DOCKER)
    joiner = NodeProcess(tmp_path / "joiner", "--docker-host", NO_DOCKER)
    await trio.to_thread.run_sync(sender.start)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            address = (await Rpc(client, sender.rpc_url).call("NodeService.Info"))["addresses"][0]
            joiner.command += ["--bootstrap", address]
            await trio.to_thread.run_sync(joiner.start)
            rpc = Rpc(client, joiner.rpc_url)

            async def caught_up() -> dict[str, Any] | None:
                mesh = (await rpc.call("NodeService.Info"))["mesh"]
                return mesh if mesh["sync_jobs"] >= JOBS and mesh["sync_executions"] >= JOBS else None

            mesh = await eventually(caught_up, timeout=90, interval=0.5, what="the joiner caught up")
            assert mesh["sync_dropped"] == {}
            listed = await rpc.call("ContainerService.List", {"limit": 5})
            assert all(job["status"] in ("complete", "failed") for job in listed["jobs"])
    finally:
        joiner.stop()
        sender.stop()
    sent_jobs, sent_executions = _rows(tmp_path / "sender" / "cmnode.db")
    got_jobs, got_executions = _rows(tmp_path / "joiner" / "cmnode.db")
    assert len(sent_jobs) == JOBS and got_jobs == sent_jobs
    assert got_executions == sent_executions  # every one, at its version; none of the joiner's own: nothing ran
