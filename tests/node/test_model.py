"""Spec validation and the execution model, without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from node.errors import ValidationError
from node.model import Execution, Job, JobSpec, State, derive_status


def errors_of(data: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        JobSpec.from_json(data)
    return {e["field"]: e["message"] for e in info.value.errors}


def test_seed_spec_is_valid() -> None:
    spec = JobSpec.from_json({"image": "nginx", "arguments": [], "env": {}})
    assert spec.image == "nginx"
    assert spec.arguments == ()
    assert dict(spec.env) == {}
    assert spec.pull == "missing"
    assert spec.placement.mode == "all"


@pytest.mark.parametrize(
    "image",
    ["nginx", "nginx:1.25", "library/nginx:latest", "ghcr.io/org/app:v1.2-rc", "localhost:5000/a/b",
     "127.0.0.1:1/cmnode-test/absent:latest", "busybox@sha256:" + "a" * 64, "[::1]:5000/x"],
)  # fmt: skip
def test_valid_image_references(image: str) -> None:
    assert JobSpec.from_json({"image": image}).image == image


@pytest.mark.parametrize(
    "image", ["", "Nginx", "nginx:", "-x", "a//b", "nginx:tag with space", "x" * 600, "a@sha256:zz"]
)
def test_invalid_image_references(image: str) -> None:
    assert "image" in errors_of({"image": image})


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of(
        {"image": 3, "arguments": ["ok", 4], "env": {"A": 1, "1BAD": "x"}, "retries": -1, "timeout": "5",
         "pull": "sometimes", "surprise": True, "labels": {"cmnode.job_id": "x"}, "resources": {"cpus": 0, "gpu": 1}}
    )  # fmt: skip
    assert errors == {
        "surprise": "unknown field",
        "image": "must be a string, got int",
        "arguments[1]": "must be a string, got int",
        "env.A": "must be a string, got int",
        "env.1BAD": "invalid key: must match the pattern ^[A-Za-z_][A-Za-z0-9_.-]*$",
        "labels.cmnode.job_id": "invalid key: keys starting with 'cmnode.' are reserved",
        "resources.gpu": "unknown field",
        "resources.cpus": "must be > 0",
        "timeout": "must be a number or null, got str",
        "retries": "must be >= 0",
        "pull": 'must be one of "missing", "always", "never"',
    }


def test_the_checkers_that_disagreed_now_agree() -> None:
    """Once two checkers ran in turn: the first stopped at ``image``, the second refused what the first
    (and the published schema) let through."""
    assert errors_of({"image": 123, "name": "bad name!"}) == {
        "image": "must be a string, got int",
        "name": "must match the pattern ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$",
    }
    assert set(errors_of({"image": "Busybox", "timeout": 0, "resources": {"cpus": 0}})) == {
        "image",
        "timeout",
        "resources.cpus",
    }


@pytest.mark.parametrize("image", ["busybox\n", "busybox:1\n", "a\nb"])
def test_a_trailing_newline_is_not_an_image(image: str) -> None:
    assert "image" in errors_of({"image": image})


def test_missing_image_and_wrong_container_types() -> None:
    assert errors_of({}) == {"image": "is required"}
    assert errors_of({"image": "x", "arguments": "ls -l", "env": []}) == {
        "arguments": "must be an array or null, got str",
        "env": "must be an object or null, got list",
    }
    with pytest.raises(ValidationError):
        JobSpec.from_json(["nginx"])


def test_booleans_are_not_numbers() -> None:
    assert "retries" in errors_of({"image": "x", "retries": True})
    assert "timeout" in errors_of({"image": "x", "timeout": True})


def test_null_collections_are_empty_as_go_sends_them() -> None:
    spec = JobSpec.from_json({"image": "x", "arguments": None, "env": None})
    assert spec.arguments == () and dict(spec.env) == {}


def test_memory_sizes_and_placement() -> None:
    spec = JobSpec.from_json({"image": "x", "resources": {"memory": "256m", "cpus": 0.5}, "placement": {"replicas": 2}})
    assert spec.resources.memory == 256 * 1024 * 1024
    assert spec.resources.cpus == 0.5
    assert spec.placement.mode == "replicas" and spec.placement.replicas == 2
    assert "resources.memory" in errors_of({"image": "x", "resources": {"memory": "1k"}})
    assert "placement" in errors_of({"image": "x", "placement": "some"})
    assert "placement.nodes" in errors_of({"image": "x", "placement": {"nodes": []}})


def test_spec_round_trips_through_json() -> None:
    data = {"image": "x:1", "arguments": ["a"], "env": {"K": "v"}, "name": "n", "labels": {"team": "a"},
            "entrypoint": ["sh"], "resources": {"cpus": 1.5, "memory": 8388608}, "timeout": 2.5, "retries": 3,
            "pull": "never", "placement": {"nodes": ["p1"]}}  # fmt: skip
    assert JobSpec.from_json(data).to_json() == data
    job = Job(job_id="j", spec=JobSpec.from_json(data), origin="o", created_at=1.5, signature="s")
    assert Job.from_json(job.to_json()) == job
    assert job.canonical_bytes() == Job.from_json(job.to_json()).canonical_bytes()


def test_execution_versions_and_timestamps() -> None:
    e = Execution(job_id="j", node_id="n", created_at=1.0, updated_at=1.0)
    running = e.advance(state=State.RUNNING, container_id="c")
    assert running.version == 2 and running.started_at is not None and running.finished_at is None
    done = running.advance(state=State.COMPLETE, exit_code=0)
    assert done.version == 3 and done.finished_at is not None and done.started_at == running.started_at
    assert Execution.from_json(done.to_json()) == done
    with pytest.raises(ValidationError):
        Execution.from_json({**done.to_json(), "version": "3"})
    with pytest.raises(ValidationError):
        Execution.from_json({**done.to_json(), "state": "exploded"})


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "pending"),
        (["running", "complete"], "running"),
        (["pending", "failed"], "pending"),
        (["pulling", "complete"], "pulling"),
        (["complete", "complete"], "complete"),
        (["complete", "failed"], "failed"),
        (["complete", "lost"], "failed"),
        (["cancelled", "complete"], "cancelled"),
    ],
)
def test_derive_status(states: list[str], expected: str) -> None:
    executions = [Execution(job_id="j", node_id=str(i), state=State(s)) for i, s in enumerate(states)]
    assert derive_status(executions) == expected
