"""A node's configuration: one frozen value built once (by ``node/cli.py``) and passed down."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError

SECONDS = 1.0
MIB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cmnode"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of ``cmnode run``; the first five keep the original service's names and defaults."""

    listen_address: str = "0.0.0.0"
    port: int = 8080
    queue_size: int = 100
    worker_count: int = 10
    log_level: str = "info"
    log_format: str = "text"
    data_dir: Path = field(default_factory=default_data_dir)
    p2p_port: int = 4001
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    docker_host: str | None = None
    docker_timeout: float = 60 * SECONDS
    pull_timeout: float = 300 * SECONDS
    graceful_timeout: float = 3 * SECONDS
    retention: float = 3600 * SECONDS
    rpc_token: str | None = None
    max_body: int = 1 * MIB

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], *, source: str = "configuration") -> Config:
        """Build from a mapping of setting names (dashes or underscores) to values, coercing strings.

        Raises:
            ConfigError: naming the unknown or invalid setting and where it came from.
        """
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"{source}: unknown setting {raw_key!r}")
            kwargs[key] = _coerce(key, value, source)
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: Path) -> Config:
        return cls.from_mapping(load_toml(path), source=str(path))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cmnode.db"


def load_toml(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: top-level keys, or the ``[cmnode]`` table if present."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    table = data.get("cmnode", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [cmnode] must be a table")
    return table


_INT = {"port", "queue_size", "worker_count", "p2p_port", "max_body"}
_FLOAT = {"docker_timeout", "pull_timeout", "graceful_timeout", "retention"}


def _coerce(key: str, value: Any, source: str) -> Any:
    name = key.replace("_", "-")
    try:
        if key in _INT:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if key in _FLOAT:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if key == "mdns":
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if key == "bootstrap":
            if isinstance(value, str):
                return tuple(v for v in value.replace(",", " ").split() if v)
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError
        if key == "data_dir":
            return Path(str(value)).expanduser()
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: invalid value {value!r} for {name}") from None


def _check(c: Config) -> None:
    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"invalid {name}: {why}")

    try:
        ipaddress.ip_address(c.listen_address)
    except ValueError:
        if c.listen_address != "localhost":
            raise bad("listen-address", f"{c.listen_address!r} is not an IP address") from None
    for name, port in (("port", c.port), ("p2p-port", c.p2p_port)):
        if not 0 <= port <= 65535:
            raise bad(name, f"{port} is not a port number (0-65535)")
    if not 1 <= c.queue_size <= 1_000_000:
        raise bad("queue-size", f"{c.queue_size} (must be 1 to 1000000)")
    if not 1 <= c.worker_count <= 1000:
        raise bad("worker-count", f"{c.worker_count} (must be 1 to 1000)")
    if c.log_level.lower() not in LOG_LEVELS:
        raise bad("log-level", f"{c.log_level!r} (one of {', '.join(LOG_LEVELS)})")
    if c.log_format not in LOG_FORMATS:
        raise bad("log-format", f"{c.log_format!r} (one of {', '.join(LOG_FORMATS)})")
    for name, value in (
        ("docker-timeout", c.docker_timeout),
        ("pull-timeout", c.pull_timeout),
        ("graceful-timeout", c.graceful_timeout),
    ):
        if not value > 0:
            raise bad(name, f"{value} (must be > 0 seconds)")
    if c.retention < 0:
        raise bad("retention", f"{c.retention} (must be >= 0 seconds)")
    if c.max_body < 1024:
        raise bad("max-body", f"{c.max_body} (must be >= 1024 bytes)")
    for addr in c.bootstrap:
        if not addr.startswith("/") or "/p2p/" not in addr:
            raise bad("bootstrap", f"{addr!r} is not a multiaddr ending in /p2p/<peer ID>")
