"""Liveness pings ride one long-lived stream per peer (``Pinger``, docs/py-libp2p.md "A silent partition leaves
connections open"): a stream per ping cost an open, a negotiation and a close on both ends every 2 s per
connection. A real ``Host`` pings a plain py-libp2p host, whose own handler answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.host import Host
from node.identity import load_or_create
from node.liveness import PING_PROTOCOL, Liveness, Pinger
from tests.support import base_config

pytestmark = pytest.mark.slow


async def test_pings_share_one_stream_and_a_broken_one_is_replaced(tmp_path: Path) -> None:
    host = Host(config=base_config(tmp_path / "data"), identity=load_or_create(tmp_path / "me"))
    peer = new_host(key_pair=create_new_key_pair())
    async with host.running(), peer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(peer.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{peer.get_id()}")))
        with trio.fail_after(10):
            await host.host.connect(info)
        opened = 0
        new_stream = host.host.new_stream

        async def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal opened
            opened += 1
            return await new_stream(*args, **kwargs)

        host.host.new_stream = counting  # type: ignore[method-assign]
        pinger = Pinger(host)
        for _ in range(5):
            with trio.fail_after(5):
                await pinger(info.peer_id)
        assert opened == 1

        await pinger.kept.streams[info.peer_id].reset()  # the stream breaks (as on a dying connection)
        with trio.fail_after(5):
            await pinger(info.peer_id)  # made again on a new stream, on the same connection
            await pinger(info.peer_id)
        assert opened == 2


async def test_a_kept_stream_the_peer_closed_is_replaced_within_the_same_ping(tmp_path: Path) -> None:
    """Pings are rarer than the library handler's 10 s idle limit now (node/liveness.py, ``QUIET``), so an older
    node closes the stream we keep between two pings: the ping is made again on a new stream, not counted as a
    miss."""
    host = Host(config=base_config(tmp_path / "data"), identity=load_or_create(tmp_path / "me"))
    peer = new_host(key_pair=create_new_key_pair())
    async with host.running(), peer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(peer.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{peer.get_id()}")))
        with trio.fail_after(10):
            await host.host.connect(info)
        pinger = Pinger(host)
        with trio.fail_after(5):
            await pinger(info.peer_id)
        await pinger.kept.streams[info.peer_id].close()  # what a handler's idle close leaves: a stream that cannot ping
        with trio.fail_after(5):
            await pinger(info.peer_id)  # no exception: made again on a new stream
            await pinger(info.peer_id)


async def test_a_node_that_is_pinged_knows_its_pinger_alive(tmp_path: Path) -> None:
    """Our handler of the ping protocol (``Liveness.answer``) answers a node's pings and notes the pinger as heard,
    so it does not ping back: two real hosts, one pings, the other's ``quiet_for`` it drops to ~0."""
    hosts = [Host(config=base_config(tmp_path / f"d{i}"), identity=load_or_create(tmp_path / f"k{i}")) for i in (0, 1)]
    watches = []
    for host in hosts:

        async def nothing(peer_id: ID) -> None:
            return None

        watches.append(
            Liveness(peers=host.host.get_connected_peers, ping=Pinger(host), disconnect=nothing, redial=lambda p: None)
        )
        host.host.set_stream_handler(PING_PROTOCOL, watches[-1].answer)
    async with hosts[0].running(), hosts[1].running():
        peer = hosts[1].host.get_id()
        info = info_from_p2p_addr(hosts[1].host.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{peer}")))
        with trio.fail_after(10):
            await hosts[0].host.connect(info)
        pinger, me = Pinger(hosts[0]), hosts[0].host.get_id()
        assert watches[1].quiet_for(me) == float("inf")
        with trio.fail_after(5):
            for _ in range(3):
                await pinger(peer)
        assert watches[1].quiet_for(me) < 1 and watches[1].stats.answered == 3
