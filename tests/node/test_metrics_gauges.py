"""The leak gauges of /metrics (node/metrics.py) on their own: trio tasks alive and the store's file sizes. The
real node's figures are read in tests/purge/test_purge_metrics.py."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.metrics import store_files, trio_tasks, trio_tasks_by_name


async def test_trio_tasks_counts_the_tasks_alive_in_every_nursery() -> None:
    before = trio_tasks()
    async with trio.open_nursery() as outer:
        outer.start_soon(trio.sleep_forever)

        async def parent() -> None:
            async with trio.open_nursery() as inner:
                inner.start_soon(trio.sleep_forever)
                inner.start_soon(trio.sleep_forever)

        outer.start_soon(parent)
        await trio.testing.wait_all_tasks_blocked()
        assert trio_tasks() == before + 4  # a sleeper, the parent and its two
        outer.cancel_scope.cancel()
    assert trio_tasks() == before


async def sleeper() -> None:
    await trio.sleep_forever()


async def test_tasks_by_name_tell_which_tasks_are_alive_and_stay_a_bounded_set() -> None:
    before = trio_tasks_by_name()
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(sleeper)
        nursery.start_soon(trio.sleep_forever, name="named")
        await trio.testing.wait_all_tasks_blocked()
        now = trio_tasks_by_name()
        assert now - before == {f"{__name__}.sleeper": 3, "named": 1}
        assert now.total() == trio_tasks()
        few = trio_tasks_by_name(limit=2)  # the commonest name, and the rest as one
        assert len(few) == 2 and few.total() == now.total() and "other" in few
        assert few[f"{__name__}.sleeper"] == 3
        nursery.cancel_scope.cancel()
    assert trio_tasks_by_name() == before


def test_store_files_are_the_db_and_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "cmnode.db"
    assert store_files(db) == {"db": 0, "wal": 0}
    db.write_bytes(b"x" * 4096)
    (tmp_path / "cmnode.db-wal").write_bytes(b"y" * 100)
    assert store_files(db) == {"db": 4096, "wal": 100}
