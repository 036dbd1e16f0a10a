"""Liveness verdicts: the rules by which this node holds another node down, apart from what it knows of it.

A node is down when it is unheard for DOWN_AFTER of the intervals its record promises (the last resort, since
unchanged records are a minute or more apart), when a lost notice said so (``node/lost.py``: a peer lost its
connections to it and could not reach it), or when it missed a roll call. A notice only names the reporter's own
neighbours, so each one taken opens a roll call: every node republishes its record within ROLL_JITTER, and a
node not heard within ROLL_WINDOW of the call's start is down from then (nodes beyond a partition that nobody
here was connected to). Each reporter has an allowance of notices, so one node cannot flood the mesh with them.

What lives here is the judging: ``Heard`` (when a node was heard, and since when it is down), ``RollCall`` and
``Allowance``. ``node/registry.py`` owns the records and decides when to ask (``Registry.on_lost``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from .noderecord import NodeRecord

__all__ = [
    "DOWN_AFTER",
    "MAX_REPORTERS",
    "NOTICE_BURST",
    "NOTICE_RATE",
    "ROLL_JITTER",
    "ROLL_WINDOW",
    "Allowance",
    "Heard",
    "RollCall",
]

DOWN_AFTER = 3
"""Intervals a node's record promises that it may miss before it is down."""
ROLL_JITTER = 2.0
"""A node asked to republish (a roll call, a node heard again) does so within a random delay of up to this many
seconds, so the mesh's records do not all arrive at once; and not again within it."""
ROLL_WINDOW = 8.0
"""A node not heard within this many seconds of a roll call's start (nor within ROLL_JITTER before it) is down
from the start: its record had two seconds to be sent and six to cross a busy mesh."""
NOTICE_BURST = 16
"""Lost notices taken from one reporter in a burst (a node losing all its connections at once reports each)."""
NOTICE_RATE = 0.5
"""Lost notices a second taken from one reporter beyond the burst; the rest are dropped."""
MAX_REPORTERS = 1000
"""Reporters whose allowance is remembered; the least recently heard is forgotten (and starts full again)."""


@dataclass
class Heard:
    """A node as this node knows it: its latest record, and when it was heard (trio time) and seen (wall)."""

    record: NodeRecord
    heard: float
    seen_at: float
    unheard_since: float | None = None
    """Where ``down_for`` counts from: ``heard``, except for a node loaded from the store at start (shown down
    at once, yet given the full ``--reschedule-after`` from the start before its jobs move)."""
    lost_at: float | None = None
    """When a notice said it was lost, or the roll call it missed began (trio time): down since then."""

    def down_since(self, now: float) -> float | None:
        """Since when (trio time) it is down: silent for DOWN_AFTER of its intervals, reported lost or missed a
        roll call, whichever came first; None: up."""
        since = None
        if now - self.heard >= DOWN_AFTER * self.record.heartbeat:
            since = self.heard if self.unheard_since is None else self.unheard_since
        if self.lost_at is not None and (since is None or self.lost_at < since):
            since = self.lost_at
        return since

    def served_age(self, now: float) -> float:
        """Seconds since heard, as catch-up serves it: a node reported lost is served as silent for DOWN_AFTER
        of its intervals at least, so a node away while the notice flooded does not take its last record for a
        sign of life (and hold it up until its long refresh ran out)."""
        age = max(0.0, now - self.heard)
        return age if self.lost_at is None else max(age, DOWN_AFTER * self.record.heartbeat)

    def missed(self, began: float) -> bool:
        """Whether it was not heard in the roll call that began at ``began`` (nor just before it)."""
        return self.heard < began - ROLL_JITTER


class RollCall:
    """The open roll call, if any: when it began, and whether its window has passed."""

    def __init__(self) -> None:
        self.began: float | None = None

    def join(self, now: float) -> None:
        """A notice arrived: open a roll call unless one is open (it keeps its start)."""
        if self.began is None:
            self.began = now

    def close(self, now: float) -> float | None:
        """The start of the open roll call once ROLL_WINDOW has passed since (and it is closed); else None."""
        began = self.began
        if began is None or now < began + ROLL_WINDOW:
            return None
        self.began = None
        return began


class Allowance:
    """Each reporter's lost notices: NOTICE_BURST at once, refilled at NOTICE_RATE a second (a token bucket),
    for at most MAX_REPORTERS reporters."""

    def __init__(self, burst: float = NOTICE_BURST, rate: float = NOTICE_RATE, limit: int = MAX_REPORTERS) -> None:
        self._burst, self._rate, self._limit = float(burst), rate, limit
        self._tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """Each reporter's (tokens, when counted), least recently used first."""

    def take(self, reporter: str, now: float) -> bool:
        """Take one notice from ``reporter`` if its allowance has room."""
        tokens, then = self._tokens.pop(reporter, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        allowed = tokens >= 1.0
        self._tokens[reporter] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._tokens) > self._limit:
            self._tokens.popitem(last=False)
        return allowed
