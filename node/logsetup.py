"""Logging for a node: one line per event, ``key=value`` fields for people or JSON for machines.

Configured before libp2p is imported, because one of its calls logs on the root logger and would
otherwise install a default handler of its own.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_QUIET = (
    "hypercorn.error", "hypercorn.access", "libp2p", "multiaddr", "zeroconf", "docker", "urllib3", "async_service",
)  # fmt: skip


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"{stamp} level={record.levelname.lower()} logger={record.name} msg={record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for part in message.split():  # lift key=value fields of the message to top-level keys
            key, eq, value = part.partition("=")
            if eq and key.isidentifier() and key not in out:
                out[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.lower() != "debug":
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
