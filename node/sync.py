"""Merging what peers say into this node, and catch-up (``/cmnode/sync/1``) for what gossip missed.

Gossip only reaches peers connected at the time, so a late joiner, a restarted node or a healed partition
would never hear of earlier jobs. Every job and execution row in the store carries a local change number
(``Store.changes_since``); a node asks each peer it connects to for the changes after the last number it
saw from that peer (kept in the store's ``meta`` table), page by page, and merges them exactly as it merges
gossip. Merging is idempotent and order-tolerant: jobs are keyed by ID, executions keep the highest version,
a cancel that arrives before its job is remembered until the job does.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import trio

from .model import Execution, Job
from .store import Store
from .wire import WireError, parse_execution, parse_job

if TYPE_CHECKING:
    from .core import Node

log = logging.getLogger("cmnode.sync")

SYNC_PROTOCOL = "/cmnode/sync/1"
PAGE_SIZE = 200
MAX_EARLY_CANCELS = 10_000


@dataclass
class SyncStats:
    """Counters of catch-up, read by the metrics endpoint."""

    rounds: int = 0
    failures: int = 0
    jobs: int = 0
    executions: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


def runs_here(job: Job, node_id: str) -> bool:
    """Whether placement asks this node to run a job it heard of from a peer.

    ``all`` runs everywhere; ``nodes`` on the listed peers. ``replicas`` has no scheduler yet, so such a job
    runs on its origin only.
    """
    placement = job.spec.placement
    return placement.mode == "all" or (placement.mode == "nodes" and node_id in placement.nodes)


class Replica:
    """Applies jobs, executions and cancels heard from peers to this node's store and executor."""

    def __init__(self, *, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id
        self.node: Node | None = None
        self.stats = SyncStats()
        self._early_cancels: OrderedDict[str, None] = OrderedDict()

    # -- merging ----------------------------------------------------------------------------------

    async def on_job(self, job: Job, *, cancelled: bool = False) -> bool:
        """Record a verified job; run it here if placement says so and it is still active. True if new."""
        assert self.node is not None, "Replica.node is set before the mesh delivers anything"
        if job.job_id in self._early_cancels:
            del self._early_cancels[job.job_id]
            cancelled = True
        run = not cancelled and runs_here(job, self.node_id) and await self._still_active(job.job_id)
        if run:
            new = await self.node.executor.accept(job, run_here=True)  # a known job is left as it is
        else:  # only recorded: a peer can tell us again, so no fsync of its own (see Store.add_job)
            new = await self.store.add_job(job, durable=False)
        if cancelled:
            await self.node.cancel_from_peer(job.job_id)
        if new:
            log.info("job from peer job_id=%s origin=%s run_here=%s", job.job_id, job.origin, run)
        return new

    async def _still_active(self, job_id: str) -> bool:
        """Not final everywhere: no execution known yet, or some execution still in progress."""
        executions = await self.store.executions_of(job_id)
        return not executions or any(not e.state.final for e in executions)

    async def on_executions(self, executions: list[Execution]) -> int:
        """Keep the newer versions of other nodes' executions (only this node writes its own)."""
        theirs = [e for e in executions if e.node_id != self.node_id]
        if not theirs:
            return 0
        return len(await self.store.put_executions(theirs, durable=False))

    async def on_cancel(self, job_id: str) -> None:
        assert self.node is not None
        if await self.store.get_job(job_id) is None:
            self._early_cancels[job_id] = None
            while len(self._early_cancels) > MAX_EARLY_CANCELS:
                self._early_cancels.popitem(last=False)
            return
        await self.node.cancel_from_peer(job_id)

    # -- the protocol -----------------------------------------------------------------------------

    async def serve(self, request: Any) -> dict[str, Any]:
        """Answer a peer's ``{"since": N, "limit": L}`` with the changes after N."""
        if not isinstance(request, dict):
            return {"error": "request must be an object"}
        since, limit = request.get("since"), request.get("limit", PAGE_SIZE)
        if not _is_count(since) or not _is_count(limit):
            return {"error": "since and limit must be non-negative integers"}
        assert since is not None and limit is not None
        changes = await self.store.changes_since(since, limit=max(1, min(limit, PAGE_SIZE)))
        return {
            "jobs": [{"job": job.to_json(), "cancelled": cancelled} for job, cancelled in changes.jobs],
            "executions": [e.to_json() for e in changes.executions],
            "upto": changes.upto,
            "head": changes.head,
            "more": changes.more,
        }

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
        if head < since:  # the peer's store is younger than what we remember of it: start over
            return 0, True
        parsed: list[Execution] = []
        for entry in executions:
            try:
                parsed.append(parse_execution(entry))
            except WireError as exc:
                self._drop(exc)
        # Executions first: a job learned late runs here only if it is still active somewhere.
        self.stats.executions += await self.on_executions(parsed)
        verified: dict[str, tuple[Job, bool]] = {}
        for entry in jobs:
            try:
                if not isinstance(entry, dict) or not isinstance(entry.get("cancelled"), bool):
                    raise WireError("malformed", "sync job entry")
                job = parse_job(entry.get("job"))
            except WireError as exc:
                self._drop(exc)
                continue
            verified[job.job_id] = (job, entry["cancelled"])

        async def one(job: Job, cancelled: bool) -> None:
            if await self.on_job(job, cancelled=cancelled):
                self.stats.jobs += 1

        async with trio.open_nursery() as nursery:  # concurrently, so the store commits them in groups
            for job, cancelled in verified.values():
                nursery.start_soon(one, job, cancelled)
        return max(upto, since), more

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
            page = await request({"since": since, "limit": PAGE_SIZE})
            since, more = await self.apply_page(page, since)
            await self.store.set_meta(key, str(since))
            pages += 1
        self.stats.rounds += 1
        return pages

    def _drop(self, exc: WireError) -> None:
        log.debug("sync entry dropped: %s", exc)
        self.stats.dropped[exc.reason] = self.stats.dropped.get(exc.reason, 0) + 1


def watermark_key(peer_id: str) -> str:
    return f"sync.{peer_id}"


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
