"""Runs this node's executions: workers take jobs off the queue and start containers; one Docker events
watcher reports their exits; timeouts, retries and cancellation act on the same in-memory state.

``_active`` holds the latest version of each execution this node runs that is not final yet. Every
change goes through ``_transition``, which updates it synchronously (no await between reading and
writing, so there are no races between workers, the exit watcher and cancellation) and then stores
and announces the new version. Only this node writes its executions.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio

from .errors import RuntimeFailureError
from .jobqueue import JobQueue, WorkItem
from .model import Execution, Job, State
from .retention import Retention
from .runtime import ContainerExit, ContainerInfo, DockerHealth, DockerRuntime
from .store import JobRecord, Store

log = logging.getLogger("cmnode.executor")

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
LOOK_TRIES = 5
LOOK_PAUSE = 1.0

Publish = Callable[[Execution], Awaitable[None]]


class Executor:
    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        runtime: DockerRuntime,
        queue: JobQueue,
        worker_count: int,
        publish: Publish | None = None,
        backoff_base: float = BACKOFF_BASE,
        retention: float | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.runtime = runtime
        self.queue = queue
        self.worker_count = worker_count
        self.publish = publish
        self.backoff_base = backoff_base
        self.retention = Retention(
            node_id=node_id, store=store, runtime=runtime, seconds=retention, in_progress=self._in_progress
        )
        self.busy = 0
        self.docker_error: str | None = "not connected yet"
        self._docker_up = trio.Event()
        self._active: dict[str, Execution] = {}
        self._jobs: dict[str, Job] = {}
        self._timers: dict[tuple[str, int], trio.CancelScope] = {}
        self._timed_out: set[tuple[str, int]] = set()
        self._cancelled: set[str] = set()
        self._pulls: dict[str, trio.CancelScope] = {}
        # Attempts that may have a container we did not record (recovered, or a start cut short by the daemon
        # going away): checked against one shared listing of our containers before a worker starts one.
        self._unverified: set[tuple[str, int]] = set()
        self._listing: dict[tuple[str, int], ContainerInfo] | None = None
        self._listing_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Recover this node's unfinished executions, then run workers and the exit watcher forever."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            unfinished = await self._load_unfinished()
            send, recv = trio.open_memory_channel[ContainerExit | DockerHealth](1000)
            nursery.start_soon(self._consume_events, recv)
            await nursery.start(self.runtime.watch_exits, send)
            await self._recover(unfinished)
            for _ in range(self.worker_count):
                nursery.start_soon(self._worker)
            if self.retention.seconds is not None:
                nursery.start_soon(self.retention.run)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        assert self._nursery is not None, "Executor.run() is not running"
        self._nursery.start_soon(fn, *args)

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
        self._track(job, execution)
        self.queue.put_reserved(WorkItem(job, execution.attempt))

    async def accept(self, job: Job, *, run_here: bool) -> bool:
        """Record a job heard from a peer; queue it here if placement says so. True if it was new."""
        execution = self._new_execution(job) if run_here else None
        if not await self.store.add_job(job, execution):
            return False
        if execution is not None:
            self._track(job, execution)
            await self._record_published(execution)
            self._spawn(self.queue.put, WorkItem(job, execution.attempt))
        return True

    def _new_execution(self, job: Job) -> Execution:
        now = time.time()
        return Execution(job_id=job.job_id, node_id=self.node_id, created_at=now, updated_at=now)

    def _track(self, job: Job, execution: Execution) -> None:
        self._jobs[job.job_id] = job
        self._active[job.job_id] = execution

    # -- state changes ----------------------------------------------------------------------------

    async def _transition(
        self, job_id: str, attempt: int, /, *, states: tuple[State, ...] | None = None, **changes: Any
    ) -> Execution | None:
        """Apply ``changes`` to the active execution if it is still at ``attempt`` (and in ``states``)."""
        current = self._active.get(job_id)
        if current is None or current.attempt != attempt or (states is not None and current.state not in states):
            return None
        new = current.advance(**changes)
        if new.state.final or new.attempt != attempt:  # this attempt is over: so is its timeout
            timer = self._timers.pop((job_id, attempt), None)
            if timer is not None:
                timer.cancel()
        if new.state.final:
            del self._active[job_id]
            self._jobs.pop(job_id, None)
        else:
            self._active[job_id] = new
        await self._record_published(new)
        return new

    async def _record_published(self, execution: Execution) -> None:
        await self.store.put_execution(execution)
        log.info(
            "execution job_id=%s node_id=%s state=%s attempt=%d exit_code=%s error=%s",
            execution.job_id, self.node_id, execution.state.value, execution.attempt,
            execution.exit_code, execution.error,
        )  # fmt: skip
        if self.publish is not None:
            await self.publish(execution)

    async def _fail(
        self,
        job_id: str,
        attempt: int,
        error: str,
        *,
        exit_code: int | None = None,
        final_state: State = State.FAILED,
        **extra: Any,
    ) -> None:
        """Fail this attempt; start the next one after a backoff if the spec allows retries."""
        job = self._jobs.get(job_id)
        current = self._active.get(job_id)
        if job is None or current is None or current.attempt != attempt:
            return
        if attempt <= job.spec.retries:
            delay = min(BACKOFF_CAP, self.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            failed = current.advance(state=final_state, exit_code=exit_code, error=error, **extra)
            history = (*current.history, failed.attempt_summary())
            new = await self._transition(
                job_id, attempt, state=State.PENDING, attempt=attempt + 1, history=history, container_id=None,
                exit_code=None, started_at=None, finished_at=None,
                error=f"attempt {attempt} failed ({error}); retrying in {delay:.1f}s",
            )  # fmt: skip
            if new is not None:
                self._spawn(self._requeue_later, job, attempt + 1, delay)
        else:
            await self._transition(job_id, attempt, state=final_state, exit_code=exit_code, error=error, **extra)

    async def _requeue_later(self, job: Job, attempt: int, delay: float) -> None:
        await trio.sleep(delay)
        current = self._active.get(job.job_id)
        if current is not None and current.attempt == attempt:
            await self.queue.put(WorkItem(job, attempt))

    # -- workers ----------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            self.busy += 1
            try:
                await self._run_attempt(item)
            except Exception:  # a bug must not take the worker down with it
                log.exception("worker failed on job_id=%s", item.job.job_id)
                await self._fail(item.job.job_id, item.attempt, "internal error while starting the container")
            finally:
                self.busy -= 1

    async def _run_attempt(self, item: WorkItem) -> None:
        job, attempt = item.job, item.attempt
        job_id = job.job_id
        looked = 0
        while True:
            current = self._active.get(job_id)
            if current is None or current.attempt != attempt or current.state not in (State.PENDING, State.PULLING):
                return  # cancelled, superseded, or already adopted
            try:
                if await self._adopt_existing(job, attempt):
                    return
                if job.spec.pull == "always" or not await self.runtime.image_present(job.spec.image):
                    await self._transition(job_id, attempt, state=State.PULLING, error=None)
                    with trio.CancelScope() as pull:  # Stop cancels a pull rather than wait for it
                        self._pulls[job_id] = pull
                        try:
                            await self.runtime.ensure_image(job.spec.image, job.spec.pull)
                        finally:
                            self._pulls.pop(job_id, None)
                    current = self._active.get(job_id)
                    if pull.cancelled_caught or current is None or current.attempt != attempt:
                        return  # cancelled while pulling
                container_id = await self.runtime.start(job, attempt)
            except RuntimeFailureError as exc:
                reason = await self.runtime.health()
                if reason is None and (job_id, attempt) in self._unverified and looked < LOOK_TRIES:
                    # Looking for an earlier container failed, yet the daemon answers now: never the job's
                    # fault (the daemon was most likely coming back just then). Look again in a moment.
                    looked += 1
                    await trio.sleep(LOOK_PAUSE)
                    continue
                if reason is None:
                    await self._fail(job_id, attempt, exc.message)
                    return
                # The daemon is away: keep the job, say why it waits, and go on when it is back. It may have
                # created or even started the container before it went: look before starting another.
                self._mark_down(reason)
                self._listing = None
                self._unverified.add((job_id, attempt))
                await self._transition(job_id, attempt, error=f"waiting for the Docker daemon: {reason}")
                await self._docker_up.wait()
                continue
            running = await self._transition(
                job_id, attempt, states=(State.PENDING, State.PULLING), state=State.RUNNING,
                container_id=container_id, error=None,
            )  # fmt: skip
            if running is None:
                # Either the watcher recorded its exit first (keep it), or it was cancelled meanwhile.
                if job_id in self._cancelled:
                    self._spawn(self._remove_quietly, job_id, attempt, container_id)
                return
            self._start_timer(job, running)
            return

    def _start_timer(self, job: Job, execution: Execution) -> None:
        """Enforce the spec's ``timeout`` on a running attempt, counted from when it started (which, for an
        attempt adopted at recovery, was before this process)."""
        if job.spec.timeout is None or execution.container_id is None:
            return
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

    async def _consume_events(self, recv: trio.MemoryReceiveChannel[ContainerExit | DockerHealth]) -> None:
        async for event in recv:
            if isinstance(event, DockerHealth):
                if event.ok:
                    self.docker_error = None
                    self._docker_up.set()
                    self._spawn(self._reconcile)
                else:
                    self._mark_down(event.reason or "unreachable")
            else:
                await self._on_exit(event)

    def _mark_down(self, reason: str) -> None:
        if self.docker_error is None:
            log.warning("docker daemon unavailable: %s", reason)
        self.docker_error = reason
        if self._docker_up.is_set():
            self._docker_up = trio.Event()

    async def _on_exit(self, ev: ContainerExit) -> None:
        current = self._active.get(ev.job_id)
        if current is None or current.attempt != ev.attempt:
            return
        key = (ev.job_id, ev.attempt)
        extra: dict[str, Any] = {"container_id": ev.container_id}
        self._spawn(self.retention.after_exit, ev.job_id, ev.attempt, ev.container_id)
        if key in self._timed_out:
            self._timed_out.discard(key)
            job = self._jobs.get(ev.job_id)
            limit = job.spec.timeout if job else None
            await self._fail(ev.job_id, ev.attempt, f"timed out after {limit:g}s", exit_code=ev.exit_code, **extra)
        elif ev.exit_code == 0 and ev.error is None:
            await self._transition(ev.job_id, ev.attempt, state=State.COMPLETE, exit_code=0, error=None, **extra)
        else:
            reason = ev.error or ("out of memory" if ev.oom_killed else f"exited with code {ev.exit_code}")
            await self._fail(ev.job_id, ev.attempt, reason, exit_code=ev.exit_code, **extra)

    async def _reconcile(self) -> None:
        """After (re)connecting to the daemon: executions whose container vanished meanwhile are lost.

        Only executions already running before the listing are judged: a container started while the list
        was being taken is missing from it, yet very much there."""
        running = [(e.job_id, e.attempt, e.container_id) for e in self._active.values() if e.state == State.RUNNING]
        try:
            present = {c.container_id for c in await self.runtime.list_managed()}
        except RuntimeFailureError:
            return
        for job_id, attempt, container_id in running:
            current = self._active.get(job_id)
            if container_id not in present and current is not None and current.container_id == container_id:
                await self._fail(job_id, attempt, "container vanished", final_state=State.LOST)

    # -- recovery at start ------------------------------------------------------------------------

    async def _load_unfinished(self) -> list[tuple[JobRecord, Execution]]:
        """Track this node's executions that were not final when it last stopped, BEFORE the exit watcher
        starts: its first report lists containers that ended while the node was down, and each must find
        its execution here to be recorded with its true exit code."""
        unfinished = await self.store.unfinished(self.node_id)
        for record, execution in unfinished:
            self._track(record.job, execution)
        return unfinished

    async def _recover(self, unfinished: list[tuple[JobRecord, Execution]]) -> None:
        """Adopt, re-queue or cancel what ``_load_unfinished`` tracked, against one listing of our containers.

        Running attempts are followed by the exit watcher (``_reconcile`` marks those whose container is
        gone). A pending or pulling attempt may have a container all the same (a crash between starting it
        and recording so): it is adopted, never started twice. Without the daemon, that check waits for the
        worker, which makes it before starting anything."""
        with contextlib.suppress(RuntimeFailureError):
            await self._refresh_listing()
        requeue: list[WorkItem] = []
        for record, execution in unfinished:
            job, key = record.job, (record.job.job_id, execution.attempt)
            if execution.state == State.RUNNING:
                if record.cancelled:
                    await self.cancel(job.job_id)
                else:
                    self._start_timer(job, execution)
                continue
            self._unverified.add(key)
            if record.cancelled:
                found = self._listing.pop(key, None) if self._listing is not None else None
                await self.cancel(job.job_id)
                if found is not None:
                    self._spawn(self._remove_quietly, job.job_id, execution.attempt, found.container_id)
            elif self._listing is None or not await self._adopt_existing(job, execution.attempt):
                requeue.append(WorkItem(job, execution.attempt))
        self._spawn(self._requeue_all, requeue)

    async def _requeue_all(self, items: list[WorkItem]) -> None:
        for item in items:  # in order: the oldest job first, as they were queued
            await self.queue.put(item)

    async def _refresh_listing(self) -> None:
        """List our containers once for every attempt waiting to be checked. Raises RuntimeFailureError."""
        async with self._listing_lock:
            if self._listing is None:
                self._listing = {(c.job_id, c.attempt): c for c in await self.runtime.list_managed()}

    async def _adopt_existing(self, job: Job, attempt: int) -> bool:
        """True if this unverified attempt turned out to have a started container, now followed as running.

        A container that was created but never started has not run: it is removed, and the attempt starts
        afresh. Raises RuntimeFailureError when the daemon cannot list containers.
        """
        key = (job.job_id, attempt)
        if key not in self._unverified:
            return False
        await self._refresh_listing()
        assert self._listing is not None
        found = self._listing.pop(key, None)
        self._unverified.discard(key)
        if not self._unverified:
            self._listing = None
        if found is None:
            return False
        if found.status == "created":
            log.info("removing never-started container job_id=%s attempt=%d", job.job_id, attempt)
            await self.runtime.remove(found.container_id)
            return False
        log.info("adopting container job_id=%s attempt=%d status=%s", job.job_id, attempt, found.status)
        adopted = await self._transition(
            job.job_id, attempt, states=(State.PENDING, State.PULLING), state=State.RUNNING,
            container_id=found.container_id, error=None,
        )  # fmt: skip
        if adopted is not None:
            self._start_timer(job, adopted)
        return True

    # -- cancellation -----------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        """Cancel this node's execution of the job: queued ones never start, running ones are stopped."""
        self._cancelled.add(job_id)
        pull = self._pulls.pop(job_id, None)
        if pull is not None:
            pull.cancel()
        current = self._active.get(job_id)
        if current is None:
            return
        container_id = current.container_id
        await self._transition(job_id, current.attempt, state=State.CANCELLED, error="cancelled by request")
        if container_id is not None:
            self._spawn(self._remove_quietly, job_id, current.attempt, container_id)

    async def _remove_quietly(self, job_id: str, attempt: int, container_id: str) -> None:
        """Stop a container nobody waits for any more, keep its output, then remove it."""
        try:
            await self.runtime.stop(container_id, grace=2.0)
            await self.retention.keep_logs(job_id, attempt, container_id)
            await self.runtime.remove(container_id)
        except RuntimeFailureError as exc:
            log.warning("cannot remove container %s: %s", container_id[:12], exc.message)

    def active(self, job_id: str) -> Execution | None:
        return self._active.get(job_id)

    def _in_progress(self, job_id: str, attempt: int) -> bool:
        current = self._active.get(job_id)
        return current is not None and current.attempt == attempt
