"""mDNS discovery with the addresses we choose, started and stopped by us.

The library's own mDNS (``new_host(enable_mDNS=True)``) advertises the raw listen address, which is
``/ip4/0.0.0.0/...`` when listening on every interface, spawns a trio system task that outlives the host,
and only fills the peerstore (docs/py-libp2p.md, "mDNS" and "Listening on 0.0.0.0 is announced as
0.0.0.0"). Here the caller passes the concrete addresses to announce; every call blocks (zeroconf), so
``node/peering.py`` runs them in a worker thread, and stopping closes zeroconf's threads. Discovered peers
still arrive through the library's process-global ``peerDiscovery`` handlers.
"""

from __future__ import annotations

from libp2p.abc import INetworkService
from libp2p.discovery.mdns.mdns import MDNSDiscovery


class Discovery:
    """Announce ``addresses`` (multiaddrs without ``/p2p``) on ``port`` and browse for other peers."""

    def __init__(self, network: INetworkService, port: int, addresses: list[str]) -> None:
        # Opens the zeroconf sockets and starts browsing at once (blocking: call from a thread).
        self._mdns = MDNSDiscovery(network, port=port, listen_addrs=list(addresses), host=None)

    def start(self) -> None:
        """Register our service record (blocking)."""
        self._mdns.broadcaster.register()

    def stop(self) -> None:
        """Unregister, stop browsing and close zeroconf with its threads (blocking)."""
        try:
            self._mdns.broadcaster.unregister()
            self._mdns.listener.stop()
        finally:
            self._mdns.zeroconf.close()
