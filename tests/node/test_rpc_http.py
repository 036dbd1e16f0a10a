"""The JSON-RPC endpoint over real HTTP: whatever a client sends, it gets a JSON-RPC answer, never a 500."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import httpx
import pytest
import trio

from node.model import Job, State
from tests.support import eventually

from .conftest import NodeFactory


async def post(rpc_url: str, content: bytes, content_type: str = "application/json") -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(rpc_url, content=content, headers={"Content-Type": content_type})


async def test_wrong_types_are_field_errors(start_node: NodeFactory) -> None:
    _, rpc = await start_node()
    body = await rpc.raw("ContainerService.Create", [{"image": "nginx", "arguments": "ls", "env": {"A": 1}}])
    assert body["error"]["code"] == -32602
    assert body["error"]["data"]["errors"] == [
        {"field": "arguments", "message": "must be an array or null, got str"},
        {"field": "env.A", "message": "must be a string, got int"},
    ]
    missing = await rpc.raw("ContainerService.Create", [{"arguments": [], "env": {}}])
    assert missing["error"]["code"] == -32602
    assert "image" in missing["error"]["message"]
    bad_ref = await rpc.raw("ContainerService.Create", [{"image": "Not A Valid Ref"}])
    assert bad_ref["error"]["data"]["errors"][0]["field"] == "image"
    unknown = await rpc.raw("ContainerService.Create", [{"image": "nginx", "imagee": "x"}])
    assert unknown["error"]["data"]["errors"] == [{"field": "imagee", "message": "unknown field"}]


async def test_non_json_and_oversized_bodies(start_node: NodeFactory) -> None:
    running, _ = await start_node()
    url = running.rpc_url + "/jrpc"
    response = await post(url, b"<html>hello</html>", "text/html")
    assert response.status_code == 200
    assert response.json()["error"]["code"] == -32700
    response = await post(url, b"\xff\xfe\x00garbage")
    assert response.json()["error"]["code"] == -32700
    big = json.dumps({"jsonrpc": "2.0", "method": "NodeService.Info", "params": [], "id": 1, "pad": "x" * (1 << 20)})
    response = await post(url, big.encode())
    assert response.status_code == 413
    assert response.json()["error"] == {"code": -32600, "message": "request body too large: the limit is 1048576 bytes"}


async def test_wrong_http_method_and_path(start_node: NodeFactory) -> None:
    running, _ = await start_node()
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(running.rpc_url + "/jrpc")
        assert response.status_code == 405
        assert response.json()["error"]["code"] == -32600
        response = await client.post(running.rpc_url + "/nope", content=b"{}")
        assert response.status_code == 404
        assert "POST /jrpc" in response.json()["error"]["message"]


async def test_batch_and_notification_over_http(start_node: NodeFactory) -> None:
    running, _ = await start_node()
    url = running.rpc_url + "/jrpc"
    batch = [
        {"jsonrpc": "2.0", "method": "NodeService.Info", "id": "a"},
        {"jsonrpc": "2.0", "method": "NodeService.Peers"},
        {"jsonrpc": "2.0", "method": "ContainerService.Status", "params": {"job_id": "nope"}, "id": 7},
        {"jsonrpc": "2.0", "method": "No.Such", "id": 8},
    ]
    response = await post(url, json.dumps(batch).encode())
    answers = response.json()
    assert [a["id"] for a in answers] == ["a", 7, 8]
    assert answers[0]["result"]["node_id"] == running.node_id
    assert answers[1]["error"]["code"] == -32001
    assert answers[2]["error"]["code"] == -32601
    response = await post(url, b'{"jsonrpc":"2.0","method":"NodeService.Info"}')
    assert response.status_code == 204
    assert response.content == b""


async def test_bearer_token_required_when_configured(start_node: NodeFactory) -> None:
    running, rpc = await start_node(rpc_token="s3cret")
    body = await rpc.raw("NodeService.Info", [])
    assert body["error"]["code"] == -32004
    async with httpx.AsyncClient(timeout=30) as client:
        ok = await client.post(
            running.rpc_url + "/jrpc",
            json={"jsonrpc": "2.0", "method": "NodeService.Info", "id": 1},
            headers={"Authorization": "Bearer s3cret"},
        )
    assert ok.json()["result"]["node_id"] == running.node_id


# -- who may call what -------------------------------------------------------------------------------------------

READER = {"Authorization": "Bearer r3ad"}
WRITER = {"Authorization": "Bearer s3cret"}


async def call(url: str, method: str, headers: dict[str, str], params: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": 1}
        return await client.post(url + "/jrpc", json=body, headers=headers)


@pytest.mark.slow
async def test_the_token_guards_metrics_and_every_route_but_healthz(start_node: NodeFactory) -> None:
    running, _ = await start_node(rpc_token="s3cret")
    url = running.rpc_url
    async with httpx.AsyncClient(timeout=30) as client:
        for path in ("/metrics", "/events", "/logs", "/anything"):  # a route added later is guarded too
            response = await client.get(url + path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == -32004
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get(url + "/metrics", headers=WRITER)).status_code == 200
        assert (await client.get(url + "/nope", headers=WRITER)).status_code == 404
        health = await client.get(url + "/healthz")
        assert health.status_code in (200, 503) and "node_id" in health.json()  # public: no token


@pytest.mark.slow
async def test_metrics_public_leaves_only_metrics_open(start_node: NodeFactory) -> None:
    running, _ = await start_node(rpc_token="s3cret", metrics_public=True)
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(running.rpc_url + "/metrics")).status_code == 200
        assert (await client.get(running.rpc_url + "/events")).status_code == 401
    assert (await call(running.rpc_url, "NodeService.Info", {})).status_code == 401


@pytest.mark.slow
@pytest.mark.docker
async def test_the_read_token_reads_and_cannot_write(start_node: NodeFactory, test_image: str) -> None:
    running, _ = await start_node(rpc_token="s3cret", rpc_read_token="r3ad")
    url = running.rpc_url
    created = await call(url, "ContainerService.Create", WRITER, {"image": test_image, "arguments": ["true"]})
    job_id = created.json()["result"]["job_id"]
    for method, params in [
        ("ContainerService.Status", {"job_id": job_id}),
        ("ContainerService.List", {}),
        ("ContainerService.Logs", {"job_id": job_id}),
        ("NodeService.Info", {}),
        ("NodeService.Peers", {}),
        ("rpc.discover", {}),
    ]:
        answer = (await call(url, method, READER, params)).json()
        assert "result" in answer or answer["error"]["code"] == -32001, (method, answer)  # Logs: maybe no output yet
    for method, params in [
        ("ContainerService.Create", {"image": test_image}),
        ("ContainerService.Stop", {"job_id": job_id}),
        ("ContainerService.Create", {"image": 42}),  # refused before its params are even looked at
    ]:
        response = await call(url, method, READER, params)
        assert response.status_code == 200
        error = response.json()["error"]
        assert error["code"] == -32004
        assert f"{method} changes the node: the read-only token" in error["message"]
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url + "/metrics", headers=READER)).status_code == 200
        batch = [
            {"jsonrpc": "2.0", "method": "NodeService.Info", "id": 1},
            {"jsonrpc": "2.0", "method": "ContainerService.Stop", "params": {"job_id": job_id}, "id": 2},
        ]
        answers = (await client.post(url + "/jrpc", json=batch, headers=READER)).json()
    assert "result" in answers[0] and answers[1]["error"]["code"] == -32004
    status = (await call(url, "ContainerService.Status", WRITER, {"job_id": job_id})).json()["result"]
    assert status["status"] != "cancelled"  # the refused Stop did nothing
    assert (await call(url, "NodeService.Info", {"Authorization": "Bearer nope"})).status_code == 401


# -- a client that hangs up ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_clients_hanging_up_mid_create_never_strand_a_job(start_node: NodeFactory) -> None:
    """Finding 10 for real: HTTP clients send Create and close the connection at once, hundreds of times.
    Every job the node recorded is then queued (or already over) and was announced; none is left pending
    with nothing to run it until a restart."""
    running, _ = await start_node(queue_size=5000, docker_host="unix:///nonexistent.sock")
    node = running.node
    announced: set[str] = set()
    publish = node.mesh.publish_job

    async def recording(job: Job) -> None:
        announced.add(job.job_id)
        await publish(job)

    node.mesh.publish_job = recording  # type: ignore[method-assign]
    host, port = running.rpc_url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"jsonrpc": "2.0", "method": "ContainerService.Create", "id": 1,
                       "params": {"image": "cmnode-test/busybox:latest"}}).encode()  # fmt: skip
    request = (
        f"POST /jrpc HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def hang_up(delay: float) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(request)
        if delay:
            await trio.sleep(delay)
        sock = stream.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a goodbye
        await stream.aclose()

    with trio.fail_after(120):
        for round_ in range(40):
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(hang_up, (i % 5) * 0.001 * (round_ % 3))

        async def settled() -> list[str] | None:
            """The recorded jobs, once the shielded Creates are done (each recorded job announced)."""
            records = await node.store.list_jobs(limit=1000)
            ids = [r.job.job_id for r in records]
            return ids if set(ids) <= announced else None

        ids = await eventually(settled, timeout=15, what="every recorded job announced")
    assert ids, "no Create got as far as the store: the test proves nothing"
    stranded = [
        job_id
        for job_id in ids
        if node.executor.active(job_id) is None
        and any(e.state == State.PENDING for e in await node.store.executions_of(job_id))
    ]
    assert stranded == [], f"{len(stranded)} of {len(ids)} jobs stored but never queued"
