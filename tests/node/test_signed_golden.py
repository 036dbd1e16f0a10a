"""The exact bytes each signed record signs, pinned: a signature made by one version of cmnode must verify on
every other, so ``canonical_bytes`` may never change by accident (a refactor of the signing code included).

The key is made from a fixed seed and Ed25519 signatures are deterministic, so the signatures are pinned too;
each record also goes through its gossip envelope, which carries ``to_json`` (the signed fields plus the
signature) and is verified on the way back in."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from node.allocation import Allocation, sign_allocation
from node.identity import Identity, verify
from node.model import Cancel, Execution, Job, JobSpec, State
from node.noderecord import Allocated, Capacity, DrainOrder, NodeRecord, sign_drain, sign_record
from node.trust import sign_execution
from node.wire import AllocationMsg, CancelMsg, DrainMsg, Envelope, ExecutionMsg, JobMsg, NodeMsg, decode, encode

_KEYS = create_new_key_pair(bytes(range(32)))
ME = Identity(key_pair=_KEYS, peer_id=ID.from_pubkey(_KEYS.public_key))
OTHER = "12D3KooWEF1qsTuaA5WgAE4QgADY3i1uxaDUMb8BoGfhsVSunBS9"
AT = 1_700_000_000.25

Signed = Job | Execution | Cancel | NodeRecord | DrainOrder | Allocation


def _job() -> Job:
    spec = JobSpec.from_json({
        "image": "busybox:latest", "arguments": ["sh", "-c", "echo é"], "env": {"B": "2", "A": "1"},
        "labels": {"team": "x"}, "resources": {"cpus": 0.5, "memory": "256m"}, "ports": ["8080:80"],
        "volumes": ["data:/data:ro"], "timeout": 30, "retries": 2, "restart": "on-failure",
        "healthcheck": {"command": ["true"], "interval": 1}, "placement": {"replicas": 2, "selector": {"z": "a"}},
    })  # fmt: skip
    job = Job(job_id="j-1", spec=spec, origin=ME.node_id, created_at=AT)
    return Job(**{**job.__dict__, "signature": ME.sign(job.canonical_bytes())})


def _execution(health: str | None) -> Execution:
    history = ({"attempt": 1, "state": "failed", "exit_code": 1, "error": "boom", "container_id": "c1",
                "started_at": AT, "finished_at": AT + 1},)  # fmt: skip
    execution = Execution(
        job_id="j-1", node_id=ME.node_id, state=State.RUNNING, attempt=2, container_id="c2", exit_code=None,
        error=None, created_at=AT, updated_at=AT + 2, started_at=AT + 2, finished_at=None, history=history,
        version=7, health=health,
    )  # fmt: skip
    return sign_execution(ME, execution)


def _cancel() -> Cancel:
    cancel = Cancel(job_id="j-1", by=ME.node_id, at=AT)
    return Cancel(**{**cancel.__dict__, "signature": ME.sign(cancel.canonical_bytes())})


def _record() -> NodeRecord:
    record = NodeRecord(
        node_id=ME.node_id, name="n1", labels={"zone": "a", "disk": "ssd"}, capacity=Capacity(cpus=2.0, memory=2**30),
        allocated=Allocated(cpus=0.5, memory=2**28, jobs=1), running=1, queue_depth=0, docker_ok=True,
        version="0.5.0", addresses=("/ip4/127.0.0.1/tcp/4001",), rpc_url="http://127.0.0.1:8080", draining=False,
        heartbeat=2.0, seq=42, at=AT,
    )  # fmt: skip
    return sign_record(ME, record)


def _allocation() -> Allocation:
    allocation = Allocation(job_id="j-1", version=3, replicas=2, nodes=(ME.node_id, OTHER), by=OTHER, at=AT,
                            note="one node fewer: none fits")  # fmt: skip
    return sign_allocation(ME, allocation)


@functools.cache
def _records() -> dict[str, tuple[Signed, Envelope, str]]:
    """name -> (the record, its envelope, the node that signs it)."""
    job, cancel, record, allocation = _job(), _cancel(), _record(), _allocation()
    plain, healthy = _execution(None), _execution("healthy")
    drain = sign_drain(ME, OTHER, True, AT)
    return {
        "job": (job, JobMsg(job), job.origin),
        "execution": (plain, ExecutionMsg(plain), plain.node_id),
        "execution-health": (healthy, ExecutionMsg(healthy), healthy.node_id),
        "cancel": (cancel, CancelMsg(cancel), cancel.by),
        "node": (record, NodeMsg(record), record.node_id),
        "drain": (drain, DrainMsg(drain), drain.by),
        "allocation": (allocation, AllocationMsg(allocation), allocation.by),
    }


GOLDEN: dict[str, tuple[bytes, str]] = {
    "job": (
        b'{"created_at":1700000000.25,"job_id":"j-1","origin":"12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5'
        b'iHYdBfeSB","spec":{"arguments":["sh","-c","echo \xc3\xa9"],"env":{"A":"1","B":"2"},"healthcheck":{"com'
        b'mand":["true"],"interval":1.0},"image":"busybox:latest","labels":{"team":"x"},"placement":{"repl'
        b'icas":2,"selector":{"z":"a"}},"ports":["8080:80"],"resources":{"cpus":0.5,"memory":268435456},"r'
        b'estart":"on-failure","retries":2,"timeout":30.0,"volumes":["data:/data:ro"]}}',
        "ijUPo3hgRXw9pkqgmGljTvNuzOv5OVcdJ7p5c1UWUMBpz8sk+DojQIBnvMFlLq23L7F1GaXZToDBBeS28LVVCw==",
    ),
    "execution": (
        b'{"attempt":2,"container_id":"c2","created_at":1700000000.25,"error":null,"exit_code":null,"finis'
        b'hed_at":null,"history":[{"attempt":1,"container_id":"c1","error":"boom","exit_code":1,"finished_'
        b'at":1700000001.25,"started_at":1700000000.25,"state":"failed"}],"job_id":"j-1","node_id":"12D3Ko'
        b'oWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","started_at":1700000002.25,"state":"running","up'
        b'dated_at":1700000002.25,"version":7}',
        "CPYogPHro1YhClaHw9xCFEBAvLZjnwlFOtbKw/3O29FmGtNQtKW9r34niMUi9nmAQltI11xLrwkWc3W0XtzdAA==",
    ),
    "execution-health": (
        b'{"attempt":2,"container_id":"c2","created_at":1700000000.25,"error":null,"exit_code":null,"finis'
        b'hed_at":null,"health":"healthy","history":[{"attempt":1,"container_id":"c1","error":"boom","exit'
        b'_code":1,"finished_at":1700000001.25,"started_at":1700000000.25,"state":"failed"}],"job_id":"j-1'
        b'","node_id":"12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","started_at":1700000002.25,"s'
        b'tate":"running","updated_at":1700000002.25,"version":7}',
        "/0OaeWlwPA1u9VfI624TG2ZLYN2YbTciuxq3GeaIwWoGld81IIa9NldmlidHjIgtWUz1L5STNHRaV04lif4vCA==",
    ),
    "cancel": (
        b'{"at":1700000000.25,"by":"12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","job_id":"j-1"}',
        "cIT4BrJ2cbMQnsAAzzqARb+q7/VjJzwuA4Hiv1DYgyGNEKTyut+/eI95iQ8x1XyJ5auOIYCriyCU/gMOMH1ODw==",
    ),
    "node": (
        b'{"addresses":["/ip4/127.0.0.1/tcp/4001"],"allocated":{"cpus":0.5,"jobs":1,"memory":268435456},"a'
        b't":1700000000.25,"capacity":{"cpus":2.0,"memory":1073741824},"docker_ok":true,"draining":false,"'
        b'heartbeat":2.0,"labels":{"disk":"ssd","zone":"a"},"name":"n1","node_id":"12D3KooWA4Xop1JaT3MHxwY'
        b'MkCepYsv4iPVopMXwCz5iHYdBfeSB","queue_depth":0,"rpc_url":"http://127.0.0.1:8080","running":1,"se'
        b'q":42,"version":"0.5.0"}',
        "tKvU70M5HyrDke4QEOwa1Vs9Ix9trfLtPijqCQT6Dr37NU8adA7X4azAyLa8C2E95tOLGQ7dTA1XLeNd1CuvDA==",
    ),
    "drain": (
        b'{"at":1700000000.25,"by":"12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","draining":true,'
        b'"node_id":"12D3KooWEF1qsTuaA5WgAE4QgADY3i1uxaDUMb8BoGfhsVSunBS9"}',
        "MyZOb/+KBUgUrpbvydqWgHoC8GsXQYofA0lLLJ6L9If6sLloHd1P66+RmT7StgSZKYOeIgxpPHs01Nu14p9UDA==",
    ),
    "allocation": (
        b'{"at":1700000000.25,"by":"12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","job_id":"j-1","'
        b'nodes":["12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB","12D3KooWEF1qsTuaA5WgAE4QgADY3i1u'
        b'xaDUMb8BoGfhsVSunBS9"],"note":"one node fewer: none fits","replicas":2,"version":3}',
        "zYOjFepgWJ0P9dllVun+CqUdK+CJZpdyHorn+5Npam1f3tvk3FlSVtC8YzAhtE/Jyb+xtKqcOma4GEJKrlwSCA==",
    ),
}
"""name -> (its ``canonical_bytes()``, its signature by ``ME``), as main at ca333aa made them."""


@pytest.mark.parametrize("name", list(GOLDEN))
def test_canonical_bytes_and_signature_are_pinned(name: str) -> None:
    record, _, signer = _records()[name]
    canonical, signature = GOLDEN[name]
    assert record.signer == signer
    assert record.canonical_bytes() == canonical
    assert record.signature == signature
    assert verify(signer, canonical, signature)


@pytest.mark.parametrize("name", list(GOLDEN))
def test_envelope_carries_the_signed_fields_and_verifies(name: str) -> None:
    _, envelope, signer = _records()[name]
    canonical, signature = GOLDEN[name]
    body: dict[str, Any] = json.loads(encode(envelope))
    kind = body["type"]
    assert body == {"type": kind, kind: {**json.loads(canonical), "signature": signature}}
    assert decode(encode(envelope), sender=signer) == envelope


def test_execution_without_signature_leaves_it_out() -> None:
    """An execution not signed yet (this node's own rows) has no ``signature`` key at all."""
    record, _, _ = _records()["execution"]
    unsigned = Execution(**{**record.__dict__, "signature": ""})
    assert "signature" not in unsigned.to_json()
    assert unsigned.canonical_bytes() == GOLDEN["execution"][0]


def test_a_node_signs_only_records_that_name_it() -> None:
    """Peers verify a record against the node it names, so signing one that names another node is a bug."""
    with pytest.raises(AssertionError):
        Cancel(job_id="j-1", by=OTHER, at=AT).signed_by(ME)
    assert Cancel(job_id="j-1", by=ME.node_id, at=AT).signed_by(ME).signature == GOLDEN["cancel"][1]
