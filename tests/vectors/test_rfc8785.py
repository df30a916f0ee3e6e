"""RFC 8785 (JSON Canonicalization Scheme) vectors for Interlock's canonical bytes: the RFC's own
examples, and the fast ``json`` path held to the reference ``rfc8785`` package."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core.canonical import CanonicalizationError, canonical_bytes

# RFC 8785 §3.2.3 (sorting of properties): the input object and the order the RFC prints.
SORTING_INPUT = json.loads(
    '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With'
    ' Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
    ' "\\u00f6": "Latin Small Letter O With Diaeresis"}'
)
SORTING_ORDER = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]

# RFC 8785 §3.2.4 example (the "literals/numbers/string" object) and its canonical output.
RFC_INPUT = (
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
    ' "literals": [null, true, false]}'
)
RFC_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
).encode()


def test_rfc_sorting_example_uses_utf16_order() -> None:
    out = canonical_bytes(SORTING_INPUT)
    keys = list(json.loads(out))
    assert keys == SORTING_ORDER  # code-point order would put U+FB33 before the emoji


def test_rfc_example_with_numbers_strings_and_literals() -> None:
    value = json.loads(RFC_INPUT)
    assert canonical_bytes(value, allow_floats=True) == RFC_OUTPUT
    with pytest.raises(CanonicalizationError, match="floats"):
        canonical_bytes(value)


@pytest.mark.parametrize(
    "bad",
    [{1: "x"}, {"a": 2**53}, {"a": object()}, "\ud800", {"\udfff": 1}, {"s": {1, 2}}],
)
def test_values_outside_json_are_refused(bad: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonical_bytes(bad)


def test_deep_nesting_is_refused_without_recursion() -> None:
    v: object = []
    for _ in range(10_000):
        v = [v]
    with pytest.raises(CanonicalizationError, match="nested deeper"):
        canonical_bytes(v)


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x10FFFF), max_size=8
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_json)
def test_fast_path_equals_reference_implementation(value: object) -> None:
    assert canonical_bytes(value) == bytes(rfc8785.dumps(value))


_bmp_low_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0xD7FF), max_size=8
)
_fast_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_bmp_low_text, c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_fast_json)
def test_orjson_sorted_output_is_rfc8785_in_the_fast_subset(value: object) -> None:
    """The fast path's premise: in its subset (no floats, keys below U+D800) orjson's sorted
    compact output, the standard library's and RFC 8785's are the same bytes."""
    import orjson

    fast = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    assert fast == bytes(rfc8785.dumps(value))
    assert fast == json.dumps(
        value, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    assert canonical_bytes(value) == fast


def test_lone_surrogate_is_refused_on_the_fast_path() -> None:
    with pytest.raises(CanonicalizationError, match="lone surrogate"):
        canonical_bytes({"a": "\ud800"})
    with pytest.raises(CanonicalizationError, match="lone surrogate"):
        canonical_bytes(["x", "\udfff"])
