"""DockerRuntime against the real dockerd: images are local (scripts/build-test-images), and the only
registry traffic is to a closed loopback port."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from docker.client import DockerClient

from node.docker_runtime import DockerRuntime
from node.errors import NotFoundError, RuntimeFailureError
from node.model import Job, JobSpec, Resources
from node.policy import Policy
from node.runtime import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NODE,
    ContainerExit,
    DockerHealth,
)

WAIT = 20.0  # an upper bound for anything the daemon does here; typical round trips are ~0.3 s
ABSENT = "127.0.0.1:1/cmnode-test/absent:latest"  # pull fails at once: connection refused on loopback
DEAD_SOCKET = "unix:///tmp/nonexistent.sock"

Events = trio.MemoryReceiveChannel[ContainerExit | DockerHealth]


def job(image: str, *arguments: str, job_id: str = "job-1", **spec: Any) -> Job:
    return Job(
        job_id=job_id,
        spec=JobSpec(image=image, arguments=arguments, **spec),
        origin="test-origin",
        created_at=time.time(),
    )


@pytest.fixture
async def runtime(node_id: str) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime(node_id=node_id, docker_timeout=WAIT, pull_timeout=WAIT)
    yield rt
    rt.close()


async def watch(rt: DockerRuntime, nursery: trio.Nursery) -> Events:
    """Start watch_exits and return its channel once it reported the daemon healthy."""
    send, recv = trio.open_memory_channel[ContainerExit | DockerHealth](100)
    await nursery.start(rt.watch_exits, send)
    with trio.fail_after(WAIT):
        assert await recv.receive() == DockerHealth(ok=True)
    return recv


async def exit_of(events: Events, container_id: str) -> ContainerExit:
    with trio.fail_after(WAIT):
        async for item in events:
            if isinstance(item, ContainerExit) and item.container_id == container_id:
                return item
    raise AssertionError("watch_exits ended")


@pytest.mark.docker
@pytest.mark.parametrize("code", [0, 3])
async def test_exit_code_reported(runtime: DockerRuntime, test_image: str, nursery: trio.Nursery, code: int) -> None:
    events = await watch(runtime, nursery)
    cid = await runtime.start(job(test_image, "sh", "-c", f"exit {code}", job_id="j-exit"), 2)
    got = await exit_of(events, cid)
    assert got == ContainerExit(container_id=cid, job_id="j-exit", attempt=2, exit_code=code)


@pytest.mark.docker
async def test_env_and_arguments_reach_the_container_and_logs_are_split(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    events = await watch(runtime, nursery)
    spec_job = job(test_image, "sh", "-c", "echo $FOO; echo err >&2", env={"FOO": "bar baz"})
    cid = await runtime.start(spec_job, 1)
    assert (await exit_of(events, cid)).exit_code == 0
    with trio.fail_after(WAIT):
        assert await runtime.logs(cid) == ("bar baz\n", "err\n")


@pytest.mark.docker
async def test_logs_tail(runtime: DockerRuntime, test_image: str, nursery: trio.Nursery) -> None:
    events = await watch(runtime, nursery)
    cid = await runtime.start(job(test_image, "sh", "-c", "for i in 1 2 3 4; do echo $i; done"), 1)
    await exit_of(events, cid)
    with trio.fail_after(WAIT):
        assert await runtime.logs(cid, tail=2) == ("3\n4\n", "")


@pytest.mark.docker
async def test_long_job_is_running_and_stops_fast(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    events = await watch(runtime, nursery)
    cid = await runtime.start(job(test_image, "sleep", "300", job_id="j-long"), 1)
    with trio.fail_after(WAIT):
        info = await runtime.inspect(cid)
    assert info is not None
    assert (info.status, info.job_id, info.attempt, info.exit_code) == ("running", "j-long", 1, None)
    assert info.started_at is not None and info.finished_at is None

    with trio.fail_after(4):  # under the 5 s grace: init=True makes SIGTERM stop sleep at once, no SIGKILL
        await runtime.stop(cid, grace=5)
    got = await exit_of(events, cid)
    assert got.exit_code == 128 + 15  # docker-init forwards SIGTERM; sleep dies of it
    with trio.fail_after(WAIT):
        info = await runtime.inspect(cid)
        await runtime.stop(cid)  # already stopped: not an error
    assert info is not None and info.status == "exited" and info.exit_code == 143
    assert info.finished_at is not None


@pytest.mark.docker
async def test_pull_failure_is_quick_and_says_why(runtime: DockerRuntime) -> None:
    with trio.fail_after(WAIT), pytest.raises(RuntimeFailureError) as caught:
        await runtime.ensure_image(ABSENT, "missing")
    assert "connection refused" in caught.value.message
    assert caught.value.message.startswith(f"pull of '{ABSENT}' failed: ")
    assert "Error(" not in caught.value.message and "http+docker" not in caught.value.message


@pytest.mark.docker
async def test_pull_policies(runtime: DockerRuntime, test_image: str) -> None:
    with trio.fail_after(WAIT):
        assert await runtime.ensure_image(test_image, "missing") is False
        assert await runtime.ensure_image(test_image, "never") is False
        with pytest.raises(RuntimeFailureError, match="is not present and pull policy is never"):
            await runtime.ensure_image(ABSENT, "never")
        with pytest.raises(RuntimeFailureError, match="connection refused"):
            await runtime.ensure_image(ABSENT, "always")


@pytest.mark.docker
async def test_start_never_pulls_a_missing_image(runtime: DockerRuntime) -> None:
    with trio.fail_after(WAIT), pytest.raises(RuntimeFailureError, match="No such image") as caught:
        await runtime.start(job(ABSENT, job_id="j-missing"), 1)
    assert caught.value.message.startswith("cannot start container for job j-missing: ")
    assert await runtime.list_managed() == []


@pytest.mark.docker
async def test_unrunnable_command_exits_127_with_reason(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    events = await watch(runtime, nursery)
    cid = await runtime.start(job(test_image, "no-such-program"), 1)
    got = await exit_of(events, cid)
    assert got.exit_code == 127
    assert got.error is not None and "no-such-program" in got.error


@pytest.mark.docker
async def test_labels_and_resources_are_applied(
    runtime: DockerRuntime, test_image: str, docker_available: DockerClient, node_id: str
) -> None:
    spec_job = job(
        test_image,
        "true",
        job_id="j-res",
        labels={"team": "infra"},
        resources=Resources(cpus=0.5, memory=64 * 1024 * 1024),
        name="display-only",
    )
    with trio.fail_after(WAIT):
        cid = await runtime.start(spec_job, 7)
    attrs = docker_available.api.inspect_container(cid)
    assert attrs["Config"]["Labels"] == {
        "team": "infra",
        LABEL_JOB: "j-res",
        LABEL_NODE: node_id,
        LABEL_ATTEMPT: "7",
        LABEL_MANAGED: "1",
    }
    host = attrs["HostConfig"]
    assert (host["NanoCpus"], host["Memory"], host["Init"], host["AutoRemove"]) == (
        500_000_000,
        64 * 1024 * 1024,
        True,
        False,
    )
    assert attrs["Name"] != "/display-only"


@pytest.mark.docker
async def test_every_container_has_no_new_privileges_and_default_limits(
    runtime: DockerRuntime, test_image: str, docker_available: DockerClient
) -> None:
    """Issue 9: job containers ran with no pids or memory limit, and could gain privileges through setuid."""
    with trio.fail_after(WAIT):
        plain = await runtime.start(job(test_image, "true", job_id="j-plain"), 1)
        own = await runtime.start(job(test_image, "true", job_id="j-own", resources=Resources(memory=64 * 2**20)), 1)
    host = docker_available.api.inspect_container(plain)["HostConfig"]
    assert (host["SecurityOpt"], host["PidsLimit"], host["Memory"]) == (["no-new-privileges"], 1024, 2**30)
    host = docker_available.api.inspect_container(own)["HostConfig"]
    assert (host["SecurityOpt"], host["PidsLimit"], host["Memory"]) == (["no-new-privileges"], 1024, 64 * 2**20)


@pytest.mark.docker
async def test_the_pids_limit_holds_and_privileges_cannot_be_gained(
    node_id: str, test_image: str, nursery: trio.Nursery
) -> None:
    rt = DockerRuntime(node_id=node_id, docker_timeout=WAIT, pull_timeout=WAIT, policy=Policy(pids_limit=8))
    try:
        events = await watch(rt, nursery)
        # Ten sleeping children cannot all start under a limit of 8 (docker-init and sh count too).
        script = "grep NoNewPrivs /proc/self/status; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 30 & done; echo all"
        cid = await rt.start(job(test_image, "sh", "-c", script, job_id="j-pids"), 1)
        assert (await exit_of(events, cid)).exit_code != 0
        stdout, stderr = await rt.logs(cid)
        assert (stdout, stderr) == ("NoNewPrivs:\t1\n", "sh: can't fork: Resource temporarily unavailable\n")
    finally:
        rt.close()


@pytest.mark.docker
async def test_volumes_mount_resolved_host_paths_and_named_volumes(
    node_id: str, test_image: str, nursery: trio.Nursery, tmp_path: Any, docker_available: DockerClient
) -> None:
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    (allowed / "link").symlink_to(allowed / "data")
    (allowed / "data" / "in.txt").write_text("hello")
    volume = f"cmnode-test-{node_id}"
    rt = DockerRuntime(node_id=node_id, docker_timeout=WAIT, pull_timeout=WAIT,
                       policy=Policy(allow_host_paths=(str(allowed),)))  # fmt: skip
    try:
        events = await watch(rt, nursery)
        spec_job = job(
            test_image, "sh", "-c", "cat /in/in.txt; echo out > /out/out.txt; echo v > /v/v.txt; touch /in/x",
            job_id="j-vol", volumes=(f"{allowed}/link:/in:ro", f"{allowed}/data:/out", f"{volume}:/v"),
        )  # fmt: skip
        cid = await rt.start(spec_job, 1)
        got = await exit_of(events, cid)
        stdout, stderr = await rt.logs(cid)
        assert got.exit_code == 1 and stdout == "hello" and "Read-only file system" in stderr, (stdout, stderr)
        assert (allowed / "data" / "out.txt").read_text() == "out\n"
        mounts = {m["Destination"]: m for m in docker_available.api.inspect_container(cid)["Mounts"]}
        assert mounts["/in"]["Source"] == str((allowed / "data").resolve()) and not mounts["/in"]["RW"]
        assert mounts["/v"]["Type"] == "volume" and mounts["/v"]["Name"] == volume
        with pytest.raises(RuntimeFailureError, match="not under --allow-host-path"):
            await rt.start(job(test_image, "true", job_id="j-esc", volumes=(f"{tmp_path}:/x",)), 1)
    finally:
        rt.close()
        with contextlib.suppress(Exception):
            for c in docker_available.api.containers(all=True, filters={"volume": volume}):
                docker_available.api.remove_container(c["Id"], force=True)
            docker_available.api.remove_volume(volume)


@pytest.mark.docker
async def test_list_managed_sees_only_our_containers(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    other = DockerRuntime(node_id=runtime.node_id + "-other")
    events = await watch(runtime, nursery)
    with trio.fail_after(WAIT):
        done = await runtime.start(job(test_image, "true", job_id="j-done"), 1)
        await exit_of(events, done)
        running = await runtime.start(job(test_image, "sleep", "300", job_id="j-run"), 1)
        foreign = await other.start(job(test_image, "sleep", "300", job_id="j-foreign"), 1)
        try:
            infos = {i.container_id: i for i in await runtime.list_managed()}
        finally:
            await other.remove(foreign)
            other.close()
    assert set(infos) == {done, running}
    assert (infos[done].job_id, infos[done].status, infos[done].exit_code) == ("j-done", "exited", 0)
    assert (infos[running].job_id, infos[running].status) == ("j-run", "running")


@pytest.mark.docker
async def test_exits_before_the_watcher_started_are_reported_on_connect(
    runtime: DockerRuntime, test_image: str
) -> None:
    # A first watcher only tells us when the container has exited; the second must learn it on connect.
    async with trio.open_nursery() as first:
        events = await watch(runtime, first)
        cid = await runtime.start(job(test_image, "sh", "-c", "exit 5", job_id="j-early"), 3)
        await exit_of(events, cid)
        first.cancel_scope.cancel()
    async with trio.open_nursery() as second:
        events = await watch(runtime, second)  # asserts DockerHealth(ok=True) comes first
        with trio.fail_after(WAIT):
            got = await events.receive()
        assert got == ContainerExit(container_id=cid, job_id="j-early", attempt=3, exit_code=5)
        second.cancel_scope.cancel()


@pytest.mark.docker
async def test_gone_container(runtime: DockerRuntime, test_image: str) -> None:
    with trio.fail_after(WAIT):
        cid = await runtime.start(job(test_image, "sleep", "300"), 1)
        await runtime.remove(cid)
        assert await runtime.inspect(cid) is None
        with pytest.raises(NotFoundError):
            await runtime.logs(cid)
        await runtime.stop(cid)
        await runtime.remove(cid)


@pytest.mark.docker
async def test_health_ok(runtime: DockerRuntime) -> None:
    with trio.fail_after(WAIT):
        assert await runtime.health() is None


# The dead-socket tests need no daemon, so they run (unmarked) everywhere.


async def test_dead_daemon_health_and_errors_are_clear(node_id: str) -> None:
    rt = DockerRuntime(node_id=node_id, base_url=DEAD_SOCKET)  # must not contact the daemon
    with trio.fail_after(WAIT):
        reason = await rt.health()
        assert reason == f"cannot connect to the Docker daemon at {DEAD_SOCKET}: no such file or directory"
        with pytest.raises(RuntimeFailureError) as caught:
            await rt.start(job("cmnode-test/busybox:latest"), 1)
    assert caught.value.message == f"cannot start container for job job-1: {reason}"
    rt.close()


async def test_dead_daemon_watcher_reports_and_cancels_fast(node_id: str) -> None:
    rt = DockerRuntime(node_id=node_id, base_url=DEAD_SOCKET)
    send, recv = trio.open_memory_channel[ContainerExit | DockerHealth](10)
    with trio.fail_after(WAIT) as bound:
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.watch_exits, send)
            health = await recv.receive()
            assert isinstance(health, DockerHealth) and not health.ok
            assert health.reason is not None and "cannot connect to the Docker daemon" in health.reason
            bound.deadline = trio.current_time() + 5
            nursery.cancel_scope.cancel()
    rt.close()


@pytest.mark.docker
async def test_cancelling_a_connected_watcher_is_prompt(runtime: DockerRuntime) -> None:
    with trio.fail_after(WAIT) as bound:
        async with trio.open_nursery() as nursery:
            await watch(runtime, nursery)
            bound.deadline = trio.current_time() + 5  # the reader thread is not abandoned: closing must end it
            nursery.cancel_scope.cancel()


@pytest.mark.docker
async def test_broken_stream_reconnects_and_relists(
    runtime: DockerRuntime,
    test_image: str,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    docker_available: DockerClient,
) -> None:
    # The daemon cannot be restarted under the test, so the first stream "breaks" at once: the reader
    # returns as it does when the daemon goes away.
    watcher = runtime._exits
    follow = watcher._follow
    calls = 0

    def break_first(stream: Any, deliver: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            follow(stream, deliver)

    monkeypatch.setattr(watcher, "_follow", break_first)
    with trio.fail_after(WAIT):
        cid = await runtime.start(job(test_image, "sh", "-c", "exit 4", job_id="j-gap"), 1)
        await trio.to_thread.run_sync(lambda: docker_available.api.wait(cid, timeout=WAIT))
    events = await watch(runtime, nursery)
    with trio.fail_after(WAIT):
        seen = [await events.receive() for _ in range(4)]
    exit_ = ContainerExit(container_id=cid, job_id="j-gap", attempt=1, exit_code=4)
    assert seen == [
        exit_,
        DockerHealth(ok=False, reason="the Docker events stream ended"),
        DockerHealth(ok=True),
        exit_,
    ]


@pytest.mark.docker
async def test_prepare_and_start_pulls_only_what_is_missing(
    runtime: DockerRuntime, test_image: str, nursery: trio.Nursery
) -> None:
    pulling: list[str] = []

    async def on_pulling() -> None:
        pulling.append("pulling")

    events = await watch(runtime, nursery)
    with trio.fail_after(WAIT):
        cid = await runtime.prepare_and_start(job(test_image, "true", job_id="j-prep"), 1, on_pulling=on_pulling)
    assert pulling == [] and (await exit_of(events, cid)).exit_code == 0
    with trio.fail_after(WAIT), pytest.raises(RuntimeFailureError, match="connection refused"):
        await runtime.prepare_and_start(job(ABSENT, job_id="j-absent"), 1, on_pulling=on_pulling)
    assert pulling == ["pulling"]
    with trio.fail_after(WAIT), pytest.raises(RuntimeFailureError, match="pull policy is never"):
        await runtime.prepare_and_start(job(ABSENT, job_id="j-never", pull="never"), 1, on_pulling=on_pulling)
    assert pulling == ["pulling"]
