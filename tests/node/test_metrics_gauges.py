"""The leak gauges of /metrics (node/metrics.py) on their own: trio tasks alive and the store's file sizes. The
real node's figures are read in tests/purge/test_purge_metrics.py."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from node.metrics import store_files, trio_tasks


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


def test_store_files_are_the_db_and_its_wal(tmp_path: Path) -> None:
    db = tmp_path / "cmnode.db"
    assert store_files(db) == {"db": 0, "wal": 0}
    db.write_bytes(b"x" * 4096)
    (tmp_path / "cmnode.db-wal").write_bytes(b"y" * 100)
    assert store_files(db) == {"db": 4096, "wal": 100}
