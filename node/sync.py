"""Catch-up (``/cmnode/sync/1``): what gossip missed, fetched page by page from each peer.

Gossip only reaches peers connected at the time, so a late joiner, a restarted node or a healed partition
would never hear of earlier jobs. Every job and execution row in the store carries a local change number
(``Store.changes_since``); a node asks each peer it connects to for the changes after the last number it
saw from that peer (kept in the store's ``meta`` table), page by page, and merges them through the node's
``Inbound`` exactly as gossip is merged. This module is the protocol only (no libp2p): ``catchup.py`` decides
when to run it and carries the requests; ``syncpage.py`` reads the pages and ``syncserve.py`` serves them.

A page is bounded in bytes as well as in entries (``PAGE_BYTES``), and each job comes with its executions. The
receiver skips what it holds already, checks the rest off the trio thread (in two threads: verifying signatures
releases the GIL) while it merges the page before (executions in one write, the jobs that are only recorded in
another), and fetches the next meanwhile (``benchmarks/catchup.py`` measures a join to 100,000 jobs).

Nothing is sent back where it came from: the rows a node writes from a peer's page get new change numbers here,
so that peer's own round with it would fetch them all back (a fifth of a joiner's time). Each node names its
store (``run_id``, new each process, so a restarted node whose store may have been replaced is a stranger) in
its requests and pages; the receiver remembers which change numbers hold exactly what that store sent
(``Store.spans``: a row changed since has a new number) and leaves them out of its answers to it.

The wire is the previous version's: a node of that version asks without ``max_bytes`` (nor ``store``) and is
served pages of ``PAGE_SIZE``, every row; a page from such a node is merged as any other.

A peer's page is untrusted: a malformed page fails the round, a malformed entry (or one the node cannot
store) is dropped and counted under a reason, and nothing a peer sends raises out of ``apply_page`` except
``WireError``. Entries are checked exactly as gossip is: a job signed by its origin, an execution signed by the
node it describes, and a cancelled job's signed cancel (a bare ``cancelled: true`` is not believed); then the
trust rule (``node/trust.py``) decides, as for gossip.

Served to every connected peer: with a swarm key, only members can connect (node/trust.py).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from .allocation import Allocation
from .errors import NodeError
from .identity import Identity
from .link import Directory, Inbound
from .model import Execution
from .store import Store
from .synccheck import Checked, check_in_threads
from .syncpage import Held, held
from .syncserve import PAGE_BYTES, PAGE_LIMIT, PAGE_SIZE, Echoes, PageServer, is_count
from .trust import Refused
from .wire import WireError, parse_drain, parse_node_record, verify_node_record

__all__ = ["PAGE_BYTES", "PAGE_LIMIT", "PAGE_SIZE", "SYNC_PROTOCOL", "Sync", "SyncStats", "watermark_key"]

log = logging.getLogger("cmnode.sync")

SYNC_PROTOCOL = "/cmnode/sync/1"
WATERMARKS_KEPT = 4096
"""Peers whose catch-up watermark ``Sync`` keeps in memory (the others are read from the store again)."""


@dataclass
class SyncStats:
    """Counters of catch-up (every round's), read by the metrics endpoint."""

    rounds: int = 0
    failures: int = 0
    jobs: int = 0
    executions: int = 0
    allocations: int = 0
    nodes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class Merged:
    """What one catch-up round merged. Rounds run at once (after a heal, one per reconnected peer), so the change
    of ``SyncStats`` over a round counts the others' rows too: a round's log line counts these instead."""

    pages: int = 0
    jobs: int = 0
    executions: int = 0
    allocations: int = 0


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
        self._turn = trio.Semaphore(1, max_value=1)
        """Held by one round at a time from its read of what the store holds of a page (``held``) to the end of
        that page's merge, and kept while the next page of the same round is already being checked (``catch_up``
        says why): no row is checked by two rounds at once."""
        self.run_id = f"{identity.node_id}/{secrets.token_hex(8)}"
        """This node's store as it is while this process runs: sent with every request and page, so that a peer
        sends back none of the rows it took from it (a restarted node, its store possibly replaced, is new)."""
        self._echoes = Echoes()
        self.pages = PageServer(store=store, identity=identity, run_id=self.run_id, echoes=self._echoes,
                                directory=directory)  # fmt: skip
        """The serving end (``node/syncserve.py``)."""
        self._watermarks: OrderedDict[str, str | None] = OrderedDict()
        """A peer's watermark key -> its value as this process last read or wrote it (this is its one writer):
        an idle round, every 15 s, no longer reads it from the store in a worker thread (started anew each time,
        trio's idle threads being gone after 10 s)."""

    async def serve(self, request: Any) -> dict[str, Any]:
        """A peer's request answered (``PageServer.serve``)."""
        return await self.pages.serve(request)

    async def apply_page(self, page: Any, since: int) -> tuple[int, bool]:
        """Merge one page of a peer's answer; returns the watermark to keep and whether more pages follow.

        What this node holds already (a job it knows, an execution at that version or newer, its own executions)
        is skipped unchecked: merging it would change nothing. Everything else is checked by the one checker and
        its signature verified, in a worker thread (RPC and gossip keep going meanwhile), then merged in batches:
        executions in one write, jobs through ``Inbound.on_jobs``.

        Raises:
            WireError: the page itself is malformed (single bad entries are dropped and counted).
        """
        async with self._turn:
            return await self._merge(await self._prepare(page, since))

    async def _prepare(self, page: Any, since: int) -> Checked:
        """A page's header and node records taken, and its entries that this node lacks checked.

        Raises:
            WireError: the page itself is malformed.
        """
        upto, more = _next(page, since)
        jobs, executions = page["jobs"], page["executions"]
        self._merge_nodes(page.get("nodes"), page.get("drains"))
        allocations = page.get("allocations") or []
        if not isinstance(allocations, list):
            raise WireError("malformed", "sync answer with an allocations field that is not a list")
        if page["head"] < since:  # the peer's store is younger than what we remember of it: start over
            return Checked(upto=upto, more=more)
        if not jobs and not executions and not allocations:  # an idle periodic round's page: no store read, no thread
            checked = Checked(upto=upto, more=more)
        else:
            known = await held(self.store, _job_ids(jobs, executions))
            jobs = [entry for entry in jobs if not self._holds_job(known, entry)]
            executions = [entry for entry in executions if not self._holds_execution(known, entry)]
            checked = await check_in_threads(jobs, executions, allocations)
            checked.upto, checked.more = upto, more
        store = page.get("store")
        checked.store = store if isinstance(store, str) else None
        return checked

    async def _merge(
        self, checked: Checked, echo: list[tuple[int, int]] | None = None, merged: Merged | None = None
    ) -> tuple[int, bool]:
        """Merge what ``_prepare`` checked; returns the watermark to keep and whether more pages follow.
        ``echo`` collects the change numbers of the rows written as the page says (``Sync.serve`` skips them
        for that peer); what this node does of its own meanwhile (runs, cancels, placements) is not in it."""
        merged = Merged() if merged is None else merged
        for reason, exc in checked.drops:
            self._drop(reason, exc)
        # Executions first: a job learned late runs here only if it is still active somewhere.
        with Store.spans(echo):  # counted once merged: ``x += await ...`` would lose another round's count
            changed = await self._merge_executions(checked.executions)
        self.stats.executions += changed
        merged.executions += changed
        # Allocations before their jobs: a replicas job runs here only where its allocation says.
        allocations = await self._merge_allocations(checked.allocations)
        self.stats.allocations += allocations
        merged.allocations += allocations
        with Store.spans(echo):  # Replica.on_jobs leaves out the jobs it runs or cancels here
            outcomes = await self.inbound.on_jobs(list(checked.jobs.values())) if checked.jobs else []
        for outcome in outcomes:
            if outcome is True:
                self.stats.jobs += 1
                merged.jobs += 1
            elif isinstance(outcome, Refused):  # the trust rule (logged there, once per peer), or purged here
                self._drop(outcome.reason, outcome)
            elif isinstance(outcome, NodeError):  # e.g. the local queue is full: the job is recorded, not run
                log.warning("cannot apply a job from catch-up: %s", outcome.message)
            elif isinstance(outcome, Exception):  # e.g. a value SQLite cannot store: drop this entry only
                self._drop("error", outcome)
        return checked.upto, checked.more

    def _holds_job(self, known: Held, entry: Any) -> bool:
        """A job this node knows, without a cancel to pass on (a purged one is counted as dropped)."""
        job = entry.get("job") if isinstance(entry, dict) else None
        job_id = job.get("job_id") if isinstance(job, dict) else None
        if not isinstance(job_id, str) or job_id not in known.known or entry.get("cancel") is not None:
            return False
        if job_id in known.purged:
            self._drop("purged", WireError("purged", f"job {job_id} was purged here"))
        return True

    def _holds_execution(self, known: Held, entry: Any) -> bool:
        """This node's own execution (only this node writes it), or one held at that version or newer."""
        if not isinstance(entry, dict):
            return False
        job_id, node_id, version = entry.get("job_id"), entry.get("node_id"), entry.get("version")
        if not isinstance(job_id, str) or not isinstance(node_id, str):
            return False
        if node_id == self.identity.node_id:
            return True
        stored = known.version(job_id, node_id)
        return stored is not None and is_count(version) and version <= stored

    async def _merge_allocations(self, allocations: list[Allocation]) -> int:
        """Each verified allocation through the node (an older peer sends none); refused ones dropped and counted.
        How many were taken."""
        taken = 0
        for allocation in allocations:
            try:
                if await self.inbound.on_allocation(allocation):
                    taken += 1
            except Refused as exc:
                self._drop(exc.reason, exc)
            except NodeError as exc:
                log.warning("cannot apply an allocation from catch-up: %s", exc.message)
            except Exception as exc:
                self._drop("error", exc)
        return taken

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

    async def catch_up(self, peer_id: str, request: Callable[[dict[str, Any]], Awaitable[Any]]) -> Merged:
        """Fetch and merge everything ``peer_id`` changed since we last asked it; returns the pages read.

        Three stages overlap, one page in each: the peer builds the next page while this node checks one (in a
        worker thread) and merges the one before (the store's writer thread). At most three pages, each bounded
        in bytes, are held at once. A round of more than one page writes in the store's bulk mode
        (``Store.bulk``), and no page's write waits for an fsync (the watermark's comment says why that is safe).

        Rounds with several peers run at once (after a heal, one per reconnected peer), often bringing the same
        rows. A page's rows are checked only once the round holds the node's turn (``_turn``), taken before it
        reads what the store holds and given back when none of its pages is between that read and the end of
        its merge: so a round finds held whatever another checked, and checks nothing twice. Fetching is not in
        the turn (rounds still wait for their peers together), and a round keeps its own pipeline: it keeps the
        turn while it checks one page and merges the one before, and gives it up while it waits for its peer (a
        long round from a fast peer, a join, may so keep it to its end: the rows others wait with are mostly the
        same, and found held when their turn comes; each waits with at most two pages).
        A turn rather than a shared set of the rows a round has claimed: with claims, a round that skipped
        another's rows would have to wait for their merge, and check them itself if that failed (a hostile
        peer's altered copy, a page that fails), before moving its watermark past them; the turn needs neither.
        What it costs: two rounds never check distinct rows at the same time, on a node whose checking threads
        are busy with one round already.

        Raises:
            WireError: the peer answered something that is not a sync page.
            Whatever ``request`` raises when the peer cannot be reached.
        """
        key = watermark_key(peer_id)
        if key in self._watermarks:
            stored = self._watermarks[key]
        else:
            stored = await self.store.get_meta(key)
            self._remember(key, stored)
        since = int(stored) if stored and stored.isdigit() else 0
        fetched_in, fetched = trio.open_memory_channel[tuple[Any, int] | Exception](0)
        checked_in, checked = trio.open_memory_channel[Checked | Exception](0)

        async def fetch(since: int) -> None:
            async with fetched_in:
                more, first = True, True
                try:
                    while more:
                        asked: dict[str, Any] = {
                            "since": since, "limit": PAGE_LIMIT, "max_bytes": PAGE_BYTES, "store": self.run_id
                        }  # fmt: skip
                        if first:
                            asked["nodes"] = True  # the node records once a round, with its first page
                        page = await request(asked)
                        await fetched_in.send((page, since))
                        since, more = _next(page, since)
                        first = False
                except Exception as exc:  # handed on to the merging stage, which raises it (no exception group)
                    await fetched_in.send(exc)

        in_hand = 0
        """This round's pages between their read of what the store holds and the end of their merge (the turn
        is held while there is one)."""

        async def take_turn() -> None:
            nonlocal in_hand
            if in_hand == 0:
                await self._turn.acquire()
            in_hand += 1

        def give_back() -> None:
            nonlocal in_hand
            in_hand -= 1
            if in_hand == 0:
                self._turn.release()

        async def check() -> None:
            async with checked_in:
                async for item in fetched:
                    if isinstance(item, Exception):
                        await checked_in.send(item)
                        return
                    await take_turn()
                    try:
                        result: Checked | Exception = await self._prepare(*item)
                    except Exception as exc:
                        give_back()
                        result = exc
                    await checked_in.send(result)  # the merging stage gives the turn back for a page
                    if isinstance(result, Exception):
                        return

        pages = 0
        merged = Merged()
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery, contextlib.AsyncExitStack() as bulk:
                nursery.start_soon(fetch, since)
                nursery.start_soon(check)
                async for item in checked:
                    try:
                        if isinstance(item, Exception):
                            raise item
                        try:
                            since, more = await self._merge(item, self._echoes.of(peer_id, item.store), merged)
                        finally:
                            give_back()
                        # No fsync of its own: the WAL keeps commits in order (each frame's checksum covers those
                        # before it), so after a crash the watermark is never ahead of the rows it counts. A
                        # power cut may lose the last pages and their watermark together: they are asked again.
                        # An unchanged one (an idle round's) is not written again.
                        if str(since) != stored:
                            await self.store.set_meta(key, str(since), durable=False)
                            stored = str(since)
                            self._remember(key, stored)
                    except Exception as exc:
                        failure = exc
                        break
                    pages += 1
                    if not more:
                        break
                    if pages == 1:  # a round of many pages: the store's bulk settings until it ends
                        bulk.enter_context(self.store.bulk())
                nursery.cancel_scope.cancel()
        finally:
            if in_hand:  # a page checked but never merged (the round failed or was cancelled meanwhile)
                in_hand = 0
                self._turn.release()
        if failure is not None:
            raise failure
        self.stats.rounds += 1
        merged.pages = pages
        return merged

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
                # Each round's first page carries every record the peer holds, and nearly all of them are held
                # here already: one no newer than the held one is dropped unread, so only the others are verified
                # (30 signatures a round at 30 nodes were a third of an idle round's CPU).
                record = parse_node_record(entry.get("record"), check_signature=False)
                if self.directory is None or self.directory.holds(record.node_id, record.seq):
                    continue
                if self.directory.on_record(verify_node_record(record), age=float(entry["age"])):
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

    def _remember(self, key: str, watermark: str | None) -> None:
        self._watermarks[key] = watermark
        self._watermarks.move_to_end(key)
        while len(self._watermarks) > WATERMARKS_KEPT:
            self._watermarks.popitem(last=False)

    def _drop(self, reason: str, exc: BaseException) -> None:
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        if reason == "error" and reason not in self._warned:  # unexpected: say so once, with the stack
            self._warned.add(reason)
            log.warning("sync entry dropped (%s); later ones are logged at debug", exc, exc_info=exc)
        else:
            log.debug("sync entry dropped: %s", exc)


def watermark_key(peer_id: str) -> str:
    return f"sync.{peer_id}"


def _next(page: Any, since: int) -> tuple[int, bool]:
    """The watermark after ``page`` (asked from ``since``) and whether more follow: 0 and True when the peer's
    store is younger than what we remember of it (it was replaced: start over).

    Raises:
        WireError: not a page (an error answer, or without upto/head/more or the jobs/executions lists).
    """
    if not isinstance(page, dict) or "error" in page:
        raise WireError("malformed", f"sync answer: {page.get('error') if isinstance(page, dict) else page!r}")
    upto, head, more = page.get("upto"), page.get("head"), page.get("more")
    if not is_count(upto) or not is_count(head) or not isinstance(more, bool):
        raise WireError("malformed", "sync answer without upto/head/more")
    if not isinstance(page.get("jobs"), list) or not isinstance(page.get("executions"), list):
        raise WireError("malformed", "sync answer without jobs/executions lists")
    if head < since:
        return 0, True
    return max(upto, since), more


def _job_ids(jobs: list[Any], executions: list[Any]) -> list[str]:
    """The job IDs a page names (strings only: what is not one is not looked up, and fails its check later)."""
    ids = [e["job"].get("job_id") for e in jobs if isinstance(e, dict) and isinstance(e.get("job"), dict)]
    ids += [e.get("job_id") for e in executions if isinstance(e, dict)]
    return [i for i in ids if isinstance(i, str)]


def _is_age(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1e9
