"""Following another node's output of a job over ``/cmnode/logs/follow/1``: the streaming variant of the
one-shot ``/cmnode/logs/1`` request.

One libp2p stream per follower. Frames are varint-length-prefixed JSON (as the request/response protocol's,
``libp2p.io.msgio``), each at most ``MAX_FRAME`` bytes: the follower sends ``{job_id, tail}``; the node that runs
the job answers ``{"ok": true}`` or ``{"error", "code"}``, then sends the items of ``node/logfollow.py`` as they
come (``{"stream", "text"}``, then ``{"end": ...}`` or ``{"cut": ...}``) and ``{"ping": 1}`` after ``PING``
seconds of quiet. Both ends are bounded in time: the serving node cuts off a follower that leaves a frame unread
for ``WRITE_TIMEOUT`` (yamux's flow control makes a write wait when the follower stops reading), and the
follower gives up on a node silent for ``SILENCE``. The serving side's follow goes through the node's
``LogFollowers``, so its bounds (how many at once, buffering) hold for peers as for local readers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.msgio import VarIntLengthMsgReadWriter
from libp2p.peer.id import ID

from .errors import ERROR_CLASSES, NodeError, NotFoundError, PeerUnreachableError
from .logfollow import Follow, FollowItem, LogCut, item_from_json, item_to_json
from .runtime import LogChunk

__all__ = ["LOGS_FOLLOW_PROTOCOL", "RemoteLogs", "serve_follow"]

log = logging.getLogger("cmnode.logs")

LOGS_FOLLOW_PROTOCOL = "/cmnode/logs/follow/1"
MAX_FRAME = 256 * 1024
"""Bytes of one frame: an item holds at most 16 Ki characters of output (logfollow.PIECE), JSON-escaped."""
OPEN_TIMEOUT = 10.0
"""Seconds to open the stream and get the answer to the request (both ends)."""
WRITE_TIMEOUT = 10.0
PING = 10.0
SILENCE = 30.0
"""Seconds without a frame after which the follower gives the stream up (the serving node pings every 10 s)."""
_BY_CODE: dict[int, type[NodeError]] = {cls.code: cls for cls in ERROR_CLASSES}

OpenFollow = Callable[[str, int | None], Awaitable[Follow]]


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def serve_follow(stream: INetStream, open_follow: OpenFollow) -> None:
    """The serving side of one follower's stream (a libp2p stream handler): never raises."""
    rw = VarIntLengthMsgReadWriter(stream, max_msg_size=MAX_FRAME)
    follow: Follow | None = None
    finished = False

    async def write(value: dict[str, Any]) -> None:
        with trio.fail_after(WRITE_TIMEOUT):
            await rw.write_msg(_encode(value))

    try:
        with trio.fail_after(OPEN_TIMEOUT):
            request = json.loads(await rw.read_msg())
            job_id, tail = _request(request)
            try:
                follow = await open_follow(job_id, tail)
            except NodeError as exc:
                await write({"error": exc.message, "code": exc.code})
                finished = True
                return
        await write({"ok": True})
        async for item in follow.items(PING):
            await write({"ping": 1} if item is None else item_to_json(item))
            if item is not None and not isinstance(item, LogChunk):
                break
        finished = True
    except trio.TooSlowError:
        log.info("logs follower %s cut off: it did not read for %gs", _peer(stream), WRITE_TIMEOUT)
    except Exception as exc:  # a peer's stream must not reach a nursery (docs/py-libp2p.md)
        log.debug("logs follow stream of %s ended: %r", _peer(stream), exc)
    finally:
        if follow is not None:
            follow.close()
        await _let_go(stream, reset=not finished)


def _request(value: Any) -> tuple[str, int | None]:
    """(job_id, tail) of a follower's request. Raises ValueError."""
    if not isinstance(value, dict) or not isinstance(value.get("job_id"), str):
        raise ValueError("request must be {job_id, tail}")
    tail = value.get("tail")
    if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool) or tail < 0):
        raise ValueError("tail must be a non-negative integer")
    return value["job_id"], tail


def _peer(stream: INetStream) -> str:
    try:
        return str(stream.muxed_conn.peer_id)
    except Exception:
        return "?"


async def _let_go(stream: INetStream, *, reset: bool) -> None:
    """Close (or reset) the stream, briefly and even while cancelled: the stream must not outlive its follower."""
    with trio.CancelScope(shield=True), trio.move_on_after(2), contextlib.suppress(Exception):
        await (stream.reset() if reset else stream.close())


class RemoteLogs:
    """The follower's side: an async iterator of the serving node's items, ending with a ``LogEnd`` or a
    ``LogCut`` (the node went silent, closed the stream, or sent a malformed frame). ``aclose`` lets the stream
    go. Open it with ``open``."""

    def __init__(self, stream: INetStream, node_id: str) -> None:
        self._stream = stream
        self._rw = VarIntLengthMsgReadWriter(stream, max_msg_size=MAX_FRAME)
        self._node = node_id
        self._done = False

    @classmethod
    async def open(cls, host: IHost, peer_id: ID, job_id: str, tail: int | None) -> RemoteLogs:
        """Ask ``peer_id`` to stream its output of the job.

        Raises:
            PeerUnreachableError: no stream, or no answer within ``OPEN_TIMEOUT``.
            NodeError: the node refused (the class it raised: NotFoundError for no execution there).
        """
        node_id = peer_id.to_base58()
        stream: INetStream | None = None
        try:
            with trio.fail_after(OPEN_TIMEOUT):
                stream = await host.new_stream(peer_id, [TProtocol(LOGS_FOLLOW_PROTOCOL)])
                remote = cls(stream, node_id)
                await remote._rw.write_msg(_encode({"job_id": job_id, "tail": tail}))
                answer = json.loads(await remote._rw.read_msg())
        except Exception as exc:
            if stream is not None:
                await _let_go(stream, reset=True)
            why = "it did not answer in time" if isinstance(exc, trio.TooSlowError) else f"{exc or type(exc).__name__}"
            raise PeerUnreachableError(f"cannot follow logs on node {node_id}: {why}",
                                       data={"node_id": node_id}) from None  # fmt: skip
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            await _let_go(stream, reset=True)
            error = answer.get("error") if isinstance(answer, dict) else None
            if not isinstance(error, str):
                raise PeerUnreachableError(f"node {node_id} sent a malformed answer", data={"node_id": node_id})
            code = answer.get("code")
            kind = _BY_CODE.get(code, NotFoundError) if isinstance(code, int) else NotFoundError
            if kind.__init__ is not NodeError.__init__:  # ValidationError's own signature: keep it simple
                kind = NotFoundError
            raise kind(error, data={"job_id": job_id, "node_id": node_id})
        return remote

    def __aiter__(self) -> RemoteLogs:
        return self

    async def __anext__(self) -> FollowItem:
        if self._done:
            raise StopAsyncIteration
        while True:
            try:
                with trio.fail_after(SILENCE):
                    raw = await self._rw.read_msg()
                value = json.loads(raw)
            except trio.TooSlowError:
                return self._cut(f"node {self._node} sent nothing for {SILENCE:g}s")
            except Exception:
                return self._cut(f"node {self._node} closed the logs stream")
            if isinstance(value, dict) and "ping" in value:
                continue
            item = item_from_json(value)
            if item is None:
                return self._cut(f"node {self._node} sent a malformed frame")
            if not isinstance(item, LogChunk):
                self._done = True
            return item

    def _cut(self, reason: str) -> LogCut:
        self._done = True
        return LogCut(reason)

    async def aclose(self) -> None:
        finished, self._done = self._done, True
        await _let_go(self._stream, reset=not finished)
