"""What every signed record shares: the bytes it signs, its JSON form, who signs it, and signing.

Six records travel between nodes, each signed by one node: a job (by its ``origin``), an execution (by its
``node_id``), a cancel, a drain order and an allocation (each ``by`` the node that wrote it) and a node record (by
the node it describes). Each names only its signed fields (``signed_fields``) and the field that holds its signer
(``SIGNER``); the rest is written here once, so every record signs the same kind of bytes (``canonical_json``)
and a peer running another version computes them alike (``tests/node/test_signed_golden.py`` pins them).

Verifying is the wire's job (``node/wire.py``, through ``node/identity.verify``): this module and the records
stay free of libp2p, which the model's users (the client CLI) do not load.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, ClassVar, Self

if TYPE_CHECKING:
    from .identity import Identity

__all__ = ["Signed", "canonical_json"]


def canonical_json(value: Any) -> bytes:
    """One byte string per value (sorted keys, no spaces), so signatures verify on every node."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signed:
    """A mixin for a frozen dataclass with a ``signature`` field, signed by the node its ``SIGNER`` field names."""

    SIGNER: ClassVar[str]
    """The name of the field that holds the node ID whose key signs the record."""
    signature: str
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    """Set by ``@dataclass`` on each record; declared so that ``dataclasses.replace`` takes a ``Self``."""

    def signed_fields(self) -> dict[str, Any]:
        """The fields the signature covers, as JSON values (everything but the signature)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """The record from its JSON form, checked against its schema (its signature is the wire's to check).

        Raises:
            ValidationError: any malformed field.
        """
        raise NotImplementedError

    @property
    def signer(self) -> str:
        """The node whose key must have made ``signature``."""
        node_id: str = getattr(self, self.SIGNER)
        return node_id

    def canonical_bytes(self) -> bytes:
        """What the signature is made over."""
        return canonical_json(self.signed_fields())

    def to_json(self) -> dict[str, Any]:
        """The signed fields with the signature: what the wire, catch-up and the store carry."""
        return {**self.signed_fields(), "signature": self.signature}

    def signed_by(self, identity: Identity) -> Self:
        """This record with ``identity``'s signature over its canonical bytes; a node signs only a record that
        names it as the signer (peers would refuse any other)."""
        assert self.signer == identity.node_id, f"{identity.node_id} may not sign a record {self.signer} must sign"
        signature = identity.sign(self.canonical_bytes())
        return dataclasses.replace(self, signature=signature)
