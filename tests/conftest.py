"""Shared fixtures: the gate for Docker tests and clean-up of the containers they leave behind."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import docker.errors
import pytest
from docker.client import DockerClient

TEST_IMAGE = "cmnode-test/busybox:latest"


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
    """Skip Docker tests on a machine without a daemon; CI sets CMNODE_REQUIRE_DOCKER=1 to fail instead,
    so a broken runner cannot pass by skipping everything."""
    if docker_client is None:
        message = "no Docker daemon answers (run scripts/setup-docker)"
        if os.environ.get("CMNODE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{message}; CMNODE_REQUIRE_DOCKER=1 requires one", pytrace=False)
        pytest.skip(message)
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
    """A node id unique to the test; every managed container labelled with it is removed afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    yield value
    if docker_client is None:
        return
    filters = {"label": ["cmnode.managed=1", f"cmnode.node_id={value}"]}
    for container in docker_client.containers.list(all=True, filters=filters):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
