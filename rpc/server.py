"""The HTTP face of a node: Quart-Trio on hypercorn's trio worker.

``POST /jrpc`` carries JSON-RPC 2.0; ``GET /healthz`` and ``GET /metrics`` are for operators.
HTTP-level failures (oversized body, wrong method, missing token) still answer with a JSON-RPC error
object, so a client always gets something it can parse.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from node.errors import UnauthorizedError

from .protocol import Dispatcher

__all__ = ["Health", "Metrics", "create_app", "serve_rpc"]

log = logging.getLogger("cmnode.rpc")

JSON = "application/json"
Health = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Metrics = Callable[[], Awaitable[tuple[bytes, str]]]
"""Returns the exposition body and its content type (``node/metrics.py``: ``NodeMetrics.render``)."""


def _error_body(code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None}).encode()


def create_app(
    dispatcher: Dispatcher,
    *,
    max_body: int = 1024 * 1024,
    token: str | None = None,
    health: Health | None = None,
    metrics: Metrics | None = None,
) -> QuartTrio:
    """The ASGI app; every dependency comes in as an argument so tests can build it alone."""
    app = QuartTrio("cmnode")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    expected = f"Bearer {token}".encode() if token else None

    @app.post("/jrpc")
    async def jrpc() -> Response:
        if expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                err = UnauthorizedError("missing or wrong bearer token")
                return Response(_error_body(err.code, err.message), status=401, content_type=JSON)
        length = request.content_length
        if length is not None and length > max_body:
            return _too_large(max_body)
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
        answer = await dispatcher.handle(body)
        if answer is None:
            return Response(b"", status=204)
        return Response(answer, status=200, content_type=JSON)

    @app.get("/healthz")
    async def healthz() -> Response:
        if health is None:
            return Response(json.dumps({"ok": True}), status=200, content_type=JSON)
        ok, detail = await health()
        return Response(json.dumps({"ok": ok, **detail}), status=200 if ok else 503, content_type=JSON)

    @app.get("/metrics")
    async def metrics_view() -> Response:
        if metrics is None:
            return Response(b"", status=404)
        body, content_type = await metrics()
        return Response(body, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            return _too_large(max_body)
        message = f"{exc.name}: use POST /jrpc with a JSON-RPC 2.0 body" if code in (404, 405) else str(exc.name)
        return Response(_error_body(-32600, message), status=code, content_type=JSON)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in the HTTP layer")
        return Response(_error_body(-32603, "internal error"), status=500, content_type=JSON)

    return app


def _too_large(max_body: int) -> Response:
    message = f"request body too large: the limit is {max_body} bytes"
    return Response(_error_body(-32600, message), status=413, content_type=JSON)


def hypercorn_config(host: str, port: int, *, graceful_timeout: float) -> HyperConfig:
    config = HyperConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("cmnode.http")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = 75
    return config


async def serve_rpc(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    graceful_timeout: float = 3.0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; ``task_status`` gets the bound URL (port 0 resolved)."""

    async def started_with_url(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, hypercorn_config(host, port, graceful_timeout=graceful_timeout),  # type: ignore[arg-type]
                    shutdown_trigger=shutdown_trigger, task_status=task_status)  # fmt: skip

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started_with_url)
        task_status.started(binds[0])
