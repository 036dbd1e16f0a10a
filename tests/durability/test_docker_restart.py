"""The Docker daemon really stopped (SIGTERM) and started again while jobs run: a second dockerd of the test's
own, so the shared one keeps serving other tests. Jobs resume or fail with a reason; the node never crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support import Rpc, eventually

from .conftest import Nodes, SecondDaemon, base_config

pytestmark = [pytest.mark.docker, pytest.mark.slow]


async def _docker_ok(rpc: Rpc, want: bool) -> dict[str, Any]:
    async def seen() -> dict[str, Any] | None:
        info: dict[str, Any] = await rpc.call("NodeService.Info")
        return info if info["docker"]["ok"] is want else None

    return await eventually(seen, timeout=60, what=f"docker ok={want}")


async def _healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url + "/healthz")
        return response.status_code, response.json()


async def test_dockerd_stopped_and_started_while_jobs_run(
    nodes: Nodes, tmp_path: Path, test_image: str, second_dockerd: SecondDaemon
) -> None:
    daemon = second_dockerd
    live_restore = "--live-restore" in daemon.extra
    node = await nodes.start(base_config(tmp_path / "n", docker_host=daemon.url))
    rpc = node.rpc
    await _docker_ok(rpc, True)
    ends = await rpc.create(test_image, ["sh", "-c", "sleep 4; exit 3"])
    forever = await rpc.create(test_image, ["sleep", "300"], retries=1)
    first = {j: (await rpc.wait_status(j, "running"))["executions"][0]["container_id"] for j in (ends, forever)}

    await trio.to_thread.run_sync(daemon.stop)
    info = await _docker_ok(rpc, False)
    assert info["docker"]["error"]
    code, health = await _healthz(node.running.rpc_url)
    assert code == 503 and "docker" in health["problems"]
    waiting = await rpc.create(test_image, ["sh", "-c", "echo after"])
    await rpc.wait_for(waiting, lambda s: "waiting for the Docker daemon" in (s["executions"][0]["error"] or ""))

    await trio.to_thread.run_sync(daemon.start)
    await _docker_ok(rpc, True)
    assert (await _healthz(node.running.rpc_url))[0] == 200
    assert (await rpc.wait_status(waiting, "complete", "failed", timeout=60))["status"] == "complete"
    ended = (await rpc.wait_status(ends, "complete", "failed", timeout=60))["executions"][0]
    if live_restore:  # the container ran on without its daemon: its own exit code, whenever it came
        assert (ended["exit_code"], ended["error"], ended["container_id"]) == (3, "exited with code 3", first[ends])
        again = await rpc.status(forever)
        assert (again["status"], again["executions"][0]["container_id"]) == ("running", first[forever])
    else:  # the daemon stopped it on its way down: a failure with the reason, and a retry where allowed
        assert ended["exit_code"] in (137, 143) and ended["error"] == f"exited with code {ended['exit_code']}"
        retried = await rpc.wait_for(
            forever, lambda s: s["executions"][0]["attempt"] == 2 and s["status"] == "running", timeout=60
        )
        assert retried["executions"][0]["history"][0]["error"].startswith("exited with code")

    client = daemon.client()
    try:
        labels = [c["Labels"] for c in client.api.containers(all=True)]
    finally:
        client.close()
    runs = sorted((label["cmnode.job_id"], label["cmnode.attempt"]) for label in labels)
    want = [(ends, "1"), (waiting, "1"), (forever, "1")] + ([] if live_restore else [(forever, "2")])
    assert runs == sorted(want)  # nothing started twice when the daemon came back
