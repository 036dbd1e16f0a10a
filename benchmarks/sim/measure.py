"""Costs measured on the real code, which the formulas take as inputs: a node record on the wire and the CPU its
first copy costs a receiver, a catch-up answer's size, the catch-up rate between two real stores; and the
anti-entropy rounds the real scheduler (``Catchup.tick``) starts on each node's connections."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX, signature_validator

from node import __version__
from node.catchup import Catchup
from node.identity import Identity
from node.model import Execution, Job, JobSpec
from node.noderecord import Capacity, NodeRecord, sign_record
from node.registry import Registry
from node.store import Store
from node.sync import Sync
from node.trust import sign_execution
from node.wire import TOPIC, NodeMsg, decode, encode
from tests.scale.helpers import side

from .params import new_identity

__all__ = ["RecordCost", "catch_up", "fill", "periodic_rounds", "pubsub_message", "record_cost", "record_of"]


def record_of(identity: Identity, index: int, interval: float) -> NodeRecord:
    """A node record as ``Heartbeat.record`` makes one on a LAN: one address, capacity known, signed."""
    record = NodeRecord(
        node_id=identity.node_id, name=f"node-{index:04d}", capacity=Capacity(cpus=4.0, memory=8 << 30),
        version=__version__, addresses=(f"/ip4/10.0.{index // 250}.{index % 250 + 2}/tcp/4001/p2p/{identity.node_id}",),
        rpc_url=f"http://10.0.{index // 250}.{index % 250 + 2}:8080/jrpc", heartbeat=interval, seq=1, at=time.time(),
    )  # fmt: skip
    return sign_record(identity, record)


def pubsub_message(identity: Identity, data: bytes, seqno: int) -> rpc_pb2.Message:
    """``data`` as pubsub publishes it: signed ``from``, seqno, topic, key and signature."""
    msg = rpc_pb2.Message(data=data, topicIDs=[TOPIC], from_id=identity.peer_id.to_bytes(),
                          seqno=seqno.to_bytes(8, "big"))  # fmt: skip
    msg.signature = identity.key_pair.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = identity.key_pair.public_key.serialize()
    return msg


@dataclass(frozen=True)
class RecordCost:
    wire_bytes: float
    """A node record's pubsub message, as sent to one peer."""
    seconds: float
    """CPU to take in its first copy: pubsub's signature check, our decode (schema and signature), the registry."""


async def record_cost(interval: float, sample: int = 200, repeat: int = 3) -> RecordCost:
    """Measured on ``sample`` records of distinct nodes, the best of ``repeat`` passes (other work on the machine
    only adds to it); trio is running: the registry reads its clock."""
    identities = [new_identity() for _ in range(sample)]
    messages = [pubsub_message(i, encode(NodeMsg(record_of(i, n, interval))), 1) for n, i in enumerate(identities)]
    best = float("inf")
    for _ in range(repeat):
        registry = Registry(node_id=new_identity().node_id, heartbeat=interval)
        began = time.perf_counter()
        for identity, msg in zip(identities, messages, strict=True):
            assert signature_validator(msg)
            envelope = decode(msg.data, sender=identity.node_id)
            assert isinstance(envelope, NodeMsg) and registry.on_record(envelope.record)
        best = min(best, (time.perf_counter() - began) / sample)
    return RecordCost(wire_bytes=sum(m.ByteSize() for m in messages) / sample, seconds=best)


async def fill(store: Store, origin: Identity, runners: Sequence[Identity], jobs: int, template: Execution) -> int:
    """``jobs`` finished jobs by ``origin``, each with an execution by every one of ``runners``; returns the rows."""
    batch = []
    for _ in range(jobs):
        job = Job(job_id=str(uuid.uuid4()), spec=JobSpec(image="busybox", arguments=("true",)), origin=origin.node_id,
                  created_at=time.time())  # fmt: skip
        batch.append(replace(job, signature=origin.sign(job.canonical_bytes())))
    await store.add_jobs([(job, None) for job in batch], durable=False)
    executions = [
        sign_execution(r, replace(template, job_id=job.job_id, node_id=r.node_id, signature=""))
        for job in batch for r in runners
    ]  # fmt: skip
    await store.put_executions(executions, durable=False)
    return jobs * (1 + len(runners))


async def catch_up(sender: Store, path: Path) -> tuple[float, int]:
    """A fresh node (store at ``path``) catching up from ``sender`` with the real ``Sync`` on both ends, the
    request a call; returns the seconds it took and the rows it stored."""
    sender_sync = Sync(store=sender, inbound=_NoInbound(), identity=new_identity())  # type: ignore[arg-type]
    async with side(path, new_identity()) as joiner:
        store, sync = joiner.store, joiner.sync

        async def request(body: dict[str, Any]) -> Any:
            return await sender_sync.serve(body)

        began = time.perf_counter()
        await sync.catch_up(sender_sync.identity.node_id, request)
        seconds = time.perf_counter() - began
        rows = await store.query(
            lambda conn: conn.execute(
                "SELECT (SELECT COUNT(*) FROM jobs) + (SELECT COUNT(*) FROM executions) "
                "+ (SELECT COUNT(*) FROM allocations)"
            ).fetchone()[0]
        )
    return seconds, int(rows)


class _NoInbound:
    """The sender's side only serves."""

    async def caught_up(self) -> None:
        await trio.lowlevel.checkpoint()


class _Peers:
    """What ``Catchup.tick`` asks of a host: its connected peers (here node indexes)."""

    def __init__(self, peers: list[int]) -> None:
        self.host = self
        self._peers = peers

    def get_connected_peers(self) -> list[int]:
        return self._peers


def periodic_rounds(conns: list[set[int]], rng: random.Random, fanout: int) -> tuple[list[int], list[int]] | None:
    """One anti-entropy interval scheduled by the real ``Catchup.tick`` of every node, asking ``fanout`` peers: the
    rounds each node asks for and serves. None if this tree's ``Catchup`` has no ``tick`` (then the formula's
    model, ``Topology.anti_entropy``, stands in)."""
    if not hasattr(Catchup, "tick"):
        return None
    asked, served = [0] * len(conns), [0] * len(conns)
    for i, peers in enumerate(conns):
        catchup = Catchup(sync=None, peers=list, meet=lambda _: None, fanout=fanout, rng=random.Random(rng.random()))  # type: ignore[arg-type]
        chosen = catchup.tick(_Peers(sorted(peers)))  # type: ignore[arg-type]
        asked[i] = len(chosen)
        for p in chosen:
            served[p] += 1  # type: ignore[call-overload]
    return asked, served
