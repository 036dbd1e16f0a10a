"""The one checker: a validator for the JSON Schema subset that describes everything cmnode accepts.

The model (``node/model.py``) writes its rules as schemas; the same dicts validate RPC params, gossip and
catch-up, and are published by ``rpc.discover``, so the contract and what a node accepts cannot drift apart.
Supported keywords: ``type`` (a name or a list of names), ``properties``, ``required``,
``additionalProperties`` (``false`` or a schema), ``propertyNames``, ``items``, ``enum``, ``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength``, ``maxLength``, ``minItems``,
``maxItems``, ``maxProperties``, ``pattern``, ``format`` (the names in ``FORMATS``), ``not`` and ``oneOf``;
anything else (``description``, ``title``, ``default``...) is documentation and ignored.

Three rules hold for every value, whatever its schema says, because every value may end up in SQLite, a
signature or a JSON answer: numbers are finite (Python's parser accepts ``Infinity``, ``NaN`` and ``1e400``),
integers fit in 64 bits, and strings (keys included) hold no lone surrogate (``"\\ud800"`` parses, but
cannot be encoded as UTF-8). A ``pattern`` is a search, as in JSON Schema; a final ``$`` means the end of the
string, as in ECMA-262 (Python's ``$`` also matches before a trailing newline).

Every error is collected, so a caller learns all of them in one round trip. Collecting them is slow, and nearly
every value checked is valid: ``validate`` first asks the schema's compiled predicate (``node/schema_compiled.py``),
and the collecting walk here runs only for a value it refuses. What both must read alike (type names, the three
rules, ``pattern``, enum equality, ``FORMATS``) is ``node/schema_rules.py``'s; ``FORMATS``, the 64-bit bounds and
``out_of_range`` are re-exported here, where the model and the RPC layer look for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .schema_compiled import predicate
from .schema_rules import ANYTHING, MAX_DEPTH, TYPES, is_number, is_unicode, regex, same
from .schema_rules import FORMATS as FORMATS
from .schema_rules import INT64_MAX as INT64_MAX
from .schema_rules import INT64_MIN as INT64_MIN
from .schema_rules import out_of_range as out_of_range

ROOT = "params"
"""The field name reported for errors about the value itself (empty path): it is the request's params."""


def _broken(value: Any) -> str | None:
    """Why a scalar breaks the rules every value obeys (a number out of range, a lone surrogate), or None."""
    if is_number(value):
        return out_of_range(value)
    if isinstance(value, str) and not is_unicode(value):
        return "must be valid Unicode (it holds a lone surrogate)"
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _type_ok(schema: Mapping[str, Any], value: Any) -> bool:
    wanted = schema.get("type")
    if wanted is None:
        return True
    names = [wanted] if isinstance(wanted, str) else wanted
    return any(TYPES[name][1](value) for name in names)


def validate(schema: Mapping[str, Any], value: Any, *, path: str = "") -> list[dict[str, str]]:
    """Every way ``value`` breaks ``schema``, as ``{"field", "message"}`` dicts (empty when valid).

    ``field`` is a dotted path (``env.FOO``, ``arguments[2]``); ``path`` prefixes it for nested use.
    """
    if predicate(schema)(value):
        return []
    errors: list[dict[str, str]] = []
    _validate(schema, value, path, errors)
    return errors


def check(schema: Mapping[str, Any], value: Any, *, path: str = "") -> None:
    """Raise ``ValidationError`` listing every error, or return quietly when ``value`` is valid."""
    errors = validate(schema, value, path=path)
    if errors:
        raise ValidationError(errors)


def _validate(schema: Mapping[str, Any], value: Any, path: str, errors: list[dict[str, str]]) -> None:
    if schema is ANYTHING:
        _walk(value, path, errors)
        return
    field = path or ROOT
    wanted = schema.get("type")
    if wanted is not None and not _type_ok(schema, value):
        names = [wanted] if isinstance(wanted, str) else wanted
        expected = " or ".join(TYPES[name][0] for name in names)
        errors.append({"field": field, "message": f"must be {expected}, got {type(value).__name__}"})
        return  # the other keywords would only add noise about a value of the wrong kind

    if (why := _broken(value)) is not None:
        errors.append({"field": field, "message": why})
        return

    enum = schema.get("enum")
    if enum is not None and not any(same(value, choice) for choice in enum):
        choices = ", ".join(json.dumps(choice) for choice in enum)
        errors.append({"field": field, "message": f"must be one of {choices}"})

    if isinstance(value, str):
        _string(schema, value, field, errors)
    elif is_number(value):
        _number(schema, value, field, errors)
    elif isinstance(value, list):
        _array(schema, value, path, errors)
    elif isinstance(value, dict):
        _object(schema, value, path, errors)

    alternatives = schema.get("oneOf")
    if alternatives is not None:
        _one_of(alternatives, value, path, errors)

    negated = schema.get("not")
    if negated is not None and not validate(negated, value, path=path):
        errors.append({"field": field, "message": negated.get("description", "is not allowed")})


def _walk(value: Any, path: str, errors: list[dict[str, str]]) -> None:
    """The rules every value obeys, over an unconstrained value, without recursion (a peer's JSON may nest
    as deep as the parser allows, which is deeper than this validator could recurse)."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        field = where or ROOT
        if (why := _broken(item)) is not None:
            errors.append({"field": field, "message": why})
        elif isinstance(item, list | dict):
            if depth >= MAX_DEPTH:
                errors.append({"field": field, "message": f"nested more than {MAX_DEPTH} levels deep"})
                continue
            if isinstance(item, list):
                stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))
                continue
            prefix = f"{where}." if where else ""
            for key, sub in item.items():
                if not is_unicode(key):
                    errors.append({"field": prefix + key.encode(errors="replace").decode(), "message": "invalid key"})
                else:
                    stack.append((sub, prefix + key, depth + 1))


def _number(schema: Mapping[str, Any], value: float, field: str, errors: list[dict[str, str]]) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and value < low:
        errors.append({"field": field, "message": f"must be >= {low}"})
    if high is not None and value > high:
        errors.append({"field": field, "message": f"must be <= {high}"})
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if above is not None and value <= above:
        errors.append({"field": field, "message": f"must be > {above}"})
    if below is not None and value >= below:
        errors.append({"field": field, "message": f"must be < {below}"})


def _string(schema: Mapping[str, Any], value: str, field: str, errors: list[dict[str, str]]) -> None:
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    if shortest is not None and len(value) < shortest:
        errors.append({"field": field, "message": f"must be at least {_plural(shortest, 'character')} long"})
    if longest is not None and len(value) > longest:
        errors.append({"field": field, "message": f"must be at most {_plural(longest, 'character')} long"})
    pattern = schema.get("pattern")
    if pattern is not None and regex(pattern).search(value) is None:
        errors.append({"field": field, "message": schema.get("patternMessage", f"must match the pattern {pattern}")})
    name = schema.get("format")
    if name is not None and name in FORMATS and not FORMATS[name][1](value):
        errors.append({"field": field, "message": f"must be {FORMATS[name][0]}"})


def _array(schema: Mapping[str, Any], value: list[Any], path: str, errors: list[dict[str, str]]) -> None:
    field = path or ROOT
    fewest, most = schema.get("minItems"), schema.get("maxItems")
    if fewest is not None and len(value) < fewest:
        errors.append({"field": field, "message": f"must have at least {_plural(fewest, 'item')}"})
    if most is not None and len(value) > most:
        errors.append({"field": field, "message": f"must have at most {_plural(most, 'item')}"})
    items = schema.get("items", ANYTHING)  # unconstrained items still obey the rules every value obeys
    for i, item in enumerate(value):
        _validate(items, item, f"{path}[{i}]", errors)


def _object(schema: Mapping[str, Any], value: dict[str, Any], path: str, errors: list[dict[str, str]]) -> None:
    prefix = f"{path}." if path else ""
    for name in schema.get("required", ()):
        if name not in value:
            errors.append({"field": prefix + name, "message": "is required"})
    most = schema.get("maxProperties")
    if most is not None and len(value) > most:
        errors.append({"field": path or ROOT, "message": f"must have at most {_plural(most, 'entry')}"})
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames")
    for key, item in value.items():
        if not is_unicode(key):
            errors.append({"field": prefix + key.encode(errors="replace").decode(), "message": "invalid key"})
            continue
        if names is not None:
            bad = validate(names, key)
            if bad:
                errors.append({"field": prefix + key, "message": "invalid key: " + bad[0]["message"]})
                continue
        sub = properties.get(key)
        if sub is not None:
            _validate(sub, item, prefix + key, errors)
        elif extra is False:
            errors.append({"field": prefix + key, "message": "unknown field"})
        else:
            _validate(extra if isinstance(extra, Mapping) else ANYTHING, item, prefix + key, errors)


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
    typed = [(alt, result) for alt, result in zip(alternatives, results, strict=True) if _type_ok(alt, value)]
    if len(typed) > 1 and isinstance(value, dict):  # objects told apart by their required keys
        typed = [(alt, result) for alt, result in typed if set(alt.get("required", ())) <= value.keys()]
    if len(typed) == 1:
        errors.extend(typed[0][1])
    else:
        errors.append({"field": field, "message": f"must match one of the {len(alternatives)} allowed forms"})
