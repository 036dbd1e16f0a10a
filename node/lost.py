"""A "lost" notice: node ``by`` says it lost its connection to node ``node_id`` and could not reach it again.

Node records say "still here" only rarely (``node/heartbeat.py``: every minute or more once every node speaks
this version), so silence alone would take minutes to tell a dead node. Death is told from the connections
instead (``node/losswatch.py``): a node that loses its last connection to a peer it had been connected to for a
while, and cannot dial it back, publishes this notice, signed, on gossip. Every node that receives it holds
``node_id`` down from that moment (``Registry.on_lost``) unless it has heard a record of ``node_id`` newer than
``seq`` (the last one ``by`` knew); ``node_id`` itself, should it be alive, answers with a fresh record at once,
and everyone holds it up again. A mistaken or forged notice thus costs a flood and a record, never a
rescheduling (which needs ``--reschedule-after`` of down).

The version gate: a node older than ``LOST_SINCE`` refuses an envelope of an unknown type and penalises whoever
forwarded it, so no notice is sent, and records are not spaced out, while any node held up says an older
version (``speaks_lost``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import schema
from .model import ID_SCHEMA
from .signed import Signed

if TYPE_CHECKING:
    from .identity import Identity

__all__ = ["LOST_SCHEMA", "LOST_SINCE", "LostNotice", "sign_lost", "speaks_lost"]

LOST_SINCE = (0, 2, 0)
"""The first version that knows lost notices (and the long record spacing that relies on them)."""

LOST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "node_id": ID_SCHEMA,
        "seq": {"type": "integer", "minimum": 1, "maximum": schema.INT64_MAX,
                "description": "the seq of the lost node's last record the reporter knew"},
        "by": ID_SCHEMA,
        "at": {"type": "number", "minimum": 0, "maximum": 1e11, "description": "Unix time, seconds"},
        "signature": {"type": "string", "maxLength": 1024},
    },
    "required": ["node_id", "seq", "by", "at", "signature"],
    "additionalProperties": False,
}  # fmt: skip

_VERSION = re.compile(r"^(\d{1,6})\.(\d{1,6})\.(\d{1,6})")


@dataclass(frozen=True, kw_only=True)
class LostNotice(Signed):
    """``by`` lost ``node_id``, whose last record it knew was ``seq``, at ``at``; signed and sent by ``by``."""

    SIGNER = "by"

    node_id: str
    seq: int
    by: str
    at: float
    signature: str = ""

    def signed_fields(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "seq": self.seq, "by": self.by, "at": self.at}

    @classmethod
    def from_json(cls, data: Any) -> LostNotice:
        """Raises ValidationError on any malformed field (the signature is checked by ``node/wire.py``)."""
        schema.check(LOST_SCHEMA, data, path="lost")
        return cls(node_id=data["node_id"], seq=data["seq"], by=data["by"], at=float(data["at"]),
                   signature=data["signature"])  # fmt: skip


def sign_lost(identity: Identity, node_id: str, seq: int, at: float) -> LostNotice:
    return LostNotice(node_id=node_id, seq=seq, by=identity.node_id, at=at).signed_by(identity)


def speaks_lost(version: str) -> bool:
    """Whether a node saying ``version`` (its record's) knows lost notices: ``X.Y.Z`` at least LOST_SINCE; a
    version that does not parse does not."""
    match = _VERSION.match(version)
    return match is not None and tuple(int(part) for part in match.groups()) >= LOST_SINCE
