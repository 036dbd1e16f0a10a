"""What placement and rescheduling read of the nodes (``NodesView``): each node's identity, labels, capacity and
state now (``NodeInfo``). ``node/registry.py`` is the view of a node in a mesh; tests and the simulation make
their own.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .noderecord import Allocated

__all__ = ["NodeInfo", "NodeState", "NodesView"]


class NodeState(enum.StrEnum):
    """``down``: unseen for 3 heartbeats. ``draining``: takes no new allocations, its replicas move away."""

    READY = "ready"
    DOWN = "down"
    DRAINING = "draining"


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """One node as placement sees it: identity, labels, capacity and liveness (load is counted by placement
    itself from the allocations it knows, so every node computes it the same way)."""

    node_id: str
    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    state: NodeState = NodeState.READY
    cpus: float | None = None
    """Capacity in CPUs; None: not known (yet), so requests are not counted against it."""
    memory: int | None = None
    """Capacity in bytes; None: not known (yet)."""
    down_for: float = 0.0
    """Seconds this node has been down (``trio.current_time()`` based), counted from the earliest of: its last
    record, when silent for 3 of its intervals; the arrival of a notice that it was lost; the start of a roll
    call it missed. So ``--reschedule-after`` is measured from when it fell silent or was found gone; 0.0 unless
    ``state`` is DOWN."""
    last_seen: float = 0.0
    """Unix time of the last record heard from it (now, for this node). Records that say nothing new are rare
    (a minute or more apart), so a ready node's may be that old."""
    allocated: Allocated = field(default_factory=Allocated)
    """What its last record says placement gave it, as it counts it: placement counts at least that, so an
    allocation of another origin's not heard here yet still counts once its holder's heartbeat is."""


class NodesView(Protocol):
    """What placement and rescheduling read: every node ever seen, with its state now."""

    def nodes(self) -> list[NodeInfo]: ...

    def get(self, node_id: str) -> NodeInfo | None: ...
