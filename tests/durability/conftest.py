"""Fixtures for the durability tests: nodes that stop and start again on the same data directory, in this
process or as real ``cmnode run`` processes, and a second Docker daemon the tests may stop and start."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import trio
from docker.client import DockerClient

from tests.mesh.conftest import cluster  # noqa: F401  (the mesh's process cluster, for test_mesh.py)
from tests.support import (
    FINAL,
    NodeHandle,
    NodeProcess,
    Nodes,
    base_config,
    end_process,
    eventually,
    http_client,
    poll,
    remove_containers,
    stop_and_remove,
)

__all__ = [
    "FINAL",
    "NodeHandle",
    "NodeProcess",
    "Nodes",
    "base_config",
    "containers_gone",
    "containers_of",
    "hanging_registry",
]


@pytest.fixture
async def nodes(nursery: trio.Nursery, docker_client: DockerClient | None) -> AsyncIterator[Nodes]:
    async with http_client(timeout=60) as client:
        started = Nodes(nursery, client)
        yield started
        await started.stop_all()
    remove_containers(docker_client, *started.node_ids)


def containers_of(client: DockerClient, node_id: str) -> dict[str, list[dict[str, Any]]]:
    """This node's containers (the list summaries: Id, State, Labels...), grouped by label cmnode.job_id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
        out.setdefault(c["Labels"]["cmnode.job_id"], []).append(c)
    return out


async def containers_gone(client: DockerClient, node_id: str, *job_ids: str, timeout: float = 30) -> None:
    """Returns once the node has no container of any of ``job_ids`` left (removals we can only poll for)."""

    async def gone() -> bool:
        return not set(job_ids) & set(await trio.to_thread.run_sync(containers_of, client, node_id))

    await eventually(gone, timeout=timeout, what=f"containers of {', '.join(job_ids)} removed")


@asynccontextmanager
async def hanging_registry() -> AsyncIterator[str]:
    """An image reference on a loopback registry that accepts connections and never answers.

    dockerd waits ~25 s on such a pull, so a worker pulling it stays busy and jobs behind it stay queued;
    leaving the block closes the connections, and the pull fails at once."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, hold, listeners)
        yield f"127.0.0.1:{port}/cmnode-test/hang:latest"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def listing_fails_until_ping(path: Path) -> AsyncIterator[None]:
    """A unix-socket forwarder to the real daemon that cuts every request listing the node's containers
    (``/containers/json`` without a ``status`` filter) until it has forwarded a ``/_ping``.

    A fake, and only for a fault the real daemon cannot be made to produce on cue: a listing lost while the
    daemon answers a ping right after (as when it is just coming back). Requests travel one to a write here."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(64)
    pinged = False

    async def upstream_to(client: trio.abc.Stream, upstream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await upstream.receive_some(65536):
                await client.send_all(data)
        await client.aclose()

    async def handle(client: trio.SocketStream) -> None:
        nonlocal pinged
        upstream = await trio.open_unix_socket("/var/run/docker.sock")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream_to, client, upstream)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await client.receive_some(65536):
                    pinged = pinged or b"/_ping" in data
                    if not pinged and b"/containers/json" in data and b"status" not in data:
                        break  # cut the connection: the client sees it dropped
                    await upstream.send_all(data)
            await upstream.aclose()
            await client.aclose()
            nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handle, [trio.SocketListener(sock)])
            yield
            nursery.cancel_scope.cancel()
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def node_processes(docker_client: DockerClient | None) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    stop_and_remove(docker_client, started)  # not kill -9: a create in flight would leak its container


# -- a second dockerd ----------------------------------------------------------------------------------------


class SecondDaemon:
    """A dockerd of the test's own (own data-root, exec-root, pidfile and socket; no bridge, no iptables), so a
    test can really stop and start a daemon without touching the one other tests share.

    It runs in a network namespace of its own (``unshare --net``): started with ``--bridge none``, dockerd
    deletes any ``docker0`` interface it sees, which in the host namespace is the shared daemon's bridge."""

    def __init__(self, root: Path, *extra: str) -> None:
        self.root = root
        self.extra = extra
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "dockerd.log"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["unshare", "--net", "dockerd", "--data-root", str(self.root / "data"),
                 "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
                 "--host", self.url, "--bridge", "none",
                 "--iptables=false", "--ip-masq=false", "--ip6tables=false", *self.extra],
                stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        poll(self._answers, timeout=60, what=f"second dockerd (log: {self.log})")

    def _answers(self) -> bool:
        assert self.proc is not None
        try:
            client = DockerClient(base_url=self.url, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (docker.errors.DockerException, OSError):
            if self.proc.poll() is not None:
                raise AssertionError(f"second dockerd exited: {self.log.read_text()[-2000:]}") from None
            return False

    def stop(self) -> None:
        """SIGTERM, as an operator stopping the service would; returns once the daemon has exited."""
        assert self.proc is not None
        end_process(self.proc, signal.SIGTERM, timeout=60)

    def unmount(self) -> None:
        """Undo the mounts dockerd leaves under its roots (with live-restore it keeps its data-root bind)."""
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.root))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)

    def client(self) -> DockerClient:
        return DockerClient(base_url=self.url, timeout=30)


@pytest.fixture(params=[False, True], ids=["containers-stop-with-the-daemon", "live-restore"])
def second_dockerd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, test_image: str
) -> Iterator[SecondDaemon]:
    """Without live-restore, stopping dockerd stops our containers too; with it, they run on without it."""
    # A short path: the socket path must fit in sun_path (108 bytes).
    root = Path(tmp_path_factory.mktemp("dockerd"))
    daemon = SecondDaemon(root, *(["--live-restore"] if request.param else []))
    shared_bridge = Path("/sys/class/net/docker0").exists()
    daemon.start()
    try:
        saved = subprocess.Popen(["docker", "save", test_image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", daemon.url, "load"], stdin=saved.stdout, check=True, capture_output=True,
                       timeout=120)  # fmt: skip
        saved.wait(timeout=30)
        yield daemon
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            with contextlib.suppress(Exception):
                client = daemon.client()
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                client.close()
            daemon.stop()
        daemon.unmount()
        assert Path("/sys/class/net/docker0").exists() == shared_bridge, "the shared daemon's bridge was touched"
