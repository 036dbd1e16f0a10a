"""What the hostile-input tests share: values a peer or a client may send, envelopes bent out of shape with
them, a node on a real store to send them to, and the read-back that proves nothing unvalidated was stored.

Values are written as JSON *text*, not Python values, because the dangerous ones only exist as text: ``NaN``,
``Infinity`` and ``1e400`` (which Python's parser turns into non-finite floats), ``"\\ud800"`` (a lone surrogate,
which parses but cannot be encoded back as UTF-8), integers beyond 64 bits, and nesting deeper than the parser's
recursion limit. ``Raw`` marks text emitted as it is; ``dumps`` writes everything else with ``json.dumps``,
whose ``ensure_ascii`` writes lone surrogates as ``\\ud800`` escapes.
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.core import Node
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.identity import Identity, verify
from node.jobqueue import JobQueue
from node.model import Cancel, Execution, Job, JobSpec, Placement, State
from node.store import Store
from node.trust import sign_cancel, sign_execution
from tests.support import base_config

EXAMPLES = 200 if os.environ.get("CMNODE_REQUIRE_ALL") == "1" else 15
"""The fast path tries a few examples per property; the full run (scripts/test sets CMNODE_REQUIRE_ALL) many."""
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def identity() -> Identity:
    key_pair = create_new_key_pair()
    return Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))


ME = identity()
"""The node under test."""
PEER = identity()
"""The hostile peer: it signs what it sends, so its messages get past the signature check."""
OTHER = identity()
"""Another member, whose executions a sync page may carry."""


# -- hostile values, as JSON text ---------------------------------------------------------------------------------


class Raw(str):
    """JSON text written out as it is."""


def dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


BIG_INTS = [2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 10**20, -(10**20), 10**300, 2**53 + 1, -1, 0]
LITERALS = [Raw(t) for t in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0.0", "1E+308")]
STRINGS = [
    "\ud800",
    "a\udfff",
    "\udc00busybox",
    "busybox\n",
    "busybox:latest\n",
    "\x00",
    "",
    " ",
    "cmnode.node_id",
    "../../etc/passwd",
    "\u202e" * 10,
]
_KEYS = st.sampled_from(["", "\ud800", "image", "job_id", "version", "type", "cmnode.x", "A\n"]) | st.text(max_size=8)

scalars = st.one_of(
    st.sampled_from(BIG_INTS),
    st.integers(),
    st.sampled_from(LITERALS),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from(STRINGS),
    st.integers(min_value=60_000, max_value=1_100_000).map(lambda n: "x" * n),  # over every maxLength
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),  # surrogates included
    st.integers(min_value=400, max_value=3000).map(nested),  # deeper than the parser's recursion limit
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=8,
)
"""Any value a peer may write, hostile or not."""


# -- valid envelopes, then bent -----------------------------------------------------------------------------------


def signed(job: Job, signer: Identity = PEER) -> Job:
    return replace(job, signature=signer.sign(job.canonical_bytes()))


def good_job(job_id: str, *, run_here: bool = True, origin: Identity = PEER) -> Job:
    nodes = (ME.node_id,) if run_here else ("12D3KooWNowhere",)
    spec = JobSpec(
        image="busybox:1.36",
        arguments=("echo", "hi"),
        env={"A": "1"},
        labels={"team": "x"},
        placement=Placement(mode="nodes", nodes=nodes),
    )
    return signed(Job(job_id=job_id, spec=spec, origin=origin.node_id, created_at=time.time()), origin)


def good_execution(job_id: str, node: Identity = PEER, version: int = 2) -> Execution:
    """An execution of ``job_id`` on ``node``, signed by it as the wire requires."""
    now = time.time()
    execution = Execution(job_id=job_id, node_id=node.node_id, state=State.RUNNING, created_at=now,
                          updated_at=now, started_at=now, version=version)  # fmt: skip
    return sign_execution(node, execution)


def good_cancel(job_id: str, by: Identity = PEER) -> Cancel:
    return sign_cancel(by, job_id)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def bent(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one to three fields replaced by hostile values, removed, or joined by an unknown one."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        kind = draw(st.sampled_from(["set", "set", "set", "delete", "extra"]))
        target = doc
        for step in path[:-1]:
            target = target[step]
        if kind == "delete" and path and isinstance(target, dict):
            del target[path[-1]]
        elif kind == "extra" and isinstance(_get(doc, path), dict):
            _get(doc, path)[draw(_KEYS)] = draw(values)
        else:
            doc = _set(doc, path, draw(values))
    return doc


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def resign(data: Any, kind: type[Job | Execution | Cancel] = Job, signer: Identity = PEER) -> Any:
    """A bent job, execution or cancel re-signed by ``signer`` when it still parses, so that the values the
    schema admits get past the signature check and reach the store."""
    if not isinstance(data, dict):
        return data
    try:
        value = kind.from_json(data)
    except Exception:
        return data
    return {**data, "signature": signer.sign(value.canonical_bytes())}


# -- a node on a real store ---------------------------------------------------------------------------------------


@dataclass
class Harness:
    node: Node
    store: Store
    path: Path


@asynccontextmanager
async def node_on_store(tmp_path: Path, *, run_executor: bool = False) -> AsyncIterator[Harness]:
    """A real ``Node`` on a real store (a fresh file per example) and an executor on ``FakeRuntime``."""
    path = tmp_path / f"{time.monotonic_ns()}.sqlite"
    async with Store.open(path, durable=False) as store:
        executor = Executor(node_id=ME.node_id, store=store, runtime=FakeRuntime(node_id=ME.node_id),
                            queue=JobQueue(1000), worker_count=2)  # fmt: skip
        node = Node(config=base_config(tmp_path), identity=ME, store=store, executor=executor)
        if not run_executor:
            yield Harness(node, store, path)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            yield Harness(node, store, path)
            nursery.cancel_scope.cancel()


STRICT = json.JSONEncoder(allow_nan=False)


def stored_rows(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every job and execution row as SQLite holds it (read from the file, not through the store's code)."""
    conn = sqlite3.connect(str(path))
    try:
        jobs = conn.execute("SELECT job_id, origin, created_at, status, cancelled, body FROM jobs").fetchall()
        execs = conn.execute("SELECT job_id, node_id, state, version, body FROM executions").fetchall()
    finally:
        conn.close()
    return jobs, execs


async def assert_store_valid(h: Harness) -> int:
    """Every row re-validates with the model's schemas and matches its columns; every job is signed by its
    origin; what the node answers about them encodes as strict JSON. Returns how many jobs are stored."""
    jobs, execs = stored_rows(h.path)
    for job_id, origin, created_at, status, cancelled, body in jobs:
        job = Job.from_json(json.loads(body))
        assert (job.job_id, job.origin, job.created_at) == (job_id, origin, created_at)
        assert verify(job.origin, job.canonical_bytes(), job.signature), job_id
        assert status in {s.value for s in State} and cancelled in (0, 1)
        STRICT.encode(await h.node.status(job_id))
    for job_id, node_id, state, version, body in execs:
        execution = Execution.from_json(json.loads(body))
        assert (execution.job_id, execution.node_id, execution.state.value, execution.version) == (
            job_id, node_id, state, version
        )  # fmt: skip
    STRICT.encode(await h.node.list_jobs(status=None, labels={}, limit=1000, cursor=None))
    changes = await h.store.changes_since(0, limit=10_000)
    STRICT.encode([j.to_json() for j, _ in changes.jobs] + [e.to_json() for e in changes.executions])
    return len(jobs)


VALID_PARAMS: dict[str, Any] = {
    "ContainerService.Create": {"image": "busybox:1.36", "arguments": ["echo", "hi"], "env": {"A": "1"}},
    "ContainerService.Status": {"job_id": "j1"},
    "ContainerService.List": {"limit": 10, "status": "running", "labels": {"a": "b"}, "cursor": "1.5:3"},
    "ContainerService.Logs": {"job_id": "j1", "tail": 10},
    "ContainerService.Stop": {"job_id": "j1"},
    "NodeService.Info": {},
    "NodeService.Peers": {},
    "rpc.discover": {},
}
"""A valid params object per method, the starting point of the bent ones."""
