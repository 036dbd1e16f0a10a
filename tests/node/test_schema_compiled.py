"""The compiled predicate (``schema_compiled.predicate``) and the collecting walk (``schema._validate``) give the
same verdict on every value: ``validate`` trusts the predicate for a valid value and walks only a refused one, so
a predicate more lenient than the walk would let through what the walk refuses.

Values are arbitrary JSON (lone surrogates, 64-bit edges, NaN and infinities, deep nesting) and mutations of
valid records at a random place, against every schema the node checks peers' and users' input with, plus small
schemas for each keyword."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import schema, schema_compiled, schema_rules
from node.allocation import ALLOCATION_SCHEMA
from node.model import CANCEL_SCHEMA, EXECUTION_SCHEMA, JOB_SCHEMA, JOB_SPEC_SCHEMA
from node.noderecord import DRAIN_SCHEMA, NODE_RECORD_SCHEMA

PEER = "12D3KooWEF1qsTuaA5WgAE4QgADY3i1uxaDUMb8BoGfhsVSunBS9"
SPEC = {
    "image": "cmnode-test/busybox:latest",
    "arguments": ["sh", "-c", "true"],
    "env": {"A": "1"},
    "labels": {"bench": "0"},
    "resources": {"cpus": 0.5, "memory": "256m"},
    "ports": ["8080:80"],
    "volumes": ["data:/data:ro"],
    "timeout": 30,
    "retries": 2,
    "restart": "on-failure",
    "healthcheck": {"command": ["true"], "interval": 1},
    "placement": {"replicas": 2, "selector": {"zone": "a"}},
}
JOB = {"job_id": "j-1", "spec": SPEC, "origin": PEER, "created_at": 1.7e9, "signature": "c2ln"}
EXECUTION = {
    "job_id": "j-1", "node_id": PEER, "state": "complete", "attempt": 2, "container_id": None, "exit_code": 0,
    "error": None, "created_at": 1.7e9, "updated_at": 1.7e9 + 1, "started_at": 1.7e9, "finished_at": None,
    "history": [{"attempt": 1, "state": "failed", "exit_code": 1, "error": "x", "container_id": "c",
                 "started_at": 1.0, "finished_at": 2.0}],
    "version": 4, "health": "healthy", "signature": "c2ln",
}  # fmt: skip
CANCEL = {"job_id": "j-1", "by": PEER, "at": 1.7e9, "signature": "c2ln"}

KEYWORDS: list[dict[str, Any]] = [
    {},
    {"type": ["integer", "boolean"]},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 10},
    {"type": "integer", "exclusiveMinimum": -1, "maximum": 2**63 - 1},
    {"enum": [1, True, "a", None, 1.5]},
    {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^a+$"},
    {"type": "string", "format": "byte-size"},
    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
    {"type": "array"},
    {"type": "object", "additionalProperties": {}},
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a", "b"], "maxProperties": 2},
    {"type": "object", "propertyNames": {"pattern": "^[a-z]+$", "not": {"pattern": "^x"}}},
    {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 5}, {"type": "string"}]},
    {"not": {"type": "string"}},
    {"type": ["object", "null"], "properties": {"k": {"oneOf": [{"type": "null"}, {"enum": [None, 0]}]}}},
]
RECORDS = [
    (JOB_SCHEMA, JOB),
    (EXECUTION_SCHEMA, EXECUTION),
    (CANCEL_SCHEMA, CANCEL),
    (JOB_SPEC_SCHEMA, SPEC),
]
SCHEMAS = [JOB_SCHEMA, EXECUTION_SCHEMA, CANCEL_SCHEMA, JOB_SPEC_SCHEMA, NODE_RECORD_SCHEMA, DRAIN_SCHEMA,
           ALLOCATION_SCHEMA, *KEYWORDS]  # fmt: skip

_TEXT = st.text(st.characters(exclude_categories=()), max_size=6) | st.sampled_from(
    ["", "a", "aa", "x", "\ud800", "a\ud800", "cmnode.x", "complete", "256m", "8080:80", "a\n", "\x00", PEER, "j-1"]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from([0, 1, -1, 5, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**11 + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, 0.5, 1.0, 5.0, 1e400, 1.7e9])
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _agree(rule: dict[str, Any], value: Any) -> None:
    errors: list[dict[str, str]] = []
    schema._validate(rule, value, "", errors)
    assert schema_compiled.predicate(rule)(value) == (not errors), (json.dumps(rule)[:200], repr(value)[:300], errors)


def _subschemas(rule: Any) -> list[dict[str, Any]]:
    """``rule`` and every schema nested in it."""
    found, stack = [], [rule]
    while stack:
        item = stack.pop()
        found.append(item)
        for key in ("items", "additionalProperties", "propertyNames", "not"):
            if isinstance(item.get(key), dict):
                stack.append(item[key])
        stack += list(item.get("properties", {}).values()) + list(item.get("oneOf", []))
    return found


def _edges(rule: dict[str, Any]) -> list[Any]:
    """Values at each bound ``rule`` names: the bound, either side of it, as int and float; strings and lists
    one either side of each length; each enum choice and its look-alikes (True for 1, 1.0 for 1)."""
    out: list[Any] = []
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in rule:
            bound = rule[key]
            out += [bound, bound - 1, bound + 1, float(bound), bound - 0.5, bound + 0.5]
    for key in ("minLength", "maxLength", "minItems", "maxItems", "maxProperties"):
        if key in rule:
            for n in (rule[key] - 1, rule[key], rule[key] + 1):
                if n >= 0:
                    out += ["a" * n, "\ud800" * n, [1] * n, ["a"] * n, {f"k{i}": "v" for i in range(n)}]
    for choice in rule.get("enum", []):
        out += [choice, str(choice), [choice]]
        if isinstance(choice, int | float) and not isinstance(choice, bool):
            out += [float(choice), bool(choice)]
    return out


_SAMPLES: list[Any] = [
    None, True, False, 0, 1, -1, 0.0, 1.5, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, float("nan"), float("inf"),
    "", "a", "\ud800", "a\n", "\x00", "cmnode.x", "x", "256m", "8080:80", "data:/data", PEER, [], {}, ["a"],
    [1, "\ud800"], {"a": 1}, {"\ud800": 1}, {"selector": {}}, {"replicas": 1}, {"command": "x"}, JOB, EXECUTION,
]  # fmt: skip


@pytest.mark.parametrize("rule", SCHEMAS, ids=range(len(SCHEMAS)))
def test_same_verdict_at_every_edge_of_every_nested_schema(rule: dict[str, Any]) -> None:
    for sub in _subschemas(rule):
        for value in [*_SAMPLES, *_edges(sub)]:
            _agree(sub, value)
            _agree(sub, [value])
            _agree(sub, {"k": value})


def _places(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) under ``value``."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        keys = range(len(item)) if isinstance(item, list) else list(item) if isinstance(item, dict) else []
        for key in keys:
            found.append((item, key))
            stack.append(item[key])
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(rule=st.sampled_from(SCHEMAS), value=_VALUES)
def test_same_verdict_on_any_value(rule: dict[str, Any], value: Any) -> None:
    _agree(rule, value)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(record=st.sampled_from(RECORDS), data=st.data())
def test_same_verdict_on_a_record_changed_in_one_place(record: tuple[dict[str, Any], Any], data: Any) -> None:
    rule, value = record[0], copy.deepcopy(record[1])
    container, key = data.draw(st.sampled_from(_places(value)))
    how = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if how == "replace" or isinstance(container, list):
        container[key] = data.draw(_VALUES)
    elif how == "delete":
        del container[key]
    else:
        container[data.draw(_TEXT)] = data.draw(_VALUES)
    _agree(rule, value)


@pytest.mark.parametrize(("rule", "value"), RECORDS)
def test_the_records_are_valid(rule: dict[str, Any], value: Any) -> None:
    assert schema_compiled.predicate(rule)(value)
    assert schema.validate(rule, value) == []


def test_deep_nesting_is_refused_by_both() -> None:
    deep: Any = "x"
    for _ in range(schema_rules.MAX_DEPTH + 1):
        deep = [deep]
    _agree({}, deep)
    _agree(schema_rules.ANYTHING, deep)
    assert not schema_compiled.predicate(schema_rules.ANYTHING)(deep)
    assert schema_compiled.predicate(schema_rules.ANYTHING)(deep[0])


def test_a_refused_value_still_lists_every_error() -> None:
    assert schema.validate(EXECUTION_SCHEMA, {**EXECUTION, "state": "x", "version": 0}, path="execution") == [
        {"field": "execution.state", "message": "must be one of " + ", ".join(
            json.dumps(s) for s in EXECUTION_SCHEMA["properties"]["state"]["enum"])},
        {"field": "execution.version", "message": "must be >= 1"},
    ]  # fmt: skip


def test_a_schema_made_per_call_is_not_kept_for_ever() -> None:
    for _ in range(schema_compiled.MAX_COMPILED * 2):
        assert schema.validate({"type": "string"}, "a") == []
    assert len(schema_compiled._COMPILED) <= schema_compiled.MAX_COMPILED


def test_a_schema_the_compiler_cannot_read_fails_as_before() -> None:
    with pytest.raises(KeyError):
        schema.validate({"type": "no-such-type"}, 1)
