"""The Docker daemon away at start and going away mid-run.

The node talks to the real dockerd through a unix-socket forwarder that the test starts and stops: the
daemon itself keeps running for the other tests, but from the node's side it is really unreachable
(connection refused, the events stream cut), which is what an outage looks like to a client.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from docker.client import DockerClient

from tests.support import Rpc, eventually

from .conftest import NodeFactory

pytestmark = pytest.mark.docker

DOCKER_SOCKET = "/var/run/docker.sock"


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await sink.aclose()


@asynccontextmanager
async def forwarder(path: Path) -> AsyncIterator[None]:
    """Accept on ``path`` and forward every connection to the real daemon, until the block exits."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_unix_socket(DOCKER_SOCKET)
        async with trio.open_nursery() as n:
            n.start_soon(_pump, client, upstream)
            n.start_soon(_pump, upstream, client)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, [listener])
            yield
            nursery.cancel_scope.cancel()  # cuts every forwarded connection, events stream included
    finally:
        path.unlink(missing_ok=True)


async def docker_ok(rpc: Rpc, want: bool) -> None:
    async def seen() -> bool:
        return bool((await rpc.call("NodeService.Info"))["docker"]["ok"] is want)

    await eventually(seen, timeout=20, interval=0.05, what=f"docker ok={want}")


async def test_daemon_down_at_start_then_back(start_node: NodeFactory, test_image: str, tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    _, rpc = await start_node(docker_host=f"unix://{path}")
    info = await rpc.call("NodeService.Info")
    assert info["docker"]["ok"] is False
    job_id = await rpc.create(test_image, ["true"])
    status = await rpc.wait_for(
        job_id, lambda s: "waiting for the Docker daemon" in (s["executions"][0]["error"] or "")
    )
    assert status["status"] == "pending"
    async with forwarder(path):
        status = await rpc.wait_status(job_id, "complete", "failed")
        assert status["status"] == "complete"
        await docker_ok(rpc, True)


async def test_exit_while_daemon_unreachable_is_recorded_when_back(
    start_node: NodeFactory, test_image: str, tmp_path: Path, docker_client: DockerClient
) -> None:
    path = tmp_path / "docker.sock"
    async with forwarder(path):
        _, rpc = await start_node(docker_host=f"unix://{path}")
        await docker_ok(rpc, True)
        job_id = await rpc.create(
            test_image,
            ["sleep", "300"],
        )
        status = await rpc.wait_status(job_id, "running")
        container = docker_client.containers.get(status["executions"][0]["container_id"])
    await docker_ok(rpc, False)
    # The container ends while the node cannot see the daemon: kill it and wait for it through our own client.
    container.kill(signal="SIGKILL")
    await trio.to_thread.run_sync(container.wait)
    assert (await rpc.status(job_id))["status"] == "running"  # nothing could tell the node yet
    async with forwarder(path):
        status = await rpc.wait_status(job_id, "failed")
    assert status["executions"][0]["exit_code"] == 137
