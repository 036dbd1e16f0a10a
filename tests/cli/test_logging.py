"""A node's log: one line per event with key=value fields; ``--log-format json`` gives one JSON object a line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from tests.support import NodeProcess, remove_containers

from .conftest import cmnode

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(debug|info|warning|error|critical) "
                       r"logger=\S+ msg=\S.*$")  # fmt: skip


def run_a_failing_job(tmp_path: Path, docker_client: DockerClient, log_format: str) -> tuple[NodeProcess, str, str]:
    """Start a node, run a job that exits 3 on it, stop it; returns the node, the job ID and the whole log."""
    node = NodeProcess(tmp_path / "node", "--log-format", log_format).start()
    try:
        out = cmnode("create", "cmnode-test/busybox:latest", "--wait", "--", "sh", "-c", "exit 3", url=node.url)
        assert out.returncode == 1, out.stderr
        job_id = out.stdout.splitlines()[0]
    finally:
        assert node.stop() == 0
        remove_containers(docker_client, node.node_id)
    return node, job_id, node.log.read_text()


def test_json_log_parses_line_by_line(tmp_path: Path, test_image: str, docker_client: DockerClient) -> None:
    node, job_id, log = run_a_failing_job(tmp_path, docker_client, "json")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(log.splitlines(), 1):
        record = json.loads(line)  # every line, not just most
        assert isinstance(record, dict), (number, line)
        assert isinstance(record["ts"], float) and record["level"] in ("debug", "info", "warning", "error")
        assert isinstance(record["logger"], str) and isinstance(record["msg"], str)
        records.append(record)
    # The one ready line is the stdout line the node process waited for (tests/operator/test_log_lines.py).
    assert not [r for r in records if "ready" in r["msg"]]
    failed = [r for r in records if r.get("job_id") == job_id and r.get("state") == "failed"]
    assert len(failed) == 1, failed
    # Fields are typed, and a value with spaces stays whole.
    assert failed[0]["node_id"] == node.node_id
    assert (failed[0]["attempt"], failed[0]["exit_code"], failed[0]["error"]) == (1, 3, "exited with code 3")
    assert any(r["msg"].startswith("shutting down") and r["node_id"] == node.node_id for r in records)


def test_text_log_is_one_key_value_line_per_event(tmp_path: Path, test_image: str, docker_client: DockerClient) -> None:
    node, job_id, log = run_a_failing_job(tmp_path, docker_client, "text")
    lines = log.splitlines()
    assert lines
    for line in lines:
        assert TEXT_LINE.match(line), line
    assert any(f"shutting down node_id={node.node_id}" in line for line in lines)
    assert any(f"job_id={job_id} node_id={node.node_id} state=failed" in line for line in lines)
