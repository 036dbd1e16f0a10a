"""The private-network key (``--swarm-key``): the go-libp2p ``swarm.key`` file format, read and written.

    /key/swarm/psk/1.0.0/
    /base16/
    <64 hex digits: 32 random bytes>

No libp2p import here, so ``cmnode keygen swarm-key`` starts fast. py-libp2p applies the key as ``new_host(psk=HEX)``
(``security/pnet``): every connection is encrypted with it before anything else is said, so a peer with another
key, or none, cannot even negotiate. (py-libp2p uses Salsa20 with an 8-byte nonce where go-libp2p uses XSalsa20:
the file is the same, but a cmnode node will not join a go-libp2p private network.)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import ConfigError

__all__ = ["HEADER", "load_swarm_key", "new_swarm_key", "parse_swarm_key", "write_swarm_key"]

HEADER = "/key/swarm/psk/1.0.0/"
ENCODING = "/base16/"


def new_swarm_key() -> str:
    """The text of a fresh key file."""
    return f"{HEADER}\n{ENCODING}\n{secrets.token_hex(32)}\n"


def parse_swarm_key(text: str) -> str:
    """The key's 64 hex digits (lowercase) from a key file's text.

    Raises:
        ValueError: not a ``/key/swarm/psk/1.0.0/`` file with a ``/base16/`` 32-byte key.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) != 3 or lines[0] != HEADER:
        raise ValueError(f"not a swarm key file (expected 3 lines starting with {HEADER})")
    if lines[1] != ENCODING:
        raise ValueError(f"unsupported encoding {lines[1]!r} (only {ENCODING})")
    key = lines[2].lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError("the key must be 64 hex digits (32 bytes)")
    return key


def load_swarm_key(path: str | Path) -> str:
    """The hex key from the file at ``path``.

    Raises:
        ConfigError: unreadable or malformed (the node does not start).
    """
    try:
        return parse_swarm_key(Path(path).expanduser().read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"invalid swarm-key: {path}: {exc}") from None


def write_swarm_key(path: str | Path) -> None:
    """Write a fresh key to ``path``, readable by its owner only (0600); an existing file is not replaced.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: it cannot be written.
    """
    fd = os.open(Path(path).expanduser(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(new_swarm_key())
