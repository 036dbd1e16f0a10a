"""Choosing nodes (node/scheduler.py): pure functions over fake views, in milliseconds."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from node.allocation import Allocation
from node.model import Job, JobSpec, Placement, Resources, State
from node.nodeview import NodeInfo, NodeState
from node.scheduler import Load, allocate, choose, loads_of, move, ranking, revise, reviser

GIB = 1024**3


def job(
    job_id: str,
    replicas: int = 1,
    *,
    selector: dict[str, str] | None = None,
    memory: int | None = None,
    cpus: float | None = None,
    ports: tuple[str, ...] = (),
) -> Job:
    spec = JobSpec(
        image="busybox",
        placement=Placement(mode="replicas", replicas=replicas, selector=selector or {}),
        resources=Resources(memory=memory, cpus=cpus),
        ports=ports,
    )
    return Job(job_id=job_id, spec=spec, origin="origin", created_at=1.0)


def nodes(count: int, **fields: object) -> list[NodeInfo]:
    return [NodeInfo(node_id=f"n{i:02d}", **fields) for i in range(count)]  # type: ignore[arg-type]


def place_all(jobs: list[Job], view: list[NodeInfo]) -> dict[str, tuple[str, ...]]:
    """Allocate ``jobs`` one after the other, as an origin does, each seeing the ones before."""
    loads: dict[str, Load] = {}
    placed = {}
    for j in jobs:
        choice = allocate(j, view, loads)
        move(loads, j.spec, (), choice.nodes)
        placed[j.job_id] = choice.nodes
    return placed


def test_spread_of_100_single_replica_jobs_over_5_equal_nodes() -> None:
    placed = place_all([job(f"j{i}") for i in range(100)], nodes(5))
    per_node = Counter(n for chosen in placed.values() for n in chosen)
    assert len(per_node) == 5
    assert max(per_node.values()) / min(per_node.values()) <= 1.25


def test_replicas_land_on_distinct_nodes_least_allocated_first() -> None:
    view = nodes(4)
    loads = loads_of([(job("busy").spec, ("n00", "n01"))])
    choice = allocate(job("j", replicas=2), view, loads)
    assert sorted(choice.nodes) == ["n02", "n03"] and choice.note == ""


def test_ties_are_broken_the_same_way_whatever_order_the_view_lists_nodes() -> None:
    view = nodes(6)
    first = allocate(job("same", replicas=3), view, {}).nodes
    for order in itertools.islice(itertools.permutations(view), 50):
        assert allocate(job("same", replicas=3), list(order), {}).nodes == first


def test_memory_capacity_is_never_exceeded_and_the_note_says_why() -> None:
    view = [
        NodeInfo(node_id="a", labels={"zone": "a"}, memory=GIB),
        NodeInfo(node_id="b", labels={"zone": "a"}, memory=GIB),
        NodeInfo(node_id="c", labels={"zone": "b"}, memory=8 * GIB),
    ]
    half = 512 * 1024**2
    loads = loads_of([(job("x", memory=half).spec, ("a",)), (job("y", memory=half).spec, ("a",))])  # a is full
    choice = allocate(job("j", replicas=3, selector={"zone": "a"}, memory=half), view, loads)
    assert choice.nodes == ("b",)
    assert choice.note == "1 of 3 replicas placed: 1 ready node matches zone=a with 512 MB free"


def test_unknown_capacity_is_not_counted() -> None:
    view = [NodeInfo(node_id="a")]  # cpus and memory None: not known, not counted
    loads = loads_of([(job(f"x{i}", memory=GIB, cpus=64).spec, ("a",)) for i in range(10)])
    assert allocate(job("j", memory=GIB, cpus=64), view, loads).nodes == ("a",)


def test_cpus_are_counted_against_capacity() -> None:
    view = [NodeInfo(node_id="a", cpus=2.0), NodeInfo(node_id="b", cpus=2.0)]
    placed = place_all([job(f"j{i}", cpus=1.5) for i in range(3)], view)
    assert sorted(n for chosen in placed.values() for n in chosen) == ["a", "b"]  # the third fits nowhere


def test_two_jobs_wanting_one_host_port_land_on_different_nodes() -> None:
    view = nodes(2)
    placed = place_all([job("web1", ports=("8080:80",)), job("web2", ports=("8080:80",))], view)
    assert placed["web1"] != placed["web2"]
    third = place_all(
        [job("web1", ports=("8080:80",)), job("web2", ports=("8080:80",)), job("web3", ports=("8080:80",))], view
    )
    assert third["web3"] == ()
    udp = place_all(
        [job("web1", ports=("8080:80",)), job("web2", ports=("8080:80",)), job("dns", ports=("8080:53/udp",))], view
    )
    assert udp["dns"] != ()  # another protocol: not the same host port


def test_the_note_names_a_taken_port() -> None:
    loads = loads_of([(job("x", ports=("8080:80",)).spec, ("n00",))])
    choice = allocate(job("j", ports=("8080:80",)), nodes(1), loads)
    assert choice.note == "0 of 1 replicas placed: 0 ready nodes match with port 8080/tcp free"


def test_a_selector_is_respected_and_down_or_draining_nodes_are_not_chosen() -> None:
    view = [
        NodeInfo(node_id="a", labels={"zone": "a"}),
        NodeInfo(node_id="b", labels={"zone": "a"}, state=NodeState.DOWN),
        NodeInfo(node_id="c", labels={"zone": "a"}, state=NodeState.DRAINING),
        NodeInfo(node_id="d", labels={"zone": "b"}),
    ]
    choice = allocate(job("j", replicas=2, selector={"zone": "a"}), view, {})
    assert choice.nodes == ("a",)
    assert choice.note == "1 of 2 replicas placed: 1 ready node matches zone=a"


# -- the reviser --------------------------------------------------------------------------------------


def test_every_view_of_the_same_nodes_names_the_same_reviser() -> None:
    view = nodes(10)
    for job_id in (f"j{i}" for i in range(50)):
        expected = reviser(job_id, view)
        shuffled = view[:]
        random.Random(job_id).shuffle(shuffled)
        assert reviser(job_id, shuffled) == expected


def test_the_reviser_is_the_first_ready_node_of_the_ranking() -> None:
    view = nodes(5)
    order = ranking("j", [n.node_id for n in view])
    assert reviser("j", view) == order[0]
    first_down = [NodeInfo(node_id=n.node_id, state=NodeState.DOWN if n.node_id == order[0] else NodeState.READY)
                  for n in view]  # fmt: skip
    assert reviser("j", first_down) == order[1]


def test_removing_a_node_changes_the_reviser_only_of_the_jobs_it_revised() -> None:
    view = nodes(20)
    without = [n for n in view if n.node_id != "n07"]
    jobs = [f"j{i}" for i in range(1000)]
    changed = [j for j in jobs if reviser(j, view) != reviser(j, without)]
    assert changed and all(reviser(j, view) == "n07" for j in changed)


# -- revising -------------------------------------------------------------------------------------


def allocation(nodes_: tuple[str, ...], replicas: int = 2, version: int = 1) -> Allocation:
    return Allocation(job_id="j", version=version, replicas=replicas, nodes=nodes_, by="origin", at=1.0)


def test_a_node_down_for_less_than_reschedule_after_keeps_its_copy() -> None:
    view = [*nodes(3), NodeInfo(node_id="dead", state=NodeState.DOWN, down_for=9.0)]
    current = allocation(("n00", "dead"))
    assert revise(job("j", 2), current, view, {}, {}, reschedule_after=10.0) is None


def test_a_node_down_long_enough_is_replaced_keeping_the_live_copy() -> None:
    view = [*nodes(3), NodeInfo(node_id="dead", state=NodeState.DOWN, down_for=10.0)]
    current = allocation(("n00", "dead"))
    choice = revise(job("j", 2), current, view, loads_of([(job("j").spec, current.nodes)]), {}, reschedule_after=10)
    assert choice is not None and choice.nodes[0] == "n00" and choice.nodes[1] in ("n01", "n02")


@pytest.mark.parametrize("state", [State.FAILED, State.LOST, State.REJECTED])
def test_a_copy_that_failed_is_replaced_and_never_placed_back(state: State) -> None:
    view = nodes(3)
    current = allocation(("n00",), replicas=1)
    choice = revise(job("j"), current, view, {}, {"n00": state}, reschedule_after=10)
    assert choice is not None and choice.nodes and choice.nodes[0] != "n00"
    again = revise(job("j"), allocation(choice.nodes, 1, 2), view, {}, {"n00": state, choice.nodes[0]: state},
                   reschedule_after=10)  # fmt: skip
    assert again is not None and len(again.nodes) == 1 and again.nodes[0] not in ("n00", choice.nodes[0])
    everywhere = {n.node_id: state for n in view}
    last = revise(job("j"), allocation(again.nodes, 1, 3), view, {}, everywhere, reschedule_after=10)
    assert last is not None and last.nodes == ()  # failed everywhere: it stops walking
    assert revise(job("j"), allocation((), 1, 4), view, {}, everywhere, reschedule_after=10) is None


def test_a_draining_node_hands_its_copy_over() -> None:
    view = [*nodes(2), NodeInfo(node_id="drain", state=NodeState.DRAINING)]
    choice = revise(job("j"), allocation(("drain",), 1), view, {}, {}, reschedule_after=10)
    assert choice is not None and choice.nodes[0] in ("n00", "n01")


def test_a_short_allocation_fills_up_when_room_appears() -> None:
    current = allocation(("n00",), replicas=3)
    assert revise(job("j", 3), current, nodes(1), {}, {}, reschedule_after=10) is None  # no room: no new version
    choice = revise(job("j", 3), current, nodes(3), {}, {}, reschedule_after=10)
    assert choice is not None and sorted(choice.nodes) == ["n00", "n01", "n02"] and choice.note == ""


def test_scaling_down_keeps_the_running_copies() -> None:
    current = allocation(("n00", "n01", "n02"), replicas=3)
    states = {"n00": State.PENDING, "n01": State.RUNNING, "n02": State.PENDING}
    choice = revise(job("j", 3), current, nodes(3), {}, states, reschedule_after=10, replicas=1)
    assert choice is not None and choice.nodes == ("n01",)


def test_choose_keeps_what_it_is_told_to_keep_first() -> None:
    choice = choose("j", job("j").spec, nodes(4), {}, want=3, keep=("n03",), avoid=("n00",))
    assert choice.nodes[0] == "n03" and "n00" not in choice.nodes and len(choice.nodes) == 3


# -- many nodes, many jobs -----------------------------------------------------------------------------


def test_50_nodes_1000_jobs_placed_evenly_and_only_the_dead_nodes_jobs_move() -> None:
    view = nodes(50, cpus=64.0, memory=256 * GIB)
    jobs = [job(f"job-{i}", replicas=3, memory=GIB) for i in range(1000)]
    placed = place_all(jobs, view)
    per_node = Counter(n for chosen in placed.values() for n in chosen)
    assert all(len(set(chosen)) == 3 for chosen in placed.values())
    assert max(per_node.values()) - min(per_node.values()) <= 1  # 3000 copies: 60 each
    dead = {f"n{i:02d}" for i in range(5)}
    after = [NodeInfo(node_id=n.node_id, cpus=n.cpus, memory=n.memory,
                      state=NodeState.DOWN if n.node_id in dead else NodeState.READY, down_for=30.0)
             for n in view]  # fmt: skip
    loads = loads_of((j.spec, placed[j.job_id]) for j in jobs)
    revisers = Counter()
    for j in jobs:
        current = Allocation(job_id=j.job_id, version=1, replicas=3, nodes=placed[j.job_id], by="o", at=1.0)
        choice = revise(j, current, after, loads, {}, reschedule_after=10.0)
        if not dead & set(current.nodes):
            assert choice is None  # untouched: nothing moves
            continue
        assert choice is not None and len(set(choice.nodes)) == 3 and not dead & set(choice.nodes)
        assert set(current.nodes) - dead <= set(choice.nodes)  # the live copies stay where they run
        move(loads, j.spec, current.nodes, choice.nodes)
        revisers[reviser(j.job_id, after)] += 1
    assert not dead & set(revisers)
    assert all(loads[n].memory <= 256 * GIB for n in loads)


# -- what a node's own record says it holds ------------------------------------------------------------


def test_a_nodes_own_record_of_its_allocations_counts_when_they_were_not_heard_here() -> None:
    from node.noderecord import Allocated

    busy = NodeInfo(node_id="n00", memory=4 * GIB, allocated=Allocated(memory=3 * GIB, jobs=5))
    idle = NodeInfo(node_id="n01", memory=4 * GIB)
    for i in range(20):  # whatever the job's hash prefers
        assert choose(f"j{i}", job("j").spec, [busy, idle], {}, want=1).nodes == ("n01",)
    big = job("big", 2, memory=2 * GIB)
    choice = choose("big", big.spec, [busy, idle], {}, want=2)
    assert choice.nodes == ("n01",) and choice.note.startswith("1 of 2 replicas placed")  # 3 + 2 GiB > 4 GiB
    known = {"n00": Load(count=7)}  # what is known here counts when it is more
    assert choose("j", job("j").spec, [busy, NodeInfo(node_id="n01", allocated=Allocated(jobs=6))], known,
                  want=1).nodes == ("n01",)  # fmt: skip


def test_origins_whose_gossip_lags_spread_evenly_by_the_heartbeats_of_the_holders() -> None:
    """5 origins create 100 jobs round robin; each allocation reaches the other origins only 25 creates later
    (gossip lagging on a loaded machine), while each node's record (what it holds, as it counts it) reaches
    them every 5 creates: a heartbeat. Counting only what it has heard, an origin piles its jobs on the nodes
    whose recent allocations it has not heard of yet."""
    from node.noderecord import Allocated

    ids = [f"n{i:02d}" for i in range(5)]
    truth = dict.fromkeys(ids, 0)  # what each node holds (it hears every allocation naming it at once)
    heard: dict[str, dict[str, Load]] = {o: {} for o in ids}  # what each origin counts from allocations
    in_flight: list[tuple[int, str, Job, str]] = []
    records = dict.fromkeys(ids, 0)
    for i in range(100):
        if i % 5 == 0:
            records = dict(truth)
        for item in [f for f in in_flight if f[0] <= i]:
            in_flight.remove(item)
            for other in ids:
                if other != item[1]:
                    move(heard[other], item[2].spec, (), (item[3],))
        origin = ids[i % 5]
        view = [NodeInfo(node_id=n, allocated=Allocated(jobs=records[n])) for n in ids]
        j = job(f"job-{i}")
        (chosen,) = allocate(j, view, heard[origin]).nodes
        move(heard[origin], j.spec, (), (chosen,))
        in_flight.append((i + 25, origin, j, chosen))
        truth[chosen] += 1
    assert max(truth.values()) / min(truth.values()) <= 1.25, truth
