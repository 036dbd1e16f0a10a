"""What becomes of a finished container: its output is kept in the store (a bounded tail, so ``Logs`` outlives
the container), and the container itself is removed ``--retention`` seconds after it exited.

The Executor owns one ``Retention`` and runs its periodic sweep in its own nursery; the sweep lists this node's
containers by label, so it also cleans up after a node that was down when they ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

import trio

from .errors import NotFoundError, RuntimeFailureError, StorageFullError
from .runtime import Runtime
from .store import Store

log = logging.getLogger("cmnode.retention")

# The output kept per execution. Docker's tail counts the two streams together, hence the margin over the
# 10,000 lines per stream promised; the size bound is what really limits the store.
LOG_TAIL_LINES = 25_000
LOG_TAIL_CHARS = 2 * 1024 * 1024
SWEEP_MIN = 1.0
SWEEP_MAX = 60.0


class Retention:
    """Keeps the output of this node's containers and removes the containers once they are old enough.

    Args:
        seconds: how long a finished container is kept; None keeps it forever (the sweep does not run).
        in_progress: whether (job_id, attempt) is still being run here; its container is never touched.
    """

    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        runtime: Runtime,
        seconds: float | None,
        in_progress: Callable[[str, int], bool],
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.runtime = runtime
        self.seconds = seconds
        self._in_progress = in_progress

    async def keep_logs(self, job_id: str, attempt: int, container_id: str) -> bool:
        """Store a bounded tail of the container's output (nothing if it is gone or the daemon is away).

        Returns False when the store is full: the container, which still holds the output, must stay."""
        try:
            stdout, stderr = await self.runtime.logs(container_id, tail=LOG_TAIL_LINES)
        except (RuntimeFailureError, NotFoundError) as exc:
            log.debug("no logs for job_id=%s: %s", job_id, exc)
            return True
        try:
            await self.store.put_logs(job_id, self.node_id, attempt, _last_lines(stdout), _last_lines(stderr))
        except StorageFullError as exc:
            log.warning("cannot keep the output of job_id=%s: %s; its container stays", job_id, exc.message)
            return False
        return True

    async def after_exit(self, job_id: str, attempt: int, container_id: str) -> None:
        """Keep the output; with no retention, the container goes as soon as its output is safe."""
        kept = await self.keep_logs(job_id, attempt, container_id)
        if kept and self.seconds == 0 and not self._in_progress(job_id, attempt):
            await self.remove(container_id)

    async def run(self) -> NoReturn:
        """Sweep every ``seconds / 10`` (between 1 s and 60 s), forever."""
        assert self.seconds is not None, "nothing to sweep when containers are kept forever"
        interval = min(SWEEP_MAX, max(SWEEP_MIN, self.seconds / 10))
        while True:
            try:
                await self.sweep(self.seconds)
            except RuntimeFailureError as exc:
                log.debug("retention sweep skipped: %s", exc.message)
            await trio.sleep(interval)

    async def sweep(self, seconds: float) -> int:
        """Remove our containers that exited at least ``seconds`` ago, output kept first; returns how many.

        Never touches the container of an attempt in progress, nor a running one; a container created but
        never started by an attempt that is over goes at once (it has no output).

        Raises:
            RuntimeFailureError: the daemon cannot list containers.
        """
        removed = 0
        now = time.time()
        for info in await self.runtime.list_managed():
            if self._in_progress(info.job_id, info.attempt):
                continue
            if info.status in ("exited", "dead"):
                finished = _docker_time(info.finished_at)
                if finished is None or now - finished < seconds:
                    continue
                stored = await self.store.get_logs(info.job_id, self.node_id)
                behind = stored is None or stored[0] < info.attempt  # the node was down when it ended
                if behind and not await self.keep_logs(info.job_id, info.attempt, info.container_id):
                    continue  # a full disk: the container keeps the output until there is room
            elif info.status != "created":
                continue
            await self.remove(info.container_id)
            removed += 1
        return removed

    async def remove(self, container_id: str) -> None:
        try:
            await self.runtime.remove(container_id)
        except RuntimeFailureError as exc:
            log.warning("cannot remove container %s: %s", container_id[:12], exc.message)


def _last_lines(text: str) -> str:
    """At most LOG_TAIL_CHARS of the end of ``text``, starting at a line boundary."""
    if len(text) <= LOG_TAIL_CHARS:
        return text
    cut = text[-LOG_TAIL_CHARS:]
    return cut[cut.find("\n") + 1 :]


def _docker_time(value: str | None) -> float | None:
    """Docker's RFC 3339 timestamp (nanoseconds, ``Z``) as a Unix time; None if absent or unreadable."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
