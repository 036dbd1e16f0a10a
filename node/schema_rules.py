"""What the schema checker (``node/schema.py``) and its compiled predicate (``node/schema_compiled.py``) must
read alike: the type names, the rules every value obeys (finite numbers, 64-bit integers, no lone surrogate,
bounded nesting), ``pattern``'s end of string, enum equality, and the ``format`` names the model registers.

Both import these from here, so a rule cannot drift between the walk that collects errors and the predicate that
only says yes or no (``tests/node/test_schema_compiled.py`` compares their verdicts).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def out_of_range(value: Any) -> str | None:
    """Why a number cannot be stored or encoded, or None (also the RPC layer's rule for request ids)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if is_int(value) and not INT64_MIN <= value <= INT64_MAX:
        return "must fit in a signed 64-bit integer"
    return None


def is_unicode(value: str) -> bool:
    """Whether ``value`` can be encoded as UTF-8 (it holds no lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


ANYTHING: Mapping[str, Any] = {}
"""The schema of what a schema leaves unconstrained: only the rules every value obeys, checked by the checker's
``_walk``."""
MAX_DEPTH = 64
"""Deepest nesting of an unconstrained value: a schema's own depth is finite, a peer's value need not be."""

FORMATS: dict[str, tuple[str, Callable[[str], bool]]] = {}
"""``format`` name -> (what it means, check). The model registers the formats its schemas use."""


TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "object": ("an object", lambda v: isinstance(v, dict)),
    "array": ("an array", lambda v: isinstance(v, list)),
    "string": ("a string", lambda v: isinstance(v, str)),
    "integer": ("an integer", is_int),
    "number": ("a number", is_number),
    "boolean": ("a boolean", lambda v: isinstance(v, bool)),
    "null": ("null", lambda v: v is None),
}
"""``type`` name -> (its words in an error, its test); an unknown name is a ``KeyError`` in both readers."""


@functools.cache
def regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled once, with JSON Schema's meaning of a final ``$``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"  # ECMA-262's end of input, not Python's "or before a final newline"
    return re.compile(pattern)


def same(a: Any, b: Any) -> bool:
    """Equality that, unlike ``==``, does not confuse ``True`` with ``1``."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)
