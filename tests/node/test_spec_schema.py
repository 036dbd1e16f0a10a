"""The published schema and the model are one checker: whatever the schema admits, the model admits.

Values are generated from ``JOB_SPEC_SCHEMA`` by hypothesis-jsonschema, which reads the schema the way the
JSON Schema specification does, independently of ``node/schema.py``; an independent validator (the
``jsonschema`` package) confirms that what the model refuses, the published schema refuses too.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from node.errors import ValidationError
from node.model import EXECUTION_SCHEMA, JOB_SPEC_SCHEMA, MIN_MEMORY, Execution, JobSpec
from node.spec_formats import PortMapping, parse_port

_SIZES = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(min_value=MIN_MEMORY // 1024**2, max_value=10**6),
    st.sampled_from(["m", "M", "g"]),
) | st.integers(min_value=MIN_MEMORY, max_value=10**15 - 1).map(str)  # at most 15 digits

# Generated specs are large (strings up to 64 KiB, lists of 1024): about 0.1 s each alone, and several times that
# late in the full run, whose process holds a large heap for the collector to walk (200 examples once took over
# 300 s there). The fast path tries a few; the full run (scripts/test sets CMNODE_REQUIRE_ALL) tries more.
_EXAMPLES = 60 if os.environ.get("CMNODE_REQUIRE_ALL") == "1" else 12
_SEGMENT = st.from_regex(r"\A[a-z0-9_][a-z0-9_.-]{0,8}\Z").filter(lambda part: part not in (".", ".."))
_PATHS = st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
_VOLUMES = st.builds(
    lambda source, target, mode: f"{source}:{target}{mode}",
    _PATHS | st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{1,20}\Z"),
    _PATHS,
    st.sampled_from(["", ":ro", ":rw"]),
)
_PORT_NUMBERS = st.integers(min_value=1, max_value=65535)
_PORTS = st.builds(
    lambda ip, host, container, proto: f"{ip}{host}:{container}{proto}",
    st.sampled_from(["", "127.0.0.1:", "0.0.0.0:", "[::1]:", "[fe80::1]:"]),
    _PORT_NUMBERS,
    _PORT_NUMBERS,
    st.sampled_from(["", "/tcp", "/udp"]),
)
_FORMATS = {"byte-size": _SIZES, "volume": _VOLUMES, "port": _PORTS}

_SETTINGS = settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _standard_port(text: str) -> bool:
    """The port format read from its description, written apart from ``parse_port``."""
    text, _, protocol = text.partition("/")
    family: type[ipaddress.IPv4Address | ipaddress.IPv6Address] = ipaddress.IPv4Address
    if text.startswith("["):
        address, _, text = text[1:].partition("]:")
        family = ipaddress.IPv6Address
    else:
        parts = text.split(":")
        address, text = ":".join(parts[:-2]), ":".join(parts[-2:])
    host, _, container = text.partition(":")
    try:
        if address:
            family(address)
    except ValueError:
        return False
    ports_ok = all(p.isdigit() and 1 <= int(p) <= 65535 for p in (host, container))
    return ports_ok and protocol in ("", "tcp", "udp")


def _standard_errors(schema: dict[str, Any], value: Any) -> list[str]:
    checker = jsonschema.FormatChecker()
    checker.checks("byte-size")(lambda v: not isinstance(v, str) or v.isdigit() or v[-1].lower() in "bkmg")
    checker.checks("volume")(lambda v: not isinstance(v, str) or v.count(":") in (1, 2))
    checker.checks("port")(lambda v: not isinstance(v, str) or _standard_port(v))
    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    return [error.message for error in validator.iter_errors(value)]


@pytest.mark.timeout(900)  # its examples slow down with the heap of the process (above)
@_SETTINGS
@given(from_schema(JOB_SPEC_SCHEMA, custom_formats=_FORMATS))
def test_every_spec_the_schema_admits_the_model_admits(data: dict[str, Any]) -> None:
    spec = JobSpec.from_json(data)
    assert JobSpec.from_json(spec.to_json()) == spec  # and its canonical form (what is signed) is stable
    assert JobSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


@_SETTINGS
@given(from_schema(EXECUTION_SCHEMA))
def test_every_execution_the_schema_admits_the_model_admits(data: dict[str, Any]) -> None:
    execution = Execution.from_json(data)
    assert Execution.from_json(execution.to_json()) == execution


@pytest.mark.parametrize(
    "data",
    [
        {"image": 123, "name": "bad name!"},
        {"image": "Busybox"},
        {"image": "busybox", "timeout": 0},
        {"image": "busybox", "resources": {"cpus": 0}},
        {"image": "busybox", "resources": {"memory": 1024}},
        {"image": "busybox", "resources": {"memory": 2**63}},  # past int64: the schema said nothing (hypothesis)
        {"image": "busybox", "labels": {"cmnode.node_id": "x"}},
        {"image": "busybox", "env": {"1BAD": "x"}},
        {"image": "busybox", "placement": {"nodes": []}},
        {"image": "busybox", "placement": {"replicas": 0}},
        {"image": "busybox", "retries": 101},
        {"image": "busybox", "surprise": 1},
        {"image": "busybox", "ports": ["8080"]},
        {"image": "busybox", "ports": ["0:80"]},
        {"image": "busybox", "ports": ["8080:65536"]},
        {"image": "busybox", "ports": ["8080:80/sctp"]},
        {"image": "busybox", "ports": ["::1:8080:80"]},
        {"image": "busybox", "ports": ["300.0.0.1:8080:80"]},
    ],
)
def test_what_the_model_refuses_the_published_schema_refuses(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        JobSpec.from_json(data)
    assert _standard_errors(JOB_SPEC_SCHEMA, data)


def _execution(**changes: Any) -> dict[str, Any]:
    base = Execution(job_id="j", node_id="n", created_at=1.0, updated_at=1.0).to_json()
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"version": 2**63}, "execution.version"),  # once an OverflowError in SQLite that killed the node
        ({"version": 0}, "execution.version"),
        ({"created_at": float("inf")}, "execution.created_at"),
        ({"updated_at": float("nan")}, "execution.updated_at"),
        ({"exit_code": 10**30}, "execution.exit_code"),
        ({"error": "\ud800"}, "execution.error"),
        ({"history": [{"attempt": 1, "started_at": float("inf")}]}, "execution.history[0].started_at"),
        ({"history": [{"surprise": 1}]}, "execution.history[0].surprise"),
    ],
)
def test_hostile_executions_are_refused_with_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Execution.from_json(_execution(**changes))
    assert field in {e["field"] for e in info.value.errors}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", PortMapping(None, 8080, 80, "tcp")),
        ("53:53/udp", PortMapping(None, 53, 53, "udp")),
        ("127.0.0.1:8080:80/tcp", PortMapping("127.0.0.1", 8080, 80, "tcp")),
        ("[::1]:65535:1", PortMapping("::1", 65535, 1, "tcp")),
    ],
)
def test_ports_parse_to_what_docker_is_given(text: str, expected: PortMapping) -> None:
    assert parse_port(text) == expected
    spec = JobSpec.from_json({"image": "busybox", "ports": [text]})
    assert spec.port_mappings == (expected,)
    assert JobSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "text", ["80", "0:80", "8080:65536", "1:1/sctp", "::1:8080:80", "[127.0.0.1]:1:1", "01.2.3.4:1:1", "a:1:1"]
)
def test_malformed_ports_are_refused_with_the_field(text: str) -> None:
    with pytest.raises(ValueError):
        parse_port(text)
    with pytest.raises(ValidationError) as info:
        JobSpec.from_json({"image": "busybox", "ports": ["8080:80", text]})
    assert {e["field"] for e in info.value.errors} == {"ports[1]"}
