"""Who may do what in the mesh: the one place that says which peers may originate jobs and cancels, and how
this node signs what it says about itself (executions, cancels).

Membership is the swarm key's business (``--swarm-key``, ``node/swarmkey.py``): only a node holding the same
key can connect at all, so every connected peer is a member. Without a key every host that reaches the p2p port
is a member, and the node warns at start. Among members:

* a job runs only if its origin may originate jobs: every member by default, only this node and the
  ``--trusted-peer`` IDs when any are given. A job from another origin is dropped and counted (``untrusted``):
  it is not stored, so it takes no room and never runs here;
* a cancel is obeyed only if signed by the job's origin or by a peer that may originate jobs (counted as
  ``unauthorized`` otherwise);
* an execution is accepted only if signed by the node it describes (checked in ``node/wire.py``, for gossip
  and catch-up alike).

``--trusted-peer`` narrows who may act, not who may read: every member receives every job's spec (``env``
included) through gossip, and is answered on ``/cmnode/sync/1`` and ``/cmnode/logs/1``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from libp2p.peer.id import ID

from .errors import ConfigError
from .identity import Identity
from .model import Cancel, Execution

__all__ = ["Refused", "Trust", "sign_cancel", "sign_execution"]

log = logging.getLogger("cmnode.p2p")

MAX_WARNED = 1000


class Refused(Exception):
    """A well-formed message that this node's trust rule refuses; ``reason`` is the drop counter's label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trust:
    """The rule. ``trusted`` empty: every member may originate jobs and cancels."""

    node_id: str
    trusted: frozenset[str] = frozenset()

    @classmethod
    def of(cls, node_id: str, trusted: Iterable[str] = ()) -> Trust:
        """Raises ConfigError when a trusted peer is not a peer ID."""
        peers = frozenset(trusted)
        for peer in peers:
            try:
                ID.from_base58(peer)
            except Exception:
                raise ConfigError(f"invalid trusted-peer: {peer!r} is not a peer ID") from None
        return cls(node_id=node_id, trusted=peers)

    def may_originate(self, peer: str) -> bool:
        return peer == self.node_id or not self.trusted or peer in self.trusted

    def may_cancel(self, cancel: Cancel, origin: str) -> bool:
        """``cancel`` (its signature already verified) may stop a job that ``origin`` accepted."""
        return cancel.job_id != "" and (cancel.by == origin or self.may_originate(cancel.by))


class RefusalLog:
    """One warning per peer refused (then debug), so an untrusted peer cannot flood the log."""

    def __init__(self) -> None:
        self._warned: OrderedDict[str, None] = OrderedDict()

    def refused(self, peer: str, refusal: Refused) -> Refused:
        if peer in self._warned:
            log.debug("%s", refusal)
        else:
            self._warned[peer] = None
            while len(self._warned) > MAX_WARNED:
                self._warned.popitem(last=False)
            log.warning("%s (later ones from this peer are logged at debug)", refusal)
        return refusal


def sign_execution(identity: Identity, execution: Execution) -> Execution:
    """This node's execution, signed; only this node's own executions may be signed here."""
    return execution.signed_by(identity)


def sign_cancel(identity: Identity, job_id: str) -> Cancel:
    return Cancel(job_id=job_id, by=identity.node_id, at=time.time()).signed_by(identity)
