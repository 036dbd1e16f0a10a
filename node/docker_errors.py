"""The one boundary where the Docker SDK's exceptions become ``node.errors``.

``map_docker_errors`` is to the Docker SDK what httpx's ``map_httpcore_exceptions`` is to httpcore: every
docker.errors / requests / socket failure raised inside it leaves as ``RuntimeFailureError`` (``from`` the
original), with the daemon's own explanation or what the socket said, never a Python repr. A refusal that only
means "the daemon is not ready yet" (``not_ready``) leaves as ``NotReadyError``, so that the executor waits and
tries again rather than fail the attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker.errors
import requests

from .errors import RuntimeFailureError
from .runtime import NotReadyError

MAPPED: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    docker.errors.StreamParseError,  # a RuntimeError, not a DockerException: a garbled events stream
    requests.exceptions.RequestException,
    OSError,
)
"""What ``map_docker_errors`` translates; anything else is a bug and passes through unchanged."""

NOT_READY = ("failed to update the store state of sandbox",)
"""How dockerd words a refusal that passes by itself, in a 500. Being restarted, dockerd logged "Daemon shutdown
complete" and then still answered a container start, 1 s later, with "failed to update the store state of
sandbox: failed to update store for object type *libnetwork.sbState: open : no such file or directory"
(libnetwork's ``NewSandbox``, its store closed); the new daemon started 0.2 s after
(tests/durability/test_docker_restart.py, one run in three on a busy machine)."""


def root_oserror(exc: BaseException) -> OSError | None:
    """The innermost OSError with an errno (e.g. ECONNREFUSED) hidden under requests/urllib3 wrappers."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None and cur.strerror:
            return cur
        todo.extend(a for a in cur.args if isinstance(a, BaseException))
        todo.extend(e for e in (cur.__cause__, cur.__context__) if e is not None)
    return None


def explanation(exc: docker.errors.APIError) -> str:
    """The daemon's own words for a refused request, or its HTTP status when it gave none."""
    text: Any = exc.explanation
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text:
        return str(text).strip()
    response = exc.response
    if response is not None:
        return f"the Docker daemon answered {response.status_code} {response.reason}"
    return "the Docker daemon refused the request"


def not_ready(exc: BaseException) -> bool:
    """Whether the daemon refused for a reason of its own that passes by itself (``NOT_READY``).

    Only words seen, not a status: a 503 may be a registry's, passed on by a pull, and that is the pull's failure.
    """
    return isinstance(exc, docker.errors.APIError) and any(words in explanation(exc) for words in NOT_READY)


def describe(exc: BaseException, *, where: str, timeout: float) -> str:
    """A user-facing reason for a docker/requests failure: the daemon's words, or what the socket said."""
    if isinstance(exc, docker.errors.APIError):
        return explanation(exc)
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return f"the Docker daemon at {where} did not answer within {timeout:g}s"
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        root = root_oserror(exc)
        why = root.strerror.lower() if root is not None and root.strerror else "connection failed"
        return f"cannot connect to the Docker daemon at {where}: {why}"
    if isinstance(exc, docker.errors.DockerException) and exc.__cause__ is not None:
        return describe(exc.__cause__, where=where, timeout=timeout)
    root = root_oserror(exc)
    if root is not None and root.strerror:
        return f"Docker daemon at {where}: {root.strerror.lower()}"
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def map_docker_errors(what: str | None, *, where: str, timeout: float) -> Iterator[None]:
    """Raise ``RuntimeFailureError("<what>: <reason>")`` from any Docker SDK failure inside the block
    (``NotReadyError`` when the daemon is not ready yet).

    ``where`` names the daemon (its URL) and ``timeout`` the client's timeout, for the reason's wording.
    """
    try:
        yield
    except MAPPED as exc:
        reason = describe(exc, where=where, timeout=timeout)
        error = NotReadyError if not_ready(exc) else RuntimeFailureError
        raise error(f"{what}: {reason}" if what else reason) from exc


__all__ = [
    "MAPPED",
    "NOT_READY",
    "describe",
    "explanation",
    "map_docker_errors",
    "not_ready",
    "root_oserror",
]
