"""The ``cmnode`` command: ``cmnode run`` starts a node; the other commands are clients of a node's RPC.

This module imports nothing heavy at the top (no libp2p, no Docker SDK), so that client commands
start fast; ``run`` imports the node only when it runs. Settings come from flags, then ``CMNODE_*``
environment variables, then a TOML file, then the defaults, in that order of precedence.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import cyclopts
from cyclopts import Parameter

from . import client_cli
from .config import Config, default_data_dir, load_toml
from .errors import ConfigError

app = cyclopts.App(
    name="cmnode",
    help="cmnode: a peer-to-peer container manager. Run a node, or talk to one.",
    version_flags=["--version"],
)

ENV_PREFIX = "CMNODE_"
EXIT_USAGE = 2
EXIT_CONFIG = 2


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cmnode" / "config.toml"


def resolve_config(flags: dict[str, Any], config_file: Path | None, environ: Mapping[str, str]) -> Config:
    """Merge the sources with precedence flag > environment > file > default.

    Each setting is checked on its own as it is read (no setting's validity depends on another's), so an
    error names both the setting and where it came from: ``--port``, ``CMNODE_PORT`` or the file's path.
    An empty environment variable counts as unset, as compose files and shells often leave them.

    Raises:
        ConfigError: naming the setting that is unknown or invalid, and its source.
    """
    path = config_file or (Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None)
    explicit = path is not None
    path = path or default_config_path(environ)
    values: dict[str, Any] = {}
    if explicit or path.exists():
        for key, value in load_toml(path).items():
            values.update(_checked(key, value, str(path)))
    for name in Config.__dataclass_fields__:
        variable = ENV_PREFIX + name.upper()
        raw = environ.get(variable)
        if raw:
            values.update(_checked(name, raw, variable))
    for name, value in flags.items():
        if value is not None:
            values.update(_checked(name, value, "--" + name.replace("_", "-")))
    return Config(**values)


def _checked(key: str, value: Any, source: str) -> dict[str, Any]:
    """One setting, coerced and validated alone; the error message starts with ``source``."""
    name = key.replace("-", "_")
    if name not in Config.__dataclass_fields__:
        raise ConfigError(f"{source}: unknown setting {key!r}")
    try:
        one = Config.from_mapping({name: value}, source=source)
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith(source) else f"{source}: {message}") from None
    return {name: getattr(one, name)}


@app.command
def run(
    *,
    listen_address: Annotated[
        str | None, Parameter(help="RPC listen address. [env: CMNODE_LISTEN_ADDRESS] [default: 0.0.0.0]")
    ] = None,
    port: Annotated[int | None, Parameter(help="RPC port. [env: CMNODE_PORT] [default: 8080]")] = None,
    queue_size: Annotated[
        int | None, Parameter(help="Size of the job queue. [env: CMNODE_QUEUE_SIZE] [default: 100]")
    ] = None,
    worker_count: Annotated[
        int | None, Parameter(help="Number of workers. [env: CMNODE_WORKER_COUNT] [default: 10]")
    ] = None,
    log_level: Annotated[
        str | None, Parameter(help="debug, info, warning or error. [env: CMNODE_LOG_LEVEL] [default: info]")
    ] = None,
    log_format: Annotated[
        str | None, Parameter(help="text (key=value) or json. [env: CMNODE_LOG_FORMAT] [default: text]")
    ] = None,
    data_dir: Annotated[
        Path | None, Parameter(help=f"Identity and job store. [env: CMNODE_DATA_DIR] [default: {default_data_dir()}]")
    ] = None,
    p2p_port: Annotated[int | None, Parameter(help="libp2p TCP port. [env: CMNODE_P2P_PORT] [default: 4001]")] = None,
    bootstrap: Annotated[
        list[str] | None,
        Parameter(
            help="Peer multiaddr to dial, /ip4/.../tcp/.../p2p/ID (repeatable). [env: CMNODE_BOOTSTRAP]", negative=()
        ),
    ] = None,
    mdns: Annotated[
        bool | None, Parameter(help="Discover peers on the LAN with mDNS. [env: CMNODE_MDNS] [default: on]")
    ] = None,
    docker_host: Annotated[
        str | None,
        Parameter(
            help="Docker daemon URL (unix:///var/run/docker.sock). [env: CMNODE_DOCKER_HOST] [default: $DOCKER_HOST]"
        ),
    ] = None,
    pull_timeout: Annotated[
        float | None, Parameter(help="Seconds an image pull may take. [env: CMNODE_PULL_TIMEOUT] [default: 300]")
    ] = None,
    retention: Annotated[
        float | None,
        Parameter(help="Seconds finished containers are kept before removal. [env: CMNODE_RETENTION] [default: 3600]"),
    ] = None,
    rpc_token: Annotated[
        str | None, Parameter(help="Require 'Authorization: Bearer TOKEN' on /jrpc. [env: CMNODE_RPC_TOKEN]")
    ] = None,
    config: Annotated[
        Path | None, Parameter(help=f"TOML config file. [env: CMNODE_CONFIG] [default: {default_config_path()}]")
    ] = None,
) -> int:
    """Start a node.

    Every flag can also be set in the environment as CMNODE_ plus its name (e.g. CMNODE_PORT=8081,
    CMNODE_QUEUE_SIZE=500) or in the config file; flags win over the environment, which wins over the file.
    The file holds the same names as top-level keys or under a [cmnode] table (queue_size = 500, or
    queue-size = 500). CMNODE_BOOTSTRAP takes a comma- or space-separated list; an empty variable is unset.
    An invalid setting is refused with a message naming it and its source, and exit code 2.
    """
    flags = {
        "listen_address": listen_address, "port": port, "queue_size": queue_size, "worker_count": worker_count,
        "log_level": log_level, "log_format": log_format, "data_dir": data_dir, "p2p_port": p2p_port,
        "bootstrap": bootstrap, "mdns": mdns, "docker_host": docker_host,
        "pull_timeout": pull_timeout, "retention": retention, "rpc_token": rpc_token,
    }  # fmt: skip
    try:
        cfg = resolve_config(flags, config, dict(os.environ))
    except ConfigError as exc:
        print(f"cmnode: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from .runner import main as run_main  # heavy imports only when a node really starts

    return run_main(cfg)


client_cli.register(app)


def main() -> None:
    """The ``cmnode`` entry point: a bad flag or argument is one line on stderr and exit code 2."""
    try:
        result = app(sys.argv[1:], exit_on_error=False, print_error=False, result_action="return_value")
    except cyclopts.CycloptsError as exc:
        print(f"cmnode: {' '.join(str(exc).split())} (see cmnode --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
