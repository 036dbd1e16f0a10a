"""The HTTP face of a node: Quart-Trio on hypercorn's trio worker, over HTTPS when given a certificate.

``POST /jrpc`` carries JSON-RPC 2.0; ``GET /healthz`` and ``GET /metrics`` are for operators; ``GET /ui/`` is the
dashboard (``rpc/ui``: public static files under a strict CSP; the page sends the token on its own requests).
HTTP-level failures (oversized body, wrong method, missing token) still answer with a JSON-RPC error
object, so a client always gets something it can parse.

With a token set, every route is guarded unless it is named in ``public`` when the app is built (only
``/healthz``, and ``/metrics`` if asked): a route added later is guarded without anyone remembering to. The
read token opens the same routes, but ``/jrpc`` then answers through the read-only dispatcher.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from node.errors import ConfigError, UnauthorizedError

from . import idle
from .protocol import Dispatcher
from .ui import PUBLIC_ENDPOINTS as UI_ENDPOINTS
from .ui import ui_blueprint

__all__ = ["Health", "Metrics", "check_tls", "create_app", "serve_rpc"]

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
    read_token: str | None = None,
    read_dispatcher: Dispatcher | None = None,
    metrics_public: bool = False,
    health: Health | None = None,
    metrics: Metrics | None = None,
) -> QuartTrio:
    """The ASGI app; every dependency comes in as an argument so tests can build it alone.

    ``token`` opens everything; ``read_token`` (only with ``token``) the same routes, with ``/jrpc`` answered
    by ``read_dispatcher``; without ``token`` nothing is guarded.
    """
    if read_token and not token:
        raise ConfigError("invalid rpc-read-token: it needs rpc-token (without one, every caller may write)")
    if read_token and read_dispatcher is None:
        raise ValueError("read_token needs read_dispatcher")
    app = QuartTrio("cmnode")
    app.config["MAX_CONTENT_LENGTH"] = max_body
    full = f"Bearer {token}".encode() if token else None
    read = f"Bearer {read_token}".encode() if read_token else None
    public = {"healthz", *UI_ENDPOINTS, *(["metrics_view"] if metrics_public else [])}  # /ui asks for the token itself
    app.register_blueprint(ui_blueprint())

    @app.before_request
    async def authenticate() -> Response | None:
        """Every route but the public ones needs a token; ``g.read_only`` says which one came."""
        g.read_only = False
        if full is None or request.endpoint in public:
            return None
        given = request.headers.get("Authorization", "").encode()
        is_full = hmac.compare_digest(given, full)
        is_read = read is not None and hmac.compare_digest(given, read)
        if not (is_full or is_read):
            err = UnauthorizedError("missing or wrong bearer token")
            return Response(_error_body(err.code, err.message), status=401, content_type=JSON,
                            headers={"WWW-Authenticate": 'Bearer realm="cmnode"'})  # fmt: skip
        g.read_only = not is_full
        return None

    @app.post("/jrpc")
    async def jrpc() -> Response:
        length = request.content_length
        if length is not None and length > max_body:
            return _too_large(max_body)
        body = await request.get_data(cache=False, as_text=False)
        assert isinstance(body, bytes)
        answer = await (read_dispatcher if g.read_only and read_dispatcher is not None else dispatcher).handle(body)
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


def check_tls(cert: str | None, key: str | None) -> None:
    """Refuse at start what hypercorn would only refuse later with a traceback: half a pair, or a pair that
    does not load.

    Raises:
        ConfigError: naming the setting.
    """
    if (cert is None) != (key is None):
        raise ConfigError("invalid tls-cert/tls-key: give both (the certificate and its private key) or neither")
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"invalid tls-cert/tls-key: no such file {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"invalid tls-cert/tls-key: cannot load {cert} with {key}: {exc}") from None


class _NoBanner(logging.Filter):
    """Drops hypercorn's "Running on URL" line: the node's one ready line says where RPC listens."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Running on ")


_HTTP_LOG = logging.getLogger("cmnode.http")
_HTTP_LOG.addFilter(_NoBanner())


def hypercorn_config(
    host: str, port: int, *, graceful_timeout: float, certfile: str | None = None, keyfile: str | None = None
) -> HyperConfig:
    config = HyperConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = _HTTP_LOG
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = 75
    config.certfile = certfile
    config.keyfile = keyfile
    return config


async def serve_rpc(
    app: QuartTrio,
    *,
    host: str,
    port: int,
    graceful_timeout: float = 3.0,
    certfile: str | None = None,
    keyfile: str | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; ``task_status`` gets the bound URL (port 0 resolved; https
    with a certificate)."""
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout, certfile=certfile, keyfile=keyfile)
    idle.install()  # idle kept-alive connections close at a stop rather than hold it (rpc/idle.py)

    async def started_with_url(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(started_with_url)
        task_status.started(binds[0])
