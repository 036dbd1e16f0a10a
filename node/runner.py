"""``cmnode run`` as a process: logging, signals, and a clean exit code."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from . import logsetup
from .config import Config
from .errors import ConfigError, StoreDamagedError

__all__ = ["main"]


def main(config: Config) -> int:
    """Run a node until SIGINT or SIGTERM; the exit code: 0, 1 cannot start (a port taken, a damaged store),
    2 bad configuration."""
    logsetup.configure(config.log_level, config.log_format)
    log = logging.getLogger("cmnode.node")

    async def serve() -> None:
        from .app import run_node  # after logging is configured (libp2p logs on the root logger)

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def first_signal() -> None:
                async for signum in signals:
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    return

            async with trio.open_nursery() as nursery:
                node = await nursery.start(lambda task_status: run_node(config, shutdown_trigger=first_signal,
                                                                        task_status=task_status))  # fmt: skip
                print(f"cmnode: node {node.node_id} ready, RPC at {node.rpc_url}/jrpc", flush=True)

    try:
        trio.run(serve)
    except BaseException as exc:
        # Start-up errors arrive wrapped in the exception groups of the nurseries they crossed.
        error = _startup_error(exc)
        if isinstance(error, ConfigError):
            print(f"cmnode: {error}", file=sys.stderr)
            return 2
        if isinstance(error, StoreDamagedError):
            print(f"cmnode: cannot start: {error}", file=sys.stderr)
            return 1
        if isinstance(error, OSError):
            print(f"cmnode: cannot start: {error.strerror or error}", file=sys.stderr)
            return 1
        raise
    return 0


def _startup_error(exc: BaseException) -> BaseException | None:
    """The ConfigError, StoreDamagedError or OSError in ``exc``, however deeply nested in exception groups."""
    if isinstance(exc, ConfigError | StoreDamagedError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _startup_error(inner)) is not None:
                return found
    return None
