"""A cluster of real ``cmnode run`` processes per test; every process is stopped and every container its
nodes labelled is removed afterwards."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
from docker.client import DockerClient

from .cluster import NodeProc, p2p_address, start_node


class Cluster:
    def __init__(self, root: Path, client: httpx.AsyncClient) -> None:
        self.root = root
        self.client = client
        self.nodes: list[NodeProc] = []

    async def start(self, name: str, *extra: str, **kwargs: Any) -> NodeProc:
        node = await start_node(self.root / name, *extra, **kwargs)
        self.nodes.append(node)
        return node

    async def call(self, node: NodeProc, method: str, params: Any = None) -> Any:
        return await node.call(method, params, client=self.client)

    async def address(self, node: NodeProc) -> str:
        return await p2p_address(node, self.client)


@pytest.fixture
async def cluster(tmp_path: Path, docker_client: DockerClient | None) -> AsyncIterator[Cluster]:
    async with httpx.AsyncClient(timeout=30) as client:
        cluster = Cluster(tmp_path, client)
        try:
            yield cluster
        finally:
            for node in cluster.nodes:
                node.stop(signal.SIGKILL)
            if docker_client is not None:
                for node_id in {n.node_id for n in cluster.nodes}:
                    for c in docker_client.containers.list(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
                        with contextlib.suppress(docker.errors.NotFound):
                            c.remove(force=True)
