"""A node's configuration: one frozen dataclass whose fields are the settings of ``cmnode run``.

Each field carries all there is to know about its setting: its type, default, help and check (``Setting``).
Everything else is derived from the field, so adding a setting is one edit here: the flag
(``--name-with-dashes``, made by ``node/cli.py``), the environment variable (``CMNODE_NAME``), the TOML key
(``name`` or ``name-with-dashes``), the help text and the README's table (``settings_table``; a test keeps the
README in sync). ``resolve_config`` merges the sources: flag > environment > TOML file > default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from .duration import Duration, parse_duration
from .errors import ConfigError
from .noderecord import check_node_labels, check_node_memory, check_node_name
from .policy import DEFAULT_MEMORY, DEFAULT_PIDS_LIMIT, check_default_memory, check_host_prefixes, check_image_globs

__all__ = [
    "ENV_PREFIX",
    "Config",
    "Setting",
    "Spec",
    "default_config_path",
    "load_toml",
    "resolve_config",
    "settings",
    "settings_table",
]

ENV_PREFIX = "CMNODE_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
JOB_RETENTION = Duration(7 * 86400)

Check = Callable[[Any], str | None]
"""Why a (well-typed) value is refused, or None when it is fine."""


@dataclass(frozen=True)
class Setting:
    """What a ``Config`` field says about itself beyond its type and default: ``Annotated[int, Setting(...)]``."""

    help: str
    check: Check | None = None
    shown: str | None = None
    """The default as help and README show it, where the value itself would mislead (a path, ``$DOCKER_HOST``)."""


# Checks; each message follows "invalid <setting>: ", so the first one reads "invalid port: 70000 is not ...".


def port_number(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is not a port number (0-65535)"


def between(low: int, high: int) -> Check:
    return lambda value: None if low <= value <= high else f"{value} (must be {low} to {high})"


def above(low: float, unit: str) -> Check:
    return lambda value: None if value > low else f"{value} (must be > {low:g} {unit})"


def at_least(low: float, unit: str) -> Check:
    return lambda value: None if value >= low else f"{value} (must be >= {low:g} {unit})"


def between_seconds(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"{value} (must be {low:g} to {high:g} seconds)"


def one_of(choices: Collection[str], *, fold_case: bool = False) -> Check:
    def check(value: str) -> str | None:
        if (value.lower() if fold_case else value) in choices:
            return None
        return f"{value!r} (one of {', '.join(choices)})"

    return check


def ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None if value == "localhost" else f"{value!r} is not an IP address"
    return None


def peer_multiaddrs(values: tuple[str, ...]) -> str | None:
    for addr in values:
        if not addr.startswith("/") or "/p2p/" not in addr:
            return f"{addr!r} is not a multiaddr ending in /p2p/<peer ID>"
    return None


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cmnode"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of ``cmnode run``; the first five keep the original service's names and defaults."""

    listen_address: Annotated[str, Setting("RPC listen address", check=ip_address)] = "0.0.0.0"
    port: Annotated[int, Setting("RPC port (0 picks a free one)", check=port_number)] = 8080
    queue_size: Annotated[
        int, Setting("Size of the bounded job queue; a full queue refuses Create", check=between(1, 1_000_000))
    ] = 100
    worker_count: Annotated[int, Setting("Number of workers starting containers", check=between(1, 1000))] = 10
    log_level: Annotated[str, Setting("debug, info, warning or error", check=one_of(LOG_LEVELS, fold_case=True))] = (
        "info"
    )
    log_format: Annotated[str, Setting("text (key=value) or json", check=one_of(LOG_FORMATS))] = "text"
    data_dir: Annotated[
        Path,
        Setting("Identity key and the SQLite job store, under $XDG_DATA_HOME if set", shown="~/.local/share/cmnode"),
    ] = field(default_factory=default_data_dir)
    p2p_port: Annotated[int, Setting("libp2p TCP port", check=port_number)] = 4001
    bootstrap: Annotated[
        tuple[str, ...], Setting("Peer multiaddr to dial, /ip4/.../tcp/.../p2p/ID (repeatable)", check=peer_multiaddrs)
    ] = ()
    mdns: Annotated[bool, Setting("Discover peers on the LAN with mDNS")] = True
    swarm_key: Annotated[
        str | None,
        Setting("Private-network key file (cmnode keygen swarm-key); only nodes with the same key connect"),
    ] = None
    trusted_peer: Annotated[
        tuple[str, ...], Setting("Peer ID that may originate jobs and cancels (repeatable; default: every member)")
    ] = ()
    docker_host: Annotated[
        str | None, Setting("Docker daemon URL (unix:///var/run/docker.sock)", shown="$DOCKER_HOST")
    ] = None
    docker_timeout: Annotated[
        float, Setting("Seconds a call to the Docker daemon may take", check=above(0, "seconds"))
    ] = 60.0
    pull_timeout: Annotated[float, Setting("Seconds an image pull may take", check=above(0, "seconds"))] = 300.0
    graceful_timeout: Annotated[
        float, Setting("Seconds in-flight RPC requests get to finish at a stop", check=above(0, "seconds"))
    ] = 3.0
    retention: Annotated[
        float, Setting("Seconds finished containers are kept before removal", check=at_least(0, "seconds"))
    ] = 3600.0
    default_pids_limit: Annotated[
        int, Setting("Pids limit of a job's container (0: none)", check=between(0, 4_194_304))
    ] = DEFAULT_PIDS_LIMIT
    default_memory: Annotated[
        str, Setting("Memory limit of a job's container when its spec sets none (0: none)", check=check_default_memory)
    ] = DEFAULT_MEMORY
    allow_image: Annotated[
        tuple[str, ...],
        Setting("Glob an image reference must match to run here (repeatable; none: any)", check=check_image_globs),
    ] = ()
    allow_host_path: Annotated[
        tuple[str, ...],
        Setting("Host directory under which jobs may mount paths (repeatable; none: no host paths)",
                check=check_host_prefixes),
    ] = ()  # fmt: skip
    peer_job_rate: Annotated[
        float, Setting("Jobs per second one origin may place here after its burst", check=above(0, "jobs/s"))
    ] = 10.0
    peer_job_burst: Annotated[
        int, Setting("Jobs one origin may place here at once before its rate applies", check=between(1, 1_000_000))
    ] = 100
    rpc_token: Annotated[
        str | None, Setting("Require 'Authorization: Bearer TOKEN' on /jrpc, /metrics, every route but /healthz")
    ] = None
    rpc_read_token: Annotated[
        str | None, Setting("A token that may only read: Status, List, Logs, Info, Peers, rpc.discover, /metrics")
    ] = None
    metrics_public: Annotated[bool, Setting("Serve /metrics without a token, for scrapers")] = False
    tls_cert: Annotated[str | None, Setting("PEM certificate (chain): serve HTTPS, with --tls-key")] = None
    tls_key: Annotated[str | None, Setting("PEM private key of --tls-cert")] = None
    max_body: Annotated[int, Setting("Largest JSON-RPC request body, in bytes", check=at_least(1024, "bytes"))] = (
        1024 * 1024
    )
    heartbeat: Annotated[
        float, Setting("Seconds between this node's records on the mesh when they change; unchanged ones go out "
                       "every max(60, this) s x N/10 (every this x N/10 while a node older than 0.2.0 is up)",
                       check=between_seconds(0.05, 3600.0))
    ] = 2.0  # fmt: skip
    node_name: Annotated[
        str | None, Setting("This node's name in listings and commands", check=check_node_name, shown="the hostname")
    ] = None
    node_label: Annotated[
        tuple[str, ...], Setting("KEY=VALUE label placement selects on (repeatable)", check=check_node_labels)
    ] = ()
    node_cpus: Annotated[
        float, Setting("CPUs this node offers (0: what the Docker engine reports)", check=at_least(0, "CPUs"))
    ] = 0.0
    node_memory: Annotated[
        str, Setting("Memory this node offers, a size such as '8g' (empty: what the Docker engine reports)",
                     check=check_node_memory)
    ] = ""  # fmt: skip
    reschedule_after: Annotated[
        float, Setting("Seconds a node holding replicas may be down before they are placed elsewhere",
                       check=at_least(0, "seconds"))
    ] = 10.0  # fmt: skip
    job_retention: Annotated[
        Duration, Setting("How long finished jobs are kept, e.g. 7d, 12h, 30m, 2s (0: all are kept); then purged on "
                          "every node, leaving a tombstone for max(4x this, 30d)", shown="7d")
    ] = JOB_RETENTION  # fmt: skip

    def __post_init__(self) -> None:
        for spec in settings(type(self)).values():
            spec.check_value(getattr(self, spec.name))

    @property
    def db_path(self) -> Path:
        return self.data_dir / "cmnode.db"


@dataclass(frozen=True)
class Spec:
    """One setting as the sources see it: its names there, how a raw value becomes a checked one, how it shows."""

    name: str
    type: Any
    default: Any
    setting: Setting

    @property
    def label(self) -> str:
        """The name in messages and TOML: ``queue-size``."""
        return self.name.replace("_", "-")

    @property
    def flag(self) -> str:
        return "--" + self.label

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def shown_default(self) -> str:
        """The default as help shows it; empty when there is none to show."""
        if self.setting.shown is not None:
            return self.setting.shown
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if self.default is None or self.default == ():
            return ""
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def parse(self, value: Any) -> Any:
        """``value`` (a flag's, a variable's text, a TOML value) as this setting's type, checked.

        Raises:
            ConfigError: ``invalid value ... for <setting>`` or ``invalid <setting>: <why>``.
        """
        try:
            parsed = _PARSERS[self.type](value)
        except (TypeError, ValueError):
            raise ConfigError(f"invalid value {value!r} for {self.label}") from None
        self.check_value(parsed)
        return parsed

    def check_value(self, value: Any) -> None:
        why = self.setting.check(value) if self.setting.check is not None else None
        if why is not None:
            raise ConfigError(f"invalid {self.label}: {why}")


def settings(schema: type[Config] = Config) -> dict[str, Spec]:
    """The settings of ``schema`` (``Config`` or a subclass) by field name, in field order.

    Raises:
        TypeError: a field without its ``Setting``, or of a type no source can give.
    """
    if schema not in _SETTINGS:
        _SETTINGS[schema] = _read_settings(schema)
    return _SETTINGS[schema]


_SETTINGS: dict[type[Config], dict[str, Spec]] = {}


def _read_settings(schema: type[Config]) -> dict[str, Spec]:
    hints = typing.get_type_hints(schema, include_extras=True)
    out: dict[str, Spec] = {}
    for f in fields(schema):
        hint = hints[f.name]
        meta = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Setting)]
        if not meta:
            raise TypeError(f"{schema.__name__}.{f.name} is not Annotated with a Setting")
        kind = typing.get_args(hint)[0]
        if kind not in _PARSERS:
            raise TypeError(f"{schema.__name__}.{f.name}: no parser for {kind!r}")
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        out[f.name] = Spec(f.name, kind, default, meta[0])
    return out


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _strings(value: Any) -> tuple[str, ...]:
    """A list, or one string of comma- or space-separated items (as an environment variable holds them)."""
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


_PARSERS: dict[Any, Callable[[Any], Any]] = {
    int: _int,
    float: _float,
    bool: _bool,
    str: _str,
    str | None: _str,  # None means "not set": no source can give it
    tuple[str, ...]: _strings,
    Path: lambda value: Path(str(value)).expanduser(),
    Duration: parse_duration,
}
"""How a raw value becomes each type a setting may have; a setting of another type is refused at import."""


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cmnode" / "config.toml"


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


def resolve_config(
    flags: Mapping[str, Any], config_file: Path | None, environ: Mapping[str, str], *, schema: type[Config] = Config
) -> Config:
    """Merge the sources with precedence flag > environment > file > default; a flag of None is unset.

    Each setting is checked on its own as it is read (no setting's validity depends on another's), so an
    error names both the setting and where it came from: ``--port``, ``CMNODE_PORT`` or the file's path.
    An empty environment variable counts as unset, as compose files and shells often leave them. The file is
    ``config_file``, else ``$CMNODE_CONFIG``, else ``default_config_path`` if it exists.

    Raises:
        ConfigError: naming the setting that is unknown or invalid, and its source.
    """
    specs = settings(schema)
    values: dict[str, Any] = {}

    def take(key: str, value: Any, source: str) -> None:
        spec = specs.get(key.replace("-", "_"))
        if spec is None:
            raise ConfigError(f"{source}: unknown setting {key!r}")
        try:
            values[spec.name] = spec.parse(value)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    path = config_file or (Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None)
    explicit = path is not None
    path = path or default_config_path(environ)
    if explicit or path.exists():
        for key, value in load_toml(path).items():
            take(key, value, str(path))
    for spec in specs.values():
        if raw := environ.get(spec.env):
            take(spec.name, raw, spec.env)
    for key, value in flags.items():
        if value is not None:
            take(key, value, "--" + key.replace("_", "-"))
    return schema(**values)


def settings_table(schema: type[Config] = Config) -> str:
    """The README's table of ``cmnode run``'s settings, in Markdown (each is also ``CMNODE_<NAME>`` and a TOML key)."""
    rows = ["| flag | default | |", "|---|---|---|"]
    for spec in settings(schema).values():
        flag = f"{spec.flag}/--no-{spec.label}" if spec.type is bool else spec.flag
        shown = spec.shown_default
        default = shown if spec.type is bool or not shown else f"`{shown}`"
        rows.append(f"| `{flag}` | {default} | {spec.setting.help} |")
    return "\n".join(rows) + "\n"
