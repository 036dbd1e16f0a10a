"""What the executor needs from a container engine: the ``Runtime`` protocol and the values it deals in.

``DockerRuntime`` (``node/docker_runtime.py``) implements it against dockerd; ``FakeRuntime``
(``node/fake_runtime.py``) implements it in memory for tests that run in milliseconds on trio's clock, as
httpx's ``MockTransport`` stands beside its real transports. Both raise the same ``node.errors``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

import trio

from .errors import RuntimeFailureError
from .model import Job

LABEL_JOB = "cmnode.job_id"
LABEL_NODE = "cmnode.node_id"
LABEL_ATTEMPT = "cmnode.attempt"
LABEL_MANAGED = "cmnode.managed"


@dataclass(frozen=True, kw_only=True)
class ContainerExit:
    """A container of ours stopped; ``error`` carries the engine's reason when it did not run normally."""

    container_id: str
    job_id: str
    attempt: int
    exit_code: int
    oom_killed: bool = False
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    """A container of ours as listed or inspected; ``status`` is Docker's (created, running, exited, dead...)."""

    container_id: str
    job_id: str
    attempt: int
    status: str
    exit_code: int | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True, kw_only=True)
class ContainerHealth:
    """A running container of ours changed health (``starting``, ``healthy``, ``unhealthy``), per its
    healthcheck."""

    container_id: str
    job_id: str
    attempt: int
    status: str


class PortTakenError(RuntimeFailureError):
    """A host port the job publishes is in use on this node: the attempt fails, and placement learns that this
    node does not fit jobs wanting that port."""

    def __init__(self, message: str, *, host_port: int, protocol: str) -> None:
        super().__init__(message)
        self.host_port = host_port
        self.protocol = protocol


class NotReadyError(RuntimeFailureError):
    """The engine answers, yet refused the call for a reason of its own that passes by itself: it is stopping or
    starting (dockerd, its shutdown complete, still answered a start: "failed to update the store state of
    sandbox", its network store closed). Not the job's fault: the executor tries the same start again shortly
    (by then the daemon is back, or away and waited for) instead of counting it as the attempt's failure."""


def port_taken_message(job_id: str, host_port: int, protocol: str, reason: str) -> str:
    """The same words from every runtime."""
    return f"cannot start container for job {job_id}: host port {host_port}/{protocol} is taken on this node ({reason})"


@dataclass(frozen=True)
class DockerHealth:
    """Sent by ``watch_exits`` whenever its view of the daemon changes, so the node can report it."""

    ok: bool
    reason: str | None = None


RuntimeEvent = ContainerExit | ContainerHealth | DockerHealth
OnPulling = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class LogChunk:
    """A piece of a container's output as it is written: ``stream`` is ``stdout`` or ``stderr``."""

    stream: str
    text: str


class Runtime(Protocol):
    """A container engine as the executor and retention use it. Failures raise ``RuntimeFailureError``."""

    async def health(self) -> str | None:
        """None when the engine answers, else a short reason fit for a status page."""
        ...

    async def prepare_and_start(self, job: Job, attempt: int, *, on_pulling: OnPulling | None = None) -> str:
        """Make the image present per ``job.spec.pull`` (awaiting ``on_pulling`` before a pull), then create
        and start the container with its ports published (``PortTakenError`` if one is in use); returns its id.
        Cancelling the caller abandons a pull; once the container is being created the call finishes, so its
        id is never lost."""
        ...

    async def stop(self, container_id: str, *, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; already stopped or gone is fine."""
        ...

    async def remove(self, container_id: str) -> None:
        """Force-remove the container and its output; already gone is fine."""
        ...

    async def logs(self, container_id: str, *, tail: int | None = None) -> tuple[str, str]:
        """(stdout, stderr); ``NotFoundError`` if the container is gone."""
        ...

    def follow(self, container_id: str, *, tail: int | None = None) -> AsyncGenerator[LogChunk, None]:
        """The container's output (the last ``tail`` lines first, None: all of it), then what it writes until
        it stops; ``NotFoundError`` if it is gone. Closing the iterator lets go of the engine's stream."""
        ...

    async def list_managed(self) -> list[ContainerInfo]:
        """Every container of this node, running or not."""
        ...

    async def watch_exits(
        self, send: trio.MemorySendChannel[RuntimeEvent], *, task_status: trio.TaskStatus[None] = ...
    ) -> NoReturn:
        """Forever: ``DockerHealth(ok=True)`` then every exit already known and the health of every running
        container with a healthcheck on each (re)connect, each exit and health change as it happens, and
        ``DockerHealth(ok=False, reason)`` while the engine is away. Started with ``nursery.start``: ready once
        the first connection attempt is over."""
        ...

    async def capacity(self) -> tuple[float | None, int | None]:
        """(CPUs, memory in bytes) the engine reports, None where it says nothing; RuntimeFailureError if away."""
        ...


__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "ContainerExit",
    "ContainerHealth",
    "ContainerInfo",
    "DockerHealth",
    "LogChunk",
    "NotReadyError",
    "OnPulling",
    "PortTakenError",
    "Runtime",
    "RuntimeEvent",
    "port_taken_message",
]
