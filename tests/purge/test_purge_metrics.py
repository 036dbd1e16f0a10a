"""What ``benchmarks/soak.py`` watches for leaks, read from a real node's ``/metrics``: its RSS and open file
descriptors, its trio tasks, its store's size and rows, and the job purge's counters, which follow a purge."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.mesh.cluster import eventually
from tests.mesh.conftest import Cluster, cluster

pytestmark = [pytest.mark.docker, pytest.mark.slow]
__all__ = ["cluster"]  # the fixture, imported for this module

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: httpx.AsyncClient, url: str) -> Samples:
    text = (await client.get(url + "/metrics")).text
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), -1.0)


async def test_metrics_show_the_process_the_store_and_the_purge(cluster: Cluster, test_image: str) -> None:
    node = await cluster.start("n", "--job-retention", "1s")
    before = await scrape(cluster.client, node.url)
    assert value(before, "process_open_fds") > 3
    assert value(before, "process_resident_memory_bytes") > 10e6
    assert value(before, "cmnode_trio_tasks") > 5
    assert value(before, "cmnode_store_bytes", file="db") > 0
    assert value(before, "cmnode_store_bytes", file="wal") >= 0
    assert value(before, "cmnode_store_rows", table="jobs") == 0
    assert value(before, "cmnode_jobs_purged_total") == 0

    job = await cluster.call(node, "ContainerService.Create", {"image": test_image, "arguments": ["true"], "env": {}})

    async def purged() -> Samples | None:
        samples = await scrape(cluster.client, node.url)
        return samples if value(samples, "cmnode_jobs_purged_total") == 1 else None

    after = await eventually(purged, timeout=30, what=f"job {job['job_id']} purged")
    assert value(after, "cmnode_purge_passes_total") >= 1
    assert value(after, "cmnode_store_rows", table="jobs") == 0
    assert value(after, "cmnode_store_rows", table="executions") == 0
    assert value(after, "cmnode_store_rows", table="tombstones") == 1
    assert value(after, "cmnode_tombstones_expired_total") == 0
