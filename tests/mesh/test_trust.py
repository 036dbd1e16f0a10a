"""Trust between members, against a real ``cmnode run`` and a rogue py-libp2p peer (tests/mesh/rogue_peer.py,
``forge``) that is a member of the open mesh but not a trusted peer.

Once, catch-up accepted any execution (an invented node's ``running`` execution kept a job running everywhere)
and believed a sync page's bare ``cancelled: true``; any peer could cancel any job by gossip. Now, on gossip and
catch-up alike: an execution counts only signed by the node it describes, a cancel only signed and from the
job's origin or a trusted peer, and a job from an untrusted origin is dropped, never run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from node.identity import load_or_create

from .cluster import eventually, job_ids
from .conftest import Cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    assert proc.stdout is not None
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)


async def test_forged_executions_and_cancels_and_untrusted_jobs_are_dropped(
    cluster: Cluster, test_image: str, tmp_path: Path
) -> None:
    friend = load_or_create(tmp_path / "friend")  # the one trusted peer: the rogue is a member, not trusted
    node = await cluster.start("n1", "--trusted-peer", friend.node_id)
    job_id = (
        await cluster.call(node, "ContainerService.Create", {"image": test_image, "arguments": ["sleep", "300"]})
    )["job_id"]

    async def state() -> dict[str, Any]:
        status: dict[str, Any] = await cluster.call(node, "ContainerService.Status", {"job_id": job_id})
        return status

    await eventually(lambda: _is(state, "running"), timeout=60)
    rogue = subprocess.Popen(
        [sys.executable, "-m", "tests.mesh.rogue_peer", "forge", await cluster.address(node), job_id],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        forged = await _line(rogue)
        assert forged.startswith("forged "), forged
        untrusted_job = forged.split()[1]
        assert (await _line(rogue)).startswith("synced")

        async def counted() -> bool:
            mesh = (await cluster.call(node, "NodeService.Info"))["mesh"]
            gossip, sync = mesh["dropped"], mesh["sync_dropped"]
            return (
                gossip.get("unverified", 0) >= 1  # the cancel in the node's own name, signed by the rogue
                and gossip.get("unauthorized", 0) >= 1  # the rogue's own cancel: neither origin nor trusted
                and gossip.get("untrusted", 0) >= 1  # the rogue's job
                and sync.get("unverified", 0) >= 3  # two forged executions, the cancel in the node's name
                and sync.get("untrusted", 0) >= 1
            )

        await eventually(counted, timeout=30)
        status = await state()
        assert status["status"] == "running", status
        assert [e["node_id"] for e in status["executions"]] == [node.node_id], status
        assert untrusted_job not in await job_ids(node, cluster.client)
        await trio.sleep(2)  # anything still in flight would have landed by now
        assert (await state())["status"] == "running"
    finally:
        rogue.kill()
        rogue.wait()
    await cluster.call(node, "ContainerService.Stop", {"job_id": job_id})  # the origin's own Stop still works
    await eventually(lambda: _is(state, "cancelled"), timeout=30)
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.log.read_text()


async def _is(state: Any, wanted: str) -> bool:
    return bool((await state())["status"] == wanted)
