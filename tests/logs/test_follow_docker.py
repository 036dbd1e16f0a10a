"""``cmnode logs JOB --follow`` as a user runs it, against real ``cmnode run`` processes and dockerd: on the node
running the job, and from another node over ``/cmnode/logs/follow/1``; every line arrives, in order, and the
command exits 0 when the job ends. Also ``GET /logs`` itself: its token, its refusals, a snapshot."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from docker.client import DockerClient

from tests.cli.conftest import cmnode
from tests.support import NodeProcess, Nodes, Rpc, base_config, eventually, remove_containers, stop_and_remove

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TOKEN = "tok"
SCRIPT = (
    "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; if [ $((i % 4)) = 0 ]; then echo err $i >&2; fi; sleep 0.2; done"
)
LINES = "".join(f"line {i}\n" for i in range(1, 11))
ERRORS = "err 4\nerr 8\n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def nodes(tmp_path: Path, docker_client: DockerClient) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    stop_and_remove(docker_client, started)  # not kill -9: a create in flight would leak its container


def start(nodes: list[NodeProcess], root: Path, name: str, *flags: str) -> NodeProcess:
    node = NodeProcess(root / name, "--rpc-token", TOKEN, *flags).start()
    nodes.append(node)
    return node


async def follow(url: str, job_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(
        lambda: cmnode("logs", job_id, "--follow", *extra, url=url, env={"CMNODE_TOKEN": TOKEN}, timeout=60)
    )


def events(body: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


async def test_follow_on_the_node_running_it(nodes: list[NodeProcess], tmp_path: Path, test_image: str) -> None:
    node = start(nodes, tmp_path, "n1")
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
        rpc = Rpc(client, node.rpc_url)
        job_id = await rpc.create(test_image, ["sh", "-c", SCRIPT])
        done = await follow(node.url, job_id[:8])  # a prefix is enough; it may start before the container does
        assert (done.returncode, done.stdout, done.stderr) == (0, LINES, ERRORS)
        assert (await rpc.status(job_id))["status"] == "complete"

        # the route itself: the token, refusals as JSON-RPC errors, and a snapshot once it ended
        url = node.url + "/logs"
        assert (await client.get(url, params={"job_id": job_id}, headers={"Authorization": ""})).status_code == 401
        missing = await client.get(url, params={"job_id": "nope"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == -32001
        bad = await client.get(url, params={"job_id": job_id, "tail": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == -32602
        snapshot = await client.get(url, params={"job_id": job_id, "follow": "0"})
        assert events(snapshot.text) == [("stdout", {"text": LINES}), ("stderr", {"text": ERRORS}),
            ("end", {"state": "complete", "exit_code": None, "attempt": 1, "snapshot": True})]  # fmt: skip
        ended = events((await client.get(url, params={"job_id": job_id})).text)  # following an ended job: its end
        assert ended[-1] == ("end", {"state": "complete", "exit_code": 0, "attempt": 1})
        assert "".join(data["text"] for kind, data in ended if kind == "stdout") == LINES
        assert "".join(data["text"] for kind, data in ended if kind == "stderr") == ERRORS


async def test_follow_from_another_node(nodes: list[NodeProcess], tmp_path: Path, test_image: str) -> None:
    n1 = start(nodes, tmp_path, "n1")
    async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:
        info = await Rpc(client, n1.rpc_url).call("NodeService.Info")
        n2 = start(nodes, tmp_path, "n2", "--bootstrap", info["addresses"][0])

        async def joined() -> bool:
            peers = await Rpc(client, n1.rpc_url).call("NodeService.Peers")
            return n2.node_id in {p["node_id"] for p in peers["peers"]}

        await eventually(joined, timeout=30)
        job_id = await Rpc(client, n1.rpc_url).create(test_image, ["sh", "-c", SCRIPT],
                                                      placement={"nodes": [n2.node_id]})  # fmt: skip

        async def on_n2() -> bool:  # n1 must know where it runs before it can follow it there
            status = await Rpc(client, n1.rpc_url).status(job_id)
            return any(e["node_id"] == n2.node_id for e in status["executions"])

        await eventually(on_n2, timeout=30)
        done = await follow(n1.url, job_id, "--node", n2.node_id[:12])
        assert (done.returncode, done.stdout, done.stderr) == (0, LINES, ERRORS)
        status = await Rpc(client, n2.rpc_url).status(job_id)
        assert [(e["node_id"], e["state"]) for e in status["executions"]] == [(n2.node_id, "complete")]


async def test_a_follow_ends_when_the_node_stops(
    nursery: trio.Nursery, tmp_path: Path, test_image: str, docker_client: DockerClient
) -> None:
    """Well within the graceful timeout: the follow does not hold the HTTP server's drain; it ends with a cut."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client:
        handle = await Nodes(nursery, client).start(base_config(tmp_path / "node", graceful_timeout=30.0))
        try:
            job_id = await handle.rpc.create(test_image, ["sh", "-c", "echo started; sleep 300"])
            url = handle.running.rpc_url + "/logs"
            async with client.stream("GET", url, params={"job_id": job_id}) as response:
                assert response.status_code == 200
                body, texts = "", response.aiter_text()
                with trio.fail_after(30):
                    async for text in texts:
                        body += text
                        if "started" in body:
                            break
                with trio.fail_after(10):  # far below the graceful timeout
                    async with trio.open_nursery() as inner:
                        inner.start_soon(handle.stop)
                        body += "".join([text async for text in texts])
            assert events(body)[-1] == ("cut", {"reason": "the node stops"})
        finally:
            remove_containers(docker_client, handle.node_id)
