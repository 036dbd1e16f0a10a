"""The node's identity: an Ed25519 libp2p key kept in ``--data-dir``. Its peer ID is the node ID, and
it signs the jobs this node accepts so that any peer can verify them, whoever relays them."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, PublicKey
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID

from .errors import ConfigError

KEY_FILE = "identity.key"


@dataclass(frozen=True)
class Identity:
    key_pair: KeyPair
    peer_id: ID

    @property
    def node_id(self) -> str:
        return self.peer_id.to_base58()

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key_pair.private_key.sign(data)).decode()


def load_or_create(data_dir: Path) -> Identity:
    """The identity stored in ``data_dir``, created (mode 0600) on first start."""
    path = data_dir / KEY_FILE
    try:
        if path.exists():
            key_pair = load_identity(path)
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            key_pair = create_new_key_pair()
            save_identity(key_pair, path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"invalid data-dir: cannot load or create {path}: {exc}") from exc
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


def verify(origin: str, data: bytes, signature: str) -> bool:
    """Whether ``signature`` over ``data`` was made by the key behind peer ID ``origin``."""
    try:
        public_key = _public_key(origin)
        if public_key is None:
            return False
        return bool(public_key.verify(data, base64.b64decode(signature, validate=True)))
    except Exception:  # malformed IDs and signatures from the wire all mean "not verified"
        return False


@functools.lru_cache(maxsize=4096)
def _public_key(origin: str) -> PublicKey | None:
    """The key inside a peer ID, decoded once per ID (a third of a verification's cost, and catch-up verifies
    thousands of entries by the same few nodes). Raises on a malformed ID, which is not cached."""
    return ID.from_base58(origin).extract_public_key()
