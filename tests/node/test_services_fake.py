"""Services against FakeRuntime on trio's virtual clock: the ``restart`` policies, the backoff that resets
after a long run, the bound on ``history``, healthchecks (``health`` shown, unhealthy restarted) and a host
port already taken. The same behaviours against dockerd: ``tests/node/test_services_docker.py``."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

import node.executor as executor_module
from node.fake_runtime import FakeRuntime
from node.model import MAX_HISTORY, Execution, Job, JobSpec, State
from node.restart import RESET_AFTER, restarts, streak_after

from .test_executor_fake import NODE, inline_threads, make_job, per_job_state, running

__all__ = ["inline_threads"]  # the autouse fixture, imported so that it applies here


def _exits(*runs: tuple[int, float]) -> tuple[FakeRuntime, list[float]]:
    """A runtime whose attempt N exits as ``runs[N-1]`` (the last one repeating); also the start times."""
    starts: list[float] = []

    def plan(job: Job, attempt: int) -> tuple[int, float]:
        starts.append(trio.current_time())
        return runs[min(attempt, len(runs)) - 1]

    return FakeRuntime(node_id=NODE, plan=plan), starts


@pytest.mark.parametrize(
    ("restart", "retries", "attempt", "failed", "expected"),
    [
        ("never", 0, 1, True, False),
        ("never", 2, 2, True, True),
        ("never", 2, 3, True, False),
        ("never", 2, 1, False, False),
        ("on-failure", 0, 1000, True, True),
        ("on-failure", 0, 1, False, False),
        ("on-failure", 2, 3, True, False),
        ("always", 0, 10**6, False, True),
        ("always", 1, 5, True, True),
    ],
)
def test_the_restart_rule(restart: str, retries: int, attempt: int, failed: bool, expected: bool) -> None:
    spec = JobSpec.from_json({"image": "img:1", "restart": restart, "retries": retries})
    assert restarts(spec, attempt, failed=failed) is expected


def test_the_backoff_step_resets_after_a_long_run() -> None:
    assert [streak_after(n, 0.5) for n in range(3)] == [1, 2, 3]
    assert streak_after(7, None) == 8  # it never started: as quick as it gets
    assert streak_after(7, RESET_AFTER) == 1
    assert executor_module.retry_delay(10**6) <= executor_module.BACKOFF_CAP  # no overflow for ever-restarting


async def test_always_restarts_after_any_exit_until_stop(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt, starts = _exits((0, 5.0), (3, 5.0), (0, 5.0))
    async with running(tmp_path, rt) as h:
        job = make_job(restart="always")
        await h.executor.submit(job)
        await h.until(
            lambda: (e := h.latest.get(job.job_id)) is not None and e.attempt == 4 and e.state == State.RUNNING
        )
        history = h.latest[job.job_id].history
        assert [(a["attempt"], a["state"], a["exit_code"]) for a in history] == [
            (1, "complete", 0),
            (2, "failed", 3),
            (3, "complete", 0),
        ]
        await h.executor.cancel(job.job_id)
        stopped = await h.until_state(job.job_id, State.CANCELLED)
        await trio.sleep(600)  # virtual: no later attempt starts once stopped
        assert len(starts) == 4
        assert stopped.attempt == 4 and (await h.stored(job.job_id)).state == State.CANCELLED
        assert all(c.status != "running" for c in rt.of_job(job.job_id))


async def test_on_failure_restarts_failures_without_limit_and_ends_on_success(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt, _ = _exits(*[(1, 1.0)] * 6, (0, 1.0))
    async with running(tmp_path, rt) as h:
        unlimited = make_job(restart="on-failure")
        await h.executor.submit(unlimited)
        done = await h.until_state(unlimited.job_id, State.COMPLETE)
        assert done.attempt == 7 and [a["exit_code"] for a in done.history] == [1] * 6
        assert "restarting in" in next(e.error for e in h.published if e.job_id == unlimited.job_id and e.error)


async def test_on_failure_with_retries_stops_after_them_and_never_restarts_a_success(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, plan=lambda job, attempt: (int(job.spec.labels["code"]), 1.0))
    async with running(tmp_path, rt) as h:
        bounded = make_job(restart="on-failure", retries=2, labels={"code": "1"})
        clean = make_job(restart="on-failure", labels={"code": "0"})
        never = make_job(labels={"code": "1"})
        for job in (bounded, clean, never):
            await h.executor.submit(job)
        assert (await h.until_state(bounded.job_id, State.FAILED)).attempt == 3
        assert (await h.until_state(clean.job_id, State.COMPLETE)).attempt == 1
        assert (await h.until_state(never.job_id, State.FAILED)).attempt == 1


async def test_the_backoff_grows_with_quick_exits_and_resets_after_a_run_of_10s(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module.random, "uniform", lambda low, high: 1.0)
    rt, starts = _exits((1, 0.0), (1, 0.0), (1, 0.0), (1, 30.0), (1, 0.0), (1, 0.0))
    async with running(tmp_path, rt) as h:
        job = make_job(restart="always")
        await h.executor.submit(job)
        await h.until(lambda: len(starts) >= 7)
        await h.executor.cancel(job.job_id)
    waits = [b - a for a, b in itertools.pairwise(starts)]
    # quick, quick, quick: 1, 2, 4; the fourth ran 30 s, then waited 1 s (reset); then 2 again
    assert waits == pytest.approx([1, 2, 4, 30 + 1, 2, 4], abs=0.01)


async def test_history_keeps_the_last_100_attempts_and_stays_valid(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt, _ = _exits((1, 0.0))
    async with running(tmp_path, rt, backoff_base=0.001) as h:
        job = make_job(restart="always")
        await h.executor.submit(job)
        # a minute apart once the backoff reached its cap
        await h.until(
            lambda: h.state(job.job_id) is not None and h.latest[job.job_id].attempt > MAX_HISTORY + 20, 86400
        )
        latest = h.latest[job.job_id]
        assert len(latest.history) == MAX_HISTORY
        assert [a["attempt"] for a in latest.history] == list(range(latest.attempt - MAX_HISTORY, latest.attempt))
        stored = await h.stored(job.job_id)
        assert Execution.from_json(stored.to_json()) == stored  # beyond MAX_RETRIES + 1, within the schema
        await h.executor.cancel(job.job_id)


async def test_health_is_shown_and_an_unhealthy_service_is_restarted(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    async with running(tmp_path, rt) as h:
        job = make_job(restart="always", healthcheck={"command": "wget -q localhost", "interval": 1})
        await h.executor.submit(job)
        first = await h.until_state(job.job_id, State.RUNNING)
        assert first.health == "starting"
        (container,) = rt.of_job(job.job_id)
        rt.set_health(container.container_id, "healthy")
        await h.until(lambda: h.latest[job.job_id].health == "healthy")
        rt.set_health(container.container_id, "unhealthy")
        await h.until(lambda: h.latest[job.job_id].attempt == 2 and h.state(job.job_id) == State.RUNNING)
        restarted = h.latest[job.job_id]
        assert restarted.health == "starting"
        assert (restarted.history[0]["state"], restarted.history[0]["error"]) == (
            "failed",
            "unhealthy: stopped by its healthcheck",
        )
        assert container.status == "exited"
        await h.executor.cancel(job.job_id)


async def test_an_unhealthy_container_with_restart_never_is_left_running_and_shown(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE)
    async with running(tmp_path, rt) as h:
        job = make_job(healthcheck={"command": ["false"]})
        await h.executor.submit(job)
        await h.until_state(job.job_id, State.RUNNING)
        (container,) = rt.of_job(job.job_id)
        rt.set_health(container.container_id, "unhealthy")
        await h.until(lambda: h.latest[job.job_id].health == "unhealthy")
        await trio.sleep(60)
        assert (h.state(job.job_id), container.status, h.latest[job.job_id].attempt) == (State.RUNNING, "running", 1)
        assert "stop" not in rt.calls
        rt.down()
        rt.up()  # a reconnect reports the health again: nothing changes
        await trio.sleep(1)
        assert h.latest[job.job_id].health == "unhealthy" and h.state(job.job_id) == State.RUNNING


async def test_a_host_port_taken_fails_the_attempt_naming_the_port(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    rt = FakeRuntime(node_id=NODE, taken={(53, "udp")})
    async with running(tmp_path, rt) as h:
        first, second = make_job(ports=["127.0.0.1:8080:80"]), make_job(ports=["9000:80", "8080:8080"])
        other_protocol, held = make_job(ports=["8080:80/udp"]), make_job(ports=["53:53/udp"])
        await h.executor.submit(first)
        await h.until_state(first.job_id, State.RUNNING)
        for job in (second, other_protocol, held):
            await h.executor.submit(job)
        failed = await h.until_state(second.job_id, State.FAILED)
        assert failed.error is not None and "host port 8080/tcp is taken on this node" in failed.error
        assert "host port 53/udp is taken" in str((await h.until_state(held.job_id, State.FAILED)).error)
        await h.until_state(other_protocol.job_id, State.RUNNING)
        assert len(rt.of_job(second.job_id)) == 0  # nothing left behind
        rt.exit(rt.of_job(first.job_id)[0].container_id, 0)  # the port is free again once it exits
        retried = make_job(ports=["8080:80"])
        await h.executor.submit(retried)
        await h.until_state(retried.job_id, State.RUNNING)


def test_an_execution_without_health_signs_the_fields_it_always_signed() -> None:
    plain = Execution(job_id="j", node_id="n", created_at=1.0, updated_at=1.0)
    assert "health" not in plain.signed_fields()
    healthy = plain.advance(health="healthy")
    assert healthy.signed_fields()["health"] == "healthy"
    assert Execution.from_json(healthy.to_json()) == healthy
    assert Execution.from_json(plain.to_json()).health is None


def test_services_round_trip_through_the_spec() -> None:
    data = {
        "image": "img:1",
        "arguments": [],
        "env": {},
        "restart": "always",
        "ports": ["8080:80", "[::1]:53:53/udp"],
        "volumes": ["data:/data:ro"],
        "healthcheck": {"command": ["CMD-ARG", "x"], "interval": 1.5, "timeout": 2, "retries": 3, "start_period": 0},
    }
    spec = JobSpec.from_json(data)
    assert spec.healthcheck is not None and spec.healthcheck.command == ("CMD-ARG", "x")
    assert JobSpec.from_json(spec.to_json()) == spec
    assert "restart" not in JobSpec.from_json({"image": "img:1", "restart": "never"}).to_json()  # signed as before


async def test_nothing_is_kept_per_service_once_stopped(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Restarting services in every phase (running, waiting out a backoff, unhealthy), then stopped."""
    rt, _ = _exits((1, 0.0), (0, 3.0), (1, 30.0))
    async with running(tmp_path, rt, queue_size=100, workers=3) as h:
        jobs = [
            make_job(restart="always" if i % 2 else "on-failure", healthcheck={"command": "true"}) for i in range(30)
        ]
        for job in jobs:
            await h.executor.submit(job)
        await h.until(lambda: all((e := h.latest.get(j.job_id)) is not None and e.attempt >= 2 for j in jobs))
        for c in list(rt.containers.values())[::4]:
            rt.set_health(c.container_id, "unhealthy")
        for job in jobs:
            await h.executor.cancel(job.job_id)
        await h.until(lambda: all((s := h.state(j.job_id)) is not None and s.final for j in jobs))
        await trio.sleep(120)  # no restart is left waiting
        assert set(per_job_state(h.executor).values()) == {0}, per_job_state(h.executor)
