"""The scale simulation (benchmarks/simulate.py) against docs/scaling.md's formulas: the counting alone on a
topology (milliseconds), then a whole small cluster with real stores, merge and placement."""

from __future__ import annotations

import random
import statistics
import time

import pytest

from benchmarks.sim import formulas as f
from benchmarks.sim.measure import periodic_rounds
from benchmarks.sim.params import Fixed, Params, current, new_identity
from benchmarks.sim.topology import Topology
from benchmarks.simulate import Settings, main, override
from node import __version__, topology
from node.config import Config
from node.heartbeat import Heartbeat
from node.host import Host
from node.identity import Identity
from node.noderecord import NodeRecord, sign_record
from node.registry import Registry
from node.wire import TOPIC


def params(**changes: object) -> Params:
    base = Params(degree=6, degree_low=4, degree_high=12, gossip_heartbeat=1.0, gossip_window=3,
                  gossip_peers=Fixed(6), record_interval=2.0, nodes_per_beat=None, peer_target=Fixed(2),
                  peer_max=None, sync_interval=15.0, sync_peers=None, records_every=None, max_node_records=1000,
                  inbound_cap=250)  # fmt: skip
    return Params(**{**base.__dict__, **changes})


def test_a_flood_reaches_every_node_at_the_formulas_cost() -> None:
    for n, target in ((30, 2), (60, 6)):
        topo = Topology(n, params(peer_target=Fixed(target)), random.Random(3))
        for origin in (0, n // 2, n - 1):
            flood = topo.flood(origin)
            assert flood.reached == n
            assert flood.total == pytest.approx(f.copies(n, topo.mean_degree))
            assert sum(flood.received) == flood.total


def test_the_mesh_keeps_gossipsubs_bounds_and_the_bootstrap_node_its_inbound_cap() -> None:
    topo = Topology(80, params(peer_target=Fixed(8), inbound_cap=20), random.Random(5))
    assert all(len(m) <= 12 for m in topo.mesh)
    assert all(m <= c for m, c in zip(topo.mesh, topo.conns, strict=True))
    assert max(topo.inbound) <= 20 and topo.refused_by_seed == 80 - 1 - 20
    assert all(topo.mesh[q].__contains__(i) for i in range(80) for q in topo.mesh[i])  # grafts are mutual


def test_connection_upkeep_keeps_every_node_between_target_and_max() -> None:
    topo = Topology(300, params(peer_target=Fixed(6), peer_max=Fixed(12)), random.Random(7))
    assert all(6 <= len(c) <= 12 for c in topo.conns)
    assert topo.refused_by_seed == 0 and topo.flood(0).reached == 300


def test_anti_entropy_rounds_follow_the_policy() -> None:
    every = Topology(50, params(), random.Random(1))
    asked, served = every.anti_entropy(random.Random(2))
    assert sum(served) == sum(asked) == pytest.approx(f.anti_entropy_rounds(50, every.mean_connections, None))
    few = Topology(50, params(sync_peers=1), random.Random(1))
    asked, served = few.anti_entropy(random.Random(2))
    assert asked == [1] * 50 and sum(served) == f.anti_entropy_rounds(50, few.mean_connections, 1)


def test_the_real_scheduler_asks_k_peers_each_interval_as_the_formula_says() -> None:
    p = current()
    topo = Topology(60, p, random.Random(4))
    assert p.sync_peers is not None
    counted = periodic_rounds(topo.conns, random.Random(5), p.sync_peers)
    assert counted is not None  # Catchup.tick exists in this tree
    asked, served = counted
    assert sum(served) == sum(asked) == f.anti_entropy_rounds(60, topo.mean_connections, p.sync_peers)
    assert asked == [min(p.sync_peers, len(c)) for c in topo.conns]


def test_the_parameters_are_the_codes() -> None:
    from node import catchup, topology

    p = current()
    assert p.peer_target is topology.target and p.peer_max is topology.ceiling  # the functions, not a constant
    assert p.sync_interval == catchup.SYNC_INTERVAL
    assert p.degree_low <= p.degree <= p.degree_high
    router = Host(config=Config(), identity=new_identity()).router
    assert [p.gossip_peers(k) for k in range(30)] == [
        router._get_adaptive_gossip_peers_count(TOPIC, k) for k in range(30)
    ]


async def test_the_idle_record_interval_is_the_heartbeats() -> None:
    """The simulation's idle record interval (its idle node-record rows and its down-after row follow from it) is
    the spacing a node's ``Heartbeat`` gives unchanged records, every node on this version: below NODES_PER_BEAT
    nodes, stretched beyond, and capped at the longest interval a record may promise (past 600 nodes)."""
    p = current()

    def record(identity: Identity) -> NodeRecord:
        return sign_record(identity, NodeRecord(node_id=identity.node_id, name=identity.node_id[-6:], seq=1,
                                                at=time.time(), heartbeat=60.0, version=__version__))  # fmt: skip

    async def publish(_: NodeRecord) -> None:
        raise AssertionError("not beating")

    me = new_identity()
    registry = Registry(node_id=me.node_id, heartbeat=p.record_interval)
    registry.own(record(me))
    heartbeat = Heartbeat(identity=me, registry=registry, publish=publish, name="me", interval=p.record_interval)
    assert p.record_refresh is not None and registry.gate()
    known = 1
    for n in (5, 30, 200, 700):
        for _ in range(n - known):
            registry.on_record(record(new_identity()))
        known = n
        assert heartbeat.spacing() == f.record_interval_at(n, p.record_refresh, p.nodes_per_beat, p.record_cap), n
    assert f.record_interval_at(700, p.record_refresh, p.nodes_per_beat, p.record_cap) == p.record_cap


def test_connections_follow_the_codes_target_and_ceiling_as_the_cluster_grows() -> None:
    """Every node ends between target(N) and ceiling(N), also those that joined when the target was lower."""
    p = current()
    for n in (12, 40, 300):
        topo = Topology(n, p, random.Random(n))
        low, high = topology.target(n), topology.ceiling(n)
        assert all(low <= len(c) <= high for c in topo.conns), (n, low, high, sorted(len(c) for c in topo.conns))
        assert all(m <= c for m, c in zip(topo.mesh, topo.conns, strict=True))
        assert all(len(m) <= p.degree_high for m in topo.mesh)


def test_upkeep_from_the_registry_keeps_hops_logarithmic() -> None:
    """Top-ups from random registry members make the mesh a random graph: mean hops near ln N / ln(d - 1), and
    hops grow far slower than N (they grew linearly when top-ups were peers of peers only)."""
    p = current()
    mean_hops = {}
    for n in (100, 800):
        topo = Topology(n, p, random.Random(2))
        floods = [topo.flood(o) for o in range(0, n, n // 10)]
        assert all(fl.reached == n for fl in floods)
        mean_hops[n] = statistics.mean(fl.mean_hops for fl in floods)
        assert 0.7 <= mean_hops[n] / f.hops(n, topo.mean_degree) <= 1.3, (n, mean_hops[n], topo.mean_degree)
    assert mean_hops[800] < 2 * mean_hops[100]


def test_a_number_set_for_a_function_of_the_size_holds_at_every_size() -> None:
    p = override(current(), {"peer_target": "2", "peer_max": "none", "gossip_peers": "3"})
    assert [p.peer_target(n) for n in (10, 1000)] == [2, 2] and p.peer_max is None and p.gossip_peers(50) == 3


@pytest.mark.slow
async def test_a_small_cluster_agrees_with_the_formulas() -> None:
    (report,) = await main([20], Settings(jobs=8, replicas=2, all_jobs=1), calibration=300, quiet=True)
    exact = [r for r in report.rows if r.name.startswith(("gossip", "  received", "node-record c", "anti-entropy r"))]
    exact += [report.row("  anti-entropy bytes served per node per s (mean)")]
    assert len(exact) == 10
    for row in exact:
        assert row.ratio == pytest.approx(1.0, abs=0.01), row
    for kind in ("replicas=2", "all"):
        stored = report.row(f"bytes stored per node per job ({kind})")
        assert stored.ratio is not None and 0.85 <= stored.ratio <= 1.15, stored
    catch_up = report.row("catch-up of those rows (s)")
    assert catch_up.ratio is not None and 0.2 <= catch_up.ratio <= 5, catch_up  # timed on a shared machine
