"""inspect and revocation_ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import Right, TokenInfo, attenuate, inspect, revocation_ids
from interlock.errors import CapabilityError

from .conftest import ALICE, EXPIRES, ISSUED


def test_inspect_verified(token: str, root_pub: bytes) -> None:
    info = inspect(token, root_pub)
    assert info == TokenInfo(
        principal=ALICE,
        rights=(Right.parse("tool.call:Tool::*"), Right.parse("file.read:File::/srv/data")),
        expires_at=EXPIRES,
        issued_at=ISSUED,
        blocks=info.blocks,
        parents=(),
        revocation_ids=revocation_ids(token),
        verified=True,
    )
    assert len(info.blocks) == 1
    assert info.revocation_ids[0] == info.revocation_ids[0].lower()
    int(info.revocation_ids[0], 16)  # hex


def test_inspect_unverified_does_not_pretend(token: str, root_pub: bytes) -> None:
    info = inspect(token)
    assert info.verified is False
    verified = inspect(token, root_pub)
    assert (info.principal, info.rights, info.issued_at, info.expires_at, info.blocks) == (
        verified.principal,
        verified.rights,
        verified.issued_at,
        verified.expires_at,
        verified.blocks,
    )


def test_inspect_attenuated(token: str, root_pub: bytes) -> None:
    soon = datetime(2028, 6, 1, 12, 30, tzinfo=UTC)
    child = attenuate(
        token,
        root_public_raw=root_pub,
        rights=[Right.parse("tool.call:Tool::a")],
        expires_at=soon,
        parent="exec-1",
        now=ISSUED,
    )
    later = datetime(2027, 3, 4, 5, 6, 7, tzinfo=UTC)
    grandchild = attenuate(child, root_public_raw=root_pub, parent="exec-2", now=later)
    info = inspect(grandchild, root_pub)
    assert info.expires_at == soon  # the earliest over all blocks
    assert info.issued_at == ISSUED  # the authority block's
    assert info.attenuated_at == (ISSUED, later)
    assert info.to_json()["issued_at"] == "2026-01-01T00:00:00.000000Z"
    assert info.to_json()["attenuated_at"] == [
        "2026-01-01T00:00:00.000000Z",
        "2027-03-04T05:06:07.000000Z",
    ]
    assert info.rights == inspect(token, root_pub).rights  # authority rights
    assert info.parents == ("exec-1", "exec-2")
    assert len(info.blocks) == 3
    assert info.revocation_ids == revocation_ids(grandchild)
    assert info.revocation_ids[:2] == revocation_ids(child)
    assert info.to_json()["expires_at"] == "2028-06-01T12:30:00.000000Z"
    assert info.to_json()["rights"] == ["tool.call:Tool::*", "file.read:File::/srv/data"]


def test_inspect_with_wrong_root_key_raises(token: str) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(CapabilityError, match="verify"):
        inspect(token, other)


@pytest.mark.parametrize("bad", ["", "garbage!", "AAAA"])
def test_unparseable(bad: str) -> None:
    with pytest.raises(CapabilityError):
        inspect(bad)
    with pytest.raises(CapabilityError):
        revocation_ids(bad)


def test_inspect_a_token_without_issued_at(root: Ed25519PrivateKey, root_pub: bytes) -> None:
    from interlock.capability import _biscuit
    from interlock.trust.keys import private_raw

    key = _biscuit.load_private_key(private_raw(root))
    old = _biscuit.build_token(key, 'principal({p}); right("*", "*");', {"p": ALICE}, ())
    info = inspect(old, root_pub)
    assert info.issued_at is None and info.to_json()["issued_at"] is None
    assert info.principal == ALICE  # still shown; the verifier refuses it
