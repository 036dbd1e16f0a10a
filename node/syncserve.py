"""The serving end of catch-up (``node/sync.py``): a peer's request answered with one page of this store's
changes after the number it asks from, leaving out the rows that hold exactly what that peer's own store sent
here (``Echoes``, filled by the asking end as it merges a peer's pages).

A page is bounded in entries and bytes, built one at a time per node however many peers ask (bounded memory),
its JSON and this node's signatures made off the trio thread; a request with nothing after its number is
answered without a store read.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from typing import Any, TypeGuard

import trio

from .identity import Identity
from .link import Directory
from .model import Execution
from .replica import cancel_key
from .store import Store
from .syncpage import RawPage, read_page
from .trust import sign_execution

__all__ = [
    "MAX_ECHO_SPANS",
    "MAX_ECHO_STORES",
    "MAX_NODE_RECORDS",
    "PAGE_BYTES",
    "PAGE_LIMIT",
    "PAGE_SIZE",
    "Echoes",
    "PageServer",
    "is_count",
]

PAGE_SIZE = 200
"""The entries a node of the previous version asks for (and served, at most) when it sends no ``max_bytes``."""
PAGE_LIMIT = 10_000
"""Entries of each kind in one page at most, as this node asks: in practice ``PAGE_BYTES`` ends a page first."""
PAGE_BYTES = 500_000
"""The stored JSON of one page at most (about 650 small jobs with an execution each): what bounds the memory
of both ends (the receiver holds at most three pages of a round, see ``Sync.catch_up``; the sender builds one
page at a time), and how long encoding or decoding one page holds either node's trio thread (JSON encoding is
on it, in the request/response codec: ~5 ms a page, where 1 MB pages kept the sender's RPC p99 above 100 ms)."""
MAX_ECHO_STORES = 64
"""Peers' stores whose rows this node remembers (``Echoes``); a round with one forgotten sends them back."""
MAX_ECHO_SPANS = 1000
"""Ranges of change numbers remembered per peer store (contiguous writes merge into one)."""
MAX_NODE_RECORDS = 1000
"""Node records (and drain orders) in one answer at most: the most recently heard. They come with the first
page of a round only (``"nodes": true`` in the request), so a node that joins learns every node at once."""


class Echoes:
    """A peer store's ``run_id`` -> the change numbers of this store's rows that hold exactly what it sent: the
    asking end collects them as it merges that peer's pages (``Store.spans``), the serving end leaves them out
    of its answers to that store."""

    def __init__(self) -> None:
        self._spans: OrderedDict[str, list[tuple[int, int]]] = OrderedDict()

    def sent_by(self, store: Any) -> tuple[tuple[int, int], ...]:
        """The ranges to leave out of a page for the asker that named its store ``store`` (none if unknown)."""
        return tuple(self._spans.get(store, ())) if isinstance(store, str) else ()

    def of(self, peer_id: str, store: str | None) -> list[tuple[int, int]] | None:
        """Where to collect the rows written from ``peer_id``'s page (its ``store`` as it says; one claiming
        another node's store is not believed), merged into ranges; bounded in stores and ranges."""
        if store is None or not store.startswith(f"{peer_id}/"):
            return None
        spans = self._spans.pop(store, [])
        self._spans[store] = spans
        while len(self._spans) > MAX_ECHO_STORES:
            self._spans.popitem(last=False)
        spans.sort()
        merged: list[tuple[int, int]] = []
        for first, last in spans:
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
            else:
                merged.append((first, last))
        spans[:] = merged[-MAX_ECHO_SPANS:]  # the newest: older ones lie below the peer's watermark by now
        return spans


class PageServer:
    """Answers catch-up requests from ``store``; ``run_id`` names this store in every page (``Sync.run_id``)."""

    def __init__(
        self, *, store: Store, identity: Identity, run_id: str, echoes: Echoes, directory: Directory | None = None
    ) -> None:
        self.store = store
        self.identity = identity
        self.run_id = run_id
        self.echoes = echoes
        self.directory = directory
        self._serving = trio.Lock()

    async def serve(self, request: Any) -> dict[str, Any]:
        """Answer a peer's ``{"since": N, "limit": L, "max_bytes": B}`` with a page of the changes after N (and,
        asked with ``"nodes": true``, the node records and drain orders this node knows). ``max_bytes`` is new:
        a node of the previous version asks without it, for 200 entries, and is answered as before."""
        if not isinstance(request, dict):
            return {"error": "request must be an object"}
        since, limit = request.get("since"), request.get("limit", PAGE_SIZE)
        max_bytes = request.get("max_bytes", PAGE_BYTES)
        if not is_count(since) or not is_count(limit) or not is_count(max_bytes):
            return {"error": "since, limit and max_bytes must be non-negative integers"}
        limit, max_bytes = max(1, min(limit, PAGE_LIMIT)), max(1, min(max_bytes, PAGE_BYTES))
        skip = self.echoes.sent_by(request.get("store"))  # what it gave us: it holds it
        async with self._serving:  # a page at a time per node: bounded memory, however many peers ask
            head = self.store.head
            if since >= head:  # nothing after it was handed out: the empty page read_page would build, unread
                answer = self.answer(RawPage(jobs=[], executions=[], allocations=[], upto=since, head=head,
                                             more=False), {})  # fmt: skip
            else:
                raw = await self.store.query(
                    lambda conn: read_page(conn, since, limit=limit, max_bytes=max_bytes, head=head, skip=skip)
                )
                cancelled = [job_id for job_id, _, flag in raw.jobs if flag]
                cancels = (
                    await self.store.query(lambda conn: _metas(conn, [cancel_key(j) for j in cancelled]))
                    if cancelled
                    else {}
                )
                # JSON and this node's signatures off the trio thread: RPC keeps answering while a page is built
                answer = await trio.to_thread.run_sync(self.answer, raw, cancels)
        answer["store"] = self.run_id
        if request.get("nodes") is True and self.directory is not None:
            records, drains = self.directory.known(MAX_NODE_RECORDS)
            answer["nodes"] = [{"record": r.to_json(), "age": round(age, 3)} for r, age in records]
            answer["drains"] = [order.to_json() for order in drains]
        return answer

    def answer(self, raw: RawPage, cancels: dict[str, str]) -> dict[str, Any]:
        """The page as sent: stored bodies as they are, this node's own executions signed (it keeps them
        unsigned), each cancelled job with the signed cancel this node kept."""
        me = self.identity.node_id
        executions = []
        for body in raw.executions:
            data = json.loads(body)
            if data.get("node_id") == me:
                data = sign_execution(self.identity, Execution.from_valid(data)).to_json()
            executions.append(data)
        jobs = []
        for job_id, body, cancelled in raw.jobs:
            cancel = cancels.get(cancel_key(job_id)) if cancelled else None
            jobs.append(
                {"job": json.loads(body), "cancelled": cancelled, "cancel": json.loads(cancel) if cancel else None}
            )
        return {
            "jobs": jobs,
            "executions": executions,
            "allocations": [json.loads(body) for body in raw.allocations],
            "upto": raw.upto,
            "head": raw.head,
            "more": raw.more,
        }


def _metas(conn: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
    """The ``meta`` values of ``keys`` that exist, in one query."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT key, value FROM meta WHERE key IN (SELECT value FROM json_each(?))", (json.dumps(keys),)
    )
    return dict(rows.fetchall())


def is_count(value: Any) -> TypeGuard[int]:
    """A non-negative integer SQLite can bind (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
