"""``map_docker_errors``: every failure the Docker SDK can raise leaves as RuntimeFailureError with a reason."""

from __future__ import annotations

import errno
import inspect
from typing import Any

import docker.errors
import pytest
import requests

from node.docker_errors import MAPPED, map_docker_errors
from node.errors import RuntimeFailureError
from node.runtime import NotReadyError

WHERE = "unix:///var/run/docker.sock"


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance of a docker.errors class, whatever its constructor asks for."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    needed = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args: list[Any] = [f"{p.name} value" for p in needed]
    if cls is docker.errors.ContainerError:
        args = [None, 1, "cmd", "image", b"stderr"]
    return cls(*args)


SDK_ERRORS = sorted(
    (c for c in vars(docker.errors).values() if inspect.isclass(c) and issubclass(c, Exception)),
    key=lambda c: c.__name__,
)


def test_every_docker_errors_class_is_mapped() -> None:
    assert len(SDK_ERRORS) >= 18
    for cls in SDK_ERRORS:
        assert issubclass(cls, MAPPED), cls
        original = _instance(cls)
        with pytest.raises(RuntimeFailureError) as caught, map_docker_errors("doing it", where=WHERE, timeout=5):
            raise original
        assert caught.value.__cause__ is original
        assert caught.value.message.startswith("doing it: ") and len(caught.value.message) > len("doing it: ")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (docker.errors.APIError("x", explanation="No such image: a:b"), "No such image: a:b"),
        (requests.exceptions.ReadTimeout(), f"the Docker daemon at {WHERE} did not answer within 5s"),
        (
            requests.exceptions.ConnectionError(OSError(errno.ECONNREFUSED, "Connection refused")),
            f"cannot connect to the Docker daemon at {WHERE}: connection refused",
        ),
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory"),
            f"cannot connect to the Docker daemon at {WHERE}: no such file or directory",
        ),
        (docker.errors.StreamParseError(ValueError("garbled")), "garbled"),
    ],
)
def test_reasons_are_the_daemons_or_the_sockets_words(exc: BaseException, reason: str) -> None:
    with pytest.raises(RuntimeFailureError) as caught, map_docker_errors(None, where=WHERE, timeout=5):
        raise exc
    assert caught.value.message == reason and caught.value.__cause__ is exc


def test_other_errors_pass_through() -> None:
    with pytest.raises(KeyError), map_docker_errors("x", where=WHERE, timeout=5):
        raise KeyError("a bug is not a daemon failure")


def _refusal(status: int, explanation: str) -> docker.errors.APIError:
    """dockerd's answer as the SDK raises it: the HTTP response and the daemon's message."""
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("refused", response=response, explanation=explanation)


SANDBOX = "failed to update the store state of sandbox: open : no such file or directory"
"""dockerd being restarted, its shutdown complete (tests/durability/test_docker_restart.py, one run in three)."""


@pytest.mark.parametrize(
    ("exc", "ready"),
    [
        (_refusal(500, SANDBOX), False),
        (_refusal(503, "received unexpected HTTP status: 503 Service Unavailable"), True),  # a registry's
        (_refusal(500, "OCI runtime create failed: exec: no such file"), True),
        (_refusal(404, "No such image: a:b"), True),
        (_refusal(409, "Conflict. The container name is already in use"), True),
        (requests.exceptions.ConnectionError(OSError(errno.ECONNREFUSED, "Connection refused")), True),
    ],
)
def test_a_daemon_not_ready_yet_is_told_apart_from_a_refusal(exc: BaseException, ready: bool) -> None:
    """Only what passes by itself is ``NotReadyError`` (the executor tries again); a daemon that is away is
    found by its ping, and any other refusal is the attempt's failure."""
    with pytest.raises(RuntimeFailureError) as caught, map_docker_errors("cannot start", where=WHERE, timeout=5):
        raise exc
    assert isinstance(caught.value, NotReadyError) is not ready
    assert caught.value.message.startswith("cannot start: ") and caught.value.__cause__ is exc
