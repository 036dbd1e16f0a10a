"""The data cmnode moves around: what a user asks for (JobSpec), what a node accepted (Job), and what
happened when a node ran it (Execution).

Everything here is plain data with JSON round trips and no I/O, so the RPC layer, the store and the
gossip wire all validate with the same code.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ValidationError

# The Docker reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*"
    rf"(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_MEMORY = re.compile(r"^([0-9]+)([bkmg]?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}

MAX_ARGUMENTS = 1024
MAX_STRING = 64 * 1024
MAX_RETRIES = 100
PULL_POLICIES = ("missing", "always", "never")


class State(enum.StrEnum):
    """The life of one execution; the last four are final."""

    PENDING = "pending"
    PULLING = "pulling"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({State.COMPLETE, State.FAILED, State.CANCELLED, State.LOST})


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Collects every field error of one object, so the caller learns them all in one round trip."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def fail(self, field_name: str, message: str) -> None:
        self.errors.append({"field": field_name, "message": message})

    def string_list(self, name: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(name, f"must be a list of strings, got {type(value).__name__}")
            return ()
        if len(value) > MAX_ARGUMENTS:
            self.fail(name, f"at most {MAX_ARGUMENTS} items")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{name}[{i}]", f"must be a string, got {type(item).__name__}")
            elif len(item) > MAX_STRING or "\x00" in item:
                self.fail(f"{name}[{i}]", "too long or contains a NUL byte")
        return tuple(v for v in value if isinstance(v, str))

    def string_map(self, name: str, value: Any, key_pattern: re.Pattern[str]) -> dict[str, str]:
        if not isinstance(value, dict):
            self.fail(name, f"must be an object of strings, got {type(value).__name__}")
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            if not key_pattern.match(key):
                self.fail(f"{name}.{key}", "invalid key")
            elif not isinstance(item, str):
                self.fail(f"{name}.{key}", f"must be a string, got {type(item).__name__}")
            elif len(item) > MAX_STRING or "\x00" in item:
                self.fail(f"{name}.{key}", "too long or contains a NUL byte")
            else:
                out[key] = item
        return out


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


SPEC_FIELDS = (
    "image",
    "arguments",
    "env",
    "name",
    "labels",
    "entrypoint",
    "resources",
    "timeout",
    "retries",
    "pull",
    "placement",
)


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
    timeout: float | None = None
    retries: int = 0
    pull: str = "missing"
    placement: Placement = field(default_factory=Placement)

    @classmethod
    def from_json(cls, data: Any, *, prefix: str = "") -> JobSpec:
        """Validate a JSON object into a spec.

        Raises:
            ValidationError: with one entry per bad field (unknown fields included).
        """
        check = _Checker()
        p = prefix
        if not isinstance(data, dict):
            raise ValidationError([{"field": prefix or "spec", "message": "must be an object"}])
        for key in data:
            if key not in SPEC_FIELDS:
                check.fail(f"{p}{key}", "unknown field")
        image = data.get("image")
        if image is None:
            check.fail(f"{p}image", "is required")
        elif not isinstance(image, str):
            check.fail(f"{p}image", f"must be a string, got {type(image).__name__}")
        elif len(image) > 512 or not _REFERENCE.match(image):
            check.fail(f"{p}image", f"{image!r} is not a valid image reference")
        # null is accepted where Go's encoder would send it for an empty slice or map
        arguments = check.string_list(f"{p}arguments", _or(data.get("arguments"), []))
        env = check.string_map(f"{p}env", _or(data.get("env"), {}), _ENV_KEY)
        labels = check.string_map(f"{p}labels", _or(data.get("labels"), {}), _LABEL_KEY)
        if any(k.startswith("cmnode.") for k in labels):
            check.fail(f"{p}labels", "keys starting with 'cmnode.' are reserved")
        name = data.get("name")
        if name is not None and (not isinstance(name, str) or not _NAME.match(name)):
            check.fail(f"{p}name", "must match [a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
        entrypoint = None
        if data.get("entrypoint") is not None:
            entrypoint = check.string_list(f"{p}entrypoint", data["entrypoint"])
        resources = cls._resources(check, f"{p}resources", data.get("resources"))
        timeout = data.get("timeout")
        if timeout is not None and (not _is_number(timeout) or not 0 < timeout <= 365 * 86400):
            check.fail(f"{p}timeout", "must be a number of seconds > 0")
        retries = data.get("retries", 0)
        if not _is_int(retries) or not 0 <= retries <= MAX_RETRIES:
            check.fail(f"{p}retries", f"must be an integer from 0 to {MAX_RETRIES}")
        pull = data.get("pull", "missing")
        if pull not in PULL_POLICIES:
            check.fail(f"{p}pull", f"must be one of {', '.join(PULL_POLICIES)}")
        placement = cls._placement(check, f"{p}placement", data.get("placement", "all"))
        if check.errors:
            raise ValidationError(check.errors)
        return cls(
            image=str(image),
            arguments=arguments,
            env=env,
            name=name,
            labels=labels,
            entrypoint=entrypoint,
            resources=resources,
            timeout=float(timeout) if timeout is not None else None,
            retries=retries,
            pull=pull,
            placement=placement,
        )

    @staticmethod
    def _resources(check: _Checker, name: str, value: Any) -> Resources:
        if value is None:
            return Resources()
        if not isinstance(value, dict):
            check.fail(name, "must be an object with cpus and/or memory")
            return Resources()
        for key in value:
            if key not in ("cpus", "memory"):
                check.fail(f"{name}.{key}", "unknown field")
        cpus = value.get("cpus")
        if cpus is not None and (not _is_number(cpus) or not 0 < cpus <= 1024):
            check.fail(f"{name}.cpus", "must be a number > 0")
            cpus = None
        memory = value.get("memory")
        if memory is not None:
            if isinstance(memory, str) and (m := _MEMORY.match(memory)):
                memory = int(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]
            if not _is_int(memory) or memory < 6 * 1024 * 1024:
                check.fail(f"{name}.memory", "must be bytes (>= 6 MiB) or a size like '256m'")
                memory = None
        return Resources(cpus=float(cpus) if cpus is not None else None, memory=memory)

    @staticmethod
    def _placement(check: _Checker, name: str, value: Any) -> Placement:
        if value == "all" or value is None:
            return Placement()
        if isinstance(value, dict) and set(value) == {"replicas"}:
            if _is_int(value["replicas"]) and value["replicas"] >= 1:
                return Placement(mode="replicas", replicas=value["replicas"])
            check.fail(f"{name}.replicas", "must be an integer >= 1")
            return Placement()
        if isinstance(value, dict) and set(value) == {"nodes"}:
            nodes = check.string_list(f"{name}.nodes", value["nodes"])
            if not nodes:
                check.fail(f"{name}.nodes", "must list at least one node ID")
            return Placement(mode="nodes", nodes=nodes)
        check.fail(name, 'must be \'all\', {"replicas": N} or {"nodes": [peer IDs]}')
        return Placement()

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
        """Raises ValidationError on any malformed field."""
        if not isinstance(data, dict):
            raise ValidationError([{"field": "job", "message": "must be an object"}])
        errors: list[dict[str, str]] = []
        for key, kind in (("job_id", str), ("origin", str), ("signature", str)):
            if not isinstance(data.get(key), kind):
                errors.append({"field": key, "message": "must be a string"})
        if not _is_number(data.get("created_at")):
            errors.append({"field": "created_at", "message": "must be a number"})
        if errors:
            raise ValidationError(errors)
        spec = JobSpec.from_json(data.get("spec"), prefix="spec.")
        return cls(
            job_id=data["job_id"],
            spec=spec,
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

    def advance(self, **changes: Any) -> Execution:
        """The next version of this execution, with ``changes`` applied and timestamps kept true."""
        now = time.time()
        changes.setdefault("updated_at", now)
        new_state = changes.get("state", self.state)
        if new_state == State.RUNNING and self.started_at is None and "started_at" not in changes:
            changes["started_at"] = now
        if State(new_state).final and "finished_at" not in changes:
            changes["finished_at"] = now
        return replace(self, version=self.version + 1, **changes)

    def to_json(self) -> dict[str, Any]:
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
        try:
            if not isinstance(data, dict):
                raise TypeError("must be an object")
            ex = cls(
                job_id=_typed(data, "job_id", str),
                node_id=_typed(data, "node_id", str),
                state=State(data["state"]),
                attempt=_typed(data, "attempt", int),
                container_id=_typed(data, "container_id", str, optional=True),
                exit_code=_typed(data, "exit_code", int, optional=True),
                error=_typed(data, "error", str, optional=True),
                created_at=float(_typed(data, "created_at", float)),
                updated_at=float(_typed(data, "updated_at", float)),
                started_at=_opt_float(_typed(data, "started_at", float, optional=True)),
                finished_at=_opt_float(_typed(data, "finished_at", float, optional=True)),
                history=tuple(_history(data.get("history", []))),
                version=_typed(data, "version", int),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError([{"field": "execution", "message": str(exc) or type(exc).__name__}]) from exc
        return ex


def _history(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(h, dict) for h in value):
        raise TypeError("history must be a list of objects")
    return value


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _typed(data: Mapping[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    ok = _is_number(value) if kind is float else _is_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise TypeError(f"{key} must be {kind.__name__}")
    return value


def derive_status(executions: Iterable[Execution]) -> str:
    """A job's status from its executions: any running wins, then any still in progress; once all are
    final, any failed (or lost) execution makes the job failed, any cancelled one cancelled, else complete."""
    states = [e.state for e in executions]
    if not states:
        return State.PENDING.value
    if State.RUNNING in states:
        return State.RUNNING.value
    if any(s in (State.PENDING, State.PULLING) for s in states):
        return State.PENDING.value if State.PULLING not in states else State.PULLING.value
    if State.FAILED in states or State.LOST in states:
        return State.FAILED.value
    if State.CANCELLED in states:
        return State.CANCELLED.value
    return State.COMPLETE.value
