"""A node does not send back to a peer what that peer just gave it (``run_id`` in node/sync.py, ``Echoes`` in
node/syncserve.py).

Defect (found by py-spy on benchmarks/catchup.py: a fifth of the joiner's time): the rows a joiner writes from a
peer's pages get new change numbers in its store, so the peer's own round with the joiner fetched every one of
them back (100,000 jobs and their executions read, encoded, sent, decoded and skipped). Now each node names its
store (per process) in its requests and pages, remembers which of its rows hold exactly what a peer's store sent,
and leaves those out of its answers to that store; what it changed itself still goes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.identity import Identity, load_or_create
from node.model import Execution, State
from node.sync import watermark_key

from .helpers import Side, execution_of, job_of, side


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    return {name: load_or_create(tmp_path / name) for name in ("sender", "joiner", "runner", "third")}


def serving(server: Side, sent: list[dict[str, Any]], **extra: Any) -> Any:
    """``server``'s answers (small pages), each kept in ``sent``."""

    async def request(body: dict[str, Any]) -> Any:
        page = await server.sync.serve({**body, "max_bytes": 20_000, **extra})
        sent.append(page)
        return page

    return request


def entries(pages: list[dict[str, Any]]) -> int:
    return sum(len(page["jobs"]) + len(page["executions"]) for page in pages)


async def _joined(tmp_path: Path, ids: dict[str, Identity], sender: Side, joiner: Side) -> list[str]:
    jobs = [job_of(ids["sender"], f"j{i:03}") for i in range(300)]
    await sender.store.add_jobs([(job, execution_of(ids["runner"], job.job_id)) for job in jobs])
    await joiner.sync.catch_up(ids["sender"].node_id, serving(sender, []))
    assert joiner.sync.stats.jobs == 300 and joiner.sync.stats.executions == 300
    return [job.job_id for job in jobs]


async def test_what_a_peer_gave_is_not_sent_back_to_it(tmp_path: Path, ids: dict[str, Identity]) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        await _joined(tmp_path, ids, sender, joiner)
        sent: list[dict[str, Any]] = []
        await sender.sync.catch_up(ids["joiner"].node_id, serving(joiner, sent))
        assert entries(sent) == 0  # was 600: every job and execution the joiner had just been given
        assert len(sent) == 1
        # the watermark passes over them: the next round starts after them
        assert await sender.store.get_meta(watermark_key(ids["joiner"].node_id)) == str(joiner.store.head)


async def test_what_the_joiner_changed_itself_still_reaches_the_sender(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    async with (
        side(tmp_path / "s.db", ids["sender"]) as sender,
        side(tmp_path / "j.db", ids["joiner"]) as joiner,
        side(tmp_path / "t.db", ids["third"]) as third,
    ):
        job_ids = await _joined(tmp_path, ids, sender, joiner)
        # the joiner's own job and its own execution of one the sender gave it
        own = job_of(ids["joiner"], "own")
        await joiner.store.add_job(own, Execution(job_id="own", node_id=ids["joiner"].node_id, state=State.RUNNING))
        await joiner.store.put_execution(
            Execution(job_id=job_ids[5], node_id=ids["joiner"].node_id, state=State.COMPLETE, version=2)
        )
        # a newer execution of a job the sender gave, learned from a third node
        await third.store.add_jobs(
            [(job_of(ids["sender"], job_ids[7]), execution_of(ids["runner"], job_ids[7], version=9))]
        )
        await joiner.sync.catch_up(ids["third"].node_id, serving(third, []))

        sent: list[dict[str, Any]] = []
        await sender.sync.catch_up(ids["joiner"].node_id, serving(joiner, sent))
        assert entries(sent) == 4  # the joiner's job, with its execution; its other execution; the third's
        assert await sender.store.get_job("own") is not None
        held = {
            (e.job_id, e.node_id): e
            for j in ("own", job_ids[5], job_ids[7])
            for e in await sender.store.executions_of(j)
        }
        assert held[("own", ids["joiner"].node_id)].state == State.RUNNING
        assert held[(job_ids[5], ids["joiner"].node_id)].state == State.COMPLETE
        assert held[(job_ids[7], ids["runner"].node_id)].version == 9


async def test_a_node_that_names_no_store_or_another_store_gets_everything(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        await _joined(tmp_path, ids, sender, joiner)
        old: list[dict[str, Any]] = []  # a node of the previous version asks without "store"
        await serving(joiner, old, store=None)({"since": 0, "limit": 10_000})
        restarted: list[dict[str, Any]] = []  # the sender restarted: its store may have been replaced
        await serving(joiner, restarted, store=f"{ids['sender'].node_id}/0123456789abcdef")({"since": 0})
        assert entries(old) > 0 and entries(restarted) > 0


async def test_a_page_claiming_another_nodes_store_records_nothing(tmp_path: Path, ids: dict[str, Identity]) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        jobs = [job_of(ids["sender"], f"j{i:03}") for i in range(20)]
        await sender.store.add_jobs([(job, execution_of(ids["runner"], job.job_id)) for job in jobs])
        third_store = f"{ids['third'].node_id}/0123456789abcdef"

        async def lying(body: dict[str, Any]) -> Any:  # the sender says its pages come from the third's store
            return {**await sender.sync.serve(body), "store": third_store}

        await joiner.sync.catch_up(ids["sender"].node_id, lying)
        assert joiner.sync.stats.jobs == 20
        third_asks: list[dict[str, Any]] = []
        await serving(joiner, third_asks, store=third_store)({"since": 0})
        assert entries(third_asks) == 40  # the third node is sent every row: it gave none of them
