"""A validator for the small JSON Schema subset that describes RPC params.

The same schema dicts feed the OpenRPC document and request validation, so the published contract and
what the node accepts cannot drift apart. Supported keywords: ``type`` (a name or a list of names),
``properties``, ``required``, ``additionalProperties`` (``false`` or a schema), ``items``, ``enum``,
``minimum``, ``maximum``, ``minLength``, ``maxLength``, ``minItems``, ``maxItems``, ``pattern`` and
``oneOf``; anything else (``description``, ``title``, ``default``...) is documentation and ignored.

Every error is collected, so a caller learns all of them in one round trip.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from node.errors import ValidationError

ROOT = "params"
"""The field name reported for errors about the value itself (empty path): it is the request's params."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "object": ("an object", lambda v: isinstance(v, dict)),
    "array": ("an array", lambda v: isinstance(v, list)),
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", _is_int),
    "number": ("a number", _is_number),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "null": ("null", lambda v: v is None),
}


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _same(a: Any, b: Any) -> bool:
    """Equality that, unlike ``==``, does not confuse ``True`` with ``1``."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _type_ok(schema: Mapping[str, Any], value: Any) -> bool:
    wanted = schema.get("type")
    if wanted is None:
        return True
    names = [wanted] if isinstance(wanted, str) else wanted
    return any(_TYPES[name][1](value) for name in names)


def validate(schema: Mapping[str, Any], value: Any, *, path: str = "") -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema``, as ``{"field", "message"}`` dicts (empty when valid).

    ``field`` is a dotted path (``env.FOO``, ``arguments[2]``); ``path`` prefixes it for nested use.
    """
    errors: list[dict[str, str]] = []
    _validate(schema, value, path, errors)
    return errors


def check(schema: Mapping[str, Any], value: Any) -> None:
    """Raise ``ValidationError`` listing every error, or return quietly when ``value`` is valid."""
    errors = validate(schema, value)
    if errors:
        raise ValidationError(errors)


def _validate(schema: Mapping[str, Any], value: Any, path: str, errors: list[dict[str, str]]) -> None:
    field = path or ROOT
    wanted = schema.get("type")
    if wanted is not None and not _type_ok(schema, value):
        names = [wanted] if isinstance(wanted, str) else wanted
        expected = " or ".join(_TYPES[name][0] for name in names)
        errors.append({"field": field, "message": f"must be {expected}, got {type(value).__name__}"})
        return  # the other keywords would only add noise about a value of the wrong kind

    enum = schema.get("enum")
    if enum is not None and not any(_same(value, choice) for choice in enum):
        choices = ", ".join(json.dumps(choice) for choice in enum)
        errors.append({"field": field, "message": f"must be one of {choices}"})

    if isinstance(value, str):
        _string(schema, value, field, errors)
    elif _is_number(value):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and value < low:
            errors.append({"field": field, "message": f"must be >= {low}"})
        if high is not None and value > high:
            errors.append({"field": field, "message": f"must be <= {high}"})
    elif isinstance(value, list):
        _array(schema, value, path, errors)
    elif isinstance(value, dict):
        _object(schema, value, path, errors)

    alternatives = schema.get("oneOf")
    if alternatives is not None:
        _one_of(alternatives, value, path, errors)


def _string(schema: Mapping[str, Any], value: str, field: str, errors: list[dict[str, str]]) -> None:
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    if shortest is not None and len(value) < shortest:
        errors.append({"field": field, "message": f"must be at least {_plural(shortest, 'character')} long"})
    if longest is not None and len(value) > longest:
        errors.append({"field": field, "message": f"must be at most {_plural(longest, 'character')} long"})
    pattern = schema.get("pattern")
    if pattern is not None and _regex(pattern).search(value) is None:
        errors.append({"field": field, "message": f"must match the pattern {pattern}"})


def _array(schema: Mapping[str, Any], value: list[Any], path: str, errors: list[dict[str, str]]) -> None:
    field = path or ROOT
    fewest, most = schema.get("minItems"), schema.get("maxItems")
    if fewest is not None and len(value) < fewest:
        errors.append({"field": field, "message": f"must have at least {_plural(fewest, 'item')}"})
    if most is not None and len(value) > most:
        errors.append({"field": field, "message": f"must have at most {_plural(most, 'item')}"})
    items = schema.get("items")
    if items is not None:
        for i, item in enumerate(value):
            _validate(items, item, f"{path}[{i}]", errors)


def _object(schema: Mapping[str, Any], value: dict[str, Any], path: str, errors: list[dict[str, str]]) -> None:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            errors.append({"field": prefix + name, "message": "is required"})
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = properties.get(key)
        if sub is not None:
            _validate(sub, item, prefix + key, errors)
        elif extra is False:
            errors.append({"field": prefix + key, "message": "unknown field"})
        elif isinstance(extra, Mapping):
            _validate(extra, item, prefix + key, errors)


def _one_of(alternatives: list[Mapping[str, Any]], value: Any, path: str, errors: list[dict[str, str]]) -> None:
    results = [validate(alternative, value, path=path) for alternative in alternatives]
    matched = sum(1 for result in results if not result)
    if matched == 1:
        return
    field = path or ROOT
    if matched > 1:
        errors.append({"field": field, "message": "matches more than one of the allowed forms"})
        return
    # When only one alternative has the right type, its own errors say far more than a generic message.
    typed = [result for alternative, result in zip(alternatives, results, strict=True) if _type_ok(alternative, value)]
    if len(typed) == 1:
        errors.extend(typed[0])
    else:
        errors.append({"field": field, "message": f"must match one of the {len(alternatives)} allowed forms"})
