"""``GET /healthz`` and ``GET /metrics`` of real nodes, metrics read with the Prometheus text parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from node import errors
from rpc.client import Client, RemoteError
from tests.support import NodeProcess, Nodes, base_config, http_client, poll

pytestmark = pytest.mark.slow  # every test here starts nodes

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


@pytest.mark.docker
def test_healthy_node_is_200(node: NodeProcess) -> None:
    def healthy() -> httpx.Response | None:  # the Docker client connects in the background; until then, 503
        response = httpx.get(node.url + "/healthz", timeout=30)
        return response if response.status_code == 200 else None

    response = poll(healthy, what="200 from /healthz")
    assert response.json() == {"ok": True, "node_id": node.node_id, "problems": {}, "reason": None}


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
            poll(lambda j=job_id, w=wanted: client.call("ContainerService.Status", {"job_id": j})["status"] == w,
                 timeout=60, what=f"job {job_id} {wanted}")  # fmt: skip
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


async def test_each_node_has_its_own_registry(tmp_path: Path, nursery: trio.Nursery) -> None:
    """Two nodes in one process (as in the mesh tests): a call to one is not counted by the other."""
    async with http_client() as http:
        nodes = Nodes(nursery, http)
        no_docker = "unix:///nonexistent.sock"
        configs = [base_config(tmp_path / name, worker_count=2, docker_host=no_docker) for name in "ab"]
        started = [await nodes.start(config) for config in configs]
        with trio.fail_after(30):
            for _ in range(3):
                await started[0].rpc.call("NodeService.Info")
            texts = [(await http.get(n.running.rpc_url + "/metrics")).text for n in started]
        for node in started:
            await node.stop()
    a, b = (parse(text) for text in texts)
    assert value(a, "cmnode_rpc_requests_total", method="NodeService.Info", code="ok") == 3
    assert value(b, "cmnode_rpc_requests_total", method="NodeService.Info", code="ok") == 0
    assert value(a, "cmnode_workers") == value(b, "cmnode_workers") == 2


@pytest.fixture
def two_peers(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Two node processes joined by --bootstrap (no Docker: jobs stay pending, gossip flows all the same)."""
    nodes = [NodeProcess(tmp_path / "a", "--docker-host", "unix:///nonexistent.sock").start()]
    try:
        with Client(nodes[0].url) as client:
            address = next(a for a in client.call("NodeService.Info")["addresses"] if "/ip4/127.0.0.1/" in a)
        nodes.append(NodeProcess(tmp_path / "b", "--docker-host", "unix:///nonexistent.sock", "--bootstrap", address))
        nodes[1].start()
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()


def test_gossip_and_peer_metrics_between_two_nodes(two_peers: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_peers
    poll(lambda: all(value(scrape(n.url), "cmnode_peers_connected") == 1 for n in (a, b)), timeout=60,
         interval=0.2, what="both nodes connected")  # fmt: skip
    sent_before = value(scrape(a.url), "cmnode_gossip_messages_sent_total")
    received_before = value(scrape(b.url), "cmnode_gossip_messages_received_total")
    with Client(a.url) as on_a, Client(b.url) as on_b:
        job_id = on_a.call("ContainerService.Create", {"image": "cmnode-test/busybox:latest"})["job_id"]

        def reached_b() -> bool:  # by gossip (or catch-up)
            try:
                on_b.call("ContainerService.Status", {"job_id": job_id})
            except errors.NotFoundError:
                return False
            return True

        poll(reached_b, timeout=60, what="the job on the second node")
    assert value(scrape(a.url), "cmnode_gossip_messages_sent_total") > sent_before

    def counted() -> Samples | None:
        samples = scrape(b.url)
        return samples if value(samples, "cmnode_gossip_messages_received_total") > received_before else None

    after_b = poll(counted, timeout=60, what="gossip from a counted by b")
    assert [key for key in after_b if key[0] == "cmnode_gossip_messages_dropped_total"] == []  # nothing dropped
    assert value(after_b, "cmnode_jobs", status="pending") + value(after_b, "cmnode_jobs", status="failed") == 1
