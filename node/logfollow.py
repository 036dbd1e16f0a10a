"""Following a job's output as it is written (``cmnode logs --follow``, ``GET /logs``), on this node or another.

A follow is a source (this node's container, read by ``LocalLogs``, or a peer's stream, read by
``node/meshlogs.py``) pumped by a task of ``LogFollowers`` into a small bounded channel that the reader (the HTTP
route, or the mesh serving a peer) drains. The pump, not the reader, owns the source, so every bound is kept in
one place: at most ``MAX_FOLLOWERS`` at once, at most ``BUFFER`` pieces held for one reader, and a reader that
takes nothing for ``CUT_AFTER`` seconds is cut off (its source closed, its stream ended with a ``cut``). The
pumps live in ``LogFollowers.run``'s nursery, which the node's lifetime owns; ``close`` ends them all when the
node stops, so no follow holds up the HTTP server's drain.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .errors import NodeError, NotFoundError, QueueFullError
from .model import Execution
from .runtime import LogChunk

__all__ = [
    "BUFFER",
    "CUT_AFTER",
    "MAX_FOLLOWERS",
    "Follow",
    "FollowItem",
    "LocalLogs",
    "LogCut",
    "LogEnd",
    "LogFollowers",
    "Source",
    "item_from_json",
    "item_to_json",
]

log = logging.getLogger("cmnode.logs")

MAX_FOLLOWERS = 64
"""Follows this node pumps at once (its own readers' and peers'); one more is refused (QueueFullError)."""
BUFFER = 16
"""Pieces (each at most 16 KiB) held for one reader that has yet to take them."""
CUT_AFTER = 30.0
"""Seconds a reader may leave its buffer full before it is cut off."""
PIECE = 16 * 1024
"""Characters of output in one item at most."""
POLL = 0.5
"""Seconds between two looks at an execution waiting for its container (queued, pulling, between attempts)."""


@dataclass(frozen=True, slots=True)
class LogEnd:
    """The execution ended here: the follow is complete."""

    state: str
    exit_code: int | None
    attempt: int


@dataclass(frozen=True, slots=True)
class LogCut:
    """The follow ended before the execution did: ``reason`` says why (a slow reader, the node stopping, a peer
    gone, Docker away)."""

    reason: str


FollowItem = LogChunk | LogEnd | LogCut


def item_to_json(item: FollowItem) -> dict[str, Any]:
    """One item as the mesh stream and the HTTP route carry it."""
    if isinstance(item, LogChunk):
        return {"stream": item.stream, "text": item.text}
    if isinstance(item, LogEnd):
        return {"end": {"state": item.state, "exit_code": item.exit_code, "attempt": item.attempt}}
    return {"cut": item.reason}


def item_from_json(value: Any) -> FollowItem | None:
    """The item ``item_to_json`` made, or None for anything else (a peer's malformed frame)."""
    if not isinstance(value, dict):
        return None
    if value.get("stream") in ("stdout", "stderr") and isinstance(value.get("text"), str):
        return LogChunk(value["stream"], value["text"])
    end = value.get("end")
    if isinstance(end, dict) and isinstance(end.get("state"), str):
        code, attempt = end.get("exit_code"), end.get("attempt")
        return LogEnd(end["state"], code if isinstance(code, int) else None, attempt if isinstance(attempt, int) else 1)
    if isinstance(value.get("cut"), str):
        return LogCut(value["cut"])
    return None


class Follow:
    """The reader's side of one follow: iterate ``items`` (or ``async for``); it ends with a ``LogEnd`` or a
    ``LogCut``. ``close`` when done (leaving early lets the pump go at once)."""

    def __init__(self, receive: trio.MemoryReceiveChannel[FollowItem]) -> None:
        self._receive = receive
        self.reason = "the node stops"
        """Why the pump ended without a last item (set before it closes the channel)."""

    def close(self) -> None:
        self._receive.close()

    def __aiter__(self) -> AsyncIterator[FollowItem]:
        return self._items(None)  # type: ignore[return-value]  # no ping: never None

    def items(self, ping: float | None) -> AsyncIterator[FollowItem | None]:
        """The items, with None after ``ping`` seconds without one (a keep-alive for the reader's transport)."""
        return self._items(ping)

    async def _items(self, ping: float | None) -> AsyncIterator[FollowItem | None]:
        while True:
            item: FollowItem | None = None
            with trio.move_on_after(ping if ping is not None else float("inf")) as idle:
                try:
                    item = await self._receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    item = LogCut(self.reason)  # the pump ended without a last item
            if idle.cancelled_caught or item is None:
                yield None
                continue
            yield item
            if not isinstance(item, LogChunk):
                return


class Source(Protocol):
    """What a follow reads: an async generator of items, or a class that closes like one (node/meshlogs.py)."""

    def __aiter__(self) -> AsyncIterator[FollowItem]: ...

    def __anext__(self) -> Awaitable[FollowItem]: ...

    async def aclose(self) -> None: ...


class LogFollowers:
    """Every follow this node pumps. Run ``run`` in the node's nursery; ``start`` a source to get its reader."""

    def __init__(self, *, limit: int = MAX_FOLLOWERS, buffer: int = BUFFER, cut_after: float = CUT_AFTER) -> None:
        self.limit = limit
        self.buffer = buffer
        self.cut_after = cut_after
        self.active = 0
        self.cut = 0
        """Readers cut off for not reading (for tests and metrics)."""
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the pumps until cancelled, or until ``close`` (then return)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()  # close() cancels this nursery
            finally:
                self._nursery = None

    def close(self) -> None:
        """The node stops: every follow ends now (its reader gets a ``cut``), and no new one starts."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None

    def check(self) -> None:
        """Raise now what ``start`` would raise: before opening a source that is costly to open (a peer's).

        Raises:
            QueueFullError: ``limit`` follows are running, or the node is stopping.
        """
        if self._nursery is None or self.active >= self.limit:
            why = "this node is stopping" if self._nursery is None else f"{self.limit} follows are running"
            raise QueueFullError(f"cannot follow logs now: {why}")

    async def start(self, source: Source) -> Follow:
        """Pump ``source`` for a new reader.

        Raises:
            QueueFullError: see ``check`` (the source is closed unread).
        """
        try:
            self.check()
        except QueueFullError:
            await _aclose(source)
            raise
        assert self._nursery is not None
        send, receive = trio.open_memory_channel[FollowItem](self.buffer)
        follow = Follow(receive)
        self.active += 1
        self._nursery.start_soon(self._pump, source, send, follow)
        return follow

    async def _pump(self, source: Source, send: trio.MemorySendChannel[FollowItem], follow: Follow) -> None:
        try:
            async with send, aclosing(source):
                try:
                    async for item in source:
                        with trio.move_on_after(self.cut_after) as waited:
                            await send.send(item)
                        if waited.cancelled_caught:
                            self.cut += 1
                            follow.reason = f"this reader took nothing for {self.cut_after:g}s and was cut off"
                            log.info("logs follower cut off: it took nothing for %gs", self.cut_after)
                            return
                        if not isinstance(item, LogChunk):
                            return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the reader left
                except NodeError as exc:  # Docker away, the container gone, a peer unreachable
                    follow.reason = exc.message
                except Exception as exc:
                    log.exception("following logs failed")
                    follow.reason = f"internal error: {type(exc).__name__}"
        finally:
            self.active -= 1


async def _aclose(source: Source) -> None:
    close = getattr(source, "aclose", None)
    if close is not None:
        await close()


class LocalLogs:
    """This node's output of a job as a follow source: the container of each attempt as it comes (the first one
    from its last ``tail`` lines), until the execution is final; the stored tail if its container is gone."""

    def __init__(
        self,
        *,
        node_id: str,
        current: Callable[[str], Awaitable[Execution | None]],
        follow: Callable[..., AsyncGenerator[LogChunk, None]],
        stored: Callable[[str], Awaitable[tuple[int, str, str] | None]],
        poll: float = POLL,
    ) -> None:
        """``current``: this node's execution of a job (None: none); ``follow``: ``Runtime.follow``;
        ``stored``: the kept output of the last attempt that ended (``Store.get_logs`` for this node)."""
        self.node_id = node_id
        self._current = current
        self._follow = follow
        self._stored = stored
        self.poll = poll

    async def source(self, job_id: str, tail: int | None) -> Source:
        """The source for one reader; checked at once.

        Raises:
            NotFoundError: no execution of the job on this node.
        """
        if await self._current(job_id) is None:
            raise NotFoundError(f"job {job_id} has no execution on node {self.node_id}",
                                data={"job_id": job_id, "node_id": self.node_id})  # fmt: skip
        return self._items(job_id, tail)

    async def _items(self, job_id: str, tail: int | None) -> AsyncGenerator[FollowItem, None]:
        followed: set[str] = set()
        shown = False
        while True:
            execution = await self._current(job_id)
            if execution is None:  # purged meanwhile
                yield LogCut(f"job {job_id} is no longer known on node {self.node_id}")
                return
            container = execution.container_id
            if container is not None and container not in followed:
                followed.add(container)
                try:
                    async with aclosing(self._follow(container, tail=tail if not shown else None)) as chunks:
                        async for chunk in chunks:
                            for piece in pieces(chunk):
                                yield piece
                except NotFoundError:  # removed already: its output, if kept, is in the store
                    if not shown and (kept := await self._stored(job_id)) is not None:
                        for item in _stored_chunks(kept, tail):
                            yield item
                shown = True
                continue  # the container stopped: final, or another attempt comes
            if execution.state.final:
                if not shown and (kept := await self._stored(job_id)) is not None:
                    for item in _stored_chunks(kept, tail):
                        yield item
                yield LogEnd(execution.state.value, execution.exit_code, execution.attempt)
                return
            await trio.sleep(self.poll)


def _stored_chunks(kept: tuple[int, str, str], tail: int | None) -> list[LogChunk]:
    _, stdout, stderr = kept

    def last(text: str) -> str:
        return text if tail is None else "".join(text.splitlines(True)[-tail:] if tail else [])

    out = (LogChunk(stream, text) for stream, text in (("stdout", last(stdout)), ("stderr", last(stderr))) if text)
    return [piece for chunk in out for piece in pieces(chunk)]


def pieces(chunk: LogChunk) -> list[LogChunk]:
    """``chunk`` in pieces of at most ``PIECE`` characters (a frame of the mesh stream stays small)."""
    if len(chunk.text) <= PIECE:
        return [chunk]
    return [LogChunk(chunk.stream, chunk.text[i : i + PIECE]) for i in range(0, len(chunk.text), PIECE)]
