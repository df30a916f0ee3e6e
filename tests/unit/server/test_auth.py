"""verify_admin: the right that grants an admin operation must itself be an admin right on it.

Real home, real gate, real Biscuit tokens from the home's root key; no HTTP (the endpoints are
covered in tests/integration/test_server.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException

from interlock.capability import CapabilityIssuer, Right, attenuate
from interlock.capability.verify import MAX_CLOCK_SKEW
from interlock.gate import Gate
from interlock.server.auth import OPERATIONS, verify_admin
from interlock.trust import keys

ADMIN = "spiffe://acme.test/human/ops"


@pytest.fixture
def gate(home: Path) -> Iterator[Gate]:
    with Gate.open(home) as g:
        yield g


def _refused(gate: Gate, token: str, operation: str) -> HTTPException:
    with pytest.raises(HTTPException) as info:
        verify_admin(gate, f"Bearer {token}", operation)
    return info.value


@pytest.mark.parametrize(
    ("rights", "allowed"),
    [
        (("admin:Admin::kill-switch",), {"kill-switch"}),
        (("admin:Admin::*",), set(OPERATIONS)),
        (("*:*", "admin:Admin::approval"), {"approval"}),
        (("*:*",), set()),
        (("*:Admin::*",), set()),
        (("admin:*",), set()),
        (
            ("tool.call:Tool::*", "admin:Admin::quarantine", "admin:Admin::policy"),
            {"quarantine", "policy"},
        ),
    ],
)
def test_each_operation_needs_its_own_admin_right(
    gate: Gate, issue: Any, rights: tuple[str, ...], allowed: set[str]
) -> None:
    token = issue(ADMIN, *rights)
    for operation in sorted(OPERATIONS):
        if operation in allowed:
            assert verify_admin(gate, f"Bearer {token}", operation) == ADMIN
        else:
            exc = _refused(gate, token, operation)
            assert exc.status_code == 403
            assert exc.detail == "admin capability refused: CAPABILITY_INSUFFICIENT", operation


def test_wildcard_plus_other_admin_right_cannot_flip_the_kill_switch(
    gate: Gate, issue: Any
) -> None:
    mixed = issue(ADMIN, "*:*", "admin:Admin::approval")
    exc = _refused(gate, mixed, "kill-switch")
    assert (exc.status_code, exc.detail) == (
        403,
        "admin capability refused: CAPABILITY_INSUFFICIENT",
    )
    assert not gate.snapshot.kill_switch
    # attenuation only narrows: naming the kill switch in a block grants nothing
    root = keys.public_raw(gate.home.private_key("biscuit-root"))
    narrowed = attenuate(
        mixed, root_public_raw=root, rights=[Right.parse("admin:Admin::kill-switch")]
    )
    assert _refused(gate, narrowed, "kill-switch").status_code == 403
    everything = attenuate(
        issue(ADMIN, "admin:Admin::*"),
        root_public_raw=root,
        rights=[Right.parse("admin:Admin::approval")],
    )
    assert verify_admin(gate, f"Bearer {everything}", "approval") == ADMIN
    assert _refused(gate, everything, "kill-switch").status_code == 403


def test_a_token_issued_in_the_future_is_refused(gate: Gate) -> None:
    issuer = CapabilityIssuer(keys.private_raw(gate.home.private_key("biscuit-root")))

    def minted(at: datetime) -> str:
        return issuer.issue(
            principal=ADMIN,
            rights=[Right.parse("admin:Admin::*")],
            expires_at=at + timedelta(hours=1),
            now=at,
        )

    now = datetime.now(UTC)
    exc = _refused(gate, minted(now + timedelta(days=365)), "kill-switch")
    assert (exc.status_code, exc.detail) == (403, "admin capability refused: CAPABILITY_INVALID")
    within = now + timedelta(seconds=MAX_CLOCK_SKEW // 3)
    assert verify_admin(gate, f"Bearer {minted(within)}", "kill-switch") == ADMIN


def test_without_a_bearer_credential_is_401(gate: Gate) -> None:
    for header in (None, "", "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer   "):
        with pytest.raises(HTTPException) as info:
            verify_admin(gate, header, "kill-switch")
        assert info.value.status_code == 401
        assert info.value.headers is not None
        assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_operation_is_a_programming_error(gate: Gate, issue: Any) -> None:
    with pytest.raises(ValueError, match="unknown admin operation"):
        verify_admin(gate, f"Bearer {issue(ADMIN, 'admin:Admin::*')}", "reboot")
