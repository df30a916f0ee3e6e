"""Trust boundary parsing and matching (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from interlock.core.boundary import parse_boundaries
from interlock.errors import ConfigError

R = "spiffe://acme.test/agent/researcher"


def _b(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "research",
        "principals": [R],
        "actions": ["tool.call"],
        "resources": ["Tool::*", "Host::localhost"],
    }
    body.update(over)
    return body


def test_a_boundary_covers_the_principal_and_its_sub_agents_only() -> None:
    (b,) = parse_boundaries([_b()])
    assert b.covers(R) and b.covers(R + "/summarizer")
    assert not b.covers("spiffe://acme.test/agent/researcher2")
    assert not b.covers("spiffe://acme.test/agent/other")


def test_violations_name_what_is_outside() -> None:
    (b,) = parse_boundaries([_b(attested=True)])
    assert b.violation("tool.call", "Tool", "x", attested=True) is None
    assert b.violation("tool.call", "Host", "localhost", attested=True) is None
    assert "actions" in str(b.violation("shell.exec", "Host", "localhost", attested=True))
    assert "resource" in str(b.violation("tool.call", "Host", "db", attested=True))
    assert "attested" in str(b.violation("tool.call", "Tool", "x", attested=False))


def test_restricted_principals_get_only_the_restricted_actions() -> None:
    (b,) = parse_boundaries(
        [_b(actions=["*"], on_violation="restrict", restricted_actions=["tool.call"])]
    )
    assert b.violation("shell.exec", "Host", "localhost", attested=False) is None
    assert b.violation("shell.exec", "Host", "localhost", attested=False, restricted=True)
    assert b.violation("tool.call", "Tool", "x", attested=False, restricted=True) is None


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"name": "bad name"}, "name"),
        ({"principals": ["not-spiffe"]}, "SPIFFE"),
        ({"principals": []}, "SPIFFE"),
        ({"actions": []}, "actions"),
        ({"resources": ["tool"]}, "resources"),
        ({"on_violation": "explode"}, "on_violation"),
        ({"on_violation": "restrict"}, "restricted_actions"),
        ({"restricted_actions": ["tool.call"]}, "only applies"),
        ({"attested": "yes"}, "attested"),
        ({"colour": "red"}, "unknown"),
    ],
)
def test_bad_boundaries_are_refused_with_the_field_named(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_boundaries([_b(**over)])


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_boundaries([_b(), _b()])


def test_to_json_round_trips() -> None:
    bs = parse_boundaries(
        [_b(), _b(name="r2", on_violation="restrict", restricted_actions=["tool.call"])]
    )
    assert parse_boundaries([b.to_json() for b in bs]) == bs
