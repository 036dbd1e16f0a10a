"""The cyclic garbage collector's pauses, logged at debug level, so that a slow job or RPC can be checked
against them (``benchmarks/mesh.py`` prints them beside a job that reached a node late).

A pause of the collector stops the whole trio loop: every gossip hop through this node waits for it. Only
installed when debug logging is on: the callback runs at every collection (young ones happen hundreds of times a
second), so it is not left in a node that does not log it."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

__all__ = ["SLOW", "install"]

log = logging.getLogger("cmnode.gc")

SLOW = 0.005
"""Pauses at least this long (seconds) are logged, and every full (generation 2) one."""


class _Watch:
    def __init__(self) -> None:
        self.began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.began = time.perf_counter()
            return
        took = time.perf_counter() - self.began
        if took >= SLOW or info.get("generation") == 2:
            log.debug("gc pause gen=%d ms=%.1f collected=%d", info.get("generation", -1), took * 1000,
                      info.get("collected", 0))  # fmt: skip


def install() -> bool:
    """Watch the collector if debug logging is on (idempotent); whether it is watched."""
    if not log.isEnabledFor(logging.DEBUG):
        return False
    if not any(isinstance(cb, _Watch) for cb in gc.callbacks):
        gc.callbacks.append(_Watch())
    return True
