"""The node registry, fast: node records and drain orders on the wire, the registry's rules (highest seq, down
after 3 unheard heartbeats, drain orders, names), its persistence, catch-up of records, the heartbeat, and the
Status view of a down node's executions. Trio's mock clock stands in for time; no process, no libp2p host."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from node import wire
from node.config import Config
from node.core import Node
from node.errors import NotFoundError, ValidationError
from node.executor import Executor
from node.fake_runtime import FakeRuntime
from node.gossip import Gossip
from node.heartbeat import ADDRESSES_EVERY, Addresses, Heartbeat, Vitals
from node.identity import Identity, load_or_create, verify
from node.jobqueue import JobQueue
from node.link import MeshLink
from node.model import State
from node.noderecord import Allocated, Capacity, DrainOrder, NodeRecord, parse_labels, sign_drain, sign_record
from node.nodeview import NodeState
from node.registry import META_KEY, Registry
from node.store import Store
from node.sync import Sync
from node.trust import Refused
from node.wire import DrainMsg, NodeMsg, WireError, decode, encode, parse_drain, parse_node_record

from .fakes import FakeInbound, receive, signed_execution, signed_job


def record_of(node: Identity, seq: int = 1, **fields: Any) -> NodeRecord:
    base = NodeRecord(node_id=node.node_id, name=fields.pop("name", "n-" + node.node_id[-4:]), seq=seq,
                      at=time.time(), heartbeat=fields.pop("heartbeat", 1.0), **fields)  # fmt: skip
    return sign_record(node, base)


def registry_of(me: Identity, **kwargs: Any) -> Registry:
    return Registry(node_id=me.node_id, name="me", heartbeat=1.0, **kwargs)


# -- the wire -------------------------------------------------------------------------------------


def test_record_round_trips_signed_and_checked(me: Identity, peer: Identity) -> None:
    record = record_of(
        peer, seq=7, labels={"zone": "a"}, capacity=Capacity(cpus=4.0, memory=8 << 30),
        allocated=Allocated(cpus=0.5, memory=1 << 20, jobs=1), running=2, queue_depth=1,
        addresses=("/ip4/127.0.0.1/tcp/4001/p2p/" + peer.node_id,), rpc_url="http://127.0.0.1:8080", draining=True,
    )  # fmt: skip
    decoded = decode(encode(NodeMsg(record)), sender=peer.node_id)
    assert decoded == NodeMsg(record)
    assert NodeRecord.from_json(json.loads(json.dumps(record.to_json()))) == record

    forged = replace(record, running=0)  # changed after signing
    with pytest.raises(WireError, match="not signed") as exc:  # relayed (catch-up): its own signature is checked
        parse_node_record(forged.to_json())
    assert exc.value.reason == "unverified"
    with pytest.raises(WireError) as exc:  # a record of another node, published by me
        decode(encode(NodeMsg(record)), sender=me.node_id)
    assert exc.value.reason == "spoofed"
    for bad in ({"labels": {"cmnode.x": "1"}}, {"name": "no spaces"}, {"seq": 0}, {"extra": 1}, {"heartbeat": 0}):
        body = {**record.to_json(), **bad}
        with pytest.raises(WireError) as exc:
            decode(json.dumps({"type": "node", "node": body}).encode(), sender=peer.node_id)
        assert exc.value.reason == "malformed", bad


def test_gossip_checks_a_record_signature_once(me: Identity, peer: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    """On gossip, pubsub has verified the message's signature by its ``from`` before ``decode`` (strict signing):
    a record or drain order of that same node is not verified a second time. Relayed (catch-up), it is."""
    import node.wire

    calls: list[str] = []

    def counting(origin: str, data: bytes, signature: str) -> bool:
        calls.append(origin)
        return verify(origin, data, signature)

    monkeypatch.setattr(node.wire, "verify", counting)
    record, order = record_of(peer, seq=3), sign_drain(peer, peer.node_id, True, time.time())
    assert decode(encode(NodeMsg(record)), sender=peer.node_id) == NodeMsg(record)
    assert decode(encode(DrainMsg(order)), sender=peer.node_id) == DrainMsg(order)
    assert calls == []
    forged = replace(record, running=5)  # only its own node can have sent it: pubsub's signature says so
    assert decode(encode(NodeMsg(forged)), sender=peer.node_id) == NodeMsg(forged)
    assert calls == []
    with pytest.raises(WireError) as exc:  # still: a record of another node is refused before any signature
        decode(encode(NodeMsg(record)), sender=me.node_id)
    assert exc.value.reason == "spoofed"
    assert parse_node_record(record.to_json()) == record  # relayed: verified
    assert parse_drain(order.to_json()) == order
    assert calls == [peer.node_id, peer.node_id]
    with pytest.raises(WireError) as exc:
        parse_node_record(forged.to_json())
    assert exc.value.reason == "unverified"


def test_drain_order_round_trips_signed_and_checked(me: Identity, peer: Identity) -> None:
    order = sign_drain(me, peer.node_id, True, time.time())
    assert decode(encode(DrainMsg(order)), sender=me.node_id) == DrainMsg(order)
    with pytest.raises(WireError) as exc:
        decode(encode(DrainMsg(order)), sender=peer.node_id)
    assert exc.value.reason == "spoofed"
    with pytest.raises(WireError) as exc:  # relayed: its signature is checked
        parse_drain(replace(order, draining=False).to_json())
    assert exc.value.reason == "unverified"


# -- the registry's rules ----------------------------------------------------------------------------


async def test_highest_seq_wins(me: Identity, peer: Identity) -> None:
    registry = registry_of(me)
    assert registry.on_record(record_of(peer, seq=5, name="five"))
    assert not registry.on_record(record_of(peer, seq=3, name="three"))
    assert not registry.on_record(record_of(peer, seq=5, name="again"))
    assert registry.get(peer.node_id).name == "five"  # type: ignore[union-attr]
    assert registry.on_record(record_of(peer, seq=6, name="six"))
    assert registry.get(peer.node_id).name == "six"  # type: ignore[union-attr]


async def test_own_seq_stays_above_every_earlier_record_of_this_node(me: Identity, peer: Identity) -> None:
    registry = registry_of(me)
    ahead = int(time.time() * 1000) + 10_000_000  # a record from before a restart, on a clock that ran ahead
    assert not registry.on_record(record_of(me, seq=ahead))  # a peer's copy of our own: not kept as a peer
    assert registry.next_seq() == ahead + 1
    assert [n.node_id for n in registry.nodes()] == [me.node_id]


async def test_down_after_three_unheard_heartbeats(
    me: Identity, peer: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(peer, seq=1, heartbeat=1.0))
    await trio.sleep(2.9)
    assert registry.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]
    await trio.sleep(0.2)
    info = registry.get(peer.node_id)
    # down_for counts from the last record, so --reschedule-after is measured from when it fell silent
    assert info is not None and info.state is NodeState.DOWN and 3.0 < info.down_for < 3.2
    await trio.sleep(10)
    assert registry.get(peer.node_id).down_for == pytest.approx(13.1)  # type: ignore[union-attr]
    assert registry.get(me.node_id).state is NodeState.READY  # type: ignore[union-attr]  # never down
    registry.on_record(record_of(peer, seq=2))
    assert registry.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]
    # a record that a peer heard long ago (catch-up) is down at once: a dead node does not come alive
    registry.on_record(record_of(peer, seq=3), age=10.0)
    assert registry.get(peer.node_id).state is NodeState.DOWN  # type: ignore[union-attr]


async def test_up_counts_what_nodes_says_and_the_gate_follows_new_records(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    """``up`` (read every few seconds instead of ``nodes()``) counts the nodes not DOWN, this one included, and
    the gate's cached list of nodes of older versions is made again when a record changes."""
    registry = registry_of(me)

    def counted() -> int:
        return sum(1 for info in registry.nodes() if info.state is not NodeState.DOWN)

    assert registry.up() == counted() == 1  # this node alone, before its first record
    registry.on_record(record_of(peer, seq=1, heartbeat=1.0, version="0.1.0"))
    registry.on_record(record_of(stranger, seq=1, heartbeat=10.0, version="0.2.0"))
    assert registry.up() == counted() == 3 and not registry.gate()  # an older node up
    await trio.sleep(3.1)  # the older node falls silent
    assert registry.up() == counted() == 2 and registry.gate()
    registry.on_record(record_of(peer, seq=2, heartbeat=1.0, version="0.1.0"))  # back, still older
    assert registry.up() == counted() == 3 and not registry.gate()
    registry.on_record(record_of(peer, seq=3, heartbeat=1.0, version="0.2.0"))  # upgraded
    assert registry.gate()
    registry.on_drain(sign_drain(me, me.node_id, True, time.time()))  # draining is up
    assert registry.up() == counted() == 3


async def test_draining_follows_the_latest_order(me: Identity, peer: Identity, stranger: Identity) -> None:
    registry = registry_of(me, may_order=lambda by: by == me.node_id)
    registry.on_record(record_of(peer))
    now = time.time()
    assert registry.on_drain(sign_drain(me, peer.node_id, True, now))
    assert registry.get(peer.node_id).state is NodeState.DRAINING  # type: ignore[union-attr]
    assert not registry.on_drain(sign_drain(me, peer.node_id, False, now - 1))  # older: ignored
    assert registry.get(peer.node_id).state is NodeState.DRAINING  # type: ignore[union-attr]
    assert registry.on_drain(sign_drain(peer, peer.node_id, False, now + 1))  # a node may undrain itself
    assert registry.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]
    with pytest.raises(Refused):  # nobody trusts the stranger to drain others
        registry.on_drain(sign_drain(stranger, peer.node_id, True, now + 2))
    assert registry.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]
    # without any order, the node's own record says
    registry.on_record(record_of(stranger, draining=True))
    assert registry.get(stranger.node_id).state is NodeState.DRAINING  # type: ignore[union-attr]


async def test_heartbeat_reflects_a_drain_of_this_node_at_once(
    me: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    registry = registry_of(me)
    sent: list[NodeRecord] = []

    async def publish(record: NodeRecord) -> None:
        sent.append(record)

    async def engine() -> tuple[float | None, int | None]:
        return 8.0, 16 << 30

    beat = Heartbeat(identity=me, registry=registry, publish=publish, vitals=lambda: Vitals(running=3),
                     capacity=engine, interval=60.0, name="me", labels={"zone": "a"}, memory=1 << 30)  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        assert len(sent) == 1 and not sent[0].draining and sent[0].running == 3
        start = trio.current_time()
        registry.on_drain(sign_drain(me, me.node_id, True, time.time()))
        with trio.fail_after(5):
            while len(sent) < 2:
                await trio.sleep(0.01)
        assert trio.current_time() - start < 1  # not a whole interval later
        assert sent[1].draining and sent[1].seq > sent[0].seq
        assert sent[1].capacity == Capacity(cpus=8.0, memory=1 << 30)  # the engine's CPUs, the override's memory
        assert registry.get(me.node_id).state is NodeState.DRAINING  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()


async def test_heartbeat_reads_its_own_addresses_at_most_every_ten_seconds(
    me: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    """The vitals are read at every tick (2 s); the listen addresses in them only every ADDRESSES_EVERY, so a
    new address reaches the record up to that much later (none read yet: asked again at once)."""
    registry = registry_of(me)
    listening: list[str] = []
    reads = 0

    def read() -> list[str]:
        nonlocal reads
        reads += 1
        return list(listening)

    sent: list[NodeRecord] = []

    async def publish(record: NodeRecord) -> None:
        sent.append(record)

    addresses = Addresses(read)
    beat = Heartbeat(identity=me, registry=registry, publish=publish, vitals=lambda: Vitals(addresses=addresses()),
                     interval=2.0, name="me")  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(beat.run)
        listening.append("/ip4/127.0.0.1/tcp/4001/p2p/" + me.node_id)
        await trio.sleep(2.5)  # not listening at the first beat: read again at the next tick
        assert sent[-1].addresses == tuple(listening) and reads == 2
        listening[0] = "/ip4/127.0.0.1/tcp/4002/p2p/" + me.node_id
        await trio.sleep(ADDRESSES_EVERY - 1)
        assert reads == 2 and sent[-1].addresses != tuple(listening)  # four ticks, no read
        await trio.sleep(2.0)
        assert reads == 3 and sent[-1].addresses == tuple(listening)  # the next read: a changed record goes out
        nursery.cancel_scope.cancel()


async def test_names_and_prefixes_resolve(me: Identity, peer: Identity, stranger: Identity) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(peer, name="web"))
    registry.on_record(record_of(stranger, name="web"))
    assert registry.resolve(peer.node_id) == peer.node_id
    assert registry.resolve("me") == me.node_id
    assert registry.resolve(me.node_id[:20]) == me.node_id
    with pytest.raises(ValidationError, match="ambiguous: 2 nodes named 'web'") as exc:
        registry.resolve("web")
    assert exc.value.code == -32602
    with pytest.raises(ValidationError, match="ambiguous"):
        registry.resolve("12D3KooW")  # every Ed25519 peer ID starts so
    with pytest.raises(ValidationError, match="unknown node 'nobody'"):
        registry.resolve("nobody")
    assert registry.resolve("nobody", strict=False) == "nobody"


# -- on disk ---------------------------------------------------------------------------------------


class MetaStore:
    """The store's meta table, in memory, counting writes."""

    def __init__(self) -> None:
        self.meta: dict[str, str] = {}
        self.writes = 0

    async def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self.meta[key] = value
        self.writes += 1


async def test_stored_when_first_seen_or_changed_not_on_every_heartbeat(
    me: Identity, peer: Identity, stranger: Identity, autojump_clock: trio.testing.MockClock
) -> None:
    store = MetaStore()
    registry = registry_of(me)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(registry.keep, store)
        registry.on_record(record_of(peer, seq=1))
        registry.on_record(record_of(stranger, seq=1))
        await trio.sleep(5)
        assert store.writes == 1  # two first-seen nodes, one write
        for seq in range(2, 30):  # heartbeats: load changes, nothing worth keeping
            registry.on_record(record_of(peer, seq=seq, running=seq))
            await trio.sleep(1)
        assert store.writes == 1
        registry.on_record(record_of(peer, seq=31, labels={"zone": "b"}))
        registry.on_drain(sign_drain(me, stranger.node_id, True, time.time()))
        await trio.sleep(5)
        assert store.writes == 2
        nursery.cancel_scope.cancel()
    stored = json.loads(store.meta[META_KEY])
    assert {n["node_id"] for n in stored["nodes"]} == {peer.node_id, stranger.node_id}

    again = registry_of(me)  # a restart: every node known, down until heard, the drain order kept
    assert await again.load(store) == 2  # type: ignore[arg-type]
    assert {n.node_id: n.state for n in again.nodes()} == {
        me.node_id: NodeState.READY, peer.node_id: NodeState.DOWN, stranger.node_id: NodeState.DOWN,
    }  # fmt: skip
    assert again.get(peer.node_id).labels == {"zone": "b"}  # type: ignore[union-attr]
    assert again.draining(stranger.node_id)
    await trio.sleep(4)
    assert again.get(peer.node_id).down_for == pytest.approx(4, abs=0.01)  # type: ignore[union-attr]  # from the load
    assert again.on_record(record_of(peer, seq=32))
    assert again.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]


async def test_persisted_in_a_real_store_across_a_restart(tmp_path: Path, me: Identity, peer: Identity) -> None:
    registry = registry_of(me)
    registry.on_record(record_of(peer, name="kept", labels={"zone": "a"}))
    async with Store.open(tmp_path / "r.db") as store, trio.open_nursery() as nursery:
        nursery.start_soon(registry.keep, store)
        with trio.fail_after(10):
            while await store.get_meta(META_KEY) is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    async with Store.open(tmp_path / "r.db") as store:
        again = registry_of(me)
        await again.load(store)
    info = again.get(peer.node_id)
    assert info is not None and (info.name, dict(info.labels), info.state) == ("kept", {"zone": "a"}, NodeState.DOWN)


async def test_bounded_least_recently_heard_first(me: Identity, tmp_path: Path) -> None:
    registry = registry_of(me, limit=3)
    others = [load_or_create(tmp_path / f"o{i}") for i in range(4)]
    for other in others:
        registry.on_record(record_of(other))
    known = {n.node_id for n in registry.nodes()}
    assert me.node_id in known and others[0].node_id not in known and len(known) == 4  # 3 kept, plus this node


# -- gossip and catch-up -------------------------------------------------------------------------------


async def test_gossip_feeds_the_registry(me: Identity, peer: Identity) -> None:
    registry = registry_of(me)
    link = MeshLink(me.node_id)
    gossip = Gossip(identity=me, inbound=FakeInbound(), outbox=link.outbox, directory=registry)
    receive(gossip, peer, [NodeMsg(record_of(peer, name="heard")), DrainMsg(sign_drain(peer, peer.node_id, True, 1.0))])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gossip.consumer)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    info = registry.get(peer.node_id)
    assert info is not None and info.name == "heard" and info.state is NodeState.DRAINING


async def test_catch_up_brings_every_node_and_drops_bad_entries(
    tmp_path: Path, me: Identity, peer: Identity, stranger: Identity
) -> None:
    """A node that joins learns every node in its first round; forged, spoofed or malformed entries are
    dropped and counted, one by one, and the good ones kept."""
    serving, joining = registry_of(peer), registry_of(me, may_order=lambda by: by != stranger.node_id)
    serving.own(record_of(peer, seq=2, name="server"))
    serving.on_record(record_of(stranger, seq=1, name="other"))
    serving.on_drain(sign_drain(peer, stranger.node_id, True, time.time()))
    async with Store.open(tmp_path / "a.db") as a, Store.open(tmp_path / "b.db") as b:
        server = Sync(store=a, inbound=FakeInbound(), identity=peer, directory=serving)  # type: ignore[arg-type]
        client = Sync(store=b, inbound=FakeInbound(), identity=me, directory=joining)  # type: ignore[arg-type]
        pages: list[dict[str, Any]] = []

        async def request(body: dict[str, Any]) -> Any:
            page = await server.serve(body)
            pages.append(page)
            return page

        await client.catch_up(peer.node_id, request)
        assert {n.name for n in joining.nodes()} == {"me", "server", "other"}
        assert joining.get(stranger.node_id).state is NodeState.DRAINING  # type: ignore[union-attr]
        assert client.stats.nodes == 2 and "nodes" in pages[0]

        good = pages[0]
        forged = {**good["nodes"][0]["record"], "name": "forged", "seq": 10}  # newer than held: verified
        page = {
            **good,
            "nodes": [
                {"record": record_of(peer, seq=9, name="fresh").to_json(), "age": 0.5},
                {"record": forged, "age": 0},
                {"record": {"node_id": peer.node_id}, "age": 0},
                {"record": record_of(stranger, seq=5).to_json(), "age": -1},
                "not an entry",
            ],
            "drains": [sign_drain(stranger, peer.node_id, True, time.time()).to_json(), {"node_id": 1}],
        }
        await client.apply_page(page, 0)
        assert joining.get(peer.node_id).name == "fresh"  # type: ignore[union-attr]
        assert joining.get(peer.node_id).state is NodeState.READY  # type: ignore[union-attr]  # the stranger's order
        assert client.stats.dropped == {"unverified": 1, "malformed": 4, "unauthorized": 1}
        with pytest.raises(WireError):
            await client.apply_page({**good, "nodes": "all of them"}, 0)


async def test_catch_up_verifies_only_the_records_it_would_keep(
    tmp_path: Path, me: Identity, peer: Identity, stranger: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every round's first page carries all the peer's records: one no newer than the record held here is dropped
    unread, its signature unchecked (a stale one with a bad signature changes nothing either); a newer one is
    verified, and kept only if it passes."""
    joining = registry_of(me)
    joining.on_record(record_of(stranger, seq=3, name="held"))
    verified: list[str] = []
    real = wire.verify

    def counting(origin: str, data: bytes, signature: str) -> bool:
        verified.append(origin)
        return real(origin, data, signature)

    monkeypatch.setattr(wire, "verify", counting)
    async with Store.open(tmp_path / "b.db") as b:
        client = Sync(store=b, inbound=FakeInbound(), identity=me, directory=joining)  # type: ignore[arg-type]
        stale_forged = {**record_of(stranger, seq=2, name="forged").to_json(), "name": "changed"}
        page = {
            "jobs": [], "executions": [], "head": 0, "upto": 0, "more": False,
            "nodes": [
                {"record": record_of(stranger, seq=3, name="held").to_json(), "age": 0},  # the one held
                {"record": stale_forged, "age": 0},
                {"record": {**record_of(stranger, seq=7).to_json(), "name": "changed"}, "age": 0},  # newer, forged
                {"record": record_of(peer, seq=1, name="new").to_json(), "age": 0},  # unknown node
            ],
        }  # fmt: skip
        await client.apply_page(page, 0)
    assert verified == [stranger.node_id, peer.node_id]  # the newer forgery and the new node's record
    assert client.stats.dropped == {"unverified": 1}
    assert joining.get(stranger.node_id).name == "held"  # type: ignore[union-attr]
    assert joining.get(peer.node_id).name == "new"  # type: ignore[union-attr]


# -- Status of a down node's executions ------------------------------------------------------------------


async def test_status_shows_a_down_nodes_execution_as_unknown(
    tmp_path: Path, me: Identity, peer: Identity, stranger: Identity, mock_clock: trio.testing.MockClock
) -> None:
    config = Config(data_dir=tmp_path / "me", heartbeat=1.0, node_name="me")
    registry = Registry.of(config, me.node_id)
    async with Store.open(config.db_path) as store:
        executor = Executor(node_id=me.node_id, store=store, runtime=FakeRuntime(node_id=me.node_id),
                            queue=JobQueue(10), worker_count=1)  # fmt: skip
        node = Node(config=config, identity=me, store=store, executor=executor, registry=registry)
        job = signed_job(stranger, "j1")
        await store.add_job(job)
        await store.put_executions([signed_execution(peer, "j1", state=State.RUNNING),
                                    signed_execution(stranger, "j1", state=State.COMPLETE)])  # fmt: skip
        registry.on_record(record_of(peer))
        registry.on_record(record_of(stranger))
        status = await node.status("j1")
        assert status["status"] == "running"
        assert [(e["state"], e.get("node_state")) for e in status["executions"] if e["node_id"] == peer.node_id] == [
            ("running", None)
        ]
        mock_clock.jump(3.5)  # both unheard for more than 3 heartbeats
        status = await node.status("j1")
        views = {e["node_id"]: e for e in status["executions"]}
        assert (views[peer.node_id]["state"], views[peer.node_id]["node_state"]) == ("unknown", "down")
        assert "node_state" not in views[stranger.node_id]  # final: what it did is known
        assert status["status"] == "complete"  # the down copy does not keep it running
        await store.put_executions([signed_execution(stranger, "j1", state=State.REJECTED, version=2)])
        assert (await node.status("j1"))["status"] == "unknown"  # only down ones left
        registry.on_record(record_of(peer, seq=2))
        assert (await node.status("j1"))["status"] == "running"
        listing = {n["node_id"]: n for n in (await node.list_nodes())["nodes"]}
        assert listing[me.node_id]["self"] and listing[peer.node_id]["state"] == "ready"
        assert listing[stranger.node_id]["state"] == "down"
        info = await node.info()
        assert (info["name"], info["labels"]) == ("me", {})
        with pytest.raises(NotFoundError, match=f"node {peer.node_id} is not reachable"):  # Logs takes a name too
            await node.logs("j1", listing[peer.node_id]["name"], None)


def test_node_labels_follow_the_job_label_rules() -> None:
    assert parse_labels(("zone=a", "disk=ssd", "zone=b")) == {"zone": "b", "disk": "ssd"}
    for bad in ("zone", "cmnode.x=1", "bad key=1", "=v"):
        with pytest.raises(ValueError):
            parse_labels((bad,))


def test_drain_orders_rank_by_time_then_signer() -> None:
    a = DrainOrder(node_id="n", draining=True, by="a", at=1.0)
    assert a.order_key() < DrainOrder(node_id="n", draining=False, by="a", at=2.0).order_key()
    assert a.order_key() < DrainOrder(node_id="n", draining=True, by="b", at=1.0).order_key()
