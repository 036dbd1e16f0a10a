"""Catch-up's reads of the store: the page a peer asked for, and what this node already holds of a page it got.

A page (``read_page``) is what changed after a change number, oldest first, bounded twice: in entries per kind
(``limit``) and in bytes (``max_bytes``, the stored JSON bodies summed), so that neither side ever holds more
than a few megabytes of it, however large the jobs. Each job comes with every execution of it changed after the
requester's watermark, even those changed later than the page reaches: a node merging the page then knows
whether the job is still running somewhere before deciding to run it (without them, a page boundary between a
job and its execution made a late joiner run a job that had finished everywhere). Those executions are sent
again in their own turn; the receiver skips what it holds already (``held``).

Rows the requester gave this node itself (ranges of change numbers, ``skip``) are left out, the watermark passing
over them (``node/sync.py`` says why). Rows stay the JSON text they are stored as: the serving side re-reads
nothing per job, and the receiving side checks and verifies only what it does not hold yet. The SQL runs on the
store's read connection (``Store.query``), one snapshot per read.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .model import State
from .store import Store

__all__ = ["Held", "RawPage", "held", "read_page"]

_FINAL = frozenset(s.value for s in State if s.final)


@dataclass(frozen=True, kw_only=True)
class RawPage:
    """One page of changes as stored: ``jobs`` as (job ID, body, cancelled), the others as bodies.

    ``upto`` is the change number the requester may remember as seen; ``more`` says another page follows;
    ``head`` is the highest number in the store (lower than a requester's watermark: this store was replaced)."""

    jobs: list[tuple[str, str, bool]]
    executions: list[str]
    allocations: list[str]
    upto: int
    head: int
    more: bool
    size: int = 0
    """The bytes of the bodies in the page."""


MIN_ROW_BYTES = 300
"""Fewer bytes than any stored job or execution body: a page of ``max_bytes`` reads at most ``max_bytes //
MIN_ROW_BYTES`` rows of each kind (reading ``limit`` rows for the ~1,300 a page of 1 MB holds was most of the
sender's cost). Smaller rows only end a page on that count instead of on bytes."""
MAX_SKIPPED = 64
"""Ranges of ``skip`` at most put in the query (the lowest above the watermark); rows in others are sent."""


def read_page(
    conn: sqlite3.Connection,
    since: int,
    *,
    limit: int,
    max_bytes: int,
    head: int,
    skip: Sequence[tuple[int, int]] = (),
) -> RawPage:
    """The changes after ``since`` (see the module's docstring); at least one entry when there is any, even one
    larger than ``max_bytes``. ``head``: the store's (``Store.head``), passed on. ``skip``: ranges of change
    numbers (first, last) whose rows the requester holds (``node/sync.py``): left out, the watermark passing
    over them."""
    limit = max(1, min(limit, max_bytes // MIN_ROW_BYTES))
    ranges = sorted(r for r in skip if r[1] > since)[:MAX_SKIPPED]
    besides = "".join(" AND chg NOT BETWEEN ? AND ?" for _ in ranges)
    bounds = [n for r in ranges for n in r]
    conn.execute("BEGIN")  # one snapshot for every table, or a commit between two reads could be skipped
    try:
        jobs = conn.execute(
            f"SELECT chg, job_id, body, cancelled FROM jobs WHERE chg > ?{besides} ORDER BY chg LIMIT ?",
            (since, *bounds, limit),
        ).fetchall()
        execs = conn.execute(
            f"SELECT chg, job_id, node_id, body FROM executions WHERE chg > ?{besides} ORDER BY chg LIMIT ?",
            (since, *bounds, limit),
        ).fetchall()
        allocs = conn.execute(
            f"SELECT chg, body FROM allocations WHERE chg > ?{besides} ORDER BY chg LIMIT ?", (since, *bounds, limit)
        ).fetchall()
        attached: dict[str, list[tuple[str, str]]] = {}  # job ID -> [(node ID, body)] changed after ``since``
        ids = json.dumps([row[1] for row in jobs])
        for job_id, node_id, body in conn.execute(
            "SELECT job_id, node_id, body FROM executions WHERE job_id IN (SELECT value FROM json_each(?)) "
            f"AND chg > ?{besides}",
            (ids, since, *bounds),
        ):
            attached.setdefault(job_id, []).append((node_id, body))
        # the highest number committed: with nothing more to send, the watermark passes skipped rows up to it
        top = conn.execute(_TOP).fetchone()[0] or 0
    finally:
        conn.execute("COMMIT")
    # A full list may hide later rows of its kind: nothing past the lowest end of a full list is sent.
    ends = [rows[-1][0] for rows in (jobs, execs, allocs) if len(rows) == limit]
    cut = min(ends) if ends else None
    out_jobs: list[tuple[str, str, bool]] = []
    out_execs: list[str] = []
    out_allocs: list[str] = []
    sent: set[tuple[str, str]] = set()  # executions already attached to their job
    size, upto, stopped = 0, since, False
    rows = heapq.merge(
        ((r[0], 0, r) for r in jobs), ((r[0], 1, r) for r in execs), ((r[0], 2, r) for r in allocs)
    )  # fmt: skip
    for chg, kind, row in rows:
        if cut is not None and chg > cut:
            break
        if kind == 0:
            extra = attached.get(row[1], [])
            cost = len(row[2]) + sum(len(body) for _, body in extra if (row[1], _) not in sent)
        elif kind == 1:
            extra, cost = [], (0 if (row[1], row[2]) in sent else len(row[3]))
        else:
            extra, cost = [], len(row[1])
        if size + cost > max_bytes and upto > since:
            stopped = True
            break
        size += cost
        upto = chg
        if kind == 0:
            out_jobs.append((row[1], row[2], bool(row[3])))
            for node_id, body in extra:
                if (row[1], node_id) not in sent:
                    sent.add((row[1], node_id))
                    out_execs.append(body)
        elif kind == 1:
            if (row[1], row[2]) not in sent:
                sent.add((row[1], row[2]))
                out_execs.append(row[3])
        else:
            out_allocs.append(row[1])
    if not stopped:  # everything up to the cut (or, with no full list, every committed row) was sent or skipped
        upto = max(upto, cut if cut is not None else top)
    return RawPage(jobs=out_jobs, executions=out_execs, allocations=out_allocs, upto=upto, head=head,
                   more=stopped or bool(ends), size=size)  # fmt: skip


@dataclass(frozen=True)
class Held:
    """What this node holds of some jobs: which it knows (or purged), and their executions' versions and states."""

    known: set[str] = field(default_factory=set)
    purged: set[str] = field(default_factory=set)
    executions: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)
    """Job ID -> node ID -> (version, state)."""

    def version(self, job_id: str, node_id: str) -> int | None:
        found = self.executions.get(job_id, {}).get(node_id)
        return found[0] if found is not None else None

    def still_active(self, job_id: str) -> bool:
        """Not final everywhere as far as this node knows: no execution yet, or one still in progress."""
        states = [state for _, state in self.executions.get(job_id, {}).values()]
        return not states or any(state not in _FINAL for state in states)


async def held(store: Store, job_ids: Iterable[str]) -> Held:
    """What ``store`` holds of ``job_ids`` (strings from a peer, matched as they are), in one read."""
    ids = json.dumps(sorted(set(job_ids)))  # ASCII-escaped: any string binds, an odd one matches nothing

    def read(conn: sqlite3.Connection) -> Held:
        conn.execute("BEGIN")
        try:
            known = {r[0] for r in conn.execute(_IN.format("job_id FROM jobs"), (ids,))}
            purged = {r[0] for r in conn.execute(_IN.format("job_id FROM tombstones"), (ids,))}
            executions: dict[str, dict[str, tuple[int, str]]] = {}
            for job_id, node_id, version, state in conn.execute(
                _IN.format("job_id, node_id, version, state FROM executions"), (ids,)
            ):
                executions.setdefault(job_id, {})[node_id] = (version, state)
        finally:
            conn.execute("COMMIT")
        return Held(known=known | purged, purged=purged, executions=executions)

    return await store.query(read)


_TOP = (
    "SELECT MAX(m) FROM (SELECT MAX(chg) AS m FROM jobs UNION ALL SELECT MAX(chg) FROM executions "
    "UNION ALL SELECT MAX(chg) FROM allocations)"
)
_IN = "SELECT {} WHERE job_id IN (SELECT value FROM json_each(?))"
