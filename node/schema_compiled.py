"""Each schema compiled once into a predicate that only says whether a value is valid.

Collecting every error (``node/schema.py``) is slow: a path string per value, a lookup per keyword. Nearly every
value checked is valid, so ``validate`` asks this predicate first and walks only a value it refuses. The predicate
follows the walk rule for rule (``tests/node/test_schema_compiled.py`` compares both verdicts on generated
values); a catch-up page of a thousand jobs and executions spent about half of its check time in the walk before.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from .schema_rules import (
    ANYTHING,
    FORMATS,
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    TYPES,
    is_number,
    is_unicode,
    out_of_range,
    regex,
    same,
)

Predicate = Callable[[Any], bool]

MAX_COMPILED = 256
"""Schemas whose predicate is kept: the model's are a few dozen; a schema built per call (``rpc/protocol.py``)
is compiled again each time rather than kept for ever."""
_COMPILED: OrderedDict[int, tuple[Mapping[str, Any], Predicate]] = OrderedDict()
"""``id(schema)`` -> (the schema, its predicate): the schema is kept with it, so its id is not reused meanwhile.
Schemas are constants: one changed after its first use keeps the predicate of what it was."""


def predicate(schema: Mapping[str, Any]) -> Predicate:
    """Whether a value is valid against ``schema`` (exactly when the checker's walk, ``node/schema.py``, would
    find no error), compiled at its first use; a schema the compiler cannot read is left to the walk (which
    raises as it did)."""
    key = id(schema)
    found = _COMPILED.get(key)
    if found is not None and found[0] is schema:
        return found[1]
    try:
        compiled = _compile(schema)
    except Exception:
        compiled = _never
    _COMPILED[key] = (schema, compiled)
    while len(_COMPILED) > MAX_COMPILED:
        _COMPILED.popitem(last=False)
    return compiled


def _never(value: Any) -> bool:
    return False


def _sound(value: Any) -> bool:
    """The checker's ``_walk`` would find no error: the rules every value obeys, to ``MAX_DEPTH`` levels under
    ``value``."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not (item.isascii() or is_unicode(item)):
                return False
        elif isinstance(item, list | dict):
            if depth >= MAX_DEPTH:
                return False
            if isinstance(item, list):
                stack.extend((sub, depth + 1) for sub in item)
                continue
            for key, sub in item.items():
                if not (key.isascii() or is_unicode(key)):
                    return False
                stack.append((sub, depth + 1))
        elif is_number(item) and out_of_range(item) is not None:
            return False
    return True


def _type_test(wanted: Any) -> Predicate:
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    tests = [TYPES[name][1] for name in names]  # an unknown name raises here, as the checker's ``_type_ok`` would
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


_KINDS: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}  # fmt: skip
"""The exact types of parsed JSON each type name accepts (``TYPES`` decides for anything else)."""


def _compile(schema: Mapping[str, Any]) -> Predicate:
    """The predicate of ``schema``: each keyword the checker's ``_validate`` reads, in closures made once. Parsed
    JSON holds seven exact types, dispatched on directly; any other (a subclass from the node's own code) takes
    the general way, in the checker's order."""
    if schema is ANYTHING:
        return _sound
    wanted = schema.get("type")
    type_ok = _type_test(wanted) if wanted is not None else None
    names = [wanted] if isinstance(wanted, str) else (wanted or ())
    allowed = {kind for name in names for kind in _KINDS[name]} if wanted is not None else set(_ALL_KINDS)
    enum = schema.get("enum")
    choices = tuple(enum) if enum is not None else None
    on_str = _compile_string(schema)
    on_number = _compile_number(schema)
    on_list = _compile_array(schema)
    on_dict = _compile_object(schema)
    alternatives = schema.get("oneOf")
    one_of = [_predicate_of(alt) for alt in alternatives] if alternatives is not None else None
    negated = schema.get("not")
    not_ = _predicate_of(negated) if negated is not None else None
    plain = choices is None and one_of is None and not_ is None

    def rest(value: Any) -> bool:
        """``enum``, ``oneOf`` and ``not``: what is left once the value's kind passed."""
        if choices is not None and not any(same(value, choice) for choice in choices):
            return False
        if one_of is not None and sum(1 for alt in one_of if alt(value)) != 1:
            return False
        return not_ is None or not not_(value)

    def general(value: Any) -> bool:
        if type_ok is not None and not type_ok(value):
            return False
        if isinstance(value, str):
            if not (value.isascii() or is_unicode(value)):
                return False
        elif is_number(value) and out_of_range(value) is not None:
            return False
        if choices is not None and not any(same(value, choice) for choice in choices):
            return False
        if isinstance(value, str):
            if on_str is not None and not on_str(value):
                return False
        elif is_number(value):
            if on_number is not None and not on_number(value):
                return False
        elif isinstance(value, list):
            if not on_list(value):
                return False
        elif isinstance(value, dict) and not on_dict(value):
            return False
        if one_of is not None and sum(1 for alt in one_of if alt(value)) != 1:
            return False
        return not_ is None or not not_(value)

    strings, ints, floats = str in allowed, int in allowed, float in allowed
    dicts, lists, nones, bools = dict in allowed, list in allowed, type(None) in allowed, bool in allowed

    def valid(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            if not strings or not (value.isascii() or is_unicode(value)):
                return False
            if on_str is not None and not on_str(value):
                return False
        elif kind is dict:
            if not dicts or not on_dict(value):
                return False
        elif kind is int:
            if not ints or not INT64_MIN <= value <= INT64_MAX:
                return False
            if on_number is not None and not on_number(value):
                return False
        elif kind is float:
            if not floats or not math.isfinite(value):
                return False
            if on_number is not None and not on_number(value):
                return False
        elif value is None:
            if not nones:
                return False
        elif kind is list:
            if not lists or not on_list(value):
                return False
        elif kind is bool:
            if not bools:
                return False
        else:
            return general(value)
        return plain or rest(value)

    return valid


_ALL_KINDS = (dict, list, str, int, float, bool, type(None))


def _predicate_of(schema: Mapping[str, Any]) -> Predicate:
    """A nested schema's predicate, compiled with its parent (nested schemas are not cached on their own)."""
    return _compile(schema)


def _compile_string(schema: Mapping[str, Any]) -> Predicate | None:
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    pattern = schema.get("pattern")
    search = regex(pattern).search if pattern is not None else None
    name = schema.get("format")
    if shortest is None and longest is None and search is None and name is None:
        return None

    def valid(value: str) -> bool:
        if shortest is not None and len(value) < shortest:
            return False
        if longest is not None and len(value) > longest:
            return False
        if search is not None and search(value) is None:
            return False
        if name is not None:
            known = FORMATS.get(name)  # looked up now: the model registers its formats after this compiles
            if known is not None and not known[1](value):
                return False
        return True

    return valid


def _compile_number(schema: Mapping[str, Any]) -> Predicate | None:
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if low is None and high is None and above is None and below is None:
        return None

    def valid(value: float) -> bool:
        return (
            (low is None or value >= low)
            and (high is None or value <= high)
            and (above is None or value > above)
            and (below is None or value < below)
        )

    return valid


def _compile_array(schema: Mapping[str, Any]) -> Predicate:
    fewest, most = schema.get("minItems"), schema.get("maxItems")
    each = _predicate_of(schema.get("items", ANYTHING))

    def valid(value: list[Any]) -> bool:
        if fewest is not None and len(value) < fewest:
            return False
        if most is not None and len(value) > most:
            return False
        return all(each(item) for item in value)

    return valid


def _compile_object(schema: Mapping[str, Any]) -> Predicate:
    required = tuple(schema.get("required", ()))
    most = schema.get("maxProperties")
    properties = {key: _predicate_of(sub) for key, sub in schema.get("properties", {}).items()}
    extra = schema.get("additionalProperties", True)
    if extra is False:
        other: Predicate | None = None
    else:
        other = _predicate_of(extra if isinstance(extra, Mapping) else ANYTHING)
    names = schema.get("propertyNames")
    name_ok = _predicate_of(names) if names is not None else None

    def valid(value: dict[str, Any]) -> bool:
        for name in required:
            if name not in value:
                return False
        if most is not None and len(value) > most:
            return False
        for key, item in value.items():
            if not (key.isascii() or is_unicode(key)):
                return False
            if name_ok is not None and not name_ok(key):
                return False
            sub = properties.get(key)
            if sub is not None:
                if not sub(item):
                    return False
            elif other is None or not other(item):
                return False
        return True

    return valid
