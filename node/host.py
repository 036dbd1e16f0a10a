"""Building and running the py-libp2p host: transport, security, gossipsub, pubsub and request/response
(the pubsub and router classes themselves are ``node/pubsub.py``'s).

py-libp2p 0.8.1 loses messages silently, or crashes, with several of its defaults. Every setting here that
departs from them says which section of ``docs/py-libp2p.md`` explains why; the other mesh modules
(``gossip.py``, ``peering.py``, ``catchup.py``) only use what this module builds.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import ifaddr
import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.request_response import JSONCodec, RequestResponse, RequestResponseConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux import yamux
from libp2p.tools.anyio_service import background_trio_service

from . import senderrecord, windowcredit
from .config import Config
from .gossip import SCORE_PARAMS
from .identity import Identity
from .keptrequests import KEPT, KeptRequests
from .pubsub import DEGREE, DEGREE_HIGH, DEGREE_LOW, DirectPubsub, LazyGossipSub
from .swarmkey import load_swarm_key
from .wire import TOPIC

__all__ = [
    "REQUEST_TIMEOUT",
    "RTT_PING_INTERVAL",
    "Host",
    "free_inbound_slots",
    "release",
]

REQUEST_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""Both ends: a sync page of large jobs or a long log exceeds the library's default ("Request/response answers
are capped at 10 MiB")."""
MAX_INBOUND_RPC_BYTES = 2 * 1024 * 1024
RELEASE_TIMEOUT = 5.0
"""The most a stopping host waits for its listeners to close (shielded from the cancellation that stops it)."""
DIAL_NOISE = ("libp2p.network.swarm", "libp2p.protocol_muxer.multiselect_client", "libp2p.transport.tcp.tcp")
"""Loggers that print every failed dial at error level, several lines per retry ("A failed handshake floods
the log"); ``Peering`` says it once."""


Handler = Callable[[Any, Any], Awaitable[dict[str, Any]]]

RTT_PING_INTERVAL = 300
"""Seconds between yamux's RTT pings on each connection, 30 in py-libp2p ("Yamux pings every connection every
30 s"): the RTT only paces a stream's receive-window growth, and liveness has pings of its own."""


class Host:
    """One py-libp2p host with gossipsub on ``jobs`` and JSON request/response, configured to be safe."""

    def __init__(self, *, config: Config, identity: Identity) -> None:
        """Raises ConfigError when the swarm key file cannot be read."""
        self.listen = multiaddr.Multiaddr(f"/ip4/{_listen_ip(config.listen_address)}/tcp/{config.p2p_port}")
        key_pair = identity.key_pair
        for name in DIAL_NOISE:  # "A failed handshake floods the log" (kept at debug level)
            if not logging.getLogger(name).isEnabledFor(logging.DEBUG):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        self.psk = load_swarm_key(config.swarm_key) if config.swarm_key else None
        self.host: IHost = new_host(
            psk=self.psk,  # every connection is encrypted with it first: only holders of the key can talk
            key_pair=key_pair,
            # "The default host accepts plaintext": offer Noise only.
            sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)},
            listen_addrs=[self.listen],
            # "Listening on 0.0.0.0 is announced as 0.0.0.0": announce interface addresses instead.
            addrs_factory=lambda candidates: [a for c in candidates for a in _expand(c)],
        )
        self.router = LazyGossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],  # "meshsub/1.2 starves data with control messages"
            degree=DEGREE,  # "Every connection costs while idle": each mesh peer sends a copy of every message
            degree_low=DEGREE_LOW,
            degree_high=DEGREE_HIGH,
            heartbeat_interval=1,  # "The heartbeat": the default is 120 s
            adaptive_gossip_enabled=False,  # "The heartbeat": adaptive gossip stretched it to 30 s
            spam_protection_enabled=False,  # "Spam protection drops our own publishes": 10 msg/s per topic
            eclipse_protection_enabled=False,  # "Eclipse protection wants three addresses"
            score_params=SCORE_PARAMS,  # "Peer scoring only gates, never disconnects": invalid messages count
        )
        free_inbound_slots(self.host.get_network())  # "Every inbound connection holds a slot until the node stops"
        senderrecord.install()  # "Every pubsub RPC carries a signed peer record": made and checked once
        windowcredit.install()  # "Every read sends a window update": credit goes back in batches
        yamux.RTT_MEASURE_INTERVAL = RTT_PING_INTERVAL  # "Yamux pings every connection every 30 s"
        self.pubsub = DirectPubsub(self.host, self.router, max_inbound_rpc_size=MAX_INBOUND_RPC_BYTES)
        self.pubsub.counter = time.time_ns()  # "Message IDs repeat after a restart": seed seqno from ns
        self.rr = RequestResponse(self.host)
        self.rr_config = RequestResponseConfig(timeout=REQUEST_TIMEOUT, max_response_size=MAX_RESPONSE_BYTES)
        self.kept = KeptRequests(self.host, fallback=self._request_once, timeout=REQUEST_TIMEOUT,
                                 max_answer=MAX_RESPONSE_BYTES)  # fmt: skip
        self.port = 0

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    def serve(self, protocol: str, handler: Handler) -> None:
        """Answer JSON requests on ``protocol`` (same size and time limits as our own requests), and on its kept
        twin if it has one (``node/keptrequests.py``)."""
        self.rr.set_handler(TProtocol(protocol), handler, JSONCodec(), self.rr_config)
        if protocol in KEPT:
            self.host.set_stream_handler(TProtocol(KEPT[protocol]), self.kept.handler(protocol, handler))

    async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
        """One JSON request, on the peer's kept stream if ``protocol`` has a kept twin ("A request opens a
        stream, and both ends negotiate it"); raises ``RequestResponseError`` when the peer does not answer in
        time."""
        if protocol in KEPT:
            return await self.kept.request(peer_id, protocol, body)
        return await self._request_once(peer_id, protocol, body)

    async def _request_once(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
        return await self.rr.send_request(peer_id, [TProtocol(protocol)], body, JSONCodec(), self.rr_config)

    def connected(self, peer_id: ID) -> bool:
        return bool(self.host.get_network().get_connections(peer_id))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run pubsub, gossipsub and the listener, in the order that is safe; listening when entered.

        A host runs once: on the way out it stops listening, closes its connections' sockets and ends pubsub's
        sweeper thread, which the library leaves behind ("A stopped host keeps listening, and a thread").

        Raises:
            OSError: nothing listens (the port is taken or the address is not available).
        """
        try:
            # "An early pubsub stream crashes trio": pubsub runs before the host accepts streams.
            async with (
                background_trio_service(self.pubsub),
                background_trio_service(self.router),
                self.host.run(listen_addrs=[self.listen]),
            ):
                if not self.host.get_transport_addrs():  # "A failed listen is only logged"
                    raise OSError(f"cannot listen on {self.listen} (p2p-port in use or address not available)")
                await self.pubsub.subscribe(TOPIC)
                self.port = _port_of(self.host)
                yield
        finally:
            # Once every service has stopped: a connection cut now is noticed by no read loop, so no notifee
            # (pubsub's, ours: a redial) hears of it during the shutdown.
            try:
                await release(self.host.get_network())
            finally:
                self.pubsub.seen_messages.stop()  # wakes the thread from its wait and joins it: at once

    def addresses(self) -> list[str]:
        """The multiaddrs peers can dial, with our peer ID: interface addresses, never 0.0.0.0."""
        return [str(a) for a in self.host.get_addrs()]

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers with the addresses they listen on (from identify, mDNS or our dial)."""
        network, peerstore = self.host.get_network(), self.host.get_peerstore()
        out = []
        for peer_id in self.host.get_connected_peers():
            try:
                known = [str(a) for a in peerstore.addrs(peer_id)]
            except Exception:
                known = []
            addrs = [a for a in known if a.startswith("/ip4/") and "/tcp/" in a and "/0.0.0.0/" not in a]
            if not addrs:  # else the connection's own addresses
                addrs = [str(a) for conn in network.get_connections(peer_id) for a in conn.get_transport_addresses()]
            out.append({"node_id": peer_id.to_base58(), "addresses": sorted(set(addrs))})
        return sorted(out, key=lambda p: p["node_id"])


async def release(swarm: Any) -> None:
    """Close what a stopped swarm leaves open: its listeners, and the sockets of the connections still in its table.

    The swarm's own shutdown closes both in a ``finally`` that runs cancelled, and its first await there raises
    ``Cancelled`` (``TCPListener.close`` starts by taking a lock), so the port kept accepting, its serving task
    lived on, and every connection's socket stayed open until the host was garbage ("A stopped host keeps
    listening, and a thread"). Listeners are closed shielded and bounded (closing twice is harmless); sockets are
    cut synchronously, as ``abort`` does, never by a polite close ("Closing a dead connection hangs")."""
    from .liveness import sockets_of  # node/liveness.py imports this module

    with trio.move_on_after(RELEASE_TIMEOUT) as scope:
        scope.shield = True
        for listener in list(swarm.listeners.values()):
            with contextlib.suppress(Exception):  # as the library's own shutdown: one failing stops no other
                await listener.close()
    for conns in list(swarm.connections.values()):
        for stream in [s for conn in conns for s in sockets_of(conn)]:
            with contextlib.suppress(OSError):
                stream.socket.close()


def free_inbound_slots(swarm: Any) -> None:
    """End each inbound connection's handler when that connection closes, not when the swarm stops, so that its
    slot of the swarm's inbound cap is given back (docs/py-libp2p.md, "Every inbound connection holds a slot until
    the node stops"). The cap itself (250 live inbound connections) is kept."""
    handle, add_conn = swarm._do_handle_inbound_connection, swarm.add_conn
    added: dict[trio.lowlevel.Task, trio.MemorySendChannel[Any]] = {}  # a handler's task: where its connection goes

    async def handle_until_closed(self: Any, read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        send, receive = trio.open_memory_channel[Any](1)
        task = trio.lowlevel.current_task()
        added[task] = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_when_closed, receive, nursery.cancel_scope)
                await handle(read_write_closer, maddr, failure_event)  # returns only on failure or swarm stop
                nursery.cancel_scope.cancel()
        finally:
            added.pop(task, None)

    async def add_conn_noted(self: Any, muxed_conn: Any, direction: str = "unknown") -> Any:
        conn = await add_conn(muxed_conn, direction)
        send = added.pop(trio.lowlevel.current_task(), None)  # only a listener's handler task is in ``added``
        if send is not None:
            send.send_nowait(conn)
        return conn

    swarm._do_handle_inbound_connection = types.MethodType(handle_until_closed, swarm)
    swarm.add_conn = types.MethodType(add_conn_noted, swarm)


async def _cancel_when_closed(receive: trio.MemoryReceiveChannel[Any], scope: trio.CancelScope) -> None:
    """The handler then sits in the library's ``await self.manager.wait_finished()``: cancelling it there ends it
    (``Cancelled`` passes its ``except Exception``), and its caller releases the slot."""
    conn = await receive.receive()
    await conn.event_closed.wait()
    scope.cancel()


def _listen_ip(address: str) -> str:
    return "127.0.0.1" if address == "localhost" else address


def _expand(addr: multiaddr.Multiaddr) -> list[multiaddr.Multiaddr]:
    """``/ip4/0.0.0.0/tcp/P`` as one address per IPv4 interface address, LAN addresses first."""
    text = str(addr)
    if not text.startswith("/ip4/0.0.0.0/"):
        return [addr]
    rest = text[len("/ip4/0.0.0.0") :]
    ips = [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]
    ips.sort(key=lambda ip: (ip.startswith("127."), ip))
    return [multiaddr.Multiaddr(f"/ip4/{ip}{rest}") for ip in dict.fromkeys(ips)]


def _port_of(host: IHost) -> int:
    for addr in host.get_transport_addrs():
        port = addr.value_for_protocol("tcp")
        if port:
            return int(port)
    return 0
