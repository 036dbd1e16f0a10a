"""Nothing one peer sends may stop the node: an exception while validating, delivering or applying a gossip
message, or while merging one entry of a catch-up page, costs that message or entry only, counted as dropped
under ``error``. Fast: the gossip and catch-up functions are fed directly, with fakes, without a network."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import node.gossip
from node.gossip import Gossip
from node.identity import Identity
from node.link import MeshLink
from node.model import State
from node.store import Store
from node.sync import Sync
from node.wire import CancelMsg, ExecutionMsg, JobMsg, encode

from .fakes import FakeInbound, pubsub_message, receive, signed_cancel, signed_execution, signed_job


def _gossip(me: Identity, inbound: FakeInbound) -> Gossip:
    return Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)


def test_a_message_that_breaks_the_parser_is_malformed(me: Identity, peer: Identity) -> None:
    """Deeply nested JSON under the size limit makes ``json.loads`` raise RecursionError, not ValueError."""
    gossip = _gossip(me, FakeInbound())
    assert not gossip.validate(peer.peer_id, pubsub_message(peer, b"[" * 200_000))
    assert not gossip.validate(peer.peer_id, pubsub_message(peer, b"[" * 200_000, seqno=2))
    assert gossip.stats.dropped == {"malformed": 2}


def test_any_exception_in_the_validator_is_dropped_and_counted(
    me: Identity, peer: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the decoder did not foresee rejects that message only, counted as ``error``."""
    gossip = _gossip(me, FakeInbound())

    def explode(data: bytes, **_: object) -> object:
        raise RuntimeError("a case nobody foresaw")

    monkeypatch.setattr(node.gossip, "decode", explode)
    assert not gossip.validate(peer.peer_id, pubsub_message(peer, b"{}"))
    assert not gossip.validate(peer.peer_id, pubsub_message(peer, b"{}", seqno=2))
    assert gossip.stats.dropped == {"error": 2}
    monkeypatch.undo()  # and the next good message still passes
    assert gossip.validate(peer.peer_id, pubsub_message(peer, encode(CancelMsg(signed_cancel(peer, "j1"))), seqno=3))


async def test_an_exception_while_applying_costs_that_message_only(me: Identity, peer: Identity) -> None:
    """E.g. SQLite's OverflowError for an integer it cannot store: the message is dropped, the rest applied."""
    inbound = FakeInbound(fail={"bad": OverflowError("Python int too large to convert to SQLite INTEGER")})
    gossip = _gossip(me, inbound)
    with trio.fail_after(5):
        await gossip.apply(
            [
                (peer.node_id, JobMsg(signed_job(peer, "bad"))),
                (peer.node_id, CancelMsg(signed_cancel(peer, "bad"))),
            ]
        )
        await gossip.apply([(peer.node_id, JobMsg(signed_job(peer, "good")))])
    assert inbound.calls == [("job", "good")]
    assert gossip.stats.dropped == {"error": 2}


async def test_the_consumer_survives_a_failing_batch(me: Identity, peer: Identity) -> None:
    inbound = FakeInbound(fail={"bad": RuntimeError("boom")})
    gossip = _gossip(me, inbound)
    messages = [
        JobMsg(signed_job(peer, "bad")),
        ExecutionMsg(signed_execution(peer, "good", state=State.RUNNING)),
    ]
    receive(gossip, peer, messages)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert inbound.calls == [("execution", "good")]
    assert gossip.stats.messages_in == 2 and gossip.stats.dropped == {"error": 1}


async def test_a_catch_up_entry_that_cannot_be_merged_is_dropped_and_counted(
    me: Identity, peer: Identity, store: Store
) -> None:
    inbound = FakeInbound(fail={"bad": OverflowError("Python int too large to convert to SQLite INTEGER")})
    sync = Sync(store=store, inbound=inbound, identity=me)
    page = {
        "jobs": [
            {"job": signed_job(peer, "bad").to_json(), "cancelled": False},
            {"job": signed_job(peer, "good").to_json(), "cancelled": False},
            {"job": "not a job", "cancelled": False},
        ],
        "executions": [
            signed_execution(peer, "bad", state=State.RUNNING).to_json(),
            signed_execution(peer, "good", state=State.RUNNING).to_json(),
        ],
        "upto": 7,
        "head": 7,
        "more": False,
    }
    with trio.fail_after(5):
        assert await sync.apply_page(page, 0) == (7, False)
    assert sorted(inbound.calls) == [("execution", "good"), ("job", "good")]
    assert sync.stats.dropped == {"error": 2, "malformed": 1}
    assert sync.stats.jobs == 1 and sync.stats.executions == 1
