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

Every error is collected, so a caller learns all of them in one round trip. Collecting them is slow (a path
string per value, a lookup per keyword), and nearly every value checked is valid: each schema is therefore also
compiled once (``_compiled``) into a predicate of closures that only says whether a value is valid, and the
collecting walk runs only for a value it refuses. The predicate follows the walk rule for rule
(``tests/node/test_schema_compiled.py`` compares both verdicts on generated values); a catch-up page of a
thousand jobs and executions spent about half of its check time here before.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from node.errors import ValidationError

ROOT = "params"
"""The field name reported for errors about the value itself (empty path): it is the request's params."""


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def out_of_range(value: Any) -> str | None:
    """Why a number cannot be stored or encoded, or None (also the RPC layer's rule for request ids)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if _is_int(value) and not INT64_MIN <= value <= INT64_MAX:
        return "must fit in a signed 64-bit integer"
    return None


def _broken(value: Any) -> str | None:
    """Why a scalar breaks the rules every value obeys (a number out of range, a lone surrogate), or None."""
    if _is_number(value):
        return out_of_range(value)
    if isinstance(value, str) and not _is_unicode(value):
        return "must be valid Unicode (it holds a lone surrogate)"
    return None


def _is_unicode(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


_ANYTHING: Mapping[str, Any] = {}
"""The schema of what a schema leaves unconstrained: only the rules every value obeys, checked by ``_walk``."""
MAX_DEPTH = 64
"""Deepest nesting of an unconstrained value: a schema's own depth is finite, a peer's value need not be."""

FORMATS: dict[str, tuple[str, Callable[[str], bool]]] = {}
"""``format`` name -> (what it means, check). The model registers the formats its schemas use."""


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
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"  # ECMA-262's end of input, not Python's "or before a final newline"
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
    if _predicate(schema)(value):
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
    if schema is _ANYTHING:
        _walk(value, path, errors)
        return
    field = path or ROOT
    wanted = schema.get("type")
    if wanted is not None and not _type_ok(schema, value):
        names = [wanted] if isinstance(wanted, str) else wanted
        expected = " or ".join(_TYPES[name][0] for name in names)
        errors.append({"field": field, "message": f"must be {expected}, got {type(value).__name__}"})
        return  # the other keywords would only add noise about a value of the wrong kind

    if (why := _broken(value)) is not None:
        errors.append({"field": field, "message": why})
        return

    enum = schema.get("enum")
    if enum is not None and not any(_same(value, choice) for choice in enum):
        choices = ", ".join(json.dumps(choice) for choice in enum)
        errors.append({"field": field, "message": f"must be one of {choices}"})

    if isinstance(value, str):
        _string(schema, value, field, errors)
    elif _is_number(value):
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
                if not _is_unicode(key):
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
    if pattern is not None and _regex(pattern).search(value) is None:
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
    items = schema.get("items", _ANYTHING)  # unconstrained items still obey the rules every value obeys
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
        if not _is_unicode(key):
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
            _validate(extra if isinstance(extra, Mapping) else _ANYTHING, item, prefix + key, errors)


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


# -- the compiled predicate -----------------------------------------------------------------------------

Predicate = Callable[[Any], bool]

MAX_COMPILED = 256
"""Schemas whose predicate is kept: the model's are a few dozen; a schema built per call (``rpc/protocol.py``)
is compiled again each time rather than kept for ever."""
_COMPILED: OrderedDict[int, tuple[Mapping[str, Any], Predicate]] = OrderedDict()
"""``id(schema)`` -> (the schema, its predicate): the schema is kept with it, so its id is not reused meanwhile.
Schemas are constants: one changed after its first use keeps the predicate of what it was."""


def _predicate(schema: Mapping[str, Any]) -> Predicate:
    """Whether a value is valid against ``schema`` (exactly when ``_validate`` would find no error), compiled
    at its first use; a schema the compiler cannot read is left to ``_validate`` (which raises as it did)."""
    key = id(schema)
    found = _COMPILED.get(key)
    if found is not None and found[0] is schema:
        return found[1]
    try:
        predicate = _compile(schema)
    except Exception:
        predicate = _never
    _COMPILED[key] = (schema, predicate)
    while len(_COMPILED) > MAX_COMPILED:
        _COMPILED.popitem(last=False)
    return predicate


def _never(value: Any) -> bool:
    return False


def _unicode(value: str) -> bool:
    return value.isascii() or _is_unicode(value)


def _sound(value: Any) -> bool:
    """``_walk`` found no error: the rules every value obeys, to ``MAX_DEPTH`` levels under ``value``."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not (item.isascii() or _is_unicode(item)):
                return False
        elif isinstance(item, list | dict):
            if depth >= MAX_DEPTH:
                return False
            if isinstance(item, list):
                stack.extend((sub, depth + 1) for sub in item)
                continue
            for key, sub in item.items():
                if not (key.isascii() or _is_unicode(key)):
                    return False
                stack.append((sub, depth + 1))
        elif _is_number(item) and out_of_range(item) is not None:
            return False
    return True


def _type_test(wanted: Any) -> Predicate:
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    tests = [_TYPES[name][1] for name in names]  # an unknown name raises here, as ``_type_ok`` would
    if len(tests) == 1:
        return tests[0]
    return lambda value: any(test(value) for test in tests)


_KINDS: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),),
}  # fmt: skip
"""The exact types of parsed JSON each type name accepts (``_TYPES`` decides for anything else)."""


def _compile(schema: Mapping[str, Any]) -> Predicate:
    """The predicate of ``schema``: each keyword ``_validate`` reads, in closures made once. Parsed JSON holds
    seven exact types, dispatched on directly; any other (a subclass from the node's own code) takes the
    general way, in ``_validate``'s order."""
    if schema is _ANYTHING:
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
        if choices is not None and not any(_same(value, choice) for choice in choices):
            return False
        if one_of is not None and sum(1 for alt in one_of if alt(value)) != 1:
            return False
        return not_ is None or not not_(value)

    def general(value: Any) -> bool:
        if type_ok is not None and not type_ok(value):
            return False
        if isinstance(value, str):
            if not (value.isascii() or _is_unicode(value)):
                return False
        elif _is_number(value) and out_of_range(value) is not None:
            return False
        if choices is not None and not any(_same(value, choice) for choice in choices):
            return False
        if isinstance(value, str):
            if on_str is not None and not on_str(value):
                return False
        elif _is_number(value):
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
            if not strings or not (value.isascii() or _is_unicode(value)):
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
    search = _regex(pattern).search if pattern is not None else None
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
    each = _predicate_of(schema.get("items", _ANYTHING))

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
        other = _predicate_of(extra if isinstance(extra, Mapping) else _ANYTHING)
    names = schema.get("propertyNames")
    name_ok = _predicate_of(names) if names is not None else None

    def valid(value: dict[str, Any]) -> bool:
        for name in required:
            if name not in value:
                return False
        if most is not None and len(value) > most:
            return False
        for key, item in value.items():
            if not (key.isascii() or _is_unicode(key)):
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
