"""A real node in the test's nursery: real store, real dockerd, real HTTP server and client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from docker.client import DockerClient

from node.app import RunningNode, run_node
from node.config import Config


class Rpc:
    """A minimal JSON-RPC client for tests: returns ``result`` or the ``error`` object."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self._id = 0

    async def raw(self, method: str, params: Any) -> dict[str, Any]:
        self._id += 1
        response = await self.client.post(
            self.url, json={"jsonrpc": "2.0", "method": method, "params": params, "id": self._id}
        )
        body: dict[str, Any] = response.json()
        return body

    async def call(self, method: str, params: Any = None) -> Any:
        body = await self.raw(method, [params] if params is not None else [])
        assert "error" not in body, body
        return body["result"]

    async def create(self, image: str, arguments: list[str] | None = None, **extra: Any) -> str:
        result = await self.call("ContainerService.Create", {"image": image, "arguments": arguments or [], **extra})
        job_id: str = result["job_id"]
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("ContainerService.Status", {"job_id": job_id})
        return result

    async def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], *, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll Status until ``done`` holds (there is no push channel over HTTP); fails after ``timeout``."""
        with trio.fail_after(timeout):
            while True:
                status = await self.status(job_id)
                if done(status):
                    return status
                await trio.sleep(0.05)

    async def wait_status(self, job_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        return await self.wait_for(job_id, lambda s: s["status"] in statuses, timeout=timeout)


NodeFactory = Callable[..., Awaitable[tuple[RunningNode, Rpc]]]


@pytest.fixture
async def start_node(
    nursery: trio.Nursery, tmp_path: Path, docker_client: DockerClient | None
) -> AsyncIterator[NodeFactory]:
    """Start nodes on loopback, port 0, mDNS off; their containers are removed afterwards."""
    started: list[RunningNode] = []
    stops: list[trio.Event] = []
    async with httpx.AsyncClient(timeout=30) as client:

        async def factory(**overrides: Any) -> tuple[RunningNode, Rpc]:
            base = Config(listen_address="127.0.0.1", port=0, p2p_port=0, mdns=False,
                          data_dir=tmp_path / f"node{len(started)}", worker_count=4)  # fmt: skip
            config = replace(base, **overrides)
            stop = trio.Event()
            running: RunningNode = await nursery.start(partial(run_node, config, shutdown_trigger=stop.wait))
            started.append(running)
            stops.append(stop)
            return running, Rpc(client, running.rpc_url + "/jrpc")

        yield factory
        for stop in stops:
            stop.set()
    if docker_client is not None:
        for running in started:
            for c in docker_client.containers.list(all=True, filters={"label": f"cmnode.node_id={running.node_id}"}):
                c.remove(force=True)
