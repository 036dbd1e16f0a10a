"""The ``cmnode`` command: ``cmnode run`` starts a node; the other commands are clients of a node's RPC.

This module imports nothing heavy at the top (no libp2p, no Docker SDK), so that client commands
start fast; ``run`` imports the node only when it runs. The flags of ``run`` are made from ``Config``'s fields
(``node/config.py``), which also says how flags, ``CMNODE_*`` variables and the TOML file are merged.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import cyclopts
from cyclopts import Parameter

from . import client_cli
from .config import ENV_PREFIX, Config, Spec, default_config_path, resolve_config, settings
from .duration import Duration
from .errors import ConfigError

__all__ = ["app", "main", "run_command", "run_flags"]

app = cyclopts.App(
    name="cmnode",
    help="cmnode: a peer-to-peer container manager. Run a node, or talk to one.",
    version_flags=["--version"],
)

_FLAG_TYPES: dict[Any, Any] = {tuple[str, ...]: list[str], str | None: str, Duration: str}
"""A setting's type as a flag, where it differs (a repeatable flag collects a list); None means "not given"."""


def _flag(spec: Spec) -> Any:
    shown = f" [default: {spec.shown_default}]" if spec.shown_default else ""
    parameter = Parameter(help=f"{spec.setting.help}. [env: {spec.env}]{shown}",
                          negative=None if spec.type is bool else ())  # fmt: skip
    return Annotated[_FLAG_TYPES.get(spec.type, spec.type) | None, parameter]


def run_flags(schema: type[Config] = Config) -> type:
    """A dataclass of one flag per setting of ``schema``, each None unless given, so that the flags can lose to
    nothing but themselves: ``resolve_config`` lets a given flag win over the environment and the file."""
    flags = dataclasses.make_dataclass(
        "RunFlags", [(spec.name, _flag(spec), None) for spec in settings(schema).values()], frozen=True, kw_only=True
    )
    flags.__module__ = __name__  # not make_dataclass's "types": cyclopts does not flatten standard-library classes
    return Parameter(name="*")(flags)  # flattened: --port, not --flags.port


def run_command(schema: type[Config] = Config, *, start: Callable[[Config], int] | None = None) -> Callable[..., int]:
    """The ``run`` command for ``schema``: its flags are ``run_flags(schema)`` and ``--config``."""

    def run(*, flags: Any = None, config: Path | None = None) -> int:
        """Start a node.

        Every flag can also be set in the environment as CMNODE_ plus its name (e.g. CMNODE_PORT=8081,
        CMNODE_QUEUE_SIZE=500) or in the config file; flags win over the environment, which wins over the file.
        The file holds the same names as top-level keys or under a [cmnode] table (queue_size = 500, or
        queue-size = 500). CMNODE_BOOTSTRAP takes a comma- or space-separated list; an empty variable is unset.
        An invalid setting is refused with a message naming it and its source, and exit code 2.
        """
        given = {} if flags is None else {f.name: getattr(flags, f.name) for f in dataclasses.fields(flags)}
        try:
            cfg = resolve_config(given, config, os.environ, schema=schema)
        except ConfigError as exc:
            print(f"cmnode: {exc}", file=sys.stderr)
            return client_cli.Exit.USAGE
        return (start or _start_node)(cfg)

    # The flags' class is made at run time, so it is set here rather than written in the signature.
    config_help = f"TOML config file. [env: {ENV_PREFIX}CONFIG] [default: {default_config_path()}]"
    run.__annotations__ = {
        "flags": run_flags(schema) | None,
        "config": Annotated[Path | None, Parameter(help=config_help)],
        "return": int,
    }
    return run


def _start_node(config: Config) -> int:
    from .startup import LEFT_OUT, REFUSED, WITHOUT_MDNS, imports_without_gc, leave_out

    leave_out({**LEFT_OUT, **({} if config.mdns else WITHOUT_MDNS)}, REFUSED)  # never run here (node/startup.py)
    with imports_without_gc():  # node/startup.py
        from .runner import main as run_main  # heavy imports only when a node really starts

    return run_main(config)


app.command(run_command(), name="run")
client_cli.register(app)

keygen = cyclopts.App(name="keygen", help="Generate key files.")


@keygen.command(name="swarm-key")
def swarm_key(path: Path | None = None, /) -> int:
    """Generate a private-network key: only nodes run with the same --swarm-key connect to each other.

    Written to PATH readable by its owner only (mode 0600; an existing file is left alone), or printed when
    no PATH is given. Copy it to every node over a secure channel; never commit it.
    """
    from .swarmkey import new_swarm_key, write_swarm_key

    if path is None:
        print(new_swarm_key(), end="")
        return 0
    try:
        write_swarm_key(path)
    except OSError as exc:
        print(f"cmnode: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}", file=sys.stderr)
    return 0


app.command(keygen)


def main() -> None:
    """The ``cmnode`` entry point: a bad flag or argument is one line on stderr and exit code 2."""
    try:
        argv = client_cli.hoist(sys.argv[1:])
        result = app(argv, exit_on_error=False, print_error=False, result_action="return_value")
    except cyclopts.CycloptsError as exc:
        print(f"cmnode: {' '.join(str(exc).split())} (see cmnode --help)", file=sys.stderr)
        sys.exit(client_cli.Exit.USAGE)
    except KeyboardInterrupt:
        sys.exit(client_cli.Exit.INTERRUPTED)
    sys.exit(result if isinstance(result, int) else 0)
