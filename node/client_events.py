"""Following a node's event stream from the CLI: ``cmnode events``, and the job updates ``--wait`` shows.

Like ``node/client_cli.py`` (whose ``Conn`` and error handling it shares), it imports only the standard library,
cyclopts and ``rpc.client`` at start.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

from cyclopts import Parameter

from rpc.client import Client, Event, EventStream, NodeUnreachableError

from .client_cli import FINAL, Conn, Exit, _guarded

__all__ = ["event_line", "events", "job_updates", "progress_view"]


def _reopen(client: Client, stream: EventStream, **filters: Any) -> EventStream:
    """After ``dropped`` (this reader fell behind): the same stream again, from the last event read."""
    stream.close()
    return client.events(last_event_id=stream.last_id, **filters)


def job_updates(client: Client, job_id: str) -> Iterator[tuple[dict[str, Any], Event | None]]:
    """The job's Status now, then again after each of its events, until the job ends; each with the event that
    prompted it (None for the first). The stream is opened before the first Status, so no change falls between.

    Raises:
        NodeUnreachableError: the node ended the stream (it stops) before the job ended.
    """
    stream = client.events(job_ids=[job_id])
    try:
        result = client.call("ContainerService.Status", {"job_id": job_id})
        yield result, None
        while result["status"] not in FINAL:
            for event in stream:
                if event.type == "dropped":
                    stream = _reopen(client, stream, job_ids=[job_id])
                    break
                if event.type != "progress":  # a pull's progress changes no state: no Status for it
                    result = client.call("ContainerService.Status", {"job_id": job_id})
                yield result, event
                if result["status"] in FINAL:
                    return
            else:
                raise NodeUnreachableError(f"{client.url} ended its event stream (stopping?) before job {job_id} ended")
    finally:
        stream.close()


def event_line(event: Event) -> str:
    """One line for a person: the time, the type, and what changed."""
    data = event.data if isinstance(event.data, dict) else {}
    parts = [time.strftime("%H:%M:%S"), f"{event.type:<10}"]
    if data.get("job_id"):
        parts.append(f"job={str(data['job_id'])[:8]}")
    if data.get("node_id"):
        parts.append(f"node={str(data['node_id'])[:16]}")
    for key in ("name", "image", "state", "status", "attempt", "exit_code", "error", "health", "nodes", "note"):
        value = data.get(key)
        if value is None or value == "" or value == []:
            continue
        if key == "nodes":
            value = ",".join(str(n)[:16] for n in value)
        parts.append(f"{key}={json.dumps(value) if key in ('error', 'note') else value}")
    if event.type == "progress":
        parts.append(_progress_text(data))
    return " ".join(parts)


def _progress_text(data: dict[str, Any]) -> str:
    done, total = data.get("done") or 0, data.get("total")
    return f"pulled {done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"pulled {done / 1e6:.1f} MB"


@_guarded
def events(
    *,
    job: Annotated[list[str] | None, Parameter(negative=(), help="Only this job's events, repeatable.")] = None,
    node: Annotated[list[str] | None, Parameter(negative=(), help="Only events about this node ID.")] = None,
    type: Annotated[
        list[str] | None,
        Parameter(negative=(), help="Only these types: job, execution, cancel, allocation, node, progress."),
    ] = None,
    since: Annotated[int | None, Parameter(help="Start after this event id (a resume), not from now.")] = None,
    conn: Conn | None = None,
) -> int:
    """Follow what happens in the cluster, as it happens, until interrupted (or the node stops: exit 3).

    With --json, one JSON object per line: {"id", "type", "data"}.
    """
    conn = conn or Conn()
    filters: dict[str, Any] = {"job_ids": job or (), "node_ids": node or (), "types": type or ()}
    with conn.client() as client:
        stream = client.events(last_event_id=since, **filters)
        try:
            while True:
                for event in stream:
                    if event.type == "dropped":  # fell behind: carry on from the last event read
                        stream = _reopen(client, stream, **filters)
                        break
                    if conn.json:
                        print(json.dumps({"id": event.id, "type": event.type, "data": event.data}), flush=True)
                    else:
                        print(event_line(event), flush=True)
                else:
                    print(f"cmnode: {client.url} ended the event stream (the node stops)", file=sys.stderr)
                    return Exit.UNREACHABLE
        finally:
            stream.close()


def progress_view(view: Any, result: dict[str, Any], event: Event | None, pulls: dict[str, dict[str, Any]]) -> Any:
    """``view`` (the Status tables) with a bar per node still pulling the image, fed by ``progress`` events."""
    if event is not None and event.type == "progress" and isinstance(event.data, dict):
        pulls[str(event.data.get("node_id"))] = event.data
    pulling = {e.get("node_id") for e in result.get("executions", []) if e.get("state") == "pulling"}
    bars = [data for node_id, data in pulls.items() if node_id in pulling]
    if not bars:
        return view
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    table = Table.grid(padding=(0, 1))
    for data in bars:
        total = data.get("total") or None
        bar = ProgressBar(total=total, completed=data.get("done") or 0, width=30)
        table.add_row(f"pulling on {str(data.get('node_id'))[:16]}", bar, _progress_text(data))
    return Group(view, "", table)
