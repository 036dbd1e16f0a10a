"""Which peer jobs placed here this node takes: a token bucket per origin, the queue's room, and trust.

A peer's job that this node's placement runs here either runs now (within its origin's rate, with a free queue
slot), waits (a trusted origin's excess: stored pending in the ``Backlog`` and taken when there is room, never
lost), or is refused (an untrusted origin beyond its rate or beyond the queue). The executor records a refused
job as a ``rejected`` execution saying why, final and never retried, and the refusals are counted by reason
(``NodeService.Info`` and ``cmnode_peer_jobs_refused_total``). Jobs created here are bounded by the queue
alone (``Executor.submit`` refuses at a full queue) and never pass here.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["MAX_ORIGINS", "Admission", "Decision", "Verdict"]

MAX_ORIGINS = 10_000
"""Buckets kept; the least recently used is dropped beyond (it starts full again: an origin that many new
origins push out gains at most one burst, and the queue bounds what any number of origins can take)."""


class Verdict(enum.Enum):
    RUN = "run"
    HOLD = "hold"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str | None = None


def _trust_all(origin: str) -> bool:
    return True


class Admission:
    """Decides for each peer job placed here; ``trusted(origin)`` says whose excess waits instead of being
    refused (every origin by default; node/trust.py narrows it)."""

    def __init__(
        self,
        *,
        rate: float = 10.0,
        burst: int = 100,
        trusted: Callable[[str], bool] = _trust_all,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.trusted = trusted
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # origin -> (tokens, when)
        self.refused: dict[str, int] = {"rate": 0, "queue": 0}

    def decide(self, origin: str, *, room: bool) -> Decision:
        """For one job from ``origin``; ``room``: a queue slot is free now (and nothing waits before it)."""
        within = self._take(origin)
        trusted = self.trusted(origin)
        if within and room:
            return Decision(Verdict.RUN)
        if trusted:
            return Decision(Verdict.HOLD)
        if not within:
            self.refused["rate"] += 1
            return Decision(
                Verdict.REFUSE,
                f"refused: origin {origin} placed more than {self.burst} jobs at once or {self.rate:g} a second "
                "here (--peer-job-burst, --peer-job-rate) and is not trusted to queue more",
            )
        self.refused["queue"] += 1
        return Decision(Verdict.REFUSE, f"refused: the job queue is full and origin {origin} is not trusted to wait")

    def _take(self, origin: str) -> bool:
        now = self._clock()
        tokens, then = self._buckets.pop(origin, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        taken = tokens >= 1.0
        self._buckets[origin] = (tokens - 1.0 if taken else tokens, now)
        while len(self._buckets) > MAX_ORIGINS:
            self._buckets.popitem(last=False)
        return taken

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())
