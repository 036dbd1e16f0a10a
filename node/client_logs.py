"""``cmnode logs JOB --follow``: a job's output as it is written, from the node called or, through it, another.

Like ``node/client_cli.py`` (whose ``Conn`` and exit codes it shares), it imports only the standard library and
``rpc.client`` at start.
"""

from __future__ import annotations

import json
import sys

from .client_cli import Conn, Exit

__all__ = ["follow_logs"]


def follow_logs(conn: Conn, job_id: str, *, node: str | None, tail: int | None) -> int:
    """Print stdout to stdout and stderr to stderr as they come (with --json: one {"type", "data"} object per
    line); 0 once the execution ends, ``UNREACHABLE`` if the follow ends first (the reason on stderr)."""
    with conn.client() as client, client.follow_logs(job_id, node_id=node, tail=tail) as stream:
        for event in stream:
            data = event.data if isinstance(event.data, dict) else {}
            if conn.json:
                print(json.dumps({"type": event.type, "data": data}), flush=True)
            elif event.type in ("stdout", "stderr"):
                out = sys.stdout if event.type == "stdout" else sys.stderr
                out.write(str(data.get("text", "")))
                out.flush()
            if event.type == "end":
                return Exit.OK
            if event.type == "cut":
                print(f"cmnode: the follow ended before the job did: {data.get('reason')}", file=sys.stderr)
                return Exit.UNREACHABLE
        print(f"cmnode: {client.url} ended the logs stream (the node stops)", file=sys.stderr)
        return Exit.UNREACHABLE
