"""The pipeline's shortcuts answer as the definitions they replace (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.pipeline import _cedar_value, _needs_mapping


class _Float(float):
    __slots__ = ()


class _Str(str):
    __slots__ = ()


class _Dict(dict):  # type: ignore[type-arg]
    pass


class _List(list):  # type: ignore[type-arg]
    pass


def _reference(value: Any) -> bool:
    """``_needs_mapping`` as first written: ``any()`` over every value."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(v is None or _reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_reference(v) for v in value)
    return False


_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=4)
    | st.floats()
    | st.sampled_from([_Float(1.0), _Str("s"), (1.5,), b"x"])
)
_values = st.recursive(
    _leaves,
    lambda c: (
        st.lists(c, max_size=4)
        | st.lists(c, max_size=3).map(_List)
        | st.dictionaries(st.text(max_size=3), c, max_size=4)
        | st.dictionaries(st.text(max_size=3), c, max_size=3).map(_Dict)
    ),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(_values)
def test_needs_mapping_answers_as_its_definition(value: Any) -> None:
    assert _needs_mapping(value) is _reference(value)
    if not _needs_mapping(value):
        assert _cedar_value(value) == value
