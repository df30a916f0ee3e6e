"""Properties of the resource-id grammar: invisible characters are always refused; whatever is
accepted is NFC, NFKC-stable, stripped and free of dot segments."""

from __future__ import annotations

import sys
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from interlock.core.ids import id_problem

#: every format (Cf) character this Python knows
CF = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
ZS = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs"]

ids = st.text(min_size=0, max_size=40)


@given(ids, st.sampled_from(CF), st.integers(min_value=0))
def test_an_inserted_format_character_is_always_refused(value: str, cf: str, at: int) -> None:
    i = at % (len(value) + 1)
    assert id_problem(value[:i] + cf + value[i:]) is not None


@given(ids, st.sampled_from([c for c in ZS if c != " "]), st.integers(min_value=0))
def test_any_space_but_u0020_is_refused_anywhere(value: str, zs: str, at: int) -> None:
    i = at % (len(value) + 1)
    assert id_problem(value[:i] + zs + value[i:]) is not None


@given(ids)
def test_an_accepted_id_is_nfc_nfkc_stable_stripped_and_has_no_dot_segment(value: str) -> None:
    if id_problem(value) is not None:
        return
    assert unicodedata.normalize("NFC", value) == value
    assert unicodedata.normalize("NFKC", value) == value
    assert value == value.strip()
    segments = value.replace("\\", "/").split("/")
    assert "." not in segments and ".." not in segments
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn") for c in value)


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "x.y"]), min_size=1, max_size=6))
def test_a_dot_segment_anywhere_is_refused(segments: list[str]) -> None:
    value = "/".join(segments)
    has_dot = any(s in (".", "..") for s in segments)
    assert (id_problem(value) is not None) == has_dot
