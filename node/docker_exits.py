"""The exit watcher: every exit of this node's containers, and every change of their healthchecks' verdicts,
learnt from ONE Docker events stream instead of a blocking ``wait()`` thread per container, with the daemon's
health as a by-product."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import docker.errors
import trio

from .docker_client import DockerConnection, in_thread, labels_of
from .errors import RuntimeFailureError
from .runtime import LABEL_MANAGED, LABEL_NODE, ContainerExit, ContainerHealth, DockerHealth, RuntimeEvent

log = logging.getLogger("node.runtime")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 2.0
# docker-init (tini, from init=True) reports a command it cannot exec as exit 127 plus this line on stderr.
_TINI_FATAL = "[FATAL tini"
_HEALTH_EVENT = "health_status"
"""Docker's action for a health change is ``health_status: healthy``; the filter matches the part before ':'."""


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


def _health_of(attrs: dict[str, Any]) -> ContainerHealth | None:
    """The healthcheck's verdict on a container from its inspect data, or None if it has no healthcheck."""
    status = ((attrs.get("State") or {}).get("Health") or {}).get("Status")
    if status not in ("starting", "healthy", "unhealthy"):
        return None
    job_id, attempt = labels_of((attrs.get("Config") or {}).get("Labels") or {})
    return ContainerHealth(container_id=str(attrs["Id"]), job_id=job_id, attempt=attempt, status=status)


class ExitWatcher:
    """Follows the die events of one node's containers on one connection (see ``watch``)."""

    def __init__(self, conn: DockerConnection) -> None:
        self._conn = conn

    def exit_from(self, attrs: dict[str, Any], exit_code: int | None = None) -> ContainerExit:
        """A ContainerExit from inspect data (thread side): OOM kill, the engine's error, or docker-init's exec
        failure read from the container's last lines of stderr."""
        state = attrs.get("State") or {}
        job_id, attempt = labels_of((attrs.get("Config") or {}).get("Labels") or {})
        code = int(state.get("ExitCode") or 0) if exit_code is None else exit_code
        error = str(state.get("Error") or "") or None
        if code == 127 and error is None:
            with contextlib.suppress(docker.errors.NotFound):
                stderr = self._conn.logs(str(attrs["Id"]), stdout=False, stderr=True, tail=5)
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

    def _connect(self, slot: _StreamSlot) -> list[ContainerExit | ContainerHealth]:
        """Subscribe to our die and health events, THEN list exits that already happened and the health of
        the containers still running, so no change falls in between."""
        stream = self._conn.api().events(
            decode=True,
            filters={
                "type": "container",
                "event": ["die", _HEALTH_EVENT],
                "label": f"{LABEL_NODE}={self._conn.node_id}",
            },
        )
        if not slot.put(stream):
            return []
        known: list[ContainerExit | ContainerHealth] = []
        for attrs in self._conn.list_attrs():
            status = (attrs.get("State") or {}).get("Status")
            if status in ("exited", "dead"):
                known.append(self.exit_from(attrs))
            elif status == "running" and (health := _health_of(attrs)) is not None:
                known.append(health)
        return known

    def _follow(self, stream: Any, deliver: Callable[[ContainerExit | ContainerHealth], Any]) -> None:
        """Thread body: turn each die event into a ContainerExit, each health change into a ContainerHealth,
        and hand it to Trio. Returns when the stream ends (daemon gone, or closed by the cancelled watcher)."""
        for event in stream:
            actor = event.get("Actor") or {}
            attrs = actor.get("Attributes") or {}
            container_id = str(actor.get("ID") or event.get("id") or "")
            if not container_id or attrs.get(LABEL_MANAGED) != "1":
                continue
            action = str(event.get("Action") or event.get("status") or "")
            if action.startswith(_HEALTH_EVENT):
                job_id, attempt = labels_of(attrs)
                status = action.partition(":")[2].strip()
                health = ContainerHealth(container_id=container_id, job_id=job_id, attempt=attempt, status=status)
                if status in ("starting", "healthy", "unhealthy"):
                    trio.from_thread.run(deliver, health)
                continue
            try:
                exit_code = int(attrs.get("exitCode", -1))
            except (TypeError, ValueError):
                exit_code = -1
            try:
                exit_ = self.exit_from(self._conn.api().inspect_container(container_id), exit_code)
            except docker.errors.NotFound:  # removed already: the event's labels are all we have
                job_id, attempt = labels_of(attrs)
                exit_ = ContainerExit(container_id=container_id, job_id=job_id, attempt=attempt, exit_code=exit_code)
            trio.from_thread.run(deliver, exit_)

    async def watch(
        self,
        send: trio.MemorySendChannel[RuntimeEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Report every exit of our containers on ``send``, forever, through one events stream.

        On each (re)connect it sends DockerHealth(ok=True), then a ContainerExit for every container of ours
        already exited and a ContainerHealth for every running one with a healthcheck (the consumer is
        idempotent), covering changes missed while disconnected. While the
        daemon is unreachable it sends DockerHealth(ok=False) when that first happens or the reason changes,
        and retries with backoff capped at 2 s. Cancellation returns promptly: the stream is closed, which
        ends the reader thread.
        """
        started = False
        backoff = BACKOFF_FIRST
        last_reason: str | None = None
        conn = self._conn
        while True:
            slot = _StreamSlot()
            try:
                reason: str | None = None
                try:
                    exits: list[ContainerExit | ContainerHealth] = []
                    with trio.move_on_after(conn.timeout) as connect_scope:
                        exits = await conn.run(None, functools.partial(self._connect, slot))
                    if connect_scope.cancelled_caught:
                        reason = f"the Docker daemon at {conn.where} did not answer within {conn.timeout:g}s"
                except RuntimeFailureError as exc:
                    reason = exc.message
                if not started:
                    task_status.started()
                    started = True
                if reason is None:
                    backoff = BACKOFF_FIRST
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
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _read_events(self, slot: _StreamSlot, send: trio.MemorySendChannel[RuntimeEvent]) -> None:
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
                await in_thread(functools.partial(self._follow, stream, send.send), limiter=None, abandon=False)
            except Exception as exc:  # any failure of the reader means "reconnect", never a dead watcher
                log.warning("Docker events stream broke: %s", self._conn.describe(exc))
            nursery.cancel_scope.cancel()


__all__ = ["ExitWatcher"]
