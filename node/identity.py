"""The node's identity: an Ed25519 libp2p key kept in ``--data-dir``. Its peer ID is the node ID, and
it signs the jobs this node accepts so that any peer can verify them, whoever relays them."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path

from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair, PublicKey
from libp2p.identity_utils import load_identity, save_identity
from libp2p.peer.id import ID
from nacl.bindings import crypto_sign_BYTES, crypto_sign_open

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
    """Whether ``signature`` over ``data`` was made by the key behind peer ID ``origin``.

    Catch-up calls this twice per job it takes (the job and its execution), 200,000 times for a join to 100,000
    jobs, so an Ed25519 key (every node's) goes straight to libsodium's ``crypto_sign_open`` with its raw bytes,
    decoded once per ID: py-libp2p's ``Ed25519PublicKey.verify`` wraps PyNaCl's ``VerifyKey.verify``, which
    checks its arguments and then makes the same call; the ~2.5 us those layers cost per call (of ~44) hold the
    GIL, which the rest of catch-up is short of, where libsodium itself runs without it. Other key types
    (a peer ID may carry any libp2p key) go through py-libp2p."""
    try:
        key = _public_key(origin)
        if key is None:
            return False
        raw = base64.b64decode(signature, validate=True)
        if isinstance(key, bytes):
            if len(raw) != crypto_sign_BYTES:  # joined with ``data``, a short one would take its end from it
                return False
            crypto_sign_open(raw + data, key)
            return True
        return bool(key.verify(data, raw))
    except Exception:  # a bad signature (nacl's BadSignatureError), malformed IDs and signatures: "not verified"
        return False


@functools.lru_cache(maxsize=4096)
def _public_key(origin: str) -> bytes | PublicKey | None:
    """The key inside a peer ID, decoded once per ID (a third of a verification's cost, and catch-up verifies
    thousands of entries by the same few nodes): an Ed25519 key as its 32 raw bytes (``verify`` says why),
    another as py-libp2p's key. Raises on a malformed ID, which is not cached."""
    key = ID.from_base58(origin).extract_public_key()
    if isinstance(key, Ed25519PublicKey):
        return key.to_bytes()
    return key
