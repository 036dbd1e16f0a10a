"""docker/apt-get-wait: another apt holding its lock is waited for (bounded), not a raw apt error.

`apt-get update` itself fails at once on a held package-lists lock (apt 2.6 honours DPkg::Lock::Timeout only for
dpkg's). The test points apt at a lists directory of its own, with no sources, so the host's apt is not touched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import missing

pytestmark = [pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "apt-get-wait"


def update(tmp_path: Path, wait: int) -> subprocess.Popen[str]:
    (tmp_path / "parts").mkdir(exist_ok=True)
    (tmp_path / "empty.list").touch()
    return subprocess.Popen(
        [str(SCRIPT), "-o", f"Dir::State::Lists={tmp_path / 'lists'}",
         "-o", f"Dir::Etc::sourcelist={tmp_path / 'empty.list'}",
         "-o", f"Dir::Etc::sourceparts={tmp_path / 'parts'}", "-qq", "update"],
        env={**os.environ, "APT_LOCK_WAIT": str(wait)}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def lists(tmp_path: Path) -> Path:
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        missing("apt-get as root", "apt takes its locks only as root")
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    return tmp_path


def hold_lock(lists: Path) -> int:
    """Take the package lists' lock as apt does (fcntl), as another apt-get update would."""
    fd = os.open(lists / "lists" / "lock", os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    return fd


def test_a_held_apt_lock_is_waited_for(lists: Path) -> None:
    fd = hold_lock(lists)
    proc = update(lists, wait=60)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # said once it waits: the lock is held, so it must
        assert "another apt/dpkg is running" in first and f"process {os.getpid()}" in first, first
        assert proc.poll() is None  # still waiting, not failed
    finally:
        os.close(fd)  # the other apt is done
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, first + rest
    assert "Could not get lock" not in rest


def test_a_lock_held_past_the_bound_is_one_clear_error(lists: Path) -> None:
    fd = hold_lock(lists)
    try:
        proc = update(lists, wait=2)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 1
    assert f"apt is busy: its lock is still held by process {os.getpid()}" in err, err
    assert "E: " not in err  # apt's raw errors are not the message
