"""The swarm's own auto-connector is off (``no_auto_connect``, node/peering.py): which peers a node connects to is
node/topology.py's to decide. py-libp2p's connector aims for 200 connections and dials every peer in the peerstore
that disconnected more than 60 s ago, so an idle 30-node cluster kept remaking the connections its hubs trimmed.

The fast test drives the library's real ``AutoConnector`` over a fake swarm (what it reads of one: the peerstore,
the connections, the config); the slow one checks that the real swarm a ``Host`` builds has the connector where
``no_auto_connect`` reaches for it (an upgrade that moves it would turn this off silently)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import multiaddr
import pytest
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerstore import PeerStore

from node.config import Config
from node.gossip import MeshStats
from node.peering import Peering, no_auto_connect
from tests.mesh.test_thirty import new_identity


class FakeSwarm:
    """What ``AutoConnector`` reads of a swarm: three known peers, none connected; its dials are recorded."""

    def __init__(self) -> None:
        self.self_id = new_identity().peer_id
        self.connection_config = ConnectionConfig()
        self.peerstore = PeerStore()
        self.connections: dict[ID, Any] = {}
        self.transport_manager = None
        self.dialled: list[ID] = []
        for port in (4001, 4002, 4003):
            self.peerstore.add_addrs(new_identity().peer_id, [multiaddr.Multiaddr(f"/ip4/10.0.0.1/tcp/{port}")], 3600)
        self.auto_connector = AutoConnector(self)  # type: ignore[arg-type]

    def get_total_connections(self) -> int:
        return len(self.connections)

    async def dial_peer(self, peer_id: ID) -> None:
        self.dialled.append(peer_id)

    def register_notifee(self, notifee: Any) -> None:
        pass


@pytest.mark.trio
async def test_the_library_connector_dials_every_known_peer_without_it() -> None:
    """The premise: left alone, one check of the real connector dials every known peer it is not connected to."""
    swarm = FakeSwarm()
    await swarm.auto_connector.start()
    await swarm.auto_connector.maybe_connect()
    assert len(swarm.dialled) == 3


@pytest.mark.trio
async def test_peering_switches_the_library_connector_off(tmp_path: Path) -> None:
    """Once ``Peering.watch`` has the host, neither the periodic check nor the one after a disconnect dials."""
    swarm = FakeSwarm()
    host: Any = SimpleNamespace(host=SimpleNamespace(get_network=lambda: swarm))
    Peering(config=Config(data_dir=tmp_path), stats=MeshStats()).watch(host, lambda peer_id: None)
    await swarm.auto_connector.start()  # what the swarm does when it runs, after the host was built
    await swarm.auto_connector.maybe_connect()
    assert swarm.dialled == []


def test_a_network_without_the_connector_is_left_alone() -> None:
    no_auto_connect(SimpleNamespace())  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.trio
async def test_the_real_swarm_has_the_connector_no_auto_connect_replaces(tmp_path: Path) -> None:
    from node.host import Host
    from node.identity import load_or_create
    from tests.support import base_config

    host = Host(config=base_config(tmp_path / "a"), identity=load_or_create(tmp_path / "ka"))
    network: Any = host.host.get_network()
    assert isinstance(network.auto_connector, AutoConnector)
    no_auto_connect(network)
    other = load_or_create(tmp_path / "kb").peer_id
    network.peerstore.add_addrs(other, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/9")], 3600)
    dialled: list[ID] = []

    async def dial_peer(peer_id: ID) -> None:
        dialled.append(peer_id)

    network.dial_peer = dial_peer
    await network.auto_connector.start()
    await network.auto_connector.maybe_connect()
    assert dialled == []
