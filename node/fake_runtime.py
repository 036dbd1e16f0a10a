"""An in-memory ``Runtime`` for tests, as httpx's ``MockTransport`` stands beside its real transports.

Scripted, not simulated: a test says which images are present or how their pull goes, when a container exits
(``exit``, or ``plan`` for an exit after a set time on trio's clock), and when the daemon goes away (``down``)
and comes back (``up``), which host ports something else holds (``taken``), and when a container's health
changes (``set_health``). Exits, health changes and the daemon's health reach the executor through the same
``watch_exits`` channel as the real one's, with the same semantics (a reconnect reports every exited container
again, and the health of every running one), and failures raise the same ``node.errors`` with the same wording
as ``DockerRuntime``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NoReturn

import trio

from .errors import NotFoundError, RuntimeFailureError
from .model import Job
from .policy import ContainerOptions, Policy
from .pullprogress import OnProgress, PullProgress
from .runtime import (
    ContainerExit,
    ContainerHealth,
    ContainerInfo,
    DockerHealth,
    LogChunk,
    NotReadyError,
    OnPulling,
    PortTakenError,
    RuntimeEvent,
    port_taken_message,
)
from .spec_formats import PortMapping

ImageScript = Literal["present", "pulls", "fails", "hangs"]
Plan = Callable[[Job, int], "tuple[int, float] | None"]
"""For a container being started: (exit code, seconds until it exits), or None to run until told."""


@dataclass
class FakeContainer:
    container_id: str
    job_id: str
    attempt: int
    status: str = "created"
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    stdout: str = ""
    stderr: str = ""
    oom_killed: bool = False
    error: str | None = None
    ports: tuple[PortMapping, ...] = ()
    health: str | None = None
    output: list[LogChunk] = field(default_factory=list)
    """Everything written, in order (``write``): what ``follow`` replays and then waits on."""

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            container_id=self.container_id, job_id=self.job_id, attempt=self.attempt, status=self.status,
            exit_code=self.exit_code, started_at=self.started_at, finished_at=self.finished_at,
        )  # fmt: skip

    def health_event(self) -> ContainerHealth:
        assert self.health is not None
        return ContainerHealth(
            container_id=self.container_id, job_id=self.job_id, attempt=self.attempt, status=self.health
        )

    def exit_event(self) -> ContainerExit:
        return ContainerExit(
            container_id=self.container_id, job_id=self.job_id, attempt=self.attempt,
            exit_code=self.exit_code if self.exit_code is not None else -1, oom_killed=self.oom_killed,
            error=self.error,
        )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeRuntime:
    """A container engine in memory. ``calls`` records each operation by name, in order."""

    node_id: str = "fake-node"
    images: dict[str, ImageScript] = field(default_factory=dict)
    default_image: ImageScript = "present"
    pull_time: float = 1.0
    pull_timeout: float = 300.0
    plan: Plan = lambda job, attempt: None
    where: str = "unix:///fake/docker.sock"
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    failures: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    """Per operation, the failures to come: (message, whether it is a ``NotReadyError``)."""
    policy: Policy = field(default_factory=Policy)
    options: dict[str, ContainerOptions] = field(default_factory=dict)
    """What each container was started with (``Policy.options``, as DockerRuntime applies them)."""
    taken: set[tuple[int, str]] = field(default_factory=set)
    """Host ports, as (port, protocol), held by something other than our containers."""
    layers: tuple[int, ...] = ()
    """Sizes (bytes) of the layers a ``pulls`` image fetches, at a steady rate over ``pull_time``, with its
    progress (Docker's lines, ten a second) reported to ``on_progress`` as DockerRuntime reports it."""
    on_progress: OnProgress | None = None

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._down: str | None = None
        self._generation = 0
        self._wake_send, self._wake_recv = trio.open_memory_channel[tuple[int, RuntimeEvent | None]](10_000)
        self._nursery: trio.Nursery | None = None
        self._written = trio.Event()

    # -- scripting (the test's side) ------------------------------------------------------------------------

    def fail(self, op: str, message: str, times: int = 1, *, not_ready: bool = False) -> None:
        """The next ``times`` calls of ``op`` (inspect_image, pull, start, stop, remove, logs, list) fail; with
        ``not_ready``, as a daemon stopping or starting refuses (``NotReadyError``), while it answers pings."""
        self.failures.setdefault(op, []).extend([(message, not_ready)] * times)

    def exit(self, container_id: str, code: int = 0, *, oom: bool = False, error: str | None = None) -> None:
        """The container's process ends now with ``code`` (reported at once unless the daemon is down)."""
        c = self.containers[container_id]
        if c.status != "running":
            return
        c.status, c.exit_code, c.finished_at, c.oom_killed, c.error = "exited", code, _now(), oom, error
        self._wake_followers()
        self._emit(c.exit_event())

    def write(self, container_id: str, stdout: str = "", stderr: str = "") -> None:
        """The container prints: ``logs`` returns it, and followers get it now."""
        c = self.containers[container_id]
        for stream, text in (("stdout", stdout), ("stderr", stderr)):
            if text:
                c.output.append(LogChunk(stream, text))
        c.stdout += stdout
        c.stderr += stderr
        self._wake_followers()

    def _wake_followers(self) -> None:
        self._written.set()
        self._written = trio.Event()

    def set_health(self, container_id: str, status: str) -> None:
        """The container's healthcheck reaches ``status`` (healthy, unhealthy); reported unless it is not
        running or the daemon is down."""
        c = self.containers[container_id]
        if c.status != "running" or c.health == status:
            return
        c.health = status
        self._emit(c.health_event())

    def down(self, reason: str = "connection refused") -> None:
        """The daemon goes away: every call fails, the events stream ends, exits go unreported."""
        self._down = f"cannot connect to the Docker daemon at {self.where}: {reason}"
        self._generation += 1
        self._wake_send.send_nowait((self._generation, None))

    def up(self) -> None:
        """The daemon is back: the watcher reconnects and reports every exited container."""
        self._down = None
        self._generation += 1
        self._wake_send.send_nowait((self._generation, None))

    def add(self, job_id: str, attempt: int, status: str = "running") -> str:
        """A container that exists before the node starts (arranging a crash)."""
        cid = f"fake{next(self._ids):060d}"
        c = FakeContainer(cid, job_id, attempt, status=status)
        if status != "created":
            c.started_at = _now()
        self.containers[cid] = c
        return cid

    def of_job(self, job_id: str) -> list[FakeContainer]:
        return [c for c in self.containers.values() if c.job_id == job_id]

    # -- the Runtime protocol -------------------------------------------------------------------------------

    def _call(self, op: str, what: str | None) -> None:
        self.calls.append(op)
        reason, error = self._down, RuntimeFailureError
        if reason is None and self.failures.get(op):
            reason, not_ready = self.failures[op].pop(0)
            error = NotReadyError if not_ready else RuntimeFailureError
        if reason is not None:
            raise error(f"{what}: {reason}" if what else reason)

    def _emit(self, event: ContainerExit | ContainerHealth) -> None:
        if self._down is None:
            self._wake_send.send_nowait((self._generation, event))

    async def health(self) -> str | None:
        self.calls.append("ping")
        return self._down

    async def prepare_and_start(self, job: Job, attempt: int, *, on_pulling: OnPulling | None = None) -> str:
        image, policy = job.spec.image, job.spec.pull
        script = self.images.get(image, self.default_image)
        await trio.lowlevel.checkpoint()
        if policy != "always":
            self._call("inspect_image", f"cannot inspect image {image!r}")
            present = script == "present"
            if not present and policy == "never":
                raise RuntimeFailureError(f"image {image!r} is not present and pull policy is never")
        if policy == "always" or not present:
            if on_pulling is not None:
                await on_pulling()
            with trio.move_on_after(self.pull_timeout) as scope:
                self._call("pull", f"pull of {image!r} failed")
                if script == "fails":
                    raise RuntimeFailureError(f"pull of {image!r} failed: connection refused")
                if script == "hangs":
                    await trio.sleep_forever()
                await self._pull(job, image)
            if scope.cancelled_caught:
                raise RuntimeFailureError(f"pull of {image!r} timed out after {self.pull_timeout:g}s")
            self.images[image] = "present"
        self._call("start", f"cannot start container for job {job.job_id}")
        options = self.policy.options(job.spec)
        self._check_ports(job)
        cid = f"fake{next(self._ids):060d}"
        self.options[cid] = options
        c = FakeContainer(cid, job.job_id, attempt, status="running", started_at=_now(), ports=job.spec.port_mappings)
        c.health = "starting" if job.spec.healthcheck is not None else None
        self.containers[cid] = c
        planned = self.plan(job, attempt)
        if planned is not None:
            code, after = planned
            assert self._nursery is not None, "a planned exit needs watch_exits running"
            self._nursery.start_soon(self._exit_later, cid, code, after)
        return cid

    async def _pull(self, job: Job, image: str) -> None:
        """``pull_time`` seconds; with ``layers``, Docker's progress lines every 0.1 s on the way."""
        if not self.layers or self.on_progress is None:
            await trio.sleep(self.pull_time)
            return
        report = self.on_progress
        progress = PullProgress(job_id=job.job_id, node_id=self.node_id, image=image, clock=trio.current_time)
        steps = max(1, round(self.pull_time / 0.1))
        for i in range(len(self.layers)):
            if (due := progress.feed({"status": "Pulling fs layer", "id": f"layer{i}"})) is not None:
                report(due)
        for step in range(1, steps + 1):
            await trio.sleep(self.pull_time / steps)
            for i, size in enumerate(self.layers):
                line = {"status": "Downloading", "id": f"layer{i}",
                        "progressDetail": {"current": size * step // steps, "total": size}}  # fmt: skip
                if (due := progress.feed(line)) is not None:
                    report(due)
        if (last := progress.finish()) is not None:
            report(last)

    def _check_ports(self, job: Job) -> None:
        held = set(self.taken)
        for c in self.containers.values():
            if c.status == "running":
                held.update((m.host_port, m.protocol) for m in c.ports)
        for m in job.spec.port_mappings:
            if (m.host_port, m.protocol) in held:
                message = port_taken_message(job.job_id, m.host_port, m.protocol, "port is already allocated")
                raise PortTakenError(message, host_port=m.host_port, protocol=m.protocol)

    async def _exit_later(self, container_id: str, code: int, after: float) -> None:
        await trio.sleep(after)
        if container_id in self.containers:
            self.exit(container_id, code)

    async def stop(self, container_id: str, *, grace: float = 5.0) -> None:
        await trio.lowlevel.checkpoint()
        self._call("stop", f"cannot stop container {container_id[:12]}")
        if container_id in self.containers:
            self.exit(container_id, 143)  # docker-init forwards SIGTERM

    async def remove(self, container_id: str) -> None:
        await trio.lowlevel.checkpoint()
        self._call("remove", f"cannot remove container {container_id[:12]}")
        if container_id in self.containers:
            self.exit(container_id, 137)
            del self.containers[container_id]
            self._wake_followers()

    async def logs(self, container_id: str, *, tail: int | None = None) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        self._call("logs", f"cannot read logs of container {container_id[:12]}")
        c = self.containers.get(container_id)
        if c is None:
            raise NotFoundError(f"container {container_id[:12]} no longer exists")
        if tail is None:
            return c.stdout, c.stderr
        return "".join(c.stdout.splitlines(True)[-tail:] if tail else []), "".join(
            c.stderr.splitlines(True)[-tail:] if tail else []
        )

    async def follow(self, container_id: str, *, tail: int | None = None) -> AsyncGenerator[LogChunk, None]:
        """Replays what was written (``tail``: the last N writes), then each write as it comes, until the
        container stops or is removed."""
        await trio.lowlevel.checkpoint()
        self._call("logs", f"cannot follow the logs of container {container_id[:12]}")
        c = self.containers.get(container_id)
        if c is None:
            raise NotFoundError(f"container {container_id[:12]} no longer exists")
        read = 0 if tail is None else max(0, len(c.output) - tail)
        while True:
            while read < len(c.output):
                read += 1
                yield c.output[read - 1]
            if c.status != "running" or self.containers.get(container_id) is not c:
                return
            await self._written.wait()

    async def list_managed(self) -> list[ContainerInfo]:
        await trio.lowlevel.checkpoint()
        self._call("list", "cannot list containers")
        return [c.info() for c in self.containers.values()]

    async def watch_exits(
        self,
        send: trio.MemorySendChannel[RuntimeEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            reported: str | None = None  # "up", or the reason last reported for being down
            task_status.started()
            while True:
                if self._down is not None:
                    if reported != self._down:
                        reported = self._down
                        await send.send(DockerHealth(ok=False, reason=self._down))
                elif reported != "up":
                    reported = "up"
                    await send.send(DockerHealth(ok=True))
                    for c in list(self.containers.values()):
                        if c.status in ("exited", "dead"):
                            await send.send(c.exit_event())
                        elif c.status == "running" and c.health is not None:
                            await send.send(c.health_event())
                generation, event = await self._wake_recv.receive()
                if event is not None and generation == self._generation and self._down is None:
                    await send.send(event)
        raise AssertionError("unreachable")

    async def capacity(self) -> tuple[float | None, int | None]:
        """(CPUs, memory) of an engine with 4 CPUs and 8 GiB, or the failure of a daemon that is down."""
        self._call("info", None)
        return 4.0, 8 * 1024**3


__all__ = ["FakeContainer", "FakeRuntime", "ImageScript", "Plan"]
