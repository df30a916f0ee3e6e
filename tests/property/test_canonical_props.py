"""The canonical encoder's shortcut (``_is_plain``) never changes an answer (hypothesis).

``canonical_bytes`` first asks ``_is_plain`` whether a value is plainly in the fast subset and,
only when it is not, runs ``_fast_path_ok``, the walk that decides (and says why a value is
refused). These properties hold the shortcut to that walk on hostile values: subclasses of JSON
types, floats, NaN, integers just outside ±2^53, non-string and astral keys, lone surrogates,
tuples, sets, nesting around the 64-level limit. The bytes or the error (type and message) must
be what the walk alone gives.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core import canonical
from interlock.core.canonical import CanonicalizationError, canonical_bytes, digest

_LIMIT = 2**53 - 1


class _Str(str):
    __slots__ = ()


class _Int(int):
    __slots__ = ()


class _Dict(dict):  # type: ignore[type-arg]
    pass


_any_text = st.text(alphabet=st.characters(max_codepoint=0x10FFFF), max_size=6)
_ints = st.integers(-(2**64), 2**64) | st.sampled_from(
    [_LIMIT, -_LIMIT, _LIMIT + 1, -_LIMIT - 1, 0, 1, -1]
)
_leaves = (
    st.none()
    | st.booleans()
    | _ints
    | _any_text
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, -0.0, 2.0])
    | _any_text.map(_Str)
    | st.integers(-5, 5).map(_Int)
    | st.sampled_from([b"x", frozenset({1}), object()])
)
_keys = _any_text | st.integers(-2, 2) | _any_text.map(_Str) | st.sampled_from(["\ud800", "😀"])
_values = st.recursive(
    _leaves,
    lambda c: (
        st.lists(c, max_size=4)
        | st.lists(c, max_size=3).map(tuple)
        | st.dictionaries(_keys, c, max_size=4)
        | st.dictionaries(_any_text, c, max_size=3).map(_Dict)
    ),
    max_leaves=16,
)


def _nest(value: Any, levels: int, as_dict: bool) -> Any:
    for _ in range(levels):
        value = {"k": value} if as_dict else [value]
    return value


_deep = st.builds(_nest, _values, st.integers(58, 70), st.booleans())


def _outcome(value: Any, allow_floats: bool) -> tuple[str, Any]:
    try:
        return ("ok", canonical_bytes(value, allow_floats=allow_floats))
    except CanonicalizationError as exc:
        return ("error", str(exc))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_values, _deep), st.booleans())
def test_is_plain_implies_the_walk_takes_the_fast_path(value: Any, allow_floats: bool) -> None:
    if canonical._is_plain(value):
        assert canonical._fast_path_ok(value, allow_floats) is True


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_values, _deep), st.booleans())
def test_canonical_bytes_answers_as_the_walk_alone(value: Any, allow_floats: bool) -> None:
    got = _outcome(value, allow_floats)
    with mock.patch.object(canonical, "_is_plain", return_value=False):
        assert _outcome(value, allow_floats) == got


def test_is_plain_stops_at_the_depth_limit() -> None:
    # 64 levels of nesting around a leaf: the leaf is at depth 64, still allowed
    assert canonical._is_plain(_nest("x", 64, as_dict=False))
    assert canonical._is_plain(_nest("x", 64, as_dict=True))
    # 65: the walk must be the one to refuse it
    assert not canonical._is_plain(_nest("x", 65, as_dict=False))
    assert not canonical._is_plain(_nest("x", 65, as_dict=True))
    assert canonical._is_plain(_nest([], 64, as_dict=False))
    assert not canonical._is_plain(_nest([], 65, as_dict=False))
    assert _outcome(_nest([], 65, as_dict=False), False)[0] == "error"


@settings(max_examples=500, deadline=None)
@given(st.one_of(_values, st.just({}), st.just(_Dict())), st.booleans())
def test_digest_is_the_sha256_of_the_canonical_bytes(value: Any, allow_floats: bool) -> None:
    try:
        want: tuple[str, str] = (
            "ok",
            hashlib.sha256(canonical_bytes(value, allow_floats=allow_floats)).hexdigest(),
        )
    except CanonicalizationError as exc:
        want = ("error", str(exc))
    try:
        got: tuple[str, str] = ("ok", digest(value, allow_floats=allow_floats))
    except CanonicalizationError as exc:
        got = ("error", str(exc))
    assert got == want
