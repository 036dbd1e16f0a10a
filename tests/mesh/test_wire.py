"""The gossip envelopes (node/wire.py) and the store's change feed for catch-up, without a network."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from node.identity import Identity, load_or_create
from node.model import Execution, Job, JobSpec, State
from node.store import Store
from node.trust import sign_cancel, sign_execution
from node.wire import MAX_MESSAGE_BYTES, CancelMsg, ExecutionMsg, JobMsg, WireError, decode, encode


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    return load_or_create(tmp_path / "a")


def _job(identity: Identity, job_id: str = "j1") -> Job:
    job = Job(job_id=job_id, spec=JobSpec(image="busybox", arguments=("true",)), origin=identity.node_id,
              created_at=time.time())  # fmt: skip
    return replace(job, signature=identity.sign(job.canonical_bytes()))


def test_round_trips(identity: Identity) -> None:
    job = _job(identity)
    execution = sign_execution(identity, Execution(job_id="j1", node_id=identity.node_id, state=State.RUNNING,
                                                   version=3))  # fmt: skip
    cancel = sign_cancel(identity, "j1")
    assert decode(encode(JobMsg(job)), sender=identity.node_id) == JobMsg(job)
    assert decode(encode(ExecutionMsg(execution)), sender=identity.node_id) == ExecutionMsg(execution)
    assert decode(encode(CancelMsg(cancel)), sender="anyone") == CancelMsg(cancel)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe garbage", "malformed"),
        (b"[]", "malformed"),
        (b'{"type": 5}', "malformed"),
        (b'{"type": "job", "job": {"job_id": 1}}', "malformed"),
        (b'{"type": "execution", "execution": {"job_id": "x", "version": "1"}}', "malformed"),
        (b'{"type": "cancel", "job_id": 7}', "malformed"),
        (b'{"type": "cancel", "job_id": "j1"}', "malformed"),  # the unsigned form before signed cancels
        (b'{"type": "cancel", "cancel": {"job_id": "", "by": "x", "at": 1, "signature": ""}}', "malformed"),
        (b'{"type": "job", "job": "' + b"a" * MAX_MESSAGE_BYTES + b'"}', "oversized"),
    ],
)
def test_bad_envelopes_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode(data, sender=None)
    assert caught.value.reason == reason


def test_forged_origin_and_tampered_jobs_do_not_verify(identity: Identity, tmp_path: Path) -> None:
    other = load_or_create(tmp_path / "b")
    job = _job(identity)
    forged = replace(job, origin=other.node_id)  # claims another origin, keeps our signature
    tampered = replace(job, spec=JobSpec(image="evil"))
    for bad in (forged, tampered, replace(job, signature="not base64!")):
        with pytest.raises(WireError) as caught:
            decode(encode(JobMsg(bad)), sender=identity.node_id)
        assert caught.value.reason == "unverified"


def test_an_execution_must_come_from_its_node(identity: Identity) -> None:
    execution = sign_execution(identity, Execution(job_id="j1", node_id=identity.node_id))
    data = encode(ExecutionMsg(execution))
    with pytest.raises(WireError) as caught:
        decode(data, sender="12D3KooWSomebodyElse")
    assert caught.value.reason == "spoofed"
    assert decode(data, sender=None) == ExecutionMsg(execution)


def test_executions_and_cancels_must_be_signed_by_their_node(identity: Identity, tmp_path: Path) -> None:
    """Catch-up relays (sender None) once accepted any execution: now only the node it describes can sign it,
    and a cancel only verifies with the key of the node it names as ``by``."""
    other = load_or_create(tmp_path / "b")
    mine = Execution(job_id="j1", node_id=identity.node_id, state=State.RUNNING, version=9)
    forged = [
        ExecutionMsg(mine),  # unsigned
        ExecutionMsg(replace(sign_execution(other, replace(mine, node_id=other.node_id)), node_id=identity.node_id)),
        ExecutionMsg(replace(sign_execution(identity, mine), version=10)),  # tampered after signing
        CancelMsg(replace(sign_cancel(other, "j1"), by=identity.node_id)),  # claims another signer
        CancelMsg(replace(sign_cancel(identity, "j1"), job_id="j2")),
    ]
    for msg in forged:
        with pytest.raises(WireError) as caught:
            decode(encode(msg), sender=None)
        assert caught.value.reason == "unverified", msg


async def test_changes_since_pages_in_change_order(identity: Identity, tmp_path: Path) -> None:
    async with Store.open(tmp_path / "db") as store:
        for i in range(5):
            await store.add_job(_job(identity, f"j{i}"), Execution(job_id=f"j{i}", node_id="n"))
        await store.mark_cancelled("j1")  # a cancel is a change of its own
        seen_jobs: dict[str, bool] = {}
        seen_executions: set[str] = set()
        since, pages, more = 0, 0, True
        while more:
            page = await store.changes_since(since, limit=2)
            seen_jobs.update({job.job_id: cancelled for job, cancelled in page.jobs})
            seen_executions.update(e.job_id for e in page.executions)
            assert page.upto >= since
            since, more, pages = page.upto, page.more, pages + 1
        assert seen_jobs == {f"j{i}": i == 1 for i in range(5)}
        assert seen_executions == {f"j{i}" for i in range(5)}
        assert pages > 2
        assert since == page.head == store.head
        nothing = await store.changes_since(since)
        assert (nothing.jobs, nothing.executions, nothing.upto, nothing.more) == ([], [], since, False)
        # A newer version of an execution moves it past the watermark again; an older one does not.
        await store.put_execution(Execution(job_id="j3", node_id="n", state=State.COMPLETE, version=2))
        await store.put_execution(Execution(job_id="j3", node_id="n", version=1))
        later = await store.changes_since(since)
        assert [(e.job_id, e.version) for e in later.executions] == [("j3", 2)]
        assert later.upto > since
