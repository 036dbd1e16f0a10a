"""Merging what peers send (node/replica.py, reached through the node's ``Inbound`` methods) is idempotent and
order-tolerant. A real node in this process (store, executor, dockerd) with no peers; the messages are handed
to the node directly, as the mesh does after validating them (the network is not the subject here)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.trust import sign_cancel
from tests.node.conftest import NodeFactory, start_node

pytestmark = pytest.mark.docker
__all__ = ["start_node"]  # the fixture, imported for this module


def _job(origin: Identity, image: str, job_id: str) -> Job:
    job = Job(job_id=job_id, spec=JobSpec(image=image, arguments=("true",)), origin=origin.node_id,
              created_at=time.time())  # fmt: skip
    return replace(job, signature=origin.sign(job.canonical_bytes()))


async def test_merge_is_idempotent_and_order_tolerant(start_node: NodeFactory, tmp_path: Path, test_image: str) -> None:
    running, rpc = await start_node()
    node = running.node
    replica = node  # the node is the mesh's Inbound: these are the calls the mesh makes
    peer = load_or_create(tmp_path / "peer")

    # A cancel heard before its job: the job is recorded cancelled and never runs here.
    early = _job(peer, test_image, "cancel-first")
    await replica.on_cancel(sign_cancel(peer, early.job_id))
    assert await replica.on_job(early)
    record = await node.store.get_job(early.job_id)
    assert record is not None and record.cancelled
    assert (await rpc.status(early.job_id))["executions"] == []

    # An execution heard before its job; the job then arrives twice. It is finished everywhere, so it is
    # recorded without running here, and an older version of the execution changes nothing.
    done = _job(peer, test_image, "finished-elsewhere")
    complete = Execution(job_id=done.job_id, node_id=peer.node_id, state=State.COMPLETE, exit_code=0, version=4)
    assert await replica.on_executions([complete]) == 1
    assert await replica.on_job(done)
    assert not await replica.on_job(done)
    assert await replica.on_executions([replace(complete, state=State.RUNNING, version=3)]) == 0
    status = await rpc.status(done.job_id)
    assert status["status"] == "complete"
    assert [(e["node_id"], e["state"], e["version"]) for e in status["executions"]] == [(peer.node_id, "complete", 4)]

    # Still running elsewhere: placement "all" runs it here too, once.
    active = _job(peer, test_image, "still-active")
    await replica.on_executions([Execution(job_id=active.job_id, node_id=peer.node_id, state=State.RUNNING)])
    assert await replica.on_job(active)
    assert not await replica.on_job(active)
    mine = await rpc.wait_for(
        active.job_id, lambda s: any(e["node_id"] == node.node_id and e["state"] == "complete" for e in s["executions"])
    )
    assert len(mine["executions"]) == 2

    # Executions claiming to be this node's are ignored: only this node writes them.
    fake = Execution(job_id=active.job_id, node_id=node.node_id, state=State.FAILED, version=99)
    assert await replica.on_executions([fake]) == 0
