"""A node keeps accepting connections however many peers came and went before (docs/py-libp2p.md, "Every inbound
connection holds a slot until the node stops"): py-libp2p's swarm held one of its 250 inbound slots per connection
until the node stopped, so after 250 connections, say a rogue peer coming back with a fresh key each time it was
banned, every new one was closed at once and the node logged nothing. A real ``Host`` on loopback, its cap shrunk
to 3 so that the test is quick; the peers are plain py-libp2p hosts, each with a fresh key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.host import Host
from node.identity import load_or_create
from tests.support import base_config

pytestmark = pytest.mark.slow

CAP = 3


async def _peer(
    address: str, leave: trio.Event | None = None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """One peer with a fresh key: connect (within 10 s), then disconnect at once, or once ``leave`` is set."""
    peer = new_host(key_pair=create_new_key_pair())
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    async with peer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        with trio.fail_after(10):
            await peer.connect(info)
        task_status.started()
        if leave is not None:
            await leave.wait()
        await peer.disconnect(info.peer_id)


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.01)


async def test_connections_that_closed_give_their_inbound_slot_back(tmp_path: Path) -> None:
    host = Host(config=base_config(tmp_path / "data"), identity=load_or_create(tmp_path / "me"))
    swarm = host.host.get_network()
    swarm._inbound_limiter = slots = trio.CapacityLimiter(CAP)  # type: ignore[attr-defined]  # 250 in the library
    async with host.running():
        address = host.addresses()[0]
        for _ in range(3 * CAP):  # peers that come and go, as a rogue peer banned again and again
            await _peer(address)  # the library refused the fourth one: SwarmDialAllFailedError
            await _until(lambda: not swarm.get_connections())
        await _until(lambda: not slots.borrowed_tokens)
        # The cap still holds for connections that stay open, and a slot comes back when one of them goes.
        leave = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(CAP):
                await nursery.start(_peer, address, leave)
            assert slots.borrowed_tokens == CAP
            with pytest.raises(Exception) as refused:
                await _peer(address)
            assert "SwarmDialAllFailedError" in repr(refused.value), repr(refused.value)
            leave.set()
        await _until(lambda: not slots.borrowed_tokens)
        await _peer(address)  # a legitimate peer, after them all
