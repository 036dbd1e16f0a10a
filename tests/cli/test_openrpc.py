"""``rpc.discover``: a valid OpenRPC 1.2 document listing every method, with the schemas the node validates with.

No copy of the OpenRPC meta-schema ships in a Python package and there is no internet, so the structural rules
of the OpenRPC 1.2.6 specification (openrpc, info, method and content-descriptor objects) are written out here
as a JSON Schema; every embedded schema is checked against JSON Schema draft-07, as the specification requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from jsonschema import Draft7Validator

from rpc.methods import build_methods
from tests.support import Nodes, base_config, http_client

_EXTENSIONS: dict[str, Any] = {"^x-": {}}
_TEXT = {"type": "string"}
_JSON_SCHEMA = {"type": ["object", "boolean"]}
_REFERENCE = {
    "type": "object",
    "required": ["$ref"],
    "properties": {"$ref": {"type": "string", "format": "uri-reference"}},
}
_CONTENT_DESCRIPTOR = {
    "type": "object",
    "required": ["name", "schema"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "summary": _TEXT,
        "description": _TEXT,
        "required": {"type": "boolean"},
        "schema": _JSON_SCHEMA,
        "deprecated": {"type": "boolean"},
    },
    "patternProperties": _EXTENSIONS,
    "additionalProperties": False,
}
_CONTENT_OR_REF = {"oneOf": [_CONTENT_DESCRIPTOR, _REFERENCE]}
_METHOD = {
    "type": "object",
    "required": ["name", "params", "result"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "summary": _TEXT,
        "description": _TEXT,
        "servers": {"type": "array"},
        "tags": {"type": "array"},
        "paramStructure": {"type": "string", "enum": ["by-position", "by-name", "either"]},
        "params": {"type": "array", "items": _CONTENT_OR_REF},
        "result": _CONTENT_OR_REF,
        "errors": {"type": "array"},
        "links": {"type": "array"},
        "examples": {"type": "array"},
        "deprecated": {"type": "boolean"},
        "externalDocs": {"type": "object"},
    },
    "patternProperties": _EXTENSIONS,
    "additionalProperties": False,
}
OPENRPC_1_2 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["openrpc", "info", "methods"],
    "properties": {
        "openrpc": {"type": "string", "pattern": r"^1\.2\.[0-6]$"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {
                "title": _TEXT,
                "description": _TEXT,
                "termsOfService": {"type": "string", "format": "uri"},
                "version": _TEXT,
                "contact": {"type": "object"},
                "license": {"type": "object"},
            },
            "patternProperties": _EXTENSIONS,
            "additionalProperties": False,
        },
        "servers": {"type": "array"},
        "methods": {"type": "array", "items": {"oneOf": [_METHOD, _REFERENCE]}},
        "components": {"type": "object"},
        "externalDocs": {"type": "object"},
    },
    "patternProperties": _EXTENSIONS,
    "additionalProperties": False,
}


def test_the_structural_schema_is_itself_valid() -> None:
    Draft7Validator.check_schema(OPENRPC_1_2)
    assert not Draft7Validator(OPENRPC_1_2).is_valid({"openrpc": "1.2.6", "info": {"title": "x"}, "methods": []})
    assert not Draft7Validator(OPENRPC_1_2).is_valid(
        {"openrpc": "1.2.6", "info": {"title": "x", "version": "1"}, "methods": [{"name": "m", "params": []}]}
    )


@pytest.mark.slow  # a node in this process: a libp2p host
async def test_discover_is_valid_openrpc_and_lists_every_method(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with http_client() as http:
        config = base_config(tmp_path / "node", docker_host="unix:///nonexistent.sock")  # no job runs
        node = await Nodes(nursery, http).start(config)
        with trio.fail_after(30):
            document: dict[str, Any] = await node.rpc.call("rpc.discover")
        await node.stop()
    running = node.running

    errors = sorted(Draft7Validator(OPENRPC_1_2).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    names = [m["name"] for m in document["methods"]]
    assert len(names) == len(set(names)), "method names must be unique"

    served = {m.name: m for m in build_methods(running.node)}  # what the dispatcher routes and validates with
    assert sorted(names) == sorted(served)
    for method in document["methods"]:
        spec = served[method["name"]]
        params = spec.params.get("properties", {})
        assert [p["name"] for p in method["params"]] == list(params), method["name"]
        for param in method["params"]:
            assert param["schema"] == params[param["name"]]  # the very schema requests are checked against
            assert param["required"] == (param["name"] in spec.params.get("required", []))
            Draft7Validator.check_schema(param["schema"])
        assert method["result"]["schema"] == dict(spec.result)
        Draft7Validator.check_schema(method["result"]["schema"])
