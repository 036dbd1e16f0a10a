"""The mesh tests' view of real ``cmnode run`` processes: the shared process wrapper (under the name the mesh
tests use), started from trio, and the JSON-RPC reads the mesh tests repeat (addresses, job ids, executions)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support import NodeProcess, Rpc, RpcError, eventually, node_command

__all__ = [
    "NodeProc",
    "RpcError",
    "eventually",
    "execution_set",
    "job_ids",
    "node_command",
    "p2p_address",
    "start_node",
]

NodeProc = NodeProcess


async def start_node(
    data_dir: Path, *extra: str, prefix: Sequence[str] = (), timeout: float = 60, **kwargs: Any
) -> NodeProc:
    """Start ``cmnode run`` (``prefix`` runs it inside e.g. ``ip netns exec NS``) and wait for its ready line.

    Raises:
        AssertionError: it exited or printed no ready line within ``timeout``; the message holds its log.
    """
    node = NodeProcess(data_dir, *extra, prefix=prefix, **kwargs)
    return await trio.to_thread.run_sync(node.start, timeout)


async def p2p_address(node: NodeProc, client: httpx.AsyncClient) -> str:
    info = await Rpc(client, node.rpc_url).call("NodeService.Info")
    addresses: list[str] = info["addresses"]
    assert addresses, info
    return addresses[0]


async def job_ids(node: NodeProc, client: httpx.AsyncClient) -> set[str]:
    """Every job the node knows, through List's pages."""
    rpc = Rpc(client, node.rpc_url)
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = await rpc.call("ContainerService.List", params)
        ids.update(j["job_id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return ids


async def execution_set(node: NodeProc, job_id: str, client: httpx.AsyncClient) -> set[tuple[str, str, int]]:
    with contextlib.suppress(RpcError):
        status = await Rpc(client, node.rpc_url).status(job_id)
        return {(e["node_id"], e["state"], e["version"]) for e in status["executions"]}
    return set()
