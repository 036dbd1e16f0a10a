"""The Docker runtime: the container operations of ``Runtime`` against the local dockerd.

The connection and its thread boundary are in ``docker_client.py``, the error mapping in ``docker_errors.py``,
the exit watcher in ``docker_exits.py``; this module holds what is done to images and containers.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncGenerator
from typing import Any, NoReturn

import docker.errors
import docker.types
import docker.utils
import trio

from .docker_client import DockerConnection, info_of
from .docker_errors import explanation
from .docker_exits import ExitWatcher
from .docker_logs import FOLLOW_THREADS, follow_container
from .errors import NotFoundError, RuntimeFailureError
from .model import PULL_POLICIES, Job
from .policy import Policy
from .pullprogress import OnProgress, PullProgress
from .runtime import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_MANAGED,
    LABEL_NODE,
    ContainerInfo,
    LogChunk,
    OnPulling,
    PortTakenError,
    RuntimeEvent,
    port_taken_message,
)
from .spec import Healthcheck
from .spec_formats import PortMapping

_PORT_TAKEN = ("port is already allocated", "address already in use")
"""How dockerd words a host port in use, when the proxy or the kernel refuses to bind it."""
_NANOS = 1_000_000_000

log = logging.getLogger("cmnode.executor")


class DockerRuntime:
    """Runs job containers on the local Docker daemon, labelled so that this node finds them again.

    Construction does not contact the daemon (a node starts while dockerd is down).
    """

    def __init__(
        self,
        *,
        node_id: str,
        docker_timeout: float = 60.0,
        pull_timeout: float = 300.0,
        max_threads: int = 16,
        base_url: str | None = None,
        policy: Policy | None = None,
    ) -> None:
        """``policy`` holds what every container gets (limits, ``no-new-privileges``) and its mounts."""
        self.node_id = node_id
        self.policy = policy or Policy()
        self.pull_timeout = pull_timeout
        self._conn = DockerConnection(
            node_id=node_id,
            docker_timeout=docker_timeout,
            max_threads=max_threads,
            base_url=base_url,
            followers=FOLLOW_THREADS,
        )
        self._exits = ExitWatcher(self._conn)
        self._followers = trio.CapacityLimiter(FOLLOW_THREADS)
        self.on_progress: OnProgress | None = None
        """Where a pull's progress goes (node/pullprogress.py): the node points it at its event hub."""

    async def health(self) -> str | None:
        """None when the daemon answers a ping, else a short reason fit for a status page."""
        try:
            await self._conn.run(None, lambda: self._conn.api().ping())
        except RuntimeFailureError as exc:
            return exc.message
        return None

    # -- images and starting ------------------------------------------------------------------------------

    async def prepare_and_start(self, job: Job, attempt: int, *, on_pulling: OnPulling | None = None) -> str:
        """Inspect the image once, pull it if the policy asks (after ``on_pulling``), then start the container.

        Cancelling the caller abandons the inspect or the pull; the create-and-start that follows is shielded,
        so a container that exists always has its id returned.
        """
        await self._ensure_image(job.spec.image, job.spec.pull, on_pulling, job_id=job.job_id)
        with trio.CancelScope(shield=True):
            container_id = await self.start(job, attempt)
        return container_id

    async def ensure_image(self, image: str, policy: str) -> bool:
        """Make ``image`` present per the pull policy; True if it pulled."""
        return await self._ensure_image(image, policy, None)

    async def _ensure_image(
        self, image: str, policy: str, on_pulling: OnPulling | None, *, job_id: str | None = None
    ) -> bool:
        """The SDK's pull has no client-side timeout, so the thread is abandoned after ``pull_timeout`` (the
        daemon gives up on its own later) rather than holding up the job or node shutdown. A job's pull reports
        its progress to ``on_progress``."""
        if policy not in PULL_POLICIES:
            raise ValueError(f"unknown pull policy {policy!r}")
        if policy != "always":
            if await self._conn.run(f"cannot inspect image {image!r}", lambda: self._image_present(image)):
                return False
            if policy == "never":
                raise RuntimeFailureError(f"image {image!r} is not present and pull policy is never")
        if on_pulling is not None:
            await on_pulling()
        report = self._reporter(job_id, image)
        with trio.move_on_after(self.pull_timeout) as scope:
            await self._conn.run(f"pull of {image!r} failed", lambda: self._pull(image, report))
        if scope.cancelled_caught:
            raise RuntimeFailureError(f"pull of {image!r} timed out after {self.pull_timeout:g}s")
        return True

    def _image_present(self, image: str) -> bool:
        try:
            self._conn.api().inspect_image(image)
        except docker.errors.NotFound:
            return False
        return True

    def _reporter(self, job_id: str | None, image: str) -> tuple[PullProgress, OnProgress] | None:
        """The pull's tally, and a thread-safe way to hand its reports to ``on_progress`` on the trio thread
        (a report arriving after the node stopped is dropped)."""
        target = self.on_progress
        if job_id is None or target is None:
            return None
        token = trio.lowlevel.current_trio_token()

        def hand_over(report: Any) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(target, report)

        return PullProgress(job_id=job_id, node_id=self.node_id, image=image), hand_over

    def _pull(self, image: str, report: tuple[PullProgress, OnProgress] | None = None) -> None:
        repository, tag = docker.utils.parse_repository_tag(image)
        # An error after the pull began arrives as a line in a 200 stream, not as an HTTP status.
        for line in self._conn.api().pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise RuntimeFailureError(f"pull of {image!r} failed: {str(line['error']).strip()}")
            if report is not None and isinstance(line, dict) and (due := report[0].feed(line)) is not None:
                report[1](due)
        if report is not None and (last := report[0].finish()) is not None:
            report[1](last)

    async def start(self, job: Job, attempt: int) -> str:
        """Create and start the job's container; returns its id. Never pulls.

        ``init=True`` puts docker-init in front so SIGTERM stops the job at once; with it, a command that
        cannot be executed shows up as exit 127 (reported by ``watch_exits`` with the reason) rather than
        as a start error. No ``auto_remove``: the logs must outlive the container's exit. The limits and
        mounts are the policy's (``Policy.options``), which refuses a spec it no longer allows.
        """
        return await self._conn.run(
            f"cannot start container for job {job.job_id}", lambda: self._start(job, attempt), abandon=False
        )

    def _start(self, job: Job, attempt: int) -> str:
        api = self._conn.api()
        spec = job.spec
        labels = {
            **spec.labels,
            LABEL_JOB: job.job_id,
            LABEL_NODE: self.node_id,
            LABEL_ATTEMPT: str(attempt),
            LABEL_MANAGED: "1",
        }
        options = self.policy.options(spec)
        host: dict[str, Any] = {"init": True}
        if options.no_new_privileges:
            host["security_opt"] = ["no-new-privileges"]
        if options.pids_limit is not None:
            host["pids_limit"] = options.pids_limit
        if options.cpus is not None:
            host["nano_cpus"] = int(options.cpus * 1e9)
        if options.memory is not None:
            host["mem_limit"] = options.memory
        if options.mounts:
            host["mounts"] = [
                docker.types.Mount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in options.mounts
            ]
        ports = spec.port_mappings
        if ports:
            host["port_bindings"] = _port_bindings(ports)
        # An empty entrypoint means "clear the image's", which Docker spells [""].
        entrypoint = None if spec.entrypoint is None else (list(spec.entrypoint) or [""])

        def create(name: str | None) -> Any:
            return api.create_container(
                image=spec.image,
                command=list(spec.arguments) or None,
                entrypoint=entrypoint,
                environment=dict(spec.env),
                labels=labels,
                detach=True,
                ports=sorted({(m.container_port, m.protocol) for m in ports}) or None,
                healthcheck=_healthcheck(spec.healthcheck) if spec.healthcheck is not None else None,
                host_config=api.create_host_config(**host),
                name=name,
            )

        name = container_name(job, self.node_id, attempt)
        try:
            created = create(name)
        except docker.errors.APIError as exc:
            if name is None or exc.status_code != 409:
                raise
            created = create(self._clear_name(name, job.job_id))
        container_id = str(created["Id"])
        try:
            api.start(container_id)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                api.remove_container(container_id, force=True)
            if isinstance(exc, docker.errors.APIError) and any(w in explanation(exc) for w in _PORT_TAKEN):
                raise _port_taken(job.job_id, ports, explanation(exc)) from exc
            raise
        return container_id

    def _clear_name(self, name: str, job_id: str) -> str | None:
        """Free ``name`` for a new container of ``job_id``: a container of this node's with it is an earlier run
        of the same attempt that recovery did not adopt (a copy released and placed back, a start cut short), so
        a never-started one is removed and any other renamed aside (its stop, removal and logs go on by ID).
        A container not of ours keeps it: the job's gets a name of Docker's (returns None)."""
        api = self._conn.api()
        try:
            other = api.inspect_container(name)
        except docker.errors.NotFound:
            return name  # gone meanwhile
        other_labels = (other.get("Config") or {}).get("Labels") or {}
        if other_labels.get(LABEL_NODE) != self.node_id or other_labels.get(LABEL_JOB) != job_id:
            log.warning("container name %s is taken by a container of another owner: using Docker's", name)
            return None
        if (other.get("State") or {}).get("Status") == "created":
            api.remove_container(other["Id"], force=True)
        else:
            api.rename(other["Id"], f"{name}-{str(other['Id'])[:12]}")
        return name

    # -- containers -----------------------------------------------------------------------------------------

    async def stop(self, container_id: str, *, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a container already stopped or gone is fine."""

        def stop() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._conn.api().stop(container_id, timeout=max(0, math.ceil(grace)))

        await self._conn.run(f"cannot stop container {container_id[:12]}", stop, abandon=False)

    async def remove(self, container_id: str) -> None:
        """Force-remove the container (and its logs); already gone, or being removed, is fine."""

        def remove() -> None:
            try:
                self._conn.api().remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "in progress" not in explanation(exc):
                    raise

        await self._conn.run(f"cannot remove container {container_id[:12]}", remove, abandon=False)

    async def logs(self, container_id: str, *, tail: int | None = None) -> tuple[str, str]:
        """(stdout, stderr), each decoded as UTF-8 with replacement; NotFoundError if the container is gone."""

        def read(stdout: bool) -> str:
            raw = self._conn.logs(container_id, stdout=stdout, stderr=not stdout, tail="all" if tail is None else tail)
            return raw.decode("utf-8", errors="replace")

        def both() -> tuple[str, str] | None:
            try:
                return read(True), read(False)
            except docker.errors.NotFound:
                return None

        result = await self._conn.run(f"cannot read logs of container {container_id[:12]}", both)
        if result is None:
            raise NotFoundError(f"container {container_id[:12]} no longer exists")
        return result

    def follow(self, container_id: str, *, tail: int | None = None) -> AsyncGenerator[LogChunk, None]:
        """See ``Runtime.follow`` (node/docker_logs.py); at most ``FOLLOW_THREADS`` read at once."""
        return follow_container(self._conn, container_id, tail=tail, limiter=self._followers)

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's state, or None if it is gone."""

        def inspect() -> ContainerInfo | None:
            try:
                return info_of(self._conn.api().inspect_container(container_id))
            except docker.errors.NotFound:
                return None

        return await self._conn.run(f"cannot inspect container {container_id[:12]}", inspect)

    async def list_managed(self) -> list[ContainerInfo]:
        """Every container (running or not) that carries this node's label."""
        return await self._conn.run("cannot list containers", lambda: [info_of(a) for a in self._conn.list_attrs()])

    async def watch_exits(
        self,
        send: trio.MemorySendChannel[RuntimeEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """See ``Runtime.watch_exits`` and ``ExitWatcher.watch``."""
        await self._exits.watch(send, task_status=task_status)

    def close(self) -> None:
        """Release the client's connections; later calls raise RuntimeFailureError."""
        self._conn.close()

    async def capacity(self) -> tuple[float | None, int | None]:
        """(CPUs, memory in bytes) as the engine reports them (``NCPU``, ``MemTotal``); None where it does not.

        Raises:
            RuntimeFailureError: the daemon did not answer.
        """
        info = await self._conn.run(None, lambda: self._conn.api().info())
        cpus, memory = info.get("NCPU"), info.get("MemTotal")
        return (float(cpus) if isinstance(cpus, int) and cpus > 0 else None,
                memory if isinstance(memory, int) and memory > 0 else None)  # fmt: skip


def container_name(job: Job, node_id: str, attempt: int) -> str | None:
    """``NAME-<node>-<attempt>`` for a job with a ``name`` (Docker picks one otherwise): several nodes may share
    one engine and a job runs once per node and attempt, so the node (its ID's last 8 characters, as a node's
    default name) and the attempt make it unique. The spec's schema allows only what Docker allows in a name."""
    if not job.spec.name:
        return None
    return f"{job.spec.name}-{node_id[-8:]}-{attempt}"


def _port_bindings(ports: tuple[PortMapping, ...]) -> dict[str, list[Any]]:
    """The SDK's ``port_bindings``: ``{"80/tcp": [("127.0.0.1", 8080), 8081]}``."""
    bindings: dict[str, list[Any]] = {}
    for m in ports:
        host = m.host_port if m.host_ip is None else (m.host_ip, m.host_port)
        bindings.setdefault(f"{m.container_port}/{m.protocol}", []).append(host)
    return bindings


def _healthcheck(check: Healthcheck) -> dict[str, Any]:
    """Docker's healthcheck (times in nanoseconds; an absent one is Docker's default)."""
    test = ["CMD-SHELL", check.command] if isinstance(check.command, str) else ["CMD", *check.command]
    out: dict[str, Any] = {"test": test}
    for name, value in (("interval", check.interval), ("timeout", check.timeout), ("start_period", check.start_period)):
        if value is not None:
            out[name] = int(value * _NANOS)
    if check.retries is not None:
        out["retries"] = check.retries
    return out


def _port_taken(job_id: str, ports: tuple[PortMapping, ...], reason: str) -> PortTakenError:
    """The port dockerd could not bind, found in its words (``Bind for 0.0.0.0:8080 failed``, ``listen tcp4
    127.0.0.1:8080``); the first published one when they name none."""
    named = [m for m in ports if f":{m.host_port} " in f"{reason} " or f":{m.host_port}:" in reason
             or f":{m.host_port}/" in reason]  # fmt: skip
    m = (named or list(ports))[0]
    message = port_taken_message(job_id, m.host_port, m.protocol, reason)
    return PortTakenError(message, host_port=m.host_port, protocol=m.protocol)


__all__ = ["DockerRuntime", "container_name"]
