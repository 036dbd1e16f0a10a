"""The receive path: before a message is forwarded (``Gossip.validate`` then ``deliver``, both called by pubsub
before it forwards), each message is parsed and checked once, its sender resolved once per peer, and a message that
fails is neither delivered nor (pubsub's part) forwarded; after, ``consumer`` applies each job's messages in order
without holding one job behind another's write. Fast: the callbacks are fed directly, without a network."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

import node.gossip
from node.gossip import Gossip
from node.identity import Identity
from node.link import MeshLink
from node.model import Cancel, Job
from node.pubsub import DirectPubsub
from node.wire import CancelMsg, ExecutionMsg, JobMsg, encode

from .fakes import FakeInbound, pubsub_message, receive, signed_cancel, signed_execution, signed_job


def _gossip(me: Identity) -> Gossip:
    return Gossip(identity=me, inbound=FakeInbound(), outbox=MeshLink(me.node_id).outbox)


def _inbox(gossip: Gossip) -> list[tuple[str, object]]:
    out = []
    while True:
        try:
            out.append(gossip._inbox_recv.receive_nowait())
        except trio.WouldBlock:
            return out


def test_a_valid_message_is_delivered_once_with_its_sender(me: Identity, peer: Identity) -> None:
    gossip = _gossip(me)
    msg = pubsub_message(peer, encode(JobMsg(signed_job(peer, "j1"))))
    assert gossip.validate(peer.peer_id, msg)
    gossip.deliver(msg)
    gossip.deliver(msg)  # the parsed value was handed over: a second delivery finds nothing
    [(sender, envelope)] = _inbox(gossip)
    assert sender == peer.node_id
    assert isinstance(envelope, JobMsg) and envelope.job.job_id == "j1"


def test_an_invalid_message_is_never_delivered(me: Identity, peer: Identity) -> None:
    gossip = _gossip(me)
    forged = signed_job(peer, "j1")
    msg = pubsub_message(peer, encode(JobMsg(forged)).replace(b'"busybox"', b'"evil"'))  # signature no longer fits
    assert not gossip.validate(peer.peer_id, msg)
    gossip.deliver(msg)  # pubsub would not call it; if it did, nothing unvalidated gets through
    assert _inbox(gossip) == []
    assert gossip.stats.dropped == {"unverified": 1}


def test_our_own_messages_pass_without_being_parsed_or_delivered(me: Identity) -> None:
    gossip = _gossip(me)
    msg = pubsub_message(me, b"not even JSON")  # pubsub's own publish: already ours, nothing to check
    assert gossip.validate(me.peer_id, msg)
    gossip.deliver(msg)
    assert _inbox(gossip) == []
    assert gossip.stats.dropped == {}


def test_a_sender_is_resolved_once(me: Identity, peer: Identity) -> None:
    """Turning the ``from`` bytes into a node ID costs about as much as the schema check: done once per peer."""
    gossip = _gossip(me)
    node.gossip._sender.cache_clear()
    for seqno in range(5):
        msg = pubsub_message(peer, encode(JobMsg(signed_job(peer, f"j{seqno}"))), seqno)
        assert gossip.validate(peer.peer_id, msg)
        gossip.deliver(msg)
    assert [sender for sender, _ in _inbox(gossip)] == [peer.node_id] * 5
    assert node.gossip._sender.cache_info().misses == 1


class SlowInbound(FakeInbound):
    """A ``FakeInbound`` whose job writes wait until ``release`` is set, as a write behind a slow commit does."""

    def __init__(self, slow: set[str]) -> None:
        super().__init__()
        self.slow = slow
        self.release = trio.Event()
        self.started: list[str] = []

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        self.started.append(job.job_id)
        if job.job_id in self.slow:
            await self.release.wait()
        return await super().on_job(job, cancel=cancel, gossip=gossip)


@contextlib.asynccontextmanager
async def j1_writing(me: Identity, peer: Identity) -> AsyncIterator[tuple[Gossip, SlowInbound, trio.Nursery]]:
    """A consumer running, with job j1 received and its write waiting on ``release``."""
    inbound = SlowInbound(slow={"j1"})
    gossip = Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            receive(gossip, peer, [JobMsg(signed_job(peer, "j1"))])
            await trio.testing.wait_all_tasks_blocked()
            yield gossip, inbound, nursery


async def test_a_job_is_not_held_behind_another_jobs_slow_write(me: Identity, peer: Identity) -> None:
    """j2 arrives while j1's write waits on the store: j2 is stored meanwhile, not after j1's commit (it was)."""
    async with j1_writing(me, peer) as (gossip, inbound, nursery):
        receive(gossip, peer, [JobMsg(signed_job(peer, "j2"))])
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == [("job", "j2")]
        inbound.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == [("job", "j2"), ("job", "j1")]
        nursery.cancel_scope.cancel()


async def test_messages_about_one_job_keep_their_order(me: Identity, peer: Identity) -> None:
    """A cancel that arrives while its job's write waits is applied after it, never before."""
    async with j1_writing(me, peer) as (gossip, inbound, nursery):
        receive(gossip, peer, [CancelMsg(signed_cancel(peer, "j1")), ExecutionMsg(signed_execution(peer, "j1"))])
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == []
        inbound.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == [("job", "j1"), ("cancel", "j1"), ("execution", "j1")]
        assert gossip.stats.messages_in == 3
        nursery.cancel_scope.cancel()


async def test_at_most_pending_messages_are_applied_at_once(
    me: Identity, peer: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest wait in the (bounded) inbox until a slot frees."""
    monkeypatch.setattr(node.gossip, "PENDING", 2)
    inbound = SlowInbound(slow={"j0", "j1", "j2"})
    gossip = Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            receive(gossip, peer, [JobMsg(signed_job(peer, f"j{i}")) for i in range(4)])
            await trio.testing.wait_all_tasks_blocked()
            assert inbound.started == ["j0", "j1"]
            inbound.release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert sorted(inbound.started) == ["j0", "j1", "j2", "j3"]
            assert len(inbound.calls) == 4
            nursery.cancel_scope.cancel()


async def _other_task_ran(nursery: trio.Nursery) -> list[str]:
    """A task made ready now: it runs at the next scheduling round, so ``ran`` stays empty until one comes."""
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    nursery.start_soon(other)
    return ran


async def test_a_forwarded_job_is_applied_in_the_receiving_task_without_a_scheduling_round(
    me: Identity, peer: Identity
) -> None:
    """``forwarded`` runs in pubsub's task for the message once it is forwarded: the job reaches the node there and
    then, not through the inbox, the consumer and a lane task (a scheduling round each, behind every ready task)."""
    inbound = FakeInbound()
    gossip = Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)
    msg = pubsub_message(peer, encode(JobMsg(signed_job(peer, "j1"))))
    assert gossip.validate(peer.peer_id, msg)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            ran = await _other_task_ran(nursery)
            await gossip.forwarded(msg)
            assert inbound.calls == [("job", "j1")] and ran == []
    assert _inbox(gossip) == [] and gossip.stats.messages_in == 1 and gossip._lanes == {}
    await gossip.forwarded(msg)  # handed over once: a second call finds nothing
    assert inbound.calls == [("job", "j1")]


async def test_a_forwarded_message_queues_behind_what_waits_in_the_inbox(me: Identity, peer: Identity) -> None:
    """Order is kept: with the inbox holding a message, one forwarded after it waits behind it."""
    inbound = FakeInbound()
    gossip = Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)
    receive(gossip, peer, [JobMsg(signed_job(peer, "j1"))])
    later = pubsub_message(peer, encode(CancelMsg(signed_cancel(peer, "j1"))), seqno=7)
    assert gossip.validate(peer.peer_id, later)
    await gossip.forwarded(later)
    assert inbound.calls == []
    assert [type(envelope) for _, envelope in _inbox(gossip)] == [JobMsg, CancelMsg]


async def test_a_forwarded_message_about_a_job_being_applied_follows_it(me: Identity, peer: Identity) -> None:
    async with j1_writing(me, peer) as (gossip, inbound, nursery):
        cancel = pubsub_message(peer, encode(CancelMsg(signed_cancel(peer, "j1"))), seqno=7)
        assert gossip.validate(peer.peer_id, cancel)
        await gossip.forwarded(cancel)  # queued: j1's write still waits
        other = pubsub_message(peer, encode(JobMsg(signed_job(peer, "j2"))), seqno=8)
        assert gossip.validate(peer.peer_id, other)
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == []
        inbound.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert inbound.calls == [("job", "j1"), ("cancel", "j1")]
        await gossip.forwarded(other)  # nothing waits any more: applied at once
        assert inbound.calls[-1] == ("job", "j2")
        nursery.cancel_scope.cancel()


async def test_forwarded_messages_beyond_pending_wait_in_the_inbox(
    me: Identity, peer: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node.gossip, "PENDING", 1)
    inbound = SlowInbound(slow={"j0"})
    gossip = Gossip(identity=me, inbound=inbound, outbox=MeshLink(me.node_id).outbox)
    first, second = (pubsub_message(peer, encode(JobMsg(signed_job(peer, f"j{i}"))), seqno=i) for i in range(2))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for msg in (first, second):
                assert gossip.validate(peer.peer_id, msg)
            nursery.start_soon(gossip.forwarded, first)  # j0's write waits: its slot stays taken
            await trio.testing.wait_all_tasks_blocked()
            await gossip.forwarded(second)
            assert inbound.started == ["j0"] and len(_inbox(gossip)) == 1
            inbound.release.set()
    assert inbound.calls == [("job", "j0")]


def _direct_pubsub(monkeypatch: pytest.MonkeyPatch, steps: list[str], fail: bool = False) -> DirectPubsub:
    """A ``DirectPubsub`` whose library part only delivers and then forwards (or fails to), noting each step."""

    async def library_push_msg(self: DirectPubsub, forwarder: object, msg: rpc_pb2.Message) -> None:
        self.notify_subscriptions(msg)  # the library delivers before it forwards
        if fail:
            raise RuntimeError("router failed")
        steps.append("forward")

    monkeypatch.setattr(Pubsub, "push_msg", library_push_msg)
    pubsub = object.__new__(DirectPubsub)  # nothing else of the library is used
    pubsub.deliver = lambda msg: steps.append("deliver")  # type: ignore[method-assign]

    async def forwarded(msg: rpc_pb2.Message) -> None:
        steps.append("forwarded")

    pubsub.forwarded = forwarded
    return pubsub


async def test_pubsub_hands_a_message_over_once_forwarded(monkeypatch: pytest.MonkeyPatch, peer: Identity) -> None:
    steps: list[str] = []
    pubsub = _direct_pubsub(monkeypatch, steps)
    await pubsub.push_msg(peer.peer_id, pubsub_message(peer, b"{}"))
    assert steps == ["forward", "forwarded"]


async def test_a_message_pubsub_failed_to_forward_is_delivered_as_before(
    monkeypatch: pytest.MonkeyPatch, peer: Identity
) -> None:
    steps: list[str] = []
    pubsub = _direct_pubsub(monkeypatch, steps, fail=True)
    with pytest.raises(RuntimeError):
        await pubsub.push_msg(peer.peer_id, pubsub_message(peer, b"{}"))
    assert steps == ["deliver"]


async def test_without_forwarded_pubsub_delivers_in_the_librarys_order(
    monkeypatch: pytest.MonkeyPatch, peer: Identity
) -> None:
    """The bare peers of benchmarks/overhead.py build the same ``Host`` and set only ``deliver``."""
    steps: list[str] = []
    pubsub = _direct_pubsub(monkeypatch, steps)
    pubsub.forwarded = None
    await pubsub.push_msg(peer.peer_id, pubsub_message(peer, b"{}"))
    assert steps == ["deliver", "forward"]
