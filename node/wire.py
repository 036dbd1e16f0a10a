"""The gossip wire: one JSON envelope per message on the topic ``jobs``, with a ``type``.

    {"type": "job", "job": {...Job.to_json()...}}               a new job, signed by its origin
    {"type": "execution", "execution": {...Execution...}}       a state change, signed and sent by the executing node
    {"type": "cancel", "cancel": {job_id, by, at, signature}}   stop the job everywhere, signed by the node asking

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
from typing import Any

from .errors import ValidationError
from .identity import verify
from .model import Cancel, Execution, Job

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


Envelope = JobMsg | ExecutionMsg | CancelMsg


def encode(msg: Envelope) -> bytes:
    body: dict[str, Any]
    if isinstance(msg, JobMsg):
        body = {"type": "job", "job": msg.job.to_json()}
    elif isinstance(msg, ExecutionMsg):
        body = {"type": "execution", "execution": msg.execution.to_json()}
    else:
        body = {"type": "cancel", "cancel": msg.cancel.to_json()}
    return json.dumps(body, separators=(",", ":")).encode()


def decode(data: bytes, *, sender: str | None, check_signature: bool = True) -> Envelope:
    """Parse and validate one envelope.

    Args:
        data: the message payload.
        sender: the peer ID that published it (pubsub's signed ``from``), or None when the envelope came
            through a relay such as catch-up; an execution must come from the node that ran it.
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
        execution = parse_execution(body.get("execution"), check_signature=False)
        if sender is not None and execution.node_id != sender:  # cheaper than the signature, and more telling
            raise WireError("spoofed", f"execution of {execution.node_id} sent by {sender}")
        _verify_execution(execution)
        return ExecutionMsg(execution)
    if kind == "cancel":
        return CancelMsg(parse_cancel(body.get("cancel")))
    raise WireError("malformed", f"unknown type {kind!r}")


def parse_job(data: Any, *, check_signature: bool = True) -> Job:
    """A job from its JSON form, verified against its origin's key.

    Raises:
        WireError: malformed, or the signature is not the origin's.
    """
    try:
        job = Job.from_json(data)
    except ValidationError as exc:
        raise WireError("malformed", _first(exc)) from exc
    if check_signature and not verify(job.origin, job.canonical_bytes(), job.signature):
        raise WireError("unverified", f"job {job.job_id} is not signed by {job.origin}")
    return job


def parse_execution(data: Any, *, check_signature: bool = True) -> Execution:
    """An execution from its JSON form, verified against the key of the node it describes.

    Raises:
        WireError: malformed, or not signed by ``node_id`` (a forged execution).
    """
    try:
        execution = Execution.from_json(data)
    except ValidationError as exc:
        raise WireError("malformed", _first(exc)) from exc
    if check_signature:
        _verify_execution(execution)
    return execution


def _verify_execution(execution: Execution) -> None:
    if not verify(execution.node_id, execution.canonical_bytes(), execution.signature):
        raise WireError("unverified", f"execution of job {execution.job_id} is not signed by {execution.node_id}")


def parse_cancel(data: Any) -> Cancel:
    """A cancel from its JSON form, verified against the key of the node that asks (``by``).

    Raises:
        WireError: malformed, or not signed by ``by``.
    """
    try:
        cancel = Cancel.from_json(data)
    except ValidationError as exc:
        raise WireError("malformed", _first(exc)) from exc
    if not verify(cancel.by, cancel.canonical_bytes(), cancel.signature):
        raise WireError("unverified", f"cancel of job {cancel.job_id} is not signed by {cancel.by}")
    return cancel


def _first(exc: ValidationError) -> str:
    first = exc.errors[0] if exc.errors else {"field": "?", "message": exc.message}
    more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
    return f"{first['field']} {first['message']}{more}"
