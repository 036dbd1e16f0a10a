"""Errors a node raises, one class per thing that went wrong, each with its JSON-RPC code.

    NodeError                      base of everything the node reports to a caller
     ├── ValidationError           the request is malformed (-32602, field errors in ``data``)
     ├── NotFoundError             no such job or execution (-32001)
     ├── QueueFullError            the job queue is full; the job was not accepted (-32002)
     ├── UnauthorizedError         missing or wrong credentials (-32004)
     ├── RuntimeFailureError       the container engine failed or is unreachable (-32005)
     ├── PeerUnreachableError      a peer that must answer could not be reached (-32006)
     └── StorageFullError          the store's disk is full; nothing was written, reads still work (-32007)
    ConfigError                    a setting refused at start (not sent over RPC: it stops ``cmnode run``)
    StoreDamagedError              the store's file is damaged (stops ``cmnode run``: one line, exit 1)

Application codes count down from -32000, as JSON-RPC 2.0 reserves; ``rpc/client.py`` maps them back to
the same classes, so a client catches ``NotFoundError`` whichever node raised it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ERROR_CLASSES",
    "ConfigError",
    "NodeError",
    "NotFoundError",
    "PeerUnreachableError",
    "QueueFullError",
    "RuntimeFailureError",
    "StorageFullError",
    "StoreDamagedError",
    "UnauthorizedError",
    "ValidationError",
]


class NodeError(Exception):
    """Base class: ``code`` is the JSON-RPC error code, ``data`` optional structured detail."""

    code: int = -32000

    def __init__(self, message: str, *, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ValidationError(NodeError):
    """Parameters failed validation; ``data`` lists ``{"field", "message"}`` objects."""

    code = -32602

    def __init__(self, errors: list[dict[str, str]], message: str | None = None) -> None:
        if message is None:
            message = "invalid params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(message, data={"errors": errors})
        self.errors = errors


class NotFoundError(NodeError):
    """The job (or the execution asked for) is not known to this node."""

    code = -32001


class QueueFullError(NodeError):
    """The bounded job queue has no room; the job was not recorded."""

    code = -32002


class UnauthorizedError(NodeError):
    """The caller did not present the credentials this node requires."""

    code = -32004


class RuntimeFailureError(NodeError):
    """The container engine refused the operation or could not be reached."""

    code = -32005


class PeerUnreachableError(NodeError):
    """A peer that holds the requested data could not be reached in time."""

    code = -32006


class StorageFullError(NodeError):
    """The disk holding the store is full: the write was not made (a retry once space returns may succeed)."""

    code = -32007


class ConfigError(Exception):
    """Invalid configuration, refused at start; the message names the setting."""


class StoreDamagedError(Exception):
    """The store's file is not a sound SQLite database; the message names the file and what to do."""


ERROR_CLASSES: tuple[type[NodeError], ...] = (
    ValidationError,
    NotFoundError,
    QueueFullError,
    UnauthorizedError,
    RuntimeFailureError,
    PeerUnreachableError,
    StorageFullError,
)
"""Every subclass with its own code; ``rpc/client.py`` maps codes back through this table."""
