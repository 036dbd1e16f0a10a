"""``hold_off`` against the real py-libp2p swarm: the fake hosts of test_topology.py carry the private negative
cache by the name ``hold_off`` reaches for; this proves the library has it under that name (an upgrade that
renames it would leave trimmed peers unblocked without any other test noticing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from libp2p.peer.id import ID

from node.host import Host
from node.identity import load_or_create
from node.topology import hold_off
from tests.support import base_config

pytestmark = pytest.mark.slow


async def test_a_held_off_peer_is_blocked_by_the_real_swarm_and_a_dial_of_ours_unblocks_it(tmp_path: Path) -> None:
    host = Host(config=base_config(tmp_path / "a"), identity=load_or_create(tmp_path / "ka"))
    other: ID = load_or_create(tmp_path / "kb").peer_id
    network = host.host.get_network()
    assert not network._negative_peer_cache.is_blocked(str(other))
    hold_off(host, other)
    assert network._negative_peer_cache.is_blocked(str(other))
    network.unblock_peer(other)  # what Peering._dial does before a dial of its own
    assert not network._negative_peer_cache.is_blocked(str(other))
