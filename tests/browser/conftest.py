"""A real browser for the dashboard tests: Playwright driving Debian's chromium (no browser download is reachable
here, so Playwright's own builds are never used). Missing either one skips these tests on a developer's machine
and fails them in CI (``tests/support.py``'s ``missing``), like the Docker gate.

Each test gets a fresh browser context (its own sessionStorage, so its own token prompt), and fails if the page
threw or the Content-Security-Policy refused anything. Screenshots go to ``CMNODE_SCREENSHOTS`` when set (the
README's are made with ``CMNODE_SCREENSHOTS=docs/screenshots``), else to the test's temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import NodeProcess, missing, remove_containers

if TYPE_CHECKING:
    from docker.client import DockerClient
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    """The browser's executable: ``CMNODE_CHROMIUM``, else Debian's chromium (``apt-get install chromium``);
    none is ``missing`` (a skip here, a failure in CI)."""
    given = os.environ.get("CMNODE_CHROMIUM")
    found = given or next((p for p in CHROMIUM if os.access(p, os.X_OK)), None) or shutil.which("chromium")
    if not found or not os.access(found, os.X_OK):
        missing("chromium", f"no chromium executable at {found or 'any of ' + ', '.join(CHROMIUM)} "
                "(scripts/setup --test installs Debian's)")  # fmt: skip
    return found


@pytest.fixture(scope="session")
def chromium() -> str:
    return chromium_path()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        missing("Playwright", "the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except Error as exc:
            missing("chromium", f"it does not start: {exc.message.splitlines()[0]}")
        yield launched
        launched.close()


class PageFaults:
    """What went wrong in the page: uncaught exceptions and Content-Security-Policy refusals."""

    def __init__(self) -> None:
        self.faults: list[str] = []

    def on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.faults.append(f"console: {message.text}")

    def on_error(self, error: Any) -> None:
        self.faults.append(f"page error: {error}")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    faults = PageFaults()
    opened.on("console", faults.on_console)
    opened.on("pageerror", faults.on_error)
    yield opened
    context.close()
    assert faults.faults == []


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where the tests put their screenshots."""
    folder = Path(os.environ.get("CMNODE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def start_node(tmp_path: Path, docker_client: DockerClient | None) -> Iterator[Any]:
    """Starts ``cmnode run`` processes (``start_node(name, *flags)``); all are stopped afterwards, and the
    containers they made removed."""
    started: list[NodeProcess] = []

    def start(name: str, *flags: str) -> NodeProcess:
        node = NodeProcess(tmp_path / name, "--node-name", name, *flags)
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.stop()
    remove_containers(docker_client, *(node.node_id for node in started if node.node_id))


def call(node: NodeProcess, method: str, params: dict[str, Any] | None = None, token: str | None = None) -> Any:
    """A JSON-RPC call to ``node``; an error answer fails the test."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"jsonrpc": "2.0", "method": method, "params": params or {}, "id": 1}
    answer = httpx.post(node.rpc_url, json=body, headers=headers, timeout=30).json()
    assert "error" not in answer, answer
    return answer["result"]


class Relay:
    """A TCP relay in front of a node (threads; loopback): ``cut()`` closes every connection through it, as a
    network drop would, and keeps accepting new ones. ``url`` is the node's URL through the relay."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the node is gone (the test ends)
                client.close()
                continue
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Close every connection now; returns how many there were."""
        with self.lock:
            cut, self.open = self.open, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        return len(cut) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def relay() -> Iterator[Any]:
    """``relay(node)``: a ``Relay`` in front of ``node``'s RPC port, closed after the test."""
    made: list[Relay] = []

    def make(node: NodeProcess) -> Relay:
        made.append(Relay(int(node.url.rsplit(":", 1)[1])))
        return made[-1]

    yield make
    for one in made:
        one.close()
