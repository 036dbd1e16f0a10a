"""News learned by catch-up travels on at once, not a periodic round (15 s) per hop.

Issue 12: after a partition healed, a node that learned the other side's jobs from one peer kept them until its
own neighbours' next periodic round asked it, so a node two hops from the other side waited 15 s, and one that
had asked a neighbour before that neighbour learned the executions got them 15 s after the jobs. A round that
brings news now ends with a round with every other peer that says so (``"news": true``), and a node asked that
way catches up with the asker. Three real stores in a line, X - Y - Z, requests as plain function calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from node.catchup import SYNC_INTERVAL, Catchup
from node.identity import load_or_create
from node.model import State

from .fakes import signed_execution, signed_job
from .test_catch_up_round import replica_node


@dataclass
class Context:
    peer_id: ID


class Line:
    """Hosts joined by the links given; a request is the peer's ``Catchup.serve``, called directly."""

    def __init__(self, links: list[tuple[ID, ID]]) -> None:
        self.links = {frozenset(link) for link in links}
        self.nodes: dict[ID, Catchup] = {}
        self.requests: list[tuple[ID, ID, dict[str, Any]]] = []

    def host(self, me: ID) -> Any:
        line = self

        class Host:
            host = None

            def get_connected_peers(self) -> list[ID]:
                return [p for p in line.nodes if frozenset((me, p)) in line.links]

            def connected(self, peer_id: ID) -> bool:
                return frozenset((me, peer_id)) in line.links

            async def request(self, peer_id: ID, protocol: str, body: dict[str, Any]) -> Any:
                line.requests.append((me, peer_id, body))
                return await line.nodes[peer_id].serve(body, Context(me))

        host = Host()
        host.host = host  # type: ignore[assignment]  # Catchup reads host.host.get_connected_peers()
        return host


async def test_news_from_one_peer_reaches_a_node_two_hops_away_at_once(tmp_path: Path) -> None:
    """Real time (the store works in threads); well under a second, where a periodic round is 15 s away."""
    x_id, y_id, z_id = (load_or_create(tmp_path / name) for name in ("x", "y", "z"))
    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (_, y_sync),
        replica_node(tmp_path / "z.db", z_id) as (z_store, z_sync),
    ):
        job = signed_job(x_id, "apart")  # what X's side did while apart
        await x_store.add_job(job)
        await x_store.put_executions([signed_execution(x_id, job.job_id, state=State.COMPLETE, version=3)])
        line = Line([(x_id.peer_id, y_id.peer_id), (y_id.peer_id, z_id.peer_id)])
        for identity, sync in ((x_id, x_sync), (y_id, y_sync), (z_id, z_sync)):
            line.nodes[identity.peer_id] = Catchup(sync=sync, peers=list, meet=lambda addresses: None)
        async with trio.open_nursery() as nursery:
            for identity in (x_id, y_id, z_id):
                nursery.start_soon(line.nodes[identity.peer_id].run, line.host(identity.peer_id))
            await trio.sleep(0.1)
            line.nodes[y_id.peer_id].on_connect(x_id.peer_id)  # the heal: Y meets X again
            with trio.fail_after(SYNC_INTERVAL / 3):  # not at Z's next periodic round
                while (got := await z_store.get_job_with_executions(job.job_id)) is None or not got[1]:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        record, executions = got
        assert record.status == "complete" and [e.version for e in executions] == [3]
        told = [(a, b) for a, b, body in line.requests if body.get("news") is True]
        assert (y_id.peer_id, z_id.peer_id) in told and (y_id.peer_id, x_id.peer_id) not in told


async def test_a_peer_that_read_the_news_itself_is_not_told(tmp_path: Path) -> None:
    """Real time (the store works in threads), a few seconds. After a heal every node reads the other parts itself:
    Y learns X's job, then Z reads Y's store before Y tells its peers; Y then spares Z the two rounds of telling
    (before round five it told every other peer at once)."""
    x_id, y_id, z_id = (load_or_create(tmp_path / name) for name in ("x", "y", "z"))
    async with (
        replica_node(tmp_path / "x.db", x_id) as (x_store, x_sync),
        replica_node(tmp_path / "y.db", y_id) as (y_store, y_sync),
        replica_node(tmp_path / "z.db", z_id) as (z_store, z_sync),
    ):
        job = signed_job(x_id, "apart")
        await x_store.add_job(job)
        line = Line([(x_id.peer_id, y_id.peer_id), (y_id.peer_id, z_id.peer_id)])
        for identity, sync in ((x_id, x_sync), (y_id, y_sync), (z_id, z_sync)):
            line.nodes[identity.peer_id] = Catchup(sync=sync, peers=list, meet=lambda addresses: None,
                                                   spread_after=1.0)  # fmt: skip
        y = line.nodes[y_id.peer_id]
        async with trio.open_nursery() as nursery:
            for identity in (x_id, y_id, z_id):
                nursery.start_soon(line.nodes[identity.peer_id].run, line.host(identity.peer_id))
            y.on_connect(x_id.peer_id)  # the heal: Y reads X
            with trio.fail_after(5):
                while await y_store.get_job_with_executions(job.job_id) is None:
                    await trio.sleep(0.02)
                line.nodes[z_id.peer_id].on_connect(y_id.peer_id)  # and Z reads Y, within Y's second
                while await z_store.get_job_with_executions(job.job_id) is None:
                    await trio.sleep(0.02)
                while y.rounds.told + y.rounds.spared == 0:  # Y's second is over: it decided
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert (y.rounds.told, y.rounds.spared) == (0, 1)
        assert not [body for a, b, body in line.requests if body.get("news") is True]
