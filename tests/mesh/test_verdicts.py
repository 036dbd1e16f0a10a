"""The liveness verdicts on their own (``node/verdicts.py``): since when a node is down, what catch-up serves of
a node reported lost, the roll call's window and the per-reporter allowance. Plain numbers for time: these rules
read no clock; tests/mesh/test_lost.py runs them through the registry on trio's mock clock."""

from __future__ import annotations

import time

from node.identity import Identity
from node.noderecord import NodeRecord
from node.verdicts import DOWN_AFTER, NOTICE_BURST, NOTICE_RATE, ROLL_JITTER, ROLL_WINDOW, Allowance, Heard, RollCall


def heard(peer: Identity, at: float, *, heartbeat: float = 10.0) -> Heard:
    record = NodeRecord(node_id=peer.node_id, name="p", seq=1, at=time.time(), heartbeat=heartbeat)
    return Heard(record=record, heard=at, seen_at=time.time())


def test_down_since_is_the_earliest_of_silence_and_a_verdict(peer: Identity) -> None:
    entry = heard(peer, 100.0)
    assert entry.down_since(100.0 + DOWN_AFTER * 10 - 0.1) is None  # not silent long enough
    assert entry.down_since(100.0 + DOWN_AFTER * 10) == 100.0  # silent: down since last heard
    entry.lost_at = 105.0
    assert entry.down_since(106.0) == 105.0  # reported lost before silence ran out
    entry.lost_at = 90.0
    assert entry.down_since(200.0) == 90.0  # a roll call that began before it was last heard counts first
    loaded = Heard(record=entry.record, heard=70.0, seen_at=0.0, unheard_since=100.0)  # from the store at start
    assert loaded.down_since(100.0) == 100.0


def test_a_node_reported_lost_is_served_as_silent(peer: Identity) -> None:
    entry = heard(peer, 100.0)
    assert entry.served_age(101.0) == 1.0
    entry.lost_at = 101.0
    assert entry.served_age(101.0) == DOWN_AFTER * 10  # a receiver that missed the notice holds it down too
    assert entry.served_age(200.0) == 100.0


def test_a_roll_call_keeps_its_start_and_closes_once_its_window_passed(peer: Identity) -> None:
    call = RollCall()
    assert call.close(1000.0) is None  # none open
    call.join(10.0)
    call.join(12.0)  # joins the open one
    assert call.close(10.0 + ROLL_WINDOW - 0.1) is None
    assert call.close(10.0 + ROLL_WINDOW) == 10.0
    assert call.close(10.0 + ROLL_WINDOW) is None  # closed once
    assert heard(peer, 10.0 - ROLL_JITTER - 0.1).missed(10.0)
    assert not heard(peer, 10.0 - ROLL_JITTER).missed(10.0)  # heard just before the call: it answered


def test_the_allowance_is_a_burst_then_a_rate_per_reporter_for_a_bounded_number_of_reporters() -> None:
    allowance = Allowance(limit=2)
    assert [allowance.take("a", 0.0) for _ in range(NOTICE_BURST + 1)] == [True] * NOTICE_BURST + [False]
    assert allowance.take("b", 0.0)  # another reporter has its own
    assert not allowance.take("a", 0.5 / NOTICE_RATE)  # half a notice refilled
    assert allowance.take("a", 1.0 / NOTICE_RATE)
    allowance.take("c", 3.0)  # a third reporter: the least recently heard ("b") is forgotten
    assert [allowance.take("b", 3.0) for _ in range(NOTICE_BURST)] == [True] * NOTICE_BURST  # full again
