"""The Docker runtime: the only module that talks to the container engine.

The Docker SDK is blocking, so every call runs in a worker thread (``trio.to_thread.run_sync``) bounded by one
``CapacityLimiter``; docker and requests exceptions become ``node.errors`` at one boundary (``_map_errors``) so
callers and users see the daemon's explanation, never a Python repr. Exits are learnt from ONE events stream
(``watch_exits``) instead of a blocking ``wait()`` thread per container.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import docker.errors
import docker.utils
import requests
import trio

# Not `docker.DockerClient`: mypy would resolve `docker` to the repository's docker/ folder.
from docker.client import DockerClient

from .errors import NotFoundError, RuntimeFailureError
from .model import PULL_POLICIES, Job

log = logging.getLogger(__name__)

LABEL_JOB = "cmnode.job_id"
LABEL_NODE = "cmnode.node_id"
LABEL_ATTEMPT = "cmnode.attempt"
LABEL_MANAGED = "cmnode.managed"

_T = TypeVar("_T")
_NEVER_STARTED = "0001-01-01T00:00:00Z"
_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 2.0
# docker-init (tini, from init=True) reports a command it cannot exec as exit 127 plus this line on stderr.
_TINI_FATAL = "[FATAL tini"


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


@dataclass(frozen=True)
class DockerHealth:
    """Sent by ``watch_exits`` whenever its view of the daemon changes, so the node can report it."""

    ok: bool
    reason: str | None = None


def _root_oserror(exc: BaseException) -> OSError | None:
    """The innermost OSError with an errno (e.g. ECONNREFUSED) hidden under requests/urllib3 wrappers."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None and cur.strerror:
            return cur
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
        todo.extend(e for e in (cur.__cause__, cur.__context__) if e is not None)
    return None


def _explanation(exc: docker.errors.APIError) -> str:
    text: Any = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text:
        return str(text).strip()
    response = exc.response
    if response is not None:
        return f"the Docker daemon answered {response.status_code} {response.reason}"
    return "the Docker daemon refused the request"


def _labels_of(attrs: dict[str, Any]) -> tuple[str, int]:
    job_id = str(attrs.get(LABEL_JOB, ""))
    try:
        attempt = int(attrs.get(LABEL_ATTEMPT, 0))
    except (TypeError, ValueError):
        attempt = 0
    return job_id, attempt


def _timestamp(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != _NEVER_STARTED else None


async def _in_thread(fn: Callable[[], _T], *, limiter: trio.CapacityLimiter | None, abandon: bool) -> _T:
    """The single place a blocking call crosses into a worker thread."""
    return await trio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=abandon)


class _StreamSlot:
    """Holds the events stream across threads so a cancelled watcher can close one opened after it gave up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closed = False

    def put(self, stream: Any) -> bool:
        with self._lock:
            if not self._closed:
                self._stream = stream
                return True
        _close_quietly(stream)
        return False

    @property
    def stream(self) -> Any:
        with self._lock:
            return self._stream

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_quietly(stream)


def _close_quietly(stream: Any) -> None:
    # CancellableStream.close() shuts the socket down, which unblocks a thread reading it.
    with contextlib.suppress(Exception):
        stream.close()


class DockerRuntime:
    """Runs job containers on the local Docker daemon, labelled so that this node finds them again.

    Construction does not contact the daemon (a node starts while dockerd is down); the client is built on
    first use, in a worker thread, with the API version negotiated then.
    """

    def __init__(
        self,
        *,
        node_id: str,
        docker_timeout: float = 60.0,
        pull_timeout: float = 300.0,
        max_threads: int = 16,
        base_url: str | None = None,
    ) -> None:
        self.node_id = node_id
        self.docker_timeout = docker_timeout
        self.pull_timeout = pull_timeout
        self._limiter = trio.CapacityLimiter(max_threads)
        # The watcher's threads and abandoned pulls come on top of max_threads, hence the extra connections.
        self._pool_size = max_threads + 4
        self._kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
        if base_url is not None:
            self._kwargs["base_url"] = base_url
        self._where = str(self._kwargs.get("base_url") or "unix:///var/run/docker.sock")
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------------------------

    def _api(self) -> Any:
        """The low-level APIClient, built once (in a worker thread: version negotiation is a request)."""
        with self._client_lock:
            if self._closed:
                raise RuntimeFailureError("the Docker runtime is closed")
            if self._client is None:
                self._client = DockerClient(
                    version="auto",
                    timeout=self.docker_timeout,
                    max_pool_size=self._pool_size,
                    **self._kwargs,
                )
            return self._client.api

    def _describe(self, exc: BaseException) -> str:
        """A user-facing reason for a docker/requests failure: the daemon's words, or what the socket said."""
        if isinstance(exc, docker.errors.APIError):
            return _explanation(exc)
        if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
            return f"the Docker daemon at {self._where} did not answer within {self.docker_timeout:g}s"
        if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
            root = _root_oserror(exc)
            why = root.strerror.lower() if root is not None and root.strerror else "connection failed"
            return f"cannot connect to the Docker daemon at {self._where}: {why}"
        if isinstance(exc, docker.errors.DockerException) and exc.__cause__ is not None:
            return self._describe(exc.__cause__)
        root = _root_oserror(exc)
        if root is not None and root.strerror:
            return f"Docker daemon at {self._where}: {root.strerror.lower()}"
        return str(exc) or type(exc).__name__

    @contextlib.contextmanager
    def _map_errors(self, what: str | None) -> Iterator[None]:
        """The one boundary where docker/requests exceptions become RuntimeFailureError."""
        try:
            yield
        except (docker.errors.DockerException, OSError) as exc:
            reason = self._describe(exc)
            raise RuntimeFailureError(f"{what}: {reason}" if what else reason) from exc

    async def _run(self, what: str | None, fn: Callable[[], _T], *, abandon: bool = True) -> _T:
        """Run a blocking SDK call in a bounded worker thread.

        Read-only calls are abandoned on cancellation so shutdown never waits on the daemon; calls that
        change state (``abandon=False``) run to completion, bounded by the client timeout, so the caller
        learns e.g. the id of the container it created.
        """
        with self._map_errors(what):
            return await _in_thread(fn, limiter=self._limiter, abandon=abandon)

    # -- public API -----------------------------------------------------------------------------------------

    async def health(self) -> str | None:
        """None when the daemon answers a ping, else a short reason fit for a status page."""
        try:
            await self._run(None, lambda: self._api().ping())
        except RuntimeFailureError as exc:
            return exc.message
        return None

    async def ensure_image(self, image: str, policy: str) -> bool:
        """Make ``image`` present per the pull policy; True if it pulled.

        The SDK's pull has no client-side timeout, so the thread is abandoned after ``pull_timeout``
        (the daemon gives up on its own later) rather than holding up the job or node shutdown.
        """
        if policy not in PULL_POLICIES:
            raise ValueError(f"unknown pull policy {policy!r}")
        if policy != "always":
            present = await self._run(f"cannot inspect image {image!r}", lambda: self._image_present(image))
            if present:
                return False
            if policy == "never":
                raise RuntimeFailureError(f"image {image!r} is not present and pull policy is never")
        with trio.move_on_after(self.pull_timeout) as scope:
            await self._run(f"pull of {image!r} failed", lambda: self._pull(image))
        if scope.cancelled_caught:
            raise RuntimeFailureError(f"pull of {image!r} timed out after {self.pull_timeout:g}s")
        return True

    async def image_present(self, image: str) -> bool:
        """Whether the image is in the local store (so that a job's state need not say "pulling")."""
        return await self._run(f"cannot inspect image {image!r}", lambda: self._image_present(image))

    def _image_present(self, image: str) -> bool:
        try:
            self._api().inspect_image(image)
        except docker.errors.NotFound:
            return False
        return True

    def _pull(self, image: str) -> None:
        repository, tag = docker.utils.parse_repository_tag(image)
        # An error after the pull began arrives as a line in a 200 stream, not as an HTTP status.
        for line in self._api().pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise RuntimeFailureError(f"pull of {image!r} failed: {str(line['error']).strip()}")

    async def start(self, job: Job, attempt: int) -> str:
        """Create and start the job's container; returns its id. Never pulls (see ``ensure_image``).

        ``init=True`` puts docker-init in front so SIGTERM stops the job at once; with it, a command that
        cannot be executed shows up as exit 127 (reported by ``watch_exits`` with the reason) rather than
        as a start error. No ``auto_remove``: the logs must outlive the container's exit.
        """
        return await self._run(
            f"cannot start container for job {job.job_id}", lambda: self._start(job, attempt), abandon=False
        )

    def _start(self, job: Job, attempt: int) -> str:
        api = self._api()
        spec = job.spec
        labels = {
            **spec.labels,
            LABEL_JOB: job.job_id,
            LABEL_NODE: self.node_id,
            LABEL_ATTEMPT: str(attempt),
            LABEL_MANAGED: "1",
        }
        host: dict[str, Any] = {"init": True}
        if spec.resources.cpus is not None:
            host["nano_cpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory is not None:
            host["mem_limit"] = spec.resources.memory
        # An empty entrypoint means "clear the image's", which Docker spells [""].
        entrypoint = None if spec.entrypoint is None else (list(spec.entrypoint) or [""])
        created = api.create_container(
            image=spec.image,
            command=list(spec.arguments) or None,
            entrypoint=entrypoint,
            environment=dict(spec.env),
            labels=labels,
            detach=True,
            host_config=api.create_host_config(**host),
        )
        container_id = str(created["Id"])
        try:
            api.start(container_id)
        except BaseException:
            with contextlib.suppress(Exception):
                api.remove_container(container_id, force=True)
            raise
        return container_id

    async def stop(self, container_id: str, *, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a container already stopped or gone is fine."""

        def stop() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                self._api().stop(container_id, timeout=max(0, math.ceil(grace)))

        await self._run(f"cannot stop container {container_id[:12]}", stop, abandon=False)

    async def remove(self, container_id: str) -> None:
        """Force-remove the container (and its logs); already gone, or being removed, is fine."""

        def remove() -> None:
            try:
                self._api().remove_container(container_id, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "in progress" not in _explanation(exc):
                    raise

        await self._run(f"cannot remove container {container_id[:12]}", remove, abandon=False)

    async def logs(self, container_id: str, *, tail: int | None = None) -> tuple[str, str]:
        """(stdout, stderr), each decoded as UTF-8 with replacement; NotFoundError if the container is gone."""

        def read(stdout: bool) -> str:
            raw = self._api().logs(container_id, stdout=stdout, stderr=not stdout, tail="all" if tail is None else tail)
            return bytes(raw).decode("utf-8", errors="replace")

        def both() -> tuple[str, str] | None:
            try:
                return read(True), read(False)
            except docker.errors.NotFound:
                return None

        result = await self._run(f"cannot read logs of container {container_id[:12]}", both)
        if result is None:
            raise NotFoundError(f"container {container_id[:12]} no longer exists")
        return result

    async def inspect(self, container_id: str) -> ContainerInfo | None:
        """The container's state, or None if it is gone."""
        return await self._run(f"cannot inspect container {container_id[:12]}", lambda: self._inspect(container_id))

    def _inspect(self, container_id: str) -> ContainerInfo | None:
        try:
            attrs = self._api().inspect_container(container_id)
        except docker.errors.NotFound:
            return None
        return self._info(attrs)

    @staticmethod
    def _info(attrs: dict[str, Any]) -> ContainerInfo:
        state = attrs.get("State") or {}
        job_id, attempt = _labels_of((attrs.get("Config") or {}).get("Labels") or {})
        status = str(state.get("Status", "unknown"))
        exit_code = state.get("ExitCode")
        return ContainerInfo(
            container_id=str(attrs["Id"]),
            job_id=job_id,
            attempt=attempt,
            status=status,
            exit_code=int(exit_code) if exit_code is not None and status in ("exited", "dead") else None,
            started_at=_timestamp(state.get("StartedAt")),
            finished_at=_timestamp(state.get("FinishedAt")),
        )

    async def list_managed(self) -> list[ContainerInfo]:
        """Every container (running or not) that carries this node's label."""
        return await self._run("cannot list containers", lambda: [self._info(a) for a in self._list_attrs()])

    def _list_attrs(self, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Inspect data of our containers: the list summary has no exit code or timestamps, so one inspect
        each (skipping any removed meanwhile)."""
        filters: dict[str, Any] = {"label": [f"{LABEL_NODE}={self.node_id}", f"{LABEL_MANAGED}=1"]}
        if statuses:
            filters["status"] = list(statuses)
        api = self._api()
        out = []
        for summary in api.containers(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                out.append(api.inspect_container(str(summary["Id"])))
        return out

    def _exit_from(self, attrs: dict[str, Any], exit_code: int | None = None) -> ContainerExit:
        """A ContainerExit from inspect data: OOM kill, the engine's error, or docker-init's exec failure."""
        state = attrs.get("State") or {}
        job_id, attempt = _labels_of((attrs.get("Config") or {}).get("Labels") or {})
        code = int(state.get("ExitCode") or 0) if exit_code is None else exit_code
        error = str(state.get("Error") or "") or None
        if code == 127 and error is None:
            with contextlib.suppress(docker.errors.NotFound):
                stderr = bytes(self._api().logs(str(attrs["Id"]), stdout=False, stderr=True, tail=5))
                for line in stderr.decode("utf-8", errors="replace").splitlines():
                    if line.startswith(_TINI_FATAL):
                        error = line.split("]", 1)[-1].strip()
        return ContainerExit(
            container_id=str(attrs["Id"]),
            job_id=job_id,
            attempt=attempt,
            exit_code=code,
            oom_killed=bool(state.get("OOMKilled")),
            error=error,
        )

    # -- the exit watcher -----------------------------------------------------------------------------------

    def _connect(self, slot: _StreamSlot) -> list[ContainerExit]:
        """Subscribe to our die events, THEN list exits that already happened, so none falls in between."""
        api = self._api()
        stream = api.events(
            decode=True,
            filters={"type": "container", "event": "die", "label": f"{LABEL_NODE}={self.node_id}"},
        )
        if not slot.put(stream):
            return []
        return [self._exit_from(attrs) for attrs in self._list_attrs(("exited", "dead"))]

    def _follow(self, stream: Any, deliver: Callable[[ContainerExit], Any]) -> None:
        """Thread body: turn each die event into a ContainerExit and hand it to Trio. Returns when the
        stream ends (daemon gone, or closed by the cancelled watcher)."""
        for event in stream:
            actor = event.get("Actor") or {}
            attrs = actor.get("Attributes") or {}
            container_id = str(actor.get("ID") or event.get("id") or "")
            if not container_id or attrs.get(LABEL_MANAGED) != "1":
                continue
            try:
                exit_code = int(attrs.get("exitCode", -1))
            except (TypeError, ValueError):
                exit_code = -1
            try:
                exit_ = self._exit_from(self._api().inspect_container(container_id), exit_code)
            except docker.errors.NotFound:  # removed already: the event's labels are all we have
                job_id, attempt = _labels_of(attrs)
                exit_ = ContainerExit(container_id=container_id, job_id=job_id, attempt=attempt, exit_code=exit_code)
            trio.from_thread.run(deliver, exit_)

    async def watch_exits(
        self,
        send: trio.MemorySendChannel[ContainerExit | DockerHealth],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Report every exit of our containers on ``send``, forever, through one events stream.

        On each (re)connect it sends DockerHealth(ok=True) and then a ContainerExit for every container of
        ours already exited (the consumer is idempotent), covering exits missed while disconnected. While the
        daemon is unreachable it sends DockerHealth(ok=False) when that first happens or the reason changes,
        and retries with backoff capped at 2 s. Cancellation returns promptly: the stream is closed, which
        ends the reader thread.
        """
        started = False
        backoff = _BACKOFF_FIRST
        last_reason: str | None = None
        while True:
            slot = _StreamSlot()
            try:
                reason: str | None = None
                try:
                    exits: list[ContainerExit] = []
                    with trio.move_on_after(self.docker_timeout) as connect_scope:
                        exits = await self._run(None, functools.partial(self._connect, slot))
                    if connect_scope.cancelled_caught:
                        reason = f"the Docker daemon at {self._where} did not answer within {self.docker_timeout:g}s"
                except RuntimeFailureError as exc:
                    reason = exc.message
                if not started:
                    task_status.started()
                    started = True
                if reason is None:
                    backoff = _BACKOFF_FIRST
                    last_reason = None
                    await send.send(DockerHealth(ok=True))
                    for exit_ in exits:
                        await send.send(exit_)
                    await self._read_events(slot, send)
                    reason = "the Docker events stream ended"
                if reason != last_reason:
                    await send.send(DockerHealth(ok=False, reason=reason))
                    last_reason = reason
            finally:
                slot.close()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_CAP)

    async def _read_events(self, slot: _StreamSlot, send: trio.MemorySendChannel[ContainerExit | DockerHealth]) -> None:
        """Follow the stream in a thread that is NOT abandoned (so no delivery outlives the watcher); a sibling
        task closes the stream on cancellation, which ends that thread within milliseconds."""
        stream = slot.stream
        if stream is None:
            return

        async def close_on_cancel() -> None:
            try:
                await trio.sleep_forever()
            finally:
                slot.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_on_cancel)
            try:
                await _in_thread(functools.partial(self._follow, stream, send.send), limiter=None, abandon=False)
            except Exception as exc:  # any failure of the reader means "reconnect", never a dead watcher
                log.warning("Docker events stream broke: %s", self._describe(exc))
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        """Release the client's connections; later calls raise RuntimeFailureError."""
        with self._client_lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_MANAGED",
    "LABEL_NODE",
    "ContainerExit",
    "ContainerInfo",
    "DockerHealth",
    "DockerRuntime",
]
