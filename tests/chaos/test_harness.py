"""The chaos harness's own logic, against nodes faked at its RPC call (fast: no namespace, no process)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import Cluster


@dataclass
class FakeNode:
    running: bool = True


class FakeCluster(Cluster):
    """Nodes that answer ``ContainerService.List`` from ``known``; every call is counted."""

    def __init__(self, known: dict[int, set[str]]) -> None:
        super().__init__(lan=None, root=Path("/nonexistent"), http=None)  # type: ignore[arg-type]
        self.known = known
        self.nodes = {i: FakeNode() for i in known}  # type: ignore[misc]
        self.calls: list[tuple[int, str]] = []

    def call(self, index: int, method: str, params: Any = None) -> Any:
        self.calls.append((index, method))
        assert method == "ContainerService.List"
        return {"jobs": [{"job_id": j, "status": "pending"} for j in sorted(self.known[index])], "next_cursor": None}


def test_while_one_node_lags_only_that_node_is_asked() -> None:
    """A restarted node catching up must not be slowed by every node listing every job five times a second: once
    a full check finds the node that lacks the most jobs, the next checks ask it alone until it has them all."""
    jobs = {"a", "b", "c"}
    fake = FakeCluster({0: set(jobs), 1: set(jobs), 2: {"a"}})
    first = fake.agreement(jobs)
    assert not first.agreed and "node 2 lacks 2" in first.detail
    assert len(fake.calls) == 3
    fake.calls.clear()
    second = fake.agreement(jobs)
    assert not second.agreed
    assert fake.calls == [(2, "ContainerService.List")]
    fake.calls.clear()
    fake.known[2] = set(jobs)
    third = fake.agreement(jobs)
    assert third.agreed, third.detail
    assert sorted(i for i, _ in fake.calls) == [0, 1, 2, 2]  # the laggard, then everyone
    fake.calls.clear()
    assert fake.agreement(jobs).agreed
    assert len(fake.calls) == 3  # nobody lags: one full check


def test_a_node_with_a_job_nobody_expects_still_disagrees() -> None:
    """The shortcut only skips work while a node lacks expected jobs; a job on one node only is still found."""
    fake = FakeCluster({0: {"a"}, 1: {"a", "x"}})
    result = fake.agreement({"a"})
    assert not result.agreed and "not on both" in result.detail
