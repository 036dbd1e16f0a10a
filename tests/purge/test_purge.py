"""Job history retention (node/purge.py, node/tombstones.py) in milliseconds: a real store on an inline thread,
and a wall clock the tests set (``Clock``), so a month passes without a sleep. What counts as finished, purge
order and batching, tombstones refusing a job again (gossip and catch-up), their expiry, Status of a purged job,
its containers, and the store staying bounded under a steady stream of jobs. The real counterpart, with node
processes and dockerd, is tests/purge/test_purge_nodes.py.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from node.allocation import Allocation, sign_allocation
from node.config import resolve_config
from node.core import Node
from node.duration import format_duration, parse_duration
from node.errors import NotFoundError
from node.fake_runtime import FakeRuntime
from node.gossip import Gossip
from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.purge import JobPurge, finished_at
from node.replica import Replica, cancel_key
from node.store import Store
from node.sync import Sync
from node.tombstones import HORIZON_MIN, JobPurged, tombstone_horizon
from node.trust import sign_cancel, sign_execution
from node.wire import ExecutionMsg, JobMsg
from tests.node.test_executor_fake import inline_threads, running  # noqa: F401  (inline_threads: a fixture)
from tests.support import base_config

DAY = 86400.0
T0 = 1_700_000_000.0  # the simulated wall clock starts here


class Clock:
    """The wall clock the purge reads; the test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> tuple[Identity, Identity]:
    root = tmp_path_factory.mktemp("ids")
    return load_or_create(root / "me"), load_or_create(root / "peer")


def job(origin: Identity, job_id: str, created_at: float, **spec: object) -> Job:
    j = Job(job_id=job_id, spec=JobSpec.from_json({"image": "img:1", "arguments": ["x"], **spec}),
            origin=origin.node_id, created_at=created_at)  # fmt: skip
    return replace(j, signature=origin.sign(j.canonical_bytes()))


def ended(node: Identity, job_id: str, at: float, state: State = State.COMPLETE, **fields: object) -> Execution:
    e = Execution(
        job_id=job_id,
        node_id=node.node_id,
        state=state,
        created_at=at - 5,
        updated_at=at,
        started_at=at - 4,
        finished_at=at if state.final else None,
        version=3,
        **fields,
    )  # type: ignore[arg-type]
    return sign_execution(node, e)


@asynccontextmanager
async def opened(tmp_path: Path, name: str = "db.sqlite") -> AsyncIterator[Store]:
    async with Store.open(tmp_path / name, durable=False) as store:
        yield store


async def count(store: Store, table: str) -> int:
    return int(await store.query(lambda conn: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]))


# -- what counts as finished ------------------------------------------------------------------------------------


def test_finished_is_every_execution_final_and_no_copy_wanted() -> None:
    done = [(State.COMPLETE, 10.0), (State.FAILED, 30.0), (State.REJECTED, 20.0)]
    assert finished_at(executions=done, cancelled=False, replicas=False, status="failed", created_at=1) == 30.0
    running = [(State.COMPLETE, 10.0), (State.RUNNING, None)]
    assert finished_at(executions=running, cancelled=True, replicas=False, status="running", created_at=1) is None
    pending = [(State.PENDING, None)]
    assert finished_at(executions=pending, cancelled=False, replicas=False, status="pending", created_at=1) is None
    # No execution anywhere yet: it waits for one (placement found no node), unless it was cancelled.
    assert finished_at(executions=[], cancelled=False, replicas=False, status="pending", created_at=1) is None
    assert finished_at(executions=[], cancelled=True, replicas=False, status="pending", created_at=1,
                       cancelled_at=7.0) == 7.0  # fmt: skip
    assert finished_at(executions=[], cancelled=True, replicas=False, status="pending", created_at=1) == 1
    # A replicas job whose copies failed is still wanted (placement replaces them) until stopped or complete.
    failed = [(State.FAILED, 10.0), (State.RELEASED, 12.0)]
    assert finished_at(executions=failed, cancelled=False, replicas=True, status="failed", created_at=1) is None
    assert finished_at(executions=failed, cancelled=True, replicas=True, status="failed", created_at=1) == 12.0
    complete = [(State.COMPLETE, 10.0)]
    assert finished_at(executions=complete, cancelled=False, replicas=True, status="complete", created_at=1) == 10.0


def test_duration_setting() -> None:
    assert parse_duration("7d") == 7 * DAY and parse_duration("2s") == 2 and parse_duration("1.5") == 1.5
    assert parse_duration(0) == 0 and parse_duration("12h") == 12 * 3600 and parse_duration("30m") == 1800
    for bad in ("-1", "7x", "d", "", True, None, "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert [format_duration(s) for s in (0, 604800, 7200, 90, 1.5, 2)] == ["0", "7d", "2h", "90s", "1.5s", "2s"]
    assert resolve_config({}, None, {}).job_retention == 7 * DAY
    assert resolve_config({"job_retention": "2s"}, None, {}).job_retention == 2
    assert resolve_config({}, None, {"CMNODE_JOB_RETENTION": "0"}).job_retention == 0
    assert tombstone_horizon(DAY) == HORIZON_MIN and tombstone_horizon(30 * DAY) == 120 * DAY


# -- purging -------------------------------------------------------------------------------------------------


async def test_purge_takes_everything_kept_about_a_job_oldest_first_in_batches(
    tmp_path: Path, ids: tuple[Identity, Identity]
) -> None:
    me, peer = ids
    clock = Clock(T0 + 10 * DAY)
    async with opened(tmp_path) as store:
        # Five old jobs, finished; one old job still running; one old job finished only yesterday.
        old = [job(peer, f"old-{i}", T0 + i, labels={"team": "a", "n": str(i)}) for i in range(5)]
        for j in old:
            await store.add_job(j, ended(me, j.job_id, T0 + 100, container_id=f"c-{j.job_id}"))
            await store.put_executions([ended(peer, j.job_id, T0 + 200)])
            await store.put_logs(j.job_id, me.node_id, 1, "out", "err")
        alive = job(peer, "alive", T0 + 0.5)
        await store.add_job(alive, ended(me, "alive", T0 + 1, state=State.RUNNING))
        recent = job(peer, "recent", T0 + 6)
        await store.add_job(recent, ended(me, "recent", clock.now - DAY / 2))
        await store.set_meta(cancel_key("old-0"), json.dumps(sign_cancel(peer, "old-0").to_json()))
        await store.mark_cancelled("old-0")
        replicas = job(peer, "old-0r", T0 + 7, placement={"replicas": 1})
        placed = Allocation(job_id="old-0r", version=1, replicas=1, nodes=(me.node_id,), by=peer.node_id, at=T0)
        await store.put_allocation(sign_allocation(peer, placed))
        await store.add_job(replicas, ended(me, "old-0r", T0 + 9))

        removed: list[str] = []

        async def remove(container_id: str) -> None:
            removed.append(container_id)

        purge = JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock, remove=remove, scan=3)
        cutoff = clock.now - DAY
        first, cursor = await purge.purge_batch(cutoff, None)
        assert first == ["old-0", "old-1", "old-2"]  # the oldest three that are not running ("alive" is)
        assert cursor is not None
        second, cursor = await purge.purge_batch(cutoff, cursor)
        assert second == ["old-3", "old-4"]  # and "recent", which finished after the cutoff
        third, cursor = await purge.purge_batch(cutoff, cursor)
        assert third == ["old-0r"] and cursor is None
        assert removed == [f"c-old-{i}" for i in range(5)]  # this node's containers, not the peer's

        left = await store.list_jobs(limit=100)
        assert {r.job.job_id for r in left} == {"alive", "recent"}
        assert await count(store, "executions") == 2
        assert await count(store, "job_labels") == 0
        assert await count(store, "logs") == 0
        assert await count(store, "allocations") == 0
        assert await store.get_meta(cancel_key("old-0")) is None
        assert await count(store, "tombstones") == 6
        tombstone = await purge.tombstone("old-3")
        assert tombstone is not None and tombstone.finished_at == T0 + 200 and tombstone.purged_at == clock.now
        assert tombstone.reason == "purged on 2023-11-24 22:13:20 UTC after --job-retention 1d"
        # A second pass finds nothing more; once "recent" is old enough, it goes too.
        assert await purge.sweep() == (0, 0)
        clock.now += DAY
        assert await purge.sweep() == (1, 0)
        assert purge.stats.purged == 7


async def test_a_job_back_to_life_between_the_read_and_the_write_is_kept(
    tmp_path: Path, ids: tuple[Identity, Identity]
) -> None:
    me, _ = ids
    clock = Clock(T0 + 10 * DAY)
    async with opened(tmp_path) as store:
        j = job(me, "j", T0)
        await store.add_job(j, ended(me, "j", T0 + 1, state=State.FAILED))
        purge = JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock)
        _, finished = await store.query(lambda conn: purge._candidates(conn, clock.now - DAY, None))
        assert finished == ["j"]
        retry = replace(ended(me, "j", T0 + 2, state=State.PENDING), attempt=2, version=4)
        await store.put_execution(retry)  # a retry starts meanwhile
        purged, _ = await store.transact(lambda conn: purge._purge(conn, finished, clock.now - DAY, clock.now))
        assert purged == [] and await store.get_job("j") is not None


async def test_change_numbers_never_go_back_after_a_purge(tmp_path: Path, ids: tuple[Identity, Identity]) -> None:
    """The newest rows purged, a restart must not hand out their change numbers again: a peer whose watermark
    is past them would skip the new rows that reuse them."""
    me, _ = ids
    clock = Clock(T0 + 10 * DAY)
    async with opened(tmp_path) as store:
        keep = job(me, "keep", T0 + 5, labels={"k": "v"})
        await store.add_job(keep, ended(me, "keep", T0 + 5, state=State.RUNNING))
        gone = job(me, "gone", T0)
        await store.add_job(gone, ended(me, "gone", T0 + 1))
        await store.mark_cancelled("gone")  # now the row with the highest change number
        head = store.head
        assert await JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock).sweep() == (1, 0)
    async with opened(tmp_path) as store:
        assert store.head == head
        changes = await store.changes_since(0)
        assert changes.head == head


async def test_store_guards_refuse_a_purged_jobs_rows(tmp_path: Path, ids: tuple[Identity, Identity]) -> None:
    """A late execution, allocation or output of a purged job is dropped; the job itself raises."""
    me, peer = ids
    clock = Clock(T0 + 10 * DAY)
    async with opened(tmp_path) as store:
        j = job(peer, "j", T0)
        await store.add_job(j, ended(me, "j", T0 + 1))
        await JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock).sweep()
        assert await store.put_executions([ended(peer, "j", T0 + 2)]) == []
        assert not await store.put_execution(ended(me, "j", T0 + 3))
        allocation = sign_allocation(peer, Allocation(job_id="j", version=1, replicas=1, nodes=(me.node_id,),
                                                      by=peer.node_id, at=T0))  # fmt: skip
        assert not await store.put_allocation(allocation)
        await store.put_logs("j", me.node_id, 1, "late", "")  # the container sweep keeping output late
        assert await store.add_jobs([(j, None)]) == 0
        with pytest.raises(JobPurged):
            await store.add_job(j)
        for table in ("jobs", "executions", "allocations", "logs"):
            assert await count(store, table) == 0, table


# -- tombstones against gossip and catch-up -------------------------------------------------------------------


async def _purged_replica(store: Store, me: Identity, peer: Identity, clock: Clock) -> tuple[Replica, Job]:
    j = job(peer, "j", T0, placement={"nodes": [me.node_id]})  # placed here: only the tombstone stops it running
    await store.add_job(j, ended(me, "j", T0 + 1))
    await store.put_executions([ended(peer, "j", T0 + 1)])
    assert await JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock).sweep() == (1, 0)
    ran: list[str] = []

    async def run(job: Job) -> bool:
        ran.append(job.job_id)
        return await store.add_job(job)

    async def cancel(job_id: str) -> None:
        raise AssertionError("nothing to cancel")

    replica = Replica(store=store, node_id=me.node_id, run=run, cancel=cancel)
    await replica.caught_up()
    return replica, j


async def test_gossip_replay_of_a_purged_job_is_refused_and_counted(
    tmp_path: Path, ids: tuple[Identity, Identity]
) -> None:
    me, peer = ids
    async with opened(tmp_path) as store:
        replica, j = await _purged_replica(store, me, peer, Clock(T0 + 10 * DAY))
        send, recv = trio.open_memory_channel[object](10)
        gossip = Gossip(identity=me, inbound=replica, outbox=recv)  # type: ignore[arg-type]
        await gossip.apply([(peer.node_id, JobMsg(j)), (peer.node_id, ExecutionMsg(ended(peer, "j", T0 + 1)))])
        assert gossip.stats.dropped == {"purged": 1}
        assert await store.get_job("j") is None and await count(store, "executions") == 0
        send.close()


async def test_catch_up_from_a_peer_still_holding_a_purged_job_does_not_bring_it_back(
    tmp_path: Path, ids: tuple[Identity, Identity]
) -> None:
    me, peer = ids
    async with opened(tmp_path, "me.sqlite") as store, opened(tmp_path, "peer.sqlite") as theirs:
        replica, j = await _purged_replica(store, me, peer, Clock(T0 + 10 * DAY))
        # The peer keeps everything (--job-retention 0), and was cancelled since: the job is in its changes.
        await theirs.add_job(j, ended(peer, "j", T0 + 1))
        await theirs.put_executions([ended(me, "j", T0 + 1)])
        await theirs.set_meta(cancel_key("j"), json.dumps(sign_cancel(peer, "j").to_json()))
        await theirs.mark_cancelled("j")
        serving = Sync(store=theirs, inbound=replica, identity=peer)
        mine = Sync(store=store, inbound=replica, identity=me)

        async def request(asked: dict[str, object]) -> object:
            return await serving.serve(asked)

        assert (await mine.catch_up(peer.node_id, request)).pages == 1
        assert mine.stats.dropped == {"purged": 1} and mine.stats.jobs == 0
        assert await store.get_job("j") is None and await count(store, "executions") == 0
        assert await store.get_meta(cancel_key("j")) is None


async def test_tombstones_expire_after_the_horizon(tmp_path: Path, ids: tuple[Identity, Identity]) -> None:
    me, _ = ids
    clock = Clock(T0 + 2 * DAY)
    async with opened(tmp_path) as store:
        purge = JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock, scan=2)
        assert purge.horizon == HORIZON_MIN
        for i in range(5):
            await store.add_job(job(me, f"j{i}", T0 + i), ended(me, f"j{i}", T0 + i))
        assert await purge.sweep() == (5, 0)
        clock.now += HORIZON_MIN - 1
        assert await purge.sweep() == (0, 0)
        clock.now += 2
        assert await purge.sweep() == (0, 5)  # in batches of two, all gone
        assert await count(store, "tombstones") == 0


# -- Status, List and containers of a purged job, on a node (FakeRuntime) --------------------------------------


async def test_status_of_a_purged_job_says_why_and_its_container_goes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = FakeRuntime(node_id="fake-node", plan=lambda job, attempt: (0, 5.0))
    async with running(tmp_path, runtime) as h:
        config = base_config(tmp_path, job_retention=parse_duration("7d"), retention=3600.0)
        identity = load_or_create(tmp_path / "id")
        node = Node(config=config, identity=identity, store=h.store, executor=h.executor)
        node.purge.node_id = h.executor.node_id  # the harness's executor runs as "fake-node"
        j = await node.create(JobSpec.from_json({"image": "img:1", "arguments": ["x"]}))
        await h.until_state(j.job_id, State.COMPLETE)
        assert len(runtime.containers) == 1  # kept for --retention
        assert (await node.status(j.job_id))["status"] == "complete"
        node.purge.clock = lambda: time.time() + 8 * DAY
        assert await node.purge.sweep() == (1, 0)
        with pytest.raises(NotFoundError) as caught:
            await node.status(j.job_id)
        data = caught.value.data
        assert data is not None and data["job_id"] == j.job_id and data["purged_at"] > time.time() + 7 * DAY
        assert data["reason"].startswith("purged on ") and data["reason"].endswith(" after --job-retention 7d")
        assert "not found" in caught.value.message
        assert (await node.list_jobs(status=None, labels={}, limit=10, cursor=None))["jobs"] == []
        assert runtime.containers == {}
        # The container sweep, coming late to a purged job's container, keeps no output of it.
        assert await count(h.store, "logs") == 0
        with pytest.raises(NotFoundError) as unknown:
            await node.status("never-seen")
        assert unknown.value.data == {"job_id": "never-seen"}


# -- the store stays bounded ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_hour", [8, pytest.param(28, marks=pytest.mark.slow)])
async def test_the_store_stays_bounded_under_a_steady_stream_of_jobs(
    tmp_path: Path, ids: tuple[Identity, Identity], per_hour: int
) -> None:
    """Jobs created and finished all month long (28 an hour: 20,160; 8 in the fast layer), retention one day,
    tombstones kept four: the row counts and the file level off after the first five days."""
    me, _ = ids
    clock = Clock(T0)
    days = 30
    path = tmp_path / "bounded.sqlite"
    seen: dict[int, tuple[int, int, int, int]] = {}
    async with opened(tmp_path, path.name) as store:
        purge = JobPurge(store=store, node_id=me.node_id, retention=DAY, clock=clock, horizon=4 * DAY)
        n = 0
        for hour in range(days * 24):
            batch = []
            spec = JobSpec.from_json({"image": "img:1", "arguments": ["x"], "labels": {"hour": str(hour)}})
            for _ in range(per_hour):  # unsigned: the store does not look at signatures
                created = T0 + hour * 3600 + n % 3600
                j = Job(job_id=f"job-{n}", spec=spec, origin=me.node_id, created_at=created)
                e = Execution(job_id=j.job_id, node_id=me.node_id, state=State.COMPLETE, exit_code=0,
                              created_at=created, updated_at=created + 60, finished_at=created + 60)  # fmt: skip
                batch.append((j, e))
                n += 1
            await store.add_jobs(batch)
            clock.now = T0 + (hour + 1) * 3600
            await purge.sweep()
            if hour % 24 == 23:
                await store.query(lambda conn: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
                size = path.stat().st_size
                seen[hour // 24 + 1] = (await count(store, "jobs"), await count(store, "executions"),
                                        await count(store, "tombstones"), size)  # fmt: skip
    day_jobs = per_hour * 24
    steady = [seen[d] for d in range(7, days + 1)]
    for jobs, executions, tombstones, _ in steady:
        assert jobs <= day_jobs + per_hour and executions == jobs  # a day of jobs, and the hour being purged
        assert tombstones <= 4 * day_jobs + per_hour
    sizes = [s[3] for s in steady]
    assert max(sizes) <= sizes[0] * 1.1, sizes  # the file levels off: purged pages are reused
    assert purge.stats.purged >= n - day_jobs - per_hour and purge.stats.expired > 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_labels").fetchone()[0] == seen[days][0]
