"""Failures of the client commands: one line on stderr, no traceback, and an exit code per kind."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import errors
from node.client_cli import Exit, _guarded
from rpc.client import Client, RemoteError, error_from
from rpc.protocol import _error
from tests.support import NodeProcess

from .conftest import cmnode, one_line


def test_exit_codes_are_distinct() -> None:
    codes = [member.value for member in Exit]
    assert len(codes) == len(set(codes))


@pytest.mark.slow  # each case runs the executable
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("status",), "requires an argument"),
        (("status", "some-job", "--bogus"), "--bogus"),
        (("jobs", "--limit", "many"), "--limit"),
        (("create", "busybox", "-e", "NOEQUALS"), "--env 'NOEQUALS': expected KEY=VALUE"),
        (("create", "busybox", "--label", "=v"), "--label '=v': expected KEY=VALUE"),
        (("frobnicate",), "frobnicate"),
        (("info", "--url", "ftp://127.0.0.1:1"), "the scheme must be http or https"),
        (("info", "--url", "http://127.0.0.1:port"), "bad port"),
    ],
)
def test_bad_flags_are_exit_2(args: tuple[str, ...], needle: str) -> None:
    out = cmnode(*args, url="http://127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    assert needle in one_line(out.stderr)
    assert out.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("command", [("info",), ("status", "x"), ("jobs",), ("peers",), ("create", "busybox")])
def test_unreachable_node_is_exit_3(command: tuple[str, ...]) -> None:
    out = cmnode(*command, url="http://127.0.0.1:1")  # nothing listens on port 1
    assert out.returncode == 3
    assert one_line(out.stderr) == "cmnode: cannot reach a node at http://127.0.0.1:1: connection refused"


@pytest.fixture
def not_a_node() -> Iterator[str]:
    """A plain web server on loopback that answers every POST with an HTML page."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.slow
def test_a_server_that_is_not_a_node_is_exit_9(not_a_node: str) -> None:
    out = cmnode("info", url=not_a_node)
    assert out.returncode == 9
    assert "not JSON" in one_line(out.stderr)


@pytest.fixture
def token_node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "node", "--rpc-token", "s3cret")  # no job runs: no Docker needed
    yield proc.start()
    proc.stop()


@pytest.mark.slow
def test_token(token_node: NodeProcess) -> None:
    url = token_node.url
    missing = cmnode("info", url=url)
    assert missing.returncode == 6
    assert one_line(missing.stderr) == "cmnode: missing or wrong bearer token"
    assert cmnode("info", "--token", "wrong", url=url).returncode == 6
    flag = cmnode("info", "--json", "--token", "s3cret", url=url)
    assert flag.returncode == 0 and json.loads(flag.stdout)["node_id"] == token_node.node_id
    env = cmnode("peers", "--json", url=url, env={"CMNODE_TOKEN": "s3cret"})
    assert env.returncode == 0 and json.loads(env.stdout) == {"peers": []}


def _raiser(exc: Exception) -> object:
    # A fake command: these errors cannot be provoked on demand from a real node (a Docker failure
    # mid-call, an internal error), so this injects the error the client would raise.
    def command() -> int:
        raise exc

    return _guarded(command)


@pytest.mark.slow
def test_a_full_queue_is_exit_7(tmp_path: Path) -> None:
    """With the Docker daemon away, accepted jobs wait in the queue, so a queue of one fills up for real."""
    proc = NodeProcess(tmp_path / "node", "--queue-size", "1", "--worker-count", "1",
                       "--docker-host", "unix:///nonexistent.sock").start()  # fmt: skip
    try:
        codes = []
        for _ in range(4):  # one job may sit with the (waiting) worker, one in the queue; the next is refused
            out = cmnode("create", "busybox:latest", url=proc.url)
            codes.append(out.returncode)
            if out.returncode:
                break
        assert codes in ([0, 7], [0, 0, 7]), codes
        assert one_line(out.stderr) == "cmnode: job queue is full"
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.RuntimeFailureError("docker down"), Exit.NODE_ERROR),
        (errors.PeerUnreachableError("peer gone"), Exit.NODE_ERROR),
        (RemoteError(-32603, "internal error"), Exit.NODE_ERROR),
    ],
)
def test_other_node_errors_map_to_their_exit_code(
    exc: Exception, code: Exit, capsys: pytest.CaptureFixture[str]
) -> None:
    command = _raiser(exc)
    assert callable(command)
    assert command() == code
    assert capsys.readouterr().err == f"cmnode: {exc}\n"


def _all_subclasses(cls: type[errors.NodeError]) -> set[type[errors.NodeError]]:
    out: set[type[errors.NodeError]] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_every_node_error_has_a_distinct_code_and_round_trips() -> None:
    node_classes = {c for c in _all_subclasses(errors.NodeError) if c.__module__ == "node.errors"}
    assert node_classes == set(errors.ERROR_CLASSES)
    codes = [cls.code for cls in errors.ERROR_CLASSES]
    assert len(codes) == len(set(codes))
    for cls in errors.ERROR_CLASSES:
        assert -32099 <= cls.code <= -32000 or cls is errors.ValidationError
        sent: errors.NodeError
        if cls is errors.ValidationError:
            sent = errors.ValidationError([{"field": "image", "message": "is required"}])
        else:
            sent = cls(f"a {cls.__name__}", data={"job_id": "j1"})
        wire = json.loads(_error(sent.code, sent.message, 7, sent.data))  # the server's encoding
        got = error_from(wire["error"])
        assert type(got) is cls
        assert (got.code, got.message, got.data) == (sent.code, sent.message, sent.data)
    unknown = error_from({"code": -32601, "message": "method not found: X"})
    assert isinstance(unknown, RemoteError) and unknown.code == -32601


@pytest.mark.slow
def test_client_raises_the_class_the_node_raised(token_node: NodeProcess) -> None:
    with Client(token_node.url, token="s3cret") as client:
        assert client.call("NodeService.Peers") == {"peers": []}
        with pytest.raises(errors.NotFoundError, match="job gone not found") as caught:
            client.call("ContainerService.Status", {"job_id": "gone"})
        assert caught.value.data == {"job_id": "gone"}
        with pytest.raises(errors.ValidationError) as invalid:
            client.call("ContainerService.Create", {"image": "x", "bogus": 1})
        assert invalid.value.errors == [{"field": "bogus", "message": "unknown field"}]
        with pytest.raises(RemoteError) as missing:
            client.call("NoSuch.Method")
        assert missing.value.code == -32601
        assert client.call("NodeService.Info")["node_id"] == token_node.node_id  # the connection still serves
    with Client(token_node.url) as anonymous, pytest.raises(errors.UnauthorizedError):
        anonymous.call("NodeService.Info")
