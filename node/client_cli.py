"""The client commands of ``cmnode`` (create, status, jobs, logs, stop, peers, info, nodes, drain...): JSON-RPC.

They must start fast, so this module imports only the standard library, cyclopts and ``rpc.client``
(itself on ``http.client``); what create's flags make of a job spec is ``node/client_spec.py``, and how an
answer is shown (tables, short IDs) ``node/client_tables.py``, which imports rich only where a table is
printed. Every failure ends as one line on stderr and an exit code of its own kind (``Exit``), never a
traceback. Its size is the commands' flags, each declared once with its help.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import Group, Parameter

from rpc.client import DEFAULT_URL, BadResponseError, Client, NodeUnreachableError

from .client_spec import UsageError, build_spec, pairs, resolve_nodes
from .client_tables import (
    console,
    print_info,
    print_jobs,
    print_nodes,
    print_peers,
    print_status,
    short_node,
    status_view,
)
from .errors import NodeError, NotFoundError, QueueFullError, UnauthorizedError, ValidationError

if TYPE_CHECKING:
    import cyclopts

FINAL = frozenset({"complete", "failed", "cancelled", "lost"})


class Exit(enum.IntEnum):
    """Exit codes of the client commands, one per kind of outcome (the README lists them)."""

    OK = 0
    JOB_FAILED = 1
    """``--wait``: the job ended failed, cancelled or lost."""
    USAGE = 2
    """A bad flag or argument (also: ``cmnode run`` refused its configuration)."""
    UNREACHABLE = 3
    """No answer from the node: not running, wrong address, timed out."""
    NOT_FOUND = 4
    """The node does not know the job (or its execution on the node asked for)."""
    INVALID = 5
    """The node refused the request's parameters (-32602)."""
    UNAUTHORIZED = 6
    """The node requires a token (``--token``/``CMNODE_TOKEN``) and got none or a wrong one."""
    QUEUE_FULL = 7
    """The node's job queue is full; the job was not recorded."""
    NODE_ERROR = 8
    """Any other error the node reported (Docker failure, peer unreachable, internal error)."""
    BAD_RESPONSE = 9
    """The answer was not JSON-RPC: the URL does not point at a cmnode node."""
    INTERRUPTED = 130


_EXIT_OF: tuple[tuple[type[Exception], Exit], ...] = (
    (UsageError, Exit.USAGE),
    (NodeUnreachableError, Exit.UNREACHABLE),
    (BadResponseError, Exit.BAD_RESPONSE),
    (NotFoundError, Exit.NOT_FOUND),
    (ValidationError, Exit.INVALID),
    (UnauthorizedError, Exit.UNAUTHORIZED),
    (QueueFullError, Exit.QUEUE_FULL),
    (NodeError, Exit.NODE_ERROR),
)

CONNECTION = Group("Connection", sort_key=100)


@Parameter(name="*", group=CONNECTION)
@dataclass(frozen=True, kw_only=True)
class Conn:
    """How to reach the node; shared by every client command."""

    url: Annotated[str, Parameter(env_var="CMNODE_URL", help="The node's RPC URL.")] = DEFAULT_URL
    token: Annotated[
        str | None, Parameter(env_var="CMNODE_TOKEN", help="Bearer token, for a node started with --rpc-token.")
    ] = None
    cacert: Annotated[
        str | None,
        Parameter(env_var="CMNODE_CACERT", help="PEM file of certificates to trust for an https URL (a node's own)."),
    ] = None
    json: Annotated[bool, Parameter(negative=(), help="Print the raw JSON-RPC result, for scripts.")] = False
    no_trunc: Annotated[bool, Parameter(negative=(), help="Show full IDs in tables (default: short prefixes).")] = False

    def client(self) -> Client:
        if self.cacert is not None and not os.path.isfile(self.cacert):
            raise UsageError(f"--cacert: no such file {self.cacert}")
        try:
            return Client(self.url, token=self.token, cacert=self.cacert)
        except ValueError as exc:
            raise UsageError(f"--url: {exc}") from None


def _guarded(command: Callable[..., int]) -> Callable[..., int]:
    """Turn every expected failure of ``command`` into one stderr line and its exit code."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            return Exit.INTERRUPTED
        except BrokenPipeError:  # e.g. `cmnode logs ... | head`: the reader left, nothing to report
            return Exit.OK
        except Exception as exc:
            for kind, code in _EXIT_OF:
                if isinstance(exc, kind):
                    print(f"cmnode: {_one_line(exc)}", file=sys.stderr)
                    return code
            raise

    return run


def _one_line(exc: Exception) -> str:
    message = exc.message if isinstance(exc, NodeError) else str(exc)
    return " ".join(message.split())


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2))
    return Exit.OK


def _fetch(conn: Conn, method: str, params: dict[str, Any] | None = None) -> Any:
    """One call on a connection of its own."""
    with conn.client() as client:
        return client.call(method, params)


# -- commands ---------------------------------------------------------------------------------------


@_guarded
def create(
    image: str,
    *arguments: str,
    env: Annotated[
        list[str] | None, Parameter(name=["--env", "-e"], negative=(), help="KEY=VALUE, repeatable.")
    ] = None,
    name: Annotated[str | None, Parameter(help="A display name.")] = None,
    label: Annotated[list[str] | None, Parameter(negative=(), help="KEY=VALUE to filter by, repeatable.")] = None,
    retries: Annotated[int | None, Parameter(help="Attempts after the first, with backoff.")] = None,
    timeout: Annotated[float | None, Parameter(help="Seconds before the container is stopped.")] = None,
    replicas: Annotated[int | None, Parameter(help="Run N copies on N distinct nodes (not on every node).")] = None,
    selector: Annotated[
        list[str] | None, Parameter(negative=(), help="KEY=VALUE a node's labels must hold, repeatable.")
    ] = None,
    node: Annotated[
        list[str] | None, Parameter(negative=(), help="Run on this node (ID, name or ID prefix) only, repeatable.")
    ] = None,
    publish: Annotated[
        list[str] | None,
        Parameter(name=["--publish", "-p"], negative=(), help="[IP:]HOST:CONTAINER[/udp] port to publish, repeatable."),
    ] = None,
    volume: Annotated[
        list[str] | None,
        Parameter(name=["--volume", "-v"], negative=(), help="SOURCE:TARGET[:ro] volume or host path, repeatable."),
    ] = None,
    restart: Annotated[
        Literal["never", "on-failure", "always"] | None, Parameter(help="When to start it again (default never).")
    ] = None,
    health_cmd: Annotated[str | None, Parameter(help="Healthcheck shell command; exit 0 is healthy.")] = None,
    health_interval: Annotated[float | None, Parameter(help="Seconds between healthchecks.")] = None,
    health_timeout: Annotated[float | None, Parameter(help="Seconds before a healthcheck fails.")] = None,
    health_retries: Annotated[int | None, Parameter(help="Failed healthchecks before unhealthy.")] = None,
    cpus: Annotated[float | None, Parameter(help="CPUs the container may use (and placement reserves).")] = None,
    memory: Annotated[str | None, Parameter(help="Memory limit, e.g. 256m (and placement reserves it).")] = None,
    entrypoint: Annotated[str | None, Parameter(help="Overrides the image's entrypoint ('' clears it).")] = None,
    pull: Annotated[Literal["missing", "always", "never"] | None, Parameter(help="When to pull the image.")] = None,
    wait: Annotated[bool, Parameter(negative=(), help="Follow the job until it ends; non-zero if it fails.")] = False,
    conn: Conn | None = None,
) -> int:
    """Create a job: run IMAGE with ARGUMENTS on every node. Put -- before arguments that start with a dash.

    Parameters
    ----------
    image
        Docker image reference, e.g. busybox:latest.
    arguments
        The command and its arguments.
    """
    conn = conn or Conn()
    spec = build_spec(image, arguments, env=env, name=name, label=label, retries=retries, timeout=timeout,
                      replicas=replicas, selector=selector, node=node, publish=publish, volume=volume,
                      restart=restart, health_cmd=health_cmd, health_interval=health_interval,
                      health_timeout=health_timeout, health_retries=health_retries, cpus=cpus, memory=memory,
                      entrypoint=entrypoint, pull=pull)  # fmt: skip
    placement = spec.get("placement")
    with conn.client() as client:
        if placement is not None and placement.get("nodes"):
            placement["nodes"] = resolve_nodes(client.call("NodeService.List")["nodes"], placement["nodes"])
        result = client.call("ContainerService.Create", spec)
        if not wait:
            if conn.json:
                _print_json(result)
            else:
                print(result["job_id"])
            return Exit.OK
        if not conn.json:
            print(result["job_id"])
        return _follow(client, result["job_id"], as_json=conn.json)


@_guarded
def status(
    job_id: str,
    *,
    wait: Annotated[bool, Parameter(negative=(), help="Follow the job until it ends; non-zero if it fails.")] = False,
    conn: Conn | None = None,
) -> int:
    """Show a job's status and its execution on each node.

    Parameters
    ----------
    job_id
        The ID printed by create, or a unique prefix of it.
    """
    conn = conn or Conn()
    with conn.client() as client:
        result = client.call("ContainerService.Status", {"job_id": job_id})
        if wait:  # followed by its full ID: the node resolved a prefix
            return _follow(client, result["job_id"], as_json=conn.json)
    if conn.json:
        return _print_json(result)
    print_status(result, full=conn.no_trunc)
    return Exit.OK


@_guarded
def jobs(
    *,
    status: Annotated[str | None, Parameter(help="Only jobs in this status, e.g. running, failed.")] = None,
    label: Annotated[list[str] | None, Parameter(negative=(), help="KEY=VALUE, repeatable; all must match.")] = None,
    limit: Annotated[int, Parameter(help="At most this many, newest first.")] = 100,
    conn: Conn | None = None,
) -> int:
    """List jobs, newest first."""
    conn = conn or Conn()
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    if label:
        params["labels"] = pairs(label, "--label")
    result = _fetch(conn, "ContainerService.List", params)
    if conn.json:
        return _print_json(result)
    print_jobs(result, limit=limit, full=conn.no_trunc)
    return Exit.OK


@_guarded
def logs(
    job_id: str,
    *,
    node: Annotated[str | None, Parameter(help="The node whose execution to read. [default: this node]")] = None,
    tail: Annotated[int | None, Parameter(help="Only the last N lines.")] = None,
    follow: Annotated[
        bool, Parameter(name=["--follow", "-f"], negative=(), help="Keep printing as it is written, until it ends.")
    ] = False,
    conn: Conn | None = None,
) -> int:
    """Print a job's output on a node: its stdout to stdout, its stderr to stderr (--follow: as it is written,
    until the execution ends there; from another node too).

    Parameters
    ----------
    job_id
        The ID printed by create, or a unique prefix of it.
    """
    conn = conn or Conn()
    if follow:
        from .client_logs import follow_logs

        return follow_logs(conn, job_id, node=node, tail=tail)
    params: dict[str, Any] = {"job_id": job_id}
    if node is not None:
        params["node_id"] = node
    if tail is not None:
        params["tail"] = tail
    result = _fetch(conn, "ContainerService.Logs", params)
    if conn.json:
        return _print_json(result)
    sys.stdout.write(result.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(result.get("stderr", ""))
    return Exit.OK


@_guarded
def stop(job_id: str, *, conn: Conn | None = None) -> int:
    """Stop a job on every node (stopping it twice is fine).

    Parameters
    ----------
    job_id
        The ID printed by create, or a unique prefix of it.
    """
    conn = conn or Conn()
    result = _fetch(conn, "ContainerService.Stop", {"job_id": job_id})
    if conn.json:
        return _print_json(result)
    print(f"{result.get('message', 'Job stop requested')}: {result.get('job_id', job_id)}")
    return Exit.OK


@_guarded
def scale(job_id: str, replicas: int, *, conn: Conn | None = None) -> int:
    """Run REPLICAS copies of a replicas job (a new allocation; any node takes it).

    Parameters
    ----------
    job_id
        The ID printed by create, or a unique prefix of it.
    replicas
        How many copies, on as many distinct nodes.
    """
    conn = conn or Conn()
    result = _fetch(conn, "ContainerService.Scale", {"job_id": job_id, "replicas": replicas})
    if conn.json:
        return _print_json(result)
    allocation = result.get("allocation") or {}
    on = ", ".join(short_node(n, full=conn.no_trunc) for n in allocation.get("nodes") or []) or "no node"
    print(f"{result.get('job_id', job_id)}: {allocation.get('note', '')} on {on}")
    return Exit.OK


@_guarded
def peers(*, conn: Conn | None = None) -> int:
    """List the peers the node is connected to."""
    conn = conn or Conn()
    result = _fetch(conn, "NodeService.Peers")
    if conn.json:
        return _print_json(result)
    if not result["peers"]:
        print("no peers connected")
        return Exit.OK
    print_peers(result["peers"], full=conn.no_trunc)
    return Exit.OK


@_guarded
def info(*, conn: Conn | None = None) -> int:
    """Describe the node: ID, addresses, queue, workers, Docker health."""
    conn = conn or Conn()
    result = _fetch(conn, "NodeService.Info")
    if conn.json:
        return _print_json(result)
    print_info(result)
    return Exit.OK


# -- nodes --------------------------------------------------------------------------------------------


@_guarded
def nodes(*, conn: Conn | None = None) -> int:
    """List every node the node has heard of: state (ready, down, draining), name, labels, capacity, load."""
    conn = conn or Conn()
    result = _fetch(conn, "NodeService.List")
    if conn.json:
        return _print_json(result)
    print_nodes(result["nodes"], full=conn.no_trunc)
    return Exit.OK


@_guarded
def drain(node: str, *, conn: Conn | None = None) -> int:
    """Drain a node: it takes no new allocations and its replicas move elsewhere. Exit 1: no such node.

    Parameters
    ----------
    node
        The node's ID, its name, or a unique prefix of its ID.
    """
    return _drain(conn or Conn(), "NodeService.Drain", node)


@_guarded
def undrain(node: str, *, conn: Conn | None = None) -> int:
    """Let a drained node take allocations again. Exit 1: no such node.

    Parameters
    ----------
    node
        The node's ID, its name, or a unique prefix of its ID.
    """
    return _drain(conn or Conn(), "NodeService.Undrain", node)


def _drain(conn: Conn, method: str, node: str) -> int:
    try:
        result = _fetch(conn, method, {"node_id": node})
    except ValidationError as exc:  # unknown or ambiguous: the node said which
        print(f"cmnode: {_one_line(exc)}", file=sys.stderr)
        return Exit.JOB_FAILED
    if conn.json:
        return _print_json(result)
    print(result.get("message", ""))
    return Exit.OK


# -- following a job --------------------------------------------------------------------------------


def _follow(client: Client, job_id: str, *, as_json: bool) -> int:
    """Follow the job's events until it ends (``GET /events``: Status once per change, no polling), showing
    each node's state and a pull's progress; the exit code says how it ended."""
    from .client_events import job_updates, progress_view

    live = sys.stdout.isatty() and not as_json
    seen: dict[str, tuple[Any, ...]] = {}
    pulls: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {}
    if live:
        from rich.live import Live

        with Live("", console=console(), refresh_per_second=4, transient=False) as view:
            for result, event in job_updates(client, job_id):
                view.update(progress_view(status_view(result), result, event, pulls))
    else:
        for result, event in job_updates(client, job_id):
            if not as_json and (event is None or event.type != "progress"):
                _print_changes(result, seen)
    if as_json:
        _print_json(result)
    elif not live:
        print(f"job {job_id} {result['status']}", flush=True)
    if result["status"] == "complete":
        return Exit.OK
    print(f"cmnode: job {job_id} ended {result['status']}", file=sys.stderr)
    return Exit.JOB_FAILED


def _print_changes(result: dict[str, Any], seen: dict[str, tuple[Any, ...]]) -> None:
    """One key=value line per execution whose state changed since the last poll."""
    for e in result.get("executions", []):
        key = (e.get("state"), e.get("attempt"), e.get("exit_code"), e.get("error"))
        if seen.get(e["node_id"]) == key:
            continue
        seen[e["node_id"]] = key
        line = f"node={e['node_id']} state={e.get('state')} attempt={e.get('attempt')}"
        if e.get("exit_code") is not None:
            line += f" exit_code={e['exit_code']}"
        if e.get("error"):
            line += f" error={json.dumps(e['error'])}"
        print(line, flush=True)


HOISTED = ("--url", "--token", "--cacert")
"""Connection flags that may come before the command (``cmnode --url U status JOB``), as with docker -H."""


def hoist(argv: list[str]) -> list[str]:
    """``argv`` with connection flags given before the command moved after it, where the command takes them."""
    front: list[str] = []
    i = 0
    while i < len(argv):
        name, eq, _ = argv[i].partition("=")
        if name in HOISTED:
            take = 1 if eq else 2
        elif argv[i] in ("--json", "--no-trunc"):
            take = 1
        else:
            break
        if i + take > len(argv):
            return argv  # a flag without its value: let the parser say so
        front += argv[i : i + take]
        i += take
    if not front or i == len(argv) or argv[i].startswith("-"):
        return argv
    return [argv[i], *front, *argv[i + 1 :]]


COMMANDS = (create, status, jobs, logs, stop, scale, peers, info, nodes, drain, undrain)


def register(app: cyclopts.App) -> None:
    """Add the client commands to the ``cmnode`` app."""
    from .client_events import events

    for command in (*COMMANDS, events):
        app.command(command)
