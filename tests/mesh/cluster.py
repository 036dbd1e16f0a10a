"""Real ``cmnode run`` processes for the mesh tests (and the mesh benchmark): start one, read its URL from the
"ready" line, talk JSON-RPC to it, stop it with a signal. Each process logs to a file, so a chatty node never
blocks on a full pipe."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio

T = TypeVar("T")
READY = re.compile(r"node (\S+) ready, RPC at (http://\S+/jrpc)")


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class NodeProc:
    """One ``cmnode run`` process."""

    def __init__(self, proc: subprocess.Popen[str], node_id: str, url: str, data_dir: Path, log: Path) -> None:
        self.proc = proc
        self.node_id = node_id
        self.url = url
        self.data_dir = data_dir
        self.log = log
        self._id = 0

    async def call(self, method: str, params: Any = None, *, client: httpx.AsyncClient) -> Any:
        self._id += 1
        body = {"jsonrpc": "2.0", "method": method, "params": [params] if params is not None else [], "id": self._id}
        response = await client.post(self.url, json=body)
        answer: dict[str, Any] = response.json()
        if "error" in answer:
            raise RpcError(answer["error"])
        return answer["result"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the process and wait for it; returns its exit code (killed if it overstays ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def node_command(
    data_dir: Path, *extra: str, listen: str = "127.0.0.1", mdns: bool = False, p2p_port: int = 0
) -> list[str]:
    return [
        sys.executable, "-m", "node", "run", "--listen-address", listen, "--port", "0", "--p2p-port", str(p2p_port),
        "--mdns" if mdns else "--no-mdns", "--data-dir", str(data_dir), *extra,
    ]  # fmt: skip


async def start_node(
    data_dir: Path, *extra: str, prefix: Sequence[str] = (), timeout: float = 60, **kwargs: Any
) -> NodeProc:
    """Start ``cmnode run`` (``prefix`` runs it inside e.g. ``ip netns exec NS``) and wait for its ready line.

    Raises:
        AssertionError: it exited or printed no ready line within ``timeout``; the message holds its log.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.with_name(data_dir.name + ".log")
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [*prefix, *node_command(data_dir, *extra, **kwargs)],
            stdout=subprocess.PIPE, stderr=log_file, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert proc.stdout is not None
    line = ""
    with trio.move_on_after(timeout):
        line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
    match = READY.search(line)
    if match is None:
        proc.kill()
        proc.wait()
        raise AssertionError(f"node did not start: {line!r}\n{log.read_text()[-3000:]}")
    return NodeProc(proc, match.group(1), match.group(2), data_dir, log)


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something other than None or False (RPC has no push channel).

    Raises:
        trio.TooSlowError: not within ``timeout``.
    """
    with trio.fail_after(timeout):
        while True:
            result = await check()
            if result is not None and result is not False:
                return result
            await trio.sleep(interval)


async def p2p_address(node: NodeProc, client: httpx.AsyncClient) -> str:
    info = await node.call("NodeService.Info", client=client)
    addresses: list[str] = info["addresses"]
    assert addresses, info
    return addresses[0]


async def job_ids(node: NodeProc, client: httpx.AsyncClient) -> set[str]:
    """Every job the node knows, through List's pages."""
    ids: set[str] = set()
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = await node.call("ContainerService.List", params, client=client)
        ids.update(j["job_id"] for j in page["jobs"])
        cursor = page["next_cursor"]
        if not cursor:
            return ids


async def execution_set(node: NodeProc, job_id: str, client: httpx.AsyncClient) -> set[tuple[str, str, int]]:
    with contextlib.suppress(RpcError):
        status = await node.call("ContainerService.Status", {"job_id": job_id}, client=client)
        return {(e["node_id"], e["state"], e["version"]) for e in status["executions"]}
    return set()
