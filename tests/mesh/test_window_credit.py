"""Yamux credit goes back in batches (node/windowcredit.py; docs/py-libp2p.md "Every read sends a window
update"): py-libp2p sent a WINDOW_UPDATE frame after nearly every read, so every pubsub RPC and every ping made
the receiver write one to three more frames, about a third of an idle 10-node cluster's CPU. A real ``Host``
talks to a plain py-libp2p host over real yamux streams. Also its RTT pings, spaced out (docs/py-libp2p.md, "Yamux
pings every connection every 30 s")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux import yamux

from node.host import RTT_PING_INTERVAL, Host
from node.identity import load_or_create
from node.liveness import Pinger
from tests.support import base_config

pytestmark = pytest.mark.slow

BULK = TProtocol("/cmnode-test/bulk/1")
BULK_BYTES = 3 * 1024 * 1024
"""Well beyond the 256 KiB initial window: the sender stalls unless the reader gives credit back."""


async def test_small_reads_send_no_window_update_and_bulk_still_flows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(config=base_config(tmp_path / "data"), identity=load_or_create(tmp_path / "me"))
    peer = new_host(key_pair=create_new_key_pair())
    updates: list[int] = []
    send_update = yamux.YamuxStream.send_window_update

    async def counting(self: Any, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await send_update(self, increment, skip_lock)

    monkeypatch.setattr(yamux.YamuxStream, "send_window_update", counting)

    async def bulk(stream: Any) -> None:
        received = 0
        while received < BULK_BYTES:
            chunk = await stream.read(65536)
            if not chunk:
                break
            received += len(chunk)
        await stream.write(str(received).encode())
        await stream.close()

    peer.set_stream_handler(BULK, bulk)
    async with host.running(), peer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(peer.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{peer.get_id()}")))
        with trio.fail_after(10):
            await host.host.connect(info)
        pinger = Pinger(host)
        with trio.fail_after(30):
            for _ in range(200):
                await pinger(info.peer_id)
        # Before: one update per read on each end, about 400 for 200 pings; 200 x 32 bytes is far below half a
        # window, so none is due.
        assert updates == []

        with trio.fail_after(30):
            stream = await host.host.new_stream(info.peer_id, [BULK])
            block = b"x" * 65536
            for _ in range(BULK_BYTES // len(block)):
                await stream.write(block)
            answer = await stream.read(64)
        assert int(answer) == BULK_BYTES
        # Credit came back in batches of at least half the 256 KiB window, not per read.
        assert updates and min(updates) >= 128 * 1024 and len(updates) <= BULK_BYTES // (128 * 1024)


class _RecordingTrio:
    """trio as yamux's module sees it, but every ``move_on_after`` delay is noted (the RTT loop's waits)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    def move_on_after(self, seconds: float) -> trio.CancelScope:
        self.delays.append(seconds)
        return trio.move_on_after(seconds)


async def test_yamux_pings_every_connection_only_every_rtt_ping_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/py-libp2p.md, "Yamux pings every connection every 30 s": the library's RTT loop pings once in the
    connection's first second, then waits RTT_PING_INTERVAL, not 30 s, before the next."""
    recording = _RecordingTrio()
    monkeypatch.setattr(yamux, "trio", recording)
    host = Host(config=base_config(tmp_path / "data"), identity=load_or_create(tmp_path / "me"))
    assert yamux.RTT_MEASURE_INTERVAL == RTT_PING_INTERVAL == 300
    peer = new_host(key_pair=create_new_key_pair())
    async with host.running(), peer.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(peer.get_addrs()[0].encapsulate(multiaddr.Multiaddr(f"/p2p/{peer.get_id()}")))
        with trio.fail_after(10):
            await host.host.connect(info)
            muxers = [conn.muxed_conn for conn in host.host.get_network().get_connections(info.peer_id)]
            while not all(m.rtt() > 0 for m in muxers):  # the first ping was answered: the loop waits next
                await trio.sleep(0.05)
            while recording.delays.count(RTT_PING_INTERVAL) < 2:  # both ends' loops
                await trio.sleep(0.05)
    assert 30 not in recording.delays, recording.delays
