"""Noticing dead connections: the kernel's TCP keepalive on every connection, and a ping of every connected peer
every few seconds; a peer that stops answering is cut off at the socket and dialled again.

py-libp2p's yamux has no keepalive and TCP retransmits for minutes, so a connection whose traffic is silently
dropped (a partition, a dead NAT entry) stays "open": requests over it wait their full timeout and nothing
re-dials (docs/py-libp2p.md, "A silent partition leaves connections open"). Two probes close it:

- ``keepalive``: TCP keepalive and ``TCP_USER_TIMEOUT`` on the connection's socket, so the kernel itself aborts a
  connection whose data (or keepalive probes) go unacknowledged for ``USER_TIMEOUT`` s. The kernel answers
  probes even while a node's event loop is busy, so a loaded node is never mistaken for a dead one; the
  library then sees the socket fail and drops the connection, and ``Peering`` dials the peer again. This is
  the fast path: a partition is noticed in ``USER_TIMEOUT`` s.
- ``Liveness``: libp2p's own ping (``/ipfs/ping/1.0.0``) for what TCP cannot see (a frozen peer process, a
  middlebox that acknowledges), of each peer we have heard nothing from for ``QUIET`` s: not a pubsub RPC
  (``heard``), not a ping of its own (``answer`` is our handler of the protocol and notes each), not the answer to
  one of ours. Any of these needs the peer's event loop, so it proves the process alive. As both ends of a
  connection keep the same rule, whichever pings first spares the other: an idle connection carries one ping
  every ``QUIET``-``QUIET + INTERVAL`` s, one way, instead of one each way every ``INTERVAL``. Each ping is
  judged on its own: answered within ``TIMEOUT`` or a miss, whether or not the library lets the ping task go
  (one stuck behind a write on a dead connection is not waited for: docs/py-libp2p.md, "Closing a dead connection
  hangs"). A peer with a miss is pinged again every ``INTERVAL`` until it answers; ``MISSES`` misses in a row cut
  the connection at its socket (``abort``), count it, and hand the peer to ``redial`` (``Peering.redial``: short,
  bounded backoff).
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from .host import Host
from .keptrequests import KeptStreams, reset

__all__ = [
    "INTERVAL",
    "MISSES",
    "PING_PROTOCOL",
    "QUIET",
    "TIMEOUT",
    "USER_TIMEOUT",
    "Liveness",
    "LivenessStats",
    "Pinger",
    "abort",
    "keepalive",
    "sockets_of",
]

log = logging.getLogger("cmnode.p2p")

INTERVAL = 2.0
"""Seconds between two looks at every connected peer: a peer quiet for ``QUIET`` is pinged then, and a peer with a
miss outstanding is pinged again at each look until it answers (or ``MISSES`` are reached)."""
QUIET = 5.0
"""A peer heard from within this many seconds (a pubsub RPC, a ping it sent us, an answer to ours) is not pinged.
Pings only find what TCP keepalive cannot (a frozen process, a middlebox that acknowledges); every connection used
to be pinged each way every ``INTERVAL``, which with node records rare was most of an idle node's CPU (30 idle
nodes: 23-25 % of a core, pings about two thirds of it). The price: a frozen peer is cut after about
``QUIET + INTERVAL + (MISSES - 1) * INTERVAL + TIMEOUT`` s (16 s at most) instead of 11."""
TIMEOUT = 5.0
"""A ping that is not answered in this time is a miss. On a LAN it takes milliseconds, but the answer needs the
peer's event loop: ten nodes on two cores, one of them catching nine peers up, answered 3 s pings late often
enough that connections were cut and remade in a loop (each new one costing a catch-up round)."""
MISSES = 3
"""Misses in a row after which the connection is considered dead: a lost ping, or a peer busy for a few
seconds, is not an outage. A link that is down is noticed sooner by the kernel (``USER_TIMEOUT``)."""
USER_TIMEOUT = 8.0
"""Seconds the kernel lets sent data (or keepalive probes) go unacknowledged before it aborts the connection: a
link down for 2 s survives (its data is retransmitted), one down for longer than this is closed."""
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 1
KEEPALIVE_COUNT = 4
PING_PROTOCOL = TProtocol("/ipfs/ping/1.0.0")
PING_LENGTH = 32
ANSWER_IDLE = 120.0
"""Our ping handler closes a stream that brought no ping for this long (the library's closes it after 10 s, shorter
than the gap between two pings now: ``Pinger`` opens another if the one it kept was closed)."""
MAX_ANSWERING = 2
"""Ping streams answered at once per peer (the library's limit too): a peer opening more is refused."""
CLOSE_TIMEOUT = 2.0
"""The library's own close of an aborted connection (its bookkeeping and notifications) is bounded by this."""
WALK_DEPTH = 10


@dataclass
class LivenessStats:
    """Counters of the probe, read by the metrics endpoint."""

    pings: int = 0
    heard: int = 0
    """Probes not sent because the peer had just sent us something (a pubsub RPC, a ping) or answered ours."""
    answered: int = 0
    """Peers' pings we answered."""
    misses: int = 0
    dead: int = 0
    """Connections closed because the peer stopped answering."""


class Pinger:
    """Pings over one long-lived stream per peer, as the ping protocol allows (the library's handler answers
    ping after ping on a stream, and closes it after 10 s without one).

    A stream per ping cost a stream open, a multistream negotiation and a close on both ends every
    ``INTERVAL`` on every connection: at 10 nodes with 6 connections each, that was about a third of the idle
    cluster's CPU. A ping that fails or is cut off by its timeout leaves its stream in an unknown state, so
    that stream is dropped and the next ping opens another; pings to one peer take turns on its stream.
    """

    def __init__(self, host: Host) -> None:
        self.kept = KeptStreams(host.host, PING_PROTOCOL)

    async def __call__(self, peer_id: ID) -> None:
        """One ping of ``peer_id``; raises on any failure (the caller bounds the time). A kept stream that fails at
        once was closed while idle (an older node's handler closes it after 10 s without a ping): the ping is made
        again on a new stream."""
        await self.kept.exchange(peer_id, _round_trip)


async def _read_ping(stream: Any) -> bytes:
    """The next ``PING_LENGTH`` bytes (a read may return fewer); ``b""`` if the stream ended first."""
    data = b""
    while len(data) < PING_LENGTH:
        chunk = await stream.read(PING_LENGTH - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


async def _round_trip(stream: Any) -> None:
    payload = secrets.token_bytes(PING_LENGTH)
    await stream.write(payload)
    answer = await _read_ping(stream)
    if not answer:
        raise ConnectionError("ping stream closed")
    if answer != payload:
        raise ConnectionError("ping answered with other bytes")


def sockets_of(conn: Any) -> list[trio.SocketStream]:
    """The TCP sockets under a libp2p connection. The library exposes none: it is found by walking the layers
    (``SwarmConn.muxed_conn.secured_conn.conn...stream.stream`` in 0.8.1, one more with a swarm key)."""
    found: list[trio.SocketStream] = []
    seen: set[int] = set()
    frontier: list[Any] = [conn]
    for _ in range(WALK_DEPTH):
        following: list[Any] = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, trio.SocketStream):
                found.append(obj)
                continue
            for value in getattr(obj, "__dict__", {}).values():
                if type(value).__module__.startswith(("libp2p.", "trio")) and not isinstance(
                    value, trio.Lock | trio.Event | trio.Semaphore
                ):
                    following.append(value)
        frontier = following
    return found


def keepalive(conn: INetConn) -> None:
    """TCP keepalive and ``TCP_USER_TIMEOUT`` on a new connection's socket (Linux; elsewhere what exists)."""
    for stream in sockets_of(conn):
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (
            ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
            ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
            ("TCP_KEEPCNT", KEEPALIVE_COUNT),
            ("TCP_USER_TIMEOUT", int(USER_TIMEOUT * 1000)),
        ):
            option = getattr(socket, name, None)
            if option is not None:
                with contextlib.suppress(OSError):
                    stream.setsockopt(socket.IPPROTO_TCP, option, value)


async def abort(host: Host, peer_id: ID) -> None:
    """Cut every connection to ``peer_id`` at its socket, then let the library close them (bounded).

    A polite close writes a GO_AWAY frame first, behind any write already blocked on the dead socket, and waits
    there; closing the socket wakes every task blocked on it with an error, so the library's read loop ends and
    it forgets the connection (docs/py-libp2p.md, "Closing a dead connection hangs")."""
    network: Any = host.host.get_network()
    connections = list(network.get_connections(peer_id))
    for conn in connections:
        for stream in sockets_of(conn):
            with contextlib.suppress(Exception):
                stream.socket.close()  # synchronous: trio wakes whoever waits on it
    with trio.move_on_after(CLOSE_TIMEOUT):
        for conn in connections:
            with contextlib.suppress(Exception):
                await conn.close()
    for conn in connections:  # what the close did not get to: forget it, and tell who listens (pubsub, ours)
        if conn in network.get_connections(peer_id):
            with contextlib.suppress(Exception):
                network.remove_conn(conn)
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await network.notify_disconnected(conn)


class Liveness:
    """Probes the peers ``peers()`` returns; run ``run`` in the mesh's nursery, and set ``answer`` as the host's
    handler of ``PING_PROTOCOL`` (before the host accepts connections)."""

    def __init__(
        self,
        *,
        peers: Callable[[], list[ID]],
        ping: Callable[[ID], Awaitable[None]],
        disconnect: Callable[[ID], Awaitable[None]],
        redial: Callable[[ID], None],
        interval: float = INTERVAL,
        quiet: float = QUIET,
        timeout: float = TIMEOUT,
        misses: int = MISSES,
        heard: Callable[[ID], float] | None = None,
        on_miss: Callable[[ID], None] | None = None,
    ) -> None:
        """``heard``: seconds since a peer last sent us a pubsub RPC (``senderrecord.quiet_for``); with the pings
        it sends us and the answers to ours, a peer heard within ``quiet`` seconds is alive without a ping.
        ``on_miss``: told of every missed ping (``LossWatch.suspect``: a peer lost sooner than its connection's
        end says so)."""
        self._peers = peers
        self._heard = heard
        self._on_miss = on_miss
        self._ping = ping
        self._disconnect = disconnect
        self._redial = redial
        self.interval = interval
        self.quiet = quiet
        self.timeout = timeout
        self.misses = misses
        self.stats = LivenessStats()
        self._missed: dict[ID, int] = {}
        self._running: dict[ID, int] = {}
        """Pings still running per peer. Probes overlap (``timeout`` > ``interval``), so a few may run at once;
        more than ``_most`` means the library is not letting them go, and no more are started for that peer."""
        self._most = math.ceil(timeout / interval) + 1
        self._epoch: dict[ID, int] = {}
        """Each connected peer's latest connection (numbered by ``_connections``): a probe begun before it judges
        a connection that is gone."""
        self._connections = 0
        self._alive_at: dict[ID, float] = {}
        """When each peer last proved its process alive to this module: a connection made, a ping it sent us, an
        answer to ours (pruned to the connected peers at every look)."""
        self._answering: dict[ID, int] = {}

    def on_connect(self, peer_id: ID) -> None:
        """A new connection to ``peer_id`` (its handshake needed the peer's event loop: it is alive now); misses
        counted on an earlier one do not count against it."""
        self._connections += 1
        self._epoch[peer_id] = self._connections
        self._missed.pop(peer_id, None)
        self._alive_at[peer_id] = trio.current_time()

    def quiet_for(self, peer_id: ID) -> float:
        """Seconds since ``peer_id`` last proved itself alive (infinity if never)."""
        ours = trio.current_time() - self._alive_at.get(peer_id, -math.inf)
        return min(ours, self._heard(peer_id)) if self._heard is not None else ours

    async def answer(self, stream: INetStream) -> None:
        """The ``/ipfs/ping/1.0.0`` handler: answers ping after ping on a stream, as the library's does, and notes
        each one as the peer being alive (so it is not pinged back). At most ``MAX_ANSWERING`` streams per peer;
        one idle for ``ANSWER_IDLE`` s is closed; a broken one is reset, and nothing raises from here."""
        peer_id = stream.muxed_conn.peer_id
        if self._answering.get(peer_id, 0) >= MAX_ANSWERING:
            await reset(stream)
            return
        self._answering[peer_id] = self._answering.get(peer_id, 0) + 1
        try:
            while True:
                payload = b""
                with trio.move_on_after(ANSWER_IDLE):
                    payload = await _read_ping(stream)
                if not payload:  # the pinger closed it, or it idled
                    with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(Exception):
                        await stream.close()
                    return
                self._alive_at[peer_id] = trio.current_time()
                self.stats.answered += 1
                with trio.fail_after(self.timeout):
                    await stream.write(payload)
        except Exception as exc:  # a reset stream, a closed connection, a write that timed out
            log.debug("answering pings of %s failed: %r", peer_id, exc)
            await reset(stream)
        finally:
            left = self._answering.get(peer_id, 1) - 1
            if left > 0:
                self._answering[peer_id] = left
            else:
                self._answering.pop(peer_id, None)

    async def run(self) -> None:
        """Look at every connected peer each ``interval`` and probe those quiet for ``quiet`` s, each probe on its
        own, until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                peers = self._peers()
                for kept in (self._missed, self._epoch, self._alive_at):  # bounded by the peers connected now
                    for gone in set(kept).difference(peers):
                        del kept[gone]
                for peer_id in peers:
                    if self.quiet_for(peer_id) < self.quiet:
                        self.stats.heard += 1
                        self._missed.pop(peer_id, None)  # it talks: whatever pings missed, it is there
                        continue
                    nursery.start_soon(self._probe, peer_id, nursery)
                await trio.sleep(self.interval)

    async def _probe(self, peer_id: ID, nursery: trio.Nursery) -> None:
        """Judge one probe: answered within ``timeout``, or a miss (whatever the ping task does meanwhile)."""
        self.stats.pings += 1
        epoch = self._epoch.get(peer_id, 0)
        answered = trio.Event()
        if self._running.get(peer_id, 0) < self._most:
            self._running[peer_id] = self._running.get(peer_id, 0) + 1
            nursery.start_soon(self._ping_once, peer_id, answered)
        with trio.move_on_after(self.timeout):
            await answered.wait()
        if answered.is_set():
            self._missed.pop(peer_id, None)
            return
        if peer_id not in self._peers() or self._epoch.get(peer_id, 0) != epoch:
            return  # cut off meanwhile (by an earlier verdict, or it left), or connected anew
        self.stats.misses += 1
        if self._on_miss is not None:
            self._on_miss(peer_id)
        missed = self._missed.get(peer_id, 0) + 1
        self._missed[peer_id] = missed
        if missed >= self.misses:
            del self._missed[peer_id]
            await self._dead(peer_id, missed)

    async def _ping_once(self, peer_id: ID, answered: trio.Event) -> None:
        try:
            with trio.move_on_after(self.timeout):
                await self._ping(peer_id)
                answered.set()
                self._alive_at[peer_id] = trio.current_time()
        except Exception as exc:  # a reset stream, a closed connection: a miss like silence
            log.debug("ping %s failed: %r", peer_id, exc)
        finally:
            left = self._running.get(peer_id, 1) - 1
            if left > 0:
                self._running[peer_id] = left
            else:
                self._running.pop(peer_id, None)

    async def _dead(self, peer_id: ID, missed: int) -> None:
        self.stats.dead += 1
        log.warning(
            "peer %s did not answer %d pings of %g s: closing the connection and dialling it again",
            peer_id, missed, self.timeout,
        )  # fmt: skip
        with trio.move_on_after(CLOSE_TIMEOUT + 1):
            try:
                await self._disconnect(peer_id)
            except Exception as exc:
                log.debug("closing the connection to %s failed: %r", peer_id, exc)
        self._redial(peer_id)
