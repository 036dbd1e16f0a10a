"""Telling a dead peer from its connections: a node that loses its last connection to a peer probes it, and if the peer
cannot be reached, says so (a lost notice, ``node/lost.py``).

Records are rare once lost notices are on (``node/heartbeat.py``), so this is how the mesh learns of a death in seconds.
A peer's last connection closing is a sign only when this node did not close it itself (a trim, a ban, a probe's own
connection: ``ours``) and it had lived LIVED_FOR at least; then the peer is probed, within PROBE_TIMEOUT: a bare TCP
connection to its addresses (on loopback or a LAN a dead process refuses at once, a cut link does not answer), and, only
for a peer liveness cut for not answering pings (``unanswering``: a frozen process, whose kernel still accepts TCP), a
full dial that must complete the handshake. A full dial of every lost peer made a libp2p connection each time: a hub
that trims saw every peer it trimmed connect back at once (30 nodes: 164 connections at the bootstrap node in a minute
of idling, none on 0.1.0). Reached: it is alive, nothing is said (after a full dial, the probe's connection is closed
again at once unless the topology would dial the peer back anyway, as our own close, and the peer is not probed again
for ANSWERED_FOR, so two nodes cannot probe each other in a loop). Not reached: ``report`` (the mesh signs and publishes
the notice, and marks the peer down here). A liveness ping that goes unanswered (``suspect``) starts a lighter probe at
once, a bare TCP connection: not reached, the peer is reported before its connection's end (a cut link is noticed by the
kernel only after 8 s). Nothing is probed while ``enabled`` says no (a node of an older version is up: the version
gate), so the mesh then behaves as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import trio
from libp2p.peer.id import ID

__all__ = ["ANSWERED_FOR", "LIVED_FOR", "MAX_PROBES", "OURS_FOR", "PROBE_TIMEOUT", "LossWatch"]

log = logging.getLogger("cmnode.p2p")

PROBE_TIMEOUT = 3.0
"""A probe's dial, handshake included, must succeed within this many seconds, or the peer is lost."""
LIVED_FOR = 0.0
"""A connection that lived less than this (seconds) is not probed when it closes. None is spared now: a probe is a
bare TCP connection, which no node takes for a connection of its own, so a probe cannot set off another (a probe
that dials in full, ``unanswering``, marks its peer answered for ANSWERED_FOR). 5 s, then 1 s, missed nodes killed
right after they joined (``benchmarks.reschedule``; tests/mesh/test_registry_cluster.py kills one 0.8 s after its
first connection)."""
OURS_FOR = 10.0
"""A close this node asked for counts as its own for this long (the library tells of it later)."""
ANSWERED_FOR = 10.0
"""A peer that answered a full dial (its handshake) is not probed again for this long (seconds): the dial made a
connection, which it may close again (a hub refusing us); another neighbour's probe covers a death meanwhile."""
MAX_PROBES = 64
"""Probes at once; beyond, a lost peer is not probed (its silence, or another node's probe, tells)."""
MAX_TRACKED = 10_000


class LossWatch:
    """Run ``run`` in the mesh's nursery; feed it ``opened``, ``closed`` and ``ours`` (``guard`` wires the last
    to a host's ``disconnect``)."""

    def __init__(
        self,
        *,
        probe: Callable[[ID, bool], Awaitable[bool]],
        report: Callable[[ID], Awaitable[None]],
        enabled: Callable[[], bool],
        reaches: Callable[[ID], Awaitable[bool]] | None = None,
    ) -> None:
        """``probe``: whether the peer answers (its kernel accepts a TCP connection; and, when the second
        argument says so, a full dial completes the handshake), bounded by the caller or by PROBE_TIMEOUT here;
        ``report``: publish that it is lost; ``enabled``: the version gate; ``reaches``: whether the peer's kernel
        accepts a TCP connection (``suspect``; none: suspicion is not acted on)."""
        self._probe = probe
        self._reaches = reaches
        self._report = report
        self._enabled = enabled
        self._since: dict[ID, float] = {}
        """When each connected peer's first connection opened (trio time); bounded by the connected peers."""
        self._ours: dict[ID, float] = {}
        """Peers this node is closing, until when that counts as its own close."""
        self._unanswering: dict[ID, float] = {}
        """Peers whose connection liveness cut because they stopped answering pings (``unanswering``), until when
        that stands: their probe needs the handshake."""
        self._answered: dict[ID, float] = {}
        """Peers that answered a probe, until when that stands for them."""
        self._probing: set[ID] = set()
        self._nursery: trio.Nursery | None = None
        self.probes = 0
        self.reported = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def guard(self, host: Any) -> None:
        """Count every close made through ``host.disconnect`` (a py-libp2p ``BasicHost``) as this node's own: the
        trims, bans and repairs elsewhere all close that way, and the library says nothing of who closed."""
        disconnect = host.disconnect

        async def ours_then_disconnect(peer_id: ID) -> None:
            self.ours(peer_id)
            await disconnect(peer_id)

        host.disconnect = ours_then_disconnect

    def ours(self, peer_id: ID) -> None:
        """This node is closing its connections to ``peer_id``: not a loss."""
        now = trio.current_time()
        _mark(self._ours, peer_id, now + OURS_FOR, now)

    def unanswering(self, peer_id: ID) -> None:
        """Liveness is cutting ``peer_id``'s connection: it stopped answering pings. Such a peer may be a frozen
        process, whose kernel still accepts TCP: its probe dials it in full, handshake included."""
        now = trio.current_time()
        _mark(self._unanswering, peer_id, now + OURS_FOR, now)

    def opened(self, peer_id: ID) -> None:
        """A connection to ``peer_id`` opened (its first, or another: the first one's time counts)."""
        if len(self._since) < MAX_TRACKED:
            self._since.setdefault(peer_id, trio.current_time())

    def closed(self, peer_id: ID) -> None:
        """The last connection to ``peer_id`` closed: probe it if that is a sign (see the module's docstring)."""
        now = trio.current_time()
        since = self._since.pop(peer_id, None)
        ours = self._ours.pop(peer_id, 0.0) > now
        answered = self._answered.get(peer_id, 0.0) > now
        if ours or answered or since is None or now - since < LIVED_FOR or peer_id in self._probing:
            return
        if self._nursery is None or len(self._probing) >= MAX_PROBES or not self._enabled():
            return
        self._probing.add(peer_id)
        self._nursery.start_soon(self._check, peer_id, self._unanswering.pop(peer_id, 0.0) > now)

    def suspect(self, peer_id: ID) -> None:
        """A liveness ping to ``peer_id``, still connected, went unanswered: if its kernel does not accept a TCP
        connection either, its link or host is gone, and it is reported now, not when the connection's end says
        so (the kernel's ``USER_TIMEOUT`` of 8 s, then the probe). A peer that is only busy accepts at once."""
        now = trio.current_time()
        if self._reaches is None or self._nursery is None or peer_id in self._probing:
            return
        if self._answered.get(peer_id, 0.0) > now or len(self._probing) >= MAX_PROBES or not self._enabled():
            return
        self._probing.add(peer_id)
        self._nursery.start_soon(self._check_reach, peer_id)

    async def _check_reach(self, peer_id: ID) -> None:
        assert self._reaches is not None
        self.probes += 1
        try:
            reached = False
            with trio.move_on_after(PROBE_TIMEOUT):
                reached = await self._reaches(peer_id)
            if not reached:
                self.reported += 1
                await self._report(peer_id)
        except Exception as exc:  # a library failure costs this probe, not the mesh
            log.debug("probing %s failed: %r", peer_id, exc)
        finally:
            self._probing.discard(peer_id)

    async def _check(self, peer_id: ID, handshake: bool) -> None:
        self.probes += 1
        try:
            answered = False
            with trio.move_on_after(PROBE_TIMEOUT):
                answered = await self._probe(peer_id, handshake)
            if answered:
                log.debug("peer %s lost its connection but answered a probe: alive", peer_id)
                if not handshake:
                    return
                now = trio.current_time()
                _mark(self._answered, peer_id, now + ANSWERED_FOR, now)
                return
            self.reported += 1
            await self._report(peer_id)
        except Exception as exc:  # a library failure costs this probe, not the mesh
            log.debug("probing %s failed: %r", peer_id, exc)
        finally:
            self._probing.discard(peer_id)


def _mark(marks: dict[ID, float], peer_id: ID, until: float, now: float) -> None:
    """``marks[peer_id] = until``, the marks bounded by MAX_TRACKED: when full, the lapsed ones go first, and a
    mark that still finds no room is not kept (the peer is then judged as unmarked)."""
    if len(marks) >= MAX_TRACKED:
        for lapsed in [p for p, mark in marks.items() if mark <= now]:
            del marks[lapsed]
    if len(marks) < MAX_TRACKED:
        marks[peer_id] = until
