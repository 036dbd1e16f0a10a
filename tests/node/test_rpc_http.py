"""The JSON-RPC endpoint over real HTTP: whatever a client sends, it gets a JSON-RPC answer, never a 500."""

from __future__ import annotations

import json

import httpx

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
