"""Identifier checks match whole strings: ``$`` would also accept a trailing newline."""

from __future__ import annotations

import pytest

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
