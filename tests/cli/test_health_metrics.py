"""``GET /healthz`` and ``GET /metrics`` of real nodes, metrics read with the Prometheus text parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node import errors
from node.app import RunningNode, run_node
from node.config import Config
from rpc.client import Client, RemoteError

from .conftest import NodeProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    response = httpx.get(url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_healthy(url: str, timeout: float = 30) -> httpx.Response:
    """The Docker client connects in the background at start; until then the node says 503."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url + "/healthz", timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


@pytest.mark.docker
def test_healthy_node_is_200(node: NodeProcess) -> None:
    response = wait_healthy(node.url)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "node_id": node.node_id, "problems": {}, "reason": None}


@pytest.fixture
def no_docker_node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "node", "--docker-host", "unix:///nonexistent.sock")
    yield proc
    proc.stop()


def test_node_without_docker_is_503_with_the_reason(no_docker_node: NodeProcess) -> None:
    response = httpx.get(no_docker_node.url + "/healthz", timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False and body["node_id"] == no_docker_node.node_id
    assert list(body["problems"]) == ["docker"]  # the store is fine
    assert body["reason"] == f"docker: {body['problems']['docker']}"
    metrics = scrape(no_docker_node.url)
    assert value(metrics, "cmnode_docker_up") == 0
    with Client(no_docker_node.url) as client:  # and RPC still serves
        assert client.call("NodeService.Info")["docker"]["ok"] is False


@pytest.mark.docker
def test_metrics_count_what_happened(node: NodeProcess, test_image: str) -> None:
    before = scrape(node.url)
    with Client(node.url) as client:
        good = client.call("ContainerService.Create", {"image": test_image, "arguments": ["true"]})["job_id"]
        bad = client.call("ContainerService.Create", {"image": test_image, "arguments": ["false"]})["job_id"]
        for job_id, wanted in ((good, "complete"), (bad, "failed")):
            deadline = time.monotonic() + 60
            while client.call("ContainerService.Status", {"job_id": job_id})["status"] != wanted:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with pytest.raises(RemoteError):
            client.call("No.Such.Method")  # unknown names are not labels: a client could add without bound
        statuses = value(before, "cmnode_rpc_requests_total", method="ContainerService.Status", code="ok")
    after = scrape(node.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cmnode_jobs", status="complete") == 1
    assert delta("cmnode_jobs", status="failed") == 1
    assert delta("cmnode_jobs", status="running") == 0
    assert delta("cmnode_rpc_requests_total", method="ContainerService.Create", code="ok") == 2
    assert value(after, "cmnode_rpc_requests_total", method="ContainerService.Status", code="ok") > statuses
    assert delta("cmnode_rpc_request_duration_seconds_count", method="ContainerService.Create") == 2
    assert delta("cmnode_rpc_request_duration_seconds_sum", method="ContainerService.Create") > 0
    assert not any(dict(labels).get("method") == "No.Such.Method" for _, labels in after)
    assert value(after, "cmnode_queue_depth") == 0
    assert value(after, "cmnode_queue_size") == 100
    assert value(after, "cmnode_workers") == 10
    assert value(after, "cmnode_workers_busy") == 0
    assert value(after, "cmnode_docker_up") == 1
    assert delta("cmnode_gossip_messages_sent_total") >= 2  # each job was announced to the (empty) mesh
    assert value(after, "cmnode_peers_connected") == 0
    assert ("cmnode_gossip_messages_received_total", frozenset()) in after


async def test_each_node_has_its_own_registry(tmp_path: Path) -> None:
    """Two nodes in one process (as in the mesh tests): a call to one is not counted by the other."""
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        nodes: list[RunningNode] = []
        for name in ("a", "b"):
            config = Config(listen_address="127.0.0.1", port=0, p2p_port=0, mdns=False, data_dir=tmp_path / name,
                            worker_count=2, docker_host="unix:///nonexistent.sock")  # fmt: skip
            nodes.append(await nursery.start(partial(run_node, config, shutdown_trigger=stop.wait)))
        with trio.fail_after(30):
            async with httpx.AsyncClient(timeout=30) as http:
                for _ in range(3):
                    await http.post(nodes[0].rpc_url + "/jrpc", json={"jsonrpc": "2.0", "method": "NodeService.Info",
                                                                      "id": 1})  # fmt: skip
                texts = [(await http.get(n.rpc_url + "/metrics")).text for n in nodes]
        stop.set()
    a, b = (parse(text) for text in texts)
    assert value(a, "cmnode_rpc_requests_total", method="NodeService.Info", code="ok") == 3
    assert value(b, "cmnode_rpc_requests_total", method="NodeService.Info", code="ok") == 0
    assert value(a, "cmnode_workers") == value(b, "cmnode_workers") == 2


@pytest.fixture
def two_peers(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Two node processes joined by --bootstrap (no Docker: jobs stay pending, gossip flows all the same)."""
    nodes = [NodeProcess(tmp_path / "a", "--docker-host", "unix:///nonexistent.sock")]
    try:
        with Client(nodes[0].url) as client:
            address = next(a for a in client.call("NodeService.Info")["addresses"] if "/ip4/127.0.0.1/" in a)
        nodes.append(NodeProcess(tmp_path / "b", "--docker-host", "unix:///nonexistent.sock", "--bootstrap", address))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()


def test_gossip_and_peer_metrics_between_two_nodes(two_peers: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_peers
    deadline = time.monotonic() + 60
    while not all(value(scrape(n.url), "cmnode_peers_connected") == 1 for n in (a, b)):
        assert time.monotonic() < deadline, "the nodes did not connect"
        time.sleep(0.2)
    sent_before = value(scrape(a.url), "cmnode_gossip_messages_sent_total")
    received_before = value(scrape(b.url), "cmnode_gossip_messages_received_total")
    with Client(a.url) as on_a, Client(b.url) as on_b:
        job_id = on_a.call("ContainerService.Create", {"image": "cmnode-test/busybox:latest"})["job_id"]
        while True:  # until the job has reached b by gossip (or catch-up)
            try:
                on_b.call("ContainerService.Status", {"job_id": job_id})
                break
            except errors.NotFoundError:
                assert time.monotonic() < deadline, "the job never reached the second node"
                time.sleep(0.1)
    assert value(scrape(a.url), "cmnode_gossip_messages_sent_total") > sent_before
    while value(after_b := scrape(b.url), "cmnode_gossip_messages_received_total") <= received_before:
        assert time.monotonic() < deadline, "b counted no gossip from a"
        time.sleep(0.1)
    assert [key for key in after_b if key[0] == "cmnode_gossip_messages_dropped_total"] == []  # nothing dropped
    assert value(after_b, "cmnode_jobs", status="pending") + value(after_b, "cmnode_jobs", status="failed") == 1
