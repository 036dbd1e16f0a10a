"""Placement (node/scheduler.py), the one rule both a created job and a job from a peer are placed by."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.allocation import Allocation
from node.identity import Identity, load_or_create
from node.model import Placement
from node.scheduler import runs_here

from .fakes import signed_job


@pytest.fixture
def origin(tmp_path: Path) -> Identity:
    return load_or_create(tmp_path / "origin")


def test_all_runs_everywhere(origin: Identity) -> None:
    job = signed_job(origin)
    assert runs_here(job, origin.node_id)
    assert runs_here(job, "some-peer")


def test_nodes_run_on_the_listed_nodes_only(origin: Identity) -> None:
    job = signed_job(origin, placement=Placement(mode="nodes", nodes=("a", "b")))
    assert runs_here(job, "a") and runs_here(job, "b")
    assert not runs_here(job, "c")
    assert not runs_here(job, origin.node_id)  # the origin records it; the listed nodes run it


def test_replicas_run_only_where_their_allocation_says(origin: Identity) -> None:
    job = signed_job(origin, placement=Placement(mode="replicas", replicas=2))
    assert not runs_here(job, origin.node_id)  # no allocation heard yet: nowhere, not even its origin
    allocation = Allocation(job_id=job.job_id, version=1, replicas=2, nodes=("a", "b"), by=origin.node_id, at=1.0)
    assert runs_here(job, "a", allocation=allocation) and runs_here(job, "b", allocation=allocation)
    assert not runs_here(job, origin.node_id, allocation=allocation)


def test_a_selector_narrows_all_and_nodes_to_matching_labels(origin: Identity) -> None:
    everywhere = signed_job(origin, placement=Placement(selector={"zone": "a"}))
    listed = signed_job(origin, placement=Placement(mode="nodes", nodes=("x", "y"), selector={"zone": "a"}))
    assert runs_here(everywhere, "x", labels={"zone": "a", "disk": "ssd"})
    assert not runs_here(everywhere, "x", labels={"zone": "b"})
    assert not runs_here(everywhere, "x")  # no labels: matches no selector
    assert runs_here(listed, "x", labels={"zone": "a"}) and not runs_here(listed, "z", labels={"zone": "a"})
    assert not runs_here(listed, "y", labels={})
