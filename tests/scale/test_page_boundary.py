"""A late joiner never runs a job that finished everywhere, wherever a page of catch-up ends.

Defect (found by benchmarks/catchup.py, which counted the finished jobs a joiner ran again): a page held the
changes after the watermark in change order, and an execution's row carries the number of its last change, so a
job and its finished execution could fall on two pages. Merging the first, the joiner knew the job but no
execution of it, judged it still active and ran it. Now each job comes with its executions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from node.identity import load_or_create
from node.model import State

from .helpers import execution_of, job_of, side


async def test_a_job_finished_after_later_jobs_is_not_run_by_a_joiner(tmp_path: Path) -> None:
    sender_id, joiner_id, runner = (load_or_create(tmp_path / name) for name in ("s", "j", "r"))
    async with side(tmp_path / "s.db", sender_id) as sender, side(tmp_path / "j.db", joiner_id) as joiner:
        long_job = job_of(sender_id, "long")
        await sender.store.add_job(long_job)
        await sender.store.put_executions([execution_of(runner, "long", State.RUNNING, version=2)])
        others = [job_of(sender_id, f"j{i}") for i in range(500)]
        await sender.store.add_jobs([(job, execution_of(runner, job.job_id)) for job in others])
        # it finished after all of those were recorded: its execution's row is now the last change
        await sender.store.put_executions([execution_of(runner, "long", State.COMPLETE, version=3)])

        async def small_pages(body: dict[str, Any]) -> Any:  # many pages, so some page ends between the two
            return await sender.sync.serve({**body, "max_bytes": 20_000})

        await joiner.sync.catch_up(sender_id.node_id, small_pages)
        assert joiner.sync.stats.jobs == 501

        assert await joiner.store.get_job("long") is not None
        assert [e.state for e in await joiner.store.executions_of("long")] == [State.COMPLETE]
        assert joiner.runs == []  # every job had finished: none runs on the joiner
