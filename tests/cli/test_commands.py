"""The client commands, run as the real ``cmnode`` executable against a real node and dockerd."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests.support import NodeProcess, poll

from .conftest import cmnode, one_line

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "cmnode-test/busybox:latest"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ok(*args: str, node: NodeProcess) -> str:
    out = cmnode(*args, url=node.url)
    assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
    assert out.stderr == "", out.stderr
    return out.stdout


def as_json(*args: str, node: NodeProcess) -> Any:
    return json.loads(ok(*args, "--json", node=node))


def create(node: NodeProcess, *args: str) -> str:
    job_id = ok("create", IMAGE, *args, node=node).strip()
    assert UUID.match(job_id), job_id
    return job_id


def wait_status(node: NodeProcess, job_id: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    """Poll ``cmnode status --json`` until the job is ``wanted`` (a job's container state has no push channel)."""

    def reached() -> dict[str, Any] | None:
        status: dict[str, Any] = as_json("status", job_id, node=node)
        return status if status["status"] == wanted else None

    return poll(reached, timeout=timeout, interval=0.2, what=f"job {job_id} {wanted}")


def test_create_wait_json_reports_the_completed_job(node: NodeProcess) -> None:
    out = cmnode("create", IMAGE, "--wait", "--json", "--", "sh", "-c", "echo hi", url=node.url)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)  # with --json, stdout is the final Status result alone
    assert status["status"] == "complete"
    assert [(e["node_id"], e["state"], e["exit_code"]) for e in status["executions"]] == [(node.node_id, "complete", 0)]


def test_wait_on_a_failing_job_exits_non_zero(node: NodeProcess) -> None:
    out = cmnode("create", IMAGE, "--wait", "--", "sh", "-c", "exit 3", url=node.url)
    assert out.returncode == 1, (out.stdout, out.stderr)
    lines = out.stdout.splitlines()
    job_id = lines[0]
    assert UUID.match(job_id)
    # Piped output: one key=value line per change of the node's execution, then the outcome.
    assert f"node={node.node_id} state=failed attempt=1 exit_code=3" in out.stdout
    assert lines[-1] == f"job {job_id} failed"
    assert one_line(out.stderr) == f"cmnode: job {job_id} ended failed"

    again = cmnode("status", job_id, "--wait", "--json", url=node.url)  # an ended job: at once, same verdict
    assert again.returncode == 1
    assert json.loads(again.stdout)["status"] == "failed"


def test_create_prints_the_id_and_status_shows_a_table(node: NodeProcess) -> None:
    job_id = create(node, "--name", "greeting", "--", "echo", "hello")
    assert cmnode("status", job_id, "--wait", url=node.url).returncode == 0
    table = ok("status", job_id, "--no-trunc", node=node)
    assert job_id in table and IMAGE in table
    row = next(line for line in table.splitlines() if line.startswith(node.node_id))
    assert row.split()[1:4] == ["complete", "1", "0"]
    short = ok("status", job_id, node=node)  # short IDs, within 80 columns
    assert job_id not in short and job_id[:8] in short and all(len(line) <= 80 for line in short.splitlines())
    assert next(line for line in short.splitlines() if line.startswith(node.node_id[:16])).split()[1] == "complete"
    status = as_json("status", job_id, node=node)
    assert status["spec"]["name"] == "greeting"
    assert status["spec"]["arguments"] == ["echo", "hello"]


def test_create_sends_env_labels_retries_and_timeout(node: NodeProcess) -> None:
    job_id = create(node, "-e", "GREETING=hi there", "--env", "EMPTY=", "--label", "team=a", "--label", "tier=x=y",
                    "--retries", "2", "--timeout", "30", "--", "sh", "-c", 'echo "$GREETING"')  # fmt: skip
    spec = as_json("status", job_id, node=node)["spec"]
    assert spec["env"] == {"GREETING": "hi there", "EMPTY": ""}
    assert spec["labels"] == {"team": "a", "tier": "x=y"}
    assert spec["retries"] == 2 and spec["timeout"] == 30
    wait_status(node, job_id, "complete")
    assert ok("logs", job_id, node=node) == "hi there\n"


def test_jobs_filters_by_label_and_status(node: NodeProcess) -> None:
    suite = uuid.uuid4().hex[:8]
    good = create(node, "--label", f"suite={suite}", "--", "true")
    bad = create(node, "--label", f"suite={suite}", "--label", "kind=bad", "--", "false")
    create(node, "--", "true")  # another job, without the label
    wait_status(node, good, "complete")
    wait_status(node, bad, "failed")

    listed = as_json("jobs", "--label", f"suite={suite}", node=node)
    assert [j["job_id"] for j in listed["jobs"]] == [bad, good]  # newest first
    both = as_json("jobs", "--label", f"suite={suite}", "--label", "kind=bad", node=node)
    assert [j["job_id"] for j in both["jobs"]] == [bad]
    failed = as_json("jobs", "--status", "failed", node=node)
    assert bad in [j["job_id"] for j in failed["jobs"]] and good not in [j["job_id"] for j in failed["jobs"]]
    assert [j["job_id"] for j in as_json("jobs", "--limit", "1", node=node)["jobs"]] != []

    table = ok("jobs", "--label", f"suite={suite}", node=node)
    rows = [line.split() for line in table.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [(bad[:8], "failed"), (good[:8], "complete")]  # short IDs
    wide = ok("jobs", "--label", f"suite={suite}", "--no-trunc", node=node)
    assert [line.split()[0] for line in wide.splitlines()[1:]] == [bad, good]


def test_logs_split_streams_tail_and_node(node: NodeProcess) -> None:
    job_id = create(node, "--", "sh", "-c", "echo one; echo two; echo oops >&2")
    wait_status(node, job_id, "complete")
    out = cmnode("logs", job_id, url=node.url)
    assert out.returncode == 0
    assert (out.stdout, out.stderr) == ("one\ntwo\n", "oops\n")
    lines = create(node, "--", "sh", "-c", "echo one; echo two; echo three")
    wait_status(node, lines, "complete")
    assert ok("logs", lines, "--tail", "2", node=node) == "two\nthree\n"
    assert as_json("logs", job_id, "--node", node.node_id, node=node)["stdout"] == "one\ntwo\n"
    elsewhere = cmnode("logs", job_id, "--node", "12D3KooWnobody", url=node.url)
    assert elsewhere.returncode == 4
    assert "no execution on node 12D3KooWnobody" in one_line(elsewhere.stderr)


def test_stop_cancels_a_running_job(node: NodeProcess) -> None:
    job_id = create(node, "--", "sleep", "300")
    wait_status(node, job_id, "running")
    assert ok("stop", job_id, node=node).strip() == f"Job stop requested: {job_id}"
    assert as_json("stop", job_id, node=node)["job_id"] == job_id  # twice is fine
    out = cmnode("status", job_id, "--wait", url=node.url, timeout=60)
    assert out.returncode == 1  # cancelled is not success
    assert out.stdout.splitlines()[-1] == f"job {job_id} cancelled"


def test_info_and_peers(node: NodeProcess) -> None:
    info = as_json("info", node=node)
    assert info["node_id"] == node.node_id
    assert info["rpc_url"] == node.url
    assert info["docker"]["ok"] is True
    table = ok("info", node=node)
    assert node.node_id in table and "docker" in table
    assert as_json("peers", node=node) == {"peers": []}
    assert ok("peers", node=node) == "no peers connected\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("status", "00000000-0000-0000-0000-000000000000"), "job 00000000-0000-0000-0000-000000000000 not found"),
        (("logs", "no-such-job"), "job no-such-job not found"),
        (("stop", "no-such-job"), "job no-such-job not found"),
        (("status", "no-such-job", "--wait"), "job no-such-job not found"),
    ],
)
def test_unknown_job_is_exit_4(node: NodeProcess, args: tuple[str, ...], needle: str) -> None:
    out = cmnode(*args, url=node.url)
    assert out.returncode == 4
    assert out.stdout == ""
    assert one_line(out.stderr) == f"cmnode: {needle}"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("create", ""), "image"),
        (("create", IMAGE, "--retries", "1000"), "retries"),
        (("create", IMAGE, "--timeout", "-1"), "timeout"),
        (("jobs", "--status", "bogus"), "status"),
        (("logs", "some-job", "--tail", "-5"), "tail"),
    ],
)
def test_params_the_node_refuses_are_exit_5(node: NodeProcess, args: tuple[str, ...], field: str) -> None:
    out = cmnode(*args, url=node.url)
    assert out.returncode == 5, out.stderr
    assert f"invalid params: {field}: " in one_line(out.stderr)


def test_url_flag_wins_over_the_environment(node: NodeProcess) -> None:
    out = cmnode("info", "--json", "--url", node.url, env={"CMNODE_URL": "http://127.0.0.1:1"})
    assert out.returncode == 0
    assert json.loads(out.stdout)["node_id"] == node.node_id
    bare = cmnode("info", "--json", url=node.url.removeprefix("http://"))  # host:port alone means http
    assert bare.returncode == 0
