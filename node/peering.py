"""Finding and keeping peers: bootstrap addresses (redialled with backoff), mDNS, and peer exchange.

Which peers a node connects to is a separate job from what it says to them: this module only dials (and closes).
It tells whoever listens (``on_connect``, the catch-up scheduler) about every new connection, so a node that
joins or returns catches up with each peer it meets.

How many connections to keep, and which peers to top up from or trim, is ``node/topology.py``'s to decide;
this module carries it out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from .config import Config
from .gossip import MeshStats
from .host import Host
from .liveness import keepalive
from .mdns import Discovery
from .reach import PROBE_TIMEOUT, REACH_TIMEOUT, handshake_failed, tcp_reaches, tcp_targets
from .topology import MAINTAIN_EVERY, MAX_EXCHANGED, PEER_MAX, PEER_TARGET, Topology, hold_off

__all__ = ["MAX_EXCHANGED", "PEER_MAX", "PEER_TARGET", "Peering", "no_auto_connect"]

log = logging.getLogger("cmnode.p2p")

DIAL_TIMEOUT = 4.0
"""A dial, handshake included, must finish in this time. A peer with another swarm key (or none) never
completes the handshake, and py-libp2p alone gives up only after 20-40 s; on loopback or a LAN a real
handshake takes milliseconds (a slower one is retried with the bootstrap backoff)."""
BOOTSTRAP_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
REDIAL_BACKOFF = (0.25, 0.5, 1.0)
"""Between dials of a peer whose connection died (``redial``): a healed partition is noticed within about a
second more than the kernel's SYN retransmission (a dial in flight when the link comes back sends its next SYN
1 s or 3 s after the first, inside DIAL_TIMEOUT)."""
REDIAL_FOR = 300.0
"""A peer that went away is dialled for this long (seconds) before only bootstrap and discovery remain."""
FLAPPING = 10.0
"""A peer that goes away again within this many seconds of a redial is dialled again only after FLAPPING_DELAY
(a peer that cuts us off on purpose is not dialled four times a second)."""
FLAPPING_DELAY = 5.0
MAX_REDIALS = 200
DIAL_QUEUE = 1000


class ConnectionWatch(INotifee):
    """Tells ``on_connect`` about every new connection and ``on_disconnect`` about a peer's last one closing,
    and logs each peer's arrival and departure once: a peer may hold two connections for a while (both sides
    dialled), which is neither a second arrival nor a drop. Every connection gets the kernel's keepalive
    (``liveness.keepalive``)."""

    def __init__(self, on_connect: Callable[[ID], None], on_disconnect: Callable[[ID], None] | None = None) -> None:
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self._up: set[ID] = set()
        """Peers said to be connected; one holds a connection now, so this is bounded by the connections."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        keepalive(conn)  # "A silent partition leaves connections open"
        if peer_id not in self._up:
            self._up.add(peer_id)
            log.info("peer connected peer=%s address=%s", peer_id, _remote(conn))
        self.on_connect(peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        # The swarm forgets a connection before it says so: no connection left means the peer is gone.
        peer_id = conn.muxed_conn.peer_id
        if peer_id in self._up and not network.get_connections(peer_id):
            self._up.discard(peer_id)
            log.info("peer disconnected peer=%s", peer_id)
            if self.on_disconnect is not None:
                self.on_disconnect(peer_id)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def _remote(conn: INetConn) -> str:
    """The peer's end of a connection, for the log ("?" when the transport does not say)."""
    with contextlib.suppress(Exception):
        for addr in conn.get_transport_addresses():
            return str(addr)
    return "?"


class Peering:
    """Dials peers for one host. ``watch`` before the host runs, then ``run`` in the mesh's nursery."""

    def __init__(
        self,
        *,
        config: Config,
        stats: MeshStats,
        members: Callable[[], list[str]] | None = None,
        size: Callable[[], int] | None = None,
    ) -> None:
        """``members``, ``size``: what the registry knows of the cluster (``Topology``)."""
        self.config = config
        self.stats = stats
        self.topology = Topology(stats=stats, members=members, size=size)
        self._dial_send, self._dial_recv = trio.open_memory_channel[PeerInfo](DIAL_QUEUE)
        self._dialing: set[ID] = set()
        self._queued: set[ID] = set()
        """Peers put in the dial queue by a top-up and not yet taken by the dialer (bounded by DIAL_QUEUE)."""
        self._host: Host | None = None
        self._nursery: trio.Nursery | None = None
        self._redialing: set[ID] = set()
        self._redialled: dict[ID, float] = {}
        """When each peer was last reconnected by ``redial`` (bounded by MAX_REDIALS, oldest forgotten first)."""
        self._told: set[ID] = set()
        """Peers whose failed handshake was logged: one line per peer until it connects."""

    def watch(
        self, host: Host, on_connect: Callable[[ID], None], on_disconnect: Callable[[ID], None] | None = None
    ) -> None:
        def connected(peer_id: ID) -> None:
            if self._refuse(peer_id):
                return
            self.topology.connected(peer_id)
            on_connect(peer_id)

        def disconnected(peer_id: ID) -> None:
            self.topology.disconnected(peer_id)
            if on_disconnect is not None:
                on_disconnect(peer_id)

        network = host.host.get_network()
        no_auto_connect(network)
        network.register_notifee(ConnectionWatch(connected, disconnected))

    async def run(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dial what is found, keep bootstrap peers connected and discover over mDNS until cancelled."""
        self._host = self.topology.host = host
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._dialer, nursery)
            nursery.start_soon(self._maintain)
            for address in self.config.bootstrap:
                nursery.start_soon(self._keep_connected, address)
            if self.config.mdns:
                await nursery.start(self._discover, host)
            task_status.started()

    def meet(self, addresses: list[Any]) -> None:
        """Peer exchange: remember the peers a peer told us about, and dial some until this node holds its target
        (``Topology.target``)."""
        host = self._host
        if host is None:
            return
        self._top_up(self.topology.remember(addresses, host.peer_id))

    def _top_up(self, among: list[ID]) -> None:
        """Queue dials to the peers of ``among`` the topology chooses."""
        for info in self.topology.top_up(among, self._dialing | self._queued):
            with contextlib.suppress(trio.WouldBlock):
                self._dial_send.send_nowait(info)
                self._queued.add(info.peer_id)

    async def _maintain(self) -> None:
        """Every MAINTAIN_EVERY: short of the target, dial known peers (the registry's members too); above the
        ceiling, trim."""
        assert self._host is not None
        topology = self.topology
        while True:
            await trio.sleep(MAINTAIN_EVERY)
            topology.prune()
            if topology.short(len(self._dialing) + len(self._queued)):
                topology.lookup_members(self._host.peer_id)
                self._top_up(list(topology.known))
            await topology.trim()

    def _refuse(self, peer_id: ID) -> bool:
        """A trimmed peer back while we are still above the ceiling: closed again, quietly."""
        host, nursery = self._host, self._nursery
        if host is None or nursery is None or not self.topology.refuse(peer_id):
            return False
        hold_off(host, peer_id)
        nursery.start_soon(_disconnect, host, peer_id)
        return True

    def redial(self, peer_id: ID) -> None:
        """Dial a peer whose connection died or closed (``node/liveness.py``, ``ConnectionWatch``) at the
        addresses it announced, with a short backoff, until connected or REDIAL_FOR; at most MAX_REDIALS peers
        at once."""
        host, nursery = self._host, self._nursery
        if host is None or nursery is None or peer_id in self._redialing or len(self._redialing) >= MAX_REDIALS:
            return
        self.topology.hold(peer_id)  # not a top-up choice
        self._redialing.add(peer_id)
        nursery.start_soon(self._redial, peer_id)

    async def _redial(self, peer_id: ID) -> None:
        assert self._host is not None
        host = self._host
        began = trio.current_time()
        try:
            last = self._redialled.get(peer_id)
            if last is not None and time.monotonic() - last < FLAPPING:
                await trio.sleep(FLAPPING_DELAY)
            attempt = 0
            while trio.current_time() - began < REDIAL_FOR:
                await trio.sleep(REDIAL_BACKOFF[min(attempt, len(REDIAL_BACKOFF) - 1)])
                attempt += 1
                if host.connected(peer_id) or not self.topology.wants_back():
                    return  # enough other connections (the top-up finds the last one): the mesh stays whole
                try:
                    addrs = list(host.host.get_peerstore().addrs(peer_id))
                except Exception:  # the peerstore forgot it: nothing to dial
                    addrs = []
                if not addrs:
                    return
                if peer_id in self._dialing:
                    continue
                self._dialing.add(peer_id)
                try:
                    if await self._dial(PeerInfo(peer_id, addrs), known=True):
                        log.debug("peer %s redialled", peer_id)  # "peer connected" says it, once
                        self._redialled[peer_id] = time.monotonic()
                        while len(self._redialled) > MAX_REDIALS:
                            del self._redialled[next(iter(self._redialled))]
                        return
                finally:
                    self._dialing.discard(peer_id)
        finally:
            self._redialing.discard(peer_id)

    async def probe(self, peer_id: ID, handshake: bool = True) -> bool:
        """Whether ``peer_id``, whose last connection just closed, can be reached: a bare TCP connection to the
        addresses it announced within REACH_TIMEOUT (``reaches``), then, if ``handshake``, one dial, handshake included
        (a frozen process accepts TCP but never completes it; ``node/losswatch.py`` bounds the time). A peer connected
        again meanwhile, or with no address to dial, counts as reached (no verdict). The probe's connection stays only
        if the topology would dial the peer back anyway (``Topology.wants_back``: short by more than one); otherwise it
        is closed at once, as this node's own close. Kept whenever this node was below its target, a hub that had
        trimmed this node refused it a second later, which looked like another loss: at 30 nodes the bootstrap node saw
        3 such connections a second while idle."""
        host = self._host
        if host is None or host.connected(peer_id):
            return True
        try:
            addrs = list(host.host.get_peerstore().addrs(peer_id))
        except Exception:  # the peerstore forgot it: nowhere to dial
            addrs = []
        if not addrs:
            return True
        if not await tcp_reaches(addrs, REACH_TIMEOUT):  # refused, or no answer: a full dial would only wait longer
            return False
        if not handshake:
            return True
        dialing = peer_id in self._dialing
        self._dialing.add(peer_id)
        try:
            reached = await self._dial(PeerInfo(peer_id, addrs), known=True)
        finally:
            if not dialing:
                self._dialing.discard(peer_id)
        if reached and not self.topology.wants_back():
            await _disconnect(host, peer_id)
        return reached

    async def reaches(self, peer_id: ID) -> bool:
        """Whether any TCP address ``peer_id`` announced accepts a connection within REACH_TIMEOUT (no address
        known: True, no verdict). Its kernel answers, whatever its process is doing: a liveness ping missed on a
        connection whose peer this does not reach is a link (or host) that is gone, not a busy node."""
        host = self._host
        if host is None:
            return True
        try:
            addrs = list(host.host.get_peerstore().addrs(peer_id))
        except Exception:  # the peerstore forgot it
            addrs = []
        return not addrs or await tcp_reaches(addrs, REACH_TIMEOUT)

    async def _discover(self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """mDNS: announce our concrete addresses and dial every peer found at once, not after the library's
        ~10 s poll. Zeroconf blocks, so it starts and stops in a worker thread (docs/py-libp2p.md, "mDNS")."""
        token = trio.lowlevel.current_trio_token()
        send = self._dial_send

        def found(info: PeerInfo) -> None:  # called from a zeroconf thread
            with contextlib.suppress(trio.RunFinishedError, trio.WouldBlock, trio.ClosedResourceError):
                trio.from_thread.run_sync(send.send_nowait, info, trio_token=token)

        addresses = [str(a).rsplit("/p2p/", 1)[0] for a in host.host.get_addrs()]
        lan = [a for a in addresses if not a.startswith("/ip4/127.")] or addresses
        peerDiscovery.register_peer_discovered_handler(found)  # before browsing starts, or early finds are lost
        try:
            discovery = await trio.to_thread.run_sync(Discovery, host.host.get_network(), host.port, lan)
            try:
                await trio.to_thread.run_sync(discovery.start)
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await trio.to_thread.run_sync(discovery.stop, abandon_on_cancel=True)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(found)

    async def _dialer(self, nursery: trio.Nursery) -> None:
        assert self._host is not None
        host = self._host
        async for info in self._dial_recv:
            peer_id = info.peer_id
            self._queued.discard(peer_id)
            if peer_id != host.peer_id and peer_id not in self._dialing and not host.connected(peer_id):
                self._dialing.add(peer_id)
                nursery.start_soon(self._dial_once, info)

    async def _dial_once(self, info: PeerInfo) -> None:
        try:
            await self._dial(info)
        finally:
            self._dialing.discard(info.peer_id)

    async def _dial(self, info: PeerInfo, *, known: bool = False) -> bool:
        """Connect within DIAL_TIMEOUT; a peer that offers no common security fails here. ``known``: a peer we
        were connected to (so it has our swarm key): a failure only means it is not reachable now."""
        assert self._host is not None
        self.stats.dials += 1
        # "A failed dial blocks the peer for 60 s": ours are deliberate retries, so lift the block first.
        network: Any = self._host.host.get_network()
        if hasattr(network, "unblock_peer"):
            network.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await self._host.host.connect(info)
            self._told.discard(info.peer_id)
            return True
        except trio.TooSlowError:
            self.stats.dial_failures += 1
            if known:  # it had our key a moment ago: not reachable (a partition), which liveness has said
                log.debug("dial %s timed out after %gs", info.peer_id, DIAL_TIMEOUT)
            else:
                await self._no_handshake(info, timed_out=True)
            return False
        except Exception as exc:
            self.stats.dial_failures += 1
            if handshake_failed(exc) and not known:  # it hung up on what we said: with a swarm key, another key
                await self._no_handshake(info, timed_out=False)
            log.debug("dial %s failed: %s", info.peer_id, exc or type(exc).__name__)
            return False

    async def _no_handshake(self, info: PeerInfo, *, timed_out: bool) -> None:
        """The one line an operator needs when a dial fails for a reason other than a refused connection. A
        timeout alone does not say why: a bare TCP connection tells a peer that is not reachable (a partition,
        a firewall) from one that answers but never completes the handshake (another swarm key)."""
        addrs = " ".join(str(a) for a in info.addrs) or "?"
        if info.peer_id in self._told or len(self._told) >= MAX_EXCHANGED:
            log.debug("dial %s at %s: no connection within %gs", info.peer_id, addrs, DIAL_TIMEOUT)
            return
        self._told.add(info.peer_id)
        if timed_out and not (tcp_targets(info.addrs) and await tcp_reaches(info.addrs, PROBE_TIMEOUT)):
            log.warning(
                "peer %s at %s is not reachable: no TCP connection within %g s (down, a partition or a "
                "firewall); retrying quietly", info.peer_id, addrs, DIAL_TIMEOUT + PROBE_TIMEOUT,
            )  # fmt: skip
            return
        log.warning(
            "peer %s at %s did not complete the handshake within %g s: it has a different swarm key (or none), "
            "or is not a cmnode node; retrying quietly", info.peer_id, addrs, DIAL_TIMEOUT,
        )  # fmt: skip

    async def _keep_connected(self, address: str) -> None:
        """A bootstrap peer: dial it, and dial again with backoff whenever the connection is gone."""
        assert self._host is not None
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            log.warning("ignoring bootstrap address %s: %s", address, exc)
            return
        self.topology.bootstrap.add(info.peer_id)
        failures = 0
        while True:
            enough = not self.topology.wants_back()  # a member: the mesh keeps us (``Topology.wants_back``)
            if self._host.connected(info.peer_id) or enough or await self._dial(info):
                failures = 0
                await trio.sleep(BOOTSTRAP_BACKOFF[0] * 5)
                continue
            if failures == 0 and info.peer_id not in self._told:
                log.info("bootstrap peer %s not reachable yet; retrying", address)
            await trio.sleep(BOOTSTRAP_BACKOFF[min(failures, len(BOOTSTRAP_BACKOFF) - 1)])
            failures += 1


def no_auto_connect(network: INetwork) -> None:
    """Switch off the swarm's own auto-connector: which peers a node connects to is ``Topology``'s to decide.

    py-libp2p 0.8.1 starts an ``AutoConnector`` with every swarm that aims for 200 connections (the midpoint of its
    low and high watermarks, 100 and 300) and, every 10 s while below 50 and on every disconnect, dials every peer
    in the peerstore it is not connected to, but for the ones that disconnected in the last 60 s. So 60 s after a
    hub trimmed its excess, the trimmed nodes and the hub itself dialled each other again, the hub trimmed again
    once those connections were SETTLE old, and so on: at 30 idle nodes about 0.7 connections a second, each a
    handshake, pubsub's hello and grafts, and a full catch-up round with node records at both ends
    (docs/py-libp2p.md, "The swarm dials every known peer"). Its ``maybe_connect`` is replaced on the instance by
    one that does nothing (the periodic task and the disconnect trigger both look it up there); a library without
    the connector is left as it is."""
    connector: Any = getattr(network, "auto_connector", None)
    if connector is None:
        return

    async def maybe_connect() -> None:
        return None

    with contextlib.suppress(Exception):
        connector.maybe_connect = maybe_connect


async def _disconnect(host: Host, peer_id: ID) -> None:
    with contextlib.suppress(Exception):
        await host.host.disconnect(peer_id)
