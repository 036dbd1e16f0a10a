"""The node's Docker client keeps one bounded pool of connections to dockerd, not one per request URL.

The SDK's unix-socket adapter pools by URL, so every container's URLs each kept a socket open (26 and more after
a few dozen containers); node/docker_client.py shares one pool keyed by the socket. The real test counts this
process's sockets to dockerd by their peer address; the fast ones check the adapter swap without a daemon.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

import pytest
import trio
from docker.api.client import APIClient
from docker.transport.unixconn import UnixHTTPAdapter

from node.docker_client import SharedPoolAdapter, share_one_pool
from node.docker_runtime import DockerRuntime
from node.model import Job, JobSpec
from node.runtime import ContainerExit, DockerHealth
from tests.support import eventually

WAIT = 20.0
CONTAINERS = 40
AT_ONCE = 4  # containers handled at the same time, more than the runtime's threads
MAX_THREADS = 2
IN_FLIGHT = MAX_THREADS + 2 + AT_ONCE
"""The most connections in use at once: the runtime's threads, the exit watcher's event stream and the inspect it
makes per exit (outside the threads' limiter), and the follows running (at most one per container at a time)."""


def docker_sockets() -> int:
    """This process's open sockets whose peer is dockerd's socket."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:  # closed meanwhile
            continue
        try:
            if sock.family == socket.AF_UNIX and str(sock.getpeername()).endswith("docker.sock"):
                count += 1
        except OSError:  # not connected
            pass
        finally:
            sock.close()
    return count


def job(image: str, i: int) -> Job:
    spec = JobSpec(image=image, arguments=("sh", "-c", f"echo out {i}; echo err {i} >&2"))
    return Job(job_id=f"pool-{i}", spec=spec, origin="test-origin", created_at=time.time())


@pytest.fixture
async def runtime(node_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(node_id=node_id, docker_timeout=WAIT, pull_timeout=WAIT, max_threads=MAX_THREADS)
    yield rt
    rt.close()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_many_containers_leave_few_idle_sockets(runtime: DockerRuntime, test_image: str) -> None:
    baseline = docker_sockets()  # the fixtures' own client; the runtime has not contacted dockerd yet
    exits: dict[str, trio.Event] = {}
    events = trio.open_memory_channel[ContainerExit | DockerHealth](100)
    limiter = trio.CapacityLimiter(AT_ONCE)

    async def collect_exits() -> None:
        async for item in events[1]:
            if isinstance(item, ContainerExit):
                exits.setdefault(item.container_id, trio.Event()).set()

    async def one(i: int) -> None:
        """Every kind of call the node makes per container, each to URLs of that container's own."""
        async with limiter:
            cid = await runtime.prepare_and_start(job(test_image, i), 1)
            with trio.fail_after(WAIT):
                await exits.setdefault(cid, trio.Event()).wait()
                info = await runtime.inspect(cid)
                assert info is not None and info.exit_code == 0
                assert await runtime.logs(cid) == (f"out {i}\n", f"err {i}\n")
                if i % 4 == 0:  # a follow: a stream of its own, let go of at its end
                    chunks = [chunk.text async for chunk in runtime.follow(cid)]
                    assert "".join(chunks).count(str(i)) == 2
                await runtime.remove(cid)

    counts: list[int] = []

    async def bounded() -> int | None:
        counts.append(docker_sockets() - baseline)
        return counts[-1] if counts[-1] <= IN_FLIGHT else None

    async with trio.open_nursery() as watching:
        await watching.start(runtime.watch_exits, events[0])
        watching.start_soon(collect_exits)
        with trio.fail_after(CONTAINERS * WAIT / AT_ONCE):
            async with trio.open_nursery() as jobs:
                for i in range(CONTAINERS):
                    jobs.start_soon(one, i)
        # A follow's socket is closed by a thread of its own just after the follow ends: allow a moment for it.
        with contextlib.suppress(AssertionError):
            await eventually(bounded, timeout=5, interval=0.05)
        # Before the fix: 26-29, a socket per pool and a pool per URL (the SDK keeps 25), plus the event stream.
        assert 1 <= counts[-1] <= IN_FLIGHT, f"{counts[-1]} sockets to dockerd after {CONTAINERS} containers"
        watching.cancel_scope.cancel()

    runtime.close()
    await eventually(lambda: _at_most(baseline), timeout=5, interval=0.05, what="every socket closed by close()")


async def _at_most(baseline: int) -> bool:
    return docker_sockets() <= baseline


# -- the adapter swap, without a daemon ---------------------------------------------------------------------------


def test_every_url_of_a_unix_socket_shares_one_pool() -> None:
    api = APIClient(base_url="unix:///tmp/cmnode-absent.sock", version="1.41", timeout=7, max_pool_size=9)
    share_one_pool(api)
    adapter = api.get_adapter("http+docker://localhost/v1.41/containers/abc/json")
    assert isinstance(adapter, SharedPoolAdapter) and api._custom_adapter is adapter
    assert (adapter.socket_path, adapter.timeout, adapter.max_pool_size) == ("/tmp/cmnode-absent.sock", 7, 9)
    first = adapter.get_connection("http+docker://localhost/v1.41/containers/abc/json")
    second = adapter.get_connection("http+docker://localhost/v1.41/containers/def/logs?stdout=1&follow=1")
    assert first is second and len(adapter.pools) == 1
    assert first.pool.maxsize == 9
    share_one_pool(api)  # again: nothing changes
    assert api.get_adapter("http+docker://localhost/") is adapter
    api.close()


def test_a_tcp_daemon_keeps_the_sdk_adapter() -> None:
    api = APIClient(base_url="tcp://127.0.0.1:1", version="1.41")
    before = dict(api.adapters)
    share_one_pool(api)
    assert api.adapters == before
    assert not any(isinstance(a, UnixHTTPAdapter) for a in api.adapters.values())
    api.close()
