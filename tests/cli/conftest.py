"""Real ``cmnode`` processes: a node started with ``cmnode run``, and the client commands run against it
as a user runs them (the installed ``cmnode`` executable, a fresh process per command)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from docker.client import DockerClient

READY = re.compile(r"node (\S+) ready, RPC at (http://\S+)/jrpc")
_SCRIPT = Path(sys.executable).with_name("cmnode")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "node"]
"""The real executable: the console script of this virtualenv, else the package run as a module."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without CMNODE_* (a developer's own settings must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMNODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


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


class NodeProcess:
    """A ``cmnode run`` process on loopback (port 0, mDNS off); its log goes to a file."""

    def __init__(self, data_dir: Path, *flags: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log = data_dir.with_suffix(".log")
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [*COMMAND, "run", "--listen-address", "127.0.0.1", "--port", "0", "--p2p-port", "0", "--no-mdns",
                 "--data-dir", str(data_dir), *flags],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=clean_env(**(env or {})),
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one "ready" line once it serves (EOF if it died)
        match = READY.search(line)
        if match is None:
            self.stop()
            raise AssertionError(f"node did not start: {line!r}\n{self.log.read_text()}")
        self.node_id, self.url = match.group(1), match.group(2)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def remove_containers(client: DockerClient | None, node_id: str) -> None:
    if client is None:
        return
    for container in client.containers.list(all=True, filters={"label": f"cmnode.node_id={node_id}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, test_image: str, docker_client: DockerClient
) -> Iterator[NodeProcess]:
    """One node shared by a module's tests (starting one costs about a second); containers removed after."""
    proc = NodeProcess(tmp_path_factory.mktemp("cli") / "node")
    yield proc
    proc.stop()
    remove_containers(docker_client, proc.node_id)
