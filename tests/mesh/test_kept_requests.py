"""Sync requests over one kept stream per peer (node/keptrequests.py; docs/py-libp2p.md, "A request opens a
stream, and both ends negotiate it"): two real ``Host``s on loopback, the served handler a stand-in for
``Catchup.serve``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.request_response import JSONCodec, RequestResponseError

from node import keptrequests
from node.host import Host
from node.identity import load_or_create
from node.keptrequests import KEPT, MAX_REQUEST_BYTES
from node.sync import SYNC_PROTOCOL
from tests.support import base_config

pytestmark = pytest.mark.slow

KEPT_PROTOCOL = KEPT[SYNC_PROTOCOL]


class Served:
    """The served end: answers each request with its count, and fails the ones it is told to."""

    def __init__(self) -> None:
        self.requests: list[tuple[Any, Any]] = []
        self.fail: set[int] = set()

    async def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        self.requests.append((request, context.peer_id))
        if len(self.requests) in self.fail:
            raise RuntimeError("the handler failed")
        return {"n": len(self.requests), "echo": request}


@asynccontextmanager
async def pair(tmp_path: Path, *, kept: bool = True) -> AsyncIterator[tuple[Host, Host, Served, list[list[str]]]]:
    """Host A asks, host B serves ``Served`` on the sync protocol (without its kept twin unless ``kept``); the
    protocols of every cmnode stream A opens are listed."""
    a = Host(config=base_config(tmp_path / "a"), identity=load_or_create(tmp_path / "ka"))
    b = Host(config=base_config(tmp_path / "b"), identity=load_or_create(tmp_path / "kb"))
    served = Served()
    if kept:
        b.serve(SYNC_PROTOCOL, served)
    else:  # a node of the previous version: the one-shot protocol only
        b.rr.set_handler(TProtocol(SYNC_PROTOCOL), served, JSONCodec(), b.rr_config)
    opened: list[list[str]] = []
    new_stream = a.host.new_stream

    async def counting(peer_id: Any, protocols: Any) -> Any:
        if any(str(p).startswith("/cmnode/") for p in protocols):  # not identify's or pubsub's
            opened.append([str(p) for p in protocols])
        return await new_stream(peer_id, protocols)

    a.host.new_stream = counting  # type: ignore[method-assign]
    async with a.running(), b.running():
        with trio.fail_after(10):
            await a.host.connect(PeerInfo(b.peer_id, b.host.get_addrs()))
        yield a, b, served, opened


async def test_requests_to_a_peer_share_one_stream(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b, served, opened):
        with trio.fail_after(10):
            answers = [await a.request(b.peer_id, SYNC_PROTOCOL, {"since": i}) for i in range(5)]
    assert [answer["n"] for answer in answers] == [1, 2, 3, 4, 5]
    assert [answer["echo"] for answer in answers] == [{"since": i} for i in range(5)]
    assert opened == [[KEPT_PROTOCOL]]  # one stream, negotiated once
    assert all(peer == a.peer_id for _, peer in served.requests)  # the handler knows who asks


async def test_a_peer_of_the_previous_version_is_asked_one_shot(tmp_path: Path) -> None:
    async with pair(tmp_path, kept=False) as (a, b, _served, opened):
        with trio.fail_after(10):
            answers = [await a.request(b.peer_id, SYNC_PROTOCOL, {"since": i}) for i in range(3)]
    assert [answer["n"] for answer in answers] == [1, 2, 3]
    # the kept protocol refused once, then remembered (OLD_FOR): the old protocol, a stream per request
    assert opened == [[KEPT_PROTOCOL], [SYNC_PROTOCOL], [SYNC_PROTOCOL], [SYNC_PROTOCOL]]


async def test_a_failed_request_resets_its_stream_and_the_next_one_opens_another(tmp_path: Path) -> None:
    """A kept stream that fails is asked again once on a new stream (it may have been closed while idle); one
    that fails there too fails the request, and the next request opens a stream of its own."""
    async with pair(tmp_path) as (a, b, served, opened):
        served.fail = {2, 3, 5}
        with trio.fail_after(10):
            assert (await a.request(b.peer_id, SYNC_PROTOCOL, {"since": 0}))["n"] == 1
            with pytest.raises(RequestResponseError):
                await a.request(b.peer_id, SYNC_PROTOCOL, {"since": 1})  # the kept stream, then a new one
            assert len(opened) == 2
            assert (await a.request(b.peer_id, SYNC_PROTOCOL, {"since": 2}))["n"] == 4
            assert (await a.request(b.peer_id, SYNC_PROTOCOL, {"since": 3}))["n"] == 6  # 5 failed: again, at once
    assert opened == [[KEPT_PROTOCOL]] * 4


async def test_a_stream_serves_a_bounded_number_of_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keptrequests, "SERVED_PER_STREAM", 2)
    async with pair(tmp_path) as (a, b, _served, opened):
        with trio.fail_after(10):
            answers = [await a.request(b.peer_id, SYNC_PROTOCOL, {"since": i}) for i in range(5)]
    assert [answer["n"] for answer in answers] == [1, 2, 3, 4, 5]  # the asker moved on to a new stream, unseen
    assert opened == [[KEPT_PROTOCOL]] * 3


async def test_an_oversized_request_is_refused_and_the_stream_dropped(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b, served, _opened):
        with trio.fail_after(10):
            with pytest.raises(RequestResponseError):
                await a.request(b.peer_id, SYNC_PROTOCOL, {"pad": "x" * MAX_REQUEST_BYTES})
            assert (await a.request(b.peer_id, SYNC_PROTOCOL, {"since": 0}))["n"] == 1
    assert len(served.requests) == 1  # the oversized one never reached the handler
