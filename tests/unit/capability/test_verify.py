"""CapabilityVerifier.check: each validator's reason code, wildcards, attenuation, caching."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import (
    CapabilityIssuer,
    CapabilityResult,
    CapabilityVerifier,
    Right,
    _biscuit,
    attenuate,
    revocation_ids,
)
from interlock.capability.verify import MAX_CLOCK_SKEW
from interlock.core.model import ReasonCode
from interlock.trust.keys import create_key, load_private_key, private_raw, public_raw

from .conftest import ALICE, BOB, EXPIRES, EXPIRES_EPOCH, ISSUED, ISSUED_EPOCH, NOW

PARENT = "0190f1a2-0000-7000-8000-000000000001"
OTHER_PARENT = "0190f1a2-0000-7000-8000-000000000002"


def check(
    verifier: CapabilityVerifier,
    token: str | None,
    action: str = "tool.call",
    resource: str = "Tool::web_search",
    *,
    principal: str = ALICE,
    parent: str | None = None,
    now: int = NOW,
    revoked: frozenset[str] = frozenset(),
    **kwargs: object,
) -> CapabilityResult:
    return verifier.check(
        token=token,
        principal=principal,
        action=action,
        resource=resource,
        parent=parent,
        now=now,
        revoked=revoked,
        **kwargs,  # type: ignore[arg-type]
    )


def assert_denied(result: CapabilityResult, code: ReasonCode) -> None:
    assert not result.ok
    assert result.code is code, result.detail
    assert result.detail


# --- issue -> check --------------------------------------------------------------------------


def test_issue_then_check_ok(verifier: CapabilityVerifier, token: str) -> None:
    result = check(verifier, token)
    assert result.ok, result.detail
    assert result.code is None
    assert result.principal == ALICE
    assert result.expires_at == EXPIRES_EPOCH
    assert result.revocation_ids == revocation_ids(token)
    assert len(result.revocation_ids) == 1


def test_token_is_base64url(token: str) -> None:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    assert set(token) <= alphabet


def test_exact_right(verifier: CapabilityVerifier, token: str) -> None:
    assert check(verifier, token, "file.read", "File::/srv/data").ok
    assert_denied(
        check(verifier, token, "file.read", "File::/srv/other"), ReasonCode.CAPABILITY_INSUFFICIENT
    )


@pytest.mark.parametrize("token_arg", [None, ""])
def test_missing_token(verifier: CapabilityVerifier, token_arg: str | None) -> None:
    assert_denied(check(verifier, token_arg), ReasonCode.CAPABILITY_INVALID)


# --- validators, in order --------------------------------------------------------------------


def test_wrong_principal(verifier: CapabilityVerifier, token: str) -> None:
    result = check(verifier, token, principal=BOB)
    assert_denied(result, ReasonCode.IDENTITY_UNVERIFIED)
    assert result.principal == ALICE  # the operator learns who the token was for


def test_expired(verifier: CapabilityVerifier, token: str) -> None:
    assert check(verifier, token, now=EXPIRES_EPOCH).ok  # valid up to and including expiry
    result = check(verifier, token, now=EXPIRES_EPOCH + 1)
    assert_denied(result, ReasonCode.CAPABILITY_EXPIRED)
    assert "2030-01-01T00:00:00Z" in result.detail


def test_expiry_is_floored_to_the_second(issuer: CapabilityIssuer, root_pub: bytes) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*")],
        expires_at=datetime(2030, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
        now=ISSUED,
    )
    verifier = CapabilityVerifier(root_pub)
    assert check(verifier, token).expires_at == EXPIRES_EPOCH


def test_expiry_in_another_timezone(issuer: CapabilityIssuer, root_pub: bytes) -> None:
    plus2 = datetime(2030, 1, 1, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    token = issuer.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=plus2, now=ISSUED)
    assert check(CapabilityVerifier(root_pub), token).expires_at == EXPIRES_EPOCH + 7200


def test_revoked(verifier: CapabilityVerifier, token: str) -> None:
    (rid,) = revocation_ids(token)
    result = check(verifier, token, revoked=frozenset({rid}))
    assert_denied(result, ReasonCode.CAPABILITY_REVOKED)
    assert check(verifier, token, revoked=frozenset({"00" * 64})).ok


def test_right_missing(verifier: CapabilityVerifier, token: str) -> None:
    result = check(verifier, token, "shell.exec", "Cmd::rm")
    assert_denied(result, ReasonCode.CAPABILITY_INSUFFICIENT)
    assert "shell.exec" in result.detail
    assert token not in result.detail


def test_order_first_failure_wins(verifier: CapabilityVerifier, token: str) -> None:
    (rid,) = revocation_ids(token)
    everything_wrong = {
        "principal": BOB,
        "now": EXPIRES_EPOCH + 1,
        "revoked": frozenset({rid}),
    }
    assert check(verifier, token, "shell.exec", **everything_wrong).code is (  # type: ignore[arg-type]
        ReasonCode.IDENTITY_UNVERIFIED
    )
    del everything_wrong["principal"]
    assert check(verifier, token, "shell.exec", **everything_wrong).code is (  # type: ignore[arg-type]
        ReasonCode.CAPABILITY_EXPIRED
    )
    del everything_wrong["now"]
    assert check(verifier, token, "shell.exec", **everything_wrong).code is (  # type: ignore[arg-type]
        ReasonCode.CAPABILITY_REVOKED
    )


def test_other_root_key(token: str) -> None:
    other = CapabilityVerifier(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert_denied(check(other, token), ReasonCode.CAPABILITY_INVALID)


def test_token_of_other_root_key(verifier: CapabilityVerifier) -> None:
    rogue = CapabilityIssuer(private_raw(Ed25519PrivateKey.generate()))
    forged = rogue.issue(
        principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=ISSUED
    )
    assert_denied(check(verifier, forged), ReasonCode.CAPABILITY_INVALID)


# --- wildcards -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("right", "action", "resource", "ok"),
    [
        ("tool.call:Tool::*", "tool.call", "Tool::anything", True),
        ("tool.call:Tool::*", "tool.call", "File::x", False),
        ("tool.call:Tool::*", "shell.exec", "Tool::x", False),
        ("tool.call:Tool::*", "tool.call", "Acme::Tool::x", False),
        ("*:Tool::a", "shell.exec", "Tool::a", True),
        ("*:Tool::a", "shell.exec", "Tool::b", False),
        ("tool.call:*", "tool.call", "Cmd::rm", True),
        ("tool.call:*", "shell.exec", "Cmd::rm", False),
        ("*:*", "shell.exec", "Cmd::rm", True),
        ("*:Acme::Tool::*", "x", "Acme::Tool::y", True),
    ],
)
def test_wildcards(
    issuer: CapabilityIssuer,
    verifier: CapabilityVerifier,
    right: str,
    action: str,
    resource: str,
    ok: bool,
) -> None:
    token = issuer.issue(
        principal=ALICE, rights=[Right.parse(right)], expires_at=EXPIRES, now=ISSUED
    )
    result = check(verifier, token, action, resource)
    assert result.ok is ok, result.detail
    assert result.ok is Right.parse(right).covers(action, resource)


def test_explicit_resource_type(issuer: CapabilityIssuer, verifier: CapabilityVerifier) -> None:
    token = issuer.issue(
        principal=ALICE, rights=[Right.parse("*:Tool::*")], expires_at=EXPIRES, now=ISSUED
    )
    # 'Tool::a::b' is read as type 'Tool::a' unless the caller says it is a Tool
    assert not check(verifier, token, "x", "Tool::a::b").ok
    assert check(verifier, token, "x", "Tool::a::b", resource_type="Tool").ok
    wrong = check(verifier, token, "x", "File::a", resource_type="Tool")
    assert_denied(wrong, ReasonCode.CAPABILITY_INSUFFICIENT)


# --- attenuation -----------------------------------------------------------------------------


def test_attenuation_narrows(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(
        token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")], now=ISSUED
    )
    assert check(verifier, token, resource="Tool::b").ok  # the parent token allows it
    assert_denied(check(verifier, child, resource="Tool::b"), ReasonCode.CAPABILITY_INSUFFICIENT)
    assert check(verifier, child, resource="Tool::a").ok
    assert_denied(
        check(verifier, child, "file.read", "File::/srv/data"), ReasonCode.CAPABILITY_INSUFFICIENT
    )
    # each block brings its own revocation id
    assert len(check(verifier, child, resource="Tool::a").revocation_ids) == 2


def test_attenuation_to_a_type(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(
        token, root_public_raw=root_pub, rights=[Right.parse("*:File::*")], now=ISSUED
    )
    assert check(verifier, child, "file.read", "File::/srv/data").ok
    assert not check(verifier, child, "tool.call", "Tool::a").ok


def test_attenuation_star_keeps_rights(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, rights=[Right.parse("*:*")], now=ISSUED)
    assert check(verifier, child).ok
    assert not check(verifier, child, "shell.exec", "Cmd::rm").ok


def test_attenuation_shorter_ttl(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    soon = EXPIRES - timedelta(days=365)
    child = attenuate(token, root_public_raw=root_pub, expires_at=soon, now=ISSUED)
    soon_epoch = int(soon.timestamp())
    assert check(verifier, child, now=soon_epoch).ok
    assert_denied(check(verifier, child, now=soon_epoch + 1), ReasonCode.CAPABILITY_EXPIRED)
    assert check(verifier, token, now=soon_epoch + 1).ok  # the parent token is unaffected
    assert check(verifier, child, now=soon_epoch).expires_at == soon_epoch


def test_attenuation_longer_ttl_changes_nothing(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(
        token, root_public_raw=root_pub, expires_at=EXPIRES + timedelta(days=999), now=ISSUED
    )
    assert check(verifier, child).expires_at == EXPIRES_EPOCH
    assert_denied(check(verifier, child, now=EXPIRES_EPOCH + 1), ReasonCode.CAPABILITY_EXPIRED)


def test_attenuation_cannot_widen(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(
        token,
        root_public_raw=root_pub,
        rights=[Right.parse("shell.exec:Cmd::rm"), Right.parse("*:*")],
        now=ISSUED,
    )
    assert_denied(
        check(verifier, child, "shell.exec", "Cmd::rm"), ReasonCode.CAPABILITY_INSUFFICIENT
    )
    grandchild = attenuate(
        attenuate(
            token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")], now=ISSUED
        ),
        root_public_raw=root_pub,
        rights=[Right.parse("tool.call:Tool::*")],
        now=ISSUED,
    )
    assert check(verifier, grandchild, resource="Tool::a").ok
    assert_denied(
        check(verifier, grandchild, resource="Tool::b"), ReasonCode.CAPABILITY_INSUFFICIENT
    )


def test_parent_binding(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT, now=ISSUED)
    assert check(verifier, child, parent=PARENT).ok
    assert_denied(check(verifier, child, parent=OTHER_PARENT), ReasonCode.CAPABILITY_INSUFFICIENT)
    assert_denied(check(verifier, child, parent=None), ReasonCode.CAPABILITY_INSUFFICIENT)
    # an unbound token accepts any parent
    assert check(verifier, token, parent=OTHER_PARENT).ok


def test_revoking_an_attenuation_block(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT, now=ISSUED)
    child_block_id = revocation_ids(child)[1]
    revoked = frozenset({child_block_id})
    assert_denied(
        check(verifier, child, parent=PARENT, revoked=revoked), ReasonCode.CAPABILITY_REVOKED
    )
    assert check(verifier, token, revoked=revoked).ok
    # revoking the authority block revokes every token derived from it
    root_id = frozenset({revocation_ids(token)[0]})
    assert_denied(
        check(verifier, child, parent=PARENT, revoked=root_id), ReasonCode.CAPABILITY_REVOKED
    )


# --- issued-at -------------------------------------------------------------------------------


def _hand_built(root: Ed25519PrivateKey, source: str, params: dict[str, object]) -> str:
    """A token whose authority block is exactly ``source``, signed by ``root`` (what a root-key
    holder with another tool, or an Interlock from before issued-at, could have written)."""
    key = _biscuit.load_private_key(private_raw(root))
    return _biscuit.build_token(key, source, params, ())


def test_issued_at_is_in_the_authority_block(verifier: CapabilityVerifier, token: str) -> None:
    assert check(verifier, token, now=ISSUED_EPOCH).ok
    assert (
        "issued_at(2026-01-01T00:00:00Z);"
        in _biscuit.block_sources(_biscuit.parse_unverified(token))[0].splitlines()
    )


def test_a_token_from_the_future_is_invalid_until_its_time(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    # an issuer whose clock is a year ahead: its token must not be valid for a year now
    real_now = datetime.now(UTC)
    ahead = real_now + timedelta(days=365)
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*")],
        expires_at=ahead + timedelta(hours=1),
        now=ahead,
    )
    now = int(real_now.timestamp())
    result = check(verifier, token, now=now)
    assert_denied(result, ReasonCode.CAPABILITY_INVALID)
    assert "issued in the future" in result.detail
    assert token not in result.detail
    assert result.principal == ALICE  # the operator learns whose token it was
    issued = int(ahead.timestamp())
    assert_denied(
        check(verifier, token, now=issued - MAX_CLOCK_SKEW - 1), ReasonCode.CAPABILITY_INVALID
    )
    assert check(verifier, token, now=issued).ok  # once the request time reaches it
    assert check(verifier, token, now=issued + 3600).ok
    assert_denied(check(verifier, token, now=issued + 3601), ReasonCode.CAPABILITY_EXPIRED)
    # and back: the cache never lets the earlier answer change
    assert_denied(check(verifier, token, now=now), ReasonCode.CAPABILITY_INVALID)


def test_a_token_within_the_clock_skew_is_valid(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    assert MAX_CLOCK_SKEW == 60
    issued = datetime.fromtimestamp(NOW + MAX_CLOCK_SKEW, UTC)
    token = issuer.issue(
        principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=issued
    )
    assert check(verifier, token, now=NOW).ok
    assert_denied(check(verifier, token, now=NOW - 1), ReasonCode.CAPABILITY_INVALID)


def test_issued_at_is_floored_to_the_second(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    late = datetime.fromtimestamp(NOW + MAX_CLOCK_SKEW, UTC) + timedelta(microseconds=999_999)
    token = issuer.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=late)
    assert check(verifier, token, now=NOW).ok


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ('principal({p}); right("*", "*"); check if time($time), $time <= {exp};', "none"),
        (
            'principal({p}); right("*", "*"); issued_at({iat}); issued_at({exp});'
            " check if time($time), $time <= {exp};",
            "two",
        ),
        (
            'principal({p}); right("*", "*"); issued_at("2026-01-01T00:00:00Z");'
            " check if time($time), $time <= {exp};",
            "a string, not a date",
        ),
    ],
)
def test_a_token_without_one_issued_at_is_invalid(
    root: Ed25519PrivateKey, verifier: CapabilityVerifier, source: str, why: str
) -> None:
    token = _hand_built(root, source, {"p": ALICE, "iat": ISSUED, "exp": EXPIRES})
    result = check(verifier, token)
    assert_denied(result, ReasonCode.CAPABILITY_INVALID)
    assert "no issued-at" in result.detail and "re-issue the token" in result.detail, why
    # before identity: whoever presents it, it is invalid
    assert_denied(check(verifier, token, principal=BOB), ReasonCode.CAPABILITY_INVALID)


def test_the_same_token_with_issued_at_is_valid(
    root: Ed25519PrivateKey, verifier: CapabilityVerifier
) -> None:
    source = (
        'principal({p}); right("*", "*"); issued_at({iat}); check if time($time), $time <= {exp};'
    )
    assert check(
        verifier, _hand_built(root, source, {"p": ALICE, "iat": ISSUED, "exp": EXPIRES})
    ).ok


def test_an_attenuation_from_the_future_is_invalid(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    later = datetime.fromtimestamp(NOW + 3600, UTC)
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT, now=later)
    result = check(verifier, child, parent=PARENT)
    assert_denied(result, ReasonCode.CAPABILITY_INVALID)
    assert "issued in the future" in result.detail and "block 1" in result.detail
    assert check(verifier, child, parent=PARENT, now=NOW + 3600).ok
    assert check(verifier, token).ok  # the parent token is unaffected


def test_an_attenuation_from_a_slow_clock_is_valid(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    # the attenuator's clock behind the issuer's: harmless, its expiry only narrows
    earlier = ISSUED - timedelta(days=30)
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT, now=earlier)
    assert check(verifier, child, parent=PARENT).ok


def test_a_token_that_expires_before_it_was_issued_is_never_valid(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*")],
        expires_at=ISSUED - timedelta(seconds=10),
        now=ISSUED,
    )
    # within the skew before its issued-at and before its expiry, it would otherwise pass
    result = check(verifier, token, now=ISSUED_EPOCH - 30)
    assert_denied(result, ReasonCode.CAPABILITY_INVALID)
    assert "not after" in result.detail
    # after its expiry it is simply expired (tests and the demo mint such tokens on purpose)
    assert_denied(check(verifier, token, now=ISSUED_EPOCH), ReasonCode.CAPABILITY_EXPIRED)
    zero = issuer.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=ISSUED, now=ISSUED)
    assert_denied(check(verifier, zero, now=ISSUED_EPOCH), ReasonCode.CAPABILITY_INVALID)


def test_an_attenuation_expiring_before_it_was_written_is_never_valid(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    written = datetime.fromtimestamp(NOW, UTC)
    child = attenuate(
        token, root_public_raw=root_pub, expires_at=written - timedelta(seconds=1), now=written
    )
    assert_denied(check(verifier, child, now=NOW - 30), ReasonCode.CAPABILITY_INVALID)
    assert_denied(check(verifier, child, now=NOW), ReasonCode.CAPABILITY_EXPIRED)


def test_issue_and_attenuate_refuse_a_naive_now(
    issuer: CapabilityIssuer, token: str, root_pub: bytes
) -> None:
    from interlock.errors import CapabilityError

    naive = datetime(2026, 1, 1)  # noqa: DTZ001
    with pytest.raises(CapabilityError, match="now"):
        issuer.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=naive)
    with pytest.raises(CapabilityError, match="now"):
        attenuate(token, root_public_raw=root_pub, parent=PARENT, now=naive)


# --- explicit rights (admin operations) ------------------------------------------------------


def _admin(
    verifier: CapabilityVerifier, token: str, operation: str, **kwargs: object
) -> CapabilityResult:
    return check(
        verifier,
        token,
        "admin",
        f"Admin::{operation}",
        resource_type="Admin",
        explicit=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("rights", "granted"),
    [
        (["admin:Admin::kill-switch"], True),
        (["admin:Admin::*"], True),
        (["*:*", "admin:Admin::approval"], False),  # two rights do not add up to one
        (["*:*"], False),
        (["*:Admin::*"], False),
        (["*:Admin::kill-switch"], False),
        (["admin:*"], False),
        (["admin:Admin::approval"], False),
        (["tool.call:Tool::*", "admin:Admin::approval", "admin:Admin::kill-switch"], True),
    ],
)
def test_explicit_needs_one_right_naming_action_and_resource(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier, rights: list[str], granted: bool
) -> None:
    parsed = [Right.parse(r) for r in rights]
    token = issuer.issue(principal=ALICE, rights=parsed, expires_at=EXPIRES, now=ISSUED)
    result = _admin(verifier, token, "kill-switch")
    assert result.ok is granted, result.detail
    if not granted:
        assert_denied(result, ReasonCode.CAPABILITY_INSUFFICIENT)
    oracle = any(
        r.covers("admin", "Admin::kill-switch", resource_type="Admin", explicit=True)
        for r in parsed
    )
    assert oracle is granted
    # without `explicit` the wildcards count as they do for every other action
    assert check(verifier, token, "admin", "Admin::kill-switch", resource_type="Admin").ok is any(
        r.covers("admin", "Admin::kill-switch", resource_type="Admin") for r in parsed
    )


def test_explicit_is_part_of_the_cache_key(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*"), Right.parse("admin:Admin::approval")],
        expires_at=EXPIRES,
        now=ISSUED,
    )
    for _ in range(2):
        assert check(verifier, token, "admin", "Admin::kill-switch", resource_type="Admin").ok
        assert not _admin(verifier, token, "kill-switch").ok
        assert _admin(verifier, token, "approval").ok


def test_explicit_attenuation_only_narrows(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier, root_pub: bytes
) -> None:
    every = issuer.issue(
        principal=ALICE, rights=[Right.parse("admin:Admin::*")], expires_at=EXPIRES, now=ISSUED
    )
    approvals = attenuate(
        every, root_public_raw=root_pub, rights=[Right.parse("admin:Admin::approval")], now=ISSUED
    )
    assert _admin(verifier, approvals, "approval").ok
    assert_denied(_admin(verifier, approvals, "kill-switch"), ReasonCode.CAPABILITY_INSUFFICIENT)
    # an attenuation naming the kill switch cannot grant what the authority does not
    mixed = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*"), Right.parse("admin:Admin::approval")],
        expires_at=EXPIRES,
        now=ISSUED,
    )
    narrowed = attenuate(
        mixed,
        root_public_raw=root_pub,
        rights=[Right.parse("admin:Admin::kill-switch")],
        now=ISSUED,
    )
    assert_denied(_admin(verifier, narrowed, "kill-switch"), ReasonCode.CAPABILITY_INSUFFICIENT)


# --- argument constraints --------------------------------------------------------------------


def test_argument_checks(issuer: CapabilityIssuer, verifier: CapabilityVerifier) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("file.write:File::*")],
        expires_at=EXPIRES,
        checks=['check if arg("path", $p), $p.starts_with("/tmp/")'],
        now=ISSUED,
    )
    ok = check(verifier, token, "file.write", "File::x", args={"path": "/tmp/out"})
    assert ok.ok, ok.detail
    for args in ({"path": "/etc/passwd"}, {}, None, {"path": 3}, {"other": "/tmp/x"}):
        result = check(verifier, token, "file.write", "File::x", args=args)
        assert_denied(result, ReasonCode.CAPABILITY_INSUFFICIENT)


def test_argument_types(issuer: CapabilityIssuer, verifier: CapabilityVerifier) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*")],
        expires_at=EXPIRES,
        checks=['check if arg("n", $n), $n <= 10', 'check if arg("dry", true)'],
        now=ISSUED,
    )
    assert check(verifier, token, args={"n": 10, "dry": True}).ok
    assert not check(verifier, token, args={"n": 11, "dry": True}).ok
    assert not check(verifier, token, args={"n": 1, "dry": False}).ok
    assert not check(verifier, token, args={"n": 2**70, "dry": True}).ok  # not an i64: no fact
    assert not check(verifier, token, args={"n": [1], "dry": True}).ok  # not top-level scalar


def test_custom_time_check_is_not_memoised(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    not_before = "check if time($t), $t >= 2028-01-01T00:00:00Z"
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("*:*")],
        expires_at=EXPIRES,
        checks=[not_before],
        now=ISSUED,
    )
    jan_2028 = 1_830_297_600
    assert_denied(check(verifier, token, now=jan_2028 - 1), ReasonCode.CAPABILITY_INSUFFICIENT)
    assert check(verifier, token, now=jan_2028).ok
    assert_denied(check(verifier, token, now=jan_2028 - 1), ReasonCode.CAPABILITY_INSUFFICIENT)


# --- caching never changes a result ----------------------------------------------------------


def test_cache_does_not_outlive_expiry(verifier: CapabilityVerifier, token: str) -> None:
    for _ in range(3):
        assert check(verifier, token).ok
    assert_denied(check(verifier, token, now=EXPIRES_EPOCH + 1), ReasonCode.CAPABILITY_EXPIRED)
    assert check(verifier, token).ok


def test_cache_does_not_outlive_revocation(verifier: CapabilityVerifier, token: str) -> None:
    assert check(verifier, token).ok
    revoked = frozenset(revocation_ids(token))
    assert_denied(check(verifier, token, revoked=revoked), ReasonCode.CAPABILITY_REVOKED)


def test_cache_keys_on_the_whole_request(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT, now=ISSUED)
    assert check(verifier, child, parent=PARENT).ok
    assert not check(verifier, child, parent=OTHER_PARENT).ok
    assert check(verifier, token, resource="Tool::a").ok
    assert not check(verifier, token, "shell.exec", "Tool::a").ok
    assert not check(verifier, token, principal=BOB).ok


def test_cold_and_warm_results_are_identical(token: str, root_pub: bytes) -> None:
    requests = [
        {},
        {"action": "shell.exec"},
        {"resource": "File::/srv/data", "action": "file.read"},
        {"now": EXPIRES_EPOCH + 1},
        {"now": ISSUED_EPOCH - MAX_CLOCK_SKEW - 1},  # issued in the future
        {"now": ISSUED_EPOCH - MAX_CLOCK_SKEW},
        {"principal": BOB},
    ]
    warm = CapabilityVerifier(root_pub)
    for kwargs in requests:
        cold = CapabilityVerifier(root_pub)
        first = check(cold, token, **kwargs)  # type: ignore[arg-type]
        check(warm, token, **kwargs)  # type: ignore[arg-type]
        assert check(warm, token, **kwargs) == first  # type: ignore[arg-type]
        warm.cache_clear()
        assert check(warm, token, **kwargs) == first  # type: ignore[arg-type]


def test_keys_from_trust_keys(tmp_path: Path) -> None:
    key_path = tmp_path / "capability.key"
    create_key(key_path)
    key = load_private_key(key_path)
    token = CapabilityIssuer(private_raw(key)).issue(
        principal=ALICE, rights=[Right.parse("tool.call:Tool::a")], expires_at=EXPIRES, now=ISSUED
    )
    assert check(CapabilityVerifier(public_raw(key)), token, resource="Tool::a").ok


def test_large_token_is_verified_every_call_and_still_correct(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    from interlock.capability.verify import MAX_CACHED_TOKEN_BYTES

    rights = [Right.parse(f"tool.call:Tool::t{i:04d}_{'x' * 30}") for i in range(200)]
    big = issuer.issue(principal=ALICE, rights=rights, expires_at=EXPIRES, now=ISSUED)
    assert len(big) > MAX_CACHED_TOKEN_BYTES
    for _ in range(2):
        assert check(verifier, big, resource=rights[7].resource).ok
        assert not check(verifier, big, resource="Tool::other").ok
    assert len(verifier._tokens) == 0


def test_lru_evicts_least_recently_used() -> None:
    from interlock.capability.verify import _LRU

    lru: _LRU[str, int] = _LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # 'b' is now the least recently used
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (1, None, 3, 2)


def test_concurrent_checks_agree(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    from concurrent.futures import ThreadPoolExecutor

    child = attenuate(
        token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")], now=ISSUED
    )
    requests = [
        (t, f"Tool::{r}", now)
        for t in (token, child)
        for r in ("a", "b")
        for now in (NOW, EXPIRES_EPOCH + 1)
    ]
    expected = [check(CapabilityVerifier(root_pub), t, resource=r, now=n) for t, r, n in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(20):
            got = list(
                pool.map(lambda req: check(verifier, req[0], resource=req[1], now=req[2]), requests)
            )
            assert got == expected
