"""A job named by a unique prefix of its ID (the short IDs the CLI's tables show), in milliseconds on FakeRuntime:
Status, Logs, Stop and Scale find it and answer with the full ID; a prefix two jobs share is refused naming
both; a full ID is looked up as before. The real command is in tests/cli/test_short_ids.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from node.config import Config
from node.core import Node
from node.errors import NotFoundError, ValidationError
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.identity import load_or_create
from node.jobqueue import JobQueue
from node.model import JobSpec
from node.store import Store

IDS = ["abcd1111-0000-4000-8000-000000000001", "abcd2222-0000-4000-8000-000000000002"]


@asynccontextmanager
async def a_node(tmp_path: Path) -> AsyncIterator[Node]:
    config = Config(listen_address="127.0.0.1", port=0, p2p_port=0, mdns=False, data_dir=tmp_path)
    identity = load_or_create(tmp_path)
    async with Store.open(config.db_path) as store, trio.open_nursery() as nursery:
        runtime = FakeRuntime(node_id=identity.node_id)
        executor = Executor(node_id=identity.node_id, store=store, runtime=runtime, queue=JobQueue(10),
                            worker_count=1)  # fmt: skip
        await nursery.start(executor.run)
        yield Node(config=config, identity=identity, store=store, executor=executor)
        nursery.cancel_scope.cancel()


@pytest.fixture
def fixed_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ids = iter(uuid.UUID(i) for i in IDS)
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))  # the module core calls it through
    yield


async def test_a_unique_prefix_names_the_job_and_a_shared_one_is_refused(tmp_path: Path, fixed_ids: None) -> None:
    async with a_node(tmp_path) as node:
        spec = JobSpec.from_json({"image": "busybox", "arguments": ["sleep", "60"], "env": {}})
        await node.create(spec)
        await node.create(JobSpec.from_json({**spec.to_json(), "placement": {"replicas": 1}}))

        assert (await node.status(IDS[0]))["job_id"] == IDS[0]  # the full ID, as before
        assert (await node.status("abcd1"))["job_id"] == IDS[0]
        assert (await node.logs("abcd1", None, None))["job_id"] == IDS[0]
        assert (await node.scale("abcd2", 1))["job_id"] == IDS[1]
        with pytest.raises(ValidationError) as shared:
            await node.status("abcd")
        assert IDS[0] in shared.value.message and IDS[1] in shared.value.message
        assert "ambiguous" in shared.value.message
        with pytest.raises(NotFoundError, match="job abce not found"):
            await node.status("abce")
        with pytest.raises(NotFoundError, match=f"job {IDS[0]}x not found"):
            await node.status(IDS[0] + "x")
        assert await node.stop("abcd2") == {"job_id": IDS[1], "message": "Job stop requested"}
        record = await node.store.get_job(IDS[1])
        assert record is not None and record.cancelled
