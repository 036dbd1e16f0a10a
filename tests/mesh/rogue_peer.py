"""A bare py-libp2p peer for the bad-gossip tests, run as its own process:

    python -m tests.mesh.rogue_peer gossip MULTIADDR      publish bad messages, then one valid job
    python -m tests.mesh.rogue_peer plaintext MULTIADDR   try to connect offering plaintext only
    python -m tests.mesh.rogue_peer replay MULTIADDR...    replay findings 1, 2, 3 and 7 of issue 9 to each node
    python -m tests.mesh.rogue_peer fuzz COUNT SEED MULTIADDR   publish COUNT generated hostile messages
    python -m tests.mesh.rogue_peer forge MULTIADDR JOB_ID       forged executions and cancels of that job
    python -m tests.mesh.rogue_peer spam MULTIADDR COUNT         one identity, COUNT invalid messages

``gossip`` prints ``valid JOB_ID`` once it has published everything, then stays connected until killed.
``plaintext`` prints ``refused`` or ``connected`` and exits. ``replay`` serves a hostile ``/cmnode/sync/1``
page to every node that catches up with it, publishes the hostile envelopes, prints ``sent N``, and stays
connected until killed. ``fuzz`` prints ``sent N SECONDS`` once it has published them all and stays connected.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import sys
import time
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.request_response import JSONCodec, RequestResponse, RequestResponseConfig
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.tools.anyio_service import background_trio_service

from node.identity import Identity
from node.model import Cancel, Execution, Job, JobSpec, Placement, State
from node.signed import canonical_json
from node.trust import sign_cancel, sign_execution
from node.wire import TOPIC, CancelMsg, ExecutionMsg, JobMsg, encode

ONE_MIB = 1024 * 1024


def bad_messages(me: Identity, target: str) -> list[bytes]:
    """Each of these must be dropped by the target's validator."""
    spec = JobSpec(image="cmnode-test/busybox:latest", placement=Placement(mode="nodes", nodes=(me.node_id,)))
    forged = Job(job_id="forged-origin", spec=spec, origin=target, created_at=time.time())
    forged_signed = Job(**{**forged.__dict__, "signature": me.sign(forged.canonical_bytes())})
    unsigned = Job(job_id="unsigned", spec=spec, origin=me.node_id, created_at=time.time(), signature="AAAA")
    spoofed = Execution(job_id="forged-origin", node_id=target, version=99)
    return [
        os.urandom(300),  # random bytes
        b"[]",
        b'{"type": 5}',
        b'{"type": "job", "job": {"job_id": 1, "spec": "x", "origin": [], "created_at": "now", "signature": 2}}',
        b'{"type": "execution", "execution": {"job_id": "x", "node_id": 3, "state": "nope", "version": "1"}}',
        b'{"type": "cancel", "job_id": 7}',
        encode(JobMsg(forged_signed)),  # signed by us, claims the target as origin
        encode(JobMsg(unsigned)),
        encode(ExecutionMsg(spoofed)),  # an execution of the target, sent by us
        b'{"type": "job", "job": "' + b"a" * ONE_MIB + b'"}',  # 1 MiB and more
    ]


async def gossip(target_addr: str) -> None:
    key_pair = create_new_key_pair()
    me = Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))
    host = new_host(key_pair=key_pair)
    router = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False)  # fmt: skip
    pubsub = Pubsub(host, router)
    pubsub.counter = time.time_ns()
    info = info_from_p2p_addr(multiaddr.Multiaddr(target_addr))
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with background_trio_service(pubsub), background_trio_service(router), host.run(listen_addrs=[listen]):
        await pubsub.subscribe(TOPIC)
        with trio.fail_after(30):
            await host.connect(info)
            await pubsub.wait_for_subscription(info.peer_id, TOPIC)
            while info.peer_id not in pubsub.peer_queues:
                await trio.sleep(0.05)
        # Fault injection: our own outbound limit (1 MiB) would drop the oversized message before it leaves.
        pubsub.peer_queues[info.peer_id].max_message_size = 4 * ONE_MIB
        for data in bad_messages(me, info.peer_id.to_base58()):
            await pubsub.publish(TOPIC, data)
            await trio.sleep(0.05)
        spec = JobSpec(image="cmnode-test/busybox:latest", placement=Placement(mode="nodes", nodes=(me.node_id,)))
        job = Job(job_id=f"valid-{os.getpid()}", spec=spec, origin=me.node_id, created_at=time.time())
        job = Job(**{**job.__dict__, "signature": me.sign(job.canonical_bytes())})
        await pubsub.publish(TOPIC, encode(JobMsg(job)))
        print(f"valid {job.job_id}", flush=True)
        await trio.sleep_forever()


async def plaintext(target_addr: str) -> None:
    key_pair = create_new_key_pair()
    host = new_host(key_pair=key_pair, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)})
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        try:
            with trio.fail_after(20):
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(target_addr)))
            print("connected", flush=True)
        except Exception as exc:
            print("refused", json.dumps(str(exc) or type(exc).__name__), flush=True)


# -- replay: the findings of issue 9, and generated hostile messages --------------------------------------------

NOWHERE = "12D3KooWNowhereNowhereNowhereNowhereNowhereNowhere1"
"""Jobs placed here are recorded by every node and run by none: no container, no Docker needed."""
INFINITY = "__INFINITY__"
"""Written as the JSON literal ``Infinity``, which Python's parser accepts (finding 7)."""


def _json(value: Any) -> bytes:
    """``json.dumps`` with ``Infinity`` where INFINITY stands: what a hostile peer may write."""
    return json.dumps(value, separators=(",", ":")).replace(f'"{INFINITY}"', "Infinity").encode()


def _raw_job(me: Identity, job_id: str, **bent: Any) -> dict[str, Any]:
    """A job's JSON with ``bent`` fields, signed over whatever canonical bytes those make (when they encode)."""
    spec = {"image": "cmnode-test/absent:latest", "pull": "never", "placement": {"nodes": [NOWHERE]}}
    body = {"job_id": job_id, "spec": spec, "origin": me.node_id, "created_at": time.time(), **bent}
    fields = {k: float("inf") if body[k] == INFINITY else body[k] for k in ("job_id", "spec", "origin", "created_at")}
    try:
        body["signature"] = me.sign(canonical_json(fields))
    except UnicodeEncodeError:  # a lone surrogate cannot be signed: the node must refuse it before trying
        body["signature"] = "AAAA"
    return body


def _raw_execution(me: Identity, job_id: str, **bent: Any) -> dict[str, Any]:
    """Our own execution (so the sender check passes) with ``bent`` fields, signed when they encode."""
    now = time.time()
    body = {**Execution(job_id=job_id, node_id=me.node_id, state=State.RUNNING, created_at=now,
                        updated_at=now).to_json(), **bent}  # fmt: skip
    signed = {k: v for k, v in body.items() if k != "signature"}
    try:
        body["signature"] = me.sign(canonical_json(signed))
    except (UnicodeEncodeError, ValueError):
        body["signature"] = "AAAA"
    return body


def findings(me: Identity) -> list[bytes]:
    """Findings 1, 2 and 7 of issue 9 as gossip envelopes: each killed, or broke, every node it reached."""
    return [
        _json({"type": "execution", "execution": _raw_execution(me, "f1-version", version=2**63)}),
        _json({"type": "job", "job": _raw_job(me, "f2-created-at", created_at=10**400)}),
        _json({"type": "job", "job": _raw_job(me, "f2-surrogate\ud800")}),  # written as the escape \\ud800
        _json({"type": "job", "job": _raw_job(me, "f7-infinity", created_at=INFINITY)}),
    ]


PAGE_ENTRIES = 4
"""Entries (jobs and executions) in ``finding_page``: one catch-up round with the rogue drops every one."""


def finding_page(me: Identity) -> bytes:
    """Finding 3: a ``/cmnode/sync/1`` answer holding the same values."""
    page = {
        "jobs": [{"job": json.loads(m)["job"], "cancelled": False} for m in findings(me)[1:2]]
        + [{"job": _raw_job(me, "f3-infinity", created_at=INFINITY), "cancelled": False}],
        "executions": [_raw_execution(me, "f3-version", version=2**63), _raw_execution(me, "f3-big", attempt=10**30)],
        "upto": 5,  # a well-formed page, so each entry is checked (an upto of 2^63 fails the page at once)
        "head": 5,
        "more": False,
    }
    assert len(page["jobs"]) + len(page["executions"]) == PAGE_ENTRIES
    return _json(page).replace(b'"job_id":"f3-infinity"', b'"job_id":"f3-surrogate\\udfff"')


BAD_JOB_IDS = ("f1-version", "f2-created-at", "f2-surrogate", "f7-infinity", "f3-infinity", "f3-version", "f3-big")
"""Job IDs (or their prefixes) that no node may store or list."""

HOSTILE = [2**63, -(2**63) - 1, 10**30, -1, 0, 1.5, INFINITY, None, True, "", "\ud800", "x" * 70_000, [], {}, [[[[]]]]]


def mutate(rng: random.Random, doc: Any) -> Any:
    """``doc`` with one to three fields replaced by hostile values, removed, or joined by an unknown one."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        parent, key = _pick(rng, doc)
        if parent is None:
            return copy.deepcopy(rng.choice(HOSTILE))
        action = rng.random()
        if action < 0.2 and isinstance(parent, dict):
            del parent[key]
        elif action < 0.35 and isinstance(parent, dict):
            parent[rng.choice(["extra", "\udc00", "type", ""])] = copy.deepcopy(rng.choice(HOSTILE))
        else:
            parent[key] = copy.deepcopy(rng.choice(HOSTILE))
    return doc


def _pick(rng: random.Random, doc: Any) -> tuple[Any, Any]:
    """A random (container, key) inside ``doc``; (None, None) for the document itself."""
    slots: list[tuple[Any, Any]] = [(None, None)]
    stack = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            slots.append((node, key))
            stack.append(value)
    return rng.choice(slots)


def generated(me: Identity, rng: random.Random) -> bytes:
    """One generated gossip message: a valid envelope bent, the findings, or random bytes."""
    roll = rng.random()
    if roll < 0.05:
        return os.urandom(rng.randint(0, 200))
    if roll < 0.1:
        return rng.choice(findings(me))
    if roll < 0.55:
        doc: Any = {"type": "job", "job": _raw_job(me, f"fz-{rng.getrandbits(48):x}")}
    else:
        doc = {"type": "execution", "execution": _raw_execution(me, f"fz-{rng.getrandbits(48):x}")}
    return _json(mutate(rng, doc))  # lone surrogates written as escapes


async def replay(targets: list[str]) -> None:
    """Connect to every target (serving them the hostile sync page), ask each for its changes after 2^63,
    publish the findings, print ``sent N SECONDS``, and stay connected."""
    await _session(targets, findings, count=None, pause=0.05, sync_attack=True)


async def fuzz(targets: list[str], count: int, seed: int) -> None:
    """Publish ``count`` generated messages. A node stops listening to, then disconnects and bans, a peer whose
    gossip keeps failing validation (gossipsub's peer score), so the rogue publishes PER_KEY messages per key
    and comes back with a fresh key, as an attacker would, until all were sent."""
    rng = random.Random(seed)
    started, sent, refused = time.monotonic(), 0, 0
    while sent < count and refused < 30:
        batch = min(PER_KEY, count - sent)

        def messages(me: Identity, n: int = batch) -> Any:
            return (generated(me, rng) for _ in range(n))

        try:
            sent += await _session(targets, messages, count=batch)
            refused = 0
        except Exception as exc:  # the node refused the connection (e.g. a limit on new ones): wait, new key
            refused += 1
            print(f"connection refused: {exc!r}", file=sys.stderr, flush=True)
            await trio.sleep(1)
    print(f"sent {sent} {time.monotonic() - started:.3f}", flush=True)
    await trio.sleep_forever()


PER_KEY = 25
"""Messages per rogue key in ``fuzz``: few enough that the node's peer scoring has not yet silenced the key."""


async def _session(
    targets: list[str], messages: Any, *, count: int | None, pause: float = 0.0, sync_attack: bool = False
) -> int:
    """One rogue host, with a fresh key, connected to every target: publishes ``messages(me)`` until they run
    out or a target disconnects it; returns how many it published. With ``count`` None it prints
    ``sent N SECONDS`` and stays connected (serving the hostile sync page) until killed."""
    key_pair = create_new_key_pair()
    me = Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))
    host = new_host(key_pair=key_pair)
    page = json.loads(finding_page(me))
    rr = RequestResponse(host)

    async def serve_sync(request: Any, context: Any) -> Any:
        return page

    rr.set_handler("/cmnode/sync/1", serve_sync, JSONCodec(), RequestResponseConfig(timeout=30))  # type: ignore[arg-type]
    router = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False)  # fmt: skip
    pubsub = Pubsub(host, router)
    pubsub.counter = time.time_ns()
    infos = [info_from_p2p_addr(multiaddr.Multiaddr(t)) for t in targets]
    listen = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with background_trio_service(pubsub), background_trio_service(router), host.run(listen_addrs=[listen]):
        await pubsub.subscribe(TOPIC)
        with trio.fail_after(30):
            for info in infos:
                await host.connect(info)
                await pubsub.wait_for_subscription(info.peer_id, TOPIC)
                while info.peer_id not in pubsub.peer_queues:
                    await trio.sleep(0.05)
        if sync_attack:  # a watermark SQLite cannot bind
            for info in infos:
                with contextlib.suppress(Exception):
                    await rr.send_request(info.peer_id, ["/cmnode/sync/1"], {"since": 2**63, "limit": 10},  # type: ignore[list-item]
                                          JSONCodec(), RequestResponseConfig(timeout=10))  # fmt: skip
        sent, started = 0, time.monotonic()
        for data in messages(me):
            while any(len(q) >= 24 for q in list(pubsub.peer_queues.values())):  # the library drops beyond 32
                await trio.sleep(0.001)
            if count is not None and not all(host.get_network().get_connections(i.peer_id) for i in infos):
                break  # disconnected: this key is banned
            await pubsub.publish(TOPIC, data)
            sent += 1
            if pause:
                await trio.sleep(pause)
        if count is None:
            print(f"sent {sent} {time.monotonic() - started:.3f}", flush=True)
            await trio.sleep_forever()
        with trio.move_on_after(5):  # let the queues drain before the host closes, or the last ones are lost
            while any(len(q) for q in list(pubsub.peer_queues.values())):
                await trio.sleep(0.01)
            await trio.sleep(0.2)
        return sent


# -- forge: executions and cancels that are not what they claim (issue 9, findings 5 and 6) ----------------------


def forgeries(me: Identity, victim: str, job_id: str) -> tuple[list[bytes], dict[str, Any]]:
    """Gossip envelopes and a ``/cmnode/sync/1`` page that claim things about ``job_id`` they may not: executions of
    an invented node (unsigned, or signed by us), a cancel in ``victim``'s name signed by us, a cancel signed by us
    (neither the job's origin nor trusted), a bare ``cancelled: true``, and a job of ours placed everywhere."""
    now = time.time()
    invented = Identity(key_pair=(kp := create_new_key_pair()), peer_id=ID.from_pubkey(kp.public_key))
    stuck = Execution(job_id=job_id, node_id=invented.node_id, state=State.RUNNING, created_at=now, updated_at=now,
                      version=7)  # fmt: skip
    signed_by_us = sign_execution(Identity(key_pair=me.key_pair, peer_id=invented.peer_id), stuck)  # our key, its name
    ours = sign_cancel(me, job_id)
    in_victims_name = Cancel(job_id=job_id, by=victim, at=now, signature=ours.signature)
    spec = JobSpec(image="cmnode-test/busybox:latest", arguments=("true",))
    mine = Job(job_id=f"untrusted-{os.getpid()}", spec=spec, origin=me.node_id, created_at=now)
    mine = Job(**{**mine.__dict__, "signature": me.sign(mine.canonical_bytes())})
    gossip = [encode(CancelMsg(in_victims_name)), encode(CancelMsg(ours)), encode(JobMsg(mine))]
    victim_job = {"job_id": job_id}  # filled in by the caller with the real job (it is signed by its origin)
    page = {
        "jobs": [
            {"job": victim_job, "cancelled": True},  # a bare flag, once believed
            {"job": victim_job, "cancelled": True, "cancel": in_victims_name.to_json()},
            {"job": victim_job, "cancelled": True, "cancel": ours.to_json()},
            {"job": mine.to_json(), "cancelled": False},
        ],
        "executions": [stuck.to_json(), signed_by_us.to_json()],
        "upto": 1,
        "head": 1,
        "more": False,
    }
    return gossip, page


async def forge(target_addr: str, job_id: str) -> None:
    """Connect to the target, fetch the (signed) job from its own sync page, serve it the forged page, publish
    the forged gossip, print ``forged UNTRUSTED_JOB_ID`` and then ``synced`` once the target fetched the page;
    stay connected until killed."""
    key_pair = create_new_key_pair()
    me = Identity(key_pair=key_pair, peer_id=ID.from_pubkey(key_pair.public_key))
    info = info_from_p2p_addr(multiaddr.Multiaddr(target_addr))
    messages, page = forgeries(me, info.peer_id.to_base58(), job_id)
    ready, fetched = trio.Event(), trio.Event()
    host = new_host(key_pair=key_pair)
    rr = RequestResponse(host)
    config = RequestResponseConfig(timeout=30)

    async def serve_sync(request: Any, context: Any) -> Any:
        await ready.wait()  # the target asks as soon as we connect: answer once the page holds its job
        fetched.set()
        return page if request.get("since") == 0 else {**page, "jobs": [], "executions": [], "upto": 1}

    rr.set_handler(TProtocol("/cmnode/sync/1"), serve_sync, JSONCodec(), config)
    router = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False)  # fmt: skip
    pubsub = Pubsub(host, router)
    pubsub.counter = time.time_ns()
    async with background_trio_service(pubsub), background_trio_service(router), \
            host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):  # fmt: skip
        await pubsub.subscribe(TOPIC)
        with trio.fail_after(30):
            await host.connect(info)
            theirs = await rr.send_request(info.peer_id, [TProtocol("/cmnode/sync/1")], {"since": 0, "limit": 200},
                                           JSONCodec(), config)  # fmt: skip
            job = next(e["job"] for e in theirs["jobs"] if e["job"]["job_id"] == job_id)
            for entry in page["jobs"]:
                if entry["job"] == {"job_id": job_id}:
                    entry["job"] = job
            ready.set()
            await pubsub.wait_for_subscription(info.peer_id, TOPIC)
            while info.peer_id not in pubsub.peer_queues:
                await trio.sleep(0.05)
        for data in messages:
            await pubsub.publish(TOPIC, data)
            await trio.sleep(0.05)
        print(f"forged {json.loads(messages[-1])['job']['job_id']}", flush=True)
        with trio.fail_after(30):
            await fetched.wait()
        print("synced", flush=True)
        await trio.sleep_forever()


async def spam(target_addr: str, count: str) -> None:
    """One identity publishing ``count`` invalid messages as fast as the queues allow: prints ``me PEER_ID``
    first, ``sent N`` after, then stays connected (if the target lets it) until killed."""
    key_pair = create_new_key_pair()
    host = new_host(key_pair=key_pair)
    print(f"me {ID.from_pubkey(key_pair.public_key).to_base58()}", flush=True)
    router = GossipSub(protocols=[PROTOCOL_ID_V11, PROTOCOL_ID], degree=6, degree_low=4, degree_high=12,
                       heartbeat_interval=1, adaptive_gossip_enabled=False, spam_protection_enabled=False)  # fmt: skip
    pubsub = Pubsub(host, router)
    pubsub.counter = time.time_ns()
    info = info_from_p2p_addr(multiaddr.Multiaddr(target_addr))
    async with background_trio_service(pubsub), background_trio_service(router), \
            host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):  # fmt: skip
        await pubsub.subscribe(TOPIC)
        with trio.fail_after(30):
            await host.connect(info)
            await pubsub.wait_for_subscription(info.peer_id, TOPIC)
        sent = 0
        for i in range(int(count)):
            if info.peer_id not in pubsub.peer_queues:
                break  # disconnected
            while len(pubsub.peer_queues.get(info.peer_id, ())) >= 24:
                await trio.sleep(0.001)
            await pubsub.publish(TOPIC, b'{"type": "invalid", "n": %d}' % i)
            sent += 1
        print(f"sent {sent}", flush=True)
        await trio.sleep_forever()


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "replay":
        trio.run(replay, args)
    elif mode == "spam":
        trio.run(spam, args[0], args[1])
    elif mode == "forge":
        trio.run(forge, args[0], args[1])
    elif mode == "fuzz":
        trio.run(fuzz, args[2:], int(args[0]), int(args[1]))
    else:
        trio.run(gossip if mode == "gossip" else plaintext, args[0])


if __name__ == "__main__":
    main()
