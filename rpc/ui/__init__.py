"""The dashboard every node serves at ``/ui``: the static files beside this module, read once when the app is built.

The files are public (they hold no data; the page asks for the token and sends it on ``/jrpc`` and ``/events``
itself), so the routes are named in ``PUBLIC_ENDPOINTS`` for ``rpc/server.py``'s guard. Every answer carries a
strict Content-Security-Policy: scripts, styles and connections only from this node, no inline code, no eval
(which is why the vendored Alpine.js is its CSP build, ``scripts/vendor-ui``), no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from quart import Blueprint, Response, request

__all__ = ["CSP", "PUBLIC_ENDPOINTS", "SECURITY_HEADERS", "UiFile", "load_files", "ui_blueprint"]

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
PUBLIC_ENDPOINTS = frozenset({"ui.root", "ui.index", "ui.asset"})

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class UiFile:
    body: bytes
    content_type: str
    etag: str


def load_files(root: Traversable | None = None) -> dict[str, UiFile]:
    """Every servable file under ``root`` (this package by default) by its path relative to it; only the kinds
    in ``_TYPES``, so the Python beside them is never served."""
    files: dict[str, UiFile] = {}
    stack: list[tuple[str, Traversable]] = [("", root or resources.files(__name__))]
    while stack:
        prefix, folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                if not entry.name.startswith(("_", ".")):
                    stack.append((f"{prefix}{entry.name}/", entry))
                continue
            suffix = "." + entry.name.rpartition(".")[2]
            if suffix in _TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                files[prefix + entry.name] = UiFile(body, _TYPES[suffix], etag)
    return files


def ui_blueprint(files: dict[str, UiFile] | None = None) -> Blueprint:
    """``/ui`` (redirected to ``/ui/``), ``/ui/`` (the page) and ``/ui/<path>`` (its files); anything else there
    is a plain 404."""
    table = load_files() if files is None else files
    ui = Blueprint("ui", __name__)

    def answer(name: str) -> Response:
        file = table.get(name)
        if file is None:
            return Response("not found\n", status=404, content_type="text/plain; charset=utf-8",
                            headers=SECURITY_HEADERS)  # fmt: skip
        headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache"}
        if file.etag in request.headers.get("If-None-Match", ""):
            return Response(b"", status=304, headers=headers)
        return Response(file.body, status=200, content_type=file.content_type, headers=headers)

    @ui.get("/ui")
    async def root() -> Response:
        return Response(b"", status=308, headers={**SECURITY_HEADERS, "Location": "/ui/"})

    @ui.get("/ui/")
    async def index() -> Response:
        return answer("index.html")

    @ui.get("/ui/<path:name>")
    async def asset(name: str) -> Response:
        return answer(name)

    return ui
