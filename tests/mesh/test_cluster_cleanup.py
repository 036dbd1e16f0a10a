"""The clusters' clean-up leaves no container behind, even for a node stopped with a container create in flight.

dockerd completes a create whose client died, so a node killed (SIGKILL) while creating gets its container after
the clean-up has listed and removed the node's: the suite left job containers on the engine that way. Here a
forwarder to the real daemon holds the node's create until the clean-up has returned or the node is stopping
(then forwards it whatever became of the node, as dockerd would), so the race is decided the bad way on cue.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from docker.client import DockerClient

from tests.support import NodeProcess, Rpc, eventually, remove_containers, stop_and_remove

pytestmark = [pytest.mark.docker, pytest.mark.slow]


class HeldCreates:
    """What the forwarder saw: a create held (``holding``), and when to let it through (``release``)."""

    def __init__(self) -> None:
        self.holding = trio.Event()
        self.release = trio.Event()
        self.forwarded = trio.Event()


class Answers:
    """How many times dockerd has answered on one forwarded connection (each read of its side counts)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = trio.Condition()

    async def one_more(self) -> None:
        async with self._changed:
            self.count += 1
            self._changed.notify_all()

    async def beyond(self, count: int) -> None:
        async with self._changed:
            while self.count <= count:
                await self._changed.wait()


@asynccontextmanager
async def holding_creates(path: Path) -> AsyncIterator[HeldCreates]:
    """A unix-socket forwarder to the real daemon that holds each ``/containers/create`` until ``release``, then
    forwards it even if its client has gone (and waits for dockerd's answer)."""
    held = HeldCreates()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)

    async def upstream_to(client: trio.abc.Stream, upstream: trio.abc.Stream, answers: Answers) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await upstream.receive_some(65536):
                await answers.one_more()
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await client.send_all(data)
        await answers.one_more()

    async def handle(client: trio.SocketStream) -> None:
        async with trio.open_nursery() as nursery:

            async def connect() -> tuple[trio.SocketStream, Answers]:
                upstream = await trio.open_unix_socket("/var/run/docker.sock")
                answers = Answers()
                nursery.start_soon(upstream_to, client, upstream, answers)
                return upstream, answers

            upstream, _ = await connect()
            create_answers: Answers | None = None
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await client.receive_some(65536):
                    if b"/containers/create" in data:
                        held.holding.set()
                        await held.release.wait()
                        # The create goes to dockerd on a connection of its own, so that only dockerd's answer to
                        # it counts, and so that it never meets a kept-alive connection dockerd closed while it
                        # was held (the send would fail, and nothing would ever answer).
                        await upstream.aclose()
                        upstream, create_answers = await connect()
                        # its body, if sent apart, follows in the next read (still readable once the client died)
                    await upstream.send_all(data)
            if create_answers is not None:
                with trio.fail_after(30):
                    await create_answers.beyond(0)  # dockerd made the container, whoever is left to hear it
                held.forwarded.set()
            await upstream.aclose()
            await client.aclose()
            nursery.cancel_scope.cancel()

    listeners = [trio.SocketListener(sock)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        yield held
        nursery.cancel_scope.cancel()


def kill_and_remove(client: DockerClient | None, nodes: list[NodeProcess]) -> None:
    """The clusters' clean-up as it was (tests/mesh/conftest.py): kill -9, then remove what the nodes labelled."""
    for node in nodes:
        node.kill()
    remove_containers(client, *(n.node_id for n in nodes))


@pytest.mark.parametrize(
    ("clean_up", "left_behind"),
    [(stop_and_remove, 0), (kill_and_remove, 1)],  # the second proves the forwarder reproduces the leak
    ids=["stop_and_remove", "kill_and_remove_leaks"],
)
async def test_no_container_is_left_by_a_node_stopped_while_creating_one(
    tmp_path: Path, test_image: str, docker_available: DockerClient,
    clean_up: Callable[[DockerClient | None, list[NodeProcess]], None], left_behind: int,
) -> None:  # fmt: skip
    proxy = tmp_path / "docker.sock"
    async with holding_creates(proxy) as held, httpx.AsyncClient(timeout=30) as http:
        node = NodeProcess(tmp_path / "n", "--docker-host", f"unix://{proxy}")
        await trio.to_thread.run_sync(node.start)
        try:
            await Rpc(http, node.rpc_url).create(test_image, ["sleep", "300"])
            with trio.fail_after(30):
                await held.holding.wait()
            done = trio.Event()

            async def run_clean_up() -> None:
                await trio.to_thread.run_sync(clean_up, docker_available, [node])
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_clean_up)

                async def over_or_stopping() -> bool:
                    return done.is_set() or "received SIGTERM" in node.log.read_text()

                await eventually(over_or_stopping, timeout=30, what="the clean-up over or the node stopping")
                held.release.set()
            with trio.fail_after(30):
                await held.forwarded.wait()
            left = docker_available.api.containers(all=True, filters={"label": f"cmnode.node_id={node.node_id}"})
            assert len(left) == left_behind, [c["Names"] for c in left]
        finally:
            node.kill()
            remove_containers(docker_available, node.node_id)
