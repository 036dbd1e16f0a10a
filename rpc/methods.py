"""The API's methods: their parameter and result schemas, and the handlers that call ``node.core.Node``.

These definitions are the single source of both request validation (``rpc/protocol.py``) and the
OpenRPC document served by ``rpc.discover``, so the two cannot drift apart. Create's params are the model's
own ``JOB_SPEC_SCHEMA``: the spec a user sends is checked once, by the same rules gossip is checked with.
"""

from __future__ import annotations

from typing import Any

from node import __version__
from node.core import Node
from node.errors import UnauthorizedError
from node.model import JOB_SPEC_SCHEMA, MAX_ID, JobSpec, State
from node.spec import MAX_REPLICAS

from .protocol import Method

_STR = {"type": "string"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_JOB_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID, "description": "the job ID returned by Create"}
_NODE_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID, "description": "a node's libp2p peer ID"}
_NONE: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

_EXECUTION = {
    "type": "object",
    "properties": {
        "node_id": _STR,
        "state": {
            "type": "string",
            "enum": [*(s.value for s in State), "unknown"],
            "description": "unknown: its node is down (node_state), so what it does now is not known",
        },
        "node_state": {"type": "string", "enum": ["down"], "description": "only when its node is down"},
        "attempt": {"type": "integer"},
        "container_id": {"type": ["string", "null"]},
        "exit_code": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "version": {"type": "integer"},
        "history": {"type": "array", "description": "the earlier attempts (retries and restarts), the last 100"},
        "health": {
            "type": "string",
            "enum": ["starting", "healthy", "unhealthy"],
            "description": "the healthcheck's verdict; only when the job has one",
        },
    },
}

_NODE = {
    "type": "object",
    "properties": {
        "node_id": _STR,
        "name": _STR,
        "state": {"type": "string", "enum": ["ready", "down", "draining"]},
        "labels": _STR_MAP,
        "capacity": {"type": "object", "description": "cpus and memory (bytes); null: not known"},
        "allocated": {"type": "object", "description": "cpus, memory and jobs placement gave it"},
        "running": {"type": "integer"},
        "queue_depth": {"type": "integer"},
        "last_seen": {
            "type": "number",
            "description": "Unix time its last record was heard (unchanged records "
            "are a minute or more apart: a ready node's may be that old)",
        },
        "down_for": {
            "type": "number",
            "description": "seconds down: since it was reported lost, missed a roll "
            "call, or (silent) since its last record; 0 unless down",
        },
        "self": {"type": "boolean", "description": "the node answering"},
    },
}


def build_methods(node: Node) -> list[Method]:
    """Every method of the API, bound to ``node``."""

    async def create(params: dict[str, Any]) -> dict[str, Any]:
        job = await node.create(JobSpec.from_valid(params))  # the dispatcher checked JOB_SPEC_SCHEMA
        return {"job_id": job.job_id, "message": "Job created successfully"}

    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return await node.status(params["job_id"])

    async def list_jobs(params: dict[str, Any]) -> dict[str, Any]:
        return await node.list_jobs(
            status=params.get("status"),
            labels=params.get("labels") or {},
            limit=params.get("limit", 100),
            cursor=params.get("cursor"),
        )

    async def logs(params: dict[str, Any]) -> dict[str, Any]:
        return await node.logs(params["job_id"], params.get("node_id"), params.get("tail"))

    async def stop(params: dict[str, Any]) -> dict[str, Any]:
        return await node.stop(params["job_id"])

    async def scale(params: dict[str, Any]) -> dict[str, Any]:
        return await node.scale(params["job_id"], params["replicas"])

    async def info(params: dict[str, Any]) -> dict[str, Any]:
        return await node.info()

    async def peers(params: dict[str, Any]) -> dict[str, Any]:
        return await node.peers()

    async def list_nodes(params: dict[str, Any]) -> dict[str, Any]:
        return await node.list_nodes()

    async def drain(params: dict[str, Any]) -> dict[str, Any]:
        return await node.drain(params["node_id"], True)

    async def undrain(params: dict[str, Any]) -> dict[str, Any]:
        return await node.drain(params["node_id"], False)

    node_ref = {
        "type": "object",
        "properties": {"node_id": {**_NODE_ID, "description": "a node's ID, its name, or a unique prefix of its ID"}},
        "required": ["node_id"],
        "additionalProperties": False,
    }
    drained = {"type": "object", "properties": {"node_id": _STR, "draining": {"type": "boolean"}, "message": _STR}}

    job_id_only = {
        "type": "object",
        "properties": {"job_id": _JOB_ID},
        "required": ["job_id"],
        "additionalProperties": False,
    }
    methods = [
        Method(
            name="ContainerService.Create",
            handler=create,
            params=JOB_SPEC_SCHEMA,
            result={
                "type": "object",
                "properties": {"job_id": _STR, "message": _STR},
                "required": ["job_id", "message"],
            },
            summary="Accept a job: stored, queued and gossiped to every node of the mesh.",
        ),
        Method(
            name="ContainerService.Status",
            handler=status,
            params=job_id_only,
            result={
                "type": "object",
                "properties": {
                    "status": {"type": "string"},
                    "job_id": _STR,
                    "executions": {"type": "array", "items": _EXECUTION},
                },
                "required": ["status", "job_id", "executions"],
            },
            summary="The job's status, derived from every node's execution of it.",
        ),
        Method(
            name="ContainerService.List",
            handler=list_jobs,
            params={
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": [s.value for s in State]},
                    "labels": _STR_MAP,
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "cursor": {"type": "string", "maxLength": 64, "pattern": r"^[0-9.e+-]{1,40}:[0-9]{1,18}$"},
                },
                "additionalProperties": False,
            },
            result={
                "type": "object",
                "properties": {"jobs": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}},
            },
            summary="Jobs newest first, filtered by status and labels, a page at a time.",
        ),
        Method(
            name="ContainerService.Logs",
            handler=logs,
            params={
                "type": "object",
                "properties": {
                    "job_id": _JOB_ID,
                    "node_id": _NODE_ID,
                    "tail": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                },
                "required": ["job_id"],
                "additionalProperties": False,
            },
            result={"type": "object", "properties": {"stdout": _STR, "stderr": _STR, "node_id": _STR}},
            summary="Output of the job's execution on a node (this node by default).",
        ),
        Method(
            name="ContainerService.Stop",
            handler=stop,
            params=job_id_only,
            result={"type": "object", "properties": {"job_id": _STR, "message": _STR}},
            summary="Cancel the job on every node. Idempotent.",
        ),
        Method(
            name="ContainerService.Scale",
            handler=scale,
            params={
                "type": "object",
                "properties": {
                    "job_id": _JOB_ID,
                    "replicas": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS},
                },
                "required": ["job_id", "replicas"],
                "additionalProperties": False,
            },
            result={"type": "object", "properties": {"job_id": _STR, "allocation": {"type": "object"}}},
            summary="Run N copies of a replicas job: a new allocation version, placed as Create places.",
        ),
        Method(
            name="NodeService.Info",
            handler=info,
            params=_NONE,
            result={"type": "object", "properties": {"node_id": _STR, "addresses": {"type": "array"}}},
            summary="This node: peer ID, addresses, version, queue, workers, Docker health.",
        ),
        Method(
            name="NodeService.Peers",
            handler=peers,
            params=_NONE,
            result={"type": "object", "properties": {"peers": {"type": "array"}}},
            summary="Peers this node is connected to.",
        ),
        Method(
            name="NodeService.List",
            handler=list_nodes,
            params=_NONE,
            result={"type": "object", "properties": {"nodes": {"type": "array", "items": _NODE}}},
            summary="Every node this node has heard of: state (ready, down, draining), name, labels, capacity, load.",
        ),
        Method(
            name="NodeService.Drain",
            handler=drain,
            params=node_ref,
            result=drained,
            summary="Drain a node on every node: it takes no new allocations and its replicas move elsewhere.",
        ),
        Method(
            name="NodeService.Undrain",
            handler=undrain,
            params=node_ref,
            result=drained,
            summary="Let a drained node take allocations again.",
        ),
    ]

    async def discover(params: dict[str, Any]) -> dict[str, Any]:
        return openrpc_document([*methods, discover_method])

    discover_method = Method(
        name="rpc.discover",
        handler=discover,
        params=_NONE,
        result={"type": "object", "description": "an OpenRPC document"},
        summary="This API as an OpenRPC document.",
    )
    return [*methods, discover_method]


READ_METHODS = frozenset(
    {
        "ContainerService.Status",
        "ContainerService.List",
        "ContainerService.Logs",
        "NodeService.Info",
        "NodeService.Peers",
        "NodeService.List",
        "rpc.discover",
    }
)
"""What a read-only token (``--rpc-read-token``) may call: the methods that change nothing."""


def read_only(methods: list[Method]) -> list[Method]:
    """``methods`` as a read-only caller gets them: every method outside ``READ_METHODS`` refuses with -32004
    before its params are even looked at (so a refusal says nothing about what the params would have done)."""

    def refusal(name: str) -> Method:
        async def refuse(params: dict[str, Any]) -> Any:
            raise UnauthorizedError(
                f"{name} changes the node: the read-only token (--rpc-read-token) may call only "
                + ", ".join(sorted(READ_METHODS))
            )

        return Method(name=name, handler=refuse, params={})

    return [m if m.name in READ_METHODS else refusal(m.name) for m in methods]


def openrpc_document(methods: list[Method]) -> dict[str, Any]:
    """An OpenRPC 1.2 document. Params are described by name (one descriptor per field of the params
    object); the original service's by-position form, a one-element array holding that object, is also
    accepted, as ``info.description`` says."""
    return {
        "openrpc": "1.2.6",
        "info": {
            "title": "cmnode",
            "version": __version__,
            "description": "Every method takes one params object: by name, or by position as [object].",
        },
        "methods": [
            {
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": [
                    {"name": name, "required": name in m.params.get("required", []), "schema": dict(schema)}
                    for name, schema in m.params.get("properties", {}).items()
                ],
                "result": {"name": "result", "schema": dict(m.result)},
            }
            for m in methods
        ],
    }
