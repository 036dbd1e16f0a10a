"""Leave a data directory and the Docker daemon exactly as a crash at a chosen moment would have left them.

A node killed between two steps (container started / state recorded) leaves a store row and a container that
disagree. Killing a process at that exact instant cannot be timed, so these helpers write the same state with
the real parts (the node's own store and runtime, the real dockerd) before the node starts on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from docker.client import DockerClient

from node.config import Config
from node.docker_runtime import DockerRuntime
from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.runtime import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, LABEL_NODE
from node.store import Store


@asynccontextmanager
async def arrange(config: Config) -> AsyncIterator[Arranged]:
    """The node's data directory (identity and store) opened as the node would open it, before it starts."""
    identity = load_or_create(config.data_dir)
    async with Store.open(config.db_path) as store:
        arranged = Arranged(identity, store)
        try:
            yield arranged
        finally:
            arranged.runtime.close()


class Arranged:
    """One data directory under construction: ``record()`` stores jobs, ``start()`` runs their containers."""

    def __init__(self, identity: Identity, store: Store) -> None:
        self.store = store
        self.identity = identity
        self.node_id = identity.node_id
        self.runtime = DockerRuntime(node_id=self.node_id)

    def make_job(self, image: str, arguments: list[str], **spec: Any) -> Job:
        job = Job(
            job_id=str(uuid.uuid4()),
            spec=JobSpec.from_json({"image": image, "arguments": arguments, **spec}),
            origin=self.node_id,
            created_at=time.time(),
        )
        return replace(job, signature=self.identity.sign(job.canonical_bytes()))

    async def record(self, job: Job, state: State = State.PENDING, **fields: Any) -> Execution:
        """Store ``job`` with this node's execution in ``state`` (as the node last wrote it before dying)."""
        now = time.time()
        execution = Execution(job_id=job.job_id, node_id=self.node_id, created_at=now, updated_at=now)
        if state != State.PENDING or fields:
            execution = execution.advance(state=state, **fields)
        await self.store.add_job(job, execution)
        return execution

    async def start(self, job: Job, attempt: int = 1) -> str:
        """The container the node's worker would have started for this attempt."""
        return await self.runtime.start(job, attempt)


def create_unstarted(client: DockerClient, node_id: str, job: Job, attempt: int = 1) -> str:
    """A container created with the node's labels but never started: a crash inside ``runtime.start``."""
    created = client.api.create_container(
        image=job.spec.image,
        command=list(job.spec.arguments),
        labels={LABEL_JOB: job.job_id, LABEL_NODE: node_id, LABEL_ATTEMPT: str(attempt), LABEL_MANAGED: "1"},
        host_config=client.api.create_host_config(init=True),
    )
    return str(created["Id"])
