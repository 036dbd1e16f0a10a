"""Merging what peers say into this node: the same for gossip and for catch-up.

Merging is idempotent and order-tolerant: jobs are keyed by ID, executions keep the highest version, a cancel
that arrives before its job is remembered until the job does. Whether a peer may do what it asks is the trust
rule's (``node/trust.py``): a job from an origin that may not originate jobs, or a cancel from a node that may
not cancel that job, raises ``Refused`` and changes nothing. It knows the executor only as two callables (admit
a job to run here, cancel a job here), so the node hands them in and nothing reaches back.

A cancel this node obeyed is kept (in the store's ``meta`` table, under ``cancel_key``) so that catch-up can pass
the signed cancel on: a peer believes a cancel only with its signature, never a bare flag.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

import trio

from .allocation import Allocation
from .model import Cancel, Execution, Job
from .scheduler import runs_here
from .store import Store
from .syncpage import held
from .tombstones import JobPurged, is_purged
from .trust import RefusalLog, Refused, Trust

__all__ = ["MAX_EARLY_CANCELS", "Replica", "cancel_key"]

log = logging.getLogger("cmnode.sync")  # the name benchmarks/mesh.py reads "job from peer" lines under

MAX_EARLY_CANCELS = 10_000
MAX_HELD = 10_000
"""Jobs heard on gossip before this node's first catch-up, held in memory until it completes (beyond this, the
oldest are let go: that catch-up brings them again)."""


def cancel_key(job_id: str) -> str:
    """Where the store's ``meta`` table keeps the signed cancel of a job."""
    return f"cancel.{job_id}"


class Replica:
    """Applies jobs, executions and cancels heard from peers to this node's store and executor."""

    def __init__(
        self,
        *,
        store: Store,
        node_id: str,
        run: Callable[[Job], Awaitable[bool]],
        cancel: Callable[[str], Awaitable[None]],
        trust: Trust | None = None,
        place: Callable[[Job], Awaitable[bool]] | None = None,
        release: Callable[[str], Awaitable[None]] | None = None,
        labels: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        """``run`` admits a job to run here (True if new); ``cancel`` stops and marks a known job here;
        ``trust`` the rule (default: every member may originate jobs and cancels); ``place`` runs a recorded job
        here that a newer allocation placed here, ``release`` stops the copy of one it moved away; ``labels``
        are this node's labels now (a placement's selector is matched against them)."""
        self.store = store
        self.node_id = node_id
        self.trust = trust or Trust(node_id=node_id)
        self._run = run
        self._cancel = cancel
        self._place = place
        self._release = release
        self._labels = labels
        self._early_cancels: OrderedDict[str, Cancel] = OrderedDict()
        self._refusals = RefusalLog()
        self._caught_up = False
        self._held: OrderedDict[str, Job] = OrderedDict()

    async def on_job(self, job: Job, *, cancel: Cancel | None = None, gossip: bool = False) -> bool:
        """Record a verified job; run it here if placement says so and it is still active. True if new.

        "Still active" is judged from this node's store, which is only whole once it has caught up with a peer:
        a job heard on gossip before that (a newcomer is handed gossipsub's recent cache, the executions of a
        finished job possibly after the job itself) is held until the first catch-up round completes, so that a
        late joiner never runs a job that had finished everywhere.

        Raises:
            Refused: its origin may not originate jobs here, or this node purged it (``purged``); not stored.
        """
        if not self.trust.may_originate(job.origin):
            raise self._refusals.refused(
                job.origin, Refused("untrusted", f"job {job.job_id} dropped: origin {job.origin} is not trusted")
            )
        if gossip and not self._caught_up:
            self._held[job.job_id] = job
            while len(self._held) > MAX_HELD:
                self._held.popitem(last=False)
            return True
        cancels = [c for c in (cancel, self._early_cancels.pop(job.job_id, None)) if c is not None]
        obeyed = next((c for c in cancels if c.job_id == job.job_id and self.trust.may_cancel(c, job.origin)), None)
        allocation = await self.store.get_allocation(job.job_id) if job.spec.placement.mode == "replicas" else None
        placed = self.placed_here(job, allocation)
        run = obeyed is None and placed and await self._still_active(job.job_id)
        try:
            if run:
                new = await self._run(job)  # a known job is left as it is
            else:  # only recorded: a peer can tell us again, so no fsync of its own (see Store.add_job)
                new = await self.store.add_job(job, durable=False)
        except JobPurged as exc:  # a peer still holding it, or an old replay: counted by the caller, not stored
            raise Refused("purged", str(exc)) from None
        if obeyed is not None:
            await self._obey(obeyed)
        if new:
            log.info("job from peer job_id=%s origin=%s run_here=%s via=%s", job.job_id, job.origin, run,
                     "gossip" if gossip else "sync")  # fmt: skip
        return new

    async def on_jobs(self, jobs: list[tuple[Job, Cancel | None]]) -> list[bool | Exception]:
        """A catch-up page's verified jobs, each with its verified cancel if any; each one's outcome: True if new,
        False if known, or what ``on_job`` raised for it.

        Decided together, with one read: the jobs that are only to be recorded (placed elsewhere, or finished
        everywhere already, and no cancel to obey) in one write; the others, to run here or to stop, through
        ``on_job`` one by one. A page of thousands of finished jobs costs two reads and a write, not thousands."""
        facts = await held(self.store, (job.job_id for job, _ in jobs))
        outcomes: list[bool | Exception] = [False] * len(jobs)
        quiet: list[int] = []
        one_by_one: list[int] = []
        for i, (job, cancel) in enumerate(jobs):
            if not self.trust.may_originate(job.origin):
                outcomes[i] = self._refusals.refused(
                    job.origin, Refused("untrusted", f"job {job.job_id} dropped: origin {job.origin} is not trusted")
                )
            elif job.job_id in facts.purged:
                outcomes[i] = Refused("purged", f"job {job.job_id} was purged here")
            elif cancel is not None or job.job_id in self._early_cancels or job.spec.placement.mode == "replicas":
                one_by_one.append(i)
            elif job.job_id in facts.known:
                continue  # known, nothing to obey: left as it is
            elif self.placed_here(job) and facts.still_active(job.job_id):
                one_by_one.append(i)
            else:
                quiet.append(i)
        if quiet:
            try:  # only recorded: a peer can tell us again, so no fsync of its own (see Store.add_job)
                new = await self.store.add_jobs_each([(jobs[i][0], None) for i in quiet], durable=False)
            except Exception:  # one job the store refuses fails the batch: then each on its own
                one_by_one += quiet
            else:
                for i, added in zip(quiet, new, strict=True):
                    outcomes[i] = added  # False: another round (or gossip) recorded it since ``facts`` was read
                    if added:
                        log.info("job from peer job_id=%s origin=%s run_here=False via=sync", jobs[i][0].job_id,
                                 jobs[i][0].origin)  # fmt: skip

        async def one(i: int) -> None:
            job, cancel = jobs[i]
            try:
                with Store.spans(None):  # run or cancelled here: rows of this node's own making
                    outcomes[i] = await self.on_job(job, cancel=cancel)
            except Exception as exc:
                outcomes[i] = exc

        async with trio.open_nursery() as nursery:  # concurrently, so the store commits them in groups
            for i in one_by_one:
                nursery.start_soon(one, i)
        return outcomes

    async def caught_up(self) -> None:
        """The first completed catch-up round makes the store whole: decide the jobs held until then."""
        if self._caught_up:
            return
        self._caught_up = True
        held, self._held = self._held, OrderedDict()
        for job in held.values():
            try:
                await self.on_job(job)
            except Refused as exc:
                log.debug("held job %s dropped: %s", job.job_id, exc)
            except Exception as exc:  # one job's failure must not cost the others their turn
                log.warning("cannot apply held job %s: %r", job.job_id, exc)

    def placed_here(self, job: Job, allocation: Allocation | None = None) -> bool:
        """``runs_here``, asking this node's labels only for a placement with a selector: they come from the node
        registry, which builds this node's whole entry for it, for every job a peer sends (most have none)."""
        labels = self._labels() if job.spec.placement.selector else None
        return runs_here(job, self.node_id, labels=labels, allocation=allocation)

    async def _still_active(self, job_id: str) -> bool:
        """Not final everywhere: no execution known yet, or some execution still in progress; and not purged
        here (node/purge.py), its executions gone with it."""
        if await self.store.query(lambda conn: is_purged(conn, job_id)):
            return False
        executions = await self.store.executions_of(job_id)
        return not executions or any(not e.state.final for e in executions)

    async def on_executions(self, executions: list[Execution]) -> int:
        """Keep the newer versions of other nodes' executions (only this node writes its own; each was
        verified as signed by its node on the wire)."""
        theirs = [e for e in executions if e.node_id != self.node_id]
        if not theirs:
            return 0
        return len(await self.store.put_executions(theirs, durable=False))

    async def on_cancel(self, cancel: Cancel) -> None:
        """A verified cancel: obeyed if its signer is the job's origin or may originate jobs.

        Raises:
            Refused: the signer may not cancel this job.
        """
        record = await self.store.get_job(cancel.job_id)
        if record is None:
            self._early_cancels[cancel.job_id] = cancel
            while len(self._early_cancels) > MAX_EARLY_CANCELS:
                self._early_cancels.popitem(last=False)
            return
        if not self.trust.may_cancel(cancel, record.job.origin):
            raise self._refusals.refused(
                cancel.by, Refused("unauthorized", f"cancel of job {cancel.job_id} by {cancel.by} refused: "
                                   f"neither its origin nor trusted")
            )  # fmt: skip
        if not record.cancelled:
            await self._obey(cancel)

    async def on_allocation(self, allocation: Allocation, *, local: bool = False) -> bool:
        """A verified allocation: kept if it ranks above the one known (it may come before its job), then acted
        on here: a copy started if it names this node, stopped (``released``) if it no longer does. True if kept.
        ``local``: written by this node (acted on even before the first catch-up completes).

        Raises:
            Refused: its writer may not originate jobs (so may not place them either).
        """
        if not self.trust.may_originate(allocation.by):
            raise self._refusals.refused(
                allocation.by, Refused("untrusted", f"allocation of job {allocation.job_id} by {allocation.by} "
                                       "refused: its writer is not trusted")
            )  # fmt: skip
        if not await self.store.put_allocation(allocation, durable=False):
            return False
        if self._caught_up or local:  # before that, the first catch-up round and the rescheduler decide
            await self.act_on(allocation)
        return True

    async def act_on(self, allocation: Allocation) -> None:
        """Run or release this node's copy as ``allocation`` (the one kept) says, if the job is known and live."""
        record = await self.store.get_job(allocation.job_id)
        if record is None or record.cancelled or record.job.spec.placement.mode != "replicas":
            return
        if self.node_id in allocation.nodes:
            if self._place is not None and record.status != "complete":  # a copy ended failed is replaced
                await self._place(record.job)
        elif self._release is not None:
            await self._release(allocation.job_id)

    async def keep(self, cancel: Cancel) -> None:
        """Keep a signed cancel so that catch-up passes it on (this node's own, from Stop, or one obeyed)."""
        await self.store.set_meta(cancel_key(cancel.job_id), json.dumps(cancel.to_json()))

    async def _obey(self, cancel: Cancel) -> None:
        await self.keep(cancel)
        await self._cancel(cancel.job_id)
