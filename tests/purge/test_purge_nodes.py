"""Job history retention with real ``cmnode run`` processes and dockerd: a node with ``--job-retention 2s`` purges
a finished busybox job (Status says when and why, List no longer shows it, its container is gone), and a second
node that keeps every job (``--job-retention 0``) does not bring it back, even by a catch-up from scratch after a
restart (the tombstone refuses it and the refusal is counted)."""

from __future__ import annotations

import signal
import sqlite3
from typing import Any

import pytest
import trio
from docker.client import DockerClient

from tests.mesh.cluster import RpcError, eventually, job_ids
from tests.mesh.conftest import Cluster, cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]
__all__ = ["cluster"]  # the fixture, imported for this module


async def _purged(c: Cluster, node: Any, job_id: str) -> dict[str, Any] | None:
    """The error data of Status once the node says the job was purged; None before."""
    try:
        await c.call(node, "ContainerService.Status", {"job_id": job_id})
    except RpcError as exc:
        data: dict[str, Any] = exc.error.get("data") or {}
        return data if exc.error["code"] == -32001 and "reason" in data else None
    return None


def _containers(client: DockerClient, node_id: str) -> list[Any]:
    return list(client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}))


async def test_a_finished_job_is_purged_and_a_peer_holding_it_does_not_bring_it_back(
    cluster: Cluster, test_image: str, docker_available: DockerClient
) -> None:
    purging = await cluster.start("purging", "--job-retention", "2s")
    seed = await cluster.address(purging)
    keeping = await cluster.start("keeping", "--job-retention", "0", "--bootstrap", seed)
    both = {purging.node_id, keeping.node_id}

    async def done_everywhere() -> bool:
        try:
            status = await cluster.call(purging, "ContainerService.Status", {"job_id": job_id})
        except RpcError:
            return False
        return {e["node_id"] for e in status["executions"] if e["state"] == "complete"} == both

    job_id = (await cluster.call(keeping, "ContainerService.Create", {"image": test_image, "arguments": ["true"]}))[
        "job_id"
    ]
    await eventually(done_everywhere, timeout=60)
    assert _containers(docker_available, purging.node_id)  # kept for --retention (an hour) until the purge

    data = await eventually(lambda: _purged(cluster, purging, job_id), timeout=30)
    assert data["job_id"] == job_id
    assert data["reason"].startswith("purged on ") and data["reason"].endswith(" after --job-retention 2s")
    assert job_id not in await job_ids(purging, cluster.client)

    async def containers_gone() -> bool:
        # the pass removes the node's containers of the jobs right after the store's purge (Status already says
        # "purged" in between), so their removal is awaited, bounded, not assumed
        return await trio.to_thread.run_sync(_containers, docker_available, purging.node_id) == []

    await eventually(containers_gone, timeout=15, what="the purged job's containers removed")
    status = await cluster.call(keeping, "ContainerService.Status", {"job_id": job_id})  # kept there
    assert status["status"] == "complete"

    # A catch-up from scratch: the purging node forgets how far it had read its peer, and restarts.
    purging.stop(signal.SIGTERM)
    with sqlite3.connect(purging.data_dir / "cmnode.db") as db:
        assert db.execute("DELETE FROM meta WHERE key LIKE 'sync.%'").rowcount == 1
    peer = await cluster.address(keeping)
    purging = await cluster.start("purging", "--job-retention", "2s", "--bootstrap", peer)  # same data directory

    async def caught_up() -> dict[str, Any] | None:
        info = await cluster.call(purging, "NodeService.Info")
        mesh: dict[str, Any] = info["mesh"]
        return mesh if mesh.get("sync_rounds", 0) >= 1 else None

    mesh = await eventually(caught_up, timeout=60)
    assert mesh["sync_dropped"].get("purged", 0) >= 1, mesh
    assert await _purged(cluster, purging, job_id) is not None
    assert job_id not in await job_ids(purging, cluster.client)
