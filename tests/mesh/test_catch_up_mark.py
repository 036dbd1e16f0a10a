"""A periodic round tells the peer how far the asker's store is (``"mark"``), and the peer pulls back only when
that moved since it last read the asker: the push half of anti-entropy, with real stores and real ``Sync``.

Y never ticks (its interval is an hour), so what X made after the connection rounds can reach Y only through
X's periodic rounds' marks. An idle store's head must read the same in X's mark and in X's answers, or every
periodic round would cost a second one. Requests are plain function calls (``test_catch_up_spread.Line``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from node.catchup import Catchup
from node.identity import load_or_create
from node.model import State

from .fakes import signed_execution, signed_job
from .test_catch_up_round import replica_node
from .test_catch_up_spread import Line

TICK = 0.02


async def _until(condition: Callable[[], bool | Awaitable[bool]]) -> None:
    with trio.fail_after(10):
        while not ((await met) if isinstance(met := condition(), Awaitable) else met):
            await trio.sleep(0.01)


async def test_a_moved_mark_makes_the_peer_pull_back_once_and_an_idle_one_never(tmp_path: Path) -> None:
    x_id, y_id = (load_or_create(tmp_path / name) for name in ("x", "y"))
    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (y_store, y_sync),
    ):
        before = signed_job(x_id, "before")
        await x_store.add_job(before)
        await x_store.put_executions([signed_execution(x_id, before.job_id, state=State.COMPLETE, version=2)])
        line = Line([(x_id.peer_id, y_id.peer_id)])
        x = line.nodes[x_id.peer_id] = Catchup(sync=x_sync, peers=list, meet=lambda a: None, interval=TICK)
        y = line.nodes[y_id.peer_id] = Catchup(sync=y_sync, peers=list, meet=lambda a: None, interval=3600)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(x.run, line.host(x_id.peer_id))
            nursery.start_soon(y.run, line.host(y_id.peer_id))
            y.on_connect(x_id.peer_id)  # the connection rounds
            x.on_connect(y_id.peer_id)
            await _until(lambda: x_sync.stats.rounds >= 1 and y_sync.stats.rounds >= 1)
            assert await y_store.get_job(before.job_id) is not None

            await _until(lambda: x.rounds.periodic >= 5)  # idle: X's mark is the head Y read
            assert y.rounds.pull_backs == 0

            job = signed_job(x_id, "after")  # made on X after the connection rounds; no gossip carries it
            await x_store.add_job(job, signed_execution(x_id, job.job_id, state=State.COMPLETE, version=3))

            async def y_has_it() -> bool:
                got = await y_store.get_job_with_executions(job.job_id)
                return got is not None and [e.version for e in got[1]] == [3]

            await _until(y_has_it)
            periodic = x.rounds.periodic
            await _until(lambda: x.rounds.periodic >= periodic + 5)  # idle again: no more pull-backs
            assert y.rounds.pull_backs == 1
            nursery.cancel_scope.cancel()
        assert y.rounds.periodic == 0  # it was the pull-back that brought it
