"""Following a container's output on dockerd: its multiplexed logs stream (``follow=1``) read piece by piece in
worker threads, so a follower costs one blocked thread and never more than one piece of memory.

The SDK's own ``logs(stream=True)`` drops which stream (stdout or stderr) each frame came from, so the frames
are read here. Docker's frame header is 8 bytes: the stream (1 stdout, 2 stderr), three zero bytes and the
payload's length, big-endian. Our containers never have a TTY, so the stream is always multiplexed.
"""

from __future__ import annotations

import codecs
import contextlib
import socket
import struct
import threading
from collections.abc import AsyncGenerator
from typing import Any

import docker.errors
import trio

from .docker_client import DockerConnection, in_thread
from .errors import NotFoundError, RuntimeFailureError
from .runtime import LogChunk

__all__ = ["FOLLOW_THREADS", "MAX_PIECE", "follow_container"]

MAX_PIECE = 16 * 1024
"""Bytes read at once: a long line arrives in pieces of at most this."""
FOLLOW_THREADS = 64
"""Followers that may wait on dockerd at once, each in a thread of its own (apart from the runtime's others)."""
_STREAMS = {1: "stdout", 2: "stderr"}


class _Frames:
    """The thread side: reads the next piece of the stream, a frame header first when the last frame is done."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self._left = 0
        self._kind = 1

    def next(self) -> tuple[int, bytes] | None:
        """(stream, bytes), or None at the end of the stream (the container stopped, or we let go)."""
        while self._left == 0:
            header = self._exact(8)
            if header is None:
                return None
            self._kind, self._left = struct.unpack(">BxxxL", header)
        data = self._exact(min(self._left, MAX_PIECE))
        if data is None:
            return None
        self._left -= len(data)
        return self._kind, data

    def _exact(self, n: int) -> bytes | None:
        parts: list[bytes] = []
        while n > 0:
            try:
                part = self.response.raw.read(n)
            except Exception:  # the socket shut by close(): the end
                return None
            if not part:
                return None
            parts.append(part)
            n -= len(part)
        return b"".join(parts)


async def follow_container(
    conn: DockerConnection, container_id: str, *, tail: int | None, limiter: trio.CapacityLimiter
) -> AsyncGenerator[LogChunk, None]:
    """See ``Runtime.follow``. Each read is a worker thread abandoned on cancellation; closing the iterator shuts
    the socket, which ends that thread's read."""

    def open_stream() -> Any:
        api = conn.api()
        url = api._url("/containers/{0}/logs", container_id)
        params = {"stdout": 1, "stderr": 1, "follow": 1, "timestamps": 0, "tail": "all" if tail is None else tail}
        response = api._get(url, params=params, stream=True)
        try:
            raw = api._get_raw_response_socket(response)  # raises for a status other than 2xx
        except docker.errors.NotFound:
            response.close()
            return None
        except BaseException:
            response.close()
            raise
        api._disable_socket_timeout(raw)  # a quiet container is not a dead daemon
        return response, getattr(raw, "_sock", raw)  # the socket itself (a SocketIO wraps it over a unix socket)

    with conn.mapped(f"cannot follow the logs of container {container_id[:12]}"):
        opened = await in_thread(open_stream, limiter=limiter, abandon=True)
    if opened is None:
        raise NotFoundError(f"container {container_id[:12]} no longer exists")
    response, sock = opened
    frames = _Frames(response)
    decoders = {kind: codecs.getincrementaldecoder("utf-8")(errors="replace") for kind in _STREAMS}
    try:
        while True:
            try:
                piece = await in_thread(frames.next, limiter=limiter, abandon=True)
            except Exception as exc:  # pragma: no cover - _Frames swallows read errors
                raise RuntimeFailureError(f"lost the logs of container {container_id[:12]}: {exc}") from exc
            if piece is None:
                return
            kind, data = piece
            text = decoders.get(kind, decoders[1]).decode(data)
            if text:
                yield LogChunk(_STREAMS.get(kind, "stdout"), text)
    finally:
        _shut(sock, response)


def _shut(sock: Any, response: Any) -> None:
    """Let go of the stream now, without blocking the trio thread: shutting the socket makes a thread still
    reading it return at once; closing the response waits for that read (it holds the reader's lock), so it is
    done in a thread of its own, which ends as soon as the read has."""
    with contextlib.suppress(Exception):
        sock.shutdown(socket.SHUT_RDWR)
    threading.Thread(target=_close, args=(response,), name="cmnode-logs-close", daemon=True).start()


def _close(response: Any) -> None:
    with contextlib.suppress(Exception):
        response.close()
