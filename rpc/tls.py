"""The HTTPS settings checked at start, apart from the HTTP server: a node checks them before anything starts, and
imports the server itself (quart, hypercorn: ~0.15 s of CPU) only once its mesh runs (``node/app.py``)."""

from __future__ import annotations

import ssl

from node.errors import ConfigError

__all__ = ["check_tls"]


def check_tls(cert: str | None, key: str | None) -> None:
    """Refuse at start what hypercorn would only refuse later with a traceback: half a pair, or a pair that
    does not load.

    Raises:
        ConfigError: naming the setting.
    """
    if (cert is None) != (key is None):
        raise ConfigError("invalid tls-cert/tls-key: give both (the certificate and its private key) or neither")
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"invalid tls-cert/tls-key: no such file {exc.filename}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"invalid tls-cert/tls-key: cannot load {cert} with {key}: {exc}") from None
