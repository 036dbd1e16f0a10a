"""In-memory stand-ins for the node's side of the mesh, for the fast tests of wiring, gossip and catch-up."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from libp2p.pubsub.pb import rpc_pb2

from node.gossip import Gossip
from node.identity import Identity
from node.model import Cancel, Execution, Job, JobSpec, Placement
from node.trust import sign_cancel, sign_execution
from node.wire import Envelope, encode


def signed_job(origin: Identity, job_id: str = "j1", placement: Placement | None = None) -> Job:
    spec = JobSpec(image="busybox", arguments=("true",), placement=placement or Placement())
    job = Job(job_id=job_id, spec=spec, origin=origin.node_id, created_at=time.time())
    return replace(job, signature=origin.sign(job.canonical_bytes()))


def signed_execution(node: Identity, job_id: str = "j1", **fields: Any) -> Execution:
    """An execution of ``node``'s, signed by it, as its node sends it."""
    return sign_execution(node, Execution(job_id=job_id, node_id=node.node_id, **fields))


def signed_cancel(by: Identity, job_id: str = "j1") -> Cancel:
    return sign_cancel(by, job_id)


def pubsub_message(sender: Identity, data: bytes, seqno: int = 1) -> rpc_pb2.Message:
    """A message as pubsub hands it to the topic validator: signed ``from``, a seqno, the topic."""
    return rpc_pb2.Message(
        from_id=sender.peer_id.to_bytes(), data=data, seqno=seqno.to_bytes(8, "big"), topicIDs=["jobs"]
    )


def receive(gossip: Gossip, sender: Identity, messages: list[Envelope]) -> None:
    """Pass each envelope through the validator and deliver it, as pubsub does for a valid message."""
    for seqno, msg in enumerate(messages):
        raw = pubsub_message(sender, encode(msg), seqno)
        assert gossip.validate(sender.peer_id, raw)
        gossip.deliver(raw)


@dataclass
class FakeInbound:
    """Records what the mesh hands the node; ``fail`` makes a call about that job ID raise that exception."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: dict[str, Exception] = field(default_factory=dict)

    def _maybe_fail(self, job_id: str) -> None:
        if job_id in self.fail:
            raise self.fail[job_id]

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        self._maybe_fail(job.job_id)
        self.calls.append(("job", job.job_id))
        return True

    async def on_jobs(self, jobs: list[tuple[Job, Cancel | None]]) -> list[bool | Exception]:
        outcomes: list[bool | Exception] = []
        for job, cancel in jobs:
            try:
                outcomes.append(await self.on_job(job, cancel=cancel))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    async def caught_up(self) -> None:
        self.calls.append(("caught_up", ""))

    async def on_executions(self, executions: list[Execution]) -> int:
        for e in executions:
            self._maybe_fail(e.job_id)
        self.calls.extend(("execution", e.job_id) for e in executions)
        return len(executions)

    async def on_cancel(self, cancel: Cancel) -> None:
        self._maybe_fail(cancel.job_id)
        self.calls.append(("cancel", cancel.job_id))

    async def local_logs(self, job_id: str, tail: int | None) -> dict[str, Any]:
        self._maybe_fail(job_id)
        self.calls.append(("logs", job_id))
        return {"job_id": job_id}
