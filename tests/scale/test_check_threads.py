"""A page's entries checked in several worker threads (node/synccheck.py ``check_in_threads``) come out as one
``check_entries`` gives them: the same entries in the same order, the same drops (counted: their order is not
kept)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import node.synccheck
from node.identity import load_or_create
from node.synccheck import check_entries, check_in_threads, check_threads

from .helpers import execution_of, job_of


async def test_checking_in_threads_gives_what_one_thread_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node.synccheck, "CHECK_THREADS", 2)  # one on a two-core machine: split all the same
    origin, runner = load_or_create(tmp_path / "o"), load_or_create(tmp_path / "r")
    jobs = [{"job": job_of(origin, f"j{i:03}").to_json(), "cancelled": False, "cancel": None} for i in range(41)]
    executions = [execution_of(runner, f"j{i:03}").to_json() for i in range(41)]
    jobs[7]["job"]["signature"] = jobs[8]["job"]["signature"]  # a forged job
    executions[30]["version"] = 99  # not what its node signed
    jobs.insert(20, "not an entry")  # type: ignore[arg-type]
    threads: set[int] = set()
    real = node.synccheck.check_entries

    def counted(*args: object) -> node.synccheck.Checked:
        threads.add(threading.get_ident())
        return real(*args)  # type: ignore[arg-type]

    node.synccheck.check_entries = counted  # type: ignore[assignment]
    try:
        split = await check_in_threads(jobs, executions, [])
    finally:
        node.synccheck.check_entries = real
    whole = check_entries(jobs, executions, [])
    assert len(threads) == 2
    assert list(split.jobs) == list(whole.jobs) and len(split.jobs) == 40
    assert split.executions == whole.executions and len(split.executions) == 40
    assert sorted(reason for reason, _ in split.drops) == sorted(reason for reason, _ in whole.drops)
    assert len(split.drops) == 3


def test_one_checking_thread_on_two_cores() -> None:
    """On two cores a second thread only took GIL hand-offs from the store's writer (``CHECK_THREADS``)."""
    assert [check_threads(n) for n in (None, 1, 2, 4, 16)] == [1, 1, 1, 2, 2]
