"""``cmnode run`` as a process: logging, signals, and a clean exit code."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import urllib.parse

import ifaddr
import trio

from . import gcwatch, logsetup
from .config import Config
from .errors import ConfigError, StoreDamagedError
from .startup import imports_without_gc

__all__ = ["TRACED", "TRACE_ENV", "main", "reachable", "trace_from_env"]


def main(config: Config) -> int:
    """Run a node until SIGINT or SIGTERM; the exit code: 0, 1 cannot start (a port taken, a damaged store),
    2 bad configuration."""
    logsetup.configure(config.log_level, config.log_format)
    log = logging.getLogger("cmnode.node")

    async def serve() -> None:
        with imports_without_gc():  # node/startup.py: most of a start is imports
            from .app import run_node  # after logging is configured (libp2p logs on the root logger)

        logsetup.adopt_libp2p()  # after libp2p is imported: its import unhooks its logger
        trace_from_env()
        gcwatch.install()  # debug only: the collector's pauses beside the jobs they delay

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def first_signal() -> None:
                async for signum in signals:
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    return

            async with trio.open_nursery() as nursery:
                node = await nursery.start(lambda task_status: run_node(config, shutdown_trigger=first_signal,
                                                                        task_status=task_status))  # fmt: skip
                # The one ready line (stdout: scripts and tests wait for it); on a wildcard address it names the
                # addresses that reach the node, which "0.0.0.0" does not tell.
                where = ", ".join(f"{url}/jrpc" for url in reachable(node.rpc_url))
                print(f"cmnode: node {node.node_id} ready, RPC at {node.rpc_url}/jrpc"
                      + (f" (reachable at {where})" if where else ""), flush=True)  # fmt: skip

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


TRACE_ENV = "CMNODE_TRACE"
TRACED = ("cmnode.p2p.mesh", "cmnode.gc")
"""Loggers that ``CMNODE_TRACE=1`` puts at debug level, whatever ``--log-level`` says: each job's way through the
node and the gossip mesh's changes (node/host.py), the collector's pauses (node/gcwatch.py). What
``benchmarks/mesh.py --trace`` reads to explain a late job, without the rest of debug logging (py-libp2p's
multiaddr alone logs ~30 lines a second per connection there, which would be the load it measures)."""


def trace_from_env() -> None:
    if os.environ.get(TRACE_ENV) == "1":
        for name in TRACED:
            logging.getLogger(name).setLevel(logging.DEBUG)


def reachable(url: str) -> list[str]:
    """``url`` with a wildcard host (``0.0.0.0``, ``::``) as one URL per interface address, LAN addresses first
    and loopback last; empty for any other host (it says where it is already)."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("0.0.0.0", "::"):
        return []
    ips: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4:
                ips.append(str(ip.ip))
            elif parts.hostname == "::" and not ipaddress.ip_address(ip.ip[0]).is_link_local:
                ips.append(f"[{ip.ip[0]}]")
    ips.sort(key=lambda ip: (ip.startswith(("127.", "[::1]")), ip))
    return [f"{parts.scheme}://{ip}:{parts.port}" for ip in dict.fromkeys(ips)]


def _startup_error(exc: BaseException) -> BaseException | None:
    """The ConfigError, StoreDamagedError or OSError in ``exc``, however deeply nested in exception groups."""
    if isinstance(exc, ConfigError | StoreDamagedError | OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _startup_error(inner)) is not None:
                return found
    return None
