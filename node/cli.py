"""The ``cmnode`` command: ``cmnode run`` starts a node; the other commands are clients of a node's RPC.

This module imports nothing heavy at the top (no libp2p, no Docker SDK), so that client commands
start fast; ``run`` imports the node only when it runs. Settings come from flags, then ``CMNODE_*``
environment variables, then a TOML file, then the defaults, in that order of precedence.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import cyclopts
from cyclopts import Parameter

from .config import Config, default_data_dir, load_toml
from .errors import ConfigError

app = cyclopts.App(
    name="cmnode",
    help="cmnode: a peer-to-peer container manager. Run a node, or talk to one.",
    version_flags=["--version"],
)

ENV_PREFIX = "CMNODE_"
EXIT_CONFIG = 2


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cmnode" / "config.toml"


def resolve_config(flags: dict[str, Any], config_file: Path | None, environ: dict[str, str]) -> Config:
    """Merge the sources with precedence flag > environment > file > default.

    Raises:
        ConfigError: naming the setting that is unknown or invalid, and its source.
    """
    path = config_file or (Path(environ[ENV_PREFIX + "CONFIG"]) if environ.get(ENV_PREFIX + "CONFIG") else None)
    explicit = path is not None
    path = path or default_config_path()
    values: dict[str, Any] = {}
    if explicit or path.exists():
        file_values = load_toml(path)
        Config.from_mapping(file_values, source=str(path))  # an error here names the file
        values.update(file_values)
    env_values = {}
    for name in Config.__dataclass_fields__:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            env_values[name] = raw
    Config.from_mapping(env_values, source="environment")  # name the env var's source on error
    values.update(env_values)
    values.update({k: v for k, v in flags.items() if v is not None})
    return Config.from_mapping(values, source="flags")


@app.command
def run(
    *,
    listen_address: Annotated[
        str | None, Parameter(help="Address the RPC server listens on. [default: 0.0.0.0]")
    ] = None,
    port: Annotated[int | None, Parameter(help="RPC port. [default: 8080]")] = None,
    queue_size: Annotated[int | None, Parameter(help="Size of the job queue. [default: 100]")] = None,
    worker_count: Annotated[int | None, Parameter(help="Number of workers. [default: 10]")] = None,
    log_level: Annotated[str | None, Parameter(help="debug, info, warning or error. [default: info]")] = None,
    log_format: Annotated[str | None, Parameter(help="text (key=value) or json. [default: text]")] = None,
    data_dir: Annotated[Path | None, Parameter(help=f"Identity and job store. [default: {default_data_dir()}]")] = None,
    p2p_port: Annotated[int | None, Parameter(help="libp2p TCP port. [default: 4001]")] = None,
    bootstrap: Annotated[
        list[str] | None, Parameter(help="Peer multiaddr to dial, /ip4/.../tcp/.../p2p/ID (repeatable).", negative=())
    ] = None,
    mdns: Annotated[bool | None, Parameter(help="Discover peers on the LAN with mDNS. [default: on]")] = None,
    docker_host: Annotated[
        str | None, Parameter(help="Docker daemon URL, e.g. unix:///var/run/docker.sock. [default: $DOCKER_HOST]")
    ] = None,
    pull_timeout: Annotated[float | None, Parameter(help="Seconds an image pull may take. [default: 300]")] = None,
    retention: Annotated[
        float | None, Parameter(help="Seconds finished containers are kept before removal. [default: 3600]")
    ] = None,
    rpc_token: Annotated[str | None, Parameter(help="Require 'Authorization: Bearer TOKEN' on /jrpc.")] = None,
    config: Annotated[Path | None, Parameter(help=f"TOML config file. [default: {default_config_path()}]")] = None,
) -> int:
    """Start a node.

    Every flag can also be set in the environment as CMNODE_ plus its name (e.g. CMNODE_PORT=8081,
    CMNODE_QUEUE_SIZE=500) or in the config file; flags win over the environment, which wins over the file.
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


def main() -> None:
    try:
        result = app(sys.argv[1:], exit_on_error=True)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
