"""The node as its API sees it: create, inspect and stop jobs, and describe the node.

Handlers in ``rpc/methods.py`` call only this class; it ties the store, the executor and the mesh
together and holds no state of its own beyond references to them and the merge of what peers tell it
(``node/replica.py``). The mesh reaches the node only through its ``Inbound`` methods (``node/link.py``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import trio

from . import __version__
from .config import Config
from .errors import NotFoundError, ValidationError
from .executor import Executor
from .identity import Identity
from .link import NoMesh, Outbound
from .model import Cancel, Execution, Job, JobSpec, State, derive_status
from .registry import LoneNode, NodesView
from .replica import Replica
from .scheduler import runs_here
from .store import JobRecord, Store
from .trust import Trust, sign_cancel


class Node:
    """The node's operations; also the mesh's ``Inbound`` (link.py): what peers tell it goes through here."""

    def __init__(
        self,
        *,
        config: Config,
        identity: Identity,
        store: Store,
        executor: Executor,
        rpc_url: str = "",
        mesh: Outbound | None = None,
        nodes: NodesView | None = None,
    ) -> None:
        """``mesh`` is how this node publishes and reaches other nodes (``MeshLink``); none: a node alone.
        ``nodes`` is what this node knows of every node (``node/registry.py``); none: only itself."""
        self.config = config
        self.identity = identity
        self.store = store
        self.executor = executor
        self.rpc_url = rpc_url
        self.mesh: Outbound = mesh or NoMesh()
        self.nodes: NodesView = nodes or LoneNode(identity.node_id)
        self._replica = Replica(
            store=store, node_id=identity.node_id, run=self._run_from_peer, cancel=self.cancel_from_peer,
            trust=Trust.of(identity.node_id, config.trusted_peer),
        )  # fmt: skip
        self.started_at = time.time()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    # -- jobs -------------------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        """``_create`` shielded from cancellation: once the job is stored it is queued and announced even if the
        caller hangs up (a client that left mid-Create left its job stored but never queued nor gossiped).

        Raises:
            StorageFullError: the disk is full; the job was not recorded (and what ``_create`` raises).
        """
        with trio.CancelScope(shield=True):
            job = await self._create(spec)
        return job

    async def _create(self, spec: JobSpec) -> Job:
        """Accept a job: durable on this node before this returns, then announced to the mesh.

        Raises:
            QueueFullError: the local queue has no room; the job was not recorded.
            ValidationError: this node's container policy refuses the spec (the rule named); nothing recorded.
        """
        self.executor.policy.check(spec)
        job = Job(job_id=str(uuid.uuid4()), spec=spec, origin=self.node_id, created_at=time.time())
        job = replace(job, signature=self.identity.sign(job.canonical_bytes()))
        if runs_here(job, self.node_id):
            await self.executor.submit(job)
        else:
            await self.executor.accept(job, run_here=False)  # recorded here; the nodes placement names run it
        await self.mesh.publish_job(job)
        return job

    async def _record(self, job_id: str) -> tuple[JobRecord, list[Execution]]:
        found = await self.store.get_job_with_executions(job_id)
        if found is None:
            raise NotFoundError(f"job {job_id} not found", data={"job_id": job_id})
        return found

    async def status(self, job_id: str) -> dict[str, Any]:
        record, executions = await self._record(job_id)
        return {
            "status": derive_status(executions),
            "job_id": job_id,
            "executions": [_execution_view(e) for e in executions],
            "origin": record.job.origin,
            "created_at": record.job.created_at,
            "spec": record.job.spec.to_json(),
        }

    async def list_jobs(
        self, *, status: str | None, labels: dict[str, str], limit: int, cursor: str | None
    ) -> dict[str, Any]:
        before = _parse_cursor(cursor) if cursor else None
        records = await self.store.list_jobs(status=status, labels=labels, limit=limit + 1, before=before)
        more = len(records) > limit
        records = records[:limit]
        next_cursor = f"{records[-1].job.created_at!r}:{records[-1].seq}" if more and records else None
        return {
            "jobs": [
                {
                    "job_id": r.job.job_id,
                    "status": r.status,
                    "image": r.job.spec.image,
                    "name": r.job.spec.name,
                    "labels": dict(r.job.spec.labels),
                    "origin": r.job.origin,
                    "created_at": r.job.created_at,
                }
                for r in records
            ],
            "next_cursor": next_cursor,
        }

    async def stop(self, job_id: str) -> dict[str, Any]:
        """``_stop`` shielded as ``create`` is: a cancel stored here is announced whatever the caller does."""
        with trio.CancelScope(shield=True):
            answer = await self._stop(job_id)
        return answer

    async def _stop(self, job_id: str) -> dict[str, Any]:
        """Cancel the job on every node; stopping a job twice is not an error."""
        await self._record(job_id)
        cancel = sign_cancel(self.identity, job_id)  # peers obey only a cancel signed by the origin or a trusted node
        await self._replica.keep(cancel)  # before the flag, so catch-up never serves the flag without it
        await self.executor.cancel(job_id)  # the flag and this node's execution: one write
        await self.mesh.publish_cancel(cancel)
        return {"job_id": job_id, "message": "Job stop requested"}

    # -- what peers tell this node (the mesh's Inbound) --------------------------------------------

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        """A verified job from a peer: recorded, and run here if placement says so. True if new."""
        return await self._replica.on_job(job, cancel=cancel, gossip=gossip)

    async def caught_up(self) -> None:
        await self._replica.caught_up()

    async def on_executions(self, executions: list[Execution]) -> int:
        """Other nodes' executions from a peer; returns how many were newer than ours."""
        return await self._replica.on_executions(executions)

    async def on_cancel(self, cancel: Cancel) -> None:
        await self._replica.on_cancel(cancel)

    async def _run_from_peer(self, job: Job) -> bool:
        return await self.executor.accept(job, run_here=True)

    async def cancel_from_peer(self, job_id: str) -> None:
        if await self.store.get_job(job_id) is not None:
            await self.executor.cancel(job_id)

    async def logs(self, job_id: str, node_id: str | None, tail: int | None) -> dict[str, Any]:
        _, executions = await self._record(job_id)
        node_id = node_id or self.node_id
        execution = next((e for e in executions if e.node_id == node_id), None)
        if execution is None:
            known = ", ".join(e.node_id for e in executions) or "none"
            raise NotFoundError(
                f"job {job_id} has no execution on node {node_id} (executions on: {known})",
                data={"job_id": job_id, "node_id": node_id},
            )
        if node_id != self.node_id:
            return await self.mesh.fetch_logs(job_id, node_id, tail)
        return await self.local_logs(job_id, tail)

    async def local_logs(self, job_id: str, tail: int | None) -> dict[str, Any]:
        """This node's output of the job: from the container while it exists, else from the store."""
        executions = [e for e in await self.store.executions_of(job_id) if e.node_id == self.node_id]
        if not executions:
            raise NotFoundError(f"job {job_id} has no execution on node {self.node_id}")
        execution = executions[0]
        attempt = execution.attempt
        stdout = stderr = ""
        source = "none"
        if execution.container_id is not None:
            try:
                stdout, stderr = await self.executor.container_logs(execution.container_id, tail=tail)
                source = "container"
            except Exception:  # gone or daemon away: fall back to the stored tail
                source = "none"
        if source == "none":
            stored = await self.store.get_logs(job_id, self.node_id)
            if stored is not None:  # the last attempt that ended (a retry may be waiting for its turn)
                attempt, stdout, stderr = stored
                stdout, stderr = _tail(stdout, tail), _tail(stderr, tail)
                source = "store"
        return {
            "job_id": job_id,
            "node_id": self.node_id,
            "attempt": attempt,
            "state": execution.state.value,
            "stdout": stdout,
            "stderr": stderr,
            "source": source,
        }

    # -- the node ---------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        load = self.executor.load()
        return {
            "node_id": self.node_id,
            "version": __version__,
            "addresses": self.mesh.addresses(),
            "rpc_url": self.rpc_url,
            "queue": {"depth": load.queue_depth, "size": load.queue_size},
            "workers": {"count": load.workers, "busy": load.busy},
            "docker": {"ok": load.docker_error is None, "error": load.docker_error},
            "peer_jobs_refused": dict(load.peer_jobs_refused),
            "peers": len(self.mesh.peers()),
            "mesh": self.mesh.stats(),
            "uptime": round(time.time() - self.started_at, 3),
        }

    async def peers(self) -> dict[str, Any]:
        return {"peers": self.mesh.peers()}


def _execution_view(e: Execution) -> dict[str, Any]:
    view = e.to_json()
    view.pop("job_id")
    view.pop("signature", None)  # the mesh's business, not the API's
    return view


def _tail(text: str, tail: int | None) -> str:
    if tail is None:
        return text
    if tail == 0:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:])


def _parse_cursor(cursor: str) -> tuple[float, int]:
    try:
        created, seq = cursor.rsplit(":", 1)
        return float(created), int(seq)
    except ValueError:
        raise ValidationError([{"field": "cursor", "message": "is not a cursor returned by List"}]) from None


FINAL_STATES = [s.value for s in State if s.final]
