"""A pull's progress: Docker's per-layer lines summed into bytes done of bytes to fetch, reported at most about
once a second, so a slow link shows movement and a fast registry does not flood the event stream.

Both runtimes feed the same ``PullProgress`` (DockerRuntime from the engine's pull stream, FakeRuntime from a
scripted one), so the throttling tested in milliseconds is the one a real pull uses. Reports leave through an
``OnProgress`` callback the node points at its event hub (``progress`` events, node/events.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = ["REPORT_EVERY", "OnProgress", "PullProgress", "PullReport"]

REPORT_EVERY = 1.0
"""Seconds between two reports of one pull (the last one, the pull done, is sent whatever the time)."""


@dataclass(frozen=True, slots=True)
class PullReport:
    """Where one pull stands: ``total`` sums the sizes of the layers whose size is known so far (Docker learns a
    layer's size when its download starts), None while none is."""

    job_id: str
    node_id: str
    image: str
    done: int
    total: int | None

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "node_id": self.node_id, "image": self.image, "done": self.done,
                "total": self.total}  # fmt: skip


OnProgress = Callable[[PullReport], None]
"""Called with each report that is due; it must not block (DockerRuntime calls it from its pull's thread
through the trio token, FakeRuntime on the trio thread)."""


class PullProgress:
    """The layers of one pull and when it last reported. ``feed`` each line of Docker's pull stream; it returns a
    report when one is due. Layers that already exist count for nothing: only bytes to fetch are shown."""

    def __init__(
        self,
        *,
        job_id: str,
        node_id: str,
        image: str,
        clock: Callable[[], float] = time.monotonic,
        every: float = REPORT_EVERY,
    ) -> None:
        self.job_id, self.node_id, self.image = job_id, node_id, image
        self._clock = clock
        self._every = every
        self._layers: dict[str, tuple[int, int | None]] = {}
        """Layer id -> (bytes downloaded, its size if known)."""
        self._last_at: float | None = None
        self._last: tuple[int, int | None] | None = None

    def now(self) -> PullReport:
        done = sum(d for d, _ in self._layers.values())
        sizes = [t for _, t in self._layers.values() if t is not None]
        return PullReport(self.job_id, self.node_id, self.image, done, sum(sizes) if sizes else None)

    def feed(self, line: Mapping[str, Any]) -> PullReport | None:
        """One line of the pull stream (``{"status", "id", "progressDetail": {"current", "total"}}``)."""
        layer, status = line.get("id"), str(line.get("status") or "")
        if not isinstance(layer, str) or not layer:
            return self._due(final=False)
        done, size = self._layers.get(layer, (0, None))
        detail = line.get("progressDetail")
        current = detail.get("current") if isinstance(detail, Mapping) else None
        total = detail.get("total") if isinstance(detail, Mapping) else None
        if status == "Already exists":
            self._layers.pop(layer, None)
            return self._due(final=False)
        if status == "Downloading" and _count(current) and _count(total):
            done, size = min(current, total), total
        elif status in ("Download complete", "Pull complete") and size is not None:
            done = size
        elif status.startswith("Pulling fs layer") or status == "Waiting":
            done = 0
        else:
            return self._due(final=False)  # Extracting, Verifying Checksum...: no change in bytes fetched
        self._layers[layer] = (done, size)
        return self._due(final=False)

    def finish(self) -> PullReport | None:
        """The pull succeeded: every known layer is fetched; a last report if it says something new."""
        self._layers = {k: (t, t) if t is not None else (d, t) for k, (d, t) in self._layers.items()}
        return self._due(final=True)

    def _due(self, *, final: bool) -> PullReport | None:
        report = self.now()
        value = (report.done, report.total)
        if value == self._last or (report.total is None and not report.done):
            return None
        at = self._clock()
        if not final and self._last_at is not None and at - self._last_at < self._every:
            return None
        self._last_at, self._last = at, value
        return report


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
