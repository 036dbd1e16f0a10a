"""Dead connections are noticed in seconds (issue 12): the decision logic of ``Liveness`` against fakes.

A peer whose pings stop being answered is disconnected after ``MISSES`` misses in a row, counted once, and
handed to ``redial``; one that answers again in between is not. A peer heard from within ``QUIET`` (a pubsub RPC,
its own ping, an answer to ours) is not pinged, so an idle connection carries one ping every ``QUIET`` s or so,
one way. Virtual time (``autojump_clock``).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from node.liveness import ANSWER_IDLE, INTERVAL, MAX_ANSWERING, MISSES, PING_LENGTH, QUIET, TIMEOUT, Liveness

ALIVE = ID(b"alive-peer")
SILENT = ID(b"silent-peer")


class FakeNetwork:
    def __init__(self) -> None:
        self.connected = {ALIVE, SILENT}
        self.silent: set[ID] = set()
        self.broken: set[ID] = set()
        self.disconnected: list[ID] = []
        self.redialled: list[ID] = []
        self.gone = trio.Event()

    def peers(self) -> list[ID]:
        return sorted(self.connected, key=str)

    async def ping(self, peer_id: ID) -> None:
        if peer_id in self.broken:
            raise ConnectionError("stream reset")
        if peer_id in self.silent:
            await trio.sleep_forever()
        await trio.sleep(0.01)

    async def disconnect(self, peer_id: ID) -> None:
        self.connected.discard(peer_id)
        self.disconnected.append(peer_id)

    def redial(self, peer_id: ID) -> None:
        self.redialled.append(peer_id)
        self.gone.set()


@pytest.mark.parametrize("failure", ["silent", "broken"])
async def test_a_peer_that_stops_answering_is_disconnected_counted_and_redialled(
    autojump_clock: trio.testing.MockClock, failure: str
) -> None:
    net = FakeNetwork()
    liveness = Liveness(peers=net.peers, ping=net.ping, disconnect=net.disconnect, redial=net.redial)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(liveness.run)
        await trio.sleep(3 * INTERVAL)
        assert net.disconnected == [] and liveness.stats.misses == 0
        (net.silent if failure == "silent" else net.broken).add(SILENT)
        stopped = trio.current_time()
        with trio.fail_after(QUIET + MISSES * (INTERVAL + TIMEOUT) + INTERVAL):
            await net.gone.wait()
        noticed = trio.current_time() - stopped
        await trio.sleep(5 * INTERVAL)  # and never again while it stays disconnected
        nursery.cancel_scope.cancel()
    assert noticed <= QUIET + INTERVAL + (MISSES - 1) * INTERVAL + TIMEOUT  # quiet, the look, the misses
    assert net.disconnected == [SILENT] and net.redialled == [SILENT]
    assert liveness.stats.dead == 1 and liveness.stats.misses == MISSES
    assert ALIVE in net.connected


async def test_one_lost_ping_is_not_an_outage(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    liveness = Liveness(peers=net.peers, ping=net.ping, disconnect=net.disconnect, redial=net.redial)
    answered = 0
    real_ping = net.ping

    async def flaky(peer_id: ID) -> None:  # every other ping of SILENT is lost
        nonlocal answered
        if peer_id == SILENT:
            answered += 1
            if answered % 2:
                await trio.sleep_forever()
        await real_ping(peer_id)

    liveness._ping = flaky
    with trio.move_on_after(10 * (QUIET + 2 * INTERVAL)):
        await liveness.run()
    assert liveness.stats.misses >= 5
    assert net.disconnected == [] and liveness.stats.dead == 0


async def test_a_ping_the_library_does_not_let_go_delays_no_verdict(autojump_clock: trio.testing.MockClock) -> None:
    """A ping stuck behind a write blocked on a dead connection ignores its timeout (it is shielded here, as a
    blocked library call behaves). Before, each round waited for every probe, so that one stuck ping held every
    verdict, its own peer's included, for as long as it was stuck (at 10 nodes: nearly a minute)."""
    net = FakeNetwork()
    release = trio.Event()

    async def stuck(peer_id: ID) -> None:
        if peer_id == SILENT:
            with trio.CancelScope(shield=True):
                await release.wait()
        await net.ping(peer_id)

    liveness = Liveness(peers=net.peers, ping=stuck, disconnect=net.disconnect, redial=net.redial)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(liveness.run)
        try:
            with trio.fail_after(MISSES * (INTERVAL + TIMEOUT) + INTERVAL):
                await net.gone.wait()
            pings = liveness.stats.pings
            await trio.sleep(4 * (QUIET + INTERVAL))  # the other peer is still probed while one is stuck
            assert liveness.stats.pings >= pings + 4
        finally:
            release.set()
            nursery.cancel_scope.cancel()
    assert net.disconnected == [SILENT] and net.redialled == [SILENT]
    assert ALIVE in net.connected and liveness.stats.dead == 1


async def test_misses_on_an_old_connection_do_not_count_against_a_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that reconnected (a new connection) starts with a clean slate: probes begun on the old connection
    judge nothing, so a healed link is not cut for what the dead one missed."""
    net = FakeNetwork()
    liveness = Liveness(peers=net.peers, ping=net.ping, disconnect=net.disconnect, redial=net.redial)
    net.silent.add(SILENT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(liveness.run)
        with trio.fail_after(MISSES * (INTERVAL + TIMEOUT)):
            while liveness.stats.misses < MISSES - 1:
                await trio.sleep(0.1)
        liveness.on_connect(SILENT)  # reconnected: and still silent, so judged again from scratch
        with trio.fail_after(2 * MISSES * (INTERVAL + TIMEOUT)):
            await net.gone.wait()
        nursery.cancel_scope.cancel()
    assert liveness.stats.misses >= 2 * MISSES - 1 and liveness.stats.dead == 1


async def test_a_peer_that_talks_is_not_pinged_and_one_that_falls_quiet_is(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every pubsub RPC a peer sends says it is alive: at 10 idle nodes a ping per connection per interval, on both
    ends, was most of what a connection cost beside gossip. A peer that goes quiet (frozen) is pinged again and cut
    as before."""
    net = FakeNetwork()
    last: dict[ID, float] = {ALIVE: 0.0, SILENT: 0.0}
    pinged: list[ID] = []

    async def ping(peer_id: ID) -> None:
        pinged.append(peer_id)
        await net.ping(peer_id)

    def heard(peer_id: ID) -> float:
        return trio.current_time() - last[peer_id]

    async def talk() -> None:
        while True:
            last[ALIVE] = trio.current_time()
            if SILENT not in net.silent:
                last[SILENT] = trio.current_time()
            await trio.sleep(0.5)

    liveness = Liveness(peers=net.peers, ping=ping, disconnect=net.disconnect, redial=net.redial, heard=heard)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(talk)
        nursery.start_soon(liveness.run)
        await trio.sleep(10 * INTERVAL)
        assert pinged == [] and liveness.stats.heard >= 18
        net.silent.add(SILENT)  # frozen: it neither talks nor answers
        with trio.fail_after(MISSES * (INTERVAL + TIMEOUT) + 2 * INTERVAL):
            await net.gone.wait()
        nursery.cancel_scope.cancel()
    assert set(pinged) == {SILENT} and net.disconnected == [SILENT] and liveness.stats.dead == 1


async def test_a_peer_that_answers_is_pinged_once_in_a_quiet_spell_not_every_look(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An answer proves the peer alive as well as a message does: the next ping waits ``QUIET`` s. Before, every
    connected peer was pinged every ``INTERVAL`` (2 s), which with node records rare was most of an idle node's
    CPU."""
    net = FakeNetwork()
    net.connected = {ALIVE}
    liveness = Liveness(peers=net.peers, ping=net.ping, disconnect=net.disconnect, redial=net.redial)
    with trio.move_on_after(60):
        await liveness.run()
    assert 60 / (QUIET + INTERVAL) <= liveness.stats.pings <= 60 / QUIET + 1
    assert liveness.stats.misses == 0


class Pipe:
    """One direction of an in-memory stream."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](16)


class FakeStream:
    """One end of an in-memory bidirectional stream, as much of ``INetStream`` as pinging uses."""

    def __init__(self, inbox: Pipe, outbox: Pipe, peer_id: ID) -> None:
        self._inbox, self._outbox = inbox, outbox
        self.muxed_conn = type("Conn", (), {"peer_id": peer_id})()
        self.closed = self.was_reset = False

    async def write(self, data: bytes) -> None:
        if self.closed or self.was_reset:
            raise ConnectionError("stream closed")
        await self._outbox.send.send(data)

    async def read(self, n: int = -1) -> bytes:
        try:
            return await self._inbox.receive.receive()
        except trio.EndOfChannel:
            return b""

    async def close(self) -> None:
        self.closed = True
        await self._outbox.send.aclose()

    async def reset(self) -> None:
        self.was_reset = True
        await self._outbox.send.aclose()


def stream_pair(a: ID, b: ID) -> tuple[FakeStream, FakeStream]:
    """(a's end, b's end) of a stream between ``a`` and ``b``."""
    forth, back = Pipe(), Pipe()
    return FakeStream(back, forth, b), FakeStream(forth, back, a)


async def test_a_peer_that_pings_us_is_not_pinged_back(autojump_clock: trio.testing.MockClock) -> None:
    """Two nodes, each pinging the other through the other's ``answer`` handler: a ping received proves its
    sender alive, so whichever pings first spares the other and the connection carries one ping a quiet spell,
    one way. Before, each end pinged the other every ``INTERVAL``."""
    a_id, b_id = ID(b"node-a"), ID(b"node-b")
    nodes: dict[ID, Liveness] = {}
    streams: dict[ID, FakeStream] = {}

    def pinger(me: ID, other: ID) -> object:
        async def ping(peer_id: ID) -> None:
            if me not in streams:
                mine, theirs = stream_pair(me, other)
                streams[me] = mine
                nursery.start_soon(nodes[other].answer, theirs)
            payload = bytes(PING_LENGTH)
            await streams[me].write(payload)
            assert await streams[me].read(PING_LENGTH) == payload

        return ping

    async def nothing(peer_id: ID) -> None:
        return None

    for me, other in ((a_id, b_id), (b_id, a_id)):
        nodes[me] = Liveness(
            peers=lambda other=other: [other], ping=pinger(me, other), disconnect=nothing, redial=lambda p: None
        )  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(nodes[a_id].run)
        await trio.sleep(0.5)  # not at the same instant: as two processes' loops are
        nursery.start_soon(nodes[b_id].run)
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    a, b = nodes[a_id].stats, nodes[b_id].stats
    assert a.pings + b.pings <= 120 / QUIET + 2
    assert min(a.pings, b.pings) <= 1 and a.answered == b.pings and b.answered == a.pings
    assert a.misses == b.misses == 0


async def test_the_ping_handler_answers_bounds_streams_and_never_raises(autojump_clock: trio.testing.MockClock) -> None:
    """``answer`` echoes ping after ping, refuses more than ``MAX_ANSWERING`` streams a peer, closes a stream idle
    for ``ANSWER_IDLE``, and a stream that breaks mid-ping ends its handler quietly."""
    me, peer = ID(b"me"), ID(b"peer")
    liveness = Liveness(peers=lambda: [peer], ping=FakeNetwork().ping, disconnect=FakeNetwork().disconnect,
                        redial=lambda p: None)  # fmt: skip
    async with trio.open_nursery() as nursery:
        ends = [stream_pair(peer, me) for _ in range(MAX_ANSWERING + 1)]
        for _, theirs in ends:
            nursery.start_soon(liveness.answer, theirs)
        await trio.sleep(0.1)
        refused = [theirs.was_reset for _, theirs in ends]
        assert sum(refused) == 1  # one too many
        (mine, _), (_, answering) = [end for end, no in zip(ends, refused, strict=True) if not no]
        for k in range(3):
            await mine.write(bytes([k]) * PING_LENGTH)
            assert await mine.read(PING_LENGTH) == bytes([k]) * PING_LENGTH
        assert liveness.stats.answered == 3 and liveness.quiet_for(peer) < 1
        await mine.write(b"half a ping")
        await mine.reset()  # broken mid-ping
        await trio.sleep(ANSWER_IDLE + 1)
        assert answering.closed  # idle
        nursery.cancel_scope.cancel()
    assert liveness._answering == {}
