"""``GET /events``: the node's event stream (node/events.py) as Server-Sent Events.

Guarded like every route of ``create_app`` (the read token opens it too). Query parameters ``job_id``,
``node_id`` and ``type`` filter (each repeatable or comma-separated); ``Last-Event-ID`` (or the
``last_event_id`` parameter) resumes after that id. A comment every ``PING`` seconds keeps proxies from
closing an idle stream; the stream ends when the node stops.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from quart import Response, request
from quart_trio import QuartTrio

from node.events import EventFilter, EventHub

__all__ = ["add_events_route", "parse_last_id"]

SSE = "text/event-stream"
RETRY_MS = 2000
"""How long a browser's EventSource waits before it reconnects (with Last-Event-ID) after the stream ends."""

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "close"}
"""``Connection: close``: a stream ended by the node's stop leaves no kept-alive connection for the HTTP server's
drain to wait on (a kept-alive one held it for the whole graceful timeout); proxies must not buffer it."""


def parse_last_id(value: str | None) -> int | None:
    """The id to resume after; None when not given.

    Raises:
        ValueError: not a non-negative integer.
    """
    if value is None or not value.strip():
        return None
    number = int(value.strip())
    if number < 0:
        raise ValueError(value)
    return number


def _bad_request(message: str) -> Response:
    body = json.dumps({"jsonrpc": "2.0", "error": {"code": -32602, "message": message}, "id": None})
    return Response(body, status=400, content_type="application/json")


def add_events_route(app: QuartTrio, hub: EventHub) -> None:
    """Serve ``hub``'s stream at ``GET /events`` of ``app`` (built by ``rpc.server.create_app``)."""

    @app.get("/events")
    async def events() -> Response:
        args = request.args
        wanted = EventFilter.of(job_id=args.getlist("job_id"), node_id=args.getlist("node_id"),
                                type=args.getlist("type"))  # fmt: skip
        unknown = wanted.unknown_types()
        if unknown:
            return _bad_request(f"invalid type: {', '.join(unknown)} (known: job, execution, cancel, allocation, "
                                "node, progress)")  # fmt: skip
        given = request.headers.get("Last-Event-ID") or args.get("last_event_id")
        try:
            since = parse_last_id(given)
        except ValueError:
            return _bad_request(f"invalid Last-Event-ID {given!r}: expected the id of an event (an integer)")

        async def body() -> AsyncIterator[bytes]:
            start = hub.last_id if since is None else since
            # The opening block's id is where a reader that sees no event resumes (an id with no data sets the
            # reader's last event id without dispatching an event, per the format); the comment is for humans.
            yield f"retry: {RETRY_MS}\nid: {start}\n: cmnode events after {start}\n\n".encode()
            async for event in hub.stream(since, wanted):
                yield b": ping\n\n" if event is None else event.frame()

        response = Response(body(), status=200, content_type=SSE, headers=HEADERS)
        response.timeout = None  # a stream lasts as long as the node (Quart would cut it after 60 s)
        return response
