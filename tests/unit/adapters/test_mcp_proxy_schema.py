"""Bounds on an upstream's ``inputSchema`` (interlock.adapters.mcp_proxy.schema): each hostile
shape is refused when the tool is listed, and validation of what is accepted stays bounded."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from interlock.adapters.mcp_proxy.schema import (
    MAX_PATTERN_SUBJECT,
    UnsafeSchema,
    compile_input_schema,
    subject_limit,
)


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"^(a+)+$", "exponential"),
        (r"(a|aa)*b", "exponential"),
        (r"^(\w+\s?)*$", "exponential"),
        (r"(\d{1,3}\.)+", "exponential"),
        (r"(a)\1", "GROUPREF"),
        (r"(", "does not compile"),
        ("a" * 1001, "longer than"),
    ],
)
def test_patterns_with_unbounded_cost_refuse_the_schema(pattern: str, why: str) -> None:
    with pytest.raises(UnsafeSchema, match=why):
        compile_input_schema(obj(s={"type": "string", "pattern": pattern}))
    with pytest.raises(UnsafeSchema, match=why):
        compile_input_schema({"type": "object", "patternProperties": {pattern: {}}})


@pytest.mark.parametrize(
    ("pattern", "limit"),
    [
        (r"^[a-z0-9-]+$", MAX_PATTERN_SUBJECT),  # anchored, one repeat: linear
        (r"^\d{4}-\d{2}-\d{2}$", MAX_PATTERN_SUBJECT),
        (r"^(\d{1,3}\.){3}\d{1,3}$", MAX_PATTERN_SUBJECT),
        (r"a*a*b", 463),  # polynomial: bounded by the string's length
        (r"^[\w.+-]+@[\w.-]+\.[a-z]{2,}$", 464),
    ],
)
def test_polynomial_patterns_get_a_subject_limit(pattern: str, limit: int) -> None:
    assert subject_limit(pattern) == limit


def test_the_worst_string_within_the_limit_matches_quickly() -> None:
    for pattern in (r"a*a*b", r"^\d*\d*\d*x"):
        subject = "a" * subject_limit(pattern) if "a" in pattern else "1" * subject_limit(pattern)
        started = time.perf_counter()
        re.search(pattern, subject)
        assert time.perf_counter() - started < 2.0
    check = compile_input_schema(obj(s={"type": "string", "pattern": r"a*a*b"}))
    assert "longer than the 463" in (check({"s": "a" * 464}) or "")
    many = {"type": "array", "items": {"type": "string", "pattern": r"a*a*b"}}
    started = time.perf_counter()
    assert "would cost more" in (compile_input_schema(obj(s=many))({"s": ["a" * 463] * 50}) or "")
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (obj(x={"$ref": "http://127.0.0.1:9/s.json"}), "not a pointer"),
        (obj(x={"$ref": "other.json#/a"}), "not a pointer"),
        (obj(x={"$ref": "#/$defs/missing"}), "names nothing"),
        (obj(x={"$dynamicRef": "#meta"}), r"\$dynamicRef"),
        (obj(x={"$id": "urn:x", "type": "string"}), r"\$id below the root"),
        ({"$schema": "https://example.com/my-draft", "type": "object"}, "unsupported"),
        ({"type": "object", "properties": {"a": {"type": 7}}}, "not a valid JSON Schema"),
        (obj(**{f"p{i}": {"type": "string"} for i in range(5000)}), "larger than"),
        ("not an object", "not a JSON object"),
    ],
)
def test_hostile_or_broken_schemas_are_refused(schema: Any, why: str) -> None:
    with pytest.raises(UnsafeSchema, match=why):
        compile_input_schema(schema)


def test_a_deep_schema_is_refused() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(UnsafeSchema, match="deeper than"):
        compile_input_schema(deep)


def test_a_small_schema_with_exponential_expansion_is_refused() -> None:
    """Each level refers twice to the next: 30 levels are 2**30 nodes of work."""
    defs = {f"l{i}": {"anyOf": [{"$ref": f"#/$defs/l{i + 1}"}] * 2} for i in range(30)}
    defs["l30"] = {"type": "string"}
    schema = {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/l0"}}}
    with pytest.raises(UnsafeSchema, match="nodes with its \\$refs expanded"):
        compile_input_schema(schema)


def test_a_recursive_schema_validates_trees_and_a_bottomless_one_is_refused_per_call() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    check = compile_input_schema(tree)
    assert check({"kids": [{"kids": []}, {}]}) is None
    assert check({"kids": [{"kids": 1}]}) == "$.kids[0].kids: 1 is not of type 'array'"
    loop = compile_input_schema({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
    assert "recurses without end" in (loop({}) or "")


def test_unique_items_is_linear_and_follows_json_equality() -> None:
    check = compile_input_schema(obj(xs={"type": "array", "uniqueItems": True}))
    assert check({"xs": [{"a": i} for i in range(20_000)]}) is None
    assert check({"xs": [1, 1.0]}) == "$.xs: the array has non-unique elements"
    assert check({"xs": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}) is not None
    assert check({"xs": [True, 1]}) is None
    assert check({"xs": [[1], [1.0, 2]]}) is None


def test_format_is_an_annotation_and_drafts_are_honoured() -> None:
    assert compile_input_schema(obj(e={"type": "string", "format": "email"}))({"e": "x"}) is None
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", **obj(a={"type": "integer"})}
    assert compile_input_schema(draft7)({"a": "1"}) == "$.a: '1' is not of type 'integer'"
