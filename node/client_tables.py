"""How the client commands show a node's answers to a person: short IDs, the cells of a row (times, sizes,
ages) and the tables of ``cmnode jobs``, ``status``, ``peers``, ``info`` and ``nodes``.

Kept apart from the commands (``node/client_cli.py``) so that what is asked and how it is shown change apart.
Like them, it imports only the standard library at start; rich is imported only where a table is printed.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = [
    "SHORT_ID",
    "SHORT_JOB",
    "WIDE",
    "console",
    "print_info",
    "print_jobs",
    "print_nodes",
    "print_peers",
    "print_status",
    "short_ids",
    "short_node",
    "status_view",
]

WIDE = 250
SHORT_JOB = 8
"""The fewest characters of a job ID a table shows (more where two shown would share them): the nodes resolve
a unique prefix back to the job."""
SHORT_ID = 16
"""Characters of a node ID shown in the nodes table: a prefix, so what is shown can be typed back."""


# -- short IDs -------------------------------------------------------------------------------------------


def short_ids(ids: list[str], *, least: int = SHORT_JOB) -> dict[str, str]:
    """Each ID cut to the shortest prefix, at least ``least`` characters, that no other of ``ids`` shares."""
    unique = sorted(set(ids))
    width = least
    for a, b in itertools.pairwise(unique):
        common = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        width = max(width, common + 1)
    return {i: i[:width] for i in ids}


def short_node(node_id: str, *, full: bool = False) -> str:
    """A node ID as a table shows it: a prefix of ``SHORT_ID`` characters unless ``full``."""
    return node_id if full else node_id[:SHORT_ID]


# -- cells -----------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _when(stamp: Any, *, short: bool = False) -> str:
    if not isinstance(stamp, int | float):
        return ""
    return time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S", time.localtime(stamp))


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


# -- tables ----------------------------------------------------------------------------------------------


def console(*, wide: bool = False) -> Console:
    from rich.console import Console

    # Tables show short IDs and fit 80 columns when piped; ``--no-trunc`` (wide) shows full IDs on a wide one.
    return Console(width=None if sys.stdout.isatty() else WIDE if wide else 80, highlight=False)


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


def print_jobs(result: dict[str, Any], *, limit: int, full: bool = False) -> None:
    """ContainerService.List's page, one job a row; IDs cut to their shortest unique prefixes unless ``full``."""
    table = _table("JOB ID", "STATUS", "IMAGE", "NAME", "LABELS", "CREATED")
    ids = [job["job_id"] for job in result["jobs"]]
    shown = {i: i for i in ids} if full else short_ids(ids)
    table.columns[0].min_width = max((len(s) for s in shown.values()), default=SHORT_JOB)
    if not full:  # 80 columns: free text gives way, IDs, states and times do not
        for column, most in zip(table.columns[2:5], (18, 10, 14), strict=True):
            column.max_width = most
    for job in result["jobs"]:
        labels = ",".join(f"{k}={v}" for k, v in (job.get("labels") or {}).items())
        table.add_row(shown[job["job_id"]], job["status"], job["image"], _text(job.get("name")), labels,
                      _when(job.get("created_at"), short=not full))  # fmt: skip
    out = console(wide=full)
    out.print(table)
    if result.get("next_cursor"):
        out.print(f"(more than {limit}: raise --limit to see more)", style="dim")


def print_peers(peers: list[dict[str, Any]], *, full: bool = False) -> None:
    table = _table("NODE ID", "ADDRESSES")
    for peer in peers:
        table.add_row(short_node(peer["node_id"], full=full), "\n".join(peer.get("addresses", [])))
    console(wide=full).print(table)


def print_info(result: dict[str, Any]) -> None:
    """NodeService.Info as two columns, name and value."""
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
    console().print(table)


def print_nodes(nodes: list[dict[str, Any]], *, full: bool = False) -> None:
    """NodeService.List as plain fixed-width lines (80 columns: names and labels are cut, IDs are not).
    ALLOC: the copies placement gave a node; RUN: the containers running there."""
    width = max([SHORT_ID, *(len(n["node_id"]) for n in nodes)]) if full else SHORT_ID
    row = f"{{:<{width + 1}}} {{:<10}} {{:<8}} {{:<10}} {{:>4}} {{:>6}} {{:>5}} {{:>4}} {{}}"
    print(row.format("NODE", "NAME", "STATE", "LABELS", "CPUS", "MEMORY", "ALLOC", "RUN", "SEEN"))
    now = time.time()
    for n in nodes:
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


def status_view(result: dict[str, Any], *, full: bool = False) -> Any:
    """The job's row, its allocation in words, and a row per node; IDs cut to prefixes unless ``full``."""
    from rich.console import Group as RichGroup

    spec = result.get("spec") or {}
    job_id = result["job_id"] if full else result["job_id"][:SHORT_JOB]
    head = _table("JOB ID", "STATUS", "IMAGE", "CREATED")
    head.add_row(job_id, result["status"], _text(spec.get("image")), _when(result.get("created_at")))
    executions = _table("NODE", "STATE", "ATTEMPT", "EXIT", "CONTAINER", "ERROR")
    for e in result.get("executions", []):
        executions.add_row(short_node(e["node_id"], full=full), e.get("state", ""), _text(e.get("attempt")),
                           _text(e.get("exit_code")), _text(e.get("container_id"))[:12],
                           _text(e.get("error")))  # fmt: skip
    allocation = result.get("allocation")
    if allocation:
        placed = f"allocation v{allocation.get('version')}: {allocation.get('note')}"
        return RichGroup(head, placed, "", executions)
    return RichGroup(head, "", executions)


def print_status(result: dict[str, Any], *, full: bool = False) -> None:
    console(wide=full).print(status_view(result, full=full))
