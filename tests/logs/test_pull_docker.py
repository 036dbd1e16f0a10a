"""A real pull, from a registry the test serves on 127.0.0.1: the job's pull reports its progress on the node's
event stream about once a second (bytes done of total, ending with all of it), and the job then runs."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import trio
from docker.client import DockerClient

from tests.node.conftest import NodeFactory

from .registry import image_blobs, registry

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RATE = 300_000
"""Bytes a second the registry sends a layer at: the busybox layer (about 1 MB gzipped) takes a few seconds."""


@pytest.fixture
def served(docker_client: DockerClient, test_image: str) -> Iterator[tuple[str, list[int]]]:
    """The test image as ``127.0.0.1:PORT/cmnode-pull-N:latest`` (removed from dockerd afterwards), and the
    sizes of its layers."""
    manifest, blobs = image_blobs(docker_client, test_image)
    layers = [layer["size"] for layer in json.loads(manifest)["layers"]]
    with registry(manifest, blobs, rate=RATE) as address:
        image = f"{address}/cmnode-pull-{uuid.uuid4().hex[:8]}:latest"
        yield image, layers
        with contextlib.suppress(Exception):
            docker_client.images.remove(image, force=True)


async def test_a_pull_reports_its_progress_then_the_job_runs(
    start_node: NodeFactory, served: tuple[str, list[int]]
) -> None:
    image, layers = served
    running, rpc = await start_node()
    url = running.rpc_url + "/events"
    progress: list[tuple[float, dict[str, object]]] = []
    states: list[str] = []
    timeout = httpx.Timeout(30, read=60)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream("GET", url, params={"type": "progress,execution"}) as response,
    ):
        assert response.status_code == 200
        job_id = await rpc.create(image, ["sh", "-c", "echo pulled"])
        kind = ""
        with trio.fail_after(120):
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if data.get("job_id") != job_id:
                        continue
                    if kind == "progress":
                        progress.append((trio.current_time(), data))
                    else:
                        states.append(str(data["state"]))
                        if data["state"] in ("complete", "failed"):
                            break
    assert states[-1] == "complete" and "pulling" in states, states
    assert progress, "no progress event"
    assert all(d["node_id"] == running.node_id and d["image"] == image for _, d in progress)
    dones = [int(d["done"]) for _, d in progress]  # type: ignore[call-overload]
    assert dones == sorted(dones)
    # a layer of a few kB may be fetched before dockerd reports its size: its bytes are then not counted
    assert progress[-1][1]["done"] == progress[-1][1]["total"]
    assert max(layers) <= int(progress[-1][1]["total"]) <= sum(layers)  # type: ignore[call-overload]
    seconds = progress[-1][0] - progress[0][0]
    assert len(progress) <= seconds / 0.9 + 2, [t for t, _ in progress]  # about one a second, and the last
    assert (await rpc.call("ContainerService.Logs", {"job_id": job_id}))["stdout"] == "pulled\n"
