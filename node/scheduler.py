"""Placement: which nodes run a job. The one place that decides it, for a job created here and for a job heard
from a peer alike, so the two can never disagree; the scheduling issue grows it (``replicas`` spread over nodes).
"""

from __future__ import annotations

from .model import Job

__all__ = ["runs_here"]


def runs_here(job: Job, node_id: str) -> bool:
    """Whether placement asks ``node_id`` to run ``job``.

    ``all`` runs everywhere; ``nodes`` on the listed peers. ``replicas`` has no scheduler yet, so such a job
    runs on its origin only.
    """
    placement = job.spec.placement
    if placement.mode == "all":
        return True
    if placement.mode == "nodes":
        return node_id in placement.nodes
    return node_id == job.origin
