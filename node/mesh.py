"""The mesh: this node's place among its peers, composed of a host (host.py), gossip (gossip.py), peering
(peering.py) and catch-up (catchup.py), plus other nodes' logs over ``/cmnode/logs/1`` (and, as they are written,
``/cmnode/logs/follow/1``: node/meshlogs.py).

It is built after the node and knows it only as an ``Inbound``; the node reaches it only through its
``MeshLink`` (see link.py for the start-up ordering this keeps).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.request_response import RequestResponseError

from . import senderrecord
from .catchup import Catchup
from .config import Config
from .errors import NodeError, NotFoundError, PeerUnreachableError
from .gossip import Gossip, MeshStats
from .host import Host
from .identity import Identity
from .link import Directory, Inbound, MeshLink
from .liveness import PING_PROTOCOL, Liveness, Pinger, abort
from .logfollow import Source
from .losswatch import LossWatch
from .lost import sign_lost
from .meshlogs import LOGS_FOLLOW_PROTOCOL, RemoteLogs, serve_follow
from .peering import MAX_EXCHANGED, Peering
from .store import Store
from .sync import SYNC_PROTOCOL, Sync
from .wire import TOPIC

__all__ = ["LOGS_PROTOCOL", "Mesh", "cut_unsubscribed"]

log = logging.getLogger("cmnode.p2p")

LOGS_PROTOCOL = "/cmnode/logs/1"
UNSUBSCRIBED_FOR = 15.0
"""A peer connected this long (seconds) whose subscription pubsub has not heard is cut off, so that both ends
start pubsub afresh on the next connection ("A connection can lose its pubsub streams", docs/py-libp2p.md)."""
REPAIR_EVERY = 5.0


class Mesh:
    """``run`` it in the node's nursery; while it runs, ``link`` answers the node's queries through it."""

    def __init__(
        self,
        *,
        config: Config,
        identity: Identity,
        store: Store,
        inbound: Inbound,
        link: MeshLink,
        directory: Directory | None = None,
    ) -> None:
        """``directory``: the node registry, fed node records and drain orders by gossip and catch-up."""
        self.config = config
        self.identity = identity
        self.inbound = inbound
        self.link = link
        self.gossip = Gossip(identity=identity, inbound=inbound, outbox=link.outbox, directory=directory)
        self.counters = self.gossip.stats
        self.directory = directory
        self.peering = Peering(config=config, stats=self.counters, members=self._members, size=self._size)
        self.sync = Sync(store=store, inbound=inbound, identity=identity, directory=directory)
        self.catchup = Catchup(sync=self.sync, peers=self.peers, meet=self.peering.meet)
        self.host: Host | None = None
        self.liveness: Liveness | None = None
        self.losswatch = LossWatch(
            probe=self.peering.probe, report=self._report_lost, enabled=self._gate, reaches=self.peering.reaches
        )
        if directory is not None:
            directory.vouch = self._vouch

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Listen, subscribe, discover and serve until cancelled.

        Raises:
            OSError: the p2p port cannot be listened on.
        """
        self.host = host = Host(config=self.config, identity=self.identity)
        # Everything that receives is in place before the host accepts anything.
        host.pubsub.deliver = self.gossip.deliver
        host.pubsub.forwarded = self.gossip.forwarded
        host.pubsub.set_topic_validator(TOPIC, self.gossip.validate, False)
        host.serve(SYNC_PROTOCOL, self.catchup.serve)
        host.serve(LOGS_PROTOCOL, self._serve_logs)
        host.host.set_stream_handler(TProtocol(LOGS_FOLLOW_PROTOCOL), self._serve_follow)  # node/meshlogs.py
        self.liveness = liveness = Liveness(
            peers=host.host.get_connected_peers,
            ping=Pinger(host),  # one long-lived stream per peer
            disconnect=lambda peer_id: self._cut_unanswering(host, peer_id),
            redial=self.peering.redial,
            heard=lambda peer_id: senderrecord.quiet_for(host.host, peer_id),  # alive without a ping
            on_miss=self.losswatch.suspect,  # a peer lost before its connection's end says so
        )  # "A silent partition leaves connections open"
        host.host.set_stream_handler(PING_PROTOCOL, liveness.answer)  # a peer that pings us is not pinged back
        self.peering.watch(host, self._on_connect, self._on_disconnect)
        self.losswatch.guard(host.host)
        async with host.running(), trio.open_nursery() as nursery:
            await nursery.start(self.losswatch.run)
            nursery.start_soon(self.gossip.publisher, host.pubsub)
            nursery.start_soon(self.gossip.consumer)
            nursery.start_soon(self.catchup.run, host)
            nursery.start_soon(self.gossip.police, host)
            nursery.start_soon(cut_unsubscribed, host, self.counters)
            await nursery.start(self.peering.run, host)
            nursery.start_soon(liveness.run)
            log.info("mesh listening node_id=%s addresses=%s", self.node_id, " ".join(self.addresses()))
            if host.psk is None:
                log.warning(
                    "no swarm key: this mesh is open. Any host that reaches p2p port %d can join it, read every "
                    "job (env included) and run containers on this node; set --swarm-key (cmnode keygen swarm-key)",
                    host.port,
                )
            with self.link.serving(self, self.gossip.publish_now):
                task_status.started()
                await trio.sleep_forever()
        raise AssertionError("unreachable")

    def _members(self) -> list[str]:
        """The addresses of the other nodes the registry heard of (their records say where they listen)."""
        if self.directory is None:
            return []
        records, _ = self.directory.known(MAX_EXCHANGED)
        return [a for record, _ in records if record.node_id != self.node_id for a in record.addresses]

    def _size(self) -> int:
        """How many nodes the registry heard from lately (this one included): what the connection target follows."""
        return self.directory.up() if self.directory is not None else 1

    def _on_connect(self, peer_id: ID) -> None:
        """A new connection: catch up with the peer, unless it is a penalised peer back too soon."""
        self.losswatch.opened(peer_id)
        if self.liveness is not None:
            self.liveness.on_connect(peer_id)
        if not self.gossip.banned(peer_id):
            self.catchup.on_connect(peer_id)

    def _on_disconnect(self, peer_id: ID) -> None:
        """A peer's last connection closed: probe it (``node/losswatch.py``) and dial it again (briefly), unless
        we cut it off for misbehaving."""
        self.losswatch.closed(peer_id)
        if not self.gossip.banned(peer_id):
            self.peering.redial(peer_id)

    async def _cut_unanswering(self, host: Host, peer_id: ID) -> None:
        """Liveness's cut of a peer that stopped answering pings: its probe must complete a handshake."""
        self.losswatch.unanswering(peer_id)
        await abort(host, peer_id)

    def _gate(self) -> bool:
        return self.directory is not None and self.directory.gate()

    def _vouch(self, node_id: str) -> bool:
        """Whether this node holds a connection to ``node_id``: a notice that it is lost is not taken here."""
        if self.host is None:
            return False
        try:
            return self.host.connected(ID.from_base58(node_id))
        except Exception:  # not a peer ID
            return False

    async def _report_lost(self, peer_id: ID) -> None:
        """A peer lost and not reachable: down here, and a signed notice to the mesh (none if it is down here
        already, say by another node's notice, or this node never had its record)."""
        if self.directory is None:
            return
        node_id = peer_id.to_base58()
        record = self.directory.record(node_id)
        if record is None:
            return
        notice = sign_lost(self.identity, node_id, record.seq, time.time())
        if self.directory.on_lost(notice):
            log.warning("peer %s lost: its connection closed and it did not answer a dial; telling the mesh", peer_id)
            await self.link.publish_lost(notice)

    # -- what the node asks (MeshView) ------------------------------------------------------------

    def addresses(self) -> list[str]:
        """The multiaddrs peers can dial, with our peer ID: interface addresses, never 0.0.0.0."""
        return self.host.addresses() if self.host is not None else []

    def peers(self) -> list[dict[str, Any]]:
        return self.host.peers() if self.host is not None else []

    def stats(self) -> dict[str, Any]:
        """The counters as one flat dict (``dropped`` keyed by reason), for the metrics endpoint."""
        sync = self.sync.stats
        return {
            "messages_in": self.counters.messages_in,
            "messages_out": self.counters.messages_out,
            "dropped": dict(self.counters.dropped),
            "dropped_total": self.counters.dropped_total,
            "outbox": self.link.queued,
            "peers": len(self.host.host.get_connected_peers()) if self.host is not None else 0,
            "gossip_mesh": len(self.host.router.mesh.get(TOPIC, ())) if self.host is not None else 0,
            "gossip_peers": len(self.host.pubsub.peer_topics.get(TOPIC, ())) if self.host is not None else 0,
            "trimmed": self.counters.trimmed,
            "unsubscribed": self.counters.unsubscribed,
            "pubsub_peers": len(self.host.pubsub.peers) if self.host is not None else 0,
            "dials": self.counters.dials,
            "dial_failures": self.counters.dial_failures,
            "penalised": self.counters.penalised,
            "dead_connections": self.liveness.stats.dead if self.liveness is not None else 0,
            "lost_probes": self.losswatch.probes,
            "lost_reported": self.losswatch.reported,
            "sync_rounds": sync.rounds,
            "sync_failures": sync.failures,
            "sync_jobs": sync.jobs,
            "sync_executions": sync.executions,
            "sync_nodes": sync.nodes,
            "sync_dropped": dict(sync.dropped),
        }

    async def fetch_logs(self, job_id: str, node_id: str, tail: int | None) -> dict[str, Any]:
        """Another node's output of a job, over ``/cmnode/logs/1``.

        Raises:
            PeerUnreachableError: not connected to that node, or it did not answer.
            NotFoundError: it has no execution of the job.
        """
        host, peer_id = self._connected(node_id)
        try:
            answer = await host.request(peer_id, LOGS_PROTOCOL, {"job_id": job_id, "tail": tail})
        except RequestResponseError as exc:
            raise PeerUnreachableError(f"node {node_id} did not answer: {exc}", data={"node_id": node_id}) from exc
        if not isinstance(answer, dict):
            raise PeerUnreachableError(f"node {node_id} sent a malformed answer", data={"node_id": node_id})
        if "error" in answer:
            raise NotFoundError(str(answer["error"]), data={"job_id": job_id, "node_id": node_id})
        return answer

    async def follow_logs(self, job_id: str, node_id: str, tail: int | None) -> Source:
        """Another node's output of a job as it is written, over ``/cmnode/logs/follow/1`` (node/meshlogs.py).

        Raises:
            PeerUnreachableError: not connected to that node, or it did not answer.
            NodeError: it refused (NotFoundError: it has no execution of the job).
        """
        host, peer_id = self._connected(node_id)
        return await RemoteLogs.open(host.host, peer_id, job_id, tail)

    def _connected(self, node_id: str) -> tuple[Host, ID]:
        """The host and peer ID to reach ``node_id`` by (NotFoundError: not a node ID; PeerUnreachableError: not
        connected)."""
        try:
            peer_id = ID.from_base58(node_id)
        except Exception:
            raise NotFoundError(f"{node_id!r} is not a node ID") from None
        if self.host is None or not self.host.connected(peer_id):
            raise PeerUnreachableError(f"node {node_id} is not connected to this node", data={"node_id": node_id})
        return self.host, peer_id

    async def _serve_follow(self, stream: INetStream) -> None:
        await serve_follow(stream, self.inbound.local_follow)

    async def _serve_logs(self, request: Any, context: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("job_id"), str):
            return {"error": "request must be {job_id, tail}"}
        tail = request.get("tail")
        if tail is not None and (not isinstance(tail, int) or isinstance(tail, bool) or tail < 0):
            return {"error": "tail must be a non-negative integer"}
        try:
            return await self.inbound.local_logs(request["job_id"], tail)
        except NodeError as exc:
            return {"error": exc.message}


async def cut_unsubscribed(host: Any, stats: MeshStats) -> NoReturn:
    """Every REPAIR_EVERY: cut the connections whose peer pubsub has not known as subscribed for UNSUBSCRIBED_FOR
    (at 30 nodes a third of the connections carried no gossip at all: "A connection can lose its pubsub
    streams"). ``host`` is the mesh's ``Host``."""
    since: dict[ID, float] = {}
    while True:
        await trio.sleep(REPAIR_EVERY)
        now = trio.current_time()
        connected = set(host.host.get_connected_peers())
        subscribed = host.pubsub.peer_topics.get(TOPIC, set())
        for peer_id in list(since):
            if peer_id not in connected or peer_id in subscribed:
                del since[peer_id]
        for peer_id in connected - subscribed:
            if now - since.setdefault(peer_id, now) < UNSUBSCRIBED_FOR:
                continue
            del since[peer_id]
            stats.unsubscribed += 1
            log.debug("peer %s connected without pubsub for %gs: reconnecting", peer_id, UNSUBSCRIBED_FOR)
            try:
                await host.host.disconnect(peer_id)
            except Exception as exc:  # a library failure costs this round, not the node
                log.debug("disconnecting %s failed: %r", peer_id, exc)
