"""Intake's shortcut (``_is_json_ok``) never changes an answer (hypothesis).

``parse_request`` walks arguments and context (and, from the Python API, the whole request) with
``_is_json_ok`` first and runs ``_check_json_value`` — which names the path of what is wrong —
only when the shortcut does not vouch for the value. These properties hold the shortcut to the
full walk on hostile values: subclasses of JSON types, NaN and infinities, integers just outside
±2^53, non-string keys, lone surrogates in keys and strings, tuples and sets, nesting around the
32-level limit. The request built, or the MalformedRequest message, must be what the full walk
alone gives.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock import intake
from interlock.errors import MalformedRequest
from interlock.intake import parse_request
from tests.unit.test_intake import GOOD, RID, WHEN

_LIMIT = 2**53 - 1


class _Str(str):
    __slots__ = ()


class _Int(int):
    __slots__ = ()


class _Float(float):
    __slots__ = ()


_any_text = st.text(alphabet=st.characters(max_codepoint=0x10FFFF), max_size=6)
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.sampled_from([_LIMIT, -_LIMIT, _LIMIT + 1, -_LIMIT - 1])
    | _any_text
    | st.sampled_from(["\ud800", "a\udfff", "é"])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
    | _any_text.map(_Str)
    | st.integers(-5, 5).map(_Int)
    | st.sampled_from([_Float(1.5), _Float(math.nan), (1, 2), b"x", frozenset({1})])
)
_keys = _any_text | st.integers(-2, 2) | _any_text.map(_Str) | st.sampled_from(["\ud800", "k"])
_values = st.recursive(
    _leaves,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_keys, c, max_size=4),
    max_leaves=16,
)


def _nest(value: Any, levels: int, as_dict: bool) -> Any:
    for _ in range(levels):
        value = {"k": value} if as_dict else [value]
    return value


_deep = st.builds(_nest, _values, st.integers(28, 36), st.booleans())


def _check_outcome(value: Any) -> str | None:
    try:
        intake._check_json_value(value, "args")
    except MalformedRequest as exc:
        return exc.message
    return None


def _parse_outcome(raw: Any) -> tuple[str, Any]:
    try:
        req = parse_request(raw, request_id=RID, time=WHEN)
    except MalformedRequest as exc:
        return ("error", exc.message)
    return ("ok", (repr(req), json.dumps([req.args, req.context], sort_keys=True, default=repr)))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_values, _deep))
def test_is_json_ok_implies_the_full_walk_accepts(value: Any) -> None:
    if intake._is_json_ok(value):
        assert _check_outcome(value) is None


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_values, _deep), st.one_of(_values, _deep))
def test_parse_request_answers_as_the_full_walk_alone(args: Any, context: Any) -> None:
    raws: list[Any] = [{**GOOD, "args": args, "context": context}]
    with contextlib.suppress(TypeError, ValueError):  # the same request as JSON text, if any
        raws.append(json.dumps(raws[0], allow_nan=True).encode("utf-8", "surrogatepass"))
    for raw in raws:
        got = _parse_outcome(raw)
        with mock.patch.object(intake, "_is_json_ok", return_value=False):
            assert _parse_outcome(raw) == got


def test_is_json_ok_stops_at_the_depth_limit() -> None:
    assert intake._is_json_ok(_nest("x", 32, as_dict=False))
    assert intake._is_json_ok(_nest("x", 32, as_dict=True))
    assert not intake._is_json_ok(_nest("x", 33, as_dict=False))
    assert _check_outcome(_nest("x", 33, as_dict=True)) is not None


class _Shifty(Mapping[str, Any]):
    """A mapping that shows valid content once and then something else."""

    def __init__(self) -> None:
        self.reads = 0

    def _now(self) -> dict[str, Any]:
        self.reads += 1
        if self.reads == 1:
            return {**GOOD, "args": {"n": 1}}
        return {**GOOD, "args": {"n": 2**60}}

    def __getitem__(self, key: str) -> Any:
        return self._now()[key] if self.reads == 0 else self._content[key]

    def __iter__(self) -> Iterator[str]:
        self._content = self._now()
        return iter(self._content)

    def __len__(self) -> int:
        return len(GOOD) + 1


def test_the_mapping_checked_is_the_mapping_decided_on() -> None:
    req = parse_request(_Shifty(), request_id=RID, time=WHEN)
    assert req.args == {"n": 1}
