"""The dashboard's files and their headers, without a browser: what a strict CSP needs of the page (no inline
script, style or handler), that every file it names is served, that the guard leaves ``/ui`` open and ``/jrpc``
shut, and that the vendored library is the one its manifest records."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import pytest
from quart_trio import QuartTrio

from rpc.protocol import Dispatcher
from rpc.server import create_app
from rpc.ui import CSP, load_files
from tests.support import REQUIRE

UI = resources.files("rpc.ui")


def app(token: str | None = None) -> QuartTrio:
    return create_app(Dispatcher([]), token=token)


class _Page(HTMLParser):
    """What index.html asks for and anything a strict CSP would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if not names.get("src"):
                self.inline.append("<script> without src")
            self.refs.append(str(names.get("src")))
        if tag == "link" and names.get("rel") == "stylesheet":
            self.refs.append(str(names.get("href")))


def test_the_page_has_no_inline_code_and_every_file_it_names_is_served() -> None:
    page = _Page()
    page.feed((UI / "index.html").read_text())
    files = load_files()
    assert page.inline == []
    assert page.refs and all(ref in files for ref in page.refs), (page.refs, sorted(files))


def test_no_python_is_served() -> None:
    assert sorted(load_files()) == sorted(
        ["index.html", "wire.js", "text.js", "app.js", "style.css", "vendor/MANIFEST.json", *_vendored()]
    )


def _vendored() -> list[str]:
    manifest: dict[str, Any] = json.loads((UI / "vendor" / "MANIFEST.json").read_text())
    return [f"vendor/{name}" for name in manifest]


def test_the_vendored_library_is_the_one_its_manifest_records() -> None:
    manifest: dict[str, Any] = json.loads((UI / "vendor" / "MANIFEST.json").read_text())
    assert manifest, "scripts/vendor-ui writes one entry per file"
    for name, entry in manifest.items():
        body = (UI / "vendor" / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], name
        assert entry["licence"] and entry["version"] and entry["package"]
        assert f'src="vendor/{name}"' in (UI / "index.html").read_text()


async def test_the_pages_are_public_under_a_strict_csp_and_jrpc_keeps_its_token() -> None:
    client = app(token="s3cret").test_client()
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert page.content_type.startswith("text/html")
    assert b"<title>cmnode</title>" in await page.get_data()
    csp = page.headers["Content-Security-Policy"]
    assert csp == CSP
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    script = await client.get("/ui/app.js")
    assert script.status_code == 200 and script.content_type.startswith("text/javascript")
    assert script.headers["Content-Security-Policy"] == CSP
    refused = await client.post("/jrpc", json={"jsonrpc": "2.0", "method": "NodeService.Info", "id": 1})
    assert refused.status_code == 401


async def test_ui_redirects_to_the_page_unknown_paths_are_404_and_etags_revalidate() -> None:
    client = app().test_client()
    bare = await client.get("/ui")
    assert bare.status_code in (301, 308) and bare.headers["Location"].endswith("/ui/")
    for path in ("/ui/nope.js", "/ui/__init__.py", "/ui/../server.py", "/ui/vendor/"):
        answer = await client.get(path)
        assert answer.status_code == 404, path
    first = await client.get("/ui/style.css")
    again = await client.get("/ui/style.css", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert await again.get_data() == b""


def test_a_missing_browser_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import chromium_path

    monkeypatch.setenv("CMNODE_CHROMIUM", "/nonexistent/chromium")
    for name in REQUIRE:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium unavailable"):
        chromium_path()
    monkeypatch.setenv(REQUIRE[0], "1")
    with pytest.raises(pytest.fail.Exception, match="chromium unavailable"):
        chromium_path()
