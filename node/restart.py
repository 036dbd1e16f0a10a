"""When an attempt that ended is followed by another: the spec's ``restart`` policy and ``retries``, and the
backoff between attempts. Pure, so the executor's rule is tested without running anything.

``never`` (the default) with ``retries`` is the original behaviour: a failure is retried up to ``retries``
times. ``on-failure`` restarts a failure (a non-zero exit, a timeout, an unhealthy verdict, a start error) up
to ``retries`` times when given, else without limit. ``always`` is a service: it restarts after any exit, a
clean one included, until Stop (or a newer allocation releases it).

The backoff (``executor.retry_delay``) grows with the quick runs in a row and starts again from its base once
a run lasted ``RESET_AFTER`` seconds: a service that ran for a day and then crashed is back within a second,
one that crashes at once settles at one start a minute.
"""

from __future__ import annotations

from .spec import JobSpec

__all__ = ["RESET_AFTER", "restarts", "streak_after"]

RESET_AFTER = 10.0
"""Seconds a run must last for the next restart to wait only ``base`` again."""


def restarts(spec: JobSpec, attempt: int, *, failed: bool) -> bool:
    """Whether the attempt numbered ``attempt``, which just ended (``failed`` or not), is followed by another."""
    if spec.restart == "always":
        return True
    if not failed:
        return False
    if spec.restart == "on-failure" and spec.retries == 0:
        return True
    return attempt <= spec.retries


def streak_after(streak: int, ran_for: float | None) -> int:
    """The quick runs in a row once a run of ``ran_for`` seconds (None: it never started) ended, ``streak``
    quick ones having come before it: the step of the backoff before the next attempt (at least 1)."""
    if ran_for is not None and ran_for >= RESET_AFTER:
        return 1
    return streak + 1
