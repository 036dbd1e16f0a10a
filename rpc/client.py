"""A small, synchronous JSON-RPC client of a node, on the standard library's ``http.client``.

The CLI's client commands use it, and they must start fast: httpx alone takes longer to import than
the whole of ``cmnode status`` may take, so this stays on the stdlib. Errors a node reports come back as
the same ``node.errors`` classes it raised; what the client itself detects has its own classes::

    Exception
     ├── NodeError                 the node answered with a JSON-RPC error (node/errors.py)
     │    ├── <ERROR_CLASSES>      one class per application code, e.g. NotFoundError (-32001)
     │    └── RemoteError          any other code: -32600, -32601, -32700, -32603, or one newer than us
     └── ClientError               nothing usable came back
          ├── NodeUnreachableError no connection, or it dropped or timed out
          └── BadResponseError     the answer is not JSON-RPC (a wrong URL, or not a cmnode node)
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from node.errors import ERROR_CLASSES, NodeError, ValidationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "BadResponseError",
    "Client",
    "ClientError",
    "Event",
    "EventStream",
    "NodeUnreachableError",
    "RemoteError",
    "endpoint",
    "error_from",
]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for one answer; logs fetched from a peer may take the peer's 30 s request bound."""

_BY_CODE: dict[int, type[NodeError]] = {cls.code: cls for cls in ERROR_CLASSES}


class ClientError(Exception):
    """The client got no usable answer from the node."""


class NodeUnreachableError(ClientError):
    """No connection to the node, or the connection dropped or timed out before it answered."""


class BadResponseError(ClientError):
    """The node's answer is not a JSON-RPC response."""


class RemoteError(NodeError):
    """A JSON-RPC error whose code has no class of its own; ``code`` is set per instance."""

    def __init__(self, code: int, message: str, *, data: Any = None) -> None:
        super().__init__(message, data=data)
        self.code = code


def error_from(error: Any) -> NodeError:
    """The exception for a JSON-RPC ``error`` object: the class the node raised, found by its code."""
    if not isinstance(error, dict) or type(error.get("code")) is not int:
        return RemoteError(-32603, f"malformed error object: {error!r}")
    code, message, data = error["code"], str(error.get("message", "")), error.get("data")
    cls = _BY_CODE.get(code)
    if cls is None:
        return RemoteError(code, message, data=data)
    if cls is ValidationError:
        errors = data.get("errors") if isinstance(data, dict) else None
        return ValidationError(errors if isinstance(errors, list) else [], message)
    return cls(message, data=data)


def endpoint(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of a node URL; a bare ``host:port`` means http, an empty path ``/jrpc``.

    Raises:
        ValueError: the URL cannot name a node.
    """
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"invalid URL {url!r}: the scheme must be http or https")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid URL {url!r}: bad port") from None
    if not parts.hostname:
        raise ValueError(f"invalid URL {url!r}: no host")
    path = parts.path.rstrip("/") or "/jrpc"
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


class Client:
    """Calls methods of one node over one kept-alive connection. Use it as a context manager.

    Raises (from ``call``):
        NodeError: the node answered with an error (the class it raised, or ``RemoteError``).
        NodeUnreachableError: no answer.
        BadResponseError: an answer that is not JSON-RPC.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        cacert: str | None = None,
    ) -> None:
        """``cacert``: a PEM file of the certificates to trust for an https URL (a self-signed node's own
        certificate, or its CA), instead of the system's."""
        self.url = url
        self._cacert = cacert
        self._scheme, self._host, self._port, self._path = endpoint(url)
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``method`` with one params object (sent by name) and return its ``result``."""
        self._next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}, "id": self._next_id})
        status, raw = self._post(body.encode())
        try:
            answer = json.loads(raw)
        except ValueError:
            raise BadResponseError(f"{self.url} answered HTTP {status} with a body that is not JSON") from None
        if not isinstance(answer, dict) or answer.get("jsonrpc") != "2.0":
            raise BadResponseError(f"{self.url} answered HTTP {status} with something other than JSON-RPC 2.0")
        if "error" in answer:
            raise error_from(answer["error"])
        if "result" not in answer:
            raise BadResponseError(f"{self.url} answered with neither a result nor an error")
        return answer["result"]

    def _post(self, body: bytes) -> tuple[int, bytes]:
        """POST once; a kept-alive connection the server has since closed is reopened once."""
        for attempt in (1, 2):
            fresh = self._conn is None
            conn = self._connection()
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                response = conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if fresh or attempt == 2:
                    raise NodeUnreachableError(f"cannot reach a node at {self.url}: {_reason(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise NodeUnreachableError(f"cannot reach a node at {self.url}: {_reason(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self._open(self._timeout)
        return self._conn

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self._scheme == "https":
            import ssl  # only when needed: it costs startup time

            try:
                context = ssl.create_default_context(cafile=self._cacert)
            except (OSError, ssl.SSLError) as exc:  # FileNotFoundError included
                message = f"cannot reach a node at {self.url}: bad CA file {self._cacert}: {_reason(exc)}"
                raise NodeUnreachableError(message) from None
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def events(
        self,
        *,
        job_ids: Iterable[str] = (),
        node_ids: Iterable[str] = (),
        types: Iterable[str] = (),
        last_event_id: int | None = None,
    ) -> EventStream:
        """Open the node's event stream (``GET /events``, on a connection of its own), filtered as given, from
        after ``last_event_id`` (None: from now). The node has taken the subscription when this returns.

        Raises:
            NodeError: the node refused it (a wrong token, an unknown type). NodeUnreachableError: no answer.
        """
        query = [("job_id", j) for j in job_ids] + [("node_id", n) for n in node_ids] + [("type", t) for t in types]
        if last_event_id is not None:
            query.append(("last_event_id", str(last_event_id)))
        return self._stream("events", query)

    def follow_logs(self, job_id: str, *, node_id: str | None = None, tail: int | None = None) -> EventStream:
        """Open a job's output on a node (default: the one called) as it is written (``GET /logs``): events
        ``stdout``/``stderr`` ({"text"}), then ``end`` ({"state", "exit_code", "attempt"}) when the execution
        ends, or ``cut`` ({"reason"}) when the node ended the follow early.

        Raises:
            NodeError: the node refused it (NotFoundError: no such job or execution). NodeUnreachableError.
        """
        query = [("job_id", job_id)]
        if node_id is not None:
            query.append(("node_id", node_id))
        if tail is not None:
            query.append(("tail", str(tail)))
        return self._stream("logs", query)

    def _stream(self, route: str, query: list[tuple[str, str]]) -> EventStream:
        """GET a Server-Sent Events route of the node, on a connection of its own."""
        base = self._path[: -len("/jrpc")] if self._path.endswith("/jrpc") else self._path.rstrip("/")
        path = f"{base}/{route}" + (f"?{urlencode(query)}" if query else "")
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"} | {"Accept": "text/event-stream"}
        conn = self._open(EVENTS_TIMEOUT)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                raw = response.read()
                try:
                    answer = json.loads(raw)
                except ValueError:
                    raise BadResponseError(f"{self.url} answered GET /{route} with HTTP {response.status}") from None
                error = answer.get("error") if isinstance(answer, dict) else None
                if error is None:
                    raise BadResponseError(f"{self.url} answered GET /{route} with HTTP {response.status}")
                raise error_from(error)
            stream = EventStream(conn, response, self.url)
            stream.opening()  # the node sends a first block: past it, nothing after now is missed
            return stream
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NodeUnreachableError(f"cannot reach a node at {self.url}: {_reason(exc)}") from None
        except BaseException:
            conn.close()
            raise


EVENTS_TIMEOUT = 60.0
"""Seconds an event stream may stay silent: the node sends a comment every 15 s."""


@dataclass(frozen=True)
class Event:
    """One event of a node's stream (``GET /events``): ``type`` as the node names it, ``data`` its object."""

    id: int | None
    type: str
    data: Any


class EventStream:
    """An open event stream: iterate for its events; it ends when the node ends it (it stops). Close it (or use
    it as a context manager) when done.

    Raises (while iterating):
        NodeUnreachableError: the connection dropped or stayed silent for ``EVENTS_TIMEOUT``.
    """

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, url: str) -> None:
        self._conn = conn
        self._response = response
        self._url = url
        self.last_id: int | None = None
        """The id of the last event read: where to resume (``Client.events(last_event_id=...)``)."""

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _line(self) -> str | None:
        try:
            raw = self._response.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise NodeUnreachableError(f"lost the event stream of {self._url}: {_reason(exc)}") from None
        return raw.decode("utf-8", "replace").rstrip("\r\n") if raw else None

    def opening(self) -> None:
        """Read the node's first block: the subscription is in place, and its id is where to resume."""
        for _ in self._events(until_first_block=True):
            pass

    def __iter__(self) -> Iterator[Event]:
        return self._events(until_first_block=False)

    def _events(self, *, until_first_block: bool) -> Iterator[Event]:
        fields: dict[str, str] = {}
        while (line := self._line()) is not None:
            if line == "":
                # An id with no data (the node's opening block) still moves the resume point, as the format says.
                event_id = int(fields["id"]) if fields.get("id", "").isdigit() else None
                if event_id is not None:
                    self.last_id = event_id
                if "data" in fields:
                    try:
                        data = json.loads(fields["data"])
                    except ValueError:
                        raise BadResponseError(f"{self._url} sent an event that is not JSON") from None
                    yield Event(event_id, fields.get("event", "message"), data)
                if until_first_block:
                    return
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the connection was closed without an answer"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() and exc.strerror[1:2].islower() else exc.strerror
    return str(exc) or type(exc).__name__
