"""The allocation: which nodes hold the copies of a replicas job, as a versioned, signed record.

A replicas job's origin writes version 1 when it accepts the job; a Scale, or the one node that revises it when
a holder died, drained or failed it (``node/rescheduler.py``), writes the next. Every node keeps the greatest
record by ``(version, by)``: a total order, so records merge the same way whatever order they arrive in, and two
writers of one version (two revisers with briefly different views) settle on the same winner everywhere.

A record is signed by its writer (``by``) and believed only from a node that may originate jobs
(``node/trust.py``); the wire verifies the signature (``node/wire.py``), gossip and catch-up carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import schema
from .errors import ValidationError
from .identity import Identity
from .model import ID_SCHEMA
from .signed import Signed
from .spec import MAX_REPLICAS

__all__ = ["ALLOCATION_SCHEMA", "Allocation", "sign_allocation"]

MAX_NOTE = 1024

ALLOCATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "job_id": ID_SCHEMA,
        "version": {"type": "integer", "minimum": 1, "maximum": schema.INT64_MAX},
        "replicas": {"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS},
        "nodes": {"type": "array", "items": ID_SCHEMA, "maxItems": MAX_REPLICAS},
        "by": ID_SCHEMA,
        "at": {"type": "number", "minimum": 0, "maximum": 1e11, "description": "Unix time, seconds"},
        "note": {"type": "string", "maxLength": MAX_NOTE},
        "signature": {"type": "string", "maxLength": 1024},
    },
    "required": ["job_id", "version", "replicas", "nodes", "by", "at", "note", "signature"],
    "additionalProperties": False,
}
"""An allocation as every node stores and forwards it; the wire requires a valid signature by ``by``."""


@dataclass(frozen=True, kw_only=True)
class Allocation(Signed):
    """Version ``version`` of where ``job_id``'s ``replicas`` copies run: ``nodes`` (fewer when fewer fit, and
    ``note`` says why in words), written by ``by`` at ``at``."""

    SIGNER = "by"

    job_id: str
    version: int
    replicas: int
    nodes: tuple[str, ...]
    by: str
    at: float
    note: str = ""
    signature: str = ""

    @property
    def rank(self) -> tuple[int, str]:
        """The total order every node merges by: the greater wins."""
        return (self.version, self.by)

    def supersedes(self, other: Allocation | None) -> bool:
        return other is None or self.rank > other.rank

    def signed_fields(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "version": self.version,
            "replicas": self.replicas,
            "nodes": list(self.nodes),
            "by": self.by,
            "at": self.at,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Any) -> Allocation:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(ALLOCATION_SCHEMA, data, path="allocation")
        if len(set(data["nodes"])) != len(data["nodes"]):
            raise ValidationError([{"field": "allocation.nodes", "message": "names a node twice"}])
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> Allocation:
        return cls(
            job_id=data["job_id"],
            version=data["version"],
            replicas=data["replicas"],
            nodes=tuple(data["nodes"]),
            by=data["by"],
            at=float(data["at"]),
            note=data["note"],
            signature=data["signature"],
        )


def sign_allocation(identity: Identity, allocation: Allocation) -> Allocation:
    """``allocation`` written and signed by this node."""
    return replace(allocation, by=identity.node_id).signed_by(identity)
