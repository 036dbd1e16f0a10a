"""Peer exchange on idle catch-up rounds: every answer carries the answering node's connected peers, and an idle
peer's list is the same round after round. The asker hands a list to ``meet`` (which parses every multiaddr in it)
only when it differs from the last one that peer sent, and the answering node reads and formats its peers again
only when its connections changed (or the last read is ``EXCHANGE_FOR`` old). Two real stores, requests as plain
function calls (``test_catch_up_spread.Line``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from node.catchup import EXCHANGE_FOR, Catchup
from node.identity import load_or_create

from .test_catch_up_round import replica_node
from .test_catch_up_spread import Line

TICK = 0.02


async def test_an_unchanged_peer_list_is_read_formatted_and_met_once_per_change(tmp_path: Path) -> None:
    x_id, y_id = (load_or_create(tmp_path / name) for name in ("x", "y"))
    described: list[dict[str, Any]] = [{"node_id": "12D3KooWPeerA", "addresses": ["/ip4/127.0.0.1/tcp/4001"]}]
    reads: list[float] = []
    met: list[list[Any]] = []

    def y_peers() -> list[dict[str, Any]]:
        reads.append(trio.current_time())
        return list(described)

    async with (
        replica_node(tmp_path / "x.db", x_id) as (_, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (_, y_sync),
    ):
        line = Line([(x_id.peer_id, y_id.peer_id)])
        x = line.nodes[x_id.peer_id] = Catchup(sync=x_sync, peers=list, meet=met.append, interval=TICK)
        y = line.nodes[y_id.peer_id] = Catchup(sync=y_sync, peers=y_peers, meet=lambda a: None, interval=3600)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(x.run, line.host(x_id.peer_id))
            nursery.start_soon(y.run, line.host(y_id.peer_id))
            with trio.fail_after(10):
                while x.rounds.periodic < 10:
                    await trio.sleep(TICK)
            assert met == [["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPeerA"]]  # once, not once a round
            assert len(reads) == 1  # Y's connections did not change: read once
            nursery.cancel_scope.cancel()


async def test_a_changed_peer_list_is_met_again_and_the_served_one_is_read_again_in_time(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    """On a virtual clock: the answering node reads its peers again after EXCHANGE_FOR even with the same
    connections (a peer's addresses can change while it stays connected), and the asker meets the new list."""
    x_id, y_id = (load_or_create(tmp_path / name) for name in ("x", "y"))
    described = [{"node_id": "12D3KooWPeerA", "addresses": ["/ip4/127.0.0.1/tcp/4001"]}]
    met: list[list[Any]] = []
    line = Line([(x_id.peer_id, y_id.peer_id)])
    y = Catchup(sync=None, peers=lambda: list(described), meet=lambda a: None)  # type: ignore[arg-type]
    y._host = line.host(y_id.peer_id)
    x = Catchup(sync=None, peers=list, meet=met.append)  # type: ignore[arg-type]

    async def serve_and_exchange() -> None:
        y.sync = _Empty()  # type: ignore[assignment]
        answer = await y.serve({"since": 0}, _Context(x_id.peer_id))
        x._exchange(y_id.peer_id, answer["peers"])

    await serve_and_exchange()
    described[0] = {"node_id": "12D3KooWPeerA", "addresses": ["/ip4/127.0.0.1/tcp/4999"]}  # identify moved it
    await serve_and_exchange()
    assert len(met) == 1  # still the list read before
    await trio.sleep(EXCHANGE_FOR)
    await serve_and_exchange()
    assert met == [["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWPeerA"], ["/ip4/127.0.0.1/tcp/4999/p2p/12D3KooWPeerA"]]


class _Empty:
    async def serve(self, request: Any) -> dict[str, Any]:
        return {"jobs": [], "executions": [], "upto": 0, "head": 0, "more": False}


class _Context:
    def __init__(self, peer_id: Any) -> None:
        self.peer_id = peer_id
