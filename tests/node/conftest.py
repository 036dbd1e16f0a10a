"""A real node in the test's nursery: real store, real dockerd, real HTTP server and client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from docker.client import DockerClient

from node.app import RunningNode
from tests.support import Nodes, Rpc, base_config, http_client, remove_containers

__all__ = ["NodeFactory", "Rpc", "start_node"]

NodeFactory = Callable[..., Awaitable[tuple[RunningNode, Rpc]]]


@pytest.fixture
async def start_node(
    nursery: trio.Nursery, tmp_path: Path, docker_client: DockerClient | None
) -> AsyncIterator[NodeFactory]:
    """Start nodes on loopback, port 0, mDNS off (``Config`` fields as keywords); their containers are removed
    afterwards."""
    async with http_client() as client:
        nodes = Nodes(nursery, client)

        async def factory(**overrides: Any) -> tuple[RunningNode, Rpc]:
            handle = await nodes.start(base_config(tmp_path / f"node{len(nodes.handles)}", **overrides))
            return handle.running, handle.rpc

        yield factory
        await nodes.stop_all()
    remove_containers(docker_client, *nodes.node_ids)
