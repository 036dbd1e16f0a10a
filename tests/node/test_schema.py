"""The params validator: every supported keyword, and the field paths its errors name."""

from __future__ import annotations

from typing import Any

import pytest

from node.errors import ValidationError
from node.schema import check, validate


def err(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


@pytest.mark.parametrize(
    ("kind", "good", "bad", "message"),
    [
        ("object", {}, [], "must be an object, got list"),
        ("array", [], {}, "must be an array, got dict"),
        ("string", "x", 1, "must be a string, got int"),
        ("integer", 3, 3.5, "must be an integer, got float"),
        ("number", 3.5, "3.5", "must be a number, got str"),
        ("boolean", False, 0, "must be a boolean, got int"),
        ("null", None, False, "must be null, got bool"),
    ],
)
def test_type(kind: str, good: Any, bad: Any, message: str) -> None:
    assert validate({"type": kind}, good) == []
    assert validate({"type": kind}, bad) == [err("params", message)]


@pytest.mark.parametrize("kind", ["integer", "number"])
def test_bool_is_never_a_number(kind: str) -> None:
    assert validate({"type": kind}, True) != []
    assert validate({"type": kind}, 1) == []


def test_integer_accepts_no_float_even_whole() -> None:
    assert validate({"type": "integer"}, 1.0) == [err("params", "must be an integer, got float")]


def test_type_list() -> None:
    schema = {"type": ["string", "null"]}
    assert validate(schema, None) == []
    assert validate(schema, "a") == []
    assert validate(schema, 1) == [err("params", "must be a string or null, got int")]


def test_wrong_type_reports_only_the_type() -> None:
    assert validate({"type": "string", "minLength": 3, "enum": ["abc"]}, 5) == [
        err("params", "must be a string, got int")
    ]


def test_path_prefix() -> None:
    assert validate({"type": "string"}, 1, path="spec.image") == [err("spec.image", "must be a string, got int")]


def test_required_and_unknown_field() -> None:
    schema = {
        "type": "object",
        "properties": {"image": {"type": "string"}, "name": {"type": "string"}},
        "required": ["image"],
        "additionalProperties": False,
    }
    assert validate(schema, {"image": "nginx"}) == []
    assert validate(schema, {"name": "x", "bogus": 1}) == [
        err("image", "is required"),
        err("bogus", "unknown field"),
    ]


def test_additional_properties_allowed_by_default() -> None:
    assert validate({"type": "object", "properties": {}}, {"anything": 1}) == []


def test_additional_properties_schema_is_a_string_map() -> None:
    schema = {"type": "object", "properties": {"env": {"type": "object", "additionalProperties": {"type": "string"}}}}
    assert validate(schema, {"env": {"FOO": "1", "BAR": "2"}}) == []
    assert validate(schema, {"env": {"FOO": 1, "BAR": "2", "BAZ": None}}) == [
        err("env.FOO", "must be a string, got int"),
        err("env.BAZ", "must be a string, got NoneType"),
    ]


def test_declared_properties_are_not_checked_against_additional_properties() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": {"type": "string"}}
    assert validate(schema, {"n": 1, "s": "x"}) == []


def test_items_paths() -> None:
    schema = {"type": "object", "properties": {"arguments": {"type": "array", "items": {"type": "string"}}}}
    assert validate(schema, {"arguments": ["a", "b", 3, "d", False]}) == [
        err("arguments[2]", "must be a string, got int"),
        err("arguments[4]", "must be a string, got bool"),
    ]


def test_deeply_nested_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "jobs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"resources": {"type": "object", "properties": {"cpus": {"minimum": 0}}}},
                    "required": ["name"],
                },
            }
        },
    }
    errors = validate(schema, {"jobs": [{"name": "a"}, {"resources": {"cpus": -1}}]})
    assert errors == [err("jobs[1].name", "is required"), err("jobs[1].resources.cpus", "must be >= 0")]


def test_enum() -> None:
    schema = {"enum": ["missing", "always", "never"]}
    assert validate(schema, "always") == []
    assert validate(schema, "sometimes") == [err("params", 'must be one of "missing", "always", "never"')]


def test_enum_does_not_confuse_bool_and_int() -> None:
    assert validate({"enum": [1, 2]}, True) != []
    assert validate({"enum": [True]}, 1) != []
    assert validate({"enum": [True]}, True) == []


def test_minimum_maximum() -> None:
    schema = {"type": "number", "minimum": 0, "maximum": 10}
    assert validate(schema, 0) == []
    assert validate(schema, 10.0) == []
    assert validate(schema, -0.5) == [err("params", "must be >= 0")]
    assert validate(schema, 11) == [err("params", "must be <= 10")]


def test_string_length() -> None:
    schema = {"type": "string", "minLength": 2, "maxLength": 3}
    assert validate(schema, "ab") == []
    assert validate(schema, "abc") == []
    assert validate(schema, "a") == [err("params", "must be at least 2 characters long")]
    assert validate(schema, "abcd") == [err("params", "must be at most 3 characters long")]
    assert validate({"minLength": 1}, "") == [err("params", "must be at least 1 character long")]


def test_string_length_counts_characters_not_bytes() -> None:
    assert validate({"maxLength": 2}, "éé") == []


def test_pattern_is_a_search() -> None:
    assert validate({"pattern": "b+"}, "abbc") == []
    assert validate({"pattern": "^[a-z]+$"}, "abc") == []
    assert validate({"pattern": "^[a-z]+$"}, "aBc") == [err("params", "must match the pattern ^[a-z]+$")]


def test_array_size() -> None:
    schema = {"type": "array", "minItems": 1, "maxItems": 2}
    assert validate(schema, [1]) == []
    assert validate(schema, [1, 2]) == []
    assert validate(schema, []) == [err("params", "must have at least 1 item")]
    assert validate(schema, [1, 2, 3]) == [err("params", "must have at most 2 items")]


def test_keywords_of_other_types_are_ignored() -> None:
    schema = {"minLength": 5, "minimum": 5, "minItems": 5, "required": ["x"]}
    assert validate(schema, 1.5) == [err("params", "must be >= 5")]
    assert validate(schema, "abc") == [err("params", "must be at least 5 characters long")]
    assert validate(schema, None) == []


TARGET = {
    "oneOf": [
        {"type": "string", "enum": ["all"]},
        {
            "type": "object",
            "properties": {"replicas": {"type": "integer", "minimum": 1}},
            "required": ["replicas"],
            "additionalProperties": False,
        },
        {"type": "array", "items": {"type": "string"}},
    ]
}


def test_one_of_matches_exactly_one() -> None:
    assert validate(TARGET, "all") == []
    assert validate(TARGET, {"replicas": 2}) == []
    assert validate(TARGET, ["a"]) == []


def test_one_of_with_no_match_of_any_type() -> None:
    assert validate(TARGET, 3) == [err("params", "must match one of the 3 allowed forms")]


def test_one_of_reports_the_only_alternative_of_the_right_type() -> None:
    assert validate(TARGET, {"replicas": 0}, path="target") == [err("target.replicas", "must be >= 1")]


def test_one_of_matching_several_is_an_error() -> None:
    schema = {"oneOf": [{"type": "integer"}, {"type": "number"}]}
    assert validate(schema, 1.5) == []
    assert validate(schema, 1) == [err("params", "matches more than one of the allowed forms")]


def test_every_error_is_collected() -> None:
    schema = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "minLength": 1},
            "arguments": {"type": "array", "items": {"type": "string"}},
            "retries": {"type": "integer", "maximum": 100},
        },
        "required": ["image"],
        "additionalProperties": False,
    }
    assert validate(schema, {"image": "", "arguments": [1], "retries": 101, "x": 0}) == [
        err("image", "must be at least 1 character long"),
        err("arguments[0]", "must be a string, got int"),
        err("retries", "must be <= 100"),
        err("x", "unknown field"),
    ]


def test_check_raises_validation_error_with_all_errors() -> None:
    schema = {"type": "object", "required": ["image", "name"]}
    check(schema, {"image": "x", "name": "y"})
    with pytest.raises(ValidationError) as caught:
        check(schema, {})
    assert caught.value.errors == [err("image", "is required"), err("name", "is required")]
    assert caught.value.data == {"errors": caught.value.errors}
    assert caught.value.message == "invalid params: image: is required; name: is required"


def test_an_unconstrained_value_nested_as_deep_as_json_allows_is_refused_not_a_crash() -> None:
    """A peer's JSON may nest ~1000 levels (the parser's limit): deeper than a recursive check can follow."""
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    errors = validate({"type": "object"}, {"a": deep})
    assert [e["message"] for e in errors] == ["nested more than 64 levels deep"]
    assert validate({"type": "object"}, {"a": [[["fine", 1.5]]], "b": {"c": None}}) == []
    assert validate({"type": "object"}, {"a": [{"b": float("inf")}]}) == [
        {"field": "a[0].b", "message": "must be a finite number"}
    ]
