"""One node, one nursery: the store, the mesh, the executor (queue, workers, exit watcher) and the
RPC server, started in that order and stopped in reverse.

Shutdown mirrors hypercorn's ``worker_serve``: the trigger stops the RPC server first (it drains
in-flight requests for ``graceful_timeout``), then the mesh and workers are cancelled. Running
containers are left running and queued jobs stay pending in the store, so a restart picks them up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from rpc.methods import build_methods
from rpc.protocol import Dispatcher
from rpc.server import create_app, serve_rpc

from .config import Config
from .core import Node
from .docker_runtime import DockerRuntime
from .executor import Executor
from .identity import load_or_create
from .jobqueue import JobQueue
from .link import InboundGate, MeshLink
from .mesh import Mesh
from .metrics import NodeMetrics
from .store import Store

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
    identity = load_or_create(config.data_dir)
    runtime = DockerRuntime(
        node_id=identity.node_id,
        docker_timeout=config.docker_timeout,
        pull_timeout=config.pull_timeout,
        max_threads=config.worker_count + 8,
        base_url=config.docker_host,
    )
    try:
        async with Store.open(config.db_path) as store, trio.open_nursery() as services:
            # Built one way: link (the node's outbound) -> executor -> node -> mesh (given the node as inbound).
            # Started mesh first, so its publisher drains what the executor's recovery announces, while the
            # gate holds what peers send until the executor runs (see node/link.py).
            link = MeshLink(identity.node_id)
            queue = JobQueue(config.queue_size)
            executor = Executor(
                node_id=identity.node_id,
                store=store,
                runtime=runtime,
                queue=queue,
                worker_count=config.worker_count,
                publish=link.publish_execution,
                retention=config.retention,
            )
            node = Node(config=config, identity=identity, store=store, executor=executor, mesh=link)
            gate = InboundGate(node)
            mesh = Mesh(config=config, identity=identity, store=store, inbound=gate, link=link)
            await services.start(mesh.run)
            await services.start(executor.run)
            gate.open()

            async def health() -> tuple[bool, dict[str, object]]:
                problems: dict[str, object] = {}
                try:
                    await store.ping()
                except Exception as exc:
                    problems["store"] = str(exc)
                if executor.docker_error is not None:
                    problems["docker"] = executor.docker_error
                reason = "; ".join(f"{part}: {why}" for part, why in problems.items())
                return not problems, {"node_id": identity.node_id, "problems": problems, "reason": reason or None}

            metrics = NodeMetrics(node)
            app = create_app(
                Dispatcher(build_methods(node), on_call=metrics.on_call),
                max_body=config.max_body,
                token=config.rpc_token,
                health=health,
                metrics=metrics.render,
            )
            stop_rpc = trio.Event()
            async with trio.open_nursery() as front:
                url = await front.start(
                    partial(
                        serve_rpc,
                        app,
                        host=config.listen_address,
                        port=config.port,
                        graceful_timeout=config.graceful_timeout,
                        shutdown_trigger=stop_rpc.wait,
                    )
                )
                node.rpc_url = url
                log.info("node ready node_id=%s rpc=%s/jrpc", identity.node_id, url)
                task_status.started(RunningNode(node_id=identity.node_id, rpc_url=url, node=node))
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                log.info("shutting down node_id=%s", identity.node_id)
                stop_rpc.set()
            services.cancel_scope.cancel()
    finally:
        runtime.close()
