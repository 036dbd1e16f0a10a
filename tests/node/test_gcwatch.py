"""The collector's pauses are logged at debug level only (node/gcwatch.py): a full collection is one line."""

from __future__ import annotations

import gc
import logging

import pytest

from node import gcwatch


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
