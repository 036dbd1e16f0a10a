"""The node's log lines: one per event, stamped in UTC to the millisecond (``node/logsetup.py``)."""

from __future__ import annotations

import calendar
import logging

from node.logsetup import KeyValueFormatter


def _line(formatter: KeyValueFormatter, created: float, msg: str = "job from peer job_id=j1") -> str:
    record = logging.LogRecord("cmnode.sync", logging.INFO, __file__, 1, msg, None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    return formatter.format(record)


def test_each_line_has_its_own_stamp_across_seconds() -> None:
    """The seconds are formatted once per second: a line in the next second (or an earlier one, a record
    made by another thread) still gets its own."""
    formatter = KeyValueFormatter()
    second = calendar.timegm((2026, 1, 2, 3, 4, 5))
    assert _line(formatter, second + 0.625) == (
        "2026-01-02T03:04:05.625Z level=info logger=cmnode.sync msg=job from peer job_id=j1"
    )
    assert _line(formatter, second + 0.875).startswith("2026-01-02T03:04:05.875Z ")
    assert _line(formatter, second + 1.125).startswith("2026-01-02T03:04:06.125Z ")
    assert _line(formatter, second - 59.5).startswith("2026-01-02T03:03:05.500Z ")
    assert _line(formatter, second + 1.5, "two\nlines").endswith("msg=two\\nlines")
