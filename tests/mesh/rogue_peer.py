"""A bare py-libp2p peer for the bad-gossip tests, run as its own process:

    python -m tests.mesh.rogue_peer gossip MULTIADDR      publish bad messages, then one valid job
    python -m tests.mesh.rogue_peer plaintext MULTIADDR   try to connect offering plaintext only

``gossip`` prints ``valid JOB_ID`` once it has published everything, then stays connected until killed.
``plaintext`` prints ``refused`` or ``connected`` and exits.
"""

from __future__ import annotations

import json
import os
import sys
import time

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.tools.anyio_service import background_trio_service

from node.identity import Identity
from node.model import Execution, Job, JobSpec, Placement
from node.wire import TOPIC, ExecutionMsg, JobMsg, encode

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


def main() -> None:
    mode, target = sys.argv[1], sys.argv[2]
    trio.run(gossip if mode == "gossip" else plaintext, target)


if __name__ == "__main__":
    main()
