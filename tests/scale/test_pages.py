"""Catch-up pages (node/syncpage.py, node/sync.py): bounded in bytes and in entries, each job with its
executions, what the receiver holds already skipped unchecked, the next page fetched while one is merged (never
more than three held), a page's finished jobs recorded in one write, and the previous version's requests and
answers still understood."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.request_response import RequestTimeoutError

import node.synccheck
from node.identity import Identity, load_or_create
from node.model import State
from node.sync import PAGE_SIZE, watermark_key
from node.syncpage import read_page
from node.trust import sign_cancel

from .helpers import Side, execution_of, job_of, side


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    return {name: load_or_create(tmp_path / name) for name in ("sender", "joiner", "runner")}


async def _fill(sender: Side, ids: dict[str, Identity], count: int, *, size: int = 0) -> list[str]:
    jobs = [job_of(ids["sender"], f"j{i:04}", size=size) for i in range(count)]
    await sender.store.add_jobs([(job, execution_of(ids["runner"], job.job_id)) for job in jobs])
    return [job.job_id for job in jobs]


async def test_pages_are_bounded_in_bytes_and_entries_and_cover_every_change(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender:
        job_ids = await _fill(sender, ids, 300, size=1000)
        # executions changed later than their jobs' pages
        await sender.store.put_executions([execution_of(ids["runner"], j, version=4) for j in job_ids[:50]])
        since, seen_jobs, seen_execs, pages = 0, [], set(), 0
        while True:
            page = await sender.store.query(
                lambda c, since=since, head=sender.store.head: read_page(c, since, limit=40, max_bytes=8_000, head=head)
            )
            assert page.size <= 8_000 or len(page.jobs) + len(page.executions) == 1
            assert len(page.jobs) <= 40
            assert page.upto > since and page.head == sender.store.head
            seen_jobs += [job_id for job_id, _, _ in page.jobs]
            for body in page.executions:
                seen_execs.add((json.loads(body)["job_id"], json.loads(body)["version"]))
            for job_id, _, _ in page.jobs:  # every job comes with its execution, whichever page changed it
                assert any(json.loads(b)["job_id"] == job_id for b in page.executions), job_id
            since, pages = page.upto, pages + 1
            if not page.more:
                break
        assert sorted(seen_jobs) == job_ids  # each job once
        assert {(j, 4) for j in job_ids[:50]} | {(j, 3) for j in job_ids[50:]} <= seen_execs
        assert pages >= 300 * 1000 // 8_000


async def test_a_round_of_small_pages_brings_everything(tmp_path: Path, ids: dict[str, Identity]) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        job_ids = await _fill(sender, ids, 400)
        await sender.store.put_executions([execution_of(ids["runner"], j, version=5) for j in job_ids[::7]])

        async def request(body: dict[str, Any]) -> Any:
            return await sender.sync.serve({**body, "max_bytes": 10_000})

        pages = (await joiner.sync.catch_up(ids["sender"].node_id, request)).pages
        assert pages > 10
        for job_id in job_ids:
            executions = await joiner.store.executions_of(job_id)
            assert [e.version for e in executions] == [5 if job_ids.index(job_id) % 7 == 0 else 3], job_id
        assert joiner.sync.stats.jobs == 400 and joiner.runs == []
        assert await joiner.store.get_meta(watermark_key(ids["sender"].node_id)) == str(sender.store.head)


async def test_what_the_joiner_holds_is_not_checked_again(
    tmp_path: Path, ids: dict[str, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    for name in ("parse_job", "parse_execution"):
        real = getattr(node.synccheck, name)
        monkeypatch.setattr(
            node.synccheck, name, lambda data, _real=real, _name=name: checked.append(_name) or _real(data)
        )
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        job_ids = await _fill(sender, ids, 20)
        # the joiner's own execution of a job: only it writes that one, so it is never taken from a peer
        await sender.store.put_executions([execution_of(ids["joiner"], job_ids[0])])
        page = await sender.sync.serve({"since": 0, "limit": 1000})
        await joiner.sync.apply_page(page, 0)
        assert checked.count("parse_job") == 20 and checked.count("parse_execution") == 20
        checked.clear()
        await joiner.sync.apply_page(page, 0)  # the same page again: all held, nothing checked
        assert checked == []
        newer = execution_of(ids["runner"], job_ids[1], version=9)
        await sender.store.put_executions([newer])
        await joiner.sync.apply_page(await sender.sync.serve({"since": 0, "limit": 1000}), 0)
        assert checked == ["parse_execution"]  # only the newer version
        assert [e.version for e in await joiner.store.executions_of(job_ids[1])] == [9]


async def test_pages_are_fetched_checked_and_merged_at_once_never_more(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        await _fill(sender, ids, 200)
        held, most = 0, 0
        merge = joiner.sync._merge

        async def request(body: dict[str, Any]) -> Any:
            nonlocal held, most
            page = await sender.sync.serve({**body, "max_bytes": 5_000})
            held += 1
            most = max(most, held)
            return page

        async def merged(checked: Any, *args: Any) -> tuple[int, bool]:
            nonlocal held
            result = await merge(checked, *args)
            held -= 1
            return result

        joiner.sync._merge = merged  # type: ignore[method-assign]
        pages = (await joiner.sync.catch_up(ids["sender"].node_id, request)).pages
        assert pages > 10 and held == 0
        assert most == 3  # one merged, the next checked, the one after fetched meanwhile
        assert joiner.sync.stats.jobs == 200


async def test_a_request_failing_mid_round_fails_it_and_the_next_round_resumes(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        job_ids = await _fill(sender, ids, 200)
        asked: list[int] = []

        async def request(body: dict[str, Any]) -> Any:
            asked.append(body["since"])
            if len(asked) == 4:
                raise RequestTimeoutError("the peer went away")
            return await sender.sync.serve({**body, "max_bytes": 5_000})

        with trio.fail_after(10), pytest.raises(RequestTimeoutError):  # itself, not wrapped in a group
            await joiner.sync.catch_up(ids["sender"].node_id, request)
        kept = int(await joiner.store.get_meta(watermark_key(ids["sender"].node_id)) or 0)
        assert 0 < kept <= asked[3]  # what was merged is remembered
        await joiner.sync.catch_up(ids["sender"].node_id, request)
        assert asked[4] == kept
        assert all([await joiner.store.get_job(j) for j in job_ids])


async def test_finished_jobs_of_a_page_are_recorded_in_one_write(tmp_path: Path, ids: dict[str, Identity]) -> None:
    untrusted = load_or_create(tmp_path / "untrusted")
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        job_ids = await _fill(sender, ids, 100)
        active = job_of(ids["sender"], "active")
        await sender.store.add_job(active, execution_of(ids["runner"], "active", State.RUNNING, version=2))
        stopped = job_of(ids["sender"], "stopped")
        await sender.store.add_job(stopped, execution_of(ids["runner"], "stopped", State.RUNNING, version=2))
        joiner.replica.trust = type(joiner.replica.trust)(node_id=ids["joiner"].node_id,
                                                          trusted=frozenset({ids["sender"].node_id}))  # fmt: skip
        refused = job_of(untrusted, "refused")
        jobs = [(j.job, None) for j in [r for r in [await sender.store.get_job(i) for i in job_ids] if r]]
        await joiner.store.put_executions([execution_of(ids["runner"], j) for j in job_ids])
        commits = joiner.store.commits
        assert await joiner.replica.on_jobs(jobs) == [True] * 100
        assert joiner.store.commits - commits == 1  # the 100 finished ones in one write, not 100
        outcomes = await joiner.replica.on_jobs(
            [(active, None), (stopped, sign_cancel(ids["sender"], "stopped")), (refused, None)]
        )
        assert outcomes[:2] == [True, True]
        assert isinstance(outcomes[2], Exception) and getattr(outcomes[2], "reason", "") == "untrusted"
        assert joiner.runs == ["active"]  # still running elsewhere: runs here too (placement all)
        record = await joiner.store.get_job("stopped")
        assert record is not None and record.cancelled
        assert await joiner.replica.on_jobs(jobs[:3]) == [False] * 3  # known: left as they are


async def test_a_node_of_the_previous_version_is_served_as_before(tmp_path: Path, ids: dict[str, Identity]) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender:
        await _fill(sender, ids, 300)
        page = await sender.sync.serve({"since": 0, "limit": PAGE_SIZE, "nodes": True})  # no max_bytes
        assert set(page) >= {"jobs", "executions", "allocations", "upto", "head", "more"}
        assert len(page["jobs"]) <= PAGE_SIZE and page["more"] is True
        assert {e["job_id"] for e in page["executions"]} == {e["job"]["job_id"] for e in page["jobs"]}


async def test_a_peer_of_the_previous_version_is_caught_up_from(tmp_path: Path, ids: dict[str, Identity]) -> None:
    """Its pages hold at most 200 entries of each kind, whatever this node asks, and no executions attached."""
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        job_ids = await _fill(sender, ids, 250)

        async def old_peer(body: dict[str, Any]) -> Any:
            changes = await sender.store.changes_since(body["since"], limit=min(body["limit"], PAGE_SIZE))
            return {
                "jobs": [{"job": j.to_json(), "cancelled": c, "cancel": None} for j, c in changes.jobs],
                "executions": [e.to_json() for e in changes.executions],
                "upto": changes.upto,
                "head": changes.head,
                "more": changes.more,
            }

        assert (await joiner.sync.catch_up(ids["sender"].node_id, old_peer)).pages >= 2
        assert all([await joiner.store.get_job(j) for j in job_ids])
        assert len(await joiner.store.executions_of(job_ids[-1])) == 1
