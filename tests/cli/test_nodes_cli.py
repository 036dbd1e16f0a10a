"""``cmnode nodes``, fast: the table fits 80 columns whatever the names and labels, shows a prefix of each ID
that can be typed back, and marks the node answering. The real command against real nodes is in
tests/mesh/test_registry_cluster.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from node import client_cli
from node.client_tables import SHORT_ID

ID = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


def test_nodes_table_fits_80_columns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    answer = {
        "nodes": [
            {"node_id": ID, "name": "a-very-long-host-name.example.internal", "state": "ready", "self": True,
             "labels": {"zone": "eu-west-1a", "disk": "ssd", "gpu": "none"}, "capacity": {"cpus": 64.0,
             "memory": 512 * 1024**3}, "allocated": {"cpus": 2.0, "memory": 0, "jobs": 17}, "running": 1234,
             "last_seen": now},
            {"node_id": ID[:-1] + "Z", "name": "b", "state": "down", "self": False, "labels": {},
             "capacity": {"cpus": None, "memory": None}, "running": 0, "last_seen": now - 3600},
        ]
    }  # fmt: skip

    def fetch(conn: Any, method: str, params: Any = None) -> Any:
        assert method == "NodeService.List"
        return answer

    monkeypatch.setattr(client_cli, "_fetch", fetch)
    assert client_cli.nodes() == client_cli.Exit.OK
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["NODE", "NAME", "STATE", "LABELS", "CPUS", "MEMORY", "ALLOC", "RUN", "SEEN"]
    first, second = lines[1].split(), lines[2].split()
    assert first[0] == ID[:SHORT_ID] + "*" and first[2] == "ready" and "512G" in first
    assert first[-3:] == ["17", "1234", "now"]  # allocated copies, then running containers
    assert second[:3] == [ID[:SHORT_ID], "b", "down"] and second[-2:] == ["60m", "ago"]
