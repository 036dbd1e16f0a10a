"""Checking a catch-up page's entries: each through the one checker and its signature, as gossip's are.

Pure CPU and no shared state, so ``node/sync.py`` runs it in worker threads while the trio thread (RPC, gossip)
and the store's writer carry on. Nothing here raises: a bad entry is returned as a drop with its reason.

Verifying signatures is most of it (libsodium's Ed25519, ~42 us each, two per job with an execution), and PyNaCl
releases the GIL while it runs: ``check_in_threads`` splits a page over ``CHECK_THREADS`` threads, which verify
at once on a machine with cores to spare.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from .allocation import Allocation
from .model import Cancel, Execution, Job
from .wire import WireError, parse_allocation, parse_cancel, parse_execution, parse_job

__all__ = ["CHECK_THREADS", "Checked", "cancel_of", "check_entries", "check_in_threads", "check_threads"]


def check_threads(cpus: int | None) -> int:
    """How many threads check a page on a machine of ``cpus`` cores (``CHECK_THREADS`` says why)."""
    return 1 if (cpus or 1) <= 2 else 2


CHECK_THREADS = check_threads(os.cpu_count())
"""Worker threads checking one page (each entry in one of them): one on two cores. Only libsodium runs without
the GIL; the checker, canonical JSON and the objects built hold it (a third of a check), and so do the store's
writer and the trio thread between their SQLite calls. On two cores shared with the sender, a second checking
thread won no verification time and cost the writer its GIL hand-offs (``benchmarks/catchup.py --baseline``,
100,000 jobs: 27.4 s with one against 29.1 s with two in the same run, the joiner's CPU 29.1 s against 33.4 s).
Machines with more cores keep two (not measured here)."""


@dataclass
class Checked:
    """A page's entries that passed the checker and their signatures, why the others were dropped, and the
    watermark and ``more`` of the page."""

    upto: int = 0
    more: bool = False
    executions: list[Execution] = field(default_factory=list)
    allocations: list[Allocation] = field(default_factory=list)
    jobs: dict[str, tuple[Job, Cancel | None]] = field(default_factory=dict)
    drops: list[tuple[str, Exception]] = field(default_factory=list)
    store: str | None = None
    """The sender's store (its ``run_id``, as it says)."""


def check_entries(jobs: list[Any], executions: list[Any], allocations: list[Any]) -> Checked:
    """Every entry through the one checker and its signature check (pure CPU: run in a worker thread)."""
    out = Checked()
    for entry in executions:
        try:
            out.executions.append(parse_execution(entry))
        except WireError as exc:
            out.drops.append((exc.reason, exc))
        except Exception as exc:  # a parser bug must cost one entry, not the node
            out.drops.append(("error", exc))
    for entry in allocations:
        try:
            out.allocations.append(parse_allocation(entry))
        except WireError as exc:
            out.drops.append((exc.reason, exc))
        except Exception as exc:
            out.drops.append(("error", exc))
    for entry in jobs:
        try:
            if not isinstance(entry, dict):
                raise WireError("malformed", "sync job entry")
            job = parse_job(entry.get("job"))
        except WireError as exc:
            out.drops.append((exc.reason, exc))
            continue
        except Exception as exc:
            out.drops.append(("error", exc))
            continue
        out.jobs[job.job_id] = (job, cancel_of(entry, job, out.drops))
    return out


async def check_in_threads(jobs: list[Any], executions: list[Any], allocations: list[Any]) -> Checked:
    """``check_entries`` of the page, split over ``CHECK_THREADS`` worker threads run at once; the entries in
    their order (drops too)."""
    n = CHECK_THREADS if len(jobs) + len(executions) >= 2 * CHECK_THREADS else 1
    parts: list[Checked] = [Checked() for _ in range(n)]

    async def check(i: int) -> None:
        work = partial(check_entries, _part(jobs, i, n), _part(executions, i, n), allocations if i == 0 else [])
        parts[i] = await trio.to_thread.run_sync(work)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(check, i)
    out = parts[0]
    for part in parts[1:]:
        out.executions += part.executions
        out.jobs.update(part.jobs)
        out.drops += part.drops
    return out


def _part(entries: list[Any], i: int, n: int) -> list[Any]:
    return entries[i * len(entries) // n : (i + 1) * len(entries) // n]


def cancel_of(entry: dict[str, Any], job: Job, drops: list[tuple[str, Exception]]) -> Cancel | None:
    """The entry's signed cancel, if any and verified; a bad one is dropped and counted, the job kept."""
    data = entry.get("cancel")
    if data is None:
        return None
    try:
        cancel = parse_cancel(data)
        if cancel.job_id != job.job_id:
            raise WireError("malformed", f"cancel of {cancel.job_id} with job {job.job_id}")
        return cancel
    except WireError as exc:
        drops.append((exc.reason, exc))
    except Exception as exc:
        drops.append(("error", exc))
    return None
