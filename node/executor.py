"""Runs this node's executions: workers take jobs off the queue and start containers; one exit watcher reports
their exits; timeouts, retries and cancellation act on the same in-memory state.

Every change of an execution goes through ``Executions`` (``node/executions.py``), the single writer;
recovery at start is ``Recovery`` (``node/recovery.py``); the daemon's health is ``DaemonHealth``.

Admission is bounded both ways: ``submit`` (a job created here) refuses at a full queue, and ``accept`` (a
peer's job placed here) spawns nothing: ``Admission`` (``node/admission.py``) runs it now, holds it in the
``Backlog`` (``node/backlog.py``; a trusted origin's excess, stored pending) or refuses it (an untrusted origin
beyond its rate or the queue). A job this node's ``Policy`` (``node/policy.py``) refuses, and a refused one, is
recorded as a ``rejected`` execution: final, not run, not failed, never retried.

Its size (~550 lines) is one job: the life of an attempt, from the queue through start, health, exit, timeout,
retry or restart (``node/restart.py`` decides which) and cancel, kept in one place because each step must see
the others' in-memory state without an await between. Which copies of a replicas job run here, as allocations
place and release them, is ``Copies`` (``node/copies.py``): it only queues attempts and stops them.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from .admission import Admission, Verdict
from .backlog import WAITING_FOR_SLOT, Backlog
from .copies import Copies
from .docker_health import DaemonHealth
from .errors import QueueFullError, RuntimeFailureError, StorageFullError
from .executions import Executions, Publish
from .jobqueue import JobQueue, WorkItem
from .model import MAX_HISTORY, Execution, Job, State
from .policy import Policy
from .recovery import Recovery
from .restart import restarts, streak_after
from .retention import Retention
from .runtime import ContainerExit, ContainerHealth, DockerHealth, NotReadyError, Runtime, RuntimeEvent
from .store import JobRecord, Store

log = logging.getLogger("cmnode.executor")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
LOOK_TRIES = 5
LOOK_PAUSE = 1.0
NOT_READY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)
"""The waits before each new start while the daemon answers but is not ready (``NotReadyError``): ~15 s in all,
then the refusal counts as the attempt's failure (a daemon that says so for longer is not coming back soon)."""


def retry_delay(attempt: int, base: float = BACKOFF_BASE) -> float:
    """The wait before the attempt after ``attempt``: base * 2^(attempt-1), +-20 % jitter, then at most 60 s."""
    step = min(attempt, 64)  # the cap holds long before; a service may restart for ever
    return float(min(BACKOFF_CAP, base * 2 ** (step - 1) * random.uniform(0.8, 1.2)))


@dataclass(frozen=True)
class Load:
    """What the executor is doing, for NodeService.Info and the metrics."""

    queue_depth: int
    queue_size: int
    workers: int
    busy: int
    docker_error: str | None
    peer_jobs_refused: Mapping[str, int] = field(default_factory=dict)
    """Peer jobs refused by ``Admission``, by reason (``rate``, ``queue``)."""


@dataclass
class _Start:
    """A worker preparing and starting one attempt; ``cancel`` abandons its inspect or pull."""

    attempt: int
    scope: trio.CancelScope
    cancelled: bool = False


class Executor:
    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        runtime: Runtime,
        queue: JobQueue,
        worker_count: int,
        publish: Publish | None = None,
        backoff_base: float = BACKOFF_BASE,
        retention: float | None = None,
        policy: Policy | None = None,
        admission: Admission | None = None,
    ) -> None:
        """``policy``: what runs here and how it is held (default ``Policy()``); ``admission``: the bounds on
        peers' jobs (default ``Admission()``: every origin trusted, 10 jobs/s after a burst of 100)."""
        self.node_id = node_id
        self.policy = policy or Policy()
        self.admission = admission or Admission()
        self.store = store
        self.runtime = runtime
        self.queue = queue
        self.worker_count = worker_count
        self.backoff_base = backoff_base
        self.busy = 0
        self.docker = DaemonHealth()
        self.executions = Executions(node_id=node_id, store=store, publish=publish, on_attempt_over=self._attempt_over)
        self.backlog = Backlog(node_id=node_id, store=store, queue=queue, executions=self.executions)
        self.copies = Copies(
            node_id=node_id, store=store, queue=queue, executions=self.executions, policy=self.policy,
            lock=self.backlog.lock, spawn=self._spawn, abandon_start=self._abandon_start, remove=self._remove_quietly,
        )  # fmt: skip
        """This node's copies of replicas jobs, placed here or released by allocations (``node/copies.py``)."""
        self.recovery = Recovery(runtime=runtime, executions=self.executions, on_adopted=self._start_timer)
        self.retention = Retention(
            node_id=node_id, store=store, runtime=runtime, seconds=retention, in_progress=self.executions.is_current
        )
        self._timers: dict[tuple[str, int], trio.CancelScope] = {}
        self._timed_out: set[tuple[str, int]] = set()
        self._unhealthy: set[tuple[str, int]] = set()
        self._run_started: dict[tuple[str, int], float] = {}
        """When each running attempt started, on trio's clock: how long it ran sets the next backoff."""
        self._streak: dict[tuple[str, int], int] = {}
        """Quick runs in a row before each waiting attempt (absent: none), for ``restart.streak_after``."""
        self._starts: dict[str, _Start] = {}
        self._nursery: trio.Nursery | None = None

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Recover this node's unfinished executions, then run workers and the exit watcher forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            unfinished = await self._load_unfinished()
            send, recv = trio.open_memory_channel[RuntimeEvent](1000)
            nursery.start_soon(self._consume_events, recv)
            await nursery.start(self.runtime.watch_exits, send)
            # A job flagged cancelled never runs again, even if its execution is not final (a store written by
            # an older version, where Stop took two writes, may hold such a pair).
            for record, _ in [pair for pair in unfinished if pair[0].cancelled]:
                try:
                    await self.cancel(record.job.job_id)
                except StorageFullError as exc:  # the next start cancels it; until then nothing runs it
                    log.warning("cannot cancel job_id=%s at start: %s", record.job.job_id, exc.message)
            unfinished = [pair for pair in unfinished if not pair[0].cancelled]
            for record, execution in unfinished:
                if execution.state == State.RUNNING:
                    self._start_timer(record.job, execution)
            requeue = await self.recovery.recover(unfinished)
            nursery.start_soon(self._requeue_all, requeue)
            for _ in range(self.worker_count):
                nursery.start_soon(self._worker)
            nursery.start_soon(self.backlog.run)
            nursery.start_soon(self.executions.keep_unsaved)
            if self.retention.seconds is not None:
                nursery.start_soon(self.retention.run)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None, "Executor.run() is not running"
        self._nursery.start_soon(fn, *args)

    # -- what others read -------------------------------------------------------------------------

    @property
    def docker_error(self) -> str | None:
        """None while the Docker daemon answers, else why not."""
        return self.docker.error

    def load(self) -> Load:
        return Load(
            self.queue.depth, self.queue.size, self.worker_count, self.busy, self.docker.error,
            dict(self.admission.refused),
        )  # fmt: skip

    def active(self, job_id: str) -> Execution | None:
        return self.executions.get(job_id)

    async def container_logs(self, container_id: str, *, tail: int | None = None) -> tuple[str, str]:
        """(stdout, stderr) of one of our containers. Raises NotFoundError (gone) or RuntimeFailureError."""
        return await self.runtime.logs(container_id, tail=tail)

    # -- accepting jobs ---------------------------------------------------------------------------

    async def submit(self, job: Job) -> None:
        """Accept a job created here: reserve a queue slot, store it durably, queue it.

        Raises:
            QueueFullError: the queue is full; nothing was stored.
        """
        self.queue.reserve()
        try:
            execution = self._new_execution(job)
            await self.store.add_job(job, execution)
        except BaseException:
            self.queue.release()
            raise
        self.executions.track(job, execution)
        # In Create's ``early`` block the write returned at its commit: the worker waits for its fsync.
        self.queue.put_reserved(WorkItem(job, execution.attempt, self.store.on_disk()))

    async def accept(self, job: Job, *, run_here: bool) -> bool:
        """Record a job heard from a peer (or created here for other nodes); run it here if placement says so.

        Never waits for the queue: a job this node's policy refuses, or ``Admission`` refuses, is recorded
        ``rejected`` with the reason; a trusted origin's excess is held in the ``Backlog`` (stored pending, its
        execution saying so). A job known already is left as it is. True if the job was new."""
        if not run_here:
            return await self.store.add_job(job)
        if await self.store.get_job(job.job_id) is not None:
            return False  # known: neither counted against its origin's rate nor admitted again
        refusal = self.policy.refusal(job.spec)
        if refusal is not None:
            return await self._reject(job, str(refusal))
        # first come, first served: behind those already waiting
        room = not self.backlog.holding and self.queue.depth < self.queue.size
        decision = self.admission.decide(job.origin, room=room)
        if decision.verdict == Verdict.REFUSE:
            return await self._reject(job, decision.reason or "refused")
        if decision.verdict == Verdict.HOLD:
            return await self.backlog.hold(job)
        try:
            self.queue.reserve()
        except QueueFullError:
            return await self.backlog.hold(job)
        try:
            execution = self._new_execution(job)
            new = await self.store.add_job(job, execution)
        except BaseException:
            self.queue.release()
            raise
        if not new:
            self.queue.release()
            return False
        self.executions.track(job, execution)
        await self.executions.announce(execution)
        self.queue.put_reserved(WorkItem(job, execution.attempt))
        return True

    async def _reject(self, job: Job, reason: str) -> bool:
        """Record ``job`` with this node's execution ``rejected`` for ``reason``: final, never run here."""
        now = time.time()
        execution = Execution(job_id=job.job_id, node_id=self.node_id, created_at=now, updated_at=now)
        execution = execution.advance(state=State.REJECTED, error=reason)
        new = await self.store.add_job(job, execution)
        if new:
            await self.executions.announce(execution)
        return new

    def _new_execution(self, job: Job) -> Execution:
        now = time.time()
        return Execution(job_id=job.job_id, node_id=self.node_id, created_at=now, updated_at=now)

    # -- attempts ending and retries --------------------------------------------------------------

    def _attempt_over(self, job_id: str, attempt: int) -> None:
        """Called by the writer inside the change that ends an attempt: its timeout and checks go with it."""
        timer = self._timers.pop((job_id, attempt), None)
        if timer is not None:
            timer.cancel()
        self._timed_out.discard((job_id, attempt))
        self._unhealthy.discard((job_id, attempt))
        self._run_started.pop((job_id, attempt), None)
        self._streak.pop((job_id, attempt), None)
        self.recovery.forget(job_id, attempt)

    async def _fail(
        self,
        job_id: str,
        attempt: int,
        error: str | None,
        *,
        exit_code: int | None = None,
        final_state: State = State.FAILED,
        **extra: Any,
    ) -> None:
        """End this attempt in ``final_state``; start the next one after a backoff if the spec's ``restart``
        and ``retries`` say so (``node/restart.py``): a failure, or for ``restart: always`` a clean exit too."""
        job = self.executions.job(job_id)
        current = self.executions.get(job_id)
        if job is None or current is None or current.attempt != attempt:
            return
        failed = final_state != State.COMPLETE
        if not restarts(job.spec, attempt, failed=failed):
            await self.executions.transition(
                job_id, attempt, state=final_state, exit_code=exit_code, error=error, **extra
            )
            return
        key = (job_id, attempt)
        began = self._run_started.get(key)
        ran_for = None if current.started_at is None else (
            trio.current_time() - began if began is not None else time.time() - current.started_at
        )  # fmt: skip
        streak = streak_after(self._streak.get(key, 0), ran_for)
        delay = retry_delay(streak, self.backoff_base)
        ended = current.advance(state=final_state, exit_code=exit_code, error=error, **extra)
        history = (*current.history, ended.attempt_summary())[-MAX_HISTORY:]
        what = f"failed ({error})" if failed else "exited with code 0"
        verb = "retrying" if job.spec.restart == "never" else "restarting"
        self._streak[(job_id, attempt + 1)] = streak  # before the await: the next attempt may end during it
        new = await self.executions.transition(
            job_id, attempt, state=State.PENDING, attempt=attempt + 1, history=history, container_id=None,
            exit_code=None, started_at=None, finished_at=None, health=None,
            error=f"attempt {attempt} {what}; {verb} in {delay:.1f}s",
        )  # fmt: skip
        if new is None:
            self._streak.pop((job_id, attempt + 1), None)
        else:
            self._spawn(self._requeue_later, job, attempt + 1, delay)

    async def _requeue_later(self, job: Job, attempt: int, delay: float) -> None:
        await trio.sleep(delay)
        if self.executions.is_current(job.job_id, attempt):
            await self.queue.put(WorkItem(job, attempt))

    # -- workers ----------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            self.busy += 1
            try:
                if item.on_disk is not None and not await item.on_disk():  # Create queues at commit
                    await self._fail(item.job.job_id, item.attempt, "not started: the job store failed to sync")
                    continue
                await self._run_attempt(item)
            except Exception:  # a bug must not take the worker down with it
                log.exception("worker failed on job_id=%s", item.job.job_id)
                await self._fail(item.job.job_id, item.attempt, "internal error while starting the container")
            finally:
                self.busy -= 1

    async def _run_attempt(self, item: WorkItem) -> None:
        job, attempt = item.job, item.attempt
        job_id = job.job_id
        looked = settling = 0
        while True:
            current = self.executions.get(job_id)
            if current is None or current.attempt != attempt or current.state not in (State.PENDING, State.PULLING):
                return  # cancelled, superseded, or already adopted
            # Registered before the first await: a Stop from now on cancels this scope, even before it is entered.
            start = self._starts[job_id] = _Start(attempt, trio.CancelScope())
            try:
                container_id = await self._prepare_and_start(job, attempt, start)
            except RuntimeFailureError as exc:
                reason = await self.runtime.health()
                if reason is None and self.recovery.unverified(job_id, attempt) and looked < LOOK_TRIES:
                    # Looking for an earlier container failed, yet the daemon answers now: never the job's
                    # fault (the daemon was most likely coming back just then). Look again in a moment.
                    looked += 1
                    await trio.sleep(LOOK_PAUSE)
                    continue
                if reason is None and isinstance(exc, NotReadyError) and settling < len(NOT_READY_PAUSES):
                    # The daemon answers but is stopping or starting (a restart): never the job's fault. Say
                    # why it waits, look before starting again (its create may have gone through), try shortly.
                    await self.executions.transition(
                        job_id, attempt, error=f"waiting for the Docker daemon: {exc.message}"
                    )
                    if start.cancelled or await self._paused(job_id, attempt, NOT_READY_PAUSES[settling]):
                        return  # a Stop came, as for an abandoned start
                    self.recovery.suspect(job_id, attempt)
                    settling += 1
                    continue
                if reason is None:
                    await self._fail(job_id, attempt, exc.message)
                    return
                # The daemon is away: keep the job, say why it waits, and go on when it is back. It may have
                # created or even started the container before it went: look before starting another.
                self.docker.mark_down(reason)
                self.recovery.suspect(job_id, attempt)
                await self.executions.transition(job_id, attempt, error=f"waiting for the Docker daemon: {reason}")
                await self.docker.wait_up()
                continue
            finally:
                if self._starts.get(job_id) is start:
                    del self._starts[job_id]
            if container_id is None:
                return  # adopted an earlier container, or cancelled while preparing
            before = self.executions.get(job_id)  # a health report may have come first: keep it
            health = before.health if before is not None and before.health is not None else None
            if health is None and job.spec.healthcheck is not None:
                health = "starting"
            # Before the await: the attempt may end during it, and its end forgets this.
            self._run_started[(job_id, attempt)] = trio.current_time()
            running = await self.executions.transition(
                job_id, attempt, states=(State.PENDING, State.PULLING), state=State.RUNNING,
                container_id=container_id, error=None, health=health,
            )  # fmt: skip
            if running is None:
                # Either the watcher recorded its exit first (keep it), or it was cancelled meanwhile.
                self._run_started.pop((job_id, attempt), None)
                if start.cancelled:
                    self._spawn(self._remove_quietly, job_id, attempt, container_id)
                return
            self._start_timer(job, running)
            return

    async def _paused(self, job_id: str, attempt: int, seconds: float) -> bool:
        """Wait before trying a start again; True if a Stop ended the wait (as it abandons a start)."""
        wait = self._starts[job_id] = _Start(attempt, trio.CancelScope())
        try:
            with wait.scope:
                await trio.sleep(seconds)
        finally:
            if self._starts.get(job_id) is wait:
                del self._starts[job_id]
        return wait.cancelled

    async def _prepare_and_start(self, job: Job, attempt: int, start: _Start) -> str | None:
        """The container id, or None if an earlier container was adopted or Stop came first."""
        job_id = job.job_id
        with start.scope:  # Stop cancels a look, an inspect or a pull rather than wait for it
            current = self.executions.get(job_id)
            if current is not None and current.error == WAITING_FOR_SLOT:
                await self.executions.transition(job_id, attempt, error=None)
            if await self.recovery.adopt_existing(job, attempt):
                return None
            refusal = self.policy.refusal(job.spec)  # the policy may be stricter than when the job was queued
            if refusal is not None:
                await self.executions.transition(job_id, attempt, state=State.REJECTED, error=str(refusal))
                return None
            on_pulling = functools.partial(self.executions.transition, job_id, attempt, state=State.PULLING, error=None)
            return await self.runtime.prepare_and_start(job, attempt, on_pulling=on_pulling)
        return None  # cancelled

    def _start_timer(self, job: Job, execution: Execution) -> None:
        """Enforce the spec's ``timeout`` on a running attempt, counted from when it started (which, for an
        attempt adopted at recovery, was before this process)."""
        if job.spec.timeout is None or execution.container_id is None:
            return
        current = self.executions.get(job.job_id)
        if current is None or current.attempt != execution.attempt or current.state != State.RUNNING:
            return  # it ended while being recorded as running: nothing to time out
        started = execution.started_at if execution.started_at is not None else time.time()
        delay = max(0.0, started + job.spec.timeout - time.time())
        scope = trio.CancelScope()  # registered now, so an exit that comes first finds it to cancel
        self._timers[(job.job_id, execution.attempt)] = scope
        self._spawn(self._enforce_timeout, scope, job.job_id, execution.attempt, execution.container_id, delay)

    async def _enforce_timeout(
        self, scope: trio.CancelScope, job_id: str, attempt: int, container_id: str, delay: float
    ) -> None:
        with scope:
            await trio.sleep(delay)
            self._timed_out.add((job_id, attempt))
            log.info("timeout job_id=%s attempt=%d: stopping the container", job_id, attempt)
            try:
                await self.runtime.stop(container_id, grace=2.0)
            except RuntimeFailureError as exc:
                log.warning("cannot stop timed-out container job_id=%s: %s", job_id, exc.message)

    # -- exits and daemon health --------------------------------------------------------------

    async def _consume_events(self, recv: trio.MemoryReceiveChannel[RuntimeEvent]) -> None:
        async for event in recv:
            if isinstance(event, DockerHealth):
                if event.ok:
                    self.docker.mark_up()
                    self._spawn(self._reconcile)
                else:
                    self.docker.mark_down(event.reason or "unreachable")
            elif isinstance(event, ContainerHealth):
                await self._on_health(event)
            else:
                await self._on_exit(event)

    async def _on_health(self, ev: ContainerHealth) -> None:
        """Record the healthcheck's verdict; an unhealthy container whose ``restart`` is not ``never`` is
        stopped, and its exit ends the attempt as a failure (``never``: left running, shown unhealthy)."""
        current = self.executions.get(ev.job_id)
        if current is None or current.attempt != ev.attempt or current.health == ev.status:
            return
        await self.executions.transition(ev.job_id, ev.attempt, health=ev.status)
        job = self.executions.job(ev.job_id)
        key = (ev.job_id, ev.attempt)
        if ev.status != "unhealthy" or job is None or job.spec.restart == "never" or key in self._unhealthy:
            return
        self._unhealthy.add(key)
        log.info("unhealthy job_id=%s attempt=%d: stopping the container to restart it", ev.job_id, ev.attempt)
        self._spawn(self._stop_quietly, ev.job_id, ev.container_id)

    async def _stop_quietly(self, job_id: str, container_id: str) -> None:
        try:
            await self.runtime.stop(container_id, grace=2.0)
        except RuntimeFailureError as exc:
            log.warning("cannot stop container job_id=%s: %s", job_id, exc.message)

    async def _on_exit(self, ev: ContainerExit) -> None:
        if not self.executions.is_current(ev.job_id, ev.attempt):
            return
        key = (ev.job_id, ev.attempt)
        extra: dict[str, Any] = {"container_id": ev.container_id}
        self._spawn(self.retention.after_exit, ev.job_id, ev.attempt, ev.container_id)
        if key in self._timed_out:
            job = self.executions.job(ev.job_id)
            limit = job.spec.timeout if job else None
            await self._fail(ev.job_id, ev.attempt, f"timed out after {limit:g}s", exit_code=ev.exit_code, **extra)
        elif key in self._unhealthy:
            reason = "unhealthy: stopped by its healthcheck"
            await self._fail(ev.job_id, ev.attempt, reason, exit_code=ev.exit_code, **extra)
        elif ev.exit_code == 0 and ev.error is None:
            await self._fail(ev.job_id, ev.attempt, None, exit_code=0, final_state=State.COMPLETE, **extra)
        else:
            reason = ev.error or ("out of memory" if ev.oom_killed else f"exited with code {ev.exit_code}")
            await self._fail(ev.job_id, ev.attempt, reason, exit_code=ev.exit_code, **extra)

    async def _reconcile(self) -> None:
        """After (re)connecting to the daemon, against one listing: executions whose container vanished are
        lost, and containers of ours that nothing here runs any more (a crash after a Stop was recorded and
        before its container was removed) are stopped and removed, their output kept.

        Only executions already running before the listing are judged: a container started while the list
        was being taken is missing from it, yet very much there."""
        running = [(e.job_id, e.attempt, e.container_id) for e in self.executions.running()]
        try:
            listed = await self.runtime.list_managed()
        except RuntimeFailureError:
            return
        present = {c.container_id for c in listed}
        for job_id, attempt, container_id in running:
            current = self.executions.get(job_id)
            if container_id not in present and current is not None and current.container_id == container_id:
                await self._fail(job_id, attempt, "container vanished", final_state=State.LOST)
        for c in listed:
            if c.status not in ("exited", "dead", "created") and not self.executions.is_current(c.job_id, c.attempt):
                log.info("removing container nothing runs job_id=%s attempt=%d", c.job_id, c.attempt)
                self._spawn(self._remove_quietly, c.job_id, c.attempt, c.container_id)

    # -- recovery at start ------------------------------------------------------------------------

    async def _load_unfinished(self) -> list[tuple[JobRecord, Execution]]:
        """Track this node's executions that were not final when it last stopped, BEFORE the exit watcher
        starts: its first report lists containers that ended while the node was down, and each must find
        its execution here to be recorded with its true exit code."""
        unfinished = await self.store.unfinished(self.node_id)
        for record, execution in unfinished:
            self.executions.track(record.job, execution)
        return unfinished

    async def _requeue_all(self, items: list[WorkItem]) -> None:
        for item in items:  # in order: the oldest job first, as they were queued
            await self.queue.put(item)

    # -- cancellation -----------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        """Stop the job here: the cancelled flag and this node's CANCELLED execution are one store write;
        a queued execution never starts, a pull in progress is abandoned, a running container is removed."""
        self._abandon_start(job_id)
        async with self.backlog.lock:  # the backlog cannot queue the job meanwhile
            current = self.executions.get(job_id)
            untracked = None
            if current is None:
                untracked = next((e for e in await self.store.executions_of(job_id) if e.node_id == self.node_id), None)
            cancelled = await self.executions.cancel(job_id, untracked=untracked)
        self._abandon_start(job_id)  # a worker may have taken the job up while this waited for the lock
        if current is not None and cancelled is not None and current.container_id is not None:
            self._spawn(self._remove_quietly, job_id, current.attempt, current.container_id)

    def _abandon_start(self, job_id: str) -> None:
        start = self._starts.get(job_id)
        if start is not None:
            start.cancelled = True
            start.scope.cancel()

    async def _remove_quietly(self, job_id: str, attempt: int, container_id: str) -> None:
        """Stop a container nobody waits for any more, keep its output, then remove it."""
        try:
            await self.runtime.stop(container_id, grace=2.0)
            if await self.retention.keep_logs(job_id, attempt, container_id):  # else the sweep removes it later
                await self.runtime.remove(container_id)
        except RuntimeFailureError as exc:
            log.warning("cannot remove container %s: %s", container_id[:12], exc.message)


__all__ = ["BACKOFF_CAP", "Executor", "Load", "retry_delay"]
