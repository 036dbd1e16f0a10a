"""The streaming logs protocol (node/meshlogs.py) between its two ends over an in-memory stream that, like
yamux's flow control, makes a write wait until the other end reads: items in order, a refusal carried back
as the node's error, a follower that stops reading cut off by the serving node, a silent node given up."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.io.msgio import VarIntLengthMsgReadWriter

from node import meshlogs
from node.errors import NotFoundError, QueueFullError
from node.fake_runtime import FakeRuntime
from node.logfollow import Follow, FollowItem, LogCut, LogEnd, LogFollowers
from node.meshlogs import RemoteLogs, serve_follow
from node.runtime import LogChunk

from .test_follow_fake import JOB, Here


class PipeEnd:
    """One end of a lockstep stream, with what ``INetStream`` offers that the protocol uses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.muxed_conn = SimpleNamespace(peer_id="peer")
        self.reset_called = False
        self.closed = False

    async def read(self, n: int | None = None) -> bytes:
        try:
            return await self.stream.receive_some(n)
        except trio.ClosedResourceError:
            return b""

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def close(self) -> None:
        self.closed = True
        await self.stream.aclose()

    async def reset(self) -> None:
        self.reset_called = True
        await self.stream.aclose()


class Peer:
    """A host whose ``new_stream`` reaches a serving side run by ``serve`` in the test's nursery."""

    def __init__(self, nursery: trio.Nursery, serve: Callable[[PipeEnd], Awaitable[None]]) -> None:
        self.nursery = nursery
        self.serve = serve
        self.server_ends: list[PipeEnd] = []
        self.served = trio.Event()

    async def new_stream(self, peer_id: Any, protocols: Any) -> PipeEnd:
        mine, theirs = trio.testing.lockstep_stream_pair()
        server = PipeEnd(theirs)
        self.server_ends.append(server)

        async def run() -> None:
            await self.serve(server)
            self.served.set()

        self.nursery.start_soon(run)
        return PipeEnd(mine)


PEER = SimpleNamespace(to_base58=lambda: "QmPeer")


@asynccontextmanager
async def serving(open_follow: Callable[[str, int | None], Awaitable[Follow]]) -> AsyncIterator[Peer]:
    async with trio.open_nursery() as nursery:
        yield Peer(nursery, lambda stream: serve_follow(stream, open_follow))  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()


async def test_items_cross_in_order_and_the_stream_closes(autojump_clock: trio.testing.MockClock) -> None:
    here = Here(FakeRuntime())
    cid = here.run()
    hub = LogFollowers()
    async with trio.open_nursery() as nodes:
        await nodes.start(hub.run)

        async def open_follow(job_id: str, tail: int | None) -> Follow:
            return await hub.start(await here.logs().source(job_id, tail))

        async def job() -> None:
            for i in range(5):
                here.runtime.write(cid, f"{i}\n")
                await trio.sleep(20)  # quieter than the ping interval: pings go by unseen
            here.end(cid, 0)

        async with serving(open_follow) as peer:
            remote = await RemoteLogs.open(peer, PEER, JOB, None)  # type: ignore[arg-type]
            nodes.start_soon(job)
            with trio.fail_after(600):
                got = [item async for item in remote]
            await remote.aclose()
            await peer.served.wait()
        assert got == [LogChunk("stdout", f"{i}\n") for i in range(5)] + [LogEnd("complete", 0, 1)]
        assert peer.server_ends[0].closed and not peer.server_ends[0].reset_called
        assert hub.active == 0
        nodes.cancel_scope.cancel()


@pytest.mark.parametrize("error", [NotFoundError("job x has no execution on node n"), QueueFullError("too many")])
async def test_a_refusal_comes_back_as_the_nodes_error(
    error: Exception, autojump_clock: trio.testing.MockClock
) -> None:
    async def refuse(job_id: str, tail: int | None) -> Follow:
        raise error

    async with serving(refuse) as peer:
        with pytest.raises(type(error), match=str(error)):
            await RemoteLogs.open(peer, PEER, JOB, None)  # type: ignore[arg-type]


async def test_a_follower_that_stops_reading_is_cut_off(autojump_clock: trio.testing.MockClock) -> None:
    closed: list[str] = []

    async def endless() -> AsyncIterator[FollowItem]:
        try:
            while True:
                yield LogChunk("stdout", "x" * 1000)
                await trio.sleep(0.01)
        finally:
            closed.append("source")

    hub = LogFollowers()
    async with trio.open_nursery() as nodes:
        await nodes.start(hub.run)

        async def open_follow(job_id: str, tail: int | None) -> Follow:
            return await hub.start(endless())  # type: ignore[arg-type]

        async with serving(open_follow) as peer:
            remote = await RemoteLogs.open(peer, PEER, JOB, None)  # type: ignore[arg-type]
            began = trio.current_time()
            with trio.fail_after(60):
                await peer.served.wait()  # the follower reads nothing: the serving side gives up
            assert trio.current_time() - began == pytest.approx(meshlogs.WRITE_TIMEOUT, abs=0.5)
            assert peer.server_ends[0].reset_called
            with trio.fail_after(5):
                while hub.active:
                    await trio.sleep(0.01)
            assert closed == ["source"]
            await remote.aclose()
        nodes.cancel_scope.cancel()


async def test_a_silent_node_is_given_up(autojump_clock: trio.testing.MockClock) -> None:
    async def mute(stream: PipeEnd) -> None:
        rw = VarIntLengthMsgReadWriter(stream, max_msg_size=meshlogs.MAX_FRAME)  # type: ignore[arg-type]
        await rw.read_msg()
        await rw.write_msg(json.dumps({"ok": True}).encode())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        peer = Peer(nursery, mute)
        remote = await RemoteLogs.open(peer, PEER, JOB, None)  # type: ignore[arg-type]
        began = trio.current_time()
        got = [item async for item in remote]
        assert trio.current_time() - began == pytest.approx(meshlogs.SILENCE)
        assert len(got) == 1 and isinstance(got[0], LogCut) and "sent nothing" in got[0].reason
        await remote.aclose()
        nursery.cancel_scope.cancel()


async def test_a_malformed_request_or_frame_costs_only_its_stream(autojump_clock: trio.testing.MockClock) -> None:
    async def never(job_id: str, tail: int | None) -> Follow:
        raise AssertionError("not reached")

    async with trio.open_nursery() as nursery:
        server_side, client_side = trio.testing.lockstep_stream_pair()
        server = PipeEnd(server_side)
        nursery.start_soon(serve_follow, server, never)  # type: ignore[arg-type]
        rw = VarIntLengthMsgReadWriter(PipeEnd(client_side), max_msg_size=1024)  # type: ignore[arg-type]
        await rw.write_msg(b'{"job_id": 5}')
        with trio.fail_after(5):
            assert await PipeEnd(client_side).read(10) == b""  # the server reset the stream, and lives on
        assert server.reset_called

        async def garbage(stream: PipeEnd) -> None:
            rw = VarIntLengthMsgReadWriter(stream, max_msg_size=1024)  # type: ignore[arg-type]
            await rw.read_msg()
            await rw.write_msg(b'{"ok": true}')
            await rw.write_msg(b'{"what": 1}')

        remote = await RemoteLogs.open(Peer(nursery, garbage), PEER, JOB, None)  # type: ignore[arg-type]
        got = [item async for item in remote]
        assert got == [LogCut("node QmPeer sent a malformed frame")]
        await remote.aclose()
        nursery.cancel_scope.cancel()
