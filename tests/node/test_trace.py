"""What ``benchmarks/mesh.py --trace`` reads: the collector's pauses, logged at debug level only (node/gcwatch.py,
a full collection is one line), and ``CMNODE_TRACE=1``, which puts only the traced loggers at debug level."""

from __future__ import annotations

import gc
import logging

import pytest

from node import gcwatch
from node.runner import TRACE_ENV, TRACED, trace_from_env


def test_a_full_collection_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    before = list(gc.callbacks)
    try:
        with caplog.at_level(logging.INFO, logger="cmnode.gc"):
            assert not gcwatch.install()
        assert gc.callbacks == before
        with caplog.at_level(logging.DEBUG, logger="cmnode.gc"):
            assert gcwatch.install() and gcwatch.install()  # once, however often
            assert len(gc.callbacks) == len(before) + 1
            gc.collect()
        assert any(r.getMessage().startswith("gc pause gen=2 ") for r in caplog.records)
    finally:
        gc.callbacks[:] = before


def test_the_trace_variable_puts_only_the_traced_loggers_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    loggers = [logging.getLogger(name) for name in TRACED]
    levels = [logger.level for logger in loggers]
    try:
        monkeypatch.delenv(TRACE_ENV, raising=False)
        trace_from_env()
        assert [logger.level for logger in loggers] == levels
        monkeypatch.setenv(TRACE_ENV, "1")
        trace_from_env()
        assert all(logger.level == logging.DEBUG for logger in loggers)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
