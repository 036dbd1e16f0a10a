"""Real ``cmnode`` processes: a node started with ``cmnode run``, and the client commands run against it
as a user runs them (the installed ``cmnode`` executable, a fresh process per command)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from docker.client import DockerClient

from tests.support import COMMAND, NodeProcess, clean_env, remove_containers

__all__ = ["NodeProcess", "clean_env", "cmnode", "one_line"]


def cmnode(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``cmnode ARGS`` to its end; ``url`` goes in CMNODE_URL."""
    environ = clean_env(**(env or {}))
    if url is not None:
        environ["CMNODE_URL"] = url
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=environ, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def one_line(stderr: str) -> str:
    """The single ``cmnode: ...`` line a failed command prints (and no traceback)."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cmnode: ")
    return lines[0]


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, test_image: str, docker_client: DockerClient
) -> Iterator[NodeProcess]:
    """One node shared by a module's tests (starting one costs about a second); containers removed after."""
    proc = NodeProcess(tmp_path_factory.mktemp("cli") / "node").start()
    yield proc
    proc.stop()
    remove_containers(docker_client, proc.node_id)


@pytest.fixture
def no_docker_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node whose Docker daemon is away (no job can run; everything else serves)."""
    proc = NodeProcess(tmp_path_factory.mktemp("no-docker") / "node", "--docker-host", "unix:///nonexistent.sock")
    yield proc.start()
    proc.stop()
