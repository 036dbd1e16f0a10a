"""The session's check for job containers left on the engine (tests/conftest.py): a run whose test leaves its
nodes' containers fails naming them, and they are removed; a container of a node not of the run is left alone."""

from __future__ import annotations

import contextlib
import uuid

import docker.errors
import pytest
from docker.client import DockerClient

pytestmark = [pytest.mark.docker, pytest.mark.slow]

INNER = """
import pytest

from node.identity import load_or_create

pytest_plugins = ["tests.conftest"]
IMAGE = "cmnode-test/busybox:latest"


def make(client, node):
    client.api.create_container(IMAGE, ["sleep", "30"], labels={"cmnode.node_id": node, "cmnode.managed": "1"})


def test_leaves_containers(docker_client, tmp_path, node_id):
    make(docker_client, load_or_create(tmp_path / "node").node_id)  # a node of this run: its data dir is here
    make(docker_client, node_id + "-other")  # the node_id fixture's id, with a suffix
    make(docker_client, "FOREIGN")  # not this run's
"""


def test_a_run_leaving_containers_fails_naming_them_and_others_are_left_alone(
    pytester: pytest.Pytester, docker_available: DockerClient, test_image: str
) -> None:
    foreign = f"foreign-{uuid.uuid4().hex[:12]}"
    pytester.makepyfile(test_inner=INNER.replace("FOREIGN", foreign))
    try:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["*2 container(s) left on the engine by this run's nodes*"])
        named = sorted(line.split(" node ")[1] for line in result.stdout.lines if " node " in line)
        assert len(named) == 2, result.stdout.str()
        assert named[0].startswith("12D3KooW") and " job None " in named[0]  # the data dir's node, and where it is
        assert "(data dir test_leaves_containers0/node)" in named[0], named[0]
        assert named[1].startswith("test-") and "-other (data dir a node_id fixture) job None " in named[1]
        assert foreign not in result.stdout.str()
        left = docker_available.api.containers(all=True, filters={"label": "cmnode.managed=1"})
        nodes = [c["Labels"]["cmnode.node_id"] for c in left]
        assert foreign in nodes  # left alone
        assert not [n for n in nodes if n.startswith("test-") and n.endswith("-other")]  # removed by the check
    finally:
        for c in docker_available.api.containers(all=True, filters={"label": f"cmnode.node_id={foreign}"}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                docker_available.api.remove_container(c["Id"], force=True)


def test_a_run_that_cleans_up_passes(pytester: pytest.Pytester, docker_available: DockerClient) -> None:
    pytester.makepyfile(
        test_inner="""
pytest_plugins = ["tests.conftest"]

def test_nothing_left(docker_client, node_id):
    assert docker_client is not None
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "left on the engine" not in result.stdout.str()
