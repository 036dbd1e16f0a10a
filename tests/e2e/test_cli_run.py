"""``cmnode run`` as a real process, driven with the original service's curl payloads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

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


class NodeProcess:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url

    def curl(self, payload: str) -> dict[str, object]:
        """The seed README's exact command line: curl -X POST .../jrpc -H ... -d '...'."""
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-X", "POST", self.url, "-H", "Content-Type: application/json",
             "-d", payload],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        body: dict[str, object] = json.loads(out.stdout)
        return body


def start(tmp_path: Path, *extra: str) -> NodeProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", "--listen-address", "127.0.0.1", "--port", "0", "--no-mdns",
         "--p2p-port", "0", "--data-dir", str(tmp_path / "data"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the node prints one "ready" line once it serves
    match = re.search(r"RPC at (http://\S+/jrpc)", line)
    if match is None:
        proc.kill()
        raise AssertionError(f"node did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return NodeProcess(proc, match.group(1))


@pytest.fixture
def node_process(tmp_path: Path, test_image: str) -> Iterator[NodeProcess]:
    node = start(tmp_path)
    yield node
    if node.proc.poll() is None:
        node.proc.kill()
        node.proc.wait()


def stop(node: NodeProcess, sig: int = signal.SIGTERM) -> tuple[float, str]:
    begin = time.monotonic()
    node.proc.send_signal(sig)
    _, stderr = node.proc.communicate(timeout=15)
    return time.monotonic() - begin, stderr


def test_seed_curl_payloads_work_unchanged(node_process: NodeProcess, docker_client: object) -> None:
    created = node_process.curl(SEED_CREATE)
    assert created["id"] == 1 and created["jsonrpc"] == "2.0"
    result = created["result"]
    assert isinstance(result, dict)
    assert result["message"] == "Job created successfully"
    job_id = result["job_id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", job_id)

    deadline = time.monotonic() + 30
    while True:  # the seed image "nginx" (a local stand-in here) keeps running, like nginx
        status = node_process.curl(SEED_STATUS % job_id)
        result = status["result"]
        assert isinstance(result, dict)
        assert list(result)[:2] == ["status", "job_id"]
        assert result["job_id"] == job_id
        if result["status"] == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert result["status"] == "running"
    assert result["executions"][0]["state"] == "running"

    elapsed, stderr = stop(node_process)
    assert node_process.proc.returncode == 0
    assert elapsed < 5
    assert "Traceback" not in stderr


def test_sigint_stops_cleanly(node_process: NodeProcess) -> None:
    elapsed, stderr = stop(node_process, signal.SIGINT)
    assert node_process.proc.returncode == 0
    assert elapsed < 5
    assert "Traceback" not in stderr


def test_bad_flag_is_one_line_and_nonzero(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node", "run", "--port", "99999", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 2
    assert "port" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_job_and_garbage_bodies(node_process: NodeProcess) -> None:
    missing = node_process.curl(SEED_STATUS % "00000000-0000-0000-0000-000000000000")
    assert missing["error"] == {  # type: ignore[comparison-overlap]
        "code": -32001,
        "message": "job 00000000-0000-0000-0000-000000000000 not found",
        "data": {"job_id": "00000000-0000-0000-0000-000000000000"},
    }
    garbage = node_process.curl("this is not json")
    assert garbage["error"]["code"] == -32700  # type: ignore[index]
    huge = '{"jsonrpc":"2.0","method":"ContainerService.Create","params":[{"image":"' + "a" * (1 << 20) + '"}],"id":1}'
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", node_process.url, "-H", "Content-Type: application/json", "--data-binary", "@-"],
        input=huge, capture_output=True, text=True, check=True,
    )  # fmt: skip
    body = json.loads(out.stdout)
    assert body["error"]["code"] == -32600
    assert "too large" in body["error"]["message"]
