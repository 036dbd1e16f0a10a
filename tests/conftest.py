"""Shared fixtures and the two test layers.

A test that needs dockerd carries the ``docker`` marker; one that starts OS processes, libp2p hosts or network
namespaces, or takes more than a second, carries ``slow``. A test taking one of the fixtures in ``MARKS`` carries
its marker by that alone, so ``-m "not docker and not slow"`` (``scripts/test --fast``) cannot pick it up. A test
with neither marker may not start a process: it fails if it tries.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
from docker.client import DockerClient

from tests.support import missing, remove_containers

pytest_plugins = ["pytester"]  # tests/test_support.py runs a test module as CI would

TEST_IMAGE = "cmnode-test/busybox:latest"

MARKS: dict[str, tuple[str, ...]] = {
    "docker_available": ("docker",),
    "test_image": ("docker",),
    "second_dockerd": ("docker", "slow"),
    # processes, nodes in the test's process (a libp2p host each), namespaces
    "nodes": ("slow",),
    "start_node": ("slow",),
    "node_processes": ("slow",),
    "cluster": ("slow",),
    "lan": ("slow",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for marker in MARKS.get(fixture, ()):
                if item.get_closest_marker(marker) is None:
                    item.add_marker(marker)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast layer is pure and in memory: a process started there is a missing ``slow`` marker."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("docker"):
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a test without the slow marker started a process: {args!r}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient | None]:
    """A plain SDK client for set-up and clean-up, or None when no daemon answers."""
    try:
        client = DockerClient.from_env(timeout=10)
        client.ping()
    except (docker.errors.DockerException, OSError):
        yield None
        return
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_available(docker_client: DockerClient | None) -> DockerClient:
    """Skip Docker tests on a machine without a daemon; in CI (``CMNODE_REQUIRE_ALL=1``) fail them instead."""
    if docker_client is None:
        missing("Docker daemon", "no daemon answers (run scripts/setup-docker)")
    return docker_client


@pytest.fixture(autouse=True)
def _docker_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_available")


@pytest.fixture(scope="session")
def test_image(docker_available: DockerClient) -> str:
    """The local busybox image the tests run (no registry is reachable, so it is built, not pulled)."""
    try:
        docker_available.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"test image {TEST_IMAGE} is missing: run scripts/build-test-images", pytrace=False)
    return TEST_IMAGE


@pytest.fixture
def node_id(docker_client: DockerClient | None) -> Iterator[str]:
    """A node id unique to the test; every container labelled with it is removed afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    remove_containers(docker_client, value)
