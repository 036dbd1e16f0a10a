"""Shared fixtures and the two test layers.

A test that needs dockerd carries the ``docker`` marker; one that starts OS processes, libp2p hosts or network
namespaces, or takes more than a second, carries ``slow``. A test taking one of the fixtures in ``MARKS`` carries
its marker by that alone, so ``-m "not docker and not slow"`` (``scripts/test --fast``) cannot pick it up. A test
with neither marker may not start a process: it fails if it tries.

The run fails if a test leaves a job container on the engine (``pytest_sessionfinish``, once every node is
stopped): a container is the tests' own when its ``cmnode.node_id`` label is a node of this run (an identity
under the session's temporary directory, or an id of the ``node_id`` fixture); other containers, such as those
of another run on the same engine, are never flagged. The leftovers are named, then removed.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from docker.client import DockerClient

from tests.support import missing, remove_containers

pytest_plugins = ["pytester"]  # tests/test_support.py runs a test module as CI would

TEST_IMAGE = "cmnode-test/busybox:latest"
LABEL_NODE = "cmnode.node_id"  # node/runtime.py's label on every container a node makes

_BASETEMP = pytest.StashKey[Path]()
"""The session's temporary directory, once a test reached dockerd: the data dirs of this run's nodes are there."""
_TEST_IDS = pytest.StashKey[set[str]]()
"""Ids the ``node_id`` fixture handed out (a test may label with one plus a suffix)."""

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
def docker_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DockerClient | None]:
    """A plain SDK client for set-up and clean-up, or None when no daemon answers."""
    try:
        client = DockerClient.from_env(timeout=10)
        client.ping()
    except (docker.errors.DockerException, OSError):
        yield None
        return
    request.config.stash[_BASETEMP] = tmp_path_factory.getbasetemp()  # the session's leftovers are checked
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
def node_id(request: pytest.FixtureRequest, docker_client: DockerClient | None) -> Iterator[str]:
    """A node id unique to the test; every container labelled with it is removed afterwards."""
    value = f"test-{uuid.uuid4().hex[:12]}"
    request.config.stash.setdefault(_TEST_IDS, set()).add(value)
    yield value
    remove_containers(docker_client, value)


# -- the run leaves no container behind --------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Name and remove the job containers this run's nodes left on the engine, and fail the run if any."""
    basetemp = session.config.stash.get(_BASETEMP, None)
    if basetemp is None:  # no test reached dockerd
        return
    dirs = node_dirs_under(basetemp)
    left = leftover_containers(set(dirs), session.config.stash.get(_TEST_IDS, set()))
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = []
    for c in left:
        node = c["Labels"].get(LABEL_NODE, "")
        where = dirs[node].relative_to(basetemp) if node in dirs else "a node_id fixture"
        lines.append(
            f"{c['Names'][0].lstrip('/')} ({c['Image']}, {c['Status']}) node {node} (data dir {where}) "
            f"job {c['Labels'].get('cmnode.job_id')} created {c.get('Created')}"
        )
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", f"{len(left)} container(s) left on the engine by this run's nodes", red=True)
        for line in lines:
            reporter.write_line(line)
    remove_leftovers(left)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def leftover_containers(ours: set[str], test_ids: set[str]) -> list[dict[str, Any]]:
    """Containers (running or not) whose node is one of this run's: one of ``ours`` (the identities under the
    session's directory) or an id the ``node_id`` fixture handed out (or one with a suffix to it)."""
    with contextlib.closing(DockerClient.from_env(timeout=30)) as client:
        listed = client.api.containers(all=True, filters={"label": LABEL_NODE})
    return [
        c
        for c in listed
        if (node := (c.get("Labels") or {}).get(LABEL_NODE, "")) in ours
        or any(node.startswith(test_id) for test_id in test_ids)
    ]


def node_dirs_under(root: Path) -> dict[str, Path]:
    """The node id of every data directory under ``root`` (its ``identity.key``), to the directory: its first
    part names the test that made it."""
    from node.identity import KEY_FILE, load_or_create

    dirs = {}
    for key in root.rglob(KEY_FILE):
        with contextlib.suppress(Exception):  # a key a test damaged on purpose
            dirs[load_or_create(key.parent).node_id] = key.parent
    return dirs


def remove_leftovers(containers: list[dict[str, Any]]) -> None:
    with contextlib.closing(DockerClient.from_env(timeout=30)) as client:
        for c in containers:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.api.remove_container(c["Id"], force=True)
