"""What a node says about itself (``NodeRecord``, its heartbeat) and the order to drain one (``DrainOrder``).

Plain data with JSON round trips and no I/O, like ``node/model.py``: each record's rules are written once as a
JSON schema, checked by ``node/schema.py`` on every path a record comes in by (gossip, catch-up, the store), and
each is signed: a node record by the node it describes, a drain order by the node that gave it. Whether the
giver may drain that node is the registry's rule (``node/registry.py``): the node itself, or a node that may
originate jobs (``node/trust.py``).

The settings that shape a record (``--node-name``, ``--node-label``, ``--node-memory``) are checked here too,
so a name or label a node could not sign is refused at start, not dropped by every peer.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import schema
from .model import ID_SCHEMA
from .signed import Signed
from .spec import MAX_CPUS
from .spec_formats import MIN_MEMORY, memory_bytes

if TYPE_CHECKING:
    from .identity import Identity

__all__ = [
    "DRAIN_SCHEMA",
    "NODE_RECORD_SCHEMA",
    "Allocated",
    "Capacity",
    "DrainOrder",
    "NodeRecord",
    "check_node_labels",
    "check_node_memory",
    "check_node_name",
    "default_name",
    "parse_labels",
    "sign_drain",
    "sign_record",
]

MAX_LABELS = 64
MAX_ADDRESSES = 32
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$"
"""A node's name: the same rule as a job's name (a hostname fits it)."""
LABEL_KEY_PATTERN = r"^[A-Za-z0-9_./-]{1,128}$"
"""The same keys as job labels (``node/spec.py``); ``cmnode.`` is reserved there and here."""
MAX_HEARTBEAT = 3600.0

_TIME: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1e11, "description": "Unix time, seconds"}
_AMOUNT: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": schema.INT64_MAX}
_SIGNATURE: dict[str, Any] = {"type": "string", "maxLength": 1024}
_LABELS: dict[str, Any] = {
    "type": "object",
    "propertyNames": {
        "type": "string",
        "pattern": LABEL_KEY_PATTERN,
        "not": {"pattern": r"^cmnode\.", "description": "keys starting with 'cmnode.' are reserved"},
    },
    "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": "^[^\\x00]*$"},
    "maxProperties": MAX_LABELS,
    "description": "labels placement selects on (values bounded: a record travels every heartbeat)",
}

NODE_RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "node_id": ID_SCHEMA,
        "name": {"type": "string", "pattern": NAME_PATTERN},
        "labels": _LABELS,
        "capacity": {
            "type": "object",
            "properties": {
                "cpus": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": MAX_CPUS * 1024},
                "memory": {**_AMOUNT, "type": ["integer", "null"], "minimum": 1},
            },
            "required": ["cpus", "memory"],
            "additionalProperties": False,
            "description": "null: not known (yet)",
        },
        "allocated": {
            "type": "object",
            "properties": {
                "cpus": {"type": "number", "minimum": 0, "maximum": 1e9},
                "memory": _AMOUNT,
                "jobs": _AMOUNT,
            },
            "required": ["cpus", "memory", "jobs"],
            "additionalProperties": False,
        },
        "running": _AMOUNT,
        "queue_depth": _AMOUNT,
        "docker_ok": {"type": "boolean"},
        "version": {"type": "string", "maxLength": 64},
        "addresses": {"type": "array", "items": {"type": "string", "maxLength": 512}, "maxItems": MAX_ADDRESSES},
        "rpc_url": {"type": "string", "maxLength": 512},
        "draining": {"type": "boolean"},
        "heartbeat": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_HEARTBEAT,
                      "description": "seconds between this node's records: it is down after 3 unheard"},
        "seq": {"type": "integer", "minimum": 1, "maximum": schema.INT64_MAX},
        "at": _TIME,
        "signature": _SIGNATURE,
    },
    "required": [
        "node_id", "name", "labels", "capacity", "allocated", "running", "queue_depth", "docker_ok", "version",
        "addresses", "rpc_url", "draining", "heartbeat", "seq", "at", "signature",
    ],
    "additionalProperties": False,
}  # fmt: skip

DRAIN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "node_id": ID_SCHEMA,
        "draining": {"type": "boolean"},
        "by": ID_SCHEMA,
        "at": _TIME,
        "signature": _SIGNATURE,
    },
    "required": ["node_id", "draining", "by", "at", "signature"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Capacity:
    """What a node can give; None: not known (the engine did not say yet, and no override)."""

    cpus: float | None = None
    memory: int | None = None


@dataclass(frozen=True)
class Allocated:
    """What placement has given a node, as that node counts it (``Heartbeat``'s ``allocated`` callable)."""

    cpus: float = 0.0
    memory: int = 0
    jobs: int = 0


@dataclass(frozen=True, kw_only=True)
class NodeRecord(Signed):
    """One heartbeat of one node. Every node keeps the highest ``seq`` of each; only that node signs it."""

    SIGNER = "node_id"

    node_id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Capacity = Capacity()
    allocated: Allocated = Allocated()
    running: int = 0
    queue_depth: int = 0
    docker_ok: bool = True
    version: str = ""
    addresses: tuple[str, ...] = ()
    rpc_url: str = ""
    draining: bool = False
    heartbeat: float = 2.0
    seq: int = 1
    at: float = 0.0
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "labels": dict(self.labels),
            "capacity": {"cpus": self.capacity.cpus, "memory": self.capacity.memory},
            "allocated": {"cpus": self.allocated.cpus, "memory": self.allocated.memory, "jobs": self.allocated.jobs},
            "running": self.running,
            "queue_depth": self.queue_depth,
            "docker_ok": self.docker_ok,
            "version": self.version,
            "addresses": list(self.addresses),
            "rpc_url": self.rpc_url,
            "draining": self.draining,
            "heartbeat": self.heartbeat,
            "seq": self.seq,
            "at": self.at,
        }

    def identity(self) -> tuple[Any, ...]:
        """What is worth keeping on disk when it changes (not the load, which changes every heartbeat)."""
        return (self.name, tuple(sorted(self.labels.items())), self.capacity, self.draining)

    @classmethod
    def from_json(cls, data: Any) -> NodeRecord:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(NODE_RECORD_SCHEMA, data, path="node")
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> NodeRecord:
        capacity, allocated = data["capacity"], data["allocated"]
        return cls(
            node_id=data["node_id"],
            name=data["name"],
            labels=dict(data["labels"]),
            capacity=Capacity(
                cpus=None if capacity["cpus"] is None else float(capacity["cpus"]), memory=capacity["memory"]
            ),
            allocated=Allocated(cpus=float(allocated["cpus"]), memory=allocated["memory"], jobs=allocated["jobs"]),
            running=data["running"],
            queue_depth=data["queue_depth"],
            docker_ok=data["docker_ok"],
            version=data["version"],
            addresses=tuple(data["addresses"]),
            rpc_url=data["rpc_url"],
            draining=data["draining"],
            heartbeat=float(data["heartbeat"]),
            seq=data["seq"],
            at=float(data["at"]),
            signature=data["signature"],
        )


@dataclass(frozen=True, kw_only=True)
class DrainOrder(Signed):
    """Drain (or undrain) ``node_id``, said by ``by`` at ``at``; every node keeps the latest per node."""

    SIGNER = "by"

    node_id: str
    draining: bool
    by: str
    at: float
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "draining": self.draining, "by": self.by, "at": self.at}

    def order_key(self) -> tuple[float, str, bool]:
        """Latest wins; two orders at the same instant are ordered by signer, then undrain before drain."""
        return (self.at, self.by, self.draining)

    @classmethod
    def from_json(cls, data: Any) -> DrainOrder:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(DRAIN_SCHEMA, data, path="drain")
        return cls(node_id=data["node_id"], draining=data["draining"], by=data["by"], at=float(data["at"]),
                   signature=data["signature"])  # fmt: skip


def sign_record(identity: Identity, record: NodeRecord) -> NodeRecord:
    """This node's record, signed; a node signs only its own."""
    return record.signed_by(identity)


def sign_drain(identity: Identity, node_id: str, draining: bool, at: float) -> DrainOrder:
    return DrainOrder(node_id=node_id, draining=draining, by=identity.node_id, at=at).signed_by(identity)


# -- the settings that shape a record ----------------------------------------------------------------------


def default_name() -> str:
    """The hostname, made to fit ``NAME_PATTERN`` (a node name is also what ``cmnode drain NAME`` takes)."""
    name = re.sub(r"[^a-zA-Z0-9_.-]", "-", socket.gethostname()).strip("-._")[:128]
    return name or "node"


def check_node_name(value: str | None) -> str | None:
    if value is None or re.fullmatch(NAME_PATTERN[1:-1], value):
        return None
    return f"{value!r} (letters, digits, '_', '.', '-', at most 128, starting with a letter or digit)"


def parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    """``K=V`` settings as labels (a later key wins).

    Raises:
        ValueError: not ``K=V``, or a key or value a node record may not carry.
    """
    labels: dict[str, str] = {}
    for value in values:
        key, eq, val = value.partition("=")
        if not eq:
            raise ValueError(f"{value!r} is not KEY=VALUE")
        labels[key] = val
    errors = schema.validate(_LABELS, labels, path="label")
    if errors:
        raise ValueError(f"{errors[0]['field']} {errors[0]['message']}")
    return labels


def check_node_labels(values: tuple[str, ...]) -> str | None:
    try:
        parse_labels(values)
    except ValueError as exc:
        return str(exc)
    return None


def check_node_memory(value: str) -> str | None:
    if value == "":
        return None
    try:
        size = memory_bytes(value)
    except ValueError:
        return f"{value!r} is not a size such as '8g' (units b, k, m, g; empty: from the Docker engine)"
    return None if size >= MIN_MEMORY else f"{value!r} (must be at least 6m)"
