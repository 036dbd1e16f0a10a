"""Two connections to one peer that come up together register the peer with pubsub once (docs/py-libp2p.md,
"Two connections at once leave a pubsub sending loop behind"). py-libp2p starts a registration per connection;
two at once each opened a stream and a sending loop, and the loop whose queue the other replaced waited for ever:
a soak of 10,000 jobs ended with ~20 more trio tasks per node than it began with. Two real ``Host``s on loopback
dial each other at once, again and again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.host import Host
from node.identity import load_or_create
from node.metrics import trio_tasks_by_name
from tests.support import base_config

pytestmark = pytest.mark.slow

ROUNDS = 3
SENDING = "handle_sending_messages[daemon=False]"
"""py-libp2p's pubsub sending loop, one per registered peer (its task's name)."""


async def _until(condition: Callable[[], bool], what: str) -> None:
    with trio.move_on_after(10):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"not within 10 s: {what}")


def sending_loops() -> int:
    return trio_tasks_by_name()[SENDING]


async def test_connections_at_once_leave_one_sending_loop_per_peer(tmp_path: Path) -> None:
    a = Host(config=base_config(tmp_path / "a"), identity=load_or_create(tmp_path / "ka"))
    b = Host(config=base_config(tmp_path / "b"), identity=load_or_create(tmp_path / "kb"))
    async with a.running(), b.running():
        base = sending_loops()
        to_b = info_from_p2p_addr(multiaddr.Multiaddr(b.addresses()[0]))
        to_a = info_from_p2p_addr(multiaddr.Multiaddr(a.addresses()[0]))
        for _ in range(ROUNDS):
            async with trio.open_nursery() as nursery:  # both ends dial at once: two connections
                nursery.start_soon(a.host.connect, to_b)
                nursery.start_soon(b.host.connect, to_a)
            await _until(lambda: b.peer_id in a.pubsub.peers and a.peer_id in b.pubsub.peers, "both registered")
            await trio.sleep(0.5)  # the second connection's registration ends (the library signals nothing)
            assert sending_loops() == base + 2, "one sending loop per end"  # was 4: one orphaned per end
            await a.host.disconnect(b.peer_id)
            await _until(lambda: sending_loops() == base, f"sending loops end with the peer's connections: "
                                                          f"{sending_loops() - base} left")  # fmt: skip
