"""The node's view of the Docker daemon: up, or down with the reason, and a way to wait until it is back.

The exit watcher's health events and a worker's failed call both update it; ``NodeService.Info``, ``/healthz``
and the metrics read ``error`` through the executor.
"""

from __future__ import annotations

import logging

import trio

log = logging.getLogger("cmnode.executor")


class DaemonHealth:
    """``error`` is None while the daemon answers; a worker waits on ``wait_up`` while it does not."""

    def __init__(self) -> None:
        self.error: str | None = "not connected yet"
        self._up = trio.Event()
        self._told = False
        """Whether the daemon's state since start was said: a node that never reaches it warns once too."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def mark_up(self) -> None:
        self.error = None
        self._told = True
        self._up.set()

    def mark_down(self, reason: str) -> None:
        if self.error is None or not self._told:
            log.warning("docker daemon unavailable: %s", reason)
            self._told = True
        self.error = reason
        if self._up.is_set():
            self._up = trio.Event()

    async def wait_up(self) -> None:
        await self._up.wait()


__all__ = ["DaemonHealth"]
