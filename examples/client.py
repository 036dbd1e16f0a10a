#!/usr/bin/env python3
"""A small cmnode client over JSON-RPC, with nothing but the standard library.

Runs a job, follows it until every node that runs it has finished, then prints each node's output:

    python3 examples/client.py                                   # busybox echo on http://localhost:8080
    python3 examples/client.py --url http://localhost:8081 alpine -- sh -c 'uname -a'
    CMNODE_URL=http://localhost:8082 python3 examples/client.py busybox -- date

``RpcClient`` is the part to copy: one POST per call, errors raised as ``RpcError`` with the JSON-RPC code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

FINAL = {"complete", "failed", "cancelled", "lost"}


class RpcError(Exception):
    """A JSON-RPC error answer: ``code`` as the API documents it (-32001 job not found, -32602 invalid params...)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})" + (f": {json.dumps(data)}" if data else ""))
        self.code = code
        self.data = data


class RpcClient:
    """Calls a node's ``POST /jrpc``; ``token`` is sent as a bearer token when the node requires one."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.endpoint = url.rstrip("/") + "/jrpc"
        self.token = token
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with params by name; returns the result or raises ``RpcError`` / ``OSError``."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)})
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.endpoint, data=body.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry a JSON-RPC error body
            answer = json.load(exc)
        if answer.get("error"):
            error = answer["error"]
            raise RpcError(error["code"], error["message"], error.get("data"))
        return answer["result"]

    def wait(self, job_id: str, *, timeout: float = 120.0, interval: float = 0.5) -> dict[str, Any]:
        """Poll Status until the job and every execution of it are final; raises TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            status: dict[str, Any] = self.call("ContainerService.Status", job_id=job_id)
            executions = status["executions"]
            if status["status"] in FINAL and executions and all(e["state"] in FINAL for e in executions):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status['status']} after {timeout:.0f}s")
            time.sleep(interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("CMNODE_URL", "http://localhost:8080"))
    parser.add_argument("--token", default=os.environ.get("CMNODE_RPC_TOKEN"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="label the job (repeatable)")
    parser.add_argument("image", nargs="?", default="busybox")
    parser.add_argument("command", nargs="*", default=["echo", "hello from cmnode"])
    args = parser.parse_args()
    labels = dict(item.split("=", 1) for item in args.label if "=" in item)

    client = RpcClient(args.url, token=args.token)
    try:
        info = client.call("NodeService.Info")
        print(f"node {info['node_id']} at {args.url}: {info['peers']} peer(s), queue {info['queue']['depth']}")
        created = client.call("ContainerService.Create", image=args.image, arguments=args.command, labels=labels)
        job_id = created["job_id"]
        print(f"job {job_id}: {created['message']}")
        status = client.wait(job_id, timeout=args.timeout)
        print(f"job {job_id}: {status['status']}")
        for execution in status["executions"]:
            node = execution["node_id"]
            print(f"  node {node}: {execution['state']}, exit code {execution['exit_code']}", end="")
            print(f", error: {execution['error']}" if execution["error"] else "")
            logs = client.call("ContainerService.Logs", job_id=job_id, node_id=node, tail=20)
            for stream in ("stdout", "stderr"):
                for line in logs[stream].splitlines():
                    print(f"    {stream}: {line}")
    except RpcError as exc:
        print(f"client.py: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"client.py: {args.url}: {exc}", file=sys.stderr)
        return 2
    return 0 if status["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
