"""Placement: which nodes run a job. The one place that decides it, for a job created here and for a job heard
from a peer alike, so the two can never disagree. Pure functions of what a node knows (the spec, the nodes
view, the allocations it holds), so every node with the same view makes the same choice.

* ``all`` and ``nodes`` jobs run on every (listed) node whose labels match the selector: no record needed.
* A ``replicas`` job runs where its allocation (``node/allocation.py``) says. The origin ``allocate``s it; the
  one node ``reviser`` names ``revise``s it when a holder is gone; ``Scale`` revises it to a new count.

Choosing: among ready, matching nodes with room (capacity from ``NodeInfo``, None = not counted; allocated = the
requests of the active allocations this node knows; no host port of the spec taken), least allocated first,
ties broken by a hash of (job ID, node ID). The same hash ranks the nodes that may revise a job (rendezvous
hashing): removing one node changes only the jobs it held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .allocation import Allocation
from .model import Job, JobSpec, State
from .nodeview import NodeInfo, NodeState

__all__ = [
    "AVOIDED",
    "Choice",
    "Load",
    "allocate",
    "at_least",
    "choose",
    "loads_of",
    "move",
    "ranking",
    "revise",
    "reviser",
    "runs_here",
]

AVOIDED = frozenset({State.FAILED, State.LOST, State.REJECTED})
"""A node whose copy of a job ended so is dropped from its allocation and never given the job again, so a
broken job cannot walk the cluster for ever."""


def runs_here(
    job: Job, node_id: str, *, labels: Mapping[str, str] | None = None, allocation: Allocation | None = None
) -> bool:
    """Whether placement asks ``node_id`` (carrying ``labels``) to run ``job``.

    ``all`` runs on every node the selector admits, ``nodes`` on the listed ones it admits; ``replicas`` only on
    the nodes of its allocation (none known yet: nowhere, until it arrives)."""
    placement = job.spec.placement
    if placement.mode == "replicas":
        return allocation is not None and node_id in allocation.nodes
    if not placement.matches(labels or {}):
        return False
    return placement.mode == "all" or node_id in placement.nodes


# -- load ---------------------------------------------------------------------------------------------


@dataclass
class Load:
    """What the allocations a node knows ask of one node."""

    count: int = 0
    cpus: float = 0.0
    memory: int = 0
    ports: set[tuple[int, str]] = field(default_factory=set)

    def add(self, spec: JobSpec, sign: int = 1) -> None:
        self.count += sign
        self.cpus += sign * (spec.resources.cpus or 0.0)
        self.memory += sign * (spec.resources.memory or 0)
        for port in spec.port_mappings:
            if sign > 0:
                self.ports.add((port.host_port, port.protocol))
            else:
                self.ports.discard((port.host_port, port.protocol))


def loads_of(active: Iterable[tuple[JobSpec, Sequence[str]]]) -> dict[str, Load]:
    """Per node, the sum of the requests of the active allocations (spec, nodes) given."""
    loads: dict[str, Load] = {}
    for spec, nodes in active:
        for node_id in nodes:
            loads.setdefault(node_id, Load()).add(spec)
    return loads


def move(loads: dict[str, Load], spec: JobSpec, before: Sequence[str], after: Sequence[str]) -> None:
    """Account a revision: the copies leaving ``before`` and arriving on ``after``."""
    for node_id in set(before) - set(after):
        loads.setdefault(node_id, Load()).add(spec, -1)
    for node_id in set(after) - set(before):
        loads.setdefault(node_id, Load()).add(spec)


def _misfit(node: NodeInfo, spec: JobSpec, load: Load | None) -> str | None:
    """Why ``node`` cannot take one more copy of ``spec`` (None: it can)."""
    if node.state != NodeState.READY:
        return "state"
    if not spec.placement.matches(node.labels):
        return "labels"
    load = load or Load()
    cpus, memory = spec.resources.cpus, spec.resources.memory
    if cpus and node.cpus is not None and load.cpus + cpus > node.cpus + 1e-9:
        return "cpus"
    if memory and node.memory is not None and load.memory + memory > node.memory:
        return "memory"
    if any((p.host_port, p.protocol) in load.ports for p in spec.port_mappings):
        return "ports"
    return None


# -- ranking ------------------------------------------------------------------------------------------


def _weight(job_id: str, node_id: str) -> int:
    digest = hashlib.sha256(f"{job_id}\x00{node_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def ranking(job_id: str, node_ids: Iterable[str]) -> list[str]:
    """The job's rendezvous order of ``node_ids``: highest hash of (job ID, node ID) first."""
    return sorted(node_ids, key=lambda n: (-_weight(job_id, n), n))


def reviser(job_id: str, nodes: Iterable[NodeInfo]) -> str | None:
    """The one node that revises ``job_id``'s allocation: the first ready node in its ranking."""
    ready = [n.node_id for n in nodes if n.state == NodeState.READY]
    order = ranking(job_id, ready)
    return order[0] if order else None


# -- choosing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The nodes an allocation names, and why there are fewer than wanted (empty when all are placed)."""

    nodes: tuple[str, ...]
    note: str = ""


def choose(
    job_id: str,
    spec: JobSpec,
    nodes: Iterable[NodeInfo],
    loads: Mapping[str, Load],
    *,
    want: int,
    keep: Sequence[str] = (),
    avoid: Iterable[str] = (),
) -> Choice:
    """``keep`` (in order) plus as many more fitting nodes as ``want`` asks, least allocated first."""
    kept = tuple(keep[:want])
    skip = set(kept) | set(avoid)
    nodes = list(nodes)
    seen = {n.node_id: at_least(loads.get(n.node_id), n) for n in nodes}
    fitting = [n for n in nodes if n.node_id not in skip and _misfit(n, spec, seen[n.node_id]) is None]
    fitting.sort(key=lambda n: (seen[n.node_id].count, -_weight(job_id, n.node_id), n.node_id))
    chosen = kept + tuple(n.node_id for n in fitting[: max(0, want - len(kept))])
    if len(chosen) >= want:
        return Choice(chosen)
    return Choice(chosen, _note(spec, len(chosen), want, len(kept) + len(fitting)))


def at_least(load: Load | None, node: NodeInfo) -> Load:
    """``load`` (what the allocations known here ask of ``node``) raised to what ``node``'s own last record
    says it holds: an origin that has not heard another origin's allocation yet (gossip lagging under load, a
    message lost, a restart before catch-up) still counts it once the holder's heartbeat arrives."""
    load = load or Load()
    held = node.allocated
    if held.jobs <= load.count and held.cpus <= load.cpus and held.memory <= load.memory:
        return load
    return Load(count=max(load.count, held.jobs), cpus=max(load.cpus, held.cpus), memory=max(load.memory, held.memory),
                ports=load.ports)  # fmt: skip


def _note(spec: JobSpec, placed: int, want: int, fitting: int) -> str:
    """``"2 of 3 replicas placed: 1 node matches zone=a with 512 MB free"``."""
    wants = [f"{k}={v}" for k, v in sorted(spec.placement.selector.items())]
    free = []
    if spec.resources.memory:
        free.append(f"{spec.resources.memory / 2**20:g} MB")
    if spec.resources.cpus:
        free.append(f"{spec.resources.cpus:g} CPUs")
    free += [f"port {p.host_port}/{p.protocol}" for p in spec.port_mappings]
    if free:
        wants.append("with " + ", ".join(free) + " free")
    nodes = "node" if fitting == 1 else "nodes"
    if wants:
        verb = "matches" if fitting == 1 else "match"
        why = f"{fitting} ready {nodes} {verb} {' '.join(wants)}"
    else:
        why = f"{fitting} ready {nodes}"
    return f"{placed} of {want} replicas placed: {why}"


def allocate(job: Job, nodes: Iterable[NodeInfo], loads: Mapping[str, Load], *, replicas: int | None = None) -> Choice:
    """Version 1 of a replicas job's allocation, as its origin writes it."""
    want = replicas if replicas is not None else job.spec.placement.replicas or 0
    return choose(job.job_id, job.spec, nodes, loads, want=want)


def revise(
    job: Job,
    current: Allocation,
    nodes: Sequence[NodeInfo],
    loads: Mapping[str, Load],
    executions: Mapping[str, State],
    *,
    reschedule_after: float,
    replicas: int | None = None,
) -> Choice | None:
    """The next allocation of ``job``, or None when nothing would change.

    A holder is dropped when it has been down for ``reschedule_after`` seconds, is draining, or its copy ended
    failed, lost or rejected (``executions``: each node's state of this job); replacements come from the nodes
    that fit and never held a copy that ended so. A node this view does not know is kept (it may be a node
    heard of elsewhere first). ``replicas``: a new count (Scale); fewer keeps the running copies, then the
    job's ranking.
    """
    want = current.replicas if replicas is None else replicas
    by_id = {n.node_id: n for n in nodes}

    def bad(node_id: str) -> bool:
        info = by_id.get(node_id)
        if executions.get(node_id) in AVOIDED:
            return True
        if info is None:
            return False
        if info.state == NodeState.DRAINING:
            return True
        return info.state == NodeState.DOWN and info.down_for >= reschedule_after

    keep = [n for n in current.nodes if not bad(n)]
    if len(keep) > want:
        order = {n: i for i, n in enumerate(ranking(job.job_id, keep))}
        keep.sort(key=lambda n: (executions.get(n) != State.RUNNING, order[n]))
        keep = keep[:want]
    avoid = {n for n, state in executions.items() if state in AVOIDED} | set(current.nodes)
    choice = choose(job.job_id, job.spec, nodes, loads, want=want, keep=keep, avoid=avoid)
    if replicas is None and set(choice.nodes) == set(current.nodes):
        return None
    return choice
