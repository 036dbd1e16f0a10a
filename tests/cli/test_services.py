"""Services the whole way: ``cmnode create`` with the service flags, against a real node and dockerd. A service
that exits is restarted, a published port answers on loopback and a second job wanting it fails naming it, a
healthcheck shows healthy, an unhealthy service is restarted, and a named volume is shared by two jobs."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import docker.errors
import httpx
import pytest
from docker.client import DockerClient

from tests.support import NodeProcess, poll

from .test_commands import as_json, create, ok, wait_status

pytestmark = [pytest.mark.docker, pytest.mark.slow]

UNHEALTHY = "unhealthy: stopped by its healthcheck"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def execution(node: NodeProcess, job_id: str) -> dict[str, Any]:
    (only,) = as_json("status", job_id, node=node)["executions"]
    return dict(only)


def until(node: NodeProcess, job_id: str, check: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        e = execution(node, job_id)
        return e if check(e) else None

    return poll(reached, timeout=timeout, interval=0.3, what=what)


def test_a_service_that_exits_is_restarted_until_stopped(node: NodeProcess) -> None:
    job_id = create(node, "--restart", "always", "--", "sh", "-c", "echo up; exit 0")
    # backoff 1 s then 2 s: attempt 3 starts ~3 s after the first exit
    seen = until(node, job_id, lambda e: e["attempt"] >= 3, "attempt 3")
    assert [h["state"] for h in seen["history"]][:2] == ["complete", "complete"]
    assert as_json("status", job_id, node=node)["spec"]["restart"] == "always"
    ok("stop", job_id, node=node)
    stopped = wait_status(node, job_id, "cancelled")
    attempt = stopped["executions"][0]["attempt"]
    assert execution(node, job_id)["attempt"] == attempt  # nothing starts after Stop


def test_a_published_port_answers_and_a_second_job_wanting_it_fails_naming_it(node: NodeProcess) -> None:
    port = free_port()
    script = "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www"
    server = create(node, "-p", f"127.0.0.1:{port}:8080", "--", "sh", "-c", script)
    wait_status(node, server, "running")

    def answer() -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
        except httpx.TransportError:
            return None

    response = poll(answer, timeout=30, interval=0.2, what=f"an answer on 127.0.0.1:{port}")
    assert (response.status_code, response.text) == (200, "served\n")

    rival = create(node, "--publish", f"127.0.0.1:{port}:80", "--", "sleep", "30")
    failed = wait_status(node, rival, "failed")["executions"][0]
    assert f"host port {port}/tcp is taken on this node" in failed["error"]
    ok("stop", server, node=node)


def test_a_healthcheck_shows_healthy_and_an_unhealthy_service_is_restarted(node: NodeProcess) -> None:
    healthy = create(node, "--health-cmd", "true", "--health-interval", "0.3", "--", "sleep", "120")
    sick = create(node, "--restart", "always", "--health-cmd", "exit 1", "--health-interval", "0.3",
                  "--health-retries", "1", "--", "sleep", "120")  # fmt: skip
    assert as_json("status", sick, node=node)["spec"]["healthcheck"] == {
        "command": "exit 1",
        "interval": 0.3,
        "retries": 1,
    }
    until(node, healthy, lambda e: e.get("health") == "healthy", "healthy")
    restarted = until(node, sick, lambda e: e["attempt"] >= 2, "a restart of the unhealthy service")
    assert restarted["history"][0]["error"] == UNHEALTHY
    assert execution(node, healthy)["state"] == "running"
    ok("stop", healthy, node=node)
    ok("stop", sick, node=node)


@pytest.fixture
def volume_name(docker_client: DockerClient) -> Iterator[str]:
    name = f"cmnode-test-{uuid.uuid4().hex[:12]}"
    yield name
    for container in docker_client.containers.list(all=True, filters={"volume": name}):
        container.remove(force=True)  # exited job containers are kept (for their logs) and hold the volume
    with contextlib.suppress(docker.errors.NotFound):  # never created, if the test failed early
        docker_client.volumes.get(name).remove(force=True)


def test_a_named_volume_is_shared_by_two_jobs(node: NodeProcess, volume_name: str) -> None:
    writer = create(node, "-v", f"{volume_name}:/data", "--", "sh", "-c", "echo kept > /data/note")
    wait_status(node, writer, "complete")
    reader = create(node, "--volume", f"{volume_name}:/data:ro", "--", "cat", "/data/note")
    wait_status(node, reader, "complete")
    assert ok("logs", reader, node=node) == "kept\n"
