"""Issue 9's findings 1, 2, 3, 7 and 12 replayed against three real ``cmnode run`` processes by a rogue
py-libp2p peer (``rogue_peer.py replay``) connected to every one of them: an execution with version 2^63, a job
whose ``created_at`` is an integer too big for a float, a job holding a lone surrogate, a signed job with
``created_at: Infinity``, and a ``/cmnode/sync/1`` answer with the same values (each node catches up with the
rogue when it connects). Then a hostile HTTP client sends finding 12's requests. Every node stays up, lists and
stores nothing bad (the stores are read back after a clean stop, every row re-validated), and a good job
created right after reaches every node."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from node.identity import verify
from node.model import Execution, Job

from .cluster import eventually, job_ids
from .conftest import Cluster
from .rogue_peer import BAD_JOB_IDS, NOWHERE, PAGE_ENTRIES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

GOOD = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
FINDING_12 = [
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox"}],"id":1e400}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Status","params":[{"job_id":"\\ud800"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.List","params":[{"cursor":"..:1"}],"id":1}',
    b'{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"busybox\\n"}],"id":1}',
]


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} in an answer")

    return json.loads(text, parse_constant=refuse)


async def _line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)


def _read_back(db: Path) -> set[str]:
    """Every job and execution row re-validates with the model's schemas; returns the stored job IDs."""
    conn = sqlite3.connect(str(db))
    try:
        jobs = [Job.from_json(json.loads(r[0])) for r in conn.execute("SELECT body FROM jobs")]
        for (body,) in conn.execute("SELECT body FROM executions"):
            Execution.from_json(json.loads(body))
    finally:
        conn.close()
    for job in jobs:
        assert verify(job.origin, job.canonical_bytes(), job.signature), job.job_id
    return {job.job_id for job in jobs}


async def test_the_findings_replayed_kill_no_node_and_store_nothing(cluster: Cluster) -> None:
    first = await cluster.start("n1")
    seed = await cluster.address(first)
    nodes = [first, *await cluster.start_all(("n2", "--bootstrap", seed), ("n3", "--bootstrap", seed))]
    addresses = [await cluster.address(node) for node in nodes]
    rogue = subprocess.Popen([sys.executable, "-m", "tests.mesh.rogue_peer", "replay", *addresses],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        line = await _line(rogue)
        assert line.startswith("sent 4"), line

        async def synced_with_rogue() -> bool:  # every node caught up with the rogue and dropped its entries
            for node in nodes:  # (the round a connection starts: a periodic round, later, drops them again)
                info = await cluster.call(node, "NodeService.Info")
                if sum(info["mesh"]["sync_dropped"].values()) < PAGE_ENTRIES:
                    return False
            return True

        await eventually(synced_with_rogue, timeout=60)

        async with httpx.AsyncClient(timeout=30) as client:
            for body in FINDING_12:
                response = await client.post(nodes[0].rpc_url, content=body)
                assert response.status_code == 200, response.text
                assert _strict(response.text)["error"]["code"] in (-32600, -32602), response.text  # type: ignore[index]

        good = (await cluster.call(nodes[1], "ContainerService.Create", GOOD))["job_id"]

        async def everywhere() -> bool:
            return all([good in await job_ids(node, cluster.client) for node in nodes])

        await eventually(everywhere, timeout=30)
        for node in nodes:
            assert node.proc is not None and node.proc.poll() is None, node.log.read_text()[-3000:]
            listed = await cluster.client.post(
                node.rpc_url, json={"jsonrpc": "2.0", "method": "ContainerService.List", "params": [{}], "id": 1}
            )
            page = _strict(listed.text)
            assert "result" in page, listed.text  # type: ignore[operator]
            ids = {j["job_id"] for j in page["result"]["jobs"]}  # type: ignore[index]
            assert not {i for i in ids if i.startswith(BAD_JOB_IDS)}, ids
    finally:
        rogue.kill()
        rogue.wait()
    assert await cluster.stop_all(nodes) == [0, 0, 0]
    for node in nodes:
        stored = _read_back(node.data_dir / "cmnode.db")
        assert good in stored and not {i for i in stored if i.startswith(BAD_JOB_IDS)}, stored
        assert "Traceback" not in node.log.read_text(), node.log.read_text()[-3000:]
