"""A request on a connection dockerd closed before answering is sent again (``RetryStale``), and nothing else is:
a fake dockerd on a unix socket of the test's own (no daemon) closes the first connection unanswered, or answers
half a response, and the SDK's client, with the node's shared pool, calls it. A logs read, which changes nothing,
is read again when its body ends early (``DockerConnection.logs``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from docker.api.client import APIClient

from node.docker_client import STALE_RETRIES, DockerConnection, share_one_pool

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nApi-Version: 1.41\r\n\r\n{}"
HALF = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{"


class FakeDockerd:
    """Serves one request per connection: the first ``unanswered`` connections are closed once the request is
    read, without a byte of answer; the rest get ``answer``."""

    def __init__(self, path: Path, unanswered: int, answer: bytes = OK) -> None:
        self.unanswered, self.answer, self.requests = unanswered, answer, 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests += 1
                if self.requests > self.unanswered:
                    conn.sendall(self.respond(data))

    def respond(self, request: bytes) -> bytes:
        return self.answer

    def close(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not)
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[tuple[Path, list[FakeDockerd]]]:
    path = tmp_path / "docker.sock"
    made: list[FakeDockerd] = []
    yield path, made
    for fake in made:
        fake.close()


def client(path: Path) -> APIClient:
    api = APIClient(base_url=f"unix://{path}", version="1.41", timeout=5)
    share_one_pool(api)
    return api


def test_a_request_closed_unanswered_is_sent_again(dockerd: tuple[Path, list[FakeDockerd]]) -> None:
    path, made = dockerd
    fake = FakeDockerd(path, unanswered=STALE_RETRIES)
    made.append(fake)
    api = client(path)
    assert api.create_container(image="x") == {}  # a POST too: a create sent twice meets its own name (409)
    assert fake.requests == STALE_RETRIES + 1


def test_it_is_sent_again_a_bounded_number_of_times(dockerd: tuple[Path, list[FakeDockerd]]) -> None:
    path, made = dockerd
    fake = FakeDockerd(path, unanswered=STALE_RETRIES + 1)
    made.append(fake)
    with pytest.raises(requests.exceptions.ConnectionError, match="without response"):
        client(path).containers()
    assert fake.requests == STALE_RETRIES + 1


def test_a_partial_answer_is_not_sent_again(dockerd: tuple[Path, list[FakeDockerd]]) -> None:
    """dockerd began answering: it read the request, and may have acted on it."""
    path, made = dockerd
    fake = FakeDockerd(path, unanswered=0, answer=HALF)
    made.append(fake)
    with pytest.raises(requests.exceptions.RequestException):
        client(path).containers()
    assert fake.requests == 1


def json_answer(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


FRAME = b"\x02\x00\x00\x00\x00\x00\x00\x06failed"
"""One frame of a container's stderr, as dockerd multiplexes a container's output without a TTY."""
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class EarlyEnd(FakeDockerd):
    """Answers the SDK's version and inspect calls; the first ``ended_early`` logs answers stop mid-body."""

    def __init__(self, path: Path, ended_early: int) -> None:
        super().__init__(path, unanswered=0)
        self.ended_early = ended_early
        self.logs = 0

    def respond(self, request: bytes) -> bytes:
        if b"/version " in request:
            return json_answer(b'{"ApiVersion": "1.41"}')
        if b"/logs?" not in request:
            return json_answer(b'{"Config": {"Tty": false}}')
        self.logs += 1
        if self.logs <= self.ended_early:
            return CHUNKED + b"e\r\n" + FRAME[:5]  # then the connection closes: "Response ended prematurely"
        return CHUNKED + b"e\r\n" + FRAME + b"\r\n0\r\n\r\n"


def connection(path: Path) -> DockerConnection:
    return DockerConnection(node_id="n", docker_timeout=5, max_threads=1, base_url=f"unix://{path}")


def test_a_logs_answer_that_ended_early_is_read_again(dockerd: tuple[Path, list[FakeDockerd]]) -> None:
    path, made = dockerd
    fake = EarlyEnd(path, ended_early=STALE_RETRIES)
    made.append(fake)
    assert connection(path).logs("c", stdout=False, stderr=True) == b"failed"
    assert fake.logs == STALE_RETRIES + 1


def test_a_logs_read_is_read_again_a_bounded_number_of_times(dockerd: tuple[Path, list[FakeDockerd]]) -> None:
    path, made = dockerd
    fake = EarlyEnd(path, ended_early=STALE_RETRIES + 1)
    made.append(fake)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        connection(path).logs("c", stdout=False, stderr=True)
    assert fake.logs == STALE_RETRIES + 1
