"""``cmnode run`` as a process: logging, signals, and a clean exit code."""

from __future__ import annotations

import logging
import signal
import sys

import trio

from . import logsetup
from .config import Config
from .errors import ConfigError


def main(config: Config) -> int:
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
    except ConfigError as exc:
        print(f"cmnode: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cmnode: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
