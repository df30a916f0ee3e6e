"""CapabilityIssuer and attenuate: what they refuse, and the Datalog they write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import CapabilityIssuer, Right, attenuate, inspect
from interlock.core.model import MAX_TOKEN_BYTES
from interlock.errors import CapabilityError

from .conftest import ALICE, EXPIRES, ISSUED

STAR = [Right.parse("*:*")]


def test_authority_block_datalog(token: str, root_pub: bytes) -> None:
    assert inspect(token, root_pub).blocks[0] == (
        f'principal("{ALICE}");\n'
        'right("tool.call", "Tool::*");\n'
        'right("file.read", "File::/srv/data");\n'
        "issued_at(2026-01-01T00:00:00Z);\n"
        "check if time($time), $time <= 2030-01-01T00:00:00Z;\n"
    )


def test_attenuation_block_datalog(token: str, root_pub: bytes) -> None:
    child = attenuate(
        token,
        root_public_raw=root_pub,
        rights=[
            Right.parse("tool.call:Tool::a"),
            Right.parse("*:File::*"),
            Right.parse("tool.call:*"),
        ],
        expires_at=datetime(2029, 1, 1, tzinfo=UTC),
        parent="p-1",
        now=ISSUED,
    )
    assert inspect(child, root_pub).blocks[1] == (
        "issued_at(2026-01-01T00:00:00Z);\n"
        "check if time($time), $time <= 2029-01-01T00:00:00Z;\n"
        'check if action("tool.call"), resource("Tool::a") or resource_type("File")'
        ' or action("tool.call");\n'
        'check if parent("p-1");\n'
    )


def test_values_are_parameters_not_source(issuer: CapabilityIssuer, root_pub: bytes) -> None:
    # A principal that would be Datalog if spliced into source text is refused outright
    # (quote), and Datalog-looking text without a quote stays a string value (a resource id
    # here: principals must also be SPIFFE IDs).
    with pytest.raises(CapabilityError, match="quote"):
        issuer.issue(principal='a"); right("*", "*', rights=STAR, expires_at=EXPIRES, now=ISSUED)
    odd = Right.parse("tool.call:Tool::a);right(x,y")
    token = issuer.issue(principal=ALICE, rights=[odd], expires_at=EXPIRES, now=ISSUED)
    info = inspect(token, root_pub)
    assert info.principal == ALICE
    assert [str(r) for r in info.rights] == ["tool.call:Tool::a);right(x,y"]


@pytest.mark.parametrize(
    "principal", ["", 'spiffe://a/"b', "spiffe://a/\\b", "spiffe://a/\nb", "x" * 1025]
)
def test_issue_rejects_principal(issuer: CapabilityIssuer, principal: str) -> None:
    with pytest.raises(CapabilityError, match="principal"):
        issuer.issue(principal=principal, rights=STAR, expires_at=EXPIRES, now=ISSUED)


def test_issue_rejects_empty_rights(issuer: CapabilityIssuer) -> None:
    with pytest.raises(CapabilityError, match="empty"):
        issuer.issue(principal=ALICE, rights=[], expires_at=EXPIRES, now=ISSUED)


def test_issue_rejects_non_right(issuer: CapabilityIssuer) -> None:
    with pytest.raises(CapabilityError, match="Right"):
        issuer.issue(principal=ALICE, rights=["*:*"], expires_at=EXPIRES, now=ISSUED)  # type: ignore[list-item]


def test_issue_rejects_naive_expiry(issuer: CapabilityIssuer) -> None:
    with pytest.raises(CapabilityError, match="timezone"):
        issuer.issue(principal=ALICE, rights=STAR, expires_at=datetime(2030, 1, 1), now=ISSUED)  # noqa: DTZ001


@pytest.mark.parametrize(
    "check",
    [
        "not datalog",
        'right("*", "*")',  # a fact, not a check
        "check if true; check if true",  # two checks
        "allow if true",
    ],
)
def test_issue_rejects_bad_checks(issuer: CapabilityIssuer, check: str) -> None:
    with pytest.raises(CapabilityError, match="check"):
        issuer.issue(principal=ALICE, rights=STAR, expires_at=EXPIRES, checks=[check], now=ISSUED)


def test_issue_accepts_check_with_semicolon(issuer: CapabilityIssuer, root_pub: bytes) -> None:
    token = issuer.issue(
        principal=ALICE, rights=STAR, expires_at=EXPIRES, checks=["check if true;"], now=ISSUED
    )
    assert "check if true;" in inspect(token, root_pub).blocks[0]


def test_issue_refuses_oversized_token(issuer: CapabilityIssuer) -> None:
    rights = [Right.parse(f"tool.call:Tool::tool_{i:05d}_{'x' * 40}") for i in range(1500)]
    with pytest.raises(CapabilityError, match=str(MAX_TOKEN_BYTES)):
        issuer.issue(principal=ALICE, rights=rights, expires_at=EXPIRES, now=ISSUED)


def test_issuer_rejects_bad_key() -> None:
    with pytest.raises(CapabilityError, match="32"):
        CapabilityIssuer(b"short")


def test_issuer_repr_hides_key(issuer: CapabilityIssuer) -> None:
    assert repr(issuer) == "CapabilityIssuer(<root key>)"


def test_attenuate_needs_something(token: str, root_pub: bytes) -> None:
    with pytest.raises(CapabilityError, match="nothing"):
        attenuate(token, root_public_raw=root_pub, now=ISSUED)


def test_attenuate_rejects_empty_rights(token: str, root_pub: bytes) -> None:
    with pytest.raises(CapabilityError, match="empty"):
        attenuate(token, root_public_raw=root_pub, rights=[], now=ISSUED)


def test_attenuate_rejects_bad_parent(token: str, root_pub: bytes) -> None:
    with pytest.raises(CapabilityError, match="parent"):
        attenuate(token, root_public_raw=root_pub, parent='x"y', now=ISSUED)


@pytest.mark.parametrize("bad", ["", "not a token", "AAAA", "x" * (MAX_TOKEN_BYTES + 1)])
def test_attenuate_rejects_unparseable(root_pub: bytes, bad: str) -> None:
    with pytest.raises(CapabilityError):
        attenuate(bad, root_public_raw=root_pub, parent="p", now=ISSUED)


def test_attenuate_rejects_token_of_other_root(token: str) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(CapabilityError, match="verify"):
        attenuate(token, root_public_raw=other, parent="p", now=ISSUED)


def test_error_messages_never_contain_the_token(token: str, root_pub: bytes) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(CapabilityError) as info:
        attenuate(token, root_public_raw=other, parent="p", now=ISSUED)
    assert token not in info.value.diagnostics()
    assert token[:40] not in info.value.diagnostics()


@pytest.mark.parametrize("principal", ["root", "spiffe://acme.test/a/../b", "spiffe://ACME/x"])
def test_issue_refuses_principals_the_gate_would_refuse(principal: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.capability import CapabilityIssuer
    from interlock.trust.keys import private_raw

    issuer = CapabilityIssuer(private_raw(Ed25519PrivateKey.generate()))
    with pytest.raises(CapabilityError, match="SPIFFE"):
        issuer.issue(
            principal=principal, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=ISSUED
        )
