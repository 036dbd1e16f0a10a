"""Catch-up (``/cmnode/sync/1``): what gossip missed, fetched page by page from each peer.

Gossip only reaches peers connected at the time, so a late joiner, a restarted node or a healed partition
would never hear of earlier jobs. Every job and execution row in the store carries a local change number
(``Store.changes_since``); a node asks each peer it connects to for the changes after the last number it
saw from that peer (kept in the store's ``meta`` table), page by page, and merges them through the node's
``Inbound`` exactly as gossip is merged. This module is the protocol only (no libp2p): ``catchup.py`` decides
when to run it and carries the requests.

A peer's page is untrusted: a malformed page fails the round, a malformed entry (or one the node cannot
store) is dropped and counted under a reason, and nothing a peer sends raises out of ``apply_page`` except
``WireError``. Entries are checked exactly as gossip is: a job signed by its origin, an execution signed by the
node it describes, and a cancelled job's signed cancel (a bare ``cancelled: true`` is not believed); then the
trust rule (``node/trust.py``) decides, as for gossip.

Served to every connected peer: with a swarm key, only members can connect (node/trust.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import trio

from .errors import NodeError
from .identity import Identity
from .link import Directory, Inbound
from .model import Cancel, Execution, Job
from .replica import cancel_key
from .store import Store
from .trust import Refused, sign_execution
from .wire import WireError, parse_allocation, parse_cancel, parse_drain, parse_execution, parse_job, parse_node_record

__all__ = ["PAGE_SIZE", "SYNC_PROTOCOL", "Sync", "SyncStats", "watermark_key"]

log = logging.getLogger("cmnode.sync")

SYNC_PROTOCOL = "/cmnode/sync/1"
PAGE_SIZE = 200
MAX_NODE_RECORDS = 1000
"""Node records (and drain orders) in one answer at most: the most recently heard. They come with the first
page of a round only (``"nodes": true`` in the request), so a node that joins learns every node at once."""


@dataclass
class SyncStats:
    """Counters of catch-up, read by the metrics endpoint."""

    rounds: int = 0
    failures: int = 0
    jobs: int = 0
    executions: int = 0
    nodes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


class Sync:
    """Both ends of the catch-up protocol for one node."""

    def __init__(
        self, *, store: Store, inbound: Inbound, identity: Identity, directory: Directory | None = None
    ) -> None:
        """``directory``: the node registry, served and fed node records and drain orders; none: neither."""
        self.store = store
        self.identity = identity
        self.inbound = inbound
        self.directory = directory
        self.stats = SyncStats()
        self._warned: set[str] = set()

    async def serve(self, request: Any) -> dict[str, Any]:
        """Answer a peer's ``{"since": N, "limit": L}`` with the changes after N (and, asked with ``"nodes":
        true``, the node records and drain orders this node knows)."""
        if not isinstance(request, dict):
            return {"error": "request must be an object"}
        since, limit = request.get("since"), request.get("limit", PAGE_SIZE)
        if not _is_count(since) or not _is_count(limit):
            return {"error": "since and limit must be non-negative integers"}
        changes = await self.store.changes_since(since, limit=max(1, min(limit, PAGE_SIZE)))
        jobs = []
        for job, cancelled in changes.jobs:
            cancel = await self.store.get_meta(cancel_key(job.job_id)) if cancelled else None
            entry = {"job": job.to_json(), "cancelled": cancelled, "cancel": json.loads(cancel) if cancel else None}
            jobs.append(entry)
        me = self.identity.node_id
        answer: dict[str, Any] = {
            "jobs": jobs,
            "executions": [
                (sign_execution(self.identity, e) if e.node_id == me else e).to_json() for e in changes.executions
            ],
            "allocations": [a.to_json() for a in changes.allocations],
            "upto": changes.upto,
            "head": changes.head,
            "more": changes.more,
        }
        if request.get("nodes") is True and self.directory is not None:
            records, drains = self.directory.known(MAX_NODE_RECORDS)
            answer["nodes"] = [{"record": r.to_json(), "age": round(age, 3)} for r, age in records]
            answer["drains"] = [order.to_json() for order in drains]
        return answer

    async def apply_page(self, page: Any, since: int) -> tuple[int, bool]:
        """Merge one page of a peer's answer; returns the watermark to keep and whether more pages follow.

        Raises:
            WireError: the page itself is malformed (single bad entries are dropped and counted).
        """
        if not isinstance(page, dict) or "error" in page:
            raise WireError("malformed", f"sync answer: {page.get('error') if isinstance(page, dict) else page!r}")
        upto, head, more = page.get("upto"), page.get("head"), page.get("more")
        jobs, executions = page.get("jobs"), page.get("executions")
        if not _is_count(upto) or not _is_count(head) or not isinstance(more, bool):
            raise WireError("malformed", "sync answer without upto/head/more")
        if not isinstance(jobs, list) or not isinstance(executions, list):
            raise WireError("malformed", "sync answer without jobs/executions lists")
        self._merge_nodes(page.get("nodes"), page.get("drains"))
        if head < since:  # the peer's store is younger than what we remember of it: start over
            return 0, True
        parsed: list[Execution] = []
        for entry in executions:
            try:
                parsed.append(parse_execution(entry))
            except WireError as exc:
                self._drop(exc.reason, exc)
            except Exception as exc:  # a parser bug must cost one entry, not the node
                self._drop("error", exc)
        # Executions first: a job learned late runs here only if it is still active somewhere.
        self.stats.executions += await self._merge_executions(parsed)
        # Allocations before their jobs: a replicas job runs here only where its allocation says.
        await self._merge_allocations(page.get("allocations") or [])
        verified: dict[str, tuple[Job, Cancel | None]] = {}
        for entry in jobs:
            try:
                if not isinstance(entry, dict):
                    raise WireError("malformed", "sync job entry")
                job = parse_job(entry.get("job"))
            except WireError as exc:
                self._drop(exc.reason, exc)
                continue
            except Exception as exc:
                self._drop("error", exc)
                continue
            verified[job.job_id] = (job, self._cancel_of(entry, job))

        async def one(job: Job, cancel: Cancel | None) -> None:
            try:
                if await self.inbound.on_job(job, cancel=cancel):
                    self.stats.jobs += 1
            except Refused as exc:  # the trust rule (logged there, once per peer)
                self._drop(exc.reason, exc)
            except NodeError as exc:  # e.g. the local queue is full: the job is recorded, not run
                log.warning("cannot apply job %s from catch-up: %s", job.job_id, exc.message)
            except Exception as exc:  # e.g. a value SQLite cannot store: drop this entry only
                self._drop("error", exc)

        async with trio.open_nursery() as nursery:  # concurrently, so the store commits them in groups
            for job, cancel in verified.values():
                nursery.start_soon(one, job, cancel)
        return max(upto, since), more

    def _cancel_of(self, entry: dict[str, Any], job: Job) -> Cancel | None:
        """The entry's signed cancel, if any and verified; a bad one is dropped and counted, the job kept."""
        data = entry.get("cancel")
        if data is None:
            return None
        try:
            cancel = parse_cancel(data)
            if cancel.job_id != job.job_id:
                raise WireError("malformed", f"cancel of {cancel.job_id} with job {job.job_id}")
            return cancel
        except WireError as exc:
            self._drop(exc.reason, exc)
        except Exception as exc:
            self._drop("error", exc)
        return None

    async def _merge_allocations(self, entries: Any) -> None:
        """Each verified allocation through the node (an older peer sends none); bad ones dropped and counted."""
        if not isinstance(entries, list):
            raise WireError("malformed", "sync answer with an allocations field that is not a list")
        for entry in entries:
            try:
                await self.inbound.on_allocation(parse_allocation(entry))
            except (WireError, Refused) as exc:
                self._drop(exc.reason, exc)
            except NodeError as exc:
                log.warning("cannot apply an allocation from catch-up: %s", exc.message)
            except Exception as exc:
                self._drop("error", exc)

    async def _merge_executions(self, executions: list[Execution]) -> int:
        """All at once (one commit); if the batch fails, one by one, dropping only the entries that fail."""
        if not executions:
            return 0
        try:
            return await self.inbound.on_executions(executions)
        except Exception:
            changed = 0
            for execution in executions:
                try:
                    changed += await self.inbound.on_executions([execution])
                except Exception as exc:
                    self._drop("error", exc)
            return changed

    async def catch_up(self, peer_id: str, request: Callable[[dict[str, Any]], Awaitable[Any]]) -> int:
        """Fetch and merge everything ``peer_id`` changed since we last asked it; returns the pages read.

        Raises:
            WireError: the peer answered something that is not a sync page.
            Whatever ``request`` raises when the peer cannot be reached.
        """
        key = watermark_key(peer_id)
        stored = await self.store.get_meta(key)
        since = int(stored) if stored and stored.isdigit() else 0
        pages = 0
        more = True
        while more:
            asked: dict[str, Any] = {"since": since, "limit": PAGE_SIZE}
            if pages == 0:
                asked["nodes"] = True  # the node records once a round, with its first page
            page = await request(asked)
            since, more = await self.apply_page(page, since)
            await self.store.set_meta(key, str(since))
            pages += 1
        self.stats.rounds += 1
        return pages

    def _merge_nodes(self, records: Any, drains: Any) -> None:
        """Each verified record and drain order into the registry (an older peer sends none; nor does a page
        after the first of a round); bad entries are dropped and counted, as for jobs.

        Raises:
            WireError: ``nodes`` or ``drains`` is there but not a list.
        """
        if records is None and drains is None:
            return
        if any(value is not None and not isinstance(value, list) for value in (records, drains)):
            raise WireError("malformed", "sync answer with nodes or drains that are not lists")
        for entry in records or ():
            try:
                if not isinstance(entry, dict) or not _is_age(entry.get("age")):
                    raise WireError("malformed", "sync node entry is not {record, age}")
                record = parse_node_record(entry.get("record"))
                if self.directory is not None and self.directory.on_record(record, age=float(entry["age"])):
                    self.stats.nodes += 1
            except WireError as exc:
                self._drop(exc.reason, exc)
            except Exception as exc:
                self._drop("error", exc)
        for entry in drains or ():
            try:
                order = parse_drain(entry)
                if self.directory is not None:
                    self.directory.on_drain(order)
            except (WireError, Refused) as exc:
                self._drop(exc.reason, exc)
            except Exception as exc:
                self._drop("error", exc)

    def _drop(self, reason: str, exc: BaseException) -> None:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        if reason == "error" and reason not in self._warned:  # unexpected: say so once, with the stack
            self._warned.add(reason)
            log.warning("sync entry dropped (%s); later ones are logged at debug", exc, exc_info=exc)
        else:
            log.debug("sync entry dropped: %s", exc)


def watermark_key(peer_id: str) -> str:
    return f"sync.{peer_id}"


def _is_age(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1e9


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63  # SQLite binds it
