"""Lost notices, fast: the notice on the wire and through gossip, the registry's rules (down from the notice's
arrival unless a newer record is known or this node is connected to the node, the refutation, the allowance per
reporter, roll calls, a node back after an outage), the version gate (records spaced long and notices sent only
when every node up speaks 0.2.0), and the loss watch (which closes are probed, what a probe's outcome does).
Trio's mock clock stands in for time; no process, no libp2p host."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import trio
import trio.testing
from multiaddr import Multiaddr

from benchmarks.sim.params import new_identity as fresh
from node.gossip import Gossip
from node.heartbeat import REFRESH, Heartbeat
from node.identity import Identity
from node.link import MeshLink
from node.losswatch import ANSWERED_FOR, LIVED_FOR, PROBE_TIMEOUT, LossWatch
from node.lost import LostNotice, sign_lost, speaks_lost
from node.noderecord import NodeRecord, sign_record
from node.nodeview import NodeState
from node.reach import tcp_reaches
from node.registry import Registry
from node.verdicts import NOTICE_BURST, ROLL_JITTER, ROLL_WINDOW
from node.wire import LostMsg, WireError, decode, encode, parse_lost

from .fakes import FakeInbound, receive

NEW = "0.2.0"


def record_of(node: Identity, seq: int = 1, *, version: str = NEW, heartbeat: float = 180.0) -> NodeRecord:
    return sign_record(node, NodeRecord(node_id=node.node_id, name="n-" + node.node_id[-4:], seq=seq, at=time.time(),
                                        heartbeat=heartbeat, version=version))  # fmt: skip


def registry_of(me: Identity) -> Registry:
    registry = Registry(node_id=me.node_id, name="me", heartbeat=2.0)
    registry.own(record_of(me))
    return registry


def state(registry: Registry, node: Identity) -> NodeState:
    info = registry.get(node.node_id)
    assert info is not None
    return info.state


# -- the wire ---------------------------------------------------------------------------------------------


def test_a_notice_round_trips_signed_and_checked(me: Identity, peer: Identity) -> None:
    notice = sign_lost(me, peer.node_id, 7, time.time())
    assert decode(encode(LostMsg(notice)), sender=me.node_id) == LostMsg(notice)
    assert parse_lost(json.loads(json.dumps(notice.to_json()))) == notice  # relayed: its signature is checked
    forged = LostNotice(node_id=peer.node_id, seq=8, by=me.node_id, at=notice.at, signature=notice.signature)
    with pytest.raises(WireError) as exc:
        parse_lost(forged.to_json())
    assert exc.value.reason == "unverified"
    with pytest.raises(WireError) as exc:  # only the reporter publishes its notice
        decode(encode(LostMsg(notice)), sender=peer.node_id)
    assert exc.value.reason == "spoofed"
    for bad in ({"seq": 0}, {"extra": 1}, {"by": 5}):
        with pytest.raises(WireError) as exc:
            decode(json.dumps({"type": "lost", "lost": {**notice.to_json(), **bad}}).encode(), sender=me.node_id)
        assert exc.value.reason == "malformed", bad


def test_versions_that_know_notices() -> None:
    assert [speaks_lost(v) for v in ("0.2.0", "0.10.1", "1.0.0", "0.2.0rc1")] == [True] * 4
    assert [speaks_lost(v) for v in ("0.1.0", "0.1.9", "", "dev", "0.2")] == [False] * 5


async def test_gossip_hands_a_notice_to_the_registry(me: Identity, peer: Identity, stranger: Identity) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(stranger, seq=3))
    link = MeshLink(me.node_id)
    gossip = Gossip(identity=me, inbound=FakeInbound(), outbox=link.outbox, directory=registry)
    receive(gossip, peer, [LostMsg(sign_lost(peer, stranger.node_id, 3, time.time()))])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert state(registry, stranger) is NodeState.DOWN


# -- the registry's rules ------------------------------------------------------------------------------------


async def test_a_notice_makes_a_node_down_from_its_arrival(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(peer, seq=5))
    await trio.sleep(30)
    assert not registry.on_lost(sign_lost(stranger, peer.node_id, 4, time.time()))  # it knew an older record
    assert state(registry, peer) is NodeState.READY
    assert registry.on_lost(sign_lost(stranger, peer.node_id, 5, time.time()))
    await trio.sleep(4)
    info = registry.get(peer.node_id)
    # down_for counts from the notice, not from the record 34 s ago: --reschedule-after is a grace from there
    assert info is not None and info.state is NodeState.DOWN and info.down_for == pytest.approx(4)
    assert not registry.on_lost(sign_lost(stranger, peer.node_id, 5, time.time()))  # down already
    registry.on_record(record_of(peer, seq=6))  # back (restarted, or it refuted)
    assert state(registry, peer) is NodeState.READY
    assert not registry.on_lost(sign_lost(stranger, me.node_id, 1, time.time()))  # about this node: never down
    assert state(registry, me) is NodeState.READY


async def test_a_node_connected_to_the_lost_node_keeps_it_up(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(peer, seq=5))
    registry.vouch = lambda node_id: node_id == peer.node_id
    assert not registry.on_lost(sign_lost(stranger, peer.node_id, 5, time.time()))
    await trio.sleep(ROLL_WINDOW + 1)  # nor does the roll call the notice opened make it down
    assert state(registry, peer) is NodeState.READY


async def test_a_notice_about_this_node_is_refuted_at_once(
    me: Identity, peer: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = Registry(node_id=me.node_id, name="me", heartbeat=2.0)
    sent: list[NodeRecord] = []

    async def publish(record: NodeRecord) -> None:
        sent.append(record)

    beat = Heartbeat(identity=me, registry=registry, publish=publish, interval=2.0, name="me")
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        await trio.sleep(10)
        assert len(sent) == 1  # unchanged: not again for a long while
        told = trio.current_time()
        registry.on_lost(sign_lost(peer, me.node_id, sent[0].seq, time.time()))
        with trio.fail_after(5):
            while len(sent) < 2:
                await trio.sleep(0.01)
        assert trio.current_time() - told < 0.1  # at once, not at the next tick
        assert sent[1].seq > sent[0].seq  # above the seq the notice names: every receiver holds it up again
        nursery.cancel_scope.cancel()


async def test_notices_are_bounded_per_reporter(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = registry_of(me)
    others = [fresh() for _ in range(NOTICE_BURST + 2)]
    for other in others:
        registry.on_record(record_of(other, seq=2))
    taken = [registry.on_lost(sign_lost(peer, other.node_id, 2, time.time())) for other in others]
    assert taken == [True] * NOTICE_BURST + [False, False] and registry.refused == 2
    assert registry.on_lost(sign_lost(stranger, others[-1].node_id, 2, time.time()))  # another reporter's own
    await trio.sleep(2.0)  # refilled: one more
    registry.on_record(record_of(others[0], seq=3))
    assert registry.on_lost(sign_lost(peer, others[0].node_id, 3, time.time()))


async def test_a_roll_call_finds_the_nodes_beyond_a_cut(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    """A notice names only the reporter's neighbours; the roll call it opens finds every node that does not answer
    within ROLL_WINDOW (down from the call's start), while each node that receives it republishes its record."""
    registry = registry_of(me)
    answers, silent, older = fresh(), fresh(), fresh()
    for node in (peer, stranger, answers, silent):
        registry.on_record(record_of(node, seq=2))
    registry.on_record(record_of(older, seq=2, version="0.1.0", heartbeat=60.0))  # it cannot answer: not judged
    await trio.sleep(60)
    began = trio.current_time()
    registry.on_lost(sign_lost(peer, stranger.node_id, 2, time.time()))
    assert registry.beat_by is not None and began <= registry.beat_by <= began + ROLL_JITTER  # this node answers
    await trio.sleep(1)
    registry.on_record(record_of(answers, seq=3))
    registry.on_record(record_of(peer, seq=3))
    await trio.sleep(ROLL_WINDOW - 2)
    assert state(registry, silent) is NodeState.READY  # the window is still open
    await trio.sleep(1.5)
    states = [state(registry, n) for n in (peer, answers, older, stranger, silent)]
    assert states == [NodeState.READY, NodeState.READY, NodeState.READY, NodeState.DOWN, NodeState.DOWN]
    info = registry.get(silent.node_id)
    assert info is not None and info.down_for == pytest.approx(ROLL_WINDOW + 0.5)  # since the call began


async def test_a_node_heard_again_after_an_outage_makes_this_node_republish(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    """After a partition heals, the side that held a node down hears it again: each such node republishes its
    own record, so the other side, which held it down too, hears it back at once (not a refresh later)."""
    registry = registry_of(me)
    registry.on_record(record_of(peer, seq=2))
    registry.on_lost(sign_lost(stranger, peer.node_id, 2, time.time()))
    registry.own(record_of(me, seq=2))  # this node answered the roll call
    await trio.sleep(30)
    assert registry.beat_by is None
    registry.on_record(record_of(peer, seq=3))
    assert registry.beat_by is not None and registry.beat_by <= trio.current_time() + ROLL_JITTER
    registry.own(record_of(me, seq=3))
    registry.on_record(record_of(peer, seq=4))  # up already: nothing asked
    assert registry.beat_by is None


async def test_catch_up_serves_a_lost_node_as_silent(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    """A node away when the notice flooded (restarting, cut off) learns the lost node's last record by catch-up:
    served as silent for 3 of its intervals, it is down there too, not up until its long refresh runs out."""
    registry = registry_of(me)
    registry.on_record(record_of(peer, seq=2))
    await trio.sleep(5)
    registry.on_lost(sign_lost(stranger, peer.node_id, 2, time.time()))
    served = dict((r.node_id, age) for r, age in registry.known(100)[0])
    assert served[peer.node_id] >= 3 * 180.0
    joiner = Registry(node_id=stranger.node_id, name="joiner", heartbeat=2.0)
    joiner.on_record(record_of(peer, seq=2), age=served[peer.node_id])
    assert state(joiner, peer) is NodeState.DOWN


# -- the version gate ----------------------------------------------------------------------------------------


async def test_records_are_spaced_long_only_once_every_node_up_knows_notices(
    me: Identity, peer: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = Registry(node_id=me.node_id, name="me", heartbeat=2.0)
    beat = Heartbeat(identity=me, registry=registry, publish=_ignore, interval=2.0, name="me")
    await beat.beat()
    assert registry.gate() and beat.spacing() == REFRESH
    others = [fresh() for _ in range(29)]
    for other in others:
        registry.on_record(record_of(other, heartbeat=REFRESH))
    assert beat.spacing() == REFRESH * 3  # scaled with the nodes up, as before
    registry.on_record(record_of(peer, version="0.1.0", heartbeat=2.0))  # an older node joins
    assert not registry.gate() and beat.spacing() == pytest.approx(2.0 * 31 / 10)
    await trio.sleep(4.5)
    assert beat._due()  # the last record promised a minute: the older node hears one at the pace it expects
    await trio.sleep(2.0)  # the older node falls silent (3 x 2 s): down, and out of the gate
    assert state(registry, peer) is NodeState.DOWN and registry.gate()


async def test_no_probe_while_an_older_node_is_up(autojump_clock: trio.testing.MockClock) -> None:
    probes: list[Any] = []

    async def probe(peer_id: Any, handshake: bool) -> bool:
        probes.append(peer_id)
        return False

    gate = [False]
    watch = LossWatch(probe=probe, report=_ignore, enabled=lambda: gate[0])
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        watch.opened("a")  # type: ignore[arg-type]
        await trio.sleep(LIVED_FOR + 1)
        watch.closed("a")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert probes == []
        gate[0] = True
        watch.opened("a")  # type: ignore[arg-type]
        await trio.sleep(LIVED_FOR + 1)
        watch.closed("a")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert probes == ["a"]
        nursery.cancel_scope.cancel()


# -- the loss watch ------------------------------------------------------------------------------------------


async def test_which_closes_are_probed_and_what_a_probe_says(autojump_clock: trio.testing.MockClock) -> None:
    alive = {"alive"}
    probes: list[str] = []
    reported: list[str] = []

    async def probe(peer_id: Any, handshake: bool) -> bool:
        probes.append(peer_id)
        if peer_id == "frozen":
            assert handshake  # its kernel accepts TCP: only a handshake tells
            await trio.sleep_forever()
        return peer_id in alive

    async def report(peer_id: Any) -> None:
        reported.append(peer_id)

    class FakeHost:
        closed: list[str] = []

        async def disconnect(self, peer_id: Any) -> None:
            self.closed.append(peer_id)

    host = FakeHost()
    watch = LossWatch(probe=probe, report=report, enabled=lambda: True)
    watch.guard(host)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        for peer in ("alive", "dead", "frozen", "young", "trimmed"):
            watch.opened(peer)  # type: ignore[arg-type]
        await trio.sleep(LIVED_FOR)
        watch.opened("young")  # type: ignore[arg-type]  # a second connection: the first one's age counts
        watch.unanswering("frozen")  # type: ignore[arg-type]  # liveness cut it: it stopped answering pings
        for peer in ("alive", "dead", "frozen"):
            watch.closed(peer)  # type: ignore[arg-type]
        await host.disconnect("trimmed")  # our own close (a trim, a ban, a probe's connection): no probe
        watch.closed("trimmed")  # type: ignore[arg-type]
        watch.closed("never opened")  # type: ignore[arg-type]
        await trio.sleep(PROBE_TIMEOUT + 1)
        assert sorted(probes) == ["alive", "dead", "frozen"] and host.closed == ["trimmed"]
        assert sorted(reported) == ["dead", "frozen"]  # the frozen one did not answer within PROBE_TIMEOUT
        watch.closed("young")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert probes[-1] == "young"
        # a full dial that it answered made a connection, which it may close again (a hub refusing us): no sign,
        # for a while (a TCP probe makes none, so nothing is held against a peer after one)
        for _ in range(2):
            watch.opened("alive")  # type: ignore[arg-type]
            watch.unanswering("alive")  # type: ignore[arg-type]
            watch.closed("alive")  # type: ignore[arg-type]
            await trio.testing.wait_all_tasks_blocked()
        assert probes.count("alive") == 2
        watch.opened("alive")  # type: ignore[arg-type]
        watch.closed("alive")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert probes.count("alive") == 2
        await trio.sleep(ANSWERED_FOR)
        watch.opened("alive")  # type: ignore[arg-type]
        watch.closed("alive")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert probes.count("alive") == 3
        nursery.cancel_scope.cancel()


async def _ignore(*args: Any) -> None:
    pass


async def test_a_missed_ping_to_a_peer_not_reachable_reports_it_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A cut link is noticed by the kernel only after 8 s; a missed ping to a peer whose kernel does not accept a
    TCP connection either reports it then. A busy peer (reachable) is not reported; nor anything with the gate shut."""
    reported: list[str] = []
    gate = [True]

    async def reaches(peer_id: Any) -> bool:
        if peer_id == "silent":
            await trio.sleep_forever()  # its SYNs dropped
        return peer_id == "busy"

    async def report(peer_id: Any) -> None:
        reported.append(peer_id)

    watch = LossWatch(probe=_never, report=report, enabled=lambda: gate[0], reaches=reaches)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        for peer in ("busy", "gone", "silent"):
            watch.suspect(peer)  # type: ignore[arg-type]
        await trio.sleep(PROBE_TIMEOUT + 1)
        assert sorted(reported) == ["gone", "silent"]
        gate[0] = False
        watch.suspect("other")  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(reported) == ["gone", "silent"]
        nursery.cancel_scope.cancel()


async def test_reaches_is_a_bare_tcp_connection_to_any_announced_address() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    spare = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    closed = spare.socket.getsockname()[1]
    await spare.aclose()  # nothing listens there now: refused at once
    live, dead = Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"), Multiaddr(f"/ip4/127.0.0.1/tcp/{closed}")
    with trio.fail_after(5):
        assert await tcp_reaches([dead, live], 1.0)
        assert not await tcp_reaches([dead], 1.0)
        assert await tcp_reaches([], 1.0)  # nothing to try: no verdict
    await listener.aclose()


async def _never(peer_id: Any, handshake: bool) -> bool:
    raise AssertionError("not dialled")
