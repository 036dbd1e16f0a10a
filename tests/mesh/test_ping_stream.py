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
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.host import Host
from node.identity import load_or_create
from node.liveness import Pinger
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

        await pinger._streams[info.peer_id].reset()  # the stream breaks (as on a dying connection)
        with trio.fail_after(5), pytest.raises(Exception):  # noqa: B017  # whichever error the library raises
            await pinger(info.peer_id)
        with trio.fail_after(5):
            await pinger(info.peer_id)  # a new stream, on the same connection
        assert opened == 2
