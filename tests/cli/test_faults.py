"""Faults under a real ``cmnode run``: a damaged store file stops the start with one line; a full disk (a small
tmpfs, mounted by the test) refuses Create with -32007 while reads work, at run time and from the start, and the
node recovers when space returns. The fast counterparts are in tests/node/test_store_faults.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from docker.client import DockerClient

from node.errors import StorageFullError
from rpc.client import Client
from tests.support import NodeProcess, missing, poll, remove_containers

from .conftest import cmnode

pytestmark = pytest.mark.slow  # each test runs the executable


def test_a_damaged_store_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    first = NodeProcess(data_dir, "--docker-host", "unix:///nonexistent.sock", "--queue-size", "1000").start()
    with Client(first.url) as client:
        for n in range(200):
            client.call("ContainerService.Create", {"image": "busybox", "arguments": ["x" * 400, str(n)]})
    assert first.stop() == 0
    db = data_dir / "cmnode.db"
    data = bytearray(db.read_bytes())  # the stop checkpointed: everything is in this file
    middle = len(data) // 2
    data[middle : middle + 40 * 4096] = b"\xff" * (40 * 4096)  # header sound, pages in the middle not
    db.write_bytes(bytes(data))
    done = cmnode("run", "--listen-address", "127.0.0.1", "--port", "0", "--p2p-port", "0", "--no-mdns",
                  "--data-dir", str(data_dir), "--docker-host", "unix:///nonexistent.sock", timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert "ready" not in done.stdout
    assert "Traceback" not in done.stderr
    line = done.stderr.splitlines()[-1]  # after whatever the node logged before it opened the store
    assert line.startswith(f"cmnode: cannot start: the job store {db} is damaged"), done.stderr
    assert "move it aside" in line


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards (the node's log stays outside it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    if done.returncode != 0:
        missing("a tmpfs mount", done.stderr.strip() or f"mount exited {done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(disk: Path) -> None:
    """Take every byte left on ``disk``."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def health(node: NodeProcess) -> dict[str, object]:
    body: dict[str, object] = httpx.get(node.url + "/healthz", timeout=30).json()
    return body


@pytest.mark.docker
def test_a_full_disk_refuses_create_serves_reads_and_recovers(
    small_disk: Path, test_image: str, docker_client: DockerClient
) -> None:
    node = NodeProcess(small_disk)  # the data directory is the tmpfs itself; the log is beside it
    node.start()
    try:
        with Client(node.url) as client:

            def create() -> str:
                job_id: str = client.call("ContainerService.Create", {"image": test_image, "arguments": ["true"]})[
                    "job_id"
                ]
                return job_id

            def complete(job_id: str) -> None:
                poll(lambda: client.call("ContainerService.Status", {"job_id": job_id})["status"] == "complete",
                     timeout=60, what=f"job {job_id} complete")  # fmt: skip

            first = create()
            complete(first)
            fill(small_disk)
            with pytest.raises(StorageFullError) as refused:
                create()
            assert refused.value.code == -32007
            assert refused.value.message.startswith("storage full:")
            assert client.call("ContainerService.Status", {"job_id": first})["status"] == "complete"  # reads work
            assert len(client.call("ContainerService.List", {})["jobs"]) == 1
            problems = health(node)["problems"]
            assert isinstance(problems, dict) and str(problems["store"]).startswith("storage full")
            (small_disk / "filler").unlink()
            poll(lambda: "store" not in health(node)["problems"], what="the store healthy again")  # type: ignore[operator]
            complete(create())
        assert node.stop() == 0

        fill(small_disk)  # a start on a full disk: reads served, the reason in /healthz
        node.start()
        with Client(node.url) as client:
            assert len(client.call("ContainerService.List", {})["jobs"]) == 2
            problems = health(node)["problems"]
            assert isinstance(problems, dict) and "storage full" in str(problems["store"])
            with pytest.raises(StorageFullError):
                client.call("ContainerService.Create", {"image": test_image, "arguments": ["true"]})
            (small_disk / "filler").unlink()
            job_id = client.call("ContainerService.Create", {"image": test_image, "arguments": ["true"]})["job_id"]
            poll(lambda: client.call("ContainerService.Status", {"job_id": job_id})["status"] == "complete",
                 timeout=60, what="a job after space returned")  # fmt: skip
            assert "store" not in health(node)["problems"]  # type: ignore[operator]
        assert node.stop() == 0
        assert "Traceback" not in node.log.read_text()
    finally:
        node.stop()
        remove_containers(docker_client, node.node_id)
