"""``cmnode run`` as a real process, driven with the original service's curl payloads."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.client import DockerClient

from tests.support import NodeProcess, poll, stop_and_remove

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SEED_CREATE = """{
    "jsonrpc": "2.0",
    "method": "ContainerService.Create",
    "params": [{
        "image": "nginx",
        "arguments": [],
        "env": {}
    }],
    "id": 1
}"""

SEED_STATUS = """{
    "jsonrpc": "2.0",
    "method": "ContainerService.Status",
    "params": [{"job_id":"%s"}],
    "id": 1
}"""


def curl(node: NodeProcess, payload: str) -> dict[str, object]:
    """The seed README's exact command line: curl -X POST .../jrpc -H ... -d '...'."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-X", "POST", node.rpc_url, "-H", "Content-Type: application/json",
         "-d", payload],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    body: dict[str, object] = json.loads(out.stdout)
    return body


@pytest.fixture
def node_process(tmp_path: Path, test_image: str, docker_client: DockerClient | None) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "data").start()
    yield node
    stop_and_remove(docker_client, [node])  # the seed job's nginx stand-in keeps running after its node stops


def stops_cleanly(node: NodeProcess, sig: int) -> None:
    """The signal ends the node promptly (within the bound, else it is killed: -9), with status 0, no traceback."""
    assert node.stop(sig, timeout=10) == 0
    assert "Traceback" not in node.log.read_text()


def test_seed_curl_payloads_work_unchanged(node_process: NodeProcess, docker_client: object) -> None:
    created = curl(node_process, SEED_CREATE)
    assert created["id"] == 1 and created["jsonrpc"] == "2.0"
    result = created["result"]
    assert isinstance(result, dict)
    assert result["message"] == "Job created successfully"
    job_id = result["job_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id)

    def running() -> dict[str, object] | None:  # the seed image "nginx" (a local stand-in here) keeps running
        result = curl(node_process, SEED_STATUS % job_id)["result"]
        assert isinstance(result, dict)
        assert list(result)[:2] == ["status", "job_id"]
        assert result["job_id"] == job_id
        return result if result["status"] == "running" else None

    result = poll(running, what="the seed job running")
    assert result["executions"][0]["state"] == "running"  # type: ignore[index]
    stops_cleanly(node_process, signal.SIGTERM)


def test_sigint_stops_cleanly(node_process: NodeProcess) -> None:
    stops_cleanly(node_process, signal.SIGINT)


def test_bad_flag_is_one_line_and_nonzero(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node", "run", "--port", "99999", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "port" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_job_and_garbage_bodies(node_process: NodeProcess) -> None:
    missing = curl(node_process, SEED_STATUS % "00000000-0000-0000-0000-000000000000")
    assert missing["error"] == {  # type: ignore[comparison-overlap]
        "code": -32001,
        "message": "job 00000000-0000-0000-0000-000000000000 not found",
        "data": {"job_id": "00000000-0000-0000-0000-000000000000"},
    }
    garbage = curl(node_process, "this is not json")
    assert garbage["error"]["code"] == -32700  # type: ignore[index]
    huge = '{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"' + "a" * (1 << 20) + '"}],"id":1}'
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-X", "POST", node_process.rpc_url, "-H", "Content-Type: application/json",
         "--data-binary", "@-"],
        input=huge, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    body = json.loads(out.stdout)
    assert body["error"]["code"] == -32600
    assert "too large" in body["error"]["message"]
