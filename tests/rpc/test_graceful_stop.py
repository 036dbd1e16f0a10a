"""A graceful stop of the HTTP server (rpc/server.py, rpc/idle.py) over real sockets: an idle kept-alive
connection is closed at once rather than held for the whole ``graceful_timeout``, and a request in flight still
gets its answer. The same for a real ``cmnode run`` process and SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
import trio
from quart import Response
from quart_trio import QuartTrio

from node.metrics import trio_tasks_by_name
from rpc.server import serve_rpc
from tests.support import NodeProcess

GRACE = 10.0
"""The graceful timeout in these tests: a stop that waits for it is unmistakable."""
PROMPT = 1.0
"""What a stop with nothing in flight may take."""

GET = b"GET /%s HTTP/1.1\r\nHost: test\r\n\r\n"


def app_with_slow_route(entered: trio.Event, release: trio.Event) -> QuartTrio:
    app = QuartTrio("test")

    @app.get("/fast")
    async def fast() -> Response:
        return Response(b"fast")

    @app.get("/slow")
    async def slow() -> Response:
        entered.set()
        await release.wait()
        return Response(b"slow")

    return app


async def read_response(sock: trio.socket.SocketType) -> bytes:
    """One whole response with a ``content-length`` body (enough for these routes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await sock.recv(4096)
        assert chunk, f"closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(body) < length:
        chunk = await sock.recv(4096)
        assert chunk, f"closed mid-body: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


async def serve(nursery: trio.Nursery, stop: trio.Event, entered: trio.Event, release: trio.Event) -> str:
    """The RPC server with the test routes, in ``nursery`` until ``stop``; its URL."""
    url: str = await nursery.start(
        lambda task_status: serve_rpc(app_with_slow_route(entered, release), host="127.0.0.1", port=0,
                                      graceful_timeout=GRACE, shutdown_trigger=stop.wait, task_status=task_status)
    )  # fmt: skip
    return url


async def connect(url: str) -> trio.socket.SocketType:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket()
    await sock.connect((host, int(port)))
    return sock


async def test_an_idle_kept_alive_connection_does_not_hold_the_stop() -> None:
    stop, entered, release = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, stop, entered, release)
        sock = await connect(url)
        for _ in range(2):  # a second request on the same connection: it was kept alive
            await sock.send(GET % b"fast")
            assert (await read_response(sock)).endswith(b"fast")
        begun = trio.current_time()
        stop.set()
        with trio.fail_after(PROMPT):
            assert await sock.recv(4096) == b""  # the server hung up
    assert trio.current_time() - begun < PROMPT  # and served no longer
    sock.close()


async def test_a_request_in_flight_is_answered_and_then_its_connection_closed() -> None:
    stop, entered, release = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, stop, entered, release)
        idle, busy = await connect(url), await connect(url)
        await idle.send(GET % b"fast")
        await read_response(idle)
        await busy.send(GET % b"slow")
        with trio.fail_after(10):
            await entered.wait()
        stop.set()
        with trio.fail_after(PROMPT):
            assert await idle.recv(4096) == b""  # the idle one goes at once, the busy one stays
        release.set()
        with trio.fail_after(PROMPT):
            assert (await read_response(busy)).endswith(b"slow")
            assert await busy.recv(4096) == b""  # and goes once answered
    idle.close()
    busy.close()


async def test_a_connection_the_client_hangs_up_is_let_go_at_once() -> None:
    """With its idle task alive, a kept-alive connection the client closes must not wait for the idle timeout
    (75 s) to release its task and socket."""
    stop, entered, release = trio.Event(), trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        url = await serve(nursery, stop, entered, release)
        before = trio_tasks_by_name()
        sock = await connect(url)
        await sock.send(GET % b"fast")
        await read_response(sock)
        with trio.fail_after(10):
            while trio_tasks_by_name()[IDLE] == before[IDLE]:  # the response is out and the connection kept, idle
                await trio.sleep(0.01)
        sock.close()
        with trio.fail_after(PROMPT):
            while trio_tasks_by_name()[CONNECTION] > before[CONNECTION]:
                await trio.sleep(0.01)
        stop.set()


CONNECTION = "trio._highlevel_serve_listeners._run_handler"
IDLE = "hypercorn.trio.tcp_server.TCPServer._idle_timeout"
"""The names of a connection's task and of its idle task."""


@pytest.mark.slow
def test_a_node_with_an_idle_kept_alive_client_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n", "--graceful-timeout", f"{GRACE:g}").start()
    try:
        host, port = node.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(GET % b"healthz")
            assert b"200" in sock.recv(4096).split(b"\r\n")[0]
            begun = time.monotonic()
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
            assert node.proc.wait(timeout=GRACE + 20) == 0
            took = time.monotonic() - begun
    finally:
        node.stop()
    assert took < 2 * PROMPT, f"the stop took {took:.2f} s with an idle client (graceful timeout {GRACE:g} s)"
