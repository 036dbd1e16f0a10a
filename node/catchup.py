"""When to catch up, and with whom: on every new connection, every SYNC_INTERVAL with every peer, and when a
peer says it has news.

``sync.py`` is the protocol; this module schedules it over the host's request/response streams, one round per
peer at a time, and carries peer exchange on the same answers (the peers a node knows travel with its sync
page, so bootstrapping through one node still yields a mesh with more than one path).

News travels on: a round that brought jobs, executions or allocations gossip never delivered (what a part of a
healed partition did while apart) ends with a round with every other peer whose first request says
``"news": true``, and a node asked that way catches up with the asker at once. Without it, a node that learned
the other side's changes from one peer held them until its neighbours' next periodic round, 15 s per hop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.request_response import RequestResponseError

from .errors import NodeError
from .host import Host
from .sync import SYNC_PROTOCOL, Sync
from .wire import WireError

__all__ = ["SYNC_INTERVAL", "Catchup"]

log = logging.getLogger("cmnode.p2p")

SYNC_INTERVAL = 15.0
"""Catch-up also runs this often with every peer, so a gossip message lost in transit is repaired."""
SYNC_QUEUE = 1000


class Catchup:
    """Schedules catch-up rounds for one host and answers peers' sync requests."""

    def __init__(
        self,
        *,
        sync: Sync,
        peers: Callable[[], list[dict[str, Any]]],
        meet: Callable[[list[Any]], None],
    ) -> None:
        """``peers`` describes our connections for peer exchange; ``meet`` dials some of a peer's."""
        self.sync = sync
        self._peers = peers
        self._meet = meet
        self._send, self._recv = trio.open_memory_channel[ID](SYNC_QUEUE)
        self._syncing: set[ID] = set()
        self._again: set[ID] = set()
        """Peers that reconnected (or were due) while a round with them ran: that round may have been on the
        old, dead connection, so another follows at once (a subset of ``_syncing``)."""
        self._news: set[ID] = set()
        """Peers whose next round tells them we have news (bounded by the connected peers: the worker forgets
        a peer that is gone)."""
        self._host: Host | None = None

    def on_connect(self, peer_id: ID) -> None:
        """Catch up with ``peer_id`` soon; if the queue is full, the periodic round catches up with it."""
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(peer_id)

    def spread(self, source: ID) -> None:
        """We learned news from ``source``: a round with every other peer, telling it so."""
        if self._host is None:
            return
        for peer_id in self._host.host.get_connected_peers():
            if peer_id != source:
                self._news.add(peer_id)
                self.on_connect(peer_id)

    async def run(self, host: Host) -> None:
        """The periodic rounds and the worker, until cancelled."""
        self._host = host
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._worker, host, nursery)
            while True:
                await trio.sleep(SYNC_INTERVAL)
                for peer_id in host.host.get_connected_peers():
                    self.on_connect(peer_id)

    async def _worker(self, host: Host, nursery: trio.Nursery) -> None:
        async for peer_id in self._recv:
            # only while connected: a request would dial a peer that is gone (or was disconnected for a reason)
            if peer_id in self._syncing:
                self._again.add(peer_id)
            elif host.connected(peer_id):
                self._syncing.add(peer_id)
                nursery.start_soon(self._catch_up, host, peer_id)
            else:
                self._news.discard(peer_id)

    async def _catch_up(self, host: Host, peer_id: ID) -> None:
        news = peer_id in self._news
        self._news.discard(peer_id)

        async def request(body: dict[str, Any]) -> Any:
            nonlocal news
            if news:  # the first request of the round: "catch up with me"
                body, news = {**body, "news": True}, False
            page = await host.request(peer_id, SYNC_PROTOCOL, body)
            if isinstance(page, dict) and isinstance(page.get("peers"), list):
                self._meet(page.pop("peers"))
            return page

        stats = self.sync.stats
        before = (stats.jobs, stats.executions, stats.allocations)
        try:
            pages = await self.sync.catch_up(peer_id.to_base58(), request)
            jobs, executions, allocations = (now - then for now, then in zip(
                (stats.jobs, stats.executions, stats.allocations), before, strict=True))  # fmt: skip
            if jobs or executions or allocations:  # news that gossip did not bring (missed while away, or lost)
                log.info("caught up with peer=%s jobs=%d executions=%d allocations=%d pages=%d", peer_id, jobs,
                         executions, allocations, pages)  # fmt: skip
                self.spread(peer_id)
        except (RequestResponseError, WireError, NodeError) as exc:
            stats.failures += 1
            log.debug("catch-up with %s failed: %s", peer_id, exc)
        except Exception as exc:  # anything else a peer's answer provokes fails this round only
            stats.failures += 1
            log.warning("catch-up with %s failed: %r", peer_id, exc, exc_info=exc)
        finally:
            self._syncing.discard(peer_id)
            if peer_id in self._again:
                self._again.discard(peer_id)
                self.on_connect(peer_id)
        # Jobs heard on gossip before the first round (node/replica.py) wait for a round to end, done or failed:
        # the store is then as whole as this peer could make it (one that cannot answer sync gives no more).
        await self.sync.inbound.caught_up()

    async def serve(self, request: Any, context: Any) -> dict[str, Any]:
        """A peer's sync request, answered with our changes and the peers we know (peer exchange). A request
        that says it brings news makes us catch up with the asker too."""
        if isinstance(request, dict) and request.get("news") is True:
            self.on_connect(context.peer_id)
        answer = await self.sync.serve(request)
        if "error" not in answer:
            answer["peers"] = [
                f"{addr}/p2p/{p['node_id']}" for p in self._peers() if p["node_id"] != str(context.peer_id)
                for addr in p["addresses"]
            ]  # fmt: skip
        return answer
