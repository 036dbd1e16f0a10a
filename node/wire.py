"""The gossip wire: one JSON envelope per message on the topic ``jobs``, with a ``type``.

    {"type": "job", "job": {...Job.to_json()...}}               a new job, signed by its origin
    {"type": "execution", "execution": {...Execution...}}       a state change, signed and sent by the executing node
    {"type": "cancel", "cancel": {job_id, by, at, signature}}   stop the job everywhere, signed by the node asking
    {"type": "node", "node": {...NodeRecord...}}                a node's heartbeat, signed and sent by that node
    {"type": "drain", "drain": {node_id, draining, by, ...}}    (un)drain a node, signed and sent by the node asking
    {"type": "allocation", "allocation": {...Allocation...}}    where a replicas job runs, signed by its writer
    {"type": "lost", "lost": {node_id, seq, by, at, signature}}  a node lost, signed and sent by the node that says so

Decoding does no I/O and trusts nothing: every envelope is size-checked, parsed, checked against the
model's schemas (``node/schema.py``, the same checker as RPC params) and signature-checked here (a job by its
origin, an execution by its node, a cancel by the node that asks), so the mesh only ever sees well-formed,
authentic values. Whether the signer may do what it asks is ``node/trust.py``'s rule, applied when merging.
Every message is idempotent; the receiver merges by job ID and execution version, so duplicates and
reordering change nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from .allocation import Allocation
from .errors import ValidationError
from .identity import verify
from .lost import LostNotice
from .model import Cancel, Execution, Job
from .noderecord import DrainOrder, NodeRecord
from .signed import Signed

TOPIC = "jobs"
MAX_MESSAGE_BYTES = 1_000_000
"""Larger envelopes are dropped unread. A Create body is at most 1 MiB including its JSON-RPC wrapper, so a
real job stays under this; a 1 MiB message cannot be one."""


class WireError(Exception):
    """A message that is not a valid envelope; ``reason`` is a short counter label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class JobMsg:
    job: Job


@dataclass(frozen=True)
class ExecutionMsg:
    execution: Execution


@dataclass(frozen=True)
class CancelMsg:
    cancel: Cancel

    @property
    def job_id(self) -> str:
        return self.cancel.job_id


@dataclass(frozen=True)
class NodeMsg:
    record: NodeRecord


@dataclass(frozen=True)
class DrainMsg:
    order: DrainOrder


@dataclass(frozen=True)
class AllocationMsg:
    allocation: Allocation


@dataclass(frozen=True)
class LostMsg:
    notice: LostNotice


Envelope = JobMsg | ExecutionMsg | CancelMsg | NodeMsg | DrainMsg | AllocationMsg | LostMsg


def encode(msg: Envelope) -> bytes:
    body: dict[str, Any]
    if isinstance(msg, JobMsg):
        body = {"type": "job", "job": msg.job.to_json()}
    elif isinstance(msg, ExecutionMsg):
        body = {"type": "execution", "execution": msg.execution.to_json()}
    elif isinstance(msg, NodeMsg):
        body = {"type": "node", "node": msg.record.to_json()}
    elif isinstance(msg, DrainMsg):
        body = {"type": "drain", "drain": msg.order.to_json()}
    elif isinstance(msg, AllocationMsg):
        body = {"type": "allocation", "allocation": msg.allocation.to_json()}
    elif isinstance(msg, LostMsg):
        body = {"type": "lost", "lost": msg.notice.to_json()}
    else:
        body = {"type": "cancel", "cancel": msg.cancel.to_json()}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes, *, sender: str | None, check_signature: bool = True) -> Envelope:
    """Parse and validate one envelope.

    Args:
        data: the message payload.
        sender: the peer ID that published it (pubsub's signed ``from``), or None when the envelope came
            through a relay such as catch-up; an execution must come from the node that ran it. A node record
            or drain order must come from its signer, and then pubsub's signature over the message (checked
            before this, ``Pubsub(strict_signing=True)``) already proved who wrote it: its own signature is not
            checked a second time here (``parse_node_record``).
        check_signature: verify a job's origin signature (skip only for data already verified).

    Raises:
        WireError: oversized, not JSON, wrong types, bad signature or spoofed sender.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(data)} bytes")
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # deep nesting under the size limit
        raise WireError("malformed", "not JSON") from exc
    if not isinstance(body, dict):
        raise WireError("malformed", "not an object")
    kind = body.get("type")
    if kind == "job":
        return JobMsg(parse_job(body.get("job"), check_signature=check_signature))
    if kind == "execution":
        return ExecutionMsg(parse_execution(body.get("execution"), sender=sender))
    if kind == "cancel":
        return CancelMsg(parse_cancel(body.get("cancel")))
    if kind == "node":
        return NodeMsg(parse_node_record(body.get("node"), sender=sender, by_sender=sender is not None))
    if kind == "drain":
        return DrainMsg(parse_drain(body.get("drain"), sender=sender, by_sender=sender is not None))
    if kind == "allocation":
        return AllocationMsg(parse_allocation(body.get("allocation")))
    if kind == "lost":
        return LostMsg(parse_lost(body.get("lost"), sender=sender, by_sender=sender is not None))
    raise WireError("malformed", f"unknown type {kind!r}")


# -- one record from its JSON form: each raises ``WireError`` (malformed, spoofed or unverified, see ``_parse``) --


def parse_job(data: Any, *, check_signature: bool = True) -> Job:
    """A job from its JSON form, verified against its origin's key (skip only for data verified before)."""
    return _parse(Job, data, "job {0.job_id}", check_signature=check_signature)


def parse_execution(data: Any, *, check_signature: bool = True, sender: str | None = None) -> Execution:
    """An execution from its JSON form, verified against the key of the node it describes, which must be
    ``sender`` when known (gossip)."""
    return _parse(Execution, data, "execution of job {0.job_id}", check_signature=check_signature, sender=sender)


def parse_cancel(data: Any) -> Cancel:
    """A cancel from its JSON form, verified against the key of the node that asks (``by``)."""
    return _parse(Cancel, data, "cancel of job {0.job_id}")


_NODE_RECORD = "record of node {0.node_id}"


def parse_node_record(
    data: Any, *, sender: str | None = None, by_sender: bool = False, check_signature: bool = True
) -> NodeRecord:
    """A node record from its JSON form, verified against the key of the node it describes, which must be
    ``sender`` when known (gossip).

    ``by_sender``: ``sender`` signed the message that carried it (pubsub's own signature, already verified), so
    once the record is found to be the sender's own, its signature is not checked again. Each record reached
    every node once per gossip neighbour, and was verified twice: by pubsub and here. A record whose own
    signature is bad can then only come from its node itself; it is refused wherever it is relayed (catch-up
    verifies every record it would keep, ``by_sender`` False), so only that node's standing suffers.
    ``check_signature``: False only to read what a record is about before deciding whether to verify it.
    """
    return _parse(NodeRecord, data, _NODE_RECORD, sender=sender, by_sender=by_sender, check_signature=check_signature)


def verify_node_record(record: NodeRecord) -> NodeRecord:
    """``record`` (read with ``check_signature=False``) once verified against its node's key.

    Raises:
        WireError: ``unverified``.
    """
    return _verified(record, _NODE_RECORD)


def parse_drain(data: Any, *, sender: str | None = None, by_sender: bool = False) -> DrainOrder:
    """A drain order from its JSON form, verified against the key of the node that gave it (``by``), which must
    be ``sender`` when known (gossip); ``by_sender``: as for ``parse_node_record``, pubsub verified that."""
    return _parse(DrainOrder, data, "drain order of node {0.node_id}", sender=sender, by_sender=by_sender)


def parse_lost(data: Any, *, sender: str | None = None, by_sender: bool = False) -> LostNotice:
    """A lost notice from its JSON form, verified against the key of the node that says so (``by``), which must
    be ``sender`` when known (gossip); ``by_sender``: as for ``parse_node_record``, pubsub verified that."""
    return _parse(LostNotice, data, "lost notice of node {0.node_id}", sender=sender, by_sender=by_sender)


def parse_allocation(data: Any) -> Allocation:
    """An allocation from its JSON form, verified against the key of the node that wrote it (``by``); any node
    may relay it (catch-up serves what it merged)."""
    return _parse(Allocation, data, "allocation of job {0.job_id}")


_R = TypeVar("_R", bound=Signed)


def _parse(
    kind: type[_R],
    data: Any,
    what: str,
    *,
    sender: str | None = None,
    check_signature: bool = True,
    by_sender: bool = False,
) -> _R:
    """``kind.from_json(data)``, then checked in the cheapest order: the schema, the sender (more telling than a
    bad signature, and free), the signature by the record's signer.

    Args:
        kind: the record's class.
        data: its JSON form, untrusted.
        what: the record in an error's words, a ``str.format`` template of the record (``{0.job_id}``).
        sender: the peer that published it (pubsub's signed ``from``), which must be the signer; None when it
            came through a relay such as catch-up.
        check_signature: False only for data verified before.
        by_sender: ``sender`` signed the message that carried it (pubsub verified that), so a record found to be
            the sender's own is not verified again (``parse_node_record``); without a sender, it is.

    Raises:
        WireError: ``malformed``, ``spoofed`` (sent by another node than its signer), or ``unverified``.
    """
    try:
        record = kind.from_json(data)
    except ValidationError as exc:
        raise WireError("malformed", _first(exc)) from exc
    signer = record.signer
    if sender is not None and signer != sender:
        raise WireError("spoofed", f"{what.format(record)} by {signer} sent by {sender}")
    if by_sender and sender is not None:  # the sender's own record, and pubsub verified the sender's signature
        check_signature = False
    return _verified(record, what) if check_signature else record


def _verified(record: _R, what: str) -> _R:
    if not verify(record.signer, record.canonical_bytes(), record.signature):
        raise WireError("unverified", f"{what.format(record)} is not signed by {record.signer}")
    return record


def _first(exc: ValidationError) -> str:
    first = exc.errors[0] if exc.errors else {"field": "?", "message": exc.message}
    more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
    return f"{first['field']} {first['message']}{more}"
