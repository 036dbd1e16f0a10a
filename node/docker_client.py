"""The connection to dockerd that the container operations and the exit watcher share.

The Docker SDK is blocking, so every call crosses into a worker thread here (``run``), bounded by one
``CapacityLimiter`` and inside ``map_docker_errors``. Construction does not contact the daemon (a node starts
while dockerd is down); the client is built on first use, in a worker thread, with the API version negotiated
then. Also here: reading our labels and inspect data back, which both users need.

One pool of connections, not one per URL: the SDK's adapter for a unix socket (``UnixHTTPAdapter`` in
docker/transport/unixconn.py) looks its urllib3 pool up by the whole request URL, path and query included, so
every container's ``/containers/<id>/json``, ``/start``, ``/logs?...`` and ``DELETE`` gets a pool of its own,
each keeping the socket it used open. Up to 25 such pools live at once (an LRU; ``num_pools`` cannot lower that
for a unix socket: the SDK only reads it for ssh), so a busy node sat on 26-45 idle sockets to dockerd. Over one
socket every URL reaches the same daemon, so ``SharedPoolAdapter`` looks every request up under the socket's
path: one pool, whose idle sockets are bounded by ``pool_size`` and in practice by the most calls in flight at
once. It replaces the SDK's adapter on the client's session right after the client is built; a daemon reached
over TCP keeps requests' own adapter, which already pools by host. Each request still sets its own timeouts on
the socket it borrows, so sharing sockets changes no timeout. The pool does not block: a call finding every
socket in use opens another, and the surplus is closed when returned.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from http.client import RemoteDisconnected
from typing import Any, TypeVar

import docker.errors
import docker.utils
import requests.exceptions
import trio

# Not `docker.DockerClient`: mypy would resolve `docker` to the repository's docker/ folder.
from docker.client import DockerClient
from docker.transport.unixconn import UnixHTTPAdapter
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry

from .docker_errors import describe, map_docker_errors
from .errors import RuntimeFailureError
from .runtime import LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED, LABEL_NODE, ContainerInfo

_T = TypeVar("_T")
_NEVER_STARTED = "0001-01-01T00:00:00Z"
_UNBOUNDED_CALLS = 4
"""Connections used outside ``max_threads``: the exit watcher's event stream and its inspects (no limiter)."""


async def in_thread(fn: Callable[[], _T], *, limiter: trio.CapacityLimiter | None, abandon: bool) -> _T:
    """The single place a blocking call crosses into a worker thread."""
    return await trio.to_thread.run_sync(fn, limiter=limiter, abandon_on_cancel=abandon)


class DockerConnection:
    """One lazily built SDK client for one daemon, and the bounded thread boundary in front of it."""

    def __init__(
        self,
        *,
        node_id: str,
        docker_timeout: float,
        max_threads: int,
        base_url: str | None,
        followers: int = 0,
    ) -> None:
        """``followers``: the most log streams open at once; each holds a connection while it lasts."""
        self.node_id = node_id
        self.timeout = docker_timeout
        self._limiter = trio.CapacityLimiter(max_threads)
        self.pool_size = max_threads + followers + _UNBOUNDED_CALLS
        """The most idle connections to dockerd kept open (see the module docstring)."""
        self._kwargs: dict[str, Any] = docker.utils.kwargs_from_env()
        if base_url is not None:
            self._kwargs["base_url"] = base_url
        self.where = str(self._kwargs.get("base_url") or "unix:///var/run/docker.sock")
        self._lock = threading.Lock()
        self._client: Any = None
        self._closed = False

    def api(self) -> Any:
        """The low-level APIClient, built once (call it in a worker thread: version negotiation is a request)."""
        with self._lock:
            if self._closed:
                raise RuntimeFailureError("the Docker runtime is closed")
            if self._client is None:
                client = DockerClient(
                    version="auto", timeout=self.timeout, max_pool_size=self.pool_size, **self._kwargs
                )
                share_one_pool(client.api)
                self._client = client
            return self._client.api

    def describe(self, exc: BaseException) -> str:
        return describe(exc, where=self.where, timeout=self.timeout)

    def mapped(self, what: str | None) -> contextlib.AbstractContextManager[None]:
        return map_docker_errors(what, where=self.where, timeout=self.timeout)

    async def run(self, what: str | None, fn: Callable[[], _T], *, abandon: bool = True) -> _T:
        """Run a blocking SDK call in a bounded worker thread, errors mapped (``what`` prefixes the reason).

        Read-only calls are abandoned on cancellation so shutdown never waits on the daemon; calls that
        change state (``abandon=False``) run to completion, bounded by the client timeout.
        """
        with self.mapped(what):
            return await in_thread(fn, limiter=self._limiter, abandon=abandon)

    def logs(self, container_id: str, **kwargs: Any) -> bytes:
        """A container's logs, whole (thread side): an answer whose body ended early ("Response ended
        prematurely": dockerd closed the connection mid-body, seen once in 20 runs of
        tests/node/test_docker_pool.py) is read again, at most STALE_RETRIES times. A logs read changes nothing,
        so reading it again is always safe, which ``RetryStale`` cannot assume of a request dockerd began
        answering."""
        for _ in range(STALE_RETRIES):
            try:
                return bytes(self.api().logs(container_id, **kwargs))
            except requests.exceptions.ChunkedEncodingError:
                continue
        return bytes(self.api().logs(container_id, **kwargs))

    def list_attrs(self, statuses: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Inspect data of our containers (thread side): the list summary has no exit code or timestamps, so
        one inspect each, skipping any removed meanwhile."""
        filters: dict[str, Any] = {"label": [f"{LABEL_NODE}={self.node_id}", f"{LABEL_MANAGED}=1"]}
        if statuses:
            filters["status"] = list(statuses)
        api = self.api()
        out = []
        for summary in api.containers(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                out.append(api.inspect_container(str(summary["Id"])))
        return out

    def close(self) -> None:
        """Release the client's connections; later calls raise RuntimeFailureError."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


STALE_RETRIES = 2
"""Times a request is sent again after dockerd closed its connection without answering a byte."""


class RetryStale(Retry):
    """Send a request again when dockerd closed its (kept-alive, pooled) connection without a byte of answer.

    The pool checks that a connection is alive just before it sends, so a connection dockerd closes meanwhile
    fails the call: measured here, 2-4 of 10 runs of ``tests/node/test_docker_pool.py`` failed a create or a logs
    read that way ("Remote end closed connection without response"), and a job's start would fail with it. Sending
    again is safe for the calls the node makes: a create sent twice meets its own name (409, cleared by
    ``DockerRuntime._start``); a start, stop or removal sent twice finds it done. Every other error is raised as
    the SDK's own ``Retry(0, read=False)`` raises it."""

    def increment(  # type: ignore[override]  # urllib3's signature, its private arguments passed through
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if self.total and response is None and _closed_unanswered(error):
            return self.new(total=self.total - 1)
        return Retry(0, read=False).increment(method, url, response, error, _pool, _stacktrace)


def _closed_unanswered(error: Exception | None) -> bool:
    cause = error.args[1] if isinstance(error, ProtocolError) and len(error.args) > 1 else None
    return isinstance(cause, RemoteDisconnected | ConnectionResetError | BrokenPipeError)


class SharedPoolAdapter(UnixHTTPAdapter):  # type: ignore[misc]  # the SDK has no type hints
    """The SDK's unix-socket adapter with every request drawn from one pool, keyed by the socket's path, and a
    request left unanswered by a closed connection sent again (``RetryStale``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_retries = RetryStale(total=STALE_RETRIES)

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection(self.socket_path, proxies)


def share_one_pool(api: Any) -> None:
    """Put a ``SharedPoolAdapter`` in place of an APIClient's unix-socket adapter (same socket, timeout and pool
    size), closing the one the client was built with; a client on any other transport is left as it is."""
    old = api.adapters.get("http+docker://")
    if not isinstance(old, UnixHTTPAdapter) or isinstance(old, SharedPoolAdapter):
        return
    shared = SharedPoolAdapter(old.socket_path, old.timeout, pool_connections=1, max_pool_size=old.max_pool_size)
    api.mount("http+docker://", shared)
    api._custom_adapter = shared  # what the SDK falls back on for a URL no mount matches
    old.close()


def labels_of(labels: dict[str, Any]) -> tuple[str, int]:
    """(job_id, attempt) from a container's labels; a garbled attempt reads as 0."""
    job_id = str(labels.get(LABEL_JOB, ""))
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, 0))
    except (TypeError, ValueError):
        attempt = 0
    return job_id, attempt


def _timestamp(value: Any) -> str | None:
    return value if isinstance(value, str) and value and value != _NEVER_STARTED else None


def info_of(attrs: dict[str, Any]) -> ContainerInfo:
    """A ContainerInfo from inspect data."""
    state = attrs.get("State") or {}
    job_id, attempt = labels_of((attrs.get("Config") or {}).get("Labels") or {})
    status = str(state.get("Status", "unknown"))
    exit_code = state.get("ExitCode")
    return ContainerInfo(
        container_id=str(attrs["Id"]),
        job_id=job_id,
        attempt=attempt,
        status=status,
        exit_code=int(exit_code) if exit_code is not None and status in ("exited", "dead") else None,
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
    )


__all__ = ["DockerConnection", "SharedPoolAdapter", "in_thread", "info_of", "labels_of", "share_one_pool"]
