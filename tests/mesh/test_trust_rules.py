"""The trust rules in milliseconds, with fakes and a real store: the swarm key file, what catch-up serves (this
node's executions signed, a cancelled job with its signed cancel) and what it accepts (nothing unsigned, nothing
signed by the wrong node, no bare ``cancelled`` flag)."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from node.errors import ConfigError
from node.identity import Identity, load_or_create
from node.model import Execution, State
from node.replica import cancel_key
from node.store import Store
from node.swarmkey import load_swarm_key, new_swarm_key, parse_swarm_key, write_swarm_key
from node.sync import Sync
from node.trust import Trust
from node.wire import parse_cancel, parse_execution

from .fakes import FakeInbound, signed_cancel, signed_execution, signed_job


def test_a_swarm_key_file_round_trips_and_bad_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "swarm.key"
    write_swarm_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_swarm_key(path)
    assert len(key) == 64 and int(key, 16) >= 0
    with pytest.raises(FileExistsError):
        write_swarm_key(path)  # never replaces a key
    text = new_swarm_key()
    hex_key = text.split()[-1]
    assert parse_swarm_key(text.replace(hex_key, hex_key.upper())) == hex_key  # hex digits in either case
    for bad in ("", "/key/swarm/psk/1.0.0/\n/base64/\n" + "a" * 64, "/key/swarm/psk/1.0.0/\n/base16/\n" + "g" * 64,
                "/key/swarm/psk/1.0.0/\n/base16/\n" + "a" * 62):  # fmt: skip
        (tmp_path / "bad").write_text(bad)
        with pytest.raises(ConfigError, match="invalid swarm-key"):
            load_swarm_key(tmp_path / "bad")
    with pytest.raises(ConfigError, match="invalid swarm-key"):
        load_swarm_key(tmp_path / "missing")


def test_trusted_peers_must_be_peer_ids(me: Identity, peer: Identity) -> None:
    with pytest.raises(ConfigError, match="invalid trusted-peer"):
        Trust.of(me.node_id, ["not-a-peer-id"])
    trust = Trust.of(me.node_id, [peer.node_id])
    assert trust.may_originate(me.node_id) and trust.may_originate(peer.node_id)
    assert not trust.may_originate("12D3KooWSomebodyElse")
    assert Trust.of(me.node_id).may_originate("12D3KooWSomebodyElse")  # no list: every member


async def test_catch_up_serves_own_executions_signed_and_cancels_with_their_signature(
    me: Identity, peer: Identity, store: Store
) -> None:
    job = signed_job(peer, "j1")
    await store.add_job(job, Execution(job_id="j1", node_id=me.node_id, state=State.RUNNING))  # stored unsigned
    await store.put_executions([signed_execution(peer, "j1", state=State.RUNNING)])
    cancel = signed_cancel(peer, "j1")
    await store.set_meta(cancel_key("j1"), json.dumps(cancel.to_json()))
    await store.mark_cancelled("j1")
    page = await Sync(store=store, inbound=FakeInbound(), identity=me).serve({"since": 0})
    executions = [parse_execution(e) for e in page["executions"]]  # raises unless each is signed by its node
    assert {e.node_id for e in executions} == {me.node_id, peer.node_id}
    assert [(e["cancelled"], parse_cancel(e["cancel"])) for e in page["jobs"]] == [(True, cancel)]


async def test_catch_up_accepts_no_forged_execution_and_no_bare_cancel(
    me: Identity, peer: Identity, store: Store, tmp_path: Path
) -> None:
    """Catch-up once stored any execution a peer's page held, and believed ``cancelled: true``."""
    invented = load_or_create(tmp_path / "invented")
    stuck = Execution(job_id="j1", node_id=invented.node_id, state=State.RUNNING, version=5)
    inbound = FakeInbound()
    sync = Sync(store=store, inbound=inbound, identity=me)
    page = {
        "jobs": [
            {"job": signed_job(peer, "bare").to_json(), "cancelled": True},
            {
                "job": signed_job(peer, "forged").to_json(),
                "cancelled": True,
                "cancel": replace(signed_cancel(me, "forged"), by=peer.node_id).to_json(),
            },
            {
                "job": signed_job(peer, "real").to_json(),
                "cancelled": True,
                "cancel": signed_cancel(peer, "real").to_json(),
            },
        ],
        "executions": [
            stuck.to_json(),  # unsigned
            replace(signed_execution(peer, "j1", state=State.RUNNING), node_id=invented.node_id).to_json(),
            signed_execution(peer, "j1", state=State.COMPLETE).to_json(),
        ],
        "upto": 3,
        "head": 3,
        "more": False,
    }
    cancels: dict[str, object] = {}
    on_job = inbound.on_job

    async def spy(job, *, cancel=None):  # type: ignore[no-untyped-def]
        cancels[job.job_id] = cancel
        return await on_job(job, cancel=cancel)

    inbound.on_job = spy  # type: ignore[method-assign]
    assert await sync.apply_page(page, 0) == (3, False)
    assert inbound.calls.count(("execution", "j1")) == 1  # only the genuine one
    assert cancels["bare"] is None and cancels["forged"] is None and cancels["real"] is not None
    assert sync.stats.dropped == {"unverified": 3}
