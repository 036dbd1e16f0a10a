"""``node.identity.verify``: what it accepts and refuses, and that an Ed25519 check skips py-libp2p's wrappers."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_pair
from libp2p.peer.id import ID

from node.identity import load_or_create, verify

DATA = b'{"job_id":"a","origin":"b"}'


def test_a_node_signature_verifies_and_nothing_else_does(tmp_path: Path) -> None:
    me, other = load_or_create(tmp_path / "a"), load_or_create(tmp_path / "b")
    signature = me.sign(DATA)
    raw = base64.b64decode(signature)
    assert verify(me.node_id, DATA, signature)
    assert not verify(me.node_id, DATA + b" ", signature)  # other data
    assert not verify(other.node_id, DATA, signature)  # another signer
    assert not verify(me.node_id, DATA, base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode())  # altered
    # crypto_sign_open reads signature and data joined: a signature a byte short is not made whole by the data
    assert not verify(me.node_id, raw[-1:] + DATA, base64.b64encode(raw[:-1]).decode())
    assert not verify(me.node_id, DATA, base64.b64encode(raw[:-1]).decode())  # 63 bytes
    assert not verify(me.node_id, DATA, base64.b64encode(raw + b"\0").decode())  # 65 bytes
    assert not verify(me.node_id, DATA, "not base64!")
    assert not verify(me.node_id, DATA, "")
    assert not verify("not-a-peer-id", DATA, signature)


def test_an_ed25519_check_calls_libsodium_directly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p's and PyNaCl's layers hold the GIL for ~2.5 us a call that catch-up makes 200,000 times."""
    me = load_or_create(tmp_path / "a")

    def wrapper(*_: object) -> bool:
        raise AssertionError("went through Ed25519PublicKey.verify")

    monkeypatch.setattr(Ed25519PublicKey, "verify", wrapper)
    assert verify(me.node_id, DATA, me.sign(DATA))


def test_a_peer_id_of_another_key_type_still_verifies() -> None:
    pair = secp256k1_pair()
    peer = ID.from_pubkey(pair.public_key).to_base58()
    signature = base64.b64encode(pair.private_key.sign(DATA)).decode()
    assert verify(peer, DATA, signature)
    assert not verify(peer, DATA + b" ", signature)
