"""A cluster of real ``cmnode run`` processes per test (every process is stopped, gracefully, and every container
its nodes labelled is removed afterwards), and the identities and store of the in-process tests."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from docker.client import DockerClient

from node.identity import Identity, load_or_create
from node.store import Store
from tests.support import NodeProcess, Rpc, http_client, start_all, stop_all, stop_and_remove

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

    async def start_all(self, *nodes: Sequence[str]) -> list[NodeProc]:
        """Start nodes that need not wait for each other at once, each given as ``(name, *flags)``."""
        procs = [NodeProcess(self.root / name, *extra) for name, *extra in nodes]
        self.nodes.extend(procs)  # stopped by the fixture even if one fails to start
        return await trio.to_thread.run_sync(start_all, procs)

    async def stop_all(self, nodes: Sequence[NodeProc], sig: int = signal.SIGTERM) -> list[int]:
        """Stop ``nodes`` at once (each graceful stop takes seconds); their exit codes, in order."""
        return await trio.to_thread.run_sync(stop_all, nodes, sig)

    async def call(self, node: NodeProc, method: str, params: Any = None) -> Any:
        return await Rpc(self.client, node.rpc_url).call(method, params)

    async def address(self, node: NodeProc) -> str:
        return await p2p_address(node, self.client)


@pytest.fixture
async def cluster(tmp_path: Path, docker_client: DockerClient | None) -> AsyncIterator[Cluster]:
    async with http_client() as client:  # no keep-alive: a graceful stop would wait out an idle one
        cluster = Cluster(tmp_path, client)
        try:
            yield cluster
        finally:  # graceful: a node killed with a create in flight would leak its container (stop_and_remove)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(stop_and_remove, docker_client, cluster.nodes)


# -- for the in-process tests of the mesh's parts -------------------------------------------------------


@pytest.fixture
def me(tmp_path: Path) -> Identity:
    return load_or_create(tmp_path / "me")


@pytest.fixture
def peer(tmp_path: Path) -> Identity:
    return load_or_create(tmp_path / "peer")


@pytest.fixture
def stranger(tmp_path: Path) -> Identity:
    """A peer no trust rule lists."""
    return load_or_create(tmp_path / "stranger")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.open(tmp_path / "db.sqlite") as store:
        yield store
