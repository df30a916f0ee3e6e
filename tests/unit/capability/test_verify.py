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
    attenuate,
    revocation_ids,
)
from interlock.core.model import ReasonCode
from interlock.trust.keys import create_key, load_private_key, private_raw, public_raw

from .conftest import ALICE, BOB, EXPIRES, EXPIRES_EPOCH, NOW

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
    )
    verifier = CapabilityVerifier(root_pub)
    assert check(verifier, token).expires_at == EXPIRES_EPOCH


def test_expiry_in_another_timezone(issuer: CapabilityIssuer, root_pub: bytes) -> None:
    plus2 = datetime(2030, 1, 1, 4, 0, tzinfo=timezone(timedelta(hours=2)))
    token = issuer.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=plus2)
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
    forged = rogue.issue(principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES)
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
    token = issuer.issue(principal=ALICE, rights=[Right.parse(right)], expires_at=EXPIRES)
    result = check(verifier, token, action, resource)
    assert result.ok is ok, result.detail
    assert result.ok is Right.parse(right).covers(action, resource)


def test_explicit_resource_type(issuer: CapabilityIssuer, verifier: CapabilityVerifier) -> None:
    token = issuer.issue(principal=ALICE, rights=[Right.parse("*:Tool::*")], expires_at=EXPIRES)
    # 'Tool::a::b' is read as type 'Tool::a' unless the caller says it is a Tool
    assert not check(verifier, token, "x", "Tool::a::b").ok
    assert check(verifier, token, "x", "Tool::a::b", resource_type="Tool").ok
    wrong = check(verifier, token, "x", "File::a", resource_type="Tool")
    assert_denied(wrong, ReasonCode.CAPABILITY_INSUFFICIENT)


# --- attenuation -----------------------------------------------------------------------------


def test_attenuation_narrows(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")])
    assert check(verifier, token, resource="Tool::b").ok  # the parent token allows it
    assert_denied(check(verifier, child, resource="Tool::b"), ReasonCode.CAPABILITY_INSUFFICIENT)
    assert check(verifier, child, resource="Tool::a").ok
    assert_denied(
        check(verifier, child, "file.read", "File::/srv/data"), ReasonCode.CAPABILITY_INSUFFICIENT
    )
    # each block brings its own revocation id
    assert len(check(verifier, child, resource="Tool::a").revocation_ids) == 2


def test_attenuation_to_a_type(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(token, root_public_raw=root_pub, rights=[Right.parse("*:File::*")])
    assert check(verifier, child, "file.read", "File::/srv/data").ok
    assert not check(verifier, child, "tool.call", "Tool::a").ok


def test_attenuation_star_keeps_rights(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, rights=[Right.parse("*:*")])
    assert check(verifier, child).ok
    assert not check(verifier, child, "shell.exec", "Cmd::rm").ok


def test_attenuation_shorter_ttl(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    soon = EXPIRES - timedelta(days=365)
    child = attenuate(token, root_public_raw=root_pub, expires_at=soon)
    soon_epoch = int(soon.timestamp())
    assert check(verifier, child, now=soon_epoch).ok
    assert_denied(check(verifier, child, now=soon_epoch + 1), ReasonCode.CAPABILITY_EXPIRED)
    assert check(verifier, token, now=soon_epoch + 1).ok  # the parent token is unaffected
    assert check(verifier, child, now=soon_epoch).expires_at == soon_epoch


def test_attenuation_longer_ttl_changes_nothing(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, expires_at=EXPIRES + timedelta(days=999))
    assert check(verifier, child).expires_at == EXPIRES_EPOCH
    assert_denied(check(verifier, child, now=EXPIRES_EPOCH + 1), ReasonCode.CAPABILITY_EXPIRED)


def test_attenuation_cannot_widen(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(
        token,
        root_public_raw=root_pub,
        rights=[Right.parse("shell.exec:Cmd::rm"), Right.parse("*:*")],
    )
    assert_denied(
        check(verifier, child, "shell.exec", "Cmd::rm"), ReasonCode.CAPABILITY_INSUFFICIENT
    )
    grandchild = attenuate(
        attenuate(token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")]),
        root_public_raw=root_pub,
        rights=[Right.parse("tool.call:Tool::*")],
    )
    assert check(verifier, grandchild, resource="Tool::a").ok
    assert_denied(
        check(verifier, grandchild, resource="Tool::b"), ReasonCode.CAPABILITY_INSUFFICIENT
    )


def test_parent_binding(verifier: CapabilityVerifier, token: str, root_pub: bytes) -> None:
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT)
    assert check(verifier, child, parent=PARENT).ok
    assert_denied(check(verifier, child, parent=OTHER_PARENT), ReasonCode.CAPABILITY_INSUFFICIENT)
    assert_denied(check(verifier, child, parent=None), ReasonCode.CAPABILITY_INSUFFICIENT)
    # an unbound token accepts any parent
    assert check(verifier, token, parent=OTHER_PARENT).ok


def test_revoking_an_attenuation_block(
    verifier: CapabilityVerifier, token: str, root_pub: bytes
) -> None:
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT)
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


# --- argument constraints --------------------------------------------------------------------


def test_argument_checks(issuer: CapabilityIssuer, verifier: CapabilityVerifier) -> None:
    token = issuer.issue(
        principal=ALICE,
        rights=[Right.parse("file.write:File::*")],
        expires_at=EXPIRES,
        checks=['check if arg("path", $p), $p.starts_with("/tmp/")'],
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
        principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, checks=[not_before]
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
    child = attenuate(token, root_public_raw=root_pub, parent=PARENT)
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
        principal=ALICE, rights=[Right.parse("tool.call:Tool::a")], expires_at=EXPIRES
    )
    assert check(CapabilityVerifier(public_raw(key)), token, resource="Tool::a").ok


def test_large_token_is_verified_every_call_and_still_correct(
    issuer: CapabilityIssuer, verifier: CapabilityVerifier
) -> None:
    from interlock.capability.verify import MAX_CACHED_TOKEN_BYTES

    rights = [Right.parse(f"tool.call:Tool::t{i:04d}_{'x' * 30}") for i in range(200)]
    big = issuer.issue(principal=ALICE, rights=rights, expires_at=EXPIRES)
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

    child = attenuate(token, root_public_raw=root_pub, rights=[Right.parse("tool.call:Tool::a")])
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
