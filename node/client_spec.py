"""What ``cmnode create``'s flags ask for, as the job spec ``ContainerService.Create`` takes.

Only the shape is built here (KEY=VALUE pairs split, flags that need each other checked, ``--node`` names turned
into IDs); what the values may be is the node's to check (``node/spec.py``), one checker for every client. Like
``node/client_cli.py``, it imports only the standard library, so the client starts fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .client_tables import SHORT_ID

__all__ = ["FULL_ID", "UsageError", "build_spec", "pairs", "resolve_nodes"]


class UsageError(Exception):
    """A flag's value is malformed (caught before any request is sent)."""


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """``KEY=VALUE`` flags (``flag``, repeated) as a dict. Raises UsageError: one without ``=`` or a key."""
    out: dict[str, str] = {}
    for value in values or ():
        key, eq, val = value.partition("=")
        if not eq or not key:
            raise UsageError(f"{flag} {value!r}: expected KEY=VALUE")
        out[key] = val
    return out


def build_spec(
    image: str,
    arguments: Sequence[str],
    *,
    env: list[str] | None = None,
    name: str | None = None,
    label: list[str] | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    replicas: int | None = None,
    selector: list[str] | None = None,
    node: list[str] | None = None,
    publish: list[str] | None = None,
    volume: list[str] | None = None,
    restart: str | None = None,
    health_cmd: str | None = None,
    health_interval: float | None = None,
    health_timeout: float | None = None,
    health_retries: int | None = None,
    cpus: float | None = None,
    memory: str | None = None,
    entrypoint: str | None = None,
    pull: str | None = None,
) -> dict[str, Any]:
    """The spec ``cmnode create`` sends for its flags (each keyword is the flag of that name); a flag left out is
    left out of the spec, so the node's default applies. ``--node`` values are kept as given: ``resolve_nodes``
    turns them into IDs once the node's list is at hand.

    Raises:
        UsageError: a malformed KEY=VALUE, ``--replicas`` with ``--node``, or a ``--health-*`` flag without
            ``--health-cmd``.
    """
    spec: dict[str, Any] = {"image": image, "arguments": list(arguments), "env": pairs(env, "--env")}
    if name is not None:
        spec["name"] = name
    if label:
        spec["labels"] = pairs(label, "--label")
    if retries is not None:
        spec["retries"] = retries
    if timeout is not None:
        spec["timeout"] = timeout
    placement = _placement(replicas, selector, node)
    if placement is not None:
        spec["placement"] = placement
    spec.update(_service_fields(publish, volume, restart, entrypoint, pull))
    resources = {k: v for k, v in (("cpus", cpus), ("memory", memory)) if v is not None}
    if resources:
        spec["resources"] = resources
    if health_cmd is not None:
        check = {"command": health_cmd, "interval": health_interval, "timeout": health_timeout}
        check["retries"] = health_retries
        spec["healthcheck"] = {k: v for k, v in check.items() if v is not None}
    elif any(v is not None for v in (health_interval, health_timeout, health_retries)):
        raise UsageError("--health-interval, --health-timeout and --health-retries need --health-cmd")
    return spec


def _service_fields(
    publish: list[str] | None, volume: list[str] | None, restart: str | None, entrypoint: str | None, pull: str | None
) -> dict[str, Any]:
    """The spec fields the flags of the same names set."""
    out: dict[str, Any] = {}
    if publish:
        out["ports"] = list(publish)
    if volume:
        out["volumes"] = list(volume)
    if restart is not None:
        out["restart"] = restart
    if entrypoint is not None:
        out["entrypoint"] = [entrypoint] if entrypoint else []
    if pull is not None:
        out["pull"] = pull
    return out


def _placement(replicas: int | None, selector: list[str] | None, nodes: list[str] | None) -> dict[str, Any] | None:
    if replicas is not None and nodes:
        raise UsageError("--replicas and --node cannot be combined")
    placement: dict[str, Any] = {}
    if replicas is not None:
        placement["replicas"] = replicas
    if nodes:
        placement["nodes"] = list(nodes)
    if selector:
        placement["selector"] = pairs(selector, "--selector")
    return placement or None


FULL_ID = 46
"""A libp2p peer ID is at least this long: ``--node`` passes an unknown one on (a node not heard of yet)."""


def resolve_nodes(known: list[dict[str, Any]], given: list[str]) -> list[str]:
    """The node IDs ``given`` name (``--node``): an ID, a node's name, or a unique prefix of an ID, looked up
    in NodeService.List's ``known`` nodes. Raises UsageError: ambiguous, or unknown and too short to be an ID."""
    ids = [n["node_id"] for n in known]
    out = []
    for text in given:
        if text in ids:
            out.append(text)
            continue
        for what, found in (
            ("named", [n["node_id"] for n in known if n.get("name") == text]),
            ("with the ID prefix", [i for i in ids if i.startswith(text)]),
        ):
            if len(found) == 1:
                out.append(found[0])
                break
            if found:
                raise UsageError(f"--node {text!r} is ambiguous: {len(found)} nodes {what} {text!r} "
                                 f"({', '.join(f[:SHORT_ID] for f in found[:5])}); give more of an ID")  # fmt: skip
        else:
            if len(text) < FULL_ID:
                raise UsageError(f"--node {text!r}: no node known by that ID, name or ID prefix (see cmnode nodes)")
            out.append(text)  # a full ID of a node not heard of yet
    return out
