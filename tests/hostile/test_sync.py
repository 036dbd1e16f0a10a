"""Hostile catch-up pages, generated, merged into a real store through the node (``Sync.apply_page``).

A page is a peer's answer on ``/cmnode/sync/1``: valid entries bent with hostile values (and jobs re-signed, so
what the schema admits reaches the store), hostile ``upto``/``head``/``more``, missing and extra fields. Only
``WireError`` may leave ``apply_page``; a bad entry is dropped under a foreseen reason (never ``error``, which
counts exceptions nobody foresaw); the store holds only what re-validates. The serving side gets hostile
requests too: it answers ``{"error": ...}`` or a page, never raises.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import example, given, reject
from hypothesis import strategies as st

from node.model import Execution
from node.sync import Sync
from node.wire import WireError

from .hostile import (
    BIG_INTS,
    LITERALS,
    ME,
    OTHER,
    PEER,
    SETTINGS,
    Raw,
    assert_store_valid,
    bent,
    dumps,
    good_cancel,
    good_execution,
    good_job,
    node_on_store,
    resign,
    values,
)


def _parse(value: Any) -> Any:
    """What the peer's answer is once the codec parsed it (Python's parser: NaN, Infinity, 1e400 included).
    Nesting too deep for the parser never becomes a page (the request fails in the codec): not generated."""
    try:
        return json.loads(dumps(value))
    except RecursionError:
        reject()


@st.composite
def pages(draw: st.DrawFn) -> Any:
    entries = []
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        job = good_job(f"s{i}", run_here=draw(st.booleans())).to_json()
        cancelled = draw(st.booleans())
        cancel = good_cancel(f"s{i}").to_json() if cancelled else None
        entry: Any = {"job": job, "cancelled": cancelled, "cancel": cancel}
        if draw(st.booleans()):
            entry = draw(bent(entry))
            if isinstance(entry, dict) and isinstance(entry.get("job"), dict):
                entry["job"] = resign(entry["job"])
        entries.append(entry)
    executions = []
    for i in range(draw(st.integers(min_value=0, max_value=4))):
        node = draw(st.sampled_from([PEER, OTHER]))
        execution: Any = good_execution(f"s{i}", node).to_json()
        if draw(st.booleans()):
            execution = resign(draw(bent(execution)), Execution, node)
        executions.append(execution)
    page: Any = {"jobs": entries, "executions": executions, "upto": 7, "head": 7, "more": False}
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        page = draw(bent(page))
    return _parse(page)


FINDING_3 = {  # finding 3: the values of findings 1 and 2 in a sync answer
    "jobs": [
        {"job": {**good_job("f1").to_json(), "created_at": 10**400}, "cancelled": False},
        {"job": {**good_job("f2").to_json(), "job_id": "\ud800"}, "cancelled": False},
        {"job": {**good_job("f3").to_json(), "created_at": Raw("Infinity")}, "cancelled": False},
        {"job": good_job("ok").to_json(), "cancelled": False},
    ],
    "executions": [
        {**good_execution("f1").to_json(), "version": 2**63},
        {**good_execution("f2").to_json(), "created_at": 10**400},
        {**good_execution("ok").to_json()},
    ],
    "upto": 9,
    "head": 9,
    "more": False,
}


@SETTINGS
@given(page=pages(), since=st.sampled_from([0, 5, 2**62]))
@example(page=_parse(FINDING_3), since=0)
@example(page=_parse({**FINDING_3, "upto": 2**63, "head": 2**64}), since=0)
@example(page=_parse({**FINDING_3, "upto": Raw("1e400")}), since=0)
async def test_a_hostile_page_merges_only_what_is_valid(tmp_path: Path, page: Any, since: int) -> None:
    async with node_on_store(tmp_path) as h:
        sync = Sync(store=h.store, inbound=h.node, identity=ME)
        with trio.fail_after(10):
            try:
                upto, more = await sync.apply_page(page, since)
            except WireError:
                pass
            else:
                assert isinstance(upto, int) and isinstance(more, bool)
                assert upto >= since or (upto, more) == (0, True)  # or: the peer's store is new, start over
        assert "error" not in sync.stats.dropped, sync.stats.dropped  # every drop was a foreseen one
        await assert_store_valid(h)
        if page is not None and page == _parse(FINDING_3):
            assert {j.job_id for j, _ in (await h.store.changes_since(0)).jobs} == {"ok"}


@st.composite
def requests(draw: st.DrawFn) -> Any:
    request: Any = {"since": draw(st.sampled_from([0, 1, *BIG_INTS, *LITERALS]) | values), "limit": 200}
    return _parse(draw(bent(request)) if draw(st.booleans()) else request)


@SETTINGS
@given(request=requests())
@example(request={"since": 2**63, "limit": 10})
@example(request={"since": 0, "limit": 2**63})
async def test_the_serving_side_answers_any_request(tmp_path: Path, request: Any) -> None:
    async with node_on_store(tmp_path) as h:
        await h.node.on_job(good_job("served"))
        answer = await Sync(store=h.store, inbound=h.node, identity=ME).serve(request)
        assert isinstance(answer, dict)
        json.dumps(answer, allow_nan=False)


@pytest.mark.parametrize("since", [2**63, 10**30])
async def test_a_watermark_beyond_64_bits_is_refused_not_raised(tmp_path: Path, since: int) -> None:
    """Defect: ``Sync.serve`` checked ``since`` is a non-negative integer, not that SQLite can bind it; a peer
    asking from 2^63 made ``changes_since`` raise OverflowError inside the request handler."""
    async with node_on_store(tmp_path) as h:
        answer = await Sync(store=h.store, inbound=h.node, identity=ME).serve({"since": since, "limit": 10})
    assert "error" in answer
