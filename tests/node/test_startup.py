"""node/startup.py: the collector is off only while a node imports, and on again afterwards."""

from __future__ import annotations

import gc

import pytest

from node.startup import imports_without_gc


def test_the_collector_is_off_during_the_block_and_on_after() -> None:
    assert gc.isenabled()
    with imports_without_gc():
        assert not gc.isenabled()
        made: list[list[int]] = [[] for _ in range(10)]
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what the block made is frozen: no later collection walks it again
    del made
    gc.unfreeze()


def test_an_error_in_the_block_still_turns_it_on_again() -> None:
    with pytest.raises(ImportError), imports_without_gc():
        raise ImportError("no such module")
    assert gc.isenabled()
    gc.unfreeze()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with imports_without_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
