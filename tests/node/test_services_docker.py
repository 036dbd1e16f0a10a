"""Services against the real dockerd, at the runtime's level: a published port answers on loopback, a host port
already taken fails the start naming it (and leaves nothing behind), healthchecks turn healthy or unhealthy as
Docker events (and are reported again on reconnect), and a named volume outlives the job that wrote it. The
executor's side of each is in ``tests/node/test_services_fake.py``; the whole path through ``cmnode`` in
``tests/cli/test_services.py``."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker.errors
import httpx
import pytest
import trio
from docker.client import DockerClient

from node.docker_runtime import DockerRuntime
from node.model import Job, JobSpec
from node.runtime import ContainerExit, ContainerHealth, DockerHealth, PortTakenError, RuntimeEvent

pytestmark = [pytest.mark.docker, pytest.mark.slow]

WAIT = 30.0
Events = trio.MemoryReceiveChannel[RuntimeEvent]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service(image: str, *arguments: str, job_id: str | None = None, **spec: Any) -> Job:
    return Job(
        job_id=job_id or f"svc-{uuid.uuid4().hex[:8]}",
        spec=JobSpec.from_json({"image": image, "arguments": list(arguments), **spec}),
        origin="test-origin",
        created_at=time.time(),
    )


def httpd(image: str, port: int, text: str) -> Job:
    """busybox httpd serving ``text`` at / on container port 8080, published on 127.0.0.1:``port``."""
    script = f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"
    return service(image, "sh", "-c", script, ports=[f"127.0.0.1:{port}:8080"])


@pytest.fixture
async def runtime(node_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(node_id=node_id, docker_timeout=WAIT, pull_timeout=WAIT)
    yield rt
    rt.close()


async def watch(rt: DockerRuntime, nursery: trio.Nursery) -> Events:
    send, recv = trio.open_memory_channel[RuntimeEvent](100)
    await nursery.start(rt.watch_exits, send)
    with trio.fail_after(WAIT):
        assert await recv.receive() == DockerHealth(ok=True)
    return recv


async def next_of(events: Events, container_id: str, kind: type[ContainerExit | ContainerHealth]) -> Any:
    with trio.fail_after(WAIT):
        async for item in events:
            if isinstance(item, kind) and item.container_id == container_id:
                return item
    raise AssertionError("watch_exits ended")


async def fetch(url: str) -> httpx.Response:
    """GET ``url`` once the server in the container listens (its start is not an event)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        with trio.fail_after(WAIT):
            while True:
                try:
                    return await client.get(url)
                except httpx.TransportError:
                    await trio.sleep(0.2)


async def test_a_published_port_answers_and_a_second_taker_fails_naming_it(
    runtime: DockerRuntime, test_image: str, docker_client: DockerClient, node_id: str
) -> None:
    port = free_port()
    with trio.fail_after(WAIT):
        first = await runtime.start(httpd(test_image, port, "first"), 1)
    response = await fetch(f"http://127.0.0.1:{port}/")
    assert (response.status_code, response.text) == (200, "first\n")

    second = httpd(test_image, port, "second")
    with trio.fail_after(WAIT), pytest.raises(PortTakenError) as caught:
        await runtime.start(second, 1)
    assert (caught.value.host_port, caught.value.protocol) == (port, "tcp")
    assert f"host port {port}/tcp is taken on this node" in caught.value.message
    assert caught.value.message.startswith(f"cannot start container for job {second.job_id}: ")
    left = docker_client.containers.list(all=True, filters={"label": f"cmnode.job_id={second.job_id}"})
    assert left == []  # the container that could not start is not left behind

    with trio.fail_after(WAIT):
        await runtime.stop(first, grace=1)
        again = await runtime.start(httpd(test_image, port, "again"), 1)  # free once the first is stopped
    assert (await fetch(f"http://127.0.0.1:{port}/")).text == "again\n"
    with trio.fail_after(WAIT):
        await runtime.stop(again, grace=1)


async def test_a_udp_port_is_published_as_udp(
    runtime: DockerRuntime, test_image: str, docker_client: DockerClient
) -> None:
    port = free_port()
    with trio.fail_after(WAIT):
        cid = await runtime.start(service(test_image, "sleep", "30", ports=[f"127.0.0.1:{port}:53/udp"]), 1)
    bindings = docker_client.api.inspect_container(cid)["HostConfig"]["PortBindings"]
    assert bindings == {"53/udp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    with trio.fail_after(WAIT):
        await runtime.stop(cid, grace=1)


async def test_healthchecks_turn_healthy_or_unhealthy_and_are_reported_again_on_reconnect(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    events = await watch(runtime, nursery)
    check = {"interval": 0.2, "timeout": 2, "retries": 1}
    with trio.fail_after(WAIT):
        good = await runtime.start(service(test_image, "sleep", "60", healthcheck={"command": "true", **check}), 1)
        bad = await runtime.start(service(test_image, "sleep", "60", healthcheck={"command": ["false"], **check}), 1)
    assert (await next_of(events, good, ContainerHealth)).status == "healthy"
    assert (await next_of(events, bad, ContainerHealth)).status == "unhealthy"

    again = await watch(runtime, nursery)  # a second watcher stands for a reconnect: it lists what is known
    seen: dict[str, str] = {}
    with trio.fail_after(WAIT):
        async for item in again:
            if isinstance(item, ContainerHealth) and item.container_id in (good, bad):
                seen[item.container_id] = item.status
            if len(seen) == 2:
                break
    assert seen == {good: "healthy", bad: "unhealthy"}
    with trio.fail_after(WAIT):
        await runtime.stop(good, grace=1)
        await runtime.stop(bad, grace=1)


@pytest.fixture
def volume_name(docker_client: DockerClient) -> Iterator[str]:
    name = f"cmnode-test-{uuid.uuid4().hex[:12]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"volume": name}):
        container.remove(force=True)  # exited job containers are kept (for their logs) and hold the volume
    with contextlib.suppress(docker.errors.NotFound):  # never created, if the test failed early
        docker_client.volumes.get(name).remove(force=True)


async def test_a_named_volume_outlives_the_job_and_ro_is_read_only(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery, volume_name: str
) -> None:
    events = await watch(runtime, nursery)
    with trio.fail_after(WAIT):
        writer = await runtime.start(
            service(test_image, "sh", "-c", "echo kept > /data/note", volumes=[f"{volume_name}:/data"]), 1
        )
    assert (await next_of(events, writer, ContainerExit)).exit_code == 0
    reader_job = service(
        test_image,
        "sh",
        "-c",
        "cat /data/note; echo x > /data/other || echo refused",
        volumes=[f"{volume_name}:/data:ro"],
    )
    with trio.fail_after(WAIT):
        reader = await runtime.start(reader_job, 1)
    assert (await next_of(events, reader, ContainerExit)).exit_code == 0
    with trio.fail_after(WAIT):
        stdout, stderr = await runtime.logs(reader)
    assert stdout == "kept\nrefused\n" and "Read-only file system" in stderr
