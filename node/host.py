"""Building and running the py-libp2p host: transport, security, gossipsub, pubsub and request/response.

py-libp2p 0.8.1 loses messages silently, or crashes, with several of its defaults. Every setting here that
departs from them says which section of ``docs/py-libp2p.md`` explains why; the other mesh modules
(``gossip.py``, ``peering.py``, ``catchup.py``) only use what this module builds.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import types
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
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
from .swarmkey import load_swarm_key
from .wire import TOPIC

__all__ = [
    "REQUEST_TIMEOUT",
    "RTT_PING_INTERVAL",
    "DirectPubsub",
    "Host",
    "LazyGossipSub",
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


_HELD: contextvars.ContextVar[list[rpc_pb2.Message] | None] = contextvars.ContextVar("pubsub_held", default=None)
"""The validated messages ``DirectPubsub.push_msg`` hands to ``forwarded`` once forwarded (None: not in one)."""


class DirectPubsub(Pubsub):
    """Pubsub that hands every validated message to ``deliver`` instead of a 32-slot subscription queue
    (docs/py-libp2p.md, "Subscription queues hold 32 messages"); or, when ``forwarded`` is set, to ``forwarded``
    once the library has forwarded it, awaited in the task that received it.

    The library delivers before it forwards (``push_msg``: validate, deliver, then the router queues the message
    to each peer's sending task); ``forwarded`` comes after both, so what it does costs the next hop only the
    time it runs, not trio scheduling rounds (``Gossip.forwarded``). If forwarding fails, the message goes to
    ``deliver`` as before."""

    deliver: Callable[[rpc_pb2.Message], None] = staticmethod(lambda msg: None)  # type: ignore[assignment]
    forwarded: Callable[[rpc_pb2.Message], Awaitable[None]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registering: dict[ID, trio.Lock] = {}

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if TOPIC in publish_message.topicIDs:
            held = _HELD.get()
            if held is not None:
                held.append(publish_message)
            else:
                self.deliver(publish_message)
            if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(publish_message.data)):
                mesh_log.debug("gossip validated job_id=%s", job_id)

    async def publish(self, topic_id: str | list[str], data: bytes) -> None:
        if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(data)):
            mesh_log.debug("gossip publish job_id=%s", job_id)
        await super().publish(topic_id, data)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if self.forwarded is None:
            await super().push_msg(msg_forwarder, msg)
            return
        held: list[rpc_pb2.Message] = []
        token = _HELD.set(held)  # this task's: ``notify_subscriptions`` runs in it, between validate and forward
        try:
            await super().push_msg(msg_forwarder, msg)
        except BaseException:
            for validated in held:
                self.deliver(validated)
            raise
        finally:
            _HELD.reset(token)
        for validated in held:
            await self.forwarded(validated)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        """One registration of a peer at a time ("Two connections at once leave a pubsub sending loop behind"):
        the library checks ``peers`` before it opens the stream, so two at once each started a sending loop, and
        the one whose queue the other replaced waited for ever. The second now finds the peer registered."""
        lock = self._registering.setdefault(peer_id, trio.Lock())
        try:
            async with lock:
                await super()._handle_new_peer(peer_id)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting and self._registering.get(peer_id) is lock:
                del self._registering[peer_id]


mesh_log = logging.getLogger("cmnode.p2p.mesh")
"""At debug level: each job's way through this node (published, validated, forwarded) and each change of the
gossipsub mesh, for ``benchmarks/mesh.py`` (``--node-arg=--log-level --node-arg=debug``) to explain a late job."""
_JOB_ID = re.compile(rb'^\{"type":"job","job":\{.*?"job_id":"([0-9a-f-]{36})"')


def traced_job(data: bytes) -> str | None:
    """The job ID of a gossip message that carries a job (``wire.encode``'s layout), else None; debug only."""
    match = _JOB_ID.match(data)
    return match.group(1).decode() if match else None


Handler = Callable[[Any, Any], Awaitable[dict[str, Any]]]

DEGREE, DEGREE_LOW, DEGREE_HIGH = 3, 3, 6
"""Gossipsub's mesh degrees D, D_low, D_high ("Every connection costs while idle"). Each node receives every
message once per mesh neighbour and forwards it to the others, and on an idle mesh those messages are the node
records: at 30 nodes, copies of records were most of the cluster's CPU. D = 3 instead of 4 cuts the copies by about
a third (``benchmarks/simulate.py`` at N = 30: 20 -> 14 record copies a second per node) for about 0.4 hops more
across. D_low stays 3, the fewest connections a node seeks (``node/topology.py`` PEER_MIN): a node grafts back as
soon as its mesh falls below 3, so a copy lost on one link still arrives on two others. Measured at 30 nodes
(``benchmarks/mesh.py``, two runs against one of main): idle CPU 90 -> 76-77 % of a core, a job on all others at
10 jobs/s p99 888 -> 179-484 ms."""
GOSSIP_PEERS = 3
"""IHAVE goes to this many peers outside the mesh at each heartbeat (``LazyGossipSub``)."""
RTT_PING_INTERVAL = 300
"""Seconds between yamux's RTT pings on each connection, 30 in py-libp2p ("Yamux pings every connection every
30 s"): the RTT only paces a stream's receive-window growth, and liveness has pings of its own."""


GRAFT_SLACK = 3.0
"""Seconds past a prune backoff's end before this node grafts that peer (go-libp2p: two heartbeats)."""
FLAT = 0.05
"""A peer's decayed invalid-message count below which it counts as none (``LazyGossipSub.scores_flat``): 30 s
after a single rejection at SCORE_PARAMS' 10 % a second, and half the 0.1 a mesh peer replacement needs."""


class LazyGossipSub(GossipSub):
    """GossipSub whose heartbeat announces (IHAVE) recent messages to GOSSIP_PEERS peers outside the mesh, not
    py-libp2p's ``max(6, 25 %)`` of them (docs/py-libp2p.md, "IHAVE goes to every peer outside the mesh"): with
    records flowing every second, that was an RPC each second to every such peer, which they nearly always
    already had. IHAVE is the lazy repair of a lost copy; catch-up is the backstop. Its score passes run only
    while scores differ (``scores_flat``)."""

    def scores_flat(self) -> bool:
        """Whether every peer's score is the same, so that the heartbeat's score passes are skipped
        (docs/py-libp2p.md, "Opportunistic grafting on equal scores churns the mesh"): SCORE_PARAMS weighs
        only invalid messages, so scores differ only while some peer's count is FLAT or more."""
        scorer = self.scorer
        return scorer is None or all(n < FLAT for counts in scorer.invalid_messages.values() for n in counts.values())

    def _perform_opportunistic_grafting(self, topic: str, peers_to_graft: defaultdict[ID, list[str]]) -> int:
        """Grafts beyond D only to replace low scorers, as go-libp2p does: py-libp2p grafts the first two peers
        whose score reaches half the mesh's median, so with equal scores any two, at every heartbeat."""
        return 0 if self.scores_flat() else super()._perform_opportunistic_grafting(topic, peers_to_graft)

    async def _maintain_mesh_quality(self, topic: str) -> None:
        """Replaces the worst mesh peer with one scoring 0.1 more: none while scores are flat."""
        if not self.scores_flat():
            await super()._maintain_mesh_quality(topic)

    def _get_adaptive_gossip_peers_count(self, topic: str, total_peers: int) -> int:
        if self.adaptive_gossip_enabled:
            return super()._get_adaptive_gossip_peers_count(topic, total_peers)
        return max(0, min(GOSSIP_PEERS, total_peers))

    def gossip_heartbeat(self) -> defaultdict[ID, dict[str, list[bytes]]]:
        """IHAVE of the recent messages to GOSSIP_PEERS peers outside the mesh, chosen whether or not a prune
        backoff stands between us (docs/py-libp2p.md, "A node in backoff with all its peers hears no gossip").
        py-libp2p leaves peers in backoff out, as it does when grafting; a node whose mesh had emptied while every
        peer it holds was in backoff with it then heard of no message but through catch-up, seconds later. A
        backoff is about the mesh; go-libp2p gossips to such peers too."""
        told: defaultdict[ID, dict[str, list[bytes]]] = defaultdict(dict)
        if self.pubsub is None:
            return told
        for topic, mesh in self.mesh.items():
            msg_ids = self.mcache.window(topic)
            if not msg_ids or topic not in self.pubsub.peer_topics:
                continue
            others = [p for p in self.pubsub.peer_topics[topic] if p not in mesh and p in self.peer_protocol]
            for peer in self.select_from_minus(self._get_adaptive_gossip_peers_count(topic, len(others)), others, ()):
                told[peer][topic] = list(msg_ids)
        return told

    def _get_in_topic_gossipsub_peers_from_minus(
        self, topic: str, num_to_select: int, minus: Iterable[ID], backoff_check: bool = False
    ) -> list[ID]:
        """Peers to graft: a peer whose backoff ended less than GRAFT_SLACK seconds ago is not grafted yet (go-libp2p
        keeps the same slack; docs/py-libp2p.md, "A node in backoff with all its peers hears no gossip"). Without
        it a node grafted a peer in the very second its own backoff ended, while the peer's (set a moment later,
        on our PRUNE) still ran: refused, both backoffs renewed for 60 s, and again."""
        if not backoff_check:
            return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, minus, False)
        until, now = self.back_off.get(topic, {}), time.time()
        for peer in [p for p, t in until.items() if t + GRAFT_SLACK <= now]:
            del until[peer]  # ended, slack included (the library deletes an entry as soon as it ends)
        return super()._get_in_topic_gossipsub_peers_from_minus(topic, num_to_select, set(minus) | set(until), False)

    def _get_peers_to_send(
        self, topic_ids: Iterable[str], msg_forwarder: ID, origin: ID, msg_id: bytes | None = None
    ) -> Iterable[ID]:
        """Our own messages go to every connected peer on the topic, not only the mesh: gossipsub 1.1's flood
        publishing (go-libp2p's default; docs/py-libp2p.md, "Our own messages go only to the mesh"). A job then
        reaches all of the origin's connections (5-29 at 30 nodes, ~6 on average) at the first hop instead of
        its D mesh peers: one hop fewer across the cluster, for a few more copies of the node's own messages.
        What others publish is forwarded to the mesh only, as before."""
        topic_ids = list(topic_ids)
        peers = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        if self.pubsub is not None and origin == msg_forwarder == self.pubsub.my_id:
            for topic in topic_ids:
                peers.update(p for p in self.pubsub.peer_topics.get(topic, ()) if p in self.peer_protocol)
            peers.discard(origin)
        return peers

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        if mesh_log.isEnabledFor(logging.DEBUG) and (job_id := traced_job(pubsub_msg.data)):
            mesh_log.debug("gossip forward job_id=%s from=%s mesh=%d", job_id, msg_forwarder,
                           len(self.mesh.get(TOPIC, ())))  # fmt: skip
        await super().publish(msg_forwarder, pubsub_msg)

    # -- the mesh's changes, at debug level (benchmarks/mesh.py ``--trace`` reads them: which node had no mesh
    # when a job reached it late) -----------------------------------------------------------------------------

    def mesh_heartbeat(self) -> tuple[Any, Any]:
        graft, prune = super().mesh_heartbeat()
        if (graft or prune) and mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh heartbeat size=%d grafted=%d pruned=%d", len(self.mesh.get(TOPIC, ())),
                           len(graft), len(prune))  # fmt: skip
        return graft, prune

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        await super().handle_graft(graft_msg, sender_peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh graft from=%s accepted=%s size=%d", sender_peer_id,
                           sender_peer_id in self.mesh.get(TOPIC, ()), len(self.mesh.get(TOPIC, ())))  # fmt: skip

    async def handle_prune(self, prune_msg: rpc_pb2.ControlPrune, sender_peer_id: ID) -> None:
        await super().handle_prune(prune_msg, sender_peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh prune from=%s size=%d", sender_peer_id, len(self.mesh.get(TOPIC, ())))

    def remove_peer(self, peer_id: ID) -> None:
        super().remove_peer(peer_id)
        if mesh_log.isEnabledFor(logging.DEBUG):
            mesh_log.debug("gossip mesh removed=%s size=%d", peer_id, len(self.mesh.get(TOPIC, ())))


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
