"""The node as its API sees it: create, inspect and stop jobs, and describe the node.

Handlers in ``rpc/methods.py`` call only this class; it ties the store, the executor and the mesh
together and holds no state of its own beyond references to them and the merge of what peers tell it
(``node/replica.py``). The mesh reaches the node only through its ``Inbound`` methods (``node/link.py``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import trio

from . import __version__
from .allocation import Allocation
from .config import Config
from .errors import NotFoundError, ValidationError
from .executor import Executor
from .identity import Identity
from .link import NoMesh, Outbound
from .logfollow import Follow, LocalLogs, LogFollowers
from .model import Cancel, Execution, Job, JobSpec, State, derive_status
from .noderecord import sign_drain
from .nodeview import NodeState, NodesView
from .purge import JobPurge
from .registry import Registry
from .replica import Replica
from .replicas import Replicas, allocation_view
from .rescheduler import Rescheduler
from .store import JobRecord, Store
from .trust import Trust, sign_cancel

log = logging.getLogger("cmnode.node")


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
        registry: Registry | None = None,
        trust: Trust | None = None,
    ) -> None:
        """``mesh`` is how this node publishes and reaches other nodes (``MeshLink``); none: a node alone.
        ``nodes`` is what this node knows of every node (``node/registry.py``); none: only itself."""
        self.config = config
        self.identity = identity
        self.store = store
        self.executor = executor
        self.rpc_url = rpc_url
        self.mesh: Outbound = mesh or NoMesh()
        self.trust = trust or Trust.of(identity.node_id, config.trusted_peer)
        self.registry = registry or Registry.of(config, identity.node_id, self.trust)  # none given: this node alone
        """Every node this node has heard of: listed, drained and named through it (``node/registry.py``)."""
        self.nodes: NodesView = nodes or self.registry
        self._replica = Replica(
            store=store, node_id=identity.node_id, run=self._run_from_peer, cancel=self.cancel_from_peer,
            trust=self.trust, place=self._place_here, release=self._release_here,
            labels=self._labels,
        )  # fmt: skip
        self.replicas = Replicas(
            identity=identity, store=store, nodes=self.nodes, executor=executor, mesh=self.mesh, replica=self._replica,
            reschedule_after=config.reschedule_after,
        )  # fmt: skip
        """Replicas jobs' allocations as this node writes them (``node/replicas.py``)."""
        self.rescheduler = Rescheduler(
            node_id=identity.node_id, store=store, nodes=self.nodes, write=self.replicas.write,
            place=self._place_here, release=self._release_here, interval=config.heartbeat,
            reschedule_after=config.reschedule_after,
        )  # fmt: skip
        """Run ``rescheduler.run`` in the node's nursery (app.py)."""
        self.purge = JobPurge(store=store, node_id=identity.node_id, retention=config.job_retention,
                              remove=self._remove_container)  # fmt: skip
        """Finished jobs older than ``--job-retention``: run ``purge.run`` in the node's nursery if ``enabled``."""
        self.started_at = time.time()
        self.followers = LogFollowers()
        """Every follow of output this node pumps (node/logfollow.py): run ``followers.run`` in its nursery."""
        self._local_output = LocalLogs(
            node_id=identity.node_id, current=self._execution_here,
            follow=lambda container_id, tail: self.executor.runtime.follow(container_id, tail=tail),
            stored=lambda job_id: store.get_logs(job_id, identity.node_id),
        )  # fmt: skip

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
        """Accept a job: committed here, then announced to the mesh while the commit is fsynced; this returns
        once the job is on disk (``Store.early``: the fsync no longer delays the first peer). A job to run here
        starts only once it is on disk (the executor's workers wait for its fsync: ``Store.on_disk``).

        Raises:
            QueueFullError: the local queue has no room; the job was not recorded.
            ValidationError: this node's container policy refuses the spec (the rule named); nothing recorded.
            StorageFullError: the disk is full: at the commit, nothing recorded nor announced; at the fsync
                (ENOSPC), as OSError below.
            OSError: the commit could not be synced to disk: the job was announced, so its cancel follows it
                (``_withdraw``).
        """
        self.executor.policy.check(spec)
        job = Job(job_id=str(uuid.uuid4()), spec=spec, origin=self.node_id, created_at=time.time())
        job = job.signed_by(self.identity)
        if spec.placement.mode == "replicas":
            return await self.replicas.create(job)
        announced = False
        try:
            async with self.store.early():
                if self._replica.placed_here(job):
                    await self.executor.submit(job)
                else:
                    await self.executor.accept(job, run_here=False)  # recorded here; the nodes placement names run it
                await self.mesh.publish_job(job)
                announced = True
        except Exception:
            if announced:  # only the fsync failed: the client is told the job failed, so peers must drop it too
                await self._withdraw(job)
            raise
        return job

    async def _withdraw(self, job: Job) -> None:
        """Cancel a job announced before its Create failed: the signed cancel Stop sends goes out first (no disk
        involved), then this node's own record of it is cancelled as far as the store still lets it."""
        cancel = sign_cancel(self.identity, job.job_id)
        await self.mesh.publish_cancel(cancel)
        try:
            await self._replica.keep(cancel)
            await self.executor.cancel(job.job_id)
        except Exception as exc:  # the store that failed the fsync may fail these too: peers have the cancel
            log.warning("job %s: Create failed and its cancel could not be stored here: %r", job.job_id, exc)

    async def scale(self, job_id: str, replicas: int) -> dict[str, Any]:
        """A new allocation version with ``replicas`` copies (``Replicas.scale``).

        Raises:
            NotFoundError: no such job here. ValidationError: not a replicas job, or stopped.
        """
        record, executions = await self._record(job_id)  # ``job_id`` may be a unique prefix
        return await self.replicas.scale(record, executions, replicas)

    def _labels(self) -> Mapping[str, str]:
        me = self.nodes.get(self.node_id)
        return me.labels if me is not None else {}

    async def _record(self, job_id: str) -> tuple[JobRecord, list[Execution]]:
        """The job ``job_id`` names, in full or by a unique prefix (the short IDs the CLI shows).

        Raises:
            NotFoundError: no job has that ID or prefix. ValidationError: several have that prefix.
        """
        found = await self.store.get_job_with_executions(job_id)
        if found is None:
            found = await self._by_prefix(job_id)
        if found is None:
            tombstone = await self.purge.tombstone(job_id)
            if tombstone is not None:  # this node purged it: say so, and when (node/purge.py)
                data = {"job_id": job_id, "reason": tombstone.reason, "purged_at": tombstone.purged_at}
                raise NotFoundError(f"job {job_id} not found: {tombstone.reason}", data=data)
            raise NotFoundError(f"job {job_id} not found", data={"job_id": job_id})
        return found

    async def _by_prefix(self, prefix: str) -> tuple[JobRecord, list[Execution]] | None:
        ids = await self.store.job_ids_with_prefix(prefix, limit=6)
        if len(ids) > 1:
            count = str(len(ids)) if len(ids) <= 5 else "more than 5"
            some = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise ValidationError(
                [{"field": "job_id", "message": f"{count} jobs start with {prefix!r}: {some}"}],
                f"job {prefix!r} is ambiguous: {count} jobs start with it ({some}); give more of the ID",
            )
        return await self.store.get_job_with_executions(ids[0]) if ids else None

    async def status(self, job_id: str) -> dict[str, Any]:
        record, executions = await self._record(job_id)
        job_id = record.job.job_id
        down = self._down(executions)
        answer = {
            "status": _status(executions, down),
            "job_id": job_id,
            "executions": [_execution_view(e, down) for e in executions],
            "origin": record.job.origin,
            "created_at": record.job.created_at,
            "spec": record.job.spec.to_json(),
        }
        if record.job.spec.placement.mode == "replicas":
            allocation = await self.store.get_allocation(job_id)
            if allocation is not None:
                answer["allocation"] = allocation_view(allocation)
        return answer

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
        job_id = (await self._record(job_id))[0].job.job_id
        cancel = sign_cancel(self.identity, job_id)  # peers obey only a cancel signed by the origin or a trusted node
        await self._replica.keep(cancel)  # before the flag, so catch-up never serves the flag without it
        await self.executor.cancel(job_id)  # the flag and this node's execution: one write
        await self.mesh.publish_cancel(cancel)
        return {"job_id": job_id, "message": "Job stop requested"}

    # -- what peers tell this node (the mesh's Inbound) --------------------------------------------

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        """A verified job from a peer: recorded, and run here if placement says so. True if new."""
        return await self._replica.on_job(job, cancel=cancel, gossip=gossip)

    async def on_jobs(self, jobs: list[tuple[Job, Cancel | None]]) -> list[bool | Exception]:
        """A catch-up page's verified jobs, decided together (see ``Replica.on_jobs``)."""
        return await self._replica.on_jobs(jobs)

    async def caught_up(self) -> None:
        await self._replica.caught_up()

    async def on_executions(self, executions: list[Execution]) -> int:
        """Other nodes' executions from a peer; returns how many were newer than ours."""
        return await self._replica.on_executions(executions)

    async def on_cancel(self, cancel: Cancel) -> None:
        await self._replica.on_cancel(cancel)

    async def on_allocation(self, allocation: Allocation) -> bool:
        return await self._replica.on_allocation(allocation)

    async def _run_from_peer(self, job: Job) -> bool:
        return await self.executor.accept(job, run_here=True)

    async def _place_here(self, job: Job) -> bool:
        return await self.executor.copies.place(job)

    async def _release_here(self, job_id: str) -> None:
        await self.executor.copies.release(job_id)

    async def _remove_container(self, container_id: str) -> None:
        await self.executor.retention.remove(container_id)

    async def cancel_from_peer(self, job_id: str) -> None:
        if await self.store.get_job(job_id) is not None:
            await self.executor.cancel(job_id)

    async def logs(self, job_id: str, node_id: str | None, tail: int | None) -> dict[str, Any]:
        job_id, node_id = await self._logs_of(job_id, node_id)
        if node_id != self.node_id:
            return await self.mesh.fetch_logs(job_id, node_id, tail)
        return await self.local_logs(job_id, tail)

    async def follow_logs(self, job_id: str, node_id: str | None, tail: int | None) -> Follow:
        """The job's output on a node (default: this one) as it is written, until its execution there ends
        (node/logfollow.py); from another node over the mesh (node/meshlogs.py).

        Raises:
            NotFoundError: no such job, or no execution of it on that node. QueueFullError: too many follows.
            PeerUnreachableError: that node cannot be reached.
        """
        job_id, node_id = await self._logs_of(job_id, node_id)
        if node_id == self.node_id:
            return await self.local_follow(job_id, tail)
        self.followers.check()  # before opening a stream to the peer
        return await self.followers.start(await self.mesh.follow_logs(job_id, node_id, tail))

    async def local_follow(self, job_id: str, tail: int | None) -> Follow:
        return await self.followers.start(await self._local_output.source(job_id, tail))

    async def _logs_of(self, job_id: str, node_id: str | None) -> tuple[str, str]:
        """The full job ID and the node (default: this one) whose execution of it to read, checked."""
        record, executions = await self._record(job_id)
        job_id = record.job.job_id
        if node_id is not None and node_id not in {e.node_id for e in executions}:
            node_id = self.registry.resolve(node_id, strict=False)  # a name or an ID prefix
        node_id = node_id or self.node_id
        execution = next((e for e in executions if e.node_id == node_id), None)
        if execution is None:
            known = ", ".join(e.node_id for e in executions) or "none"
            raise NotFoundError(
                f"job {job_id} has no execution on node {node_id} (executions on: {known})",
                data={"job_id": job_id, "node_id": node_id},
            )
        return job_id, node_id

    async def _execution_here(self, job_id: str) -> Execution | None:
        """This node's execution of the job: the executor's while it runs it, else the stored one."""
        active = self.executor.active(job_id)
        if active is not None:
            return active
        return next((e for e in await self.store.executions_of(job_id) if e.node_id == self.node_id), None)

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
            "name": self.registry.name,
            "labels": dict(self.registry.labels),
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

    # -- the nodes ----------------------------------------------------------------------------------

    async def list_nodes(self) -> dict[str, Any]:
        return {"nodes": self.registry.listing()}

    async def drain(self, node: str, draining: bool) -> dict[str, Any]:
        """Drain (or undrain) ``node`` (an ID, a name or a unique ID prefix) on every node: a signed order,
        kept here and gossiped; the drained node says so in its own record.

        Raises:
            ValidationError: ``node`` names no known node, or more than one.
        """
        node_id = self.registry.resolve(node)
        order = sign_drain(self.identity, node_id, draining, time.time())
        self.registry.on_drain(order)  # this node gave it: its own trust rule lets it
        await self.mesh.publish_drain(order)
        verb = "draining" if draining else "undrained"
        return {"node_id": node_id, "draining": draining, "message": f"node {node_id} {verb}"}

    def _down(self, executions: list[Execution]) -> frozenset[str]:
        """The nodes of ``executions`` that are down while their execution is not final: what they do now is
        not known (shown ``unknown``, nothing stored)."""
        down = set()
        for e in executions:
            if not e.state.final:
                info = self.nodes.get(e.node_id)
                if info is not None and info.state is NodeState.DOWN:
                    down.add(e.node_id)
        return frozenset(down)


def _execution_view(e: Execution, down: frozenset[str] = frozenset()) -> dict[str, Any]:
    view = e.to_json()
    view.pop("job_id")
    view.pop("signature", None)  # the mesh's business, not the API's
    if e.node_id in down:
        view.update(state=UNKNOWN, node_state="down")
    return view


UNKNOWN = "unknown"
"""The state shown for an execution, and the status for a job, whose node is down: not stored, only a view."""


def _status(executions: list[Execution], down: frozenset[str]) -> str:
    """``derive_status`` over the executions of nodes not down; only down ones left: ``unknown``."""
    if not down:
        return derive_status(executions)
    live = [e for e in executions if e.node_id not in down]
    status = derive_status(live)
    return UNKNOWN if not live or status == State.REJECTED.value else status


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
