"""Logging for a node: one line per event, ``key=value`` fields for people or JSON for machines.

Configured before libp2p is imported, because one of its calls logs on the root logger and would
otherwise install a default handler of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time

__all__ = ["JsonFormatter", "KeyValueFormatter", "adopt_libp2p", "configure", "fields"]

_QUIET = (
    "hypercorn.error", "hypercorn.access", "libp2p", "multiaddr", "zeroconf", "docker", "urllib3", "async_service",
)  # fmt: skip


class KeyValueFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z level=info logger=cmnode.sync msg=...``: one line per event.

    The stamp's seconds are formatted once per second, not per line: each node logs a line per job it receives
    (``job from peer``, the end event of ``benchmarks/overhead.py``), and ``strftime`` of a ``gmtime`` was half
    of this method."""

    def __init__(self) -> None:
        super().__init__()
        self._cached: tuple[int, str] = (-1, "")
        """(second, its text), one object: threads (Docker calls) log too, and swap it whole."""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached, text = self._cached
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, text)
        stamp = f"{text}.{int(record.msecs):03d}Z"
        message = record.getMessage().replace("\n", "\\n")  # one line per event, whatever the message holds
        line = f"{stamp} level={record.levelname.lower()} logger={record.name} msg={message}"
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
        for key, value in fields(message).items():  # lift key=value fields of the message to top-level keys
            out.setdefault(key, value)
        if record.exc_info and record.levelno >= logging.ERROR:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


_KEY = re.compile(r"(?:^|(?<=\s))([A-Za-z_][A-Za-z0-9_]*)=")
_INT = re.compile(r"-?\d{1,18}")


def fields(message: str) -> dict[str, object]:
    """The ``key=value`` fields of a message. A value runs to the next `` key=``, so one with spaces (an error
    text, say) stays whole; ``None`` becomes null, a whole number an int, a JSON-quoted string its text."""
    found = list(_KEY.finditer(message))
    out: dict[str, object] = {}
    ends = [match.start() for match in found[1:]] + [len(message)] if found else []
    for match, end in zip(found, ends, strict=True):
        raw = message[match.end() : end].rstrip()
        value: object = raw
        if raw == "None":
            value = None
        elif _INT.fullmatch(raw):
            value = int(raw)
        elif len(raw) >= 2 and raw[0] == raw[-1] == '"':
            with contextlib.suppress(ValueError):
                value = json.loads(raw)
        out[match.group(1)] = value
    return out


def adopt_libp2p() -> None:
    """Route py-libp2p's warnings and errors through our handler, once libp2p is imported.

    At import it clears its logger's handlers and stops propagation (``libp2p/utils/logging.py``, unless
    ``LIBP2P_DEBUG`` gives it handlers of its own), so its records reached stderr through Python's last-resort
    handler: unformatted, and one of them over seven lines. A handler of its own, at WARNING as before: some of
    its modules set their loggers to INFO, which propagation to ours would let through."""
    logger = logging.getLogger("libp2p")
    if logger.handlers:
        return
    root = logging.getLogger()
    for ours in root.handlers:
        if isinstance(ours, logging.StreamHandler):
            handler = logging.StreamHandler(ours.stream)
            handler.setFormatter(ours.formatter)
            handler.setLevel(max(logging.WARNING, root.level))
            logger.addHandler(handler)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Log to stderr at ``level`` as ``fmt`` (text or json). For the node process only: it also stops the
    logging module from collecting what no line of ours shows (the caller's file, line and function, found by
    walking the stack; the thread and process names), a third of the cost of each record (the logging docs'
    "Optimization" section)."""
    logging._srcfile = None  # type: ignore[attr-defined]  # no stack walk (``findCaller``) per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.lower() != "debug":
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
