"""The store's batched writes of a catch-up page (``Store.add_jobs_each``, ``Store.put_executions``) leave the
store exactly as writing each row on its own does: rows, statuses, labels, change events, purged jobs refused,
stale versions ignored."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.store import Change, Store

from .helpers import execution_of, job_of


def _labelled(origin: Identity, job_id: str) -> Job:
    return replace(job_of(origin, job_id), spec=JobSpec(image="busybox", labels={"k": job_id[-1], "all": "1"}))


def _rows(conn: sqlite3.Connection) -> dict[str, Any]:
    return {
        "jobs": conn.execute("SELECT job_id, status, cancelled, body FROM jobs ORDER BY job_id").fetchall(),
        "labels": conn.execute("SELECT job_id, key, value, created_at FROM job_labels ORDER BY job_id").fetchall(),
        "executions": conn.execute(
            "SELECT job_id, node_id, state, version, body FROM executions ORDER BY 1, 2"
        ).fetchall(),
        "label_seq_ok": conn.execute(
            "SELECT COUNT(*) FROM job_labels l JOIN jobs j ON j.seq = l.seq AND j.job_id = l.job_id"
        ).fetchone()[0],
    }


async def _tombstone(store: Store, job_id: str) -> None:
    await store.transact(
        lambda conn: conn.execute(
            "INSERT INTO tombstones (job_id, purged_at, finished_at, retention, why) VALUES (?, ?, ?, ?, ?)",
            (job_id, time.time(), time.time(), 1.0, "test"),
        )
    )


async def test_batched_writes_match_one_row_at_a_time(tmp_path: Path) -> None:
    origin, a, b = (load_or_create(tmp_path / name) for name in ("o", "a", "b"))
    jobs = [_labelled(origin, f"j{i}") for i in range(12)]
    early = [execution_of(a, "j0", State.RUNNING, 2), execution_of(b, "j0", State.COMPLETE, 3),
             execution_of(a, "j1", State.FAILED, 3), execution_of(a, "gone", State.COMPLETE, 3)]  # fmt: skip
    later = [execution_of(a, "j0", State.COMPLETE, 3), execution_of(a, "j1", State.RUNNING, 1),  # stale: ignored
             *(execution_of(b, j.job_id, State.COMPLETE, 3) for j in jobs[2:]), execution_of(b, "j9", State.LOST, 4),
             execution_of(a, "nojob", State.RUNNING, 2)]  # fmt: skip
    mine = Execution(job_id="j11", node_id=a.node_id, state=State.PENDING)
    results: list[Any] = []
    for batched in (False, True):
        events: list[Change] = []
        async with Store.open(tmp_path / f"{batched}.db", durable=False) as store:
            store.watch(events.extend)
            await store.add_job(jobs[0])  # known already
            await _tombstone(store, "j3")
            await _tombstone(store, "gone")
            if batched:
                applied = [*await store.put_executions(early), *await store.put_executions(later)]
                new = await store.add_jobs_each([(j, mine if j.job_id == "j11" else None) for j in [*jobs, jobs[4]]])
            else:
                applied = [e for e in [*early, *later] if await store.put_executions([e])]
                new = [await store.add_jobs_each([(j, mine if j.job_id == "j11" else None)]) == [True]
                       for j in [*jobs, jobs[4]]]  # fmt: skip
            rows = await store.query(_rows)
        kinds = sorted((c.kind, c.job_id, c.status or "") for c in events)
        results.append((rows, [(e.job_id, e.node_id, e.version) for e in applied], new, kinds))
    one, many = results
    assert many[0] == one[0]
    assert many[1] == one[1]
    assert many[2] == one[2]
    assert many[3] == one[3]
    rows, applied, new, _ = many
    assert new == [False, True, True, False, *[True] * 8, False]  # known, purged, a repeat: not new
    assert dict((r[0], r[1]) for r in rows["jobs"])["j0"] == "complete"
    assert dict((r[0], r[1]) for r in rows["jobs"])["j1"] == "failed"  # the stale RUNNING did not win
    assert dict((r[0], r[1]) for r in rows["jobs"])["j9"] == "failed"
    assert dict((r[0], r[1]) for r in rows["jobs"])["j11"] == "pending"
    assert rows["label_seq_ok"] == len(rows["labels"]) == 22
    assert ("gone", a.node_id, 3) not in applied
