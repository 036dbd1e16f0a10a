"""The data cmnode moves around: what a user asks for (JobSpec), what a node accepted (Job), and what
happened when a node ran it (Execution).

Everything here is plain data with JSON round trips and no I/O. Each type's rules are written once, as a
JSON schema (``JOB_SPEC_SCHEMA``, ``JOB_SCHEMA``, ``EXECUTION_SCHEMA``) checked by ``node/schema.py``: the RPC
layer, the gossip wire and catch-up accept exactly what ``rpc.discover`` publishes. ``from_json`` checks and
builds; ``from_valid`` only builds, for values checked before (RPC params, the store's rows). Its size (~500
lines) is one job: the field tables take half of it.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import schema

# The Docker reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest], in ASCII.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE_PATTERN = (
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    rf"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
_MEMORY = re.compile(r"^([0-9]{1,15})([bkmg]?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

MAX_ARGUMENTS = 1024
MAX_STRING = 64 * 1024
MAX_RETRIES = 100
MAX_TIMEOUT = 365 * 86400
MAX_CPUS = 1024
MIN_MEMORY = 6 * 1024 * 1024
"""Docker refuses a smaller memory limit at run time; refusing it here fails the Create instead."""
MAX_ID = 128
PULL_POLICIES = ("missing", "always", "never")
MAX_VOLUMES = 64
MAX_PATH = 4096
_VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}\Z")


def memory_bytes(value: int | str) -> int:
    """A memory size in bytes from an integer or a size such as ``'256m'`` (binary units)."""
    if isinstance(value, int):
        return value
    m = _MEMORY.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size")
    return int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]


def _is_size(value: str) -> bool:
    try:
        return MIN_MEMORY <= memory_bytes(value) <= schema.INT64_MAX
    except ValueError:
        return False


schema.FORMATS["byte-size"] = ("a size of at least 6 MiB such as '256m' (units b, k, m, g)", _is_size)


@dataclass(frozen=True)
class Volume:
    """One entry of ``JobSpec.volumes``: a host path (``source`` starts with ``/``) or a named volume."""

    source: str
    target: str
    read_only: bool = False

    @property
    def host_path(self) -> bool:
        return self.source.startswith("/")


def parse_volume(text: str) -> Volume:
    """``SOURCE:TARGET[:ro|:rw]`` as a ``Volume``. Whether a host path may be mounted is the node's policy
    (``node/policy.py``); what is refused here is refused by every node alike.

    Raises:
        ValueError: not of that form, a relative or ``..``-holding path, or a NUL.
    """
    parts = text.split(":")
    read_only = False
    if len(parts) == 3:
        mode = parts.pop()
        if mode not in ("ro", "rw"):
            raise ValueError(f"mode {mode!r} is not ro or rw")
        read_only = mode == "ro"
    if len(parts) != 2 or "\x00" in text:
        raise ValueError("not SOURCE:TARGET[:ro|:rw]")
    source, target = parts
    if not source.startswith("/") and _VOLUME_NAME.match(source) is None:
        raise ValueError(f"{source!r} is neither an absolute path nor a volume name")
    if not target.startswith("/") or target.strip("/") == "":
        raise ValueError(f"{target!r} is not an absolute path below /")
    for path in (source, target):
        if ".." in path.split("/"):
            raise ValueError(f"{path!r} holds '..'")
    return Volume(source, target, read_only)


def _is_volume(value: str) -> bool:
    try:
        parse_volume(value)
    except ValueError:
        return False
    return True


schema.FORMATS["volume"] = (
    "'SOURCE:TARGET' or 'SOURCE:TARGET:ro', SOURCE an absolute host path or a volume name, TARGET an absolute "
    "path in the container, neither holding '..'",
    _is_volume,
)


class State(enum.StrEnum):
    """The life of one execution; the last five are final. ``rejected``: this node's policy refused the job, so
    it was never run here (neither failed nor to be retried)."""

    PENDING = "pending"
    PULLING = "pulling"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({State.COMPLETE, State.FAILED, State.CANCELLED, State.LOST, State.REJECTED})


# -- the field table: every rule a JobSpec obeys, as the schema that rpc.discover publishes -------------

_TEXT: dict[str, Any] = {"type": "string", "maxLength": MAX_STRING, "pattern": "^[^\\x00]*$"}
_TEXT_LIST: dict[str, Any] = {"type": ["array", "null"], "items": _TEXT, "maxItems": MAX_ARGUMENTS}


def _text_map(key_pattern: str, description: str, **extra: Any) -> dict[str, Any]:
    names: dict[str, Any] = {"type": "string", "maxLength": 256, "pattern": key_pattern, **extra}
    return {
        "type": ["object", "null"],
        "propertyNames": names,
        "additionalProperties": _TEXT,
        "maxProperties": 1024,
        "description": description,
    }


SPEC_FIELDS: dict[str, dict[str, Any]] = {
    "image": {
        "type": "string",
        "minLength": 1,
        "maxLength": 512,
        "pattern": IMAGE_PATTERN,
        "patternMessage": "is not a valid image reference (lowercase name, optional host, :tag and @digest)",
        "description": "a Docker image reference",
    },
    "arguments": {**_TEXT_LIST, "description": "the command and its arguments (null: none)"},
    "env": _text_map(r"^[A-Za-z_][A-Za-z0-9_.-]*$", "environment variables (null: none)"),
    "name": {
        "type": "string",
        "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$",
        "description": "a display name",
    },
    "labels": _text_map(
        r"^[A-Za-z0-9_./-]{1,128}$",
        "labels to filter by; keys starting with 'cmnode.' are reserved",
        **{"not": {"pattern": r"^cmnode\.", "description": "keys starting with 'cmnode.' are reserved"}},
    ),
    "entrypoint": {**_TEXT_LIST, "description": "overrides the image's entrypoint"},
    "resources": {
        "type": ["object", "null"],
        "properties": {
            "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPUS, "description": "CPUs"},
            "memory": {
                "oneOf": [
                    {"type": "integer", "minimum": MIN_MEMORY, "description": "bytes"},
                    {"type": "string", "format": "byte-size", "description": "a size such as '256m'"},
                ],
                "description": "bytes (>= 6 MiB), or a size such as '256m'",
            },
        },
        "additionalProperties": False,
        "description": "limits applied to the container",
    },
    "volumes": {
        "type": ["array", "null"],
        "items": {"type": "string", "minLength": 3, "maxLength": MAX_PATH, "format": "volume"},
        "maxItems": MAX_VOLUMES,
        "description": "mounts, each 'SOURCE:TARGET[:ro]': a named volume, or a host path where the node's "
        "--allow-host-path allows it (null: none)",
    },
    "timeout": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": MAX_TIMEOUT,
        "description": "seconds before the container is stopped",
    },
    "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES, "description": "attempts after the first"},
    "pull": {"type": "string", "enum": list(PULL_POLICIES), "description": "when to pull the image"},
    "placement": {
        "description": "which nodes run the job",
        "oneOf": [
            {"type": ["string", "null"], "enum": ["all", None]},
            {
                "type": "object",
                "properties": {"replicas": {"type": "integer", "minimum": 1, "maximum": 10_000}},
                "required": ["replicas"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "nodes": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
                        "minItems": 1,
                        "maxItems": MAX_ARGUMENTS,
                    }
                },
                "required": ["nodes"],
                "additionalProperties": False,
            },
        ],
    },
}

JOB_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What to run. Unknown fields are refused.",
    "properties": SPEC_FIELDS,
    "required": ["image"],
    "additionalProperties": False,
}
"""The one definition of a valid spec: ``JobSpec.from_json`` checks it, ``rpc.discover`` publishes it."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Limits applied to the container; ``memory`` is in bytes."""

    cpus: float | None = None
    memory: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("cpus", self.cpus), ("memory", self.memory)) if v is not None}


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Which nodes run a job: every node (``all``), ``replicas`` of them, or the listed ``nodes``."""

    mode: str = "all"
    replicas: int | None = None
    nodes: tuple[str, ...] = ()

    def to_json(self) -> Any:
        if self.mode == "all":
            return "all"
        if self.mode == "replicas":
            return {"replicas": self.replicas}
        return {"nodes": list(self.nodes)}

    @classmethod
    def from_valid(cls, value: Any) -> Placement:
        if isinstance(value, dict) and "replicas" in value:
            return cls(mode="replicas", replicas=value["replicas"])
        if isinstance(value, dict):
            return cls(mode="nodes", nodes=tuple(value["nodes"]))
        return cls()


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a user asks for: the original service's ``image``, ``arguments`` and ``env``, plus options."""

    image: str
    arguments: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    resources: Resources = field(default_factory=Resources)
    volumes: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    pull: str = "missing"
    placement: Placement = field(default_factory=Placement)

    @classmethod
    def from_json(cls, data: Any, *, path: str = "") -> JobSpec:
        """Check ``data`` against ``JOB_SPEC_SCHEMA`` and build the spec.

        Raises:
            ValidationError: with one entry per bad field (unknown fields included), named under ``path``.
        """
        schema.check(JOB_SPEC_SCHEMA, data, path=path)
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> JobSpec:
        """Build a spec from a value that ``JOB_SPEC_SCHEMA`` accepted (the RPC layer checked it already).

        Go's encoder sends null for an empty slice or map, so null means "none" wherever it is allowed.
        """
        resources = data.get("resources") or {}
        memory = resources.get("memory")
        cpus = resources.get("cpus")
        timeout = data.get("timeout")
        entrypoint = data.get("entrypoint")
        return cls(
            image=data["image"],
            arguments=tuple(data.get("arguments") or ()),
            env=dict(data.get("env") or {}),
            name=data.get("name"),
            labels=dict(data.get("labels") or {}),
            entrypoint=tuple(entrypoint) if entrypoint is not None else None,
            resources=Resources(
                cpus=float(cpus) if cpus is not None else None,
                memory=memory_bytes(memory) if memory is not None else None,
            ),
            volumes=tuple(data.get("volumes") or ()),
            timeout=float(timeout) if timeout is not None else None,
            retries=data.get("retries", 0),
            pull=data.get("pull", "missing"),
            placement=Placement.from_valid(data.get("placement")),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "arguments": list(self.arguments), "env": dict(self.env)}
        if self.name is not None:
            out["name"] = self.name
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.entrypoint is not None:
            out["entrypoint"] = list(self.entrypoint)
        if self.resources.to_json():
            out["resources"] = self.resources.to_json()
        if self.volumes:
            out["volumes"] = list(self.volumes)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.retries:
            out["retries"] = self.retries
        if self.pull != "missing":
            out["pull"] = self.pull
        if self.placement.mode != "all":
            out["placement"] = self.placement.to_json()
        return out


def canonical_json(value: Any) -> bytes:
    """One byte string per value (sorted keys, no spaces), so signatures verify on every node."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, kw_only=True)
class Job:
    """An accepted job: the spec, the node that accepted it (``origin``) and its signature."""

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

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.signed_fields())

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}

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
class Execution:
    """One node's run of one job. Only that node writes it; every node keeps the highest ``version``."""

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
        """The signed fields, with the signature when there is one."""
        out = self.signed_fields()
        if self.signature:
            out["signature"] = self.signature
        return out

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.signed_fields())

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
        }

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
            signature=data.get("signature") or "",
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# -- what peers send: jobs and executions, checked by the same checker ------------------------------------

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
        "attempt": {**_COUNT, "maximum": MAX_RETRIES + 1},
        "container_id": {**_OPT_TEXT, "maxLength": MAX_ID},
        "exit_code": _EXIT_CODE,
        "error": _OPT_TEXT,
        "created_at": _TIME,
        "updated_at": _TIME,
        "started_at": _OPT_TIME,
        "finished_at": _OPT_TIME,
        "history": {"type": ["array", "null"], "items": ATTEMPT_SCHEMA, "maxItems": MAX_RETRIES + 1},
        "version": _COUNT,
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
class Cancel:
    """A request to stop a job everywhere, signed by the node ``by`` that took the Stop. Peers act on it only
    when ``by`` is the job's origin or a peer they trust (``node/trust.py``)."""

    job_id: str
    by: str
    at: float
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "by": self.by, "at": self.at}

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.signed_fields())

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_fields(), "signature": self.signature}

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
    the job is ``rejected``: final, never ``pending`` for ever."""
    everything = [e.state for e in executions]
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
