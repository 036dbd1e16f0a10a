"""The mesh: a py-libp2p host in the node's nursery, gossipsub on ``jobs``, mDNS and bootstrap discovery,
catch-up and log fetching over request/response streams.

py-libp2p 0.8.1 loses messages silently with its defaults (see ``shared/notes/py-libp2p-0.8.md``); each
setting below that departs from them names the trap it avoids. In short: meshsub 1.1/1.0 only, a 1 s
heartbeat without adaptive gossip or spam limits, message IDs seeded from the clock, delivery straight from
pubsub into our own large inbox, and publishing through one task that waits while any peer's 32-slot
outbound queue is nearly full. Security is Noise only, so a peer offering plaintext is refused.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import ifaddr
import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.request_response import JSONCodec, RequestResponse, RequestResponseConfig, RequestResponseError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from .config import Config
from .core import MeshHooks, Node
from .errors import NodeError, NotFoundError, PeerUnreachableError
from .identity import Identity
from .mdns import Discovery
from .model import Execution, Job
from .store import Store
from .sync import SYNC_PROTOCOL, Replica
from .wire import TOPIC, CancelMsg, Envelope, ExecutionMsg, JobMsg, WireError, decode, encode

log = logging.getLogger("cmnode.p2p")

LOGS_PROTOCOL = "/cmnode/logs/1"
DIAL_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0
SYNC_INTERVAL = 15.0
"""Catch-up also runs this often with every peer, so a gossip message lost in transit is repaired."""
BOOTSTRAP_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
PEER_QUEUE_HIGH = 24
"""Publish waits while a peer's outbound queue holds this many RPCs: gossipsub drops beyond 32 (trap 2)."""
OUTBOX_SIZE = 10_000
INBOX_SIZE = 100_000
INBOX_BATCH = 500
VALIDATED_CACHE = 10_000
MAX_EXCHANGED = 200
PEER_TARGET = 2
"""Connections a node seeks through peer exchange (bootstrap and mDNS peers are always dialled)."""


@dataclass
class MeshStats:
    """Counters of the gossip layer, read by the metrics endpoint."""

    messages_in: int = 0
    messages_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dials: int = 0
    dial_failures: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class _DirectPubsub(Pubsub):
    """Pubsub that hands every validated message to a callback instead of a 32-slot subscription queue,
    which a burst overflows silently (trap 7)."""

    deliver: Callable[[rpc_pb2.Message], None] = staticmethod(lambda msg: None)  # type: ignore[assignment]

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        if TOPIC in publish_message.topicIDs:
            self.deliver(publish_message)


class _ConnectionWatch(INotifee):
    """Tells the mesh about every new connection, so it catches up with that peer."""

    def __init__(self, on_connect: Callable[[ID], None]) -> None:
        self.on_connect = on_connect

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.on_connect(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class Mesh:
    """This node's place in the mesh. ``run`` it in the node's nursery, then ``attach`` the node."""

    def __init__(self, *, config: Config, identity: Identity, store: Store) -> None:
        self.config = config
        self.identity = identity
        self.store = store
        self.replica = Replica(store=store, node_id=identity.node_id)
        self.stats = MeshStats()
        self.host: IHost | None = None
        self._pubsub: _DirectPubsub | None = None
        self._rr: RequestResponse | None = None
        self._attached = trio.Event()
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[bytes](OUTBOX_SIZE)
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[str, Envelope]](INBOX_SIZE)
        self._validated: OrderedDict[bytes, Envelope] = OrderedDict()
        self._sync_send, self._sync_recv = trio.open_memory_channel[ID](1000)
        self._dial_send, self._dial_recv = trio.open_memory_channel[PeerInfo](1000)
        self._syncing: set[ID] = set()
        self._dialing: set[ID] = set()
        self._listen_port = 0
        # Both ends: a sync page of large jobs or a long log exceeds the library's 10 MiB default.
        self._rr_config = RequestResponseConfig(timeout=REQUEST_TIMEOUT, max_response_size=64 * 1024 * 1024)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    def hooks(self) -> MeshHooks:
        return MeshHooks(
            publish_job=self.publish_job,
            publish_cancel=self.publish_cancel,
            fetch_logs=self.fetch_logs,
            peers=self.peers,
            addresses=self.addresses,
            stats=self.snapshot,
        )

    def snapshot(self) -> dict[str, Any]:
        """The counters as one flat dict (``dropped`` keyed by reason), for the metrics endpoint."""
        sync = self.replica.stats
        return {
            "messages_in": self.stats.messages_in,
            "messages_out": self.stats.messages_out,
            "dropped": dict(self.stats.dropped),
            "dropped_total": self.stats.dropped_total,
            "outbox": self._outbox_send.statistics().current_buffer_used,
            "peers": len(self.host.get_connected_peers()) if self.host is not None else 0,
            "dials": self.stats.dials,
            "dial_failures": self.stats.dial_failures,
            "sync_rounds": sync.rounds,
            "sync_failures": sync.failures,
            "sync_jobs": sync.jobs,
            "sync_executions": sync.executions,
            "sync_dropped": dict(sync.dropped),
        }

    def attach(self, node: Node) -> None:
        """Start merging what peers send into ``node`` (held back until the executor runs)."""
        self.replica.node = node
        self._attached.set()

    # -- lifetime ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Listen, subscribe, discover and serve until cancelled."""
        listen = multiaddr.Multiaddr(f"/ip4/{_listen_ip(self.config.listen_address)}/tcp/{self.config.p2p_port}")
        key_pair = self.identity.key_pair
        host = new_host(
            key_pair=key_pair,
            # Noise only: the default also offers TLS, secio and plaintext, and accepts plaintext (trap 8).
            sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)},
            listen_addrs=[listen],
            addrs_factory=lambda candidates: [a for c in candidates for a in _expand(c)],  # never 0.0.0.0
        )
        self.host = host
        router = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],  # meshsub/1.2 starves data with control (trap 3)
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=1,  # the default is 120 s (trap 4)
            adaptive_gossip_enabled=False,  # stretched the heartbeat to 30 s (trap 4)
            spam_protection_enabled=False,  # 10 msg/s per topic, own publishes included (trap 1)
            eclipse_protection_enabled=False,  # wants 3 distinct IPs; loopback and one bridge have fewer
        )
        pubsub = _DirectPubsub(host, router, max_inbound_rpc_size=2 * 1024 * 1024)
        pubsub.counter = time.time_ns()  # seqno from whole seconds repeats after a restart (trap 5)
        pubsub.deliver = self._deliver
        pubsub.set_topic_validator(TOPIC, self._validate, False)
        self._pubsub = pubsub
        self._rr = rr = RequestResponse(host)
        rr_config = self._rr_config
        rr.set_handler(TProtocol(SYNC_PROTOCOL), self._serve_sync, JSONCodec(), rr_config)
        rr.set_handler(TProtocol(LOGS_PROTOCOL), self._serve_logs, JSONCodec(), rr_config)
        host.get_network().register_notifee(_ConnectionWatch(self._on_connect))
        # Pubsub must run before the host accepts streams, or an early pubsub stream crashes trio (trap 6).
        async with (
            background_trio_service(pubsub),
            background_trio_service(router),
            host.run(listen_addrs=[listen]),
            trio.open_nursery() as nursery,
        ):
            if not host.get_transport_addrs():  # the library logs a failed listen and carries on without one
                raise OSError(f"cannot listen on {listen} (p2p-port in use or address not available)")
            await pubsub.subscribe(TOPIC)
            self._listen_port = _port_of(host)
            nursery.start_soon(self._publisher)
            nursery.start_soon(self._consumer)
            nursery.start_soon(self._sync_worker, nursery)
            nursery.start_soon(self._dialer, nursery)
            nursery.start_soon(self._anti_entropy)
            for address in self.config.bootstrap:
                nursery.start_soon(self._keep_connected, address)
            if self.config.mdns:
                await nursery.start(self._discover)
            log.info("mesh listening node_id=%s addresses=%s", self.node_id, " ".join(self.addresses()))
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def _discover(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """mDNS: announce our concrete addresses and dial every peer found at once, not after the
        library's ~10 s poll. Zeroconf blocks, so it starts and stops in a worker thread (trap 10)."""
        assert self.host is not None
        token = trio.lowlevel.current_trio_token()
        send = self._dial_send

        def found(info: PeerInfo) -> None:  # called from a zeroconf thread
            with contextlib.suppress(trio.RunFinishedError, trio.WouldBlock, trio.ClosedResourceError):
                trio.from_thread.run_sync(send.send_nowait, info, trio_token=token)

        addresses = [str(a).rsplit("/p2p/", 1)[0] for a in self.host.get_addrs()]
        lan = [a for a in addresses if not a.startswith("/ip4/127.")] or addresses
        peerDiscovery.register_peer_discovered_handler(found)  # before browsing starts, or early finds are lost
        try:
            discovery = await trio.to_thread.run_sync(Discovery, self.host.get_network(), self._listen_port, lan)
            try:
                await trio.to_thread.run_sync(discovery.start)
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await trio.to_thread.run_sync(discovery.stop, abandon_on_cancel=True)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(found)

    # -- publishing -------------------------------------------------------------------------------

    async def publish_job(self, job: Job) -> None:
        await self._publish(JobMsg(job))

    async def publish_execution(self, execution: Execution) -> None:
        if execution.node_id == self.node_id:
            await self._publish(ExecutionMsg(execution))

    async def publish_cancel(self, job_id: str) -> None:
        await self._publish(CancelMsg(job_id))

    async def _publish(self, msg: Envelope) -> None:
        """Queue for the publisher task; waits only when OUTBOX_SIZE messages are already queued."""
        await self._outbox_send.send(encode(msg))

    async def _publisher(self) -> None:
        """The one task that publishes, paced by the peers' outbound queues so none overflows (trap 2)."""
        assert self._pubsub is not None
        pubsub = self._pubsub
        async for data in self._outbox_recv:
            while any(len(q) >= PEER_QUEUE_HIGH for q in list(pubsub.peer_queues.values())):
                await trio.sleep(0.001)  # the library offers no "queue drained" event to wait on
            try:
                await pubsub.publish(TOPIC, data)
                self.stats.messages_out += 1
            except Exception as exc:  # a library failure must not stop publishing; catch-up repairs it
                log.warning("publish failed: %s", exc)

    # -- receiving --------------------------------------------------------------------------------

    def _validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Topic validator: a rejected message is neither delivered nor forwarded."""
        sender = ID(msg.from_id).to_base58()
        if sender == self.node_id:
            return True
        try:
            envelope = decode(msg.data, sender=sender)
        except WireError as exc:
            self.stats.dropped[exc.reason] = self.stats.dropped.get(exc.reason, 0) + 1
            log.debug("gossip dropped from=%s via=%s: %s", sender, forwarder, exc)
            return False
        # Pubsub delivers it next (unless it turns out to be a duplicate): keep the parsed value for _deliver.
        self._validated[msg.from_id + msg.seqno] = envelope
        while len(self._validated) > VALIDATED_CACHE:
            self._validated.popitem(last=False)
        return True

    def _deliver(self, msg: rpc_pb2.Message) -> None:
        sender = ID(msg.from_id).to_base58()
        envelope = self._validated.pop(msg.from_id + msg.seqno, None)
        if sender == self.node_id or envelope is None:
            return
        try:
            self._inbox_send.send_nowait((sender, envelope))
        except trio.WouldBlock:
            self.stats.dropped["overload"] = self.stats.dropped.get("overload", 0) + 1

    async def _consumer(self) -> None:
        """Apply what arrived in batches: one task per job, so messages about a job keep their order while
        different jobs share the store's group commits instead of paying one fsync each."""
        await self._attached.wait()
        async for first in self._inbox_recv:
            batch = [first]
            while len(batch) < INBOX_BATCH:
                try:
                    batch.append(self._inbox_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            by_job: dict[str, list[tuple[str, Envelope]]] = {}
            for sender, msg in batch:
                self.stats.messages_in += 1
                by_job.setdefault(_job_of(msg), []).append((sender, msg))
            if len(by_job) == 1:  # the usual case when not in a burst: no task to spawn
                await self._apply(next(iter(by_job.values())))
                continue
            async with trio.open_nursery() as nursery:
                for messages in by_job.values():
                    nursery.start_soon(self._apply, messages)

    async def _apply(self, messages: list[tuple[str, Envelope]]) -> None:
        for sender, msg in messages:
            try:
                if isinstance(msg, JobMsg):
                    await self.replica.on_job(msg.job)
                elif isinstance(msg, ExecutionMsg):
                    await self.replica.on_executions([msg.execution])
                else:
                    await self.replica.on_cancel(msg.job_id)
            except NodeError as exc:  # e.g. the local queue is full: the job is recorded, not run
                log.warning("cannot apply gossip from %s: %s", sender, exc.message)

    # -- connections and catch-up -----------------------------------------------------------------

    def _on_connect(self, peer_id: ID) -> None:
        with contextlib.suppress(trio.WouldBlock):  # if full, the periodic round catches up with it
            self._sync_send.send_nowait(peer_id)

    async def _anti_entropy(self) -> None:
        assert self.host is not None
        while True:
            await trio.sleep(SYNC_INTERVAL)
            for peer_id in self.host.get_connected_peers():
                self._on_connect(peer_id)

    async def _sync_worker(self, nursery: trio.Nursery) -> None:
        await self._attached.wait()
        async for peer_id in self._sync_recv:
            if peer_id not in self._syncing:
                self._syncing.add(peer_id)
                nursery.start_soon(self._catch_up, peer_id)

    async def _catch_up(self, peer_id: ID) -> None:
        assert self._rr is not None
        rr = self._rr

        async def request(body: dict[str, Any]) -> Any:
            page = await rr.send_request(peer_id, [TProtocol(SYNC_PROTOCOL)], body, JSONCodec(), self._rr_config)
            if isinstance(page, dict) and isinstance(page.get("peers"), list):
                self._meet(page.pop("peers"))
            return page

        stats = self.replica.stats
        before = (stats.jobs, stats.executions)
        try:
            pages = await self.replica.catch_up(peer_id.to_base58(), request)
            jobs, executions = stats.jobs - before[0], stats.executions - before[1]
            if jobs or executions:  # news that gossip did not bring (missed while away, or lost)
                log.info("caught up with peer=%s jobs=%d executions=%d pages=%d", peer_id, jobs, executions, pages)
        except (RequestResponseError, WireError, NodeError) as exc:
            self.replica.stats.failures += 1
            log.debug("catch-up with %s failed: %s", peer_id, exc)
        finally:
            self._syncing.discard(peer_id)

    async def _serve_sync(self, request: Any, context: Any) -> dict[str, Any]:
        answer = await self.replica.serve(request)
        if "error" not in answer:  # peer exchange: bootstrap through one node still yields a full mesh
            answer["peers"] = [
                f"{addr}/p2p/{p['node_id']}" for p in self.peers() if p["node_id"] != str(context.peer_id)
                for addr in p["addresses"]
            ]  # fmt: skip
        return answer

    def _meet(self, addresses: list[Any]) -> None:
        """Dial some of the peers a peer told us about, until this node has PEER_TARGET connections: a node
        that joined through a bootstrap node gains another path, so losing that node need not split the mesh,
        while gossip is not repeated between every pair of nodes (measured: on one 2-core machine, 10 nodes
        with 25 connections spent far more CPU per message than with 9 to 16)."""
        assert self.host is not None
        room = PEER_TARGET - len(self.host.get_connected_peers()) - len(self._dialing)
        candidates: dict[ID, PeerInfo] = {}
        for address in addresses[:MAX_EXCHANGED]:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(str(address)))
            except Exception:
                continue
            peer_id = info.peer_id
            if peer_id == self.host_id or self._connected(peer_id) or peer_id in self._dialing:
                continue
            if peer_id in candidates:
                candidates[peer_id].addrs.extend(info.addrs)
            else:
                candidates[peer_id] = info
        chosen = list(candidates.values())
        random.shuffle(chosen)  # so that nodes told the same list do not all pick the same few peers
        for info in chosen[: max(room, 0)]:
            with contextlib.suppress(trio.WouldBlock):
                self._dial_send.send_nowait(info)

    async def _dialer(self, nursery: trio.Nursery) -> None:
        async for info in self._dial_recv:
            peer_id = info.peer_id
            if peer_id != self.host_id and peer_id not in self._dialing and not self._connected(peer_id):
                self._dialing.add(peer_id)
                nursery.start_soon(self._dial_once, info)

    async def _dial_once(self, info: PeerInfo) -> None:
        try:
            await self._dial(info)
        finally:
            self._dialing.discard(info.peer_id)

    async def _dial(self, info: PeerInfo) -> bool:
        """Connect within DIAL_TIMEOUT; a peer that offers no common security fails here."""
        assert self.host is not None
        self.stats.dials += 1
        # The swarm refuses to dial a peer for 60 s after a failed dial; ours are deliberate retries.
        network: Any = self.host.get_network()
        if hasattr(network, "unblock_peer"):
            network.unblock_peer(info.peer_id)
        try:
            with trio.fail_after(DIAL_TIMEOUT):
                await self.host.connect(info)
            return True
        except (trio.TooSlowError, Exception) as exc:
            self.stats.dial_failures += 1
            log.debug("dial %s failed: %s", info.peer_id, exc or type(exc).__name__)
            return False

    async def _keep_connected(self, address: str) -> None:
        """A bootstrap peer: dial it, and dial again with backoff whenever the connection is gone."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            log.warning("ignoring bootstrap address %s: %s", address, exc)
            return
        failures = 0
        while True:
            if self._connected(info.peer_id) or await self._dial(info):
                failures = 0
                await trio.sleep(BOOTSTRAP_BACKOFF[0] * 5)
                continue
            if failures == 0:
                log.info("bootstrap peer %s not reachable yet; retrying", address)
            await trio.sleep(BOOTSTRAP_BACKOFF[min(failures, len(BOOTSTRAP_BACKOFF) - 1)])
            failures += 1

    @property
    def host_id(self) -> ID:
        return self.identity.peer_id

    def _connected(self, peer_id: ID) -> bool:
        return self.host is not None and bool(self.host.get_network().get_connections(peer_id))

    # -- logs from other nodes --------------------------------------------------------------------

    async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]:
        """Another node's output of a job, over ``/cmnode/logs/1``.

        Raises:
            PeerUnreachableError: not connected to that node, or it did not answer.
            NotFoundError: it has no execution of the job.
        """
        assert self._rr is not None
        try:
            peer_id = ID.from_base58(node_id)
        except Exception:
            raise NotFoundError(f"{node_id!r} is not a node ID") from None
        if not self._connected(peer_id):
            raise PeerUnreachableError(f"node {node_id} is not connected to this node", data={"node_id": node_id})
        try:
            answer = await self._rr.send_request(
                peer_id, [TProtocol(LOGS_PROTOCOL)], {"job_id": job_id, "tail": tail}, JSONCodec(), self._rr_config
            )
        except RequestResponseError as exc:
            raise PeerUnreachableError(f"node {node_id} did not answer: {exc}", data={"node_id": node_id}) from exc
        if not isinstance(answer, dict):
            raise PeerUnreachableError(f"node {node_id} sent a malformed answer", data={"node_id": node_id})
        if "error" in answer:
            raise NotFoundError(str(answer["error"]), data={"job_id": job_id, "node_id": node_id})
        return answer

    async def _serve_logs(self, request: Any, context: Any) -> dict[str, Any]:
        await self._attached.wait()
        if not isinstance(request, dict) or not isinstance(request.get("job_id"), str):
            return {"error": "request must be {job_id, tail}"}
        tail = request.get("tail")
        if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool) or tail < 0):
            return {"error": "tail must be a non-negative integer"}
        assert self.replica.node is not None
        try:
            return await self.replica.node.local_logs(request["job_id"], tail)
        except NodeError as exc:
            return {"error": exc.message}

    # -- describing the mesh ----------------------------------------------------------------------

    def addresses(self) -> list[str]:
        """The multiaddrs peers can dial, with our peer ID: interface addresses, never 0.0.0.0."""
        return [str(a) for a in self.host.get_addrs()] if self.host is not None else []

    def peers(self) -> list[dict[str, Any]]:
        if self.host is None:
            return []
        network, peerstore = self.host.get_network(), self.host.get_peerstore()
        out = []
        for peer_id in self.host.get_connected_peers():
            try:  # the addresses it listens on (from identify, mDNS or our dial), else the connection's
                known = [str(a) for a in peerstore.addrs(peer_id)]
            except Exception:
                known = []
            addrs = [a for a in known if a.startswith("/ip4/") and "/tcp/" in a and "/0.0.0.0/" not in a]
            if not addrs:
                addrs = [str(a) for conn in network.get_connections(peer_id) for a in conn.get_transport_addresses()]
            out.append({"node_id": peer_id.to_base58(), "addresses": sorted(set(addrs))})
        return sorted(out, key=lambda p: p["node_id"])


def _job_of(msg: Envelope) -> str:
    if isinstance(msg, JobMsg):
        return msg.job.job_id
    if isinstance(msg, ExecutionMsg):
        return msg.execution.job_id
    return msg.job_id


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
