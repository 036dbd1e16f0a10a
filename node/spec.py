"""What a user asks for: the JobSpec, and its field table, which is the schema that ``rpc.discover`` publishes
and that ``node/schema.py`` checks on every path a spec comes in by (RPC params, gossip, catch-up).

The text formats some fields are written in (sizes, volumes, ports) are parsed in ``node/spec_formats.py``,
which registers them as the schema formats this table names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import schema
from .spec_formats import MIN_MEMORY, PortMapping, memory_bytes, parse_port

# The Docker reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest], in ASCII.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE_PATTERN = (
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    rf"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)

MAX_ARGUMENTS = 1024
MAX_STRING = 64 * 1024
MAX_RETRIES = 100
MAX_TIMEOUT = 365 * 86400
MAX_CPUS = 1024
MAX_ID = 128
PULL_POLICIES = ("missing", "always", "never")
MAX_VOLUMES = 64
MAX_PATH = 4096
MAX_PORTS = 64
RESTART_POLICIES = ("never", "on-failure", "always")
MAX_HEALTH_SECONDS = 86400
MIN_HEALTH_SECONDS = 0.001
"""Docker refuses a healthcheck interval or timeout below one millisecond."""
MAX_HEALTH_RETRIES = 100


# -- the field table: every rule a JobSpec obeys, as the schema that rpc.discover publishes -------------

_TEXT: dict[str, Any] = {"type": "string", "maxLength": MAX_STRING, "pattern": "^[^\\x00]*$"}
_HEALTH_SECONDS: dict[str, Any] = {"type": "number", "minimum": MIN_HEALTH_SECONDS, "maximum": MAX_HEALTH_SECONDS}
_TEXT_LIST: dict[str, Any] = {"type": ["array", "null"], "items": _TEXT, "maxItems": MAX_ARGUMENTS}


def _text_map(key_pattern: str, description: str, **extra: Any) -> dict[str, Any]:
    names: dict[str, Any] = {"type": "string", "maxLength": 256, "pattern": key_pattern, **extra}
    return {
        "type": ["object", "null"],
        "propertyNames": names,
        "additionalProperties": _TEXT,
        "maxProperties": 1024,
        "description": description,
    }


MAX_REPLICAS = 10_000
SELECTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"type": "string", "maxLength": 128, "pattern": r"^[A-Za-z0-9_./-]{1,128}$"},
    "additionalProperties": {"type": "string", "maxLength": 256, "pattern": "^[^\\x00]*$"},
    "maxProperties": 64,
    "description": "node labels a node must carry, each KEY: VALUE (all of them) to run the job",
}

SPEC_FIELDS: dict[str, dict[str, Any]] = {
    "image": {
        "type": "string",
        "minLength": 1,
        "maxLength": 512,
        "pattern": IMAGE_PATTERN,
        "patternMessage": "is not a valid image reference (lowercase name, optional host, :tag and @digest)",
        "description": "a Docker image reference",
    },
    "arguments": {**_TEXT_LIST, "description": "the command and its arguments (null: none)"},
    "env": _text_map(r"^[A-Za-z_][A-Za-z0-9_.-]*$", "environment variables (null: none)"),
    "name": {
        "type": "string",
        "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$",
        "description": "a display name",
    },
    "labels": _text_map(
        r"^[A-Za-z0-9_./-]{1,128}$",
        "labels to filter by; keys starting with 'cmnode.' are reserved",
        **{"not": {"pattern": r"^cmnode\.", "description": "keys starting with 'cmnode.' are reserved"}},
    ),
    "entrypoint": {**_TEXT_LIST, "description": "overrides the image's entrypoint"},
    "resources": {
        "type": ["object", "null"],
        "properties": {
            "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPUS, "description": "CPUs"},
            "memory": {
                "oneOf": [
                    {"type": "integer", "minimum": MIN_MEMORY, "maximum": schema.INT64_MAX, "description": "bytes"},
                    {"type": "string", "format": "byte-size", "description": "a size such as '256m'"},
                ],
                "description": "bytes (>= 6 MiB), or a size such as '256m'",
            },
        },
        "additionalProperties": False,
        "description": "limits applied to the container",
    },
    "volumes": {
        "type": ["array", "null"],
        "items": {"type": "string", "minLength": 3, "maxLength": MAX_PATH, "format": "volume"},
        "maxItems": MAX_VOLUMES,
        "description": "mounts, each 'SOURCE:TARGET[:ro]': a named volume, or a host path where the node's "
        "--allow-host-path allows it (null: none)",
    },
    "ports": {
        "type": ["array", "null"],
        "items": {"type": "string", "minLength": 3, "maxLength": 64, "format": "port"},
        "maxItems": MAX_PORTS,
        "description": "ports published on the node, each '[IP:]HOST:CONTAINER[/tcp|/udp]' such as '8080:80' or "
        "'127.0.0.1:53:53/udp'; a node whose host port is taken does not fit the job (null: none)",
    },
    "timeout": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "maximum": MAX_TIMEOUT,
        "description": "seconds before the container is stopped",
    },
    "retries": {"type": "integer", "minimum": 0, "maximum": MAX_RETRIES, "description": "attempts after the first"},
    "pull": {"type": "string", "enum": list(PULL_POLICIES), "description": "when to pull the image"},
    "restart": {
        "type": "string",
        "enum": list(RESTART_POLICIES),
        "description": "when the container is started again: never (default; 'retries' still retries a failure), "
        "on-failure (a non-zero exit, up to 'retries' times when given, else without limit) or always (a "
        "service: after any exit, until Stop); with backoff, reset once a run lasted 10 s",
    },
    "healthcheck": {
        "type": ["object", "null"],
        "properties": {
            "command": {
                "oneOf": [
                    {"type": "string", "minLength": 1, "maxLength": MAX_STRING, "pattern": "^[^\\x00]*$"},
                    {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": MAX_ARGUMENTS},
                ],
                "description": "a shell command (run by /bin/sh in the container) or a command and its arguments; "
                "exit 0 means healthy",
            },
            "interval": {**_HEALTH_SECONDS, "description": "seconds between checks (Docker's default: 30)"},
            "timeout": {**_HEALTH_SECONDS, "description": "seconds before a check counts as failed (default: 30)"},
            "retries": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_HEALTH_RETRIES,
                "description": "failed checks in a row before the container is unhealthy (default: 3)",
            },
            "start_period": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_HEALTH_SECONDS,
                "description": "seconds after start during which failed checks do not count (default: 0)",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
        "description": "Docker's own healthcheck; an unhealthy container is restarted per 'restart' (never: it is "
        "left running and shown unhealthy)",
    },
    "placement": {
        "description": "which nodes run the job: every node ('all'), N of them ({'replicas': N}) or the listed "
        "ones ({'nodes': [...]}); 'selector' narrows any of them to nodes carrying those labels",
        "oneOf": [
            {"type": ["string", "null"], "enum": ["all", None]},
            {
                "type": "object",
                "properties": {"selector": SELECTOR_SCHEMA},
                "required": ["selector"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer", "minimum": 1, "maximum": MAX_REPLICAS},
                    "selector": SELECTOR_SCHEMA,
                },
                "required": ["replicas"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "nodes": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
                        "minItems": 1,
                        "maxItems": MAX_ARGUMENTS,
                    },
                    "selector": SELECTOR_SCHEMA,
                },
                "required": ["nodes"],
                "additionalProperties": False,
            },
        ],
    },
}

JOB_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "What to run. Unknown fields are refused.",
    "properties": SPEC_FIELDS,
    "required": ["image"],
    "additionalProperties": False,
}
"""The one definition of a valid spec: ``JobSpec.from_json`` checks it, ``rpc.discover`` publishes it."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Limits applied to the container; ``memory`` is in bytes."""

    cpus: float | None = None
    memory: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("cpus", self.cpus), ("memory", self.memory)) if v is not None}


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Which nodes run a job: every node (``all``), ``replicas`` of them, or the listed ``nodes``; ``selector``
    narrows each to the nodes whose labels hold every one of its pairs."""

    mode: str = "all"
    replicas: int | None = None
    nodes: tuple[str, ...] = ()
    selector: Mapping[str, str] = field(default_factory=dict)

    @property
    def default(self) -> bool:
        """Plain ``all``: what a spec without ``placement`` means (and is written as, byte for byte)."""
        return self.mode == "all" and not self.selector

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node carrying ``labels`` is one the selector admits."""
        return all(labels.get(key) == value for key, value in self.selector.items())

    def to_json(self) -> Any:
        out: dict[str, Any]
        if self.mode == "all":
            if not self.selector:
                return "all"
            out = {}
        elif self.mode == "replicas":
            out = {"replicas": self.replicas}
        else:
            out = {"nodes": list(self.nodes)}
        if self.selector:
            out["selector"] = dict(self.selector)
        return out

    @classmethod
    def from_valid(cls, value: Any) -> Placement:
        if not isinstance(value, dict):
            return cls()
        selector = dict(value.get("selector") or {})
        if "replicas" in value:
            return cls(mode="replicas", replicas=value["replicas"], selector=selector)
        if "nodes" in value:
            return cls(mode="nodes", nodes=tuple(value["nodes"]), selector=selector)
        return cls(selector=selector)


@dataclass(frozen=True, kw_only=True)
class Healthcheck:
    """Docker's healthcheck for the container: ``command`` a shell line (CMD-SHELL) or an argument list (CMD);
    the times in seconds, None meaning Docker's default."""

    command: str | tuple[str, ...]
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command if isinstance(self.command, str) else list(self.command)}
        for name in ("interval", "timeout", "retries", "start_period"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        return out

    @classmethod
    def from_valid(cls, value: Mapping[str, Any]) -> Healthcheck:
        command = value["command"]

        def seconds(name: str) -> float | None:
            return None if value.get(name) is None else float(value[name])

        return cls(
            command=command if isinstance(command, str) else tuple(command),
            interval=seconds("interval"),
            timeout=seconds("timeout"),
            retries=value.get("retries"),
            start_period=seconds("start_period"),
        )


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a user asks for: the original service's ``image``, ``arguments`` and ``env``, plus options."""

    image: str
    arguments: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    resources: Resources = field(default_factory=Resources)
    volumes: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    pull: str = "missing"
    restart: str = "never"
    healthcheck: Healthcheck | None = None
    placement: Placement = field(default_factory=Placement)

    @classmethod
    def from_json(cls, data: Any, *, path: str = "") -> JobSpec:
        """Check ``data`` against ``JOB_SPEC_SCHEMA`` and build the spec.

        Raises:
            ValidationError: with one entry per bad field (unknown fields included), named under ``path``.
        """
        schema.check(JOB_SPEC_SCHEMA, data, path=path)
        return cls.from_valid(data)

    @classmethod
    def from_valid(cls, data: Mapping[str, Any]) -> JobSpec:
        """Build a spec from a value that ``JOB_SPEC_SCHEMA`` accepted (the RPC layer checked it already).

        Go's encoder sends null for an empty slice or map, so null means "none" wherever it is allowed.
        """
        resources = data.get("resources") or {}
        memory = resources.get("memory")
        cpus = resources.get("cpus")
        timeout = data.get("timeout")
        entrypoint = data.get("entrypoint")
        return cls(
            image=data["image"],
            arguments=tuple(data.get("arguments") or ()),
            env=dict(data.get("env") or {}),
            name=data.get("name"),
            labels=dict(data.get("labels") or {}),
            entrypoint=tuple(entrypoint) if entrypoint is not None else None,
            resources=Resources(
                cpus=float(cpus) if cpus is not None else None,
                memory=memory_bytes(memory) if memory is not None else None,
            ),
            volumes=tuple(data.get("volumes") or ()),
            ports=tuple(data.get("ports") or ()),
            timeout=float(timeout) if timeout is not None else None,
            retries=data.get("retries", 0),
            pull=data.get("pull", "missing"),
            restart=data.get("restart", "never"),
            healthcheck=Healthcheck.from_valid(data["healthcheck"]) if data.get("healthcheck") else None,
            placement=Placement.from_valid(data.get("placement")),
        )

    @property
    def port_mappings(self) -> tuple[PortMapping, ...]:
        """``ports`` parsed (the schema admitted each, so none raises)."""
        return tuple(parse_port(text) for text in self.ports)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "arguments": list(self.arguments), "env": dict(self.env)}
        if self.name is not None:
            out["name"] = self.name
        if self.labels:
            out["labels"] = dict(self.labels)
        if self.entrypoint is not None:
            out["entrypoint"] = list(self.entrypoint)
        if self.resources.to_json():
            out["resources"] = self.resources.to_json()
        if self.volumes:
            out["volumes"] = list(self.volumes)
        if self.ports:
            out["ports"] = list(self.ports)
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.retries:
            out["retries"] = self.retries
        if self.pull != "missing":
            out["pull"] = self.pull
        if self.restart != "never":
            out["restart"] = self.restart
        if self.healthcheck is not None:
            out["healthcheck"] = self.healthcheck.to_json()
        if not self.placement.default:
            out["placement"] = self.placement.to_json()
        return out
