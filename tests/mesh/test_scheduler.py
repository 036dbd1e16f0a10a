"""Placement (node/scheduler.py), the one rule both a created job and a job from a peer are placed by."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_replicas_run_on_the_origin_only_for_now(origin: Identity) -> None:
    job = signed_job(origin, placement=Placement(mode="replicas", replicas=3))
    assert runs_here(job, origin.node_id)
    assert not runs_here(job, "some-peer")
