"""Fuzz benchmark: generated hostile gossip and JSON-RPC against one live ``cmnode run`` process.

    .venv/bin/python -m benchmarks.fuzz [--gossip 10000] [--rpc 10000] [--seed 1] [--timeout 600]

Gossip: a rogue py-libp2p peer (``tests/mesh/rogue_peer.py fuzz``) connects to the node and publishes the
messages: valid envelopes bent with hostile values (2^63, Infinity, lone surrogates, huge strings, missing and
extra fields), issue 9's findings, and random bytes. RPC: the same bending applied to valid requests of every
method, POSTed over HTTP on loopback. mDNS is off and everything stays on 127.0.0.1.

Prints, for each side, how many messages were dropped (refused for a foreseen reason), answered (applied, or a
well-formed JSON-RPC answer) and crashed (an unforeseen exception: gossip counted under ``error``, an RPC answer
-32603 or HTTP 5xx, or the node gone). Target: 0 crashed. Each phase ends within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import LoggedNode, call
from tests.hostile.hostile import VALID_PARAMS
from tests.mesh.rogue_peer import INFINITY, NOWHERE, mutate

SPEC = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
VALID: dict[str, Any] = {**VALID_PARAMS, "ContainerService.Create": SPEC}  # a job no node can run


class Node(LoggedNode):
    """One ``cmnode run`` process on loopback, mDNS off, logging to a file."""

    def __init__(self, data: Path) -> None:
        super().__init__(data, queue_size=100_000)


def _body(rng: random.Random) -> bytes:
    method = rng.choice([*VALID, "Nope.Nothing"])
    params: Any = VALID.get(method, {})
    if rng.random() < 0.7:
        params = mutate(rng, params)
    request: Any = {"jsonrpc": "2.0", "method": method, "params": [params] if rng.random() < 0.5 else params,
                    "id": rng.choice([1, "a", None, 1.5, 2**63, INFINITY])}  # fmt: skip
    if rng.random() < 0.2:
        request = mutate(rng, request)
    if rng.random() < 0.05:
        request = [request, mutate(rng, request)]
    text = json.dumps(request, separators=(",", ":"))
    return text.replace(f'"{INFINITY}"', rng.choice(["Infinity", "NaN", "1e400"])).encode()


def fuzz_rpc(node: Node, count: int, seed: int, timeout: float) -> Counter[str]:
    """POST ``count`` generated bodies; classify each answer."""
    rng = random.Random(seed)
    outcome: Counter[str] = Counter()
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as http:
        for _ in range(count):
            if time.monotonic() > deadline:
                outcome["not sent (timeout)"] += 1
                continue
            try:
                response = http.post(node.url, content=_body(rng), headers={"Content-Type": "application/json"})
            except httpx.HTTPError:
                outcome["crashed"] += 1
                continue
            outcome[_classify(response)] += 1
    return outcome


def _classify(response: httpx.Response) -> str:
    if response.status_code >= 500:
        return "crashed"
    if response.status_code == 204:
        return "answered"
    try:
        answer = json.loads(response.text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except ValueError:
        return "crashed"  # not strict JSON: a client cannot read it
    answers = answer if isinstance(answer, list) else [answer]
    codes = [a.get("error", {}).get("code") for a in answers if isinstance(a, dict)]
    if -32603 in codes:
        return "crashed"
    return "dropped" if codes and all(c in (-32700, -32600, -32601, -32602) for c in codes) else "answered"


def fuzz_gossip(node: Node, count: int, seed: int, timeout: float) -> tuple[Counter[str], float]:
    """Have the rogue peer publish ``count`` generated messages; classify what the node did with them."""
    with httpx.Client(timeout=30) as http:
        address = call(http, node.url, "NodeService.Info")["addresses"][0]
        command = [sys.executable, "-m", "tests.mesh.rogue_peer", "fuzz", str(count), str(seed), address]
        rogue_log = node.log.with_name("rogue.log")
        with rogue_log.open("w") as errors:
            rogue = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert rogue.stdout is not None
            line = rogue.stdout.readline()  # "sent N SECONDS"
            if not line.startswith("sent"):
                tail = [x for x in rogue_log.read_text().splitlines() if "fail to deliver" not in x][-15:]
                raise SystemExit("the rogue peer failed:\n" + "\n".join(tail))
            sent, seconds = int(line.split()[1]), float(line.split()[2])
            deadline = time.monotonic() + timeout
            mesh: dict[str, Any] = {}
            while time.monotonic() < deadline and node.alive:
                mesh = call(http, node.url, "NodeService.Info")["mesh"]
                if mesh["messages_in"] + mesh["dropped_total"] >= sent:
                    break
                time.sleep(0.5)
        finally:
            rogue.kill()
            rogue.wait()
    dropped = dict(mesh.get("dropped", {}))
    crashed = dropped.pop("error", 0)
    outcome = Counter({"dropped": sum(dropped.values()), "answered": mesh.get("messages_in", 0), "crashed": crashed})
    for reason, n in sorted(dropped.items()):
        outcome[f"  dropped: {reason}"] = n
    outcome["not sent (connection refused)"] = count - sent
    outcome["not seen (lost or timeout)"] = max(0, sent - outcome["dropped"] - outcome["answered"] - crashed)
    return outcome, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gossip", type=int, default=10_000, help="gossip messages to send")
    parser.add_argument("--rpc", type=int, default=10_000, help="RPC requests to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600, help="seconds each phase may take at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp))
        try:
            started = time.monotonic()
            gossip, published = fuzz_gossip(node, args.gossip, args.seed, args.timeout)
            gossip_seconds = time.monotonic() - started
            started = time.monotonic()
            rpc = fuzz_rpc(node, args.rpc, args.seed, args.timeout) if node.alive else Counter({"crashed": args.rpc})
            rpc_seconds = time.monotonic() - started
            alive = node.alive
        finally:
            node.stop()
        tracebacks = node.log.read_text().count("Traceback")
        for log in (node.log, node.log.with_name("rogue.log")):  # the evidence outlives the temporary directory
            kept = Path(tempfile.gettempdir()) / f"cmnode-fuzz-{os.getpid()}-{log.name}"
            kept.write_text(log.read_text() if log.exists() else "")
            print(f"kept {kept}")
        warnings = [x for x in node.log.read_text().splitlines() if "level=warning" in x or "level=error" in x]
    print(f"gossip: {args.gossip} messages, published in {published:.1f} s, handled in {gossip_seconds:.1f} s")
    for key in ("dropped", "answered", "crashed"):
        print(f"  {key:<28} {gossip[key]}")
    for key, n in gossip.items():
        if key.startswith("  ") or key.startswith("not"):
            print(f"  {key:<28} {n}")
    print(f"rpc: {args.rpc} requests over HTTP in {rpc_seconds:.1f} s")
    for key in ("dropped", "answered", "crashed", "not sent (timeout)"):
        if key in rpc or key != "not sent (timeout)":
            print(f"  {key:<28} {rpc[key]}")
    crashed = gossip["crashed"] + rpc["crashed"] + (0 if alive else 1)
    print(f"node alive at the end: {alive}; tracebacks in its log: {tracebacks}; warnings: {len(warnings)}")
    for line in warnings[-3:]:
        print(f"  {line[:200]}")
    print(f"crashed in total: {crashed} (target 0)")
    sys.exit(0 if crashed == 0 else 1)


if __name__ == "__main__":
    main()
