"""A round of many pages writes in the store's bulk mode (a larger cache, rarer checkpoints) and keeps its
watermark without an fsync of its own; a round of one page, and the store after the round, as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from node.identity import Identity, load_or_create
from node.store import Store
from node.sync import watermark_key

from .helpers import execution_of, job_of, side


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    return {name: load_or_create(tmp_path / name) for name in ("sender", "joiner", "runner")}


def _settings(conn: sqlite3.Connection) -> tuple[int, int]:
    return conn.execute("PRAGMA cache_size").fetchone()[0], conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


async def test_bulk_settings_hold_in_the_block_only(tmp_path: Path) -> None:
    async with Store.open(tmp_path / "s.db") as store:
        plain = await store.transact(_settings)
        with store.bulk():
            assert await store.transact(_settings) == (-16000, 8000)
            with store.bulk():  # nested: still on
                await store.set_meta("a", "1")
            assert await store.transact(_settings) == (-16000, 8000)
        assert await store.transact(_settings) == plain == (-2000, 1000)


async def _round(tmp_path: Path, ids: dict[str, Identity], count: int, max_bytes: int) -> list[Any]:
    """A joiner's round against a sender of ``count`` jobs; what the joiner's writes saw (bulk mode, durable)."""
    seen: list[Any] = []
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        jobs = [job_of(ids["sender"], f"j{i:04}") for i in range(count)]
        await sender.store.add_jobs([(job, execution_of(ids["runner"], job.job_id)) for job in jobs])
        write = joiner.store._write

        async def watched(fn: Any, *, durable: bool = True) -> Any:
            seen.append((joiner.store._bulk > 0, durable))
            return await write(fn, durable=durable)

        joiner.store._write = watched  # type: ignore[method-assign]

        async def request(body: dict[str, Any]) -> Any:
            return await sender.sync.serve({**body, "max_bytes": max_bytes})

        await joiner.sync.catch_up(ids["sender"].node_id, request)
        joiner.store._write = write  # type: ignore[method-assign]
        assert await joiner.store.get_meta(watermark_key(ids["sender"].node_id)) == str(sender.store.head)
        assert len(await joiner.store.list_jobs(limit=1000)) == count
        assert joiner.store._bulk == 0
        assert await joiner.store.transact(_settings) == (-2000, 1000)
    return seen


async def test_a_round_of_many_pages_writes_in_bulk_without_an_fsync_per_page(
    tmp_path: Path, ids: dict[str, Identity]
) -> None:
    seen = await _round(tmp_path, ids, 200, 10_000)
    assert len(seen) > 10
    assert seen[0][0] is False  # the first page: one page may be all there is
    assert all(bulk for bulk, _ in seen[3:])
    assert not any(durable for _, durable in seen)  # rows and watermarks alike: the WAL keeps them in order


async def test_a_round_of_one_page_stays_out_of_bulk(tmp_path: Path, ids: dict[str, Identity]) -> None:
    seen = await _round(tmp_path, ids, 5, 500_000)
    assert seen and not any(bulk for bulk, _ in seen)
