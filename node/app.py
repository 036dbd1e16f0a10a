"""One node, one nursery: the store, the mesh, the executor (queue, workers, exit watcher) and the
RPC server, started in that order and stopped in reverse.

Shutdown mirrors hypercorn's ``worker_serve``: the trigger stops the RPC server first (it drains
in-flight requests for ``graceful_timeout``), then the mesh and workers are cancelled. Running
containers are left running and queued jobs stay pending in the store, so a restart picks them up.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from rpc.events import add_events_route
from rpc.logs import add_logs_route
from rpc.methods import build_methods, read_only
from rpc.protocol import Dispatcher
from rpc.server import check_tls, create_app, serve_rpc

from .admission import Admission
from .config import Config
from .core import Node
from .docker_runtime import DockerRuntime
from .errors import ConfigError
from .events import EventHub
from .executor import Executor
from .heartbeat import Addresses, Heartbeat, vitals_of
from .identity import load_or_create
from .jobqueue import JobQueue
from .link import InboundGate, MeshLink
from .mesh import Mesh
from .metrics import NodeMetrics
from .policy import Policy
from .registry import Registry
from .spec_formats import memory_bytes
from .store import Store
from .trust import Trust

log = logging.getLogger("cmnode.node")


@dataclass(frozen=True)
class RunningNode:
    """What ``run_node`` hands back once it serves: enough for tests and the CLI to talk to it."""

    node_id: str
    rpc_url: str
    node: Node


async def run_node(
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    task_status: trio.TaskStatus[RunningNode] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until ``shutdown_trigger`` returns (forever if None)."""
    check_front(config)
    identity = load_or_create(config.data_dir)
    runtime = DockerRuntime(
        node_id=identity.node_id,
        docker_timeout=config.docker_timeout,
        pull_timeout=config.pull_timeout,
        max_threads=config.worker_count + 8,
        base_url=config.docker_host,
        policy=Policy.from_config(config),
    )
    try:
        async with Store.open(config.db_path) as store, trio.open_nursery() as services:
            events = EventHub(store)  # before any write of this run, so the ring misses none
            runtime.on_progress = lambda report: events.publish("progress", report.to_json())  # pulls' progress
            # Built one way: link (the node's outbound) -> executor -> node -> mesh (given the node as inbound).
            # Started mesh first, so its publisher drains what the executor's recovery announces, while the
            # gate holds what peers send until the executor runs (see node/link.py).
            link = MeshLink(identity.node_id)
            trust = Trust.of(identity.node_id, config.trusted_peer)  # who may originate jobs, cancels, orders
            queue = JobQueue(config.queue_size)
            executor = Executor(
                node_id=identity.node_id,
                store=store,
                runtime=runtime,
                queue=queue,
                worker_count=config.worker_count,
                publish=link.publish_execution,
                retention=config.retention,
                policy=runtime.policy,
                # A trusted origin's excess waits in the backlog; an untrusted one's is refused and counted.
                admission=Admission(
                    rate=config.peer_job_rate,
                    burst=config.peer_job_burst,
                    trusted=trust.may_originate,
                ),
            )
            registry = Registry.of(config, identity.node_id, trust)
            await registry.load(store)  # every node seen before, down until heard
            services.start_soon(registry.keep, store)
            services.start_soon(events.watch_nodes, registry)
            node = Node(
                config=config,
                identity=identity,
                store=store,
                executor=executor,
                mesh=link,
                registry=registry,
                trust=trust,
            )
            await services.start(node.followers.run)  # follows of output (logs --follow), local and peers'
            gate = InboundGate(node)
            mesh = Mesh(config=config, identity=identity, store=store, inbound=gate, link=link, directory=registry)
            await services.start(mesh.run)
            await services.start(executor.run)
            gate.open()
            services.start_soon(node.rescheduler.run)  # replicas moved off dead or draining nodes
            if node.purge.enabled:
                services.start_soon(node.purge.run)  # finished jobs older than --job-retention
            heartbeat = Heartbeat(
                identity=identity, registry=registry, publish=link.publish_node,
                vitals=partial(vitals_of, node, node.rescheduler.allocated, Addresses(mesh.addresses)),
                capacity=runtime.capacity,
                interval=config.heartbeat, name=registry.name, labels=registry.labels, cpus=config.node_cpus or None,
                memory=memory_bytes(config.node_memory) if config.node_memory else None,
            )  # fmt: skip
            await services.start(heartbeat.run)

            async def health() -> tuple[bool, dict[str, object]]:
                problems: dict[str, object] = {}
                try:
                    await store.ping()
                    if store.full is not None:
                        await store.probe()  # space may have come back with nothing written since
                except Exception as exc:
                    problems["store"] = str(exc)
                if store.full is not None and "store" not in problems:
                    problems["store"] = store.full
                if executor.docker_error is not None:
                    problems["docker"] = executor.docker_error
                reason = "; ".join(f"{part}: {why}" for part, why in problems.items())
                return not problems, {"node_id": identity.node_id, "problems": problems, "reason": reason or None}

            metrics = NodeMetrics(node)
            methods = build_methods(node)
            app = create_app(
                Dispatcher(methods, on_call=metrics.on_call),
                max_body=config.max_body,
                token=config.rpc_token,
                read_token=config.rpc_read_token,
                read_dispatcher=Dispatcher(read_only(methods), on_call=metrics.on_call),
                metrics_public=config.metrics_public,
                health=health,
                metrics=metrics.render,
            )
            add_events_route(app, events)
            add_logs_route(app, node)
            stop_rpc = trio.Event()
            async with trio.open_nursery() as front:
                url = await front.start(
                    partial(
                        serve_rpc,
                        app,
                        host=config.listen_address,
                        port=config.port,
                        graceful_timeout=config.graceful_timeout,
                        certfile=config.tls_cert,
                        keyfile=config.tls_key,
                        shutdown_trigger=stop_rpc.wait,
                    )
                )
                node.rpc_url = url
                task_status.started(RunningNode(node_id=identity.node_id, rpc_url=url, node=node))
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                log.info("shutting down node_id=%s", identity.node_id)
                events.close()  # open streams end now, not at the end of the HTTP server's drain
                node.followers.close()  # and so do follows of output
                stop_rpc.set()
            services.cancel_scope.cancel()
    finally:
        runtime.close()


def check_front(config: Config) -> None:
    """Refuse HTTP settings that cannot work together, and warn, once, about an API open to the network.

    Raises:
        ConfigError: naming the setting.
    """
    check_tls(config.tls_cert, config.tls_key)
    if config.rpc_read_token and not config.rpc_token:
        raise ConfigError("invalid rpc-read-token: it needs rpc-token (without one, every caller may write)")
    if config.rpc_read_token and config.rpc_read_token == config.rpc_token:
        raise ConfigError("invalid rpc-read-token: it must differ from rpc-token")
    if not config.rpc_token and not _loopback(config.listen_address):
        log.warning(
            "RPC on %s:%d without --rpc-token: anyone who reaches it can run containers on this node "
            "(set --rpc-token, and --tls-cert/--tls-key off a trusted network, or listen on 127.0.0.1)",
            config.listen_address, config.port,
        )  # fmt: skip


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
