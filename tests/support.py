"""What the test folders share, one of each: the gate for a missing dependency (skip here, fail in CI), a real
``cmnode run`` process, nodes run inside the test's own trio nursery, a JSON-RPC client, polling with a
deadline, and the removal of the containers a test's nodes labelled.

Nothing here imports the node at module level, so a test of pure code does not pay for (or break on) it.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

import docker.errors
import httpx
import pytest
import trio
from docker.client import DockerClient

if TYPE_CHECKING:
    from node.app import RunningNode
    from node.config import Config

__all__ = [
    "COMMAND",
    "FINAL",
    "REQUIRE",
    "NodeHandle",
    "NodeProcess",
    "Nodes",
    "Rpc",
    "RpcError",
    "base_config",
    "clean_env",
    "end_process",
    "eventually",
    "http_client",
    "missing",
    "poll",
    "remove_containers",
    "required",
    "start_all",
    "stop_all",
    "stop_and_remove",
]

T = TypeVar("T")

FINAL = ("complete", "failed", "cancelled", "lost", "rejected")
"""The job statuses that do not change any more."""

# -- the gate for what a test needs from the machine -----------------------------------------------------------

REQUIRE = ("CMNODE_REQUIRE_ALL", "CMNODE_REQUIRE_DOCKER")
"""Set to 1 (scripts/test sets the first), a missing dependency fails its tests instead of skipping them, so a
broken CI runner cannot pass by skipping. CMNODE_REQUIRE_DOCKER is the older name, still honoured."""


def required() -> bool:
    return any(os.environ.get(name) == "1" for name in REQUIRE)


def missing(what: str, why: str) -> NoReturn:
    """The test cannot have ``what`` on this machine: skip it here, fail it where everything is required."""
    message = f"{what} unavailable: {why}"
    if required():
        pytest.fail(f"{message} (required: {REQUIRE[0]}=1)", pytrace=False)
    pytest.skip(message)


# -- waiting ---------------------------------------------------------------------------------------------------


def _holds(result: object) -> bool:
    return result is not None and result is not False


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 30, interval: float = 0.1, what: str = ""
) -> T:
    """Await ``check`` until it returns something other than None or False, and return that.

    For state behind an API without a push channel (a node's JSON-RPC, dockerd's listings); where an event
    can be awaited, await it instead. Under ``autojump_clock`` the waits cost no wall time.

    Raises:
        AssertionError: not within ``timeout`` seconds; the message names ``what`` and the last result.
    """
    last: object = None
    with trio.move_on_after(timeout):
        while True:
            last = await check()
            if _holds(last):
                return last  # type: ignore[return-value]
            await trio.sleep(interval)
    raise AssertionError(f"{what or getattr(check, '__name__', 'condition')} not within {timeout}s (last: {last!r})")


def poll(check: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.1, what: str = "") -> T:
    """``eventually`` for synchronous tests (those driving the ``cmnode`` executable or a blocking client)."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if _holds(last):
            return last  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what or getattr(check, '__name__', 'condition')} not within {timeout}s (last: {last!r})"
            )
        time.sleep(interval)


# -- JSON-RPC ----------------------------------------------------------------------------------------------------


class RpcError(Exception):
    """The node answered with a JSON-RPC error object (kept whole in ``error``)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


def http_client(*, timeout: float | httpx.Timeout = 30, **kwargs: Any) -> httpx.AsyncClient:
    """An HTTP client for the nodes a test stops, without keep-alive: a node's graceful stop waits out every idle
    connection a client keeps open to it (``--graceful-timeout``, 3 s), so each stop would cost 3 s."""
    kwargs.setdefault("limits", httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(timeout=timeout, **kwargs)


class Rpc:
    """A minimal JSON-RPC client for one node: ``raw`` returns the whole answer, ``call`` the result."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self._id = 0

    async def raw(self, method: str, params: Any) -> dict[str, Any]:
        self._id += 1
        response = await self.client.post(
            self.url, json={"jsonrpc": "2.0", "method": method, "params": params, "id": self._id}
        )
        body: dict[str, Any] = response.json()
        return body

    async def call(self, method: str, params: Any = None) -> Any:
        """The result; an error answer raises ``RpcError``."""
        body = await self.raw(method, [params] if params is not None else [])
        if "error" in body:
            raise RpcError(body["error"])
        return body["result"]

    async def create(self, image: str, arguments: list[str] | None = None, **extra: Any) -> str:
        result = await self.call("ContainerService.Create", {"image": image, "arguments": arguments or [], **extra})
        job_id: str = result["job_id"]
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("ContainerService.Status", {"job_id": job_id})
        return result

    async def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], *, timeout: float = 30
    ) -> dict[str, Any]:
        """Status, once ``done`` holds for it."""
        seen: list[dict[str, Any]] = []

        async def check() -> dict[str, Any] | None:
            seen[:] = [await self.status(job_id)]
            return seen[0] if done(seen[0]) else None

        try:
            return await eventually(check, timeout=timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(f"job {job_id} not as awaited within {timeout}s; last Status: {seen}") from None

    async def wait_status(self, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(job_id, lambda s: s["status"] in statuses, timeout=timeout)


# -- nodes -------------------------------------------------------------------------------------------------------

_SCRIPT = Path(sys.executable).with_name("cmnode")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "node"]
"""The real executable: the console script of this virtualenv, else the package run as a module."""
READY = re.compile(r"node (\S+) ready, RPC at (https?://\S+)/jrpc")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CMNODE_* (a developer's own settings must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMNODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class NodeProcess:
    """A ``cmnode run`` process (port 0; by default on loopback with mDNS off) on ``data_dir``.

    ``start()`` returns once the node printed its ready line; it may be called again after a stop, on the same
    data directory. The node logs to ``log`` (a file, not a pipe: a full pipe would block a chatty node)."""

    def __init__(
        self,
        data_dir: Path,
        *flags: str,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        listen: str = "127.0.0.1",
        mdns: bool = False,
        p2p_port: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.env = env or {}
        self.prefix = tuple(prefix)
        self.command = node_command(data_dir, *flags, listen=listen, mdns=mdns, p2p_port=p2p_port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_id = ""
        self.url = ""
        """The node's base URL (``/jrpc``, ``/healthz`` and ``/metrics`` below it)."""

    @property
    def rpc_url(self) -> str:
        return self.url + "/jrpc"

    def start(self, timeout: float = 60) -> Self:
        """Start the process and wait for its ready line (blocking: from trio, run it in a thread).

        Raises:
            AssertionError: it exited or printed no ready line within ``timeout``; the message holds its log.
        """
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as log:
            self.proc = subprocess.Popen([*self.prefix, *self.command], stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, env=clean_env(**self.env))  # fmt: skip
        line = self._first_line(timeout)
        match = READY.search(line)
        if match is None:
            self.stop(signal.SIGKILL)
            raise AssertionError(f"node did not start: {line!r}\n{self.log.read_text()[-3000:]}")
        self.node_id, self.url = match.group(1), match.group(2)
        return self

    def _first_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd, data = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:  # it exited
                break
            data += chunk
        return data.decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the process and wait for it; returns its exit code (-9 if it overstayed ``timeout``)."""
        if self.proc is None:
            return 0
        code = end_process(self.proc, sig, timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        """kill -9: no shutdown code runs, whatever the node was doing."""
        self.stop(signal.SIGKILL)


def start_all(nodes: Sequence[NodeProcess], timeout: float = 60) -> list[NodeProcess]:
    """Start ``nodes`` at once and wait for every ready line (blocking: from trio, run it in a thread). A start
    is mostly the interpreter's imports, so nodes that need not wait for each other start together.

    Raises:
        AssertionError: one did not start (the others are started, or being started: stop them all).
    """
    if len(nodes) <= 1:
        return [node.start(timeout) for node in nodes]
    with ThreadPoolExecutor(len(nodes)) as pool:
        started = [pool.submit(node.start, timeout) for node in nodes]
        return [future.result() for future in started]


def stop_all(nodes: Sequence[NodeProcess], sig: int = signal.SIGTERM, timeout: float = 20) -> list[int]:
    """Signal every node at once and wait for them all (a graceful stop takes a few seconds each); their exit
    codes, in order."""
    if len(nodes) <= 1:
        return [node.stop(sig, timeout) for node in nodes]
    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(lambda node: node.stop(sig, timeout), nodes))


def end_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Signal ``proc`` (unless it has ended) and wait; SIGKILL if it overstays ``timeout``. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode


def node_command(
    data_dir: Path, *flags: str, listen: str = "127.0.0.1", mdns: bool = False, p2p_port: int = 0
) -> list[str]:
    """The ``cmnode run`` command line of a test node (RPC on port 0)."""
    return [*COMMAND, "run", "--listen-address", listen, "--port", "0", "--p2p-port", str(p2p_port),
            "--mdns" if mdns else "--no-mdns", "--data-dir", str(data_dir), *flags]  # fmt: skip


def base_config(data_dir: Path, **overrides: Any) -> Config:
    """The configuration of a node run in the test's process: loopback, port 0, mDNS off, four workers."""
    from node.config import Config

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

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    async def stop(self) -> None:
        self._stop.set()
        with trio.fail_after(30):
            await self._done.wait()


class Nodes:
    """Starts nodes in a nursery; ``node_ids`` holds every node started, for the clean-up of their containers,
    and ``stop_all()`` stops those still running: a clean-up that removes the containers of a running node races
    its next start (a container that starts after the removal listed the node's is left on the engine)."""

    def __init__(self, nursery: trio.Nursery, client: httpx.AsyncClient) -> None:
        self.nursery = nursery
        self.client = client
        self.node_ids: set[str] = set()
        self.handles: list[NodeHandle] = []

    async def stop_all(self) -> None:
        """Stop every node started here that is still running, all at once (each as SIGTERM would)."""
        async with trio.open_nursery() as nursery:
            for handle in self.handles:
                if not handle.stopped:
                    nursery.start_soon(handle.stop)

    async def start(self, config: Config, timeout: float = 60) -> NodeHandle:
        from node.app import run_node

        stop, done = trio.Event(), trio.Event()

        async def serve(task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await run_node(config, shutdown_trigger=stop.wait, task_status=task_status)
            finally:
                done.set()

        with trio.fail_after(timeout):
            running: RunningNode = await self.nursery.start(serve)
        self.node_ids.add(running.node_id)
        handle = NodeHandle(running, Rpc(self.client, running.rpc_url + "/jrpc"), stop, done)
        self.handles.append(handle)
        return handle


# -- clean-up ------------------------------------------------------------------------------------------------------


def stop_and_remove(client: DockerClient | None, nodes: Sequence[NodeProcess], timeout: float = 20) -> None:
    """Stop every node gracefully (SIGTERM to all at once, then wait), then remove the containers they labelled.

    Not SIGKILL: dockerd completes a create or start whose client died, so a node killed with one in flight gets
    its container after the removal has listed the node's (a leak, found by the session's check in
    tests/conftest.py). A stopping node finishes those calls (they are shielded) before it exits."""
    running = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    for node in running:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGTERM)
    for node in running:
        node.stop(signal.SIGTERM, timeout)  # waits (SIGTERM is not sent again to a process that has ended)
    remove_containers(client, *{n.node_id for n in nodes if n.node_id})


def remove_containers(client: DockerClient | None, *node_ids: str, timeout: float = 15) -> None:
    """Force-remove every container labelled with one of ``node_ids`` (running or not); no client, nothing.

    A removal dockerd refuses (409: a start of that container is still in flight, from a node that was killed
    mid-call) is tried again until ``timeout``: suppressing it left a container that started, and exited, after
    the removal had given up (a leak the session's check in tests/conftest.py found in CI)."""
    if client is None:
        return
    deadline = time.monotonic() + timeout
    for node_id in node_ids:
        while True:
            refused = []
            for c in client.api.containers(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
                try:
                    client.api.remove_container(c["Id"], force=True)
                except docker.errors.NotFound:  # gone already
                    pass
                except docker.errors.APIError as exc:
                    if "already in progress" not in str(exc):  # another removal of it is under way: it goes
                        refused.append(exc)
            if not refused:
                break
            if time.monotonic() > deadline:
                raise refused[0]
            time.sleep(0.2)


def run_threads_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``trio.to_thread.run_sync`` calls inline (after a checkpoint), so that under ``autojump_clock`` the
    clock jumps only when the tasks idle, not while a store call runs in a thread."""

    async def run_sync(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
