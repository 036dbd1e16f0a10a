"""The node registry: what this node knows of every node in the mesh (itself included), for placement.

Skeleton: the types the scheduler reads are fixed here; the registry helper fills ``Registry`` (signed node
records heard by gossip and catch-up, heartbeats, down detection, drain orders).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["LoneNode", "NodeInfo", "NodeState", "NodesView"]


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
    """Seconds since this node was judged down (``trio.current_time()`` based); 0.0 unless ``state`` is DOWN."""
    last_seen: float = 0.0
    """Unix time of the last record heard from it (now, for this node)."""


class NodesView(Protocol):
    """What placement and rescheduling read: every node ever seen, with its state now."""

    def nodes(self) -> list[NodeInfo]: ...

    def get(self, node_id: str) -> NodeInfo | None: ...


class LoneNode:
    """The ``NodesView`` of a node that knows no registry (tests, a node alone): only itself, ready."""

    def __init__(self, node_id: str, labels: Mapping[str, str] | None = None) -> None:
        self._me = NodeInfo(node_id=node_id, labels=dict(labels or {}))

    def nodes(self) -> list[NodeInfo]:
        return [self._me]

    def get(self, node_id: str) -> NodeInfo | None:
        return self._me if node_id == self._me.node_id else None
