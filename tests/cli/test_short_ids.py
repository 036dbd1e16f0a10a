"""Short IDs: tables show prefixes that can be typed back (``--no-trunc``: full IDs), a job is named by a
unique prefix, ``create --node`` takes a node's name or ID prefix, and ``--url``/``--token`` may come before
the command. Fast tests of the client's pieces first, then the real executable against a real node."""

from __future__ import annotations

from typing import Any

import pytest

from node import client_cli
from node.client_cli import hoist
from node.client_spec import UsageError, resolve_nodes
from node.client_tables import print_status, short_ids
from tests.support import NodeProcess

from .conftest import cmnode, one_line

IMAGE = "cmnode-test/busybox:latest"
A = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
B = "12D3KooWQYhTNQdmrZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"
C = "12D3KooWBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"


def test_connection_flags_before_the_command_move_after_it() -> None:
    assert hoist(["--url", "http://x/jrpc", "status", "ab12"]) == ["status", "--url", "http://x/jrpc", "ab12"]
    assert hoist(["--token=t", "--url", "u", "--no-trunc", "jobs", "--limit", "3"]) == [
        "jobs", "--token=t", "--url", "u", "--no-trunc", "--limit", "3"
    ]  # fmt: skip
    assert hoist(["status", "--url", "u", "ab12"]) == ["status", "--url", "u", "ab12"]  # already after
    assert hoist(["--url"]) == ["--url"]  # the parser says what is missing
    assert hoist(["--help"]) == ["--help"]


def test_short_ids_grow_until_no_two_shown_share_one() -> None:
    ids = ["abcdef12-1", "abcdef12-2", "12345678-9"]
    assert short_ids(ids) == {"abcdef12-1": "abcdef12-1", "abcdef12-2": "abcdef12-2", "12345678-9": "12345678-9"}
    assert short_ids(["abcdef1234", "abcdef9999", "0123456789"]) == {
        "abcdef1234": "abcdef12", "abcdef9999": "abcdef99", "0123456789": "01234567"
    }  # fmt: skip
    assert short_ids(["a" * 36, "b" * 36]) == {"a" * 36: "a" * 8, "b" * 36: "b" * 8}


def test_node_names_and_prefixes_resolve_and_ambiguity_is_refused() -> None:
    known: list[dict[str, Any]] = [{"node_id": A, "name": "web-1"}, {"node_id": B, "name": "web-2"},
                                   {"node_id": C, "name": "db"}]  # fmt: skip
    assert resolve_nodes(known, ["web-1", "12D3KooWB", C]) == [A, C, C]
    later = "12D3KooW" + "N" * 44  # a full ID of a node not heard of yet is passed on
    assert resolve_nodes(known, [later]) == [later]
    with pytest.raises(UsageError, match="ambiguous: 2 nodes with the ID prefix '12D3KooWQ'"):
        resolve_nodes(known, ["12D3KooWQ"])
    with pytest.raises(UsageError, match="no node known by that ID, name or ID prefix"):
        resolve_nodes(known, ["web-3"])


def test_tables_fit_80_columns_with_short_ids(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    jobs: dict[str, Any] = {"jobs": [{"job_id": f"{i:08x}-0000-4000-8000-000000000000", "status": "running",
                      "image": "registry.example.com/team/some-long-image-name:1.2.3", "name": "a-rather-long-name",
                      "labels": {"team": "payments", "tier": "backend"}, "created_at": 1.7e9} for i in range(3)],
            "next_cursor": None}  # fmt: skip
    status = {"job_id": jobs["jobs"][0]["job_id"], "status": "running", "created_at": 1.7e9,
              "spec": {"image": "busybox"}, "allocation": {"version": 2, "note": "2 of 2 replicas placed"},
              "executions": [{"node_id": A, "state": "running", "attempt": 1, "exit_code": None,
                              "container_id": "f" * 64, "error": None}]}  # fmt: skip
    answers = {"ContainerService.List": jobs, "ContainerService.Status": status, "NodeService.Peers":
               {"peers": [{"node_id": A, "addresses": ["/ip4/127.0.0.1/tcp/4001/p2p/" + A]}]}}  # fmt: skip
    monkeypatch.setattr(client_cli, "_fetch", lambda conn, method, params=None: answers[method])
    for command in (client_cli.jobs, client_cli.peers, lambda: print_status(status)):
        assert command() in (client_cli.Exit.OK, None)
        out = capsys.readouterr().out
        assert all(len(line) <= 80 for line in out.splitlines()), out
    print_status(status)
    out = capsys.readouterr().out
    assert A not in out and [A[:16], "running"] in [line.split()[:2] for line in out.splitlines()]
    assert "00000000 " in out
    client_cli.jobs(conn=client_cli.Conn(no_trunc=True))
    assert jobs["jobs"][1]["job_id"] in capsys.readouterr().out


@pytest.mark.docker
@pytest.mark.slow
def test_a_job_by_its_short_id_and_flags_before_the_command(node: NodeProcess) -> None:
    made = cmnode("--url", node.url, "create", "--name", "short", "--node", node.node_id[:12], IMAGE, "--", "true")
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    shown = cmnode("status", job_id[:8], "--json", url=node.url)
    assert shown.returncode == 0 and job_id in shown.stdout
    assert f'"{node.node_id}"' in shown.stdout  # --node took an ID prefix and sent the full ID
    unknown = cmnode("--url", node.url, "status", "zzzzzzzz")
    assert unknown.returncode == 4 and "job zzzzzzzz not found" in one_line(unknown.stderr)
    # every job shares the empty prefix's first character with some other one once there are many; "" itself
    # is refused by the schema, so a one-character prefix most jobs share shows the ambiguity
    for _ in range(17):
        assert cmnode("create", IMAGE, "--", "true", url=node.url).returncode == 0
    listed = cmnode("jobs", "--json", "--limit", "1000", url=node.url)
    firsts = [j["job_id"][0] for j in __import__("json").loads(listed.stdout)["jobs"]]
    shared = max(set(firsts), key=firsts.count)
    assert firsts.count(shared) > 1
    ambiguous = cmnode("stop", shared, url=node.url)
    assert ambiguous.returncode == 5 and "ambiguous" in one_line(ambiguous.stderr)
