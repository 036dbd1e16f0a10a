"""The client commands of ``cmnode`` (create, status, jobs, logs, stop, peers, info): JSON-RPC to one node.

They must start fast, so this module imports only the standard library, cyclopts and ``rpc.client``
(itself on ``http.client``); rich is imported only where a table is printed. Every failure ends as one
line on stderr and an exit code of its own kind (``Exit``), never a traceback.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Group, Parameter

from rpc.client import DEFAULT_URL, BadResponseError, Client, NodeUnreachableError

from .errors import NodeError, NotFoundError, QueueFullError, UnauthorizedError, ValidationError

if TYPE_CHECKING:
    import cyclopts
    from rich.console import Console
    from rich.table import Table

FINAL = frozenset({"complete", "failed", "cancelled", "lost"})
POLL_INTERVAL = 0.5
"""Seconds between Status calls while ``--wait`` follows a job (HTTP has no push channel)."""


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


class UsageError(Exception):
    """A flag's value is malformed (caught before any request is sent)."""


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


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or ():
        key, eq, val = value.partition("=")
        if not eq or not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        out[key] = val
    return out


def _print_json(value: Any) -> int:
    print(json.dumps(value, indent=2))
    return Exit.OK


def _fetch(conn: Conn, method: str, params: dict[str, Any] | None = None) -> Any:
    """One call on a connection of its own."""
    with conn.client() as client:
        return client.call(method, params)


def _console() -> Console:
    from rich.console import Console

    # Piped output gets a wide console, so IDs are not cut to fit 80 columns.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, int | float):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


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
    spec: dict[str, Any] = {"image": image, "arguments": list(arguments), "env": _pairs(env, "--env")}
    if name is not None:
        spec["name"] = name
    if label:
        spec["labels"] = _pairs(label, "--label")
    if retries is not None:
        spec["retries"] = retries
    if timeout is not None:
        spec["timeout"] = timeout
    with conn.client() as client:
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
        The ID printed by create.
    """
    conn = conn or Conn()
    with conn.client() as client:
        if wait:
            return _follow(client, job_id, as_json=conn.json)
        result = client.call("ContainerService.Status", {"job_id": job_id})
    if conn.json:
        return _print_json(result)
    _print_status(result)
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
        params["labels"] = _pairs(label, "--label")
    result = _fetch(conn, "ContainerService.List", params)
    if conn.json:
        return _print_json(result)
    table = _table("JOB ID", "STATUS", "IMAGE", "NAME", "LABELS", "CREATED")
    for job in result["jobs"]:
        labels = ",".join(f"{k}={v}" for k, v in (job.get("labels") or {}).items())
        table.add_row(job["job_id"], job["status"], job["image"], _text(job.get("name")), labels,
                      _when(job.get("created_at")))  # fmt: skip
    console = _console()
    console.print(table)
    if result.get("next_cursor"):
        console.print(f"(more than {limit}: raise --limit to see more)", style="dim")
    return Exit.OK


@_guarded
def logs(
    job_id: str,
    *,
    node: Annotated[str | None, Parameter(help="The node whose execution to read. [default: this node]")] = None,
    tail: Annotated[int | None, Parameter(help="Only the last N lines.")] = None,
    conn: Conn | None = None,
) -> int:
    """Print a job's output on a node: its stdout to stdout, its stderr to stderr.

    Parameters
    ----------
    job_id
        The ID printed by create.
    """
    conn = conn or Conn()
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
        The ID printed by create.
    """
    conn = conn or Conn()
    result = _fetch(conn, "ContainerService.Stop", {"job_id": job_id})
    if conn.json:
        return _print_json(result)
    print(f"{result.get('message', 'Job stop requested')}: {job_id}")
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
    table = _table("NODE ID", "ADDRESSES")
    for peer in result["peers"]:
        table.add_row(peer["node_id"], "\n".join(peer.get("addresses", [])))
    _console().print(table)
    return Exit.OK


@_guarded
def info(*, conn: Conn | None = None) -> int:
    """Describe the node: ID, addresses, queue, workers, Docker health."""
    conn = conn or Conn()
    result = _fetch(conn, "NodeService.Info")
    if conn.json:
        return _print_json(result)
    queue, workers, docker = result.get("queue", {}), result.get("workers", {}), result.get("docker", {})
    rows = [
        ("node ID", _text(result.get("node_id"))),
        ("version", _text(result.get("version"))),
        ("RPC", _text(result.get("rpc_url"))),
        ("addresses", "\n".join(result.get("addresses", []))),
        ("peers", _text(result.get("peers"))),
        ("queue", f"{queue.get('depth')} / {queue.get('size')}"),
        ("workers busy", f"{workers.get('busy')} / {workers.get('count')}"),
        ("docker", "ok" if docker.get("ok") else f"down: {docker.get('error')}"),
        ("uptime", f"{result.get('uptime', 0):.0f} s"),
    ]
    table = _table("", "")
    table.show_header = False
    for key, value in rows:
        table.add_row(key, value)
    _console().print(table)
    return Exit.OK


# -- following a job --------------------------------------------------------------------------------


def _follow(client: Client, job_id: str, *, as_json: bool) -> int:
    """Poll Status until the job ends, showing each node's state; the exit code says how it ended."""
    live = sys.stdout.isatty() and not as_json
    seen: dict[str, tuple[Any, ...]] = {}
    result = client.call("ContainerService.Status", {"job_id": job_id})
    if live:
        from rich.live import Live

        with Live(_status_view(result), console=_console(), refresh_per_second=4, transient=False) as view:
            while result["status"] not in FINAL:
                time.sleep(POLL_INTERVAL)
                result = client.call("ContainerService.Status", {"job_id": job_id})
                view.update(_status_view(result))
    else:
        while True:
            if not as_json:
                _print_changes(result, seen)
            if result["status"] in FINAL:
                break
            time.sleep(POLL_INTERVAL)
            result = client.call("ContainerService.Status", {"job_id": job_id})
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


def _status_view(result: dict[str, Any]) -> Any:
    from rich.console import Group as RichGroup

    spec = result.get("spec") or {}
    head = _table("JOB ID", "STATUS", "IMAGE", "CREATED")
    head.add_row(result["job_id"], result["status"], _text(spec.get("image")), _when(result.get("created_at")))
    executions = _table("NODE", "STATE", "ATTEMPT", "EXIT", "CONTAINER", "ERROR")
    for e in result.get("executions", []):
        executions.add_row(e["node_id"], e.get("state", ""), _text(e.get("attempt")), _text(e.get("exit_code")),
                           _text(e.get("container_id"))[:12], _text(e.get("error")))  # fmt: skip
    return RichGroup(head, "", executions)


def _print_status(result: dict[str, Any]) -> None:
    _console().print(_status_view(result))


COMMANDS = (create, status, jobs, logs, stop, peers, info)


def register(app: cyclopts.App) -> None:
    """Add the client commands to the ``cmnode`` app."""
    for command in COMMANDS:
        app.command(command)
