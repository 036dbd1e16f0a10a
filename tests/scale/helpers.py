"""Two nodes' catch-up sides in one process: real stores, real ``Sync`` and ``Replica``, the request a call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from node.identity import Identity
from node.model import Execution, Job, JobSpec, State
from node.replica import Replica
from node.store import Store
from node.sync import Sync
from node.trust import sign_execution


@dataclass
class Side:
    store: Store
    sync: Sync
    replica: Replica
    runs: list[str] = field(default_factory=list)
    """The jobs this node decided to run."""


@asynccontextmanager
async def side(path: Path, identity: Identity) -> AsyncIterator[Side]:
    async with Store.open(path, durable=False) as store:
        runs: list[str] = []

        async def run(job: Job) -> bool:
            runs.append(job.job_id)
            return await store.add_job(job, durable=False)

        async def cancel(job_id: str) -> None:
            await store.mark_cancelled(job_id)

        replica = Replica(store=store, node_id=identity.node_id, run=run, cancel=cancel)
        sync = Sync(store=store, inbound=replica, identity=identity)  # type: ignore[arg-type]
        yield Side(store, sync, replica, runs)


def job_of(origin: Identity, job_id: str, *, size: int = 0) -> Job:
    """A job signed by ``origin``; ``size`` pads its spec (an env value) to make it larger."""
    env = {"PAD": "x" * size} if size else {}
    job = Job(job_id=job_id, spec=JobSpec(image="busybox", arguments=("true",), env=env), origin=origin.node_id,
              created_at=time.time())  # fmt: skip
    return replace(job, signature=origin.sign(job.canonical_bytes()))


def execution_of(node: Identity, job_id: str, state: State = State.COMPLETE, version: int = 3) -> Execution:
    """``node``'s execution of the job, signed by it (as a peer's execution is stored and sent)."""
    exit_code = 0 if state == State.COMPLETE else None
    execution = Execution(job_id=job_id, node_id=node.node_id, state=state, version=version, exit_code=exit_code)
    return sign_execution(node, execution)
