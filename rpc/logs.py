"""``GET /logs``: a job's output on a node as Server-Sent Events, followed as it is written (``cmnode logs
--follow``, the dashboard's job page).

Guarded like every route of ``create_app`` (the read token opens it too). Parameters: ``job_id`` (or a unique
prefix), ``node_id`` (an ID, a prefix or a name; default: this node), ``tail`` (start from the last N lines),
``follow`` (default 1; 0: what there is now, then the stream ends). Events::

    event: stdout | stderr    data: {"text": "..."}                         as written, in order
    event: end                data: {"state", "exit_code", "attempt"}       the execution ended: done
    event: cut                data: {"reason": "..."}                       ended early: a slow reader, the
                                                                            node stopping, a peer gone...

A refusal before the stream starts (no such job, no execution there, too many follows, the node unreachable)
is a JSON-RPC error object with an HTTP status, as ``/jrpc``'s HTTP-level errors are. A comment every ``PING``
seconds keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from quart import Response, request
from quart_trio import QuartTrio

from node.errors import NodeError, NotFoundError, PeerUnreachableError, QueueFullError, ValidationError
from node.logfollow import Follow, FollowItem, LogCut, LogEnd, item_to_json

from .events import HEADERS, SSE

__all__ = ["PING", "LogsSource", "add_logs_route", "frame"]

PING = 15.0

_STATUS: tuple[tuple[type[NodeError], int], ...] = (
    (NotFoundError, 404),
    (ValidationError, 400),
    (QueueFullError, 503),
    (PeerUnreachableError, 502),
)


class LogsSource(Protocol):
    """What the route reads (``node.core.Node``)."""

    async def follow_logs(self, job_id: str, node_id: str | None, tail: int | None) -> Follow: ...

    async def logs(self, job_id: str, node_id: str | None, tail: int | None) -> dict[str, Any]: ...


def frame(item: FollowItem) -> bytes:
    """One item as an SSE event."""
    if isinstance(item, LogEnd):
        kind, data = "end", item_to_json(item)["end"]
    elif isinstance(item, LogCut):
        kind, data = "cut", {"reason": item.reason}
    else:
        kind, data = item.stream, {"text": item.text}
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _error(exc: NodeError) -> Response:
    status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.data is not None:
        error["data"] = exc.data
    body = json.dumps({"jsonrpc": "2.0", "error": error, "id": None})
    return Response(body, status=status, content_type="application/json")


def _invalid(field: str, message: str) -> Response:
    return _error(ValidationError([{"field": field, "message": message}], f"invalid {field}: {message}"))


def add_logs_route(app: QuartTrio, node: LogsSource, *, ping: float = PING) -> None:
    """Serve ``node``'s output at ``GET /logs`` of ``app`` (built by ``rpc.server.create_app``)."""

    @app.get("/logs")
    async def logs_view() -> Response:
        args = request.args
        job_id, node_id, given = args.get("job_id", ""), args.get("node_id") or None, args.get("tail")
        if not job_id:
            return _invalid("job_id", "required")
        tail: int | None = None
        if given not in (None, ""):
            if not given.isdigit():
                return _invalid("tail", f"{given!r} is not a non-negative integer")
            tail = int(given)
        follow = args.get("follow", "1").lower() not in ("0", "false", "no")
        try:
            if follow:
                source = _follow(await node.follow_logs(job_id, node_id, tail), ping)
            else:
                source = _snapshot(await node.logs(job_id, node_id, tail))
        except NodeError as exc:
            return _error(exc)

        async def body() -> AsyncIterator[bytes]:
            yield b": cmnode logs\n\n"
            async for chunk in source:
                yield chunk

        response = Response(body(), status=200, content_type=SSE, headers=HEADERS)
        response.timeout = None  # a follow lasts as long as the execution (Quart would cut it after 60 s)
        return response


async def _follow(handle: Follow, ping: float) -> AsyncIterator[bytes]:
    try:
        async for item in handle.items(ping):
            yield b": ping\n\n" if item is None else frame(item)
    finally:
        handle.close()


async def _snapshot(result: dict[str, Any]) -> AsyncIterator[bytes]:
    for stream in ("stdout", "stderr"):
        text = result.get(stream) or ""
        if text:
            yield f"event: {stream}\ndata: {json.dumps({'text': text}, separators=(',', ':'))}\n\n".encode()
    end = {"state": result.get("state"), "exit_code": None, "attempt": result.get("attempt"), "snapshot": True}
    yield f"event: end\ndata: {json.dumps(end, separators=(',', ':'))}\n\n".encode()
