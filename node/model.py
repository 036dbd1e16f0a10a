"""The records every node keeps and forwards: a job a node accepted (Job), what happened when a node ran it
(Execution), a signed Cancel, and a job's status derived from its executions.

Plain data with JSON round trips and no I/O. Each record's rules are written once, as a JSON schema
(``JOB_SCHEMA``, ``EXECUTION_SCHEMA``, ``CANCEL_SCHEMA``) checked by ``node/schema.py``, so gossip and catch-up
accept exactly what these say. ``from_json`` checks and builds; ``from_valid`` only builds, for values checked
before (the store's rows). The bytes a record signs, and signing it, are ``node/signed.py``'s. What a user asks
for, the JobSpec and its field table, is in ``node/spec.py``; its names are re-exported here, where most of the
code looks for them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import schema
from .signed import Signed
from .signed import canonical_json as canonical_json
from .spec import IMAGE_PATTERN as IMAGE_PATTERN
from .spec import JOB_SPEC_SCHEMA as JOB_SPEC_SCHEMA
from .spec import MAX_ARGUMENTS as MAX_ARGUMENTS
from .spec import MAX_CPUS as MAX_CPUS
from .spec import MAX_ID as MAX_ID
from .spec import MAX_PATH as MAX_PATH
from .spec import MAX_RETRIES as MAX_RETRIES
from .spec import MAX_STRING as MAX_STRING
from .spec import MAX_TIMEOUT as MAX_TIMEOUT
from .spec import MAX_VOLUMES as MAX_VOLUMES
from .spec import PULL_POLICIES as PULL_POLICIES
from .spec import SPEC_FIELDS as SPEC_FIELDS
from .spec import JobSpec as JobSpec
from .spec import Placement as Placement
from .spec import Resources as Resources
from .spec_formats import MIN_MEMORY as MIN_MEMORY
from .spec_formats import Volume as Volume
from .spec_formats import memory_bytes as memory_bytes
from .spec_formats import parse_volume as parse_volume


class State(enum.StrEnum):
    """The life of one execution; the last six are final. ``rejected``: this node's policy refused the job, so
    it was never run here (neither failed nor to be retried). ``released``: a newer allocation moved this node's
    copy of a replicas job elsewhere (``node/allocation.py``), so it was stopped here; neither counts."""

    PENDING = "pending"
    PULLING = "pulling"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    REJECTED = "rejected"
    RELEASED = "released"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({State.COMPLETE, State.FAILED, State.CANCELLED, State.LOST, State.REJECTED, State.RELEASED})


@dataclass(frozen=True, kw_only=True)
class Job(Signed):
    """An accepted job: the spec, the node that accepted it (``origin``) and its signature."""

    SIGNER = "origin"

    job_id: str
    spec: JobSpec
    origin: str
    created_at: float
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "spec": self.spec.to_json(),
            "origin": self.origin,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Job:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(JOB_SCHEMA, data, path="job")
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> Job:
        """Build a job ``JOB_SCHEMA`` accepted before: what the store holds was checked on its way in."""
        return cls(
            job_id=data["job_id"],
            spec=JobSpec.from_valid(data["spec"]),
            origin=data["origin"],
            created_at=float(data["created_at"]),
            signature=data["signature"],
        )


@dataclass(frozen=True, kw_only=True)
class Execution(Signed):
    """One node's run of one job. Only that node writes it; every node keeps the highest ``version``."""

    SIGNER = "node_id"

    job_id: str
    node_id: str
    state: State = State.PENDING
    attempt: int = 1
    container_id: str | None = None
    exit_code: int | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    history: tuple[Mapping[str, Any], ...] = ()
    version: int = 1
    health: str | None = None
    """The healthcheck's verdict on the running attempt (``starting``, ``healthy``, ``unhealthy``); None without
    one. Signed only when set, so executions of jobs without a healthcheck verify as they always did."""
    signature: str = ""
    """By ``node_id``'s key over ``canonical_bytes()``: peers accept an execution only from the node it describes."""

    def advance(self, **changes: Any) -> Execution:
        """The next version of this execution, with ``changes`` applied and timestamps kept true."""
        now = time.time()
        changes.setdefault("updated_at", now)
        new_state = changes.get("state", self.state)
        if new_state == State.RUNNING and self.started_at is None and "started_at" not in changes:
            changes["started_at"] = now
        if State(new_state).final and "finished_at" not in changes:
            changes["finished_at"] = now
        return replace(self, version=self.version + 1, signature="", **changes)  # a new version, signed anew

    def to_json(self) -> dict[str, Any]:
        """The signed fields, with the signature when there is one (this node's own rows are signed as they leave)."""
        out = self.signed_fields()
        if self.signature:
            out["signature"] = self.signature
        return out

    def signed_fields(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "node_id": self.node_id,
            "state": self.state.value,
            "attempt": self.attempt,
            "container_id": self.container_id,
            "exit_code": self.exit_code,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "history": [dict(h) for h in self.history],
            "version": self.version,
        } | ({"health": self.health} if self.health is not None else {})

    def attempt_summary(self) -> dict[str, Any]:
        """This attempt as one entry of ``history``, kept when a retry starts the next one."""
        return {
            "attempt": self.attempt,
            "state": self.state.value,
            "exit_code": self.exit_code,
            "error": self.error,
            "container_id": self.container_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> Execution:
        """Raises ValidationError on any malformed field."""
        schema.check(EXECUTION_SCHEMA, data, path="execution")
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> Execution:
        """Build an execution ``EXECUTION_SCHEMA`` accepted before (the store's rows were checked on the way in)."""
        return cls(
            job_id=data["job_id"],
            node_id=data["node_id"],
            state=State(data["state"]),
            attempt=data["attempt"],
            container_id=data.get("container_id"),
            exit_code=data.get("exit_code"),
            error=data.get("error"),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            started_at=_opt_float(data.get("started_at")),
            finished_at=_opt_float(data.get("finished_at")),
            history=tuple(data.get("history") or ()),
            version=data["version"],
            health=data.get("health"),
            signature=data.get("signature") or "",
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- what peers send: jobs and executions, checked by the same checker ------------------------------------

MAX_HISTORY = 100
"""Attempts kept in an execution's ``history``: a service restarted for ever keeps its last ones."""
HEALTH_STATES = ("starting", "healthy", "unhealthy")

ID_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_ID}
_TIME: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1e11, "description": "Unix time, seconds"}
_OPT_TIME: dict[str, Any] = {**_TIME, "type": ["number", "null"]}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": schema.INT64_MAX}
_EXIT_CODE: dict[str, Any] = {"type": ["integer", "null"], "minimum": -(2**31), "maximum": 2**32}
_OPT_TEXT: dict[str, Any] = {"type": ["string", "null"], "maxLength": MAX_STRING}
_STATE: dict[str, Any] = {"type": "string", "enum": [s.value for s in State]}

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": ID_SCHEMA,
        "spec": JOB_SPEC_SCHEMA,
        "origin": ID_SCHEMA,
        "created_at": _TIME,
        "signature": {"type": "string", "maxLength": 1024},
    },
    "required": ["job_id", "spec", "origin", "created_at", "signature"],
    "additionalProperties": False,
}

ATTEMPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "attempt": _COUNT,
        "state": _STATE,
        "exit_code": _EXIT_CODE,
        "error": _OPT_TEXT,
        "container_id": {**_OPT_TEXT, "maxLength": MAX_ID},
        "started_at": _OPT_TIME,
        "finished_at": _OPT_TIME,
    },
    "additionalProperties": False,
}

EXECUTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": ID_SCHEMA,
        "node_id": ID_SCHEMA,
        "state": _STATE,
        "attempt": _COUNT,
        "container_id": {**_OPT_TEXT, "maxLength": MAX_ID},
        "exit_code": _EXIT_CODE,
        "error": _OPT_TEXT,
        "created_at": _TIME,
        "updated_at": _TIME,
        "started_at": _OPT_TIME,
        "finished_at": _OPT_TIME,
        "history": {"type": ["array", "null"], "items": ATTEMPT_SCHEMA, "maxItems": MAX_HISTORY},
        "version": _COUNT,
        "health": {"type": ["string", "null"], "enum": [*HEALTH_STATES, None]},
        "signature": {"type": "string", "maxLength": 1024},
    },
    "required": ["job_id", "node_id", "state", "attempt", "created_at", "updated_at", "version"],
    "additionalProperties": False,
}
"""An execution as every node stores and forwards it: ``version`` must fit SQLite's integer. ``signature`` is
optional here (this node's own rows are signed when they leave it); the wire requires a valid one."""

CANCEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": ID_SCHEMA,
        "by": ID_SCHEMA,
        "at": _TIME,
        "signature": {"type": "string", "maxLength": 1024},
    },
    "required": ["job_id", "by", "at", "signature"],
    "additionalProperties": False,
}


@dataclass(frozen=True, kw_only=True)
class Cancel(Signed):
    """A request to stop a job everywhere, signed by the node ``by`` that took the Stop. Peers act on it only
    when ``by`` is the job's origin or a peer they trust (``node/trust.py``)."""

    SIGNER = "by"

    job_id: str
    by: str
    at: float
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "by": self.by, "at": self.at}

    @classmethod
    def from_json(cls, data: Any) -> Cancel:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(CANCEL_SCHEMA, data, path="cancel")
        return cls(job_id=data["job_id"], by=data["by"], at=float(data["at"]), signature=data["signature"])


def derive_status(executions: Iterable[Execution]) -> str:
    """A job's status from its executions: any running wins, then any still in progress; once all are
    final, any failed (or lost) execution makes the job failed, any cancelled one cancelled, else complete.

    A ``rejected`` execution (a node whose policy refused the job) does not count while any other node has
    one: the job is what the nodes that took it made of it. Rejected by every node that has an execution,
    the job is ``rejected``: final, never ``pending`` for ever. A ``released`` execution (a copy moved elsewhere)
    does not count at all: the copies that replaced it say what the job is."""
    everything = [e.state for e in executions if e.state != State.RELEASED]
    states = [s for s in everything if s != State.REJECTED]
    if not states:
        return State.REJECTED.value if everything else State.PENDING.value
    if State.RUNNING in states:
        return State.RUNNING.value
    if any(s in (State.PENDING, State.PULLING) for s in states):
        return State.PENDING.value if State.PULLING not in states else State.PULLING.value
    if State.FAILED in states or State.LOST in states:
        return State.FAILED.value
    if State.CANCELLED in states:
        return State.CANCELLED.value
    return State.COMPLETE.value
