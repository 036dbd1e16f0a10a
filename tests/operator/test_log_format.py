"""The operator's log, line by line, in memory: each event once, no ``=None`` fields, Docker out of reach said at
start, and the addresses a wildcard RPC listener answers on. The same lines from real processes: test_log_lines.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest

from node.docker_health import DaemonHealth
from node.executions import Executions
from node.model import State
from node.peering import ConnectionWatch
from node.runner import reachable


class FakeNetwork:
    """The swarm's connection table as ConnectionWatch reads it: a peer's connections, gone before the notice."""

    def __init__(self) -> None:
        self.conns: dict[str, list[object]] = {}

    def get_connections(self, peer_id: str) -> list[object]:
        return self.conns.get(peer_id, [])


def conn(peer_id: str, port: int) -> Any:
    return SimpleNamespace(
        muxed_conn=SimpleNamespace(peer_id=peer_id), get_transport_addresses=lambda: [f"/ip4/127.0.0.1/tcp/{port}"]
    )


def lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]


async def test_a_peer_with_two_connections_is_one_arrival_and_one_departure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    told: list[str] = []
    watch, network = ConnectionWatch(told.append), FakeNetwork()
    net = cast(Any, network)
    first, second = conn("peerA", 4001), conn("peerA", 4002)
    # Both sides dialled at once: two connections, one arrival.
    for c in (first, second):
        network.conns.setdefault("peerA", []).append(c)
        await watch.connected(net, c)
    assert lines(caplog, "peer connected") == ["peer connected peer=peerA address=/ip4/127.0.0.1/tcp/4001"]
    assert told == ["peerA", "peerA"]  # catch-up still hears of every connection
    # One of the two closes (the swarm drops it before it says so): the peer is still here.
    network.conns["peerA"].remove(first)
    await watch.disconnected(net, first)
    assert lines(caplog, "peer disconnected") == []
    network.conns["peerA"].remove(second)
    await watch.disconnected(net, second)
    assert lines(caplog, "peer disconnected") == ["peer disconnected peer=peerA"]
    # Back again: a second arrival, at info.
    network.conns["peerA"] = [first]
    await watch.connected(net, first)
    assert len(lines(caplog, "peer connected")) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if r.getMessage().startswith("peer "))


async def test_execution_lines_name_exit_code_and_error_only_when_there_is_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    executions = Executions(node_id="node1", store=cast(Any, None), publish=None)

    def execution(state: State, exit_code: int | None, error: str | None) -> Any:
        return SimpleNamespace(job_id="j1", state=state, attempt=1, exit_code=exit_code, error=error)

    await executions.announce(execution(State.RUNNING, None, None))
    await executions.announce(execution(State.FAILED, 3, "exited with code 3"))
    await executions.announce(execution(State.CANCELLED, None, "cancelled by request"))
    assert lines(caplog, "execution") == [
        "execution job_id=j1 node_id=node1 state=running attempt=1",
        "execution job_id=j1 node_id=node1 state=failed attempt=1 exit_code=3 error=exited with code 3",
        "execution job_id=j1 node_id=node1 state=cancelled attempt=1 error=cancelled by request",
    ]


def test_a_daemon_out_of_reach_at_start_is_a_warning_once(caplog: pytest.LogCaptureFixture) -> None:
    health = DaemonHealth()
    health.mark_down("cannot connect to the Docker daemon")  # never up since start
    health.mark_down("cannot connect to the Docker daemon")  # the reconnect loop says it again: not the log
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["docker daemon unavailable: cannot connect to the Docker daemon"]
    health.mark_up()
    health.mark_down("gone")  # lost later: said again
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_wildcard_rpc_address_is_told_as_the_addresses_that_reach_it() -> None:
    urls = reachable("http://0.0.0.0:8080")
    assert "http://127.0.0.1:8080" in urls
    assert urls[-1].startswith("http://127.") and all(u.startswith("http://") and u.endswith(":8080") for u in urls)
    assert "http://0.0.0.0:8080" not in urls
    assert reachable("https://127.0.0.1:8443") == []  # a specific address says where it is already
