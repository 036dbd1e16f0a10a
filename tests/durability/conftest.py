"""Fixtures for the durability tests: nodes that stop and start again on the same data directory, in this
process or as real ``cmnode run`` processes, and a second Docker daemon the tests may stop and start."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
import trio
from docker.client import DockerClient

from node.app import RunningNode, run_node
from node.config import Config
from tests.mesh.conftest import cluster  # noqa: F401  (the mesh's process cluster, for test_mesh.py)
from tests.node.conftest import Rpc

FINAL = ("complete", "failed", "cancelled", "lost")


def base_config(data_dir: Path, **overrides: Any) -> Config:
    """A node on loopback, port 0, mDNS off."""
    config = Config(listen_address="127.0.0.1", port=0, p2p_port=0, mdns=False, data_dir=data_dir, worker_count=4)
    return replace(config, **overrides)


@dataclass
class NodeHandle:
    """A node running in the test's nursery; ``stop()`` is its SIGTERM (graceful) and returns once it is down."""

    running: RunningNode
    rpc: Rpc
    _stop: trio.Event
    _done: trio.Event

    @property
    def node_id(self) -> str:
        return self.running.node_id

    async def stop(self) -> None:
        self._stop.set()
        with trio.fail_after(30):
            await self._done.wait()


class Nodes:
    """Starts nodes in a nursery; every container they labelled is removed at the end."""

    def __init__(self, nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
        self.nursery = nursery
        self.client = client
        self.node_ids: set[str] = set()

    async def start(self, config: Config) -> NodeHandle:
        stop, done = trio.Event(), trio.Event()

        async def serve(task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await run_node(config, shutdown_trigger=stop.wait, task_status=task_status)
            finally:
                done.set()

        with trio.fail_after(60):
            running: RunningNode = await self.nursery.start(serve)
        self.node_ids.add(running.node_id)
        return NodeHandle(running, Rpc(self.client, running.rpc_url + "/jrpc"), stop, done)


@pytest.fixture
async def nodes(nursery: trio.Nursery, docker_client: DockerClient | None) -> AsyncIterator[Nodes]:
    async with httpx.AsyncClient(timeout=60) as client:
        started = Nodes(nursery, client)
        yield started
    if docker_client is not None:
        for node_id in started.node_ids:
            remove_containers(docker_client, node_id)


def remove_containers(client: DockerClient, node_id: str) -> None:
    for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            client.api.remove_container(c["Id"], force=True)


def containers_of(client: DockerClient, node_id: str) -> dict[str, list[dict[str, Any]]]:
    """This node's containers (the list summaries: Id, State, Labels...), grouped by label cmnode.job_id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
        out.setdefault(c["Labels"]["cmnode.job_id"], []).append(c)
    return out


async def wait_until(predicate: Any, *, timeout: float = 30, what: str = "condition") -> None:
    """Poll an async ``predicate`` (there is no push channel to follow) until it holds; fails after ``timeout``."""
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.1)


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


# -- `cmnode run` as a process -------------------------------------------------------------------------------


class NodeProcess:
    """A real ``cmnode run`` process; ``kill()`` is kill -9, ``start()`` again reuses the same data-dir."""

    def __init__(self, data_dir: Path, *flags: str) -> None:
        self.data_dir = data_dir
        self.flags = flags
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.node_id = ""
        self.log = data_dir.parent / f"{data_dir.name}.log"  # a file, not a pipe: a full pipe would block the node

    def start(self) -> NodeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0", "--no-mdns",
                 "--p2p-port", "0", "--data-dir", str(self.data_dir), "--log-level", "warning", *self.flags],
                stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the node prints one "ready" line once it serves
        match = re.search(r"node (\S+) ready, RPC at (http://\S+/jrpc)", line)
        if match is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)
            raise AssertionError(f"node did not start: {line!r} {self.log.read_text()[-3000:]}")
        self.node_id, self.url = match.group(1), match.group(2)
        return self

    def kill(self) -> None:
        """kill -9: no shutdown code runs, whatever the store writer was doing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def terminate(self) -> str:
        """SIGTERM; returns what the node logged."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=30)
        return self.log.read_text()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def node_processes(docker_client: DockerClient | None) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        node.close()
        if docker_client is not None and node.node_id:
            remove_containers(docker_client, node.node_id)


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
        deadline = time.monotonic() + 60
        while True:
            try:
                client = DockerClient(base_url=self.url, timeout=5)
                client.ping()
                client.close()
                return
            except (docker.errors.DockerException, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"second dockerd did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, as an operator stopping the service would; returns once the daemon has exited."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

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
