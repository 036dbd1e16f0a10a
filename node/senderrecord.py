"""The signed peer record py-libp2p 0.8.1 attaches to every pubsub RPC: made once, and checked once per peer.

The library makes the record (``env_to_send_in_RPC``: the host's addresses, read and parsed again) for every RPC
it sends, and verifies the one it receives (``maybe_consume_signed_record``: decode, check the signature, store
it in the peerstore) on every RPC, twice for one carrying control messages, duplicates included. On a mesh of 30
that was most of an idle node's pubsub time (docs/py-libp2p.md, "Every pubsub RPC carries a signed peer record").
``install`` replaces both, in the library's pubsub modules, by versions that remember: our record is remade at
most every ``REMAKE_EVERY`` seconds; a peer's record is checked again only when its bytes change, or after
``RECHECK_EVERY`` (so the peerstore's 2 h lease on it is renewed). The same bytes from the same peer verify the
same way, so nothing is accepted that the library would refuse.

Since every RPC a peer sends passes through ``consume``, it also notes when each peer was last heard from
(``quiet_for``): a peer that sent something within the liveness interval is alive without a ping
(``node/liveness.py``).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import libp2p.pubsub.gossipsub as _gossipsub
import libp2p.pubsub.pubsub as _pubsub
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.utils import maybe_consume_signed_record

__all__ = ["RECHECK_EVERY", "REMAKE_EVERY", "install", "quiet_for"]

REMAKE_EVERY = 5.0
"""Seconds our record is reused before the library makes it again (it does so itself if our addresses change)."""
RECHECK_EVERY = 600.0
"""Seconds a peer's record, unchanged, is taken as checked before it is verified (and stored) again."""
MAX_CHECKED = 10_000
"""Peers remembered per host; beyond, the memory is cleared (and records verified again as they come)."""

_make = env_to_send_in_RPC
_consume = maybe_consume_signed_record
_made: weakref.WeakKeyDictionary[Any, tuple[float, bytes]] = weakref.WeakKeyDictionary()
_checked: weakref.WeakKeyDictionary[Any, dict[ID, tuple[bytes, float]]] = weakref.WeakKeyDictionary()
_heard: weakref.WeakKeyDictionary[Any, dict[ID, float]] = weakref.WeakKeyDictionary()


def envelope(host: Any) -> tuple[bytes, bool]:
    """``env_to_send_in_RPC``, remembered for REMAKE_EVERY seconds per host."""
    now = time.monotonic()
    made = _made.get(host)
    if made is not None and now - made[0] < REMAKE_EVERY:
        return made[1], False
    data, fresh = _make(host)
    _made[host] = (now, data)
    return data, fresh


def consume(msg: Any, host: Any, peer_id: ID) -> bool:
    """``maybe_consume_signed_record``, skipped for the bytes this peer's last accepted record had."""
    now = time.monotonic()
    heard = _heard.setdefault(host, {})
    if len(heard) >= MAX_CHECKED and peer_id not in heard:
        heard.clear()
    heard[peer_id] = now
    if not msg.HasField("senderRecord"):
        return True
    record: bytes = msg.senderRecord
    seen = _checked.setdefault(host, {})
    hit = seen.get(peer_id)
    if hit is not None and hit[0] == record and now - hit[1] < RECHECK_EVERY:
        return True
    if not _consume(msg, host, peer_id):
        return False
    if len(seen) >= MAX_CHECKED:
        seen.clear()
    seen[peer_id] = (record, now)
    return True


def quiet_for(host: Any, peer_id: ID) -> float:
    """Seconds since ``peer_id`` last sent ``host`` a pubsub RPC (infinity if never, or forgotten)."""
    heard = _heard.get(host, {}).get(peer_id)
    return float("inf") if heard is None else time.monotonic() - heard


def install() -> None:
    """Use ``envelope`` and ``consume`` in the library's pubsub and gossipsub modules (idempotent)."""
    for module in (_pubsub, _gossipsub):
        module.env_to_send_in_RPC = envelope  # type: ignore[attr-defined]
        module.maybe_consume_signed_record = consume  # type: ignore[attr-defined]
