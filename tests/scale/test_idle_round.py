"""An idle catch-up round (nothing changed since the asker's last read: every periodic round of an idle cluster)
costs no store read, no worker thread and no write on either side beyond the asker's watermark read: 30 idle
nodes make 4 such rounds a second (node/catchup.py), and each thread hand-off and write was a wakeup of the
process. The page served is the one ``read_page`` would have built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from node.identity import Identity, load_or_create
from node.store import Store
from node.sync import watermark_key
from node.syncpage import read_page

from .helpers import execution_of, job_of, side


@pytest.fixture
def ids(tmp_path: Path) -> dict[str, Identity]:
    return {name: load_or_create(tmp_path / name) for name in ("sender", "joiner", "runner")}


async def test_an_idle_round_reads_and_writes_nothing(
    tmp_path: Path, ids: dict[str, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with side(tmp_path / "s.db", ids["sender"]) as sender, side(tmp_path / "j.db", ids["joiner"]) as joiner:
        jobs = [job_of(ids["sender"], f"j{i}") for i in range(20)]
        await sender.store.add_jobs([(job, execution_of(ids["runner"], job.job_id)) for job in jobs])

        async def request(body: dict[str, Any]) -> Any:
            return await sender.sync.serve(body)

        assert (await joiner.sync.catch_up(ids["sender"].node_id, request)).jobs == 20
        key = watermark_key(ids["sender"].node_id)
        assert await joiner.store.get_meta(key) == str(sender.store.head)

        threads: list[str] = []
        writes: list[str] = []
        run_sync = trio.to_thread.run_sync
        set_meta = Store.set_meta

        async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
            threads.append(getattr(fn, "__qualname__", repr(fn)))
            return await run_sync(fn, *args, **kwargs)

        async def counted_meta(self: Store, key: str, value: str, **kwargs: Any) -> None:
            writes.append(key)
            await set_meta(self, key, value, **kwargs)

        monkeypatch.setattr(trio.to_thread, "run_sync", counted)
        monkeypatch.setattr(Store, "set_meta", counted_meta)
        for _ in range(3):
            merged = await joiner.sync.catch_up(ids["sender"].node_id, request)
            assert merged.jobs == merged.executions == 0 and merged.pages == 1
        assert writes == []
        assert threads == []  # not even the watermark's read: Sync keeps what it last read or wrote
        assert await joiner.store.get_meta(key) == str(sender.store.head)

        # the page served from the shortcut is the page read_page builds
        head = sender.store.head
        monkeypatch.setattr(trio.to_thread, "run_sync", run_sync)
        served = await sender.sync.serve({"since": head})
        raw = await sender.store.query(lambda c: read_page(c, head, limit=200, max_bytes=1 << 20, head=head))
        assert {k: v for k, v in served.items() if k != "store"} == sender.sync.pages.answer(raw, {})

        # and a change after it is served and taken as before
        late = job_of(ids["sender"], "late")
        await sender.store.add_jobs([(late, execution_of(ids["runner"], late.job_id))])
        merged = await joiner.sync.catch_up(ids["sender"].node_id, request)
        assert merged.jobs == 1 and await joiner.store.get_meta(key) == str(sender.store.head)
