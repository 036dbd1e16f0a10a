"""docs/scaling.md's formulas, as code: what the simulation's figures are compared with.

Symbols: N nodes; d the mean gossipsub mesh degree; c the mean connections per node; m the gossip messages one
job publishes; R the nodes that run a job (its replicas, or N for ``placement: all``); u the execution versions a
run publishes (``running``, ``complete``); h the node record interval; k the peers asked per anti-entropy
interval (None: every connected peer); r the catch-up rate in stored rows per second.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "DOWN_AFTER",
    "ID_HEX_BYTES",
    "allocation_row_bytes",
    "anti_entropy_per_node",
    "anti_entropy_rounds",
    "catch_up_seconds",
    "copies",
    "execution_row_bytes",
    "gossip_per_job",
    "hops",
    "ihave_bytes_per_second",
    "ihave_peers",
    "job_messages",
    "job_row_bytes",
    "record_copies_per_second",
    "record_interval_at",
    "records_share",
    "stored_per_job",
]

ID_HEX_BYTES = 2 * (38 + 8) + 2
"""One message ID in an IHAVE: the sender's peer ID and seqno, hex (py-libp2p 0.8.1 sends them as text)."""
INDEX_CELL = 12
"""Bytes a B-tree cell costs beyond its key (cell pointer, header, rowid varint)."""


def copies(n: int, d: float) -> float:
    """Transmissions of one message flooded over the mesh: the origin sends d, every other node forwards to its
    d peers but the one it heard it from: N d - (N - 1) = N (d - 1) + 1."""
    return n * (d - 1) + 1


def hops(n: int, d: float) -> float:
    """Mean hops from a message's origin to a node: ln N / ln(d - 1), the distance across a random graph in which
    every node passes a message on to d - 1 new peers. An estimate, not an identity: the mesh is random because
    connection upkeep tops up from random members of the registry (``node/topology.py``), not only peers of
    peers (which made it a band along the join order, its hops linear in N)."""
    return math.log(n) / math.log(d - 1)


def ihave_peers(outside: float, count: Callable[[int], int]) -> float:
    """Peers a node sends IHAVE to each heartbeat: the router's ``count`` of its ``outside`` connected non-mesh
    peers (c - d on average), or all of them when that is fewer."""
    return min(outside, count(round(outside)))


def job_messages(runners: int, versions: int, replicas: bool) -> int:
    """m: the job, its allocation (replicas jobs), and every runner's execution versions."""
    return 1 + (1 if replicas else 0) + runners * versions


def gossip_per_job(n: int, d: float, m: int) -> float:
    """Transmissions per job over the whole cluster (divide by N for one node's sends or receipts)."""
    return m * copies(n, d)


def job_row_bytes(body: int, job_id: int = 36, origin: int = 52) -> float:
    """A job row: its JSON, the columns beside it (ID, origin, time, status, change number) and its indexes
    (the ID's unique index, by time, by status, by change)."""
    row = body + job_id + origin + 8 + 9 + 1 + 8 + INDEX_CELL
    indexes = (job_id + INDEX_CELL) + (16 + INDEX_CELL) + (9 + 16 + INDEX_CELL) + (8 + INDEX_CELL)
    return row + indexes


def execution_row_bytes(body: int, job_id: int = 36, node_id: int = 52) -> float:
    """An execution row: its JSON, the key columns (job, node, state, version, change number) and its indexes
    (primary key, by node and state, by change)."""
    row = body + job_id + node_id + 9 + 2 + 8 + INDEX_CELL
    indexes = (job_id + node_id + INDEX_CELL) + (node_id + 9 + INDEX_CELL) + (8 + INDEX_CELL)
    return row + indexes


def allocation_row_bytes(body: int, job_id: int = 36, by: int = 52) -> float:
    """An allocation row: its JSON, the columns beside it (job ID, version, writer, change number) and its
    indexes (the job ID's primary key, by change)."""
    row = body + job_id + 2 + by + 8 + INDEX_CELL
    indexes = (job_id + INDEX_CELL) + (8 + INDEX_CELL)
    return row + indexes


def stored_per_job(job: float, execution: float, allocation: float, runners: int) -> float:
    """Bytes each node stores per job: the job, one execution row per runner (its last version), the allocation."""
    return job + runners * execution + allocation


DOWN_AFTER = 3
"""Record intervals a node may stay silent before it is down (``node/registry.py``)."""


def record_interval_at(n: int, h: float, nodes_per_beat: int | None, cap: float = 3600.0) -> float:
    """Seconds between an idle node's records: h (``--heartbeat``, or the refresh once lost notices are on),
    spaced out to h N / nodes_per_beat beyond that many nodes (``node/heartbeat.py``), so the cluster carries
    about nodes_per_beat / h records a second; at most ``cap`` (the most a record may promise)."""
    return min(cap, h if nodes_per_beat is None else h * max(1.0, n / nodes_per_beat))


def record_copies_per_second(n: int, d: float, h: float) -> float:
    """Node-record copies one node receives per second: N/h records a second cluster-wide, each costing
    N (d - 1) + 1 transmissions shared among N nodes."""
    return copies(n, d) / h


def ihave_bytes_per_second(ihave_peers: float, n: int, h: float, window: int, heartbeat: float) -> float:
    """IHAVE bytes one node sends per second: to ``ihave_peers`` peers each heartbeat, the IDs of every message
    it saw in the last ``window`` heartbeats (N/h records a second)."""
    ids = n / h * window * heartbeat
    return ihave_peers * ids * ID_HEX_BYTES / heartbeat


def anti_entropy_rounds(n: int, c: float, k: int | None) -> float:
    """Catch-up rounds per interval, cluster-wide: N c when every node asks every connected peer, N min(k, c)
    when it asks k of them."""
    return n * (c if k is None else min(k, c))


def records_share(c: float, k: int | None, interval: float, records_every: float | None) -> float:
    """The share of periodic rounds whose first page carries every node record: a node asks for them at most
    once per ``records_every`` (None: in every round), over min(k, c) rounds per interval."""
    if records_every is None:
        return 1.0
    return min(1.0, interval / (records_every * (c if k is None else min(k, c))))


def anti_entropy_per_node(n: int, c: float, k: int | None, light: float, full: float, share: float,
                          interval: float) -> float:  # fmt: skip
    """Mean cost per node per second of anti-entropy when nothing is new (CPU seconds, or bytes): each round
    costs ``light`` (an empty page), or ``full`` when it carries the node records (``share`` of them); every
    round is asked by one node and served by another, so per node: rounds/N of each side."""
    return anti_entropy_rounds(n, c, k) / n * ((1 - share) * light + share * full) / interval


def catch_up_seconds(rows: int, rate: float, fixed: float = 0.0) -> float:
    """A joiner's catch-up: the rows it must store (jobs, executions, allocations) at the measured rate, after
    a fixed cost (the first page's round trip)."""
    return fixed + rows / rate
