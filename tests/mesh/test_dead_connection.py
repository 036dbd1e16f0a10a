"""A connection whose traffic is silently dropped is noticed in seconds and replaced (issue 12), with real
``cmnode run`` processes on loopback and no root: node B bootstraps through a small TCP forwarder in front of
node A's p2p port, which the test tells to drop everything while keeping both TCP connections open (what a
partition looks like to TCP), and later to forward again.

Loopback keeps the direct path between the nodes, so a re-dial may use the address a peer announced rather
than the forwarder: what is checked is that the dead connection is closed, counted and logged within ~16 s,
and that the nodes talk again after the heal.
"""

from __future__ import annotations

import pytest
import trio

from node.liveness import INTERVAL, MISSES, QUIET, TIMEOUT

from .cluster import eventually
from .conftest import Cluster

pytestmark = pytest.mark.slow


class Forwarder:
    """Forwards TCP connections to ``target``; ``paused`` drops the bytes of every connection silently."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.paused = False
        self.closed_while_paused = 0
        """Connections one end closed while nothing was forwarded: a node gave up on a dead connection."""
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, server, nursery)
            nursery.start_soon(self._pipe, server, client, nursery)

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream, nursery: trio.Nursery) -> None:
        try:
            while data := await source.receive_some(65536):
                if not self.paused:
                    await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        if self.paused:
            self.closed_while_paused += 1
        nursery.cancel_scope.cancel()


async def test_a_silently_dead_connection_is_noticed_and_replaced(cluster: Cluster) -> None:
    a = await cluster.start("a")
    address = await cluster.address(a)
    port, peer = int(address.split("/tcp/")[1].split("/")[0]), address.split("/p2p/")[1]
    async with trio.open_nursery() as nursery:
        forwarder = Forwarder(port)
        await nursery.start(forwarder.run)
        b = await cluster.start("b", "--bootstrap", f"/ip4/127.0.0.1/tcp/{forwarder.port}/p2p/{peer}")

        async def connected() -> bool:
            return peer in [p["node_id"] for p in (await cluster.call(b, "NodeService.Peers"))["peers"]]

        await eventually(connected, timeout=30)

        async def dead_connections() -> int:
            return sum([(await cluster.call(n, "NodeService.Info"))["mesh"]["dead_connections"] for n in (a, b)])

        assert await dead_connections() == 0
        forwarder.paused = True
        paused_at = trio.current_time()

        async def noticed() -> bool:
            return forwarder.closed_while_paused >= 1 and await dead_connections() >= 1

        bound = QUIET + INTERVAL + (MISSES - 1) * INTERVAL + TIMEOUT + 4  # the verdict, plus a busy machine's slack
        await eventually(noticed, timeout=bound + 10)
        assert trio.current_time() - paused_at < bound, "the dead connection was noticed too late"
        logs = a.log.read_text() + b.log.read_text()
        assert f"did not answer {MISSES} pings" in logs
        forwarder.paused = False

        await eventually(connected, timeout=20)
        await trio.sleep(2 * (QUIET + INTERVAL))  # two quiet spells' pings: the new connection answers them
        # each side may have judged the dead connection (once each); none judged the new one
        assert await connected() and await dead_connections() <= 2
        nursery.cancel_scope.cancel()
    assert await cluster.stop_all([a, b]) == [0, 0]
    for node in (a, b):
        assert "Traceback" not in node.log.read_text()
