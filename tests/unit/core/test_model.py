"""Identifier checks match whole strings: ``$`` would also accept a trailing newline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.capability import Right
from interlock.core.boundary import parse_boundaries
from interlock.core.model import Resource, is_spiffe_id
from interlock.errors import CapabilityError, ConfigError


@pytest.mark.parametrize("tail", ["\n", "\r\n", " "])
def test_a_trailing_newline_is_never_part_of_an_identifier(tail: str) -> None:
    assert is_spiffe_id("spiffe://acme.test/agent/a")
    assert not is_spiffe_id("spiffe://acme.test/agent/a" + tail)
    assert Resource.is_valid_type("Tool")
    assert not Resource.is_valid_type("Tool" + tail)
    with pytest.raises(CapabilityError):
        Right.parse("tool.call" + tail + ":Tool::x")
    with pytest.raises(ConfigError):
        parse_boundaries(
            [
                {
                    "name": "b" + tail,
                    "principals": ["spiffe://acme.test/agent/a"],
                    "actions": ["*"],
                    "resources": ["*"],
                }
            ]
        )


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=253_402_300_799_999_999))
def test_format_time_us_is_format_time_of_that_instant(us: int) -> None:
    """The gate's fast clock text (issue 14) is exactly format_time of the same microsecond,
    computed here without floats; a second call in the same second reuses its cached text."""
    from datetime import timedelta

    from interlock.core.model import format_time, format_time_us

    exact = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    assert format_time_us(us) == format_time(exact)
    assert format_time_us(us - us % 1_000_000) == format_time(exact.replace(microsecond=0))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**48 * 1_000_000 - 1))
def test_request_ids_are_uuid7_of_their_millisecond(ns: int) -> None:
    import uuid

    from interlock.intake import new_request_id

    text = new_request_id(ns)
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == ns // 1_000_000
