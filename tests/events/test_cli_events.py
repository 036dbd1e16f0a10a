"""``cmnode events`` and ``--wait`` against a real ``cmnode run`` process, as a user runs them."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from docker.client import DockerClient

from rpc.client import Client
from tests.cli.conftest import cmnode
from tests.support import COMMAND, NodeProcess, clean_env, end_process, remove_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, test_image: str, docker_client: DockerClient
) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path_factory.mktemp("events") / "node", "--rpc-token", "tok").start()
    yield proc
    proc.stop()
    remove_containers(docker_client, proc.node_id)


def read_until(proc: subprocess.Popen[str], done: Any, *, timeout: float = 60) -> list[dict[str, Any]]:
    """JSON lines of ``proc`` until ``done`` holds for them (the wait bounded by a watchdog that ends it)."""
    import threading

    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    got: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append(json.loads(line))
            if done(got):
                return got
    finally:
        watchdog.cancel()
    raise AssertionError(f"the stream ended first: {got}")


def test_events_json_follows_a_job(node: NodeProcess, test_image: str) -> None:
    env = clean_env(CMNODE_URL=node.url, CMNODE_TOKEN="tok")
    proc = subprocess.Popen([*COMMAND, "events", "--json", "--type", "job,execution"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        # the stream is open once a first event arrives: a job made before that might be missed, so make one
        # and wait for its event, then the one the test follows
        out = cmnode("create", test_image, "--", "true", env={"CMNODE_TOKEN": "tok"}, url=node.url)
        first = out.stdout.strip()
        read_until(proc, lambda g: any(e["data"]["job_id"] == first for e in g))
        out = cmnode("create", test_image, "--", "sh", "-c", "echo hi", env={"CMNODE_TOKEN": "tok"}, url=node.url)
        job_id = out.stdout.strip()
        got = read_until(proc, lambda g: any(e["data"].get("job_id") == job_id and e["data"].get("status")
                                             == "complete" and e["type"] == "execution" for e in g))  # fmt: skip
    finally:
        end_process(proc)
    mine = [e for e in got if e["data"]["job_id"] == job_id]
    assert mine[0]["type"] == "job" and mine[0]["data"]["image"] == test_image
    assert [e["data"]["state"] for e in mine[1:]][-1] == "complete"
    assert [e["id"] for e in got] == sorted(e["id"] for e in got)


def test_events_refuses_a_missing_token_and_a_bad_type(node: NodeProcess) -> None:
    out = cmnode("events", url=node.url, timeout=30)
    assert out.returncode == 6 and "token" in out.stderr
    out = cmnode("events", "--type", "nope", url=node.url, env={"CMNODE_TOKEN": "tok"}, timeout=30)
    assert out.returncode == 5 and "nope" in out.stderr


def test_create_wait_follows_the_stream(node: NodeProcess, test_image: str) -> None:
    env = {"CMNODE_TOKEN": "tok"}
    out = cmnode("create", test_image, "--wait", "--", "sh", "-c", "sleep 1; echo hi", url=node.url, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "state=running" in out.stdout and lines[-1].endswith("complete")
    job_id = lines[0]
    again = cmnode("status", job_id, "--wait", "--json", url=node.url, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "complete"


def test_a_quiet_stream_knows_where_to_resume(node: NodeProcess, test_image: str) -> None:
    """A reader that saw no event resumes where its stream began: the opening block carries that id, so what
    happened while it was away is not lost (it used to resume from "now", skipping the gap)."""
    client = Client(node.url, token="tok")
    with client.events(types=["job"]) as quiet:
        begun = quiet.last_id
    assert isinstance(begun, int)
    out = cmnode("create", test_image, "--", "true", env={"CMNODE_TOKEN": "tok"}, url=node.url)
    job_id = out.stdout.strip()
    with client.events(types=["job"], last_event_id=begun) as resumed:
        first = next(iter(resumed))
    assert first.type == "job" and first.data["job_id"] == job_id and first.id is not None and first.id > begun
