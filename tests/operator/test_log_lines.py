"""A real node's log as an operator reads it (``docker logs`` merges stdout and stderr): exactly one ready line,
naming the addresses a wildcard listener answers on; one line when a peer connects and one when it drops; no
``=None`` in execution lines; a warning when Docker cannot be reached at start."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest
from docker.client import DockerClient

from tests.support import NodeProcess, clean_env, end_process, node_command, poll, remove_containers

pytestmark = [pytest.mark.slow]

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|warning|error|critical) "
                      r"logger=\S+ msg=\S")  # fmt: skip
READY = re.compile(r"^cmnode: node (\S+) ready, RPC at (\S+)/jrpc(?: \(reachable at (.*)\))?$", re.M)


def start_merged(
    data_dir: Path, *flags: str, listen: str = "127.0.0.1", **env: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """A node whose stdout and stderr go to one file, as under ``docker logs``."""
    out = data_dir.parent / f"{data_dir.name}.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(node_command(data_dir, *flags, listen=listen), stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=clean_env(**env))  # fmt: skip
    return proc, out


def rpc(url: str, method: str) -> dict[str, object]:
    body = httpx.post(f"{url}/jrpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}, timeout=10)
    result: dict[str, object] = body.json()["result"]
    return result


def test_one_ready_line_with_the_addresses_and_one_line_per_peer_event(tmp_path: Path) -> None:
    proc, out = start_merged(tmp_path / "a", listen="0.0.0.0")
    joiner: NodeProcess | None = None
    try:
        ready = poll(lambda: READY.search(out.read_text()), timeout=60, what="the ready line")
        node_id, url, where = ready.group(1), ready.group(2), ready.group(3)
        # On 0.0.0.0 the line names where the node answers: each of those addresses does.
        assert url.startswith("http://0.0.0.0:") and where, ready.group(0)
        reachable = [u.removesuffix("/jrpc") for u in where.split(", ")]
        loopback = next(u for u in reachable if u.startswith("http://127.0.0.1:"))
        assert httpx.get(f"{loopback}/healthz", timeout=10).status_code == 200
        addresses = rpc(loopback, "NodeService.Info")["addresses"]
        assert isinstance(addresses, list)  # other tests' namespaces come and go: dial loopback, which stays
        address = next(a for a in addresses if a.startswith("/ip4/127.0.0.1/"))

        joiner = NodeProcess(tmp_path / "b", "--bootstrap", address).start()
        joined = f"peer connected peer={joiner.node_id} "
        poll(lambda: joined in out.read_text(), timeout=30, what="the peer connected line")
        joiner.kill()
        dropped = f"peer disconnected peer={joiner.node_id}"
        poll(lambda: dropped in out.read_text(), timeout=30, what="the peer disconnected line")
    finally:
        if joiner is not None:
            joiner.kill()
        assert end_process(proc) == 0
    text = out.read_text()
    assert [line for line in text.splitlines() if "ready" in line] == [ready.group(0)], text
    assert text.count(joined) == 1 and text.count(dropped) == 1, text
    assert "Running on" not in text  # hypercorn's own start line would be a second "ready"
    # Every other line is one event in the log's format: py-libp2p's records too (they bypassed it, one of them
    # over seven lines, when a peer dropped while a stream to it was opening).
    assert [line for line in text.splitlines() if line != ready.group(0) and not LOG_LINE.match(line)] == [], text
    assert "level=info logger=libp2p" not in text  # and no more of them than before: warnings and errors only
    assert node_id in ready.group(0)


def test_a_node_that_cannot_reach_docker_says_so_at_start(tmp_path: Path) -> None:
    proc, out = start_merged(tmp_path / "a", DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    try:
        poll(lambda: READY.search(out.read_text()), timeout=60, what="the ready line")
        poll(lambda: "docker daemon unavailable" in out.read_text(), timeout=30, what="the Docker warning")
    finally:
        assert end_process(proc) == 0
    warnings = [line for line in out.read_text().splitlines() if "docker daemon unavailable" in line]
    assert len(warnings) == 1 and "level=warning" in warnings[0], warnings


@pytest.mark.docker
def test_execution_lines_carry_no_none_fields(tmp_path: Path, test_image: str, docker_client: DockerClient) -> None:
    node = NodeProcess(tmp_path / "a").start()
    try:
        job = httpx.post(f"{node.url}/jrpc", timeout=10, json={
            "jsonrpc": "2.0", "id": 1, "method": "ContainerService.Create",
            "params": [{"image": test_image, "arguments": ["sh", "-c", "sleep 0.3"], "env": {}}]},
        ).json()["result"]["job_id"]  # fmt: skip
        poll(lambda: f"job_id={job} node_id={node.node_id} state=complete" in node.log.read_text(), timeout=60,
             what="the complete line")  # fmt: skip
    finally:
        assert node.stop() == 0
        remove_containers(docker_client, node.node_id)
    lines = [line for line in node.log.read_text().splitlines() if f"msg=execution job_id={job}" in line]
    states = [re.search(r"state=(\w+)", line).group(1) for line in lines]  # type: ignore[union-attr]
    assert "running" in states and states[-1] == "complete", lines
    assert not [line for line in lines if "=None" in line], lines
    assert lines[-1].endswith("state=complete attempt=1 exit_code=0"), lines[-1]
