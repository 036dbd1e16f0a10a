"""Durations as operators write them: ``7d``, ``12h``, ``30m``, ``2s``, ``1.5s`` or a bare number of seconds.

A setting typed ``Duration`` (``--job-retention``) is read through ``parse_duration`` from a flag, a variable or
a TOML value (a number or a string), and shown back with ``format_duration`` in messages.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["Duration", "format_duration", "parse_duration"]

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PATTERN = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([dhms]?)\s*")


class Duration(float):
    """Seconds, as a float; its own type so the settings machinery reads it with units (``parse_duration``)."""

    def __str__(self) -> str:
        return format_duration(self)


def parse_duration(value: Any) -> Duration:
    """``value`` (``"7d"``, ``"2s"``, ``"0"``, ``90``, ``1.5``) in seconds.

    Raises:
        ValueError: not a non-negative number with an optional unit d, h, m or s.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.fullmatch(value.lower())
        if match is None:
            raise ValueError(f"{value!r} is not a duration (e.g. 7d, 12h, 30m, 2s)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration")
    return Duration(seconds)


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: ``604800`` is ``7d``, ``7200`` is ``2h``, ``1.5`` is ``1.5s``, 0 is ``0``."""
    if seconds == 0:
        return "0"
    for unit, size in _UNITS.items():
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"
