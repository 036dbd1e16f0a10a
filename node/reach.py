"""Whether a peer can be reached, below libp2p: a bare TCP connection to the addresses it announced.

A dial that fails or times out does not say why. The peer's kernel accepting a TCP connection tells a link (or
host) that is gone from a process that is busy, frozen, or speaks another swarm key: ``node/peering.py`` asks
this before it redials a lost peer or names the reason a dial failed, and ``node/losswatch.py`` (through
``Peering.reaches``) before it calls a silent connection lost.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["PROBE_TIMEOUT", "REACH_TIMEOUT", "handshake_failed", "tcp_reaches", "tcp_targets"]

PROBE_TIMEOUT = 1.0
"""A dial that timed out: a bare TCP connection tells an unreachable peer from one that would not handshake."""
REACH_TIMEOUT = 1.2
"""A lost peer's probe (``Peering.probe``, ``Peering.reaches``): its kernel accepts a TCP connection within this,
or it is not reachable. On a LAN a SYN is answered in milliseconds; 1.2 s also covers one lost SYN (resent after
1 s)."""


def tcp_targets(addrs: list[Any]) -> list[tuple[str, int]]:
    """The (IP, port) of each TCP multiaddr in ``addrs``, without repeats; others are left out."""
    targets = []
    for addr in addrs:
        try:
            ip = addr.value_for_protocol("ip4") or addr.value_for_protocol("ip6")
            targets.append((ip, int(addr.value_for_protocol("tcp"))))
        except Exception:
            continue
    return list(dict.fromkeys(targets))


async def tcp_reaches(addrs: list[Any], timeout: float) -> bool:
    """Whether any of the TCP addresses ``addrs`` (multiaddrs) accepts a connection within ``timeout``, all tried
    at once (an address that does not answer, such as another host's bridge, must not hold up one that does).
    With no TCP address to try: True (no verdict)."""
    targets = tcp_targets(addrs)
    reached = False

    async def attempt(ip: str, port: int, scope: trio.CancelScope) -> None:
        nonlocal reached
        try:
            stream = await trio.open_tcp_stream(ip, port)
        except OSError:
            return
        reached = True
        scope.cancel()
        with trio.CancelScope(shield=True):
            await stream.aclose()

    with trio.move_on_after(timeout) as scope:
        async with trio.open_nursery() as nursery:
            for ip, port in targets:
                nursery.start_soon(attempt, ip, port, scope)
    return reached or not targets


def handshake_failed(exc: BaseException) -> bool:
    """Whether a dial reached the peer and then failed to agree on security (rather than not reaching it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in ("SecurityUpgradeFailure", "MultiselectClientError") or (
            "upgrade security" in str(current)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False
