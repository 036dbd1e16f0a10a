"""Noticing dead connections: every connected peer is pinged every few seconds, and one that stops answering
is disconnected and dialled again.

py-libp2p's yamux has no keepalive and TCP retransmits for minutes, so a connection whose traffic is silently
dropped (a partition, a dead NAT entry) stays "open": requests over it wait their full timeout and nothing
re-dials (docs/py-libp2p.md, "A silent partition leaves connections open"). The probe is libp2p's own ping
protocol (``/ipfs/ping/1.0.0``, answered by every host), bounded by a short timeout; ``MISSES`` misses in a row
close the connection, count it and hand the peer to ``redial`` (``Peering.redial``: short, bounded backoff).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .host import Host

__all__ = ["INTERVAL", "MISSES", "TIMEOUT", "Liveness", "LivenessStats", "ping"]

log = logging.getLogger("cmnode.p2p")

INTERVAL = 2.0
"""Seconds between two probes of every connected peer."""
TIMEOUT = 3.0
"""A ping that is not answered in this time is a miss (on loopback or a LAN it takes milliseconds)."""
MISSES = 2
"""Misses in a row after which the connection is considered dead: one lost ping is not an outage."""
PING_PROTOCOL = TProtocol("/ipfs/ping/1.0.0")
PING_LENGTH = 32


@dataclass
class LivenessStats:
    """Counters of the probe, read by the metrics endpoint."""

    pings: int = 0
    misses: int = 0
    dead: int = 0
    """Connections closed because the peer stopped answering."""


async def ping(host: Host, peer_id: ID) -> None:
    """One libp2p ping over an existing connection; raises on any failure (the caller bounds the time)."""
    stream = await host.host.new_stream(peer_id, [PING_PROTOCOL])
    try:
        payload = secrets.token_bytes(PING_LENGTH)
        await stream.write(payload)
        answer = b""
        while len(answer) < PING_LENGTH:
            chunk = await stream.read(PING_LENGTH - len(answer))
            if not chunk:
                raise ConnectionError("ping stream closed")
            answer += chunk
        if answer != payload:
            raise ConnectionError("ping answered with other bytes")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.close()


class Liveness:
    """Probes the peers ``peers()`` returns; run ``run`` in the mesh's nursery."""

    def __init__(
        self,
        *,
        peers: Callable[[], list[ID]],
        ping: Callable[[ID], Awaitable[None]],
        disconnect: Callable[[ID], Awaitable[None]],
        redial: Callable[[ID], None],
        interval: float = INTERVAL,
        timeout: float = TIMEOUT,
        misses: int = MISSES,
    ) -> None:
        self._peers = peers
        self._ping = ping
        self._disconnect = disconnect
        self._redial = redial
        self.interval = interval
        self.timeout = timeout
        self.misses = misses
        self.stats = LivenessStats()
        self._missed: dict[ID, int] = {}

    async def run(self) -> None:
        """Probe every connected peer each ``interval``, all at once, until cancelled."""
        while True:
            peers = self._peers()
            for gone in set(self._missed) - set(peers):  # bounded by the peers connected now
                del self._missed[gone]
            async with trio.open_nursery() as nursery:
                for peer_id in peers:
                    nursery.start_soon(self._probe, peer_id)
            await trio.sleep(self.interval)

    async def _probe(self, peer_id: ID) -> None:
        self.stats.pings += 1
        answered = False
        with trio.move_on_after(self.timeout):
            try:
                await self._ping(peer_id)
                answered = True
            except Exception as exc:  # a reset stream, a closed connection: a miss like silence
                log.debug("ping %s failed: %r", peer_id, exc)
        if answered:
            self._missed.pop(peer_id, None)
            return
        self.stats.misses += 1
        missed = self._missed.get(peer_id, 0) + 1
        self._missed[peer_id] = missed
        if missed < self.misses:
            return
        del self._missed[peer_id]
        self.stats.dead += 1
        log.warning(
            "peer %s did not answer %d pings of %g s: closing the connection and dialling it again",
            peer_id, missed, self.timeout,
        )  # fmt: skip
        with trio.move_on_after(self.timeout):
            try:
                await self._disconnect(peer_id)
            except Exception as exc:
                log.debug("closing the connection to %s failed: %r", peer_id, exc)
        self._redial(peer_id)
