"""The client commands of ``cmnode`` (create, status, jobs, logs, stop, peers, info, nodes, drain...): JSON-RPC.

They must start fast, so this module imports only the standard library, cyclopts and ``rpc.client``
(itself on ``http.client``); rich is imported only where a table is printed. Every failure ends as one
line on stderr and an exit code of its own kind (``Exit``), never a traceback.
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import Group, Parameter

from rpc.client import DEFAULT_URL, BadResponseError, Client, NodeUnreachableError

from .errors import NodeError, NotFoundError, QueueFullError, UnauthorizedError, ValidationError

if TYPE_CHECKING:
    import cyclopts
    from rich.console import Console
    from rich.table import Table

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


def _console(*, wide: bool = False) -> Console:
    from rich.console import Console

    # Tables show short IDs and fit 80 columns when piped; ``--no-trunc`` (wide) shows full IDs on a wide one.
    return Console(width=None if sys.stdout.isatty() else WIDE if wide else 80, highlight=False)


WIDE = 250
SHORT_JOB = 8
"""The fewest characters of a job ID a table shows (more where two shown would share them): the nodes resolve
a unique prefix back to the job."""


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:  # one line per row (free text cut with an ellipsis), but for what must be read whole
        whole = column in ("ERROR", "ADDRESSES", "")
        table.add_column(column, overflow="fold" if whole else "ellipsis", no_wrap=not whole,
                         min_width=_UNCUT.get(column))  # fmt: skip
    return table


_UNCUT = {"JOB ID": SHORT_JOB, "NODE": 16, "NODE ID": 16, "STATUS": 9, "STATE": 9, "ATTEMPT": 7, "EXIT": 4,
          "CONTAINER": 12, "CREATED": 11}  # fmt: skip
"""Columns never cut below these widths (IDs, states, times); image, name and labels give way first."""


def short_ids(ids: list[str], *, least: int = SHORT_JOB) -> dict[str, str]:
    """Each ID cut to the shortest prefix, at least ``least`` characters, that no other of ``ids`` shares."""
    unique = sorted(set(ids))
    width = least
    for a, b in itertools.pairwise(unique):
        common = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        width = max(width, common + 1)
    return {i: i[:width] for i in ids}


def _node(node_id: str, conn: Conn) -> str:
    return node_id if conn.no_trunc else node_id[:SHORT_ID]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _when(stamp: Any, *, short: bool = False) -> str:
    if not isinstance(stamp, int | float):
        return ""
    return time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(stamp))


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
    spec: dict[str, Any] = {"image": image, "arguments": list(arguments), "env": _pairs(env, "--env")}
    if name is not None:
        spec["name"] = name
    if label:
        spec["labels"] = _pairs(label, "--label")
    if retries is not None:
        spec["retries"] = retries
    if timeout is not None:
        spec["timeout"] = timeout
    placement = _placement(replicas, selector, node)
    if placement is not None:
        spec["placement"] = placement
    spec.update(_service_fields(publish, volume, restart, entrypoint, pull))
    resources = {k: v for k, v in (("cpus", cpus), ("memory", memory)) if v is not None}
    if resources:
        spec["resources"] = resources
    if health_cmd is not None:
        check = {"command": health_cmd, "interval": health_interval, "timeout": health_timeout}
        check["retries"] = health_retries
        spec["healthcheck"] = {k: v for k, v in check.items() if v is not None}
    elif any(v is not None for v in (health_interval, health_timeout, health_retries)):
        raise UsageError("--health-interval, --health-timeout and --health-retries need --health-cmd")
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


def _service_fields(
    publish: list[str] | None, volume: list[str] | None, restart: str | None, entrypoint: str | None, pull: str | None
) -> dict[str, Any]:
    """The spec fields the flags of the same names set; the node checks them (one checker for every client)."""
    out: dict[str, Any] = {}
    if publish:
        out["ports"] = list(publish)
    if volume:
        out["volumes"] = list(volume)
    if restart is not None:
        out["restart"] = restart
    if entrypoint is not None:
        out["entrypoint"] = [entrypoint] if entrypoint else []
    if pull is not None:
        out["pull"] = pull
    return out


FULL_ID = 46
"""A libp2p peer ID is at least this long: ``--node`` passes an unknown one on (a node not heard of yet)."""


def resolve_nodes(known: list[dict[str, Any]], given: list[str]) -> list[str]:
    """The node IDs ``given`` name (``--node``): an ID, a node's name, or a unique prefix of an ID, looked up
    in NodeService.List's ``known`` nodes. Raises UsageError: ambiguous, or unknown and too short to be an ID."""
    ids = [n["node_id"] for n in known]
    out = []
    for text in given:
        if text in ids:
            out.append(text)
            continue
        for what, found in (
            ("named", [n["node_id"] for n in known if n.get("name") == text]),
            ("with the ID prefix", [i for i in ids if i.startswith(text)]),
        ):
            if len(found) == 1:
                out.append(found[0])
                break
            if found:
                raise UsageError(f"--node {text!r} is ambiguous: {len(found)} nodes {what} {text!r} "
                                 f"({', '.join(f[:SHORT_ID] for f in found[:5])}); give more of an ID")  # fmt: skip
        else:
            if len(text) < FULL_ID:
                raise UsageError(f"--node {text!r}: no node known by that ID, name or ID prefix (see cmnode nodes)")
            out.append(text)  # a full ID of a node not heard of yet
    return out


def _placement(replicas: int | None, selector: list[str] | None, nodes: list[str] | None) -> dict[str, Any] | None:
    if replicas is not None and nodes:
        raise UsageError("--replicas and --node cannot be combined")
    placement: dict[str, Any] = {}
    if replicas is not None:
        placement["replicas"] = replicas
    if nodes:
        placement["nodes"] = list(nodes)
    if selector:
        placement["selector"] = _pairs(selector, "--selector")
    return placement or None


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
    _print_status(result, full=conn.no_trunc)
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
    ids = [job["job_id"] for job in result["jobs"]]
    shown = {i: i for i in ids} if conn.no_trunc else short_ids(ids)
    table.columns[0].min_width = max((len(s) for s in shown.values()), default=SHORT_JOB)
    if not conn.no_trunc:  # 80 columns: free text gives way, IDs, states and times do not
        for column, most in zip(table.columns[2:5], (18, 10, 14), strict=True):
            column.max_width = most
    for job in result["jobs"]:
        labels = ",".join(f"{k}={v}" for k, v in (job.get("labels") or {}).items())
        table.add_row(shown[job["job_id"]], job["status"], job["image"], _text(job.get("name")), labels,
                      _when(job.get("created_at"), short=not conn.no_trunc))  # fmt: skip
    console = _console(wide=conn.no_trunc)
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
    on = ", ".join(_node(n, conn) for n in allocation.get("nodes") or []) or "no node"
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
    table = _table("NODE ID", "ADDRESSES")
    for peer in result["peers"]:
        table.add_row(_node(peer["node_id"], conn), "\n".join(peer.get("addresses", [])))
    _console(wide=conn.no_trunc).print(table)
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


# -- nodes --------------------------------------------------------------------------------------------

SHORT_ID = 16
"""Characters of a node ID shown in the nodes table: a prefix, so what is shown can be typed back."""


@_guarded
def nodes(*, conn: Conn | None = None) -> int:
    """List every node the node has heard of: state (ready, down, draining), name, labels, capacity, load."""
    conn = conn or Conn()
    result = _fetch(conn, "NodeService.List")
    if conn.json:
        return _print_json(result)
    # 80 columns: cut names and labels, not IDs. ALLOC: the copies placement gave it; RUN: containers running.
    width = max([SHORT_ID, *(len(n["node_id"]) for n in result["nodes"])]) if conn.no_trunc else SHORT_ID
    row = f"{{:<{width + 1}}} {{:<10}} {{:<8}} {{:<10}} {{:>4}} {{:>6}} {{:>5}} {{:>4}} {{}}"
    print(row.format("NODE", "NAME", "STATE", "LABELS", "CPUS", "MEMORY", "ALLOC", "RUN", "SEEN"))
    now = time.time()
    for n in result["nodes"]:
        capacity = n.get("capacity") or {}
        labels = ",".join(f"{k}={v}" for k, v in (n.get("labels") or {}).items())
        cpus = capacity.get("cpus")
        allocated = (n.get("allocated") or {}).get("jobs")
        print(row.format(
            n["node_id"][:width] + ("*" if n.get("self") else ""), _cut(_text(n.get("name")), 10), n["state"],
            _cut(labels, 10), _cut(f"{cpus:g}", 4) if isinstance(cpus, int | float) else "-",
            _size(capacity.get("memory")), _text(allocated), _text(n.get("running")), _ago(now, n.get("last_seen")),
        ).rstrip())  # fmt: skip
    print("(* this node; NODE is an ID prefix that drain and undrain take)")
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


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _size(value: Any) -> str:
    """At most 5 characters (1.5G, 512G, 1023M); a whole number from 10 on."""
    if not isinstance(value, int):
        return "-"
    for unit, size in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value >= size:
            scaled = value / size
            return f"{scaled:.1f}{unit}" if scaled < 10 else f"{scaled:.0f}{unit}"
    return str(value)


def _ago(now: float, stamp: Any) -> str:
    """At most 8 characters: now, 119s ago, 119m ago, 47h ago, 12d ago."""
    if not isinstance(stamp, int | float):
        return ""
    seconds = max(0, int(now - stamp))
    if seconds < 1:
        return "now"
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 120), ("h", 3600, 48)):
        if seconds < size * up_to:
            return f"{seconds // size}{unit} ago"
    return f"{seconds // 86400}d ago"


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

        with Live("", console=_console(), refresh_per_second=4, transient=False) as view:
            for result, event in job_updates(client, job_id):
                view.update(progress_view(_status_view(result), result, event, pulls))
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


def _status_view(result: dict[str, Any], *, full: bool = False) -> Any:
    """The job's row, its allocation in words, and a row per node; IDs cut to prefixes unless ``full``."""
    from rich.console import Group as RichGroup

    spec = result.get("spec") or {}
    job_id = result["job_id"] if full else result["job_id"][:SHORT_JOB]
    head = _table("JOB ID", "STATUS", "IMAGE", "CREATED")
    head.add_row(job_id, result["status"], _text(spec.get("image")), _when(result.get("created_at")))
    executions = _table("NODE", "STATE", "ATTEMPT", "EXIT", "CONTAINER", "ERROR")
    for e in result.get("executions", []):
        node_id = e["node_id"] if full else e["node_id"][:SHORT_ID]
        executions.add_row(node_id, e.get("state", ""), _text(e.get("attempt")), _text(e.get("exit_code")),
                           _text(e.get("container_id"))[:12], _text(e.get("error")))  # fmt: skip
    allocation = result.get("allocation")
    if allocation:
        placed = f"allocation v{allocation.get('version')}: {allocation.get('note')}"
        return RichGroup(head, placed, "", executions)
    return RichGroup(head, "", executions)


def _print_status(result: dict[str, Any], *, full: bool = False) -> None:
    _console(wide=full).print(_status_view(result, full=full))


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
