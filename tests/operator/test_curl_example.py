"""examples/curl.sh against two real nodes: after Stop it shows a final status, not a "running" that looks like
the stop failed (Stop is asynchronous: each node stops its own container, then reports)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import docker.errors
import httpx
import pytest
from docker.client import DockerClient

from tests.support import NodeProcess, clean_env, poll, remove_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "curl.sh"


def peers(node: NodeProcess) -> int:
    body = httpx.post(node.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "NodeService.Peers", "params": {}},
                      timeout=10).json()  # fmt: skip
    return len(body["result"]["peers"])


def test_curl_example_shows_the_job_stopped_after_stop(
    tmp_path: Path, docker_available: DockerClient, test_image: str
) -> None:
    try:
        docker_available.images.get("nginx:latest")  # the seed's image: scripts/build-test-images makes a stand-in
    except docker.errors.ImageNotFound:
        pytest.fail("nginx:latest is missing: run scripts/build-test-images", pytrace=False)
    first = NodeProcess(tmp_path / "n1").start()
    nodes = [first]
    try:
        info = httpx.post(first.rpc_url, timeout=10, json={"jsonrpc": "2.0", "id": 1, "method": "NodeService.Info",
                                                           "params": {}}).json()["result"]  # fmt: skip
        address = next(a for a in info["addresses"] if a.startswith("/ip4/127.0.0.1/"))
        nodes.append(NodeProcess(tmp_path / "n2", "--bootstrap", address).start())
        poll(lambda: peers(first) == 1 and peers(nodes[1]) == 1, timeout=30, what="the two nodes connected")

        out = subprocess.run([str(SCRIPT)], env=clean_env(CMNODE_URL=first.url, CMNODE_URL2=nodes[1].url),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        after_stop = out.stdout.split("# ContainerService.Stop on", 1)[1]
        assert "Stop is asynchronous" in after_stop, out.stdout
        shown = re.search(r"# ContainerService.Status on \S+\n(.*)\n", after_stop)
        assert shown is not None, out.stdout
        result = json.loads(shown.group(1))["result"]
        # Both nodes ran the job, and the status shown after Stop is each one's final word.
        assert result["status"] == "cancelled", shown.group(1)
        assert sorted(e["state"] for e in result["executions"]) == ["cancelled", "cancelled"], shown.group(1)
    finally:
        for node in nodes:
            assert node.stop() == 0
        remove_containers(docker_available, *(node.node_id for node in nodes))
