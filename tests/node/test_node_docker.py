"""A whole node against the real dockerd, driven over real HTTP."""

from __future__ import annotations

from functools import partial

import pytest
import trio

from .conftest import NodeFactory

pytestmark = pytest.mark.docker


async def test_exit_zero_completes(start_node: NodeFactory, test_image: str) -> None:
    _, rpc = await start_node()
    job_id = await rpc.create(test_image, ["true"])
    status = await rpc.wait_status(job_id, "complete", "failed")
    assert status["status"] == "complete"
    [execution] = status["executions"]
    assert execution["state"] == "complete"
    assert execution["exit_code"] == 0
    assert execution["container_id"]


async def test_exit_three_fails_with_code(start_node: NodeFactory, test_image: str) -> None:
    _, rpc = await start_node()
    job_id = await rpc.create(test_image, ["sh", "-c", "exit 3"])
    status = await rpc.wait_status(job_id, "complete", "failed")
    assert status["status"] == "failed"
    assert status["executions"][0]["exit_code"] == 3
    assert "exited with code 3" in status["executions"][0]["error"]


async def test_long_running_reports_running_then_stops(start_node: NodeFactory, test_image: str) -> None:
    _, rpc = await start_node()
    job_id = await rpc.create(test_image, ["sleep", "300"])
    status = await rpc.wait_status(job_id, "running", "failed", "complete")
    assert status["status"] == "running"
    await rpc.call("ContainerService.Stop", {"job_id": job_id})
    status = await rpc.wait_status(job_id, "cancelled", timeout=10)
    assert status["executions"][0]["state"] == "cancelled"


async def test_missing_image_fails_fast_with_reason(start_node: NodeFactory) -> None:
    _, rpc = await start_node()
    # A registry on loopback that refuses connections: the pull fails for real, and no traffic leaves.
    job_id = await rpc.create("127.0.0.1:1/cmnode-test/absent:latest")
    status = await rpc.wait_status(job_id, "failed", timeout=20)
    error = status["executions"][0]["error"]
    assert "127.0.0.1:1/cmnode-test/absent:latest" in error
    assert "connection refused" in error


async def test_env_and_arguments_reach_the_container(start_node: NodeFactory, test_image: str) -> None:
    _, rpc = await start_node()
    job_id = await rpc.create(
        test_image, ["sh", "-c", 'echo "greeting=$GREETING"; echo "args=$0 $1" >&2', "one", "two"],
        env={"GREETING": "hello world"},
    )  # fmt: skip
    await rpc.wait_status(job_id, "complete", "failed")
    logs = await rpc.call("ContainerService.Logs", {"job_id": job_id})
    assert logs["stdout"] == "greeting=hello world\n"
    assert logs["stderr"] == "args=one two\n"


async def test_full_queue_refuses_and_records_nothing(start_node: NodeFactory, test_image: str) -> None:
    # A registry on loopback that accepts connections and never answers keeps the only worker pulling.
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as server:
        [listener] = await server.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        _, rpc = await start_node(worker_count=1, queue_size=2, pull_timeout=60)
        blocker = await rpc.create(f"127.0.0.1:{port}/cmnode-test/slow:latest")
        await rpc.wait_status(blocker, "pulling", timeout=10)
        accepted = [await rpc.create(test_image, ["true"]) for _ in range(2)]
        body = await rpc.raw("ContainerService.Create", [{"image": test_image, "arguments": [], "env": {}}])
        assert body["error"]["code"] == -32002
        assert body["error"]["message"] == "job queue is full"
        listed = await rpc.call("ContainerService.List", {})
        assert sorted(j["job_id"] for j in listed["jobs"]) == sorted([blocker, *accepted])
        await rpc.call("ContainerService.Stop", {"job_id": blocker})
        server.cancel_scope.cancel()


async def test_twenty_jobs_at_once_all_finish(start_node: NodeFactory, test_image: str) -> None:
    _, rpc = await start_node(worker_count=10)
    job_ids: list[str] = []

    async def create(i: int) -> None:
        job_ids.append(await rpc.create(test_image, ["sh", "-c", f"echo {i}"]))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(create, i)
    assert len(set(job_ids)) == 20
    with trio.fail_after(60):
        for job_id in job_ids:
            status = await rpc.wait_status(job_id, "complete", "failed")
            assert status["status"] == "complete", status
