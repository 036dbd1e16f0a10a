"""A stopped ``Host`` leaves nothing behind (docs/py-libp2p.md, "A stopped host keeps listening, and a thread"):
py-libp2p left, per host, pubsub's seen-message sweeper thread, a port that still accepted connections with its
serving task, and an open socket per connection. Two real hosts on loopback, connected, then stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.host import Host
from node.identity import load_or_create
from node.metrics import trio_tasks_by_name
from tests.support import base_config

pytestmark = pytest.mark.slow


def threads() -> set[threading.Thread]:
    """Threads other than trio's worker cache (idle workers linger ~10 s by design, whoever used them)."""
    return {t for t in threading.enumerate() if not t.name.startswith(("Trio thread", "trio."))}


def sockets() -> set[str]:
    """This process's open sockets (``socket:[inode]``). The checks are on what a test adds: an earlier test's
    thread or socket may end meanwhile."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (the listdir's own fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add(target)
    return found


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_a_stopped_host_leaves_no_thread_task_listener_or_socket(tmp_path: Path) -> None:
    before = (threads(), trio_tasks_by_name(), sockets())
    a = Host(config=base_config(tmp_path / "a"), identity=load_or_create(tmp_path / "ka"))
    b = Host(config=base_config(tmp_path / "b"), identity=load_or_create(tmp_path / "kb"))
    async with a.running(), b.running():
        with trio.fail_after(10):
            await a.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(b.addresses()[0])))
        assert len(threads() - before[0]) == 2  # one sweeper each, while running
        ports = (a.port, b.port)
    assert threads() - before[0] == set()
    assert trio_tasks_by_name() == before[1]
    assert sockets() - before[2] == set()
    assert not any(accepts(port) for port in ports)
