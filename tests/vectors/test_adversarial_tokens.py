"""Adversarial capability tokens (DESIGN §2, STYLE: vectors for adversarial inputs).

Each hostile token must give one specific non-ok reason code: never ok, never an exception.
Tokens are crafted with real keys; wire-level tampering edits the Biscuit protobuf
(``Biscuit{1 rootKeyId, 2 authority, 3 blocks*, 4 proof}``,
``SignedBlock{1 block, 2 nextKey, 3 signature, ...}``) with the tiny codec below.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import (
    CapabilityIssuer,
    CapabilityResult,
    CapabilityVerifier,
    Right,
    _biscuit,
    attenuate,
)
from interlock.core.model import MAX_TOKEN_BYTES, ReasonCode
from interlock.trust.keys import private_raw, public_raw

ALICE = "spiffe://acme.test/agent/alice"
MALLORY = "spiffe://acme.test/agent/mallory"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
EXPIRES_EPOCH = 1_893_456_000
NOW = 1_800_000_000
ISSUED = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, before NOW: no test reads the clock

ROOT = Ed25519PrivateKey.generate()
ROOT_PUB = public_raw(ROOT)
ISSUER = CapabilityIssuer(private_raw(ROOT))
# Alice may call one tool.
TOKEN = ISSUER.issue(
    principal=ALICE, rights=[Right.parse("tool.call:Tool::a")], expires_at=EXPIRES, now=ISSUED
)
TOKEN_B = ISSUER.issue(
    principal=ALICE, rights=[Right.parse("tool.call:Tool::b")], expires_at=EXPIRES, now=ISSUED
)

INVALID = ReasonCode.CAPABILITY_INVALID
INSUFFICIENT = ReasonCode.CAPABILITY_INSUFFICIENT


# --- a minimal protobuf codec (varints and length-delimited fields only) --------------------


def _b64d(token: str) -> bytes:
    return base64.urlsafe_b64decode(token)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data: bytes) -> list[tuple[int, int, int]]:
    """(field number, start of payload, end of payload) of each length-delimited field."""
    out, i = [], 0
    while i < len(data):
        tag, i = _varint(data, i)
        if tag & 7 == 0:
            _, i = _varint(data, i)
            continue
        assert tag & 7 == 2, "only varint and length-delimited fields expected"
        length, i = _varint(data, i)
        out.append((tag >> 3, i, i + length))
        i += length
    return out


def _field(no: int, payload: bytes) -> bytes:
    return _enc_varint(no << 3 | 2) + _enc_varint(len(payload)) + payload


def _parts(token: str, no: int) -> list[bytes]:
    data = _b64d(token)
    return [data[s:e] for n, s, e in _fields(data) if n == no]


def _flip_signature(token: str, block: int) -> str:
    """Flip one bit of the signature of block ``block`` (0 = authority)."""
    data = bytearray(_b64d(token))
    signed = [(s, e) for n, s, e in _fields(bytes(data)) if n in (2, 3)][block]
    sig = next((s, e) for n, s, e in _fields(bytes(data[signed[0] : signed[1]])) if n == 3)
    data[signed[0] + sig[0] + 10] ^= 0x01
    return _b64e(bytes(data))


def _graft(onto: str, donor: str) -> str:
    """``onto``'s authority block followed by ``donor``'s attenuation blocks and proof: the
    grafted block was signed with ``donor``'s key chain, not ``onto``'s."""
    return _b64e(
        _field(2, _parts(onto, 2)[0])
        + b"".join(_field(3, b) for b in _parts(donor, 3))
        + _field(4, _parts(donor, 4)[0])
    )


def _append_raw(token: str, source: str) -> str:
    """Append a holder-written block with arbitrary Datalog (what a hostile holder can do)."""
    parsed = _biscuit.parse_verified(token, _biscuit.load_public_key(ROOT_PUB))
    return _biscuit.append_block(parsed, source, {})


def _check(token: str | None, **kw: object) -> CapabilityResult:
    request: dict[str, object] = {
        "principal": ALICE,
        "action": "tool.call",
        "resource": "Tool::a",
        "parent": None,
        "now": NOW,
        "revoked": frozenset(),
    }
    request.update(kw)
    result = CapabilityVerifier(ROOT_PUB).check(token=token, **request)  # type: ignore[arg-type]
    assert isinstance(result, CapabilityResult)
    return result


def test_baseline_tokens_are_valid() -> None:
    assert _check(TOKEN).ok
    assert _check(TOKEN_B, resource="Tool::b").ok
    child = attenuate(TOKEN, root_public_raw=ROOT_PUB, parent="p", now=ISSUED)
    assert _check(child, parent="p").ok
    assert _check(_b64e(_b64d(TOKEN))).ok  # the codec round-trips


# --- undecodable, truncated, tampered -> CAPABILITY_INVALID ---------------------------------

_UNDECODABLE: dict[str, Callable[[], str | None]] = {
    "none": lambda: None,
    "empty": lambda: "",
    "garbage": lambda: "!!!! not base64 !!!!",
    "short base64": lambda: "AAAA",
    "random bytes": lambda: _b64e(bytes(range(256)) * 2),
    "truncated string": lambda: TOKEN[: len(TOKEN) // 2],
    "truncated bytes": lambda: _b64e(_b64d(TOKEN)[:-10]),
    "standard base64 alphabet": lambda: TOKEN.replace("-", "+").replace("_", "/") + "+/",
    "non-ascii": lambda: TOKEN[:-4] + "é===",
    "whitespace": lambda: " " + TOKEN,
    "oversized garbage": lambda: "A" * (MAX_TOKEN_BYTES + 1),
    "oversized valid prefix": lambda: TOKEN + "A" * MAX_TOKEN_BYTES,
    "flipped authority signature": lambda: _flip_signature(TOKEN, 0),
    "flipped attenuation signature": lambda: _flip_signature(
        attenuate(TOKEN, root_public_raw=ROOT_PUB, parent="p", now=ISSUED), 1
    ),
    "grafted block from another token": lambda: _graft(
        TOKEN_B, attenuate(TOKEN, root_public_raw=ROOT_PUB, rights=[Right.parse("*:*")], now=ISSUED)
    ),
    "attenuation block removed": lambda: _b64e(
        _field(2, _parts(attenuate(TOKEN, root_public_raw=ROOT_PUB, parent="p", now=ISSUED), 2)[0])
        + _field(
            4, _parts(attenuate(TOKEN, root_public_raw=ROOT_PUB, parent="p", now=ISSUED), 4)[0]
        )
    ),
    "other root key": lambda: CapabilityIssuer(private_raw(Ed25519PrivateKey.generate())).issue(
        principal=ALICE, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=ISSUED
    ),
}


@pytest.mark.parametrize("name", sorted(_UNDECODABLE))
def test_invalid(name: str) -> None:
    token = _UNDECODABLE[name]()
    result = _check(token)
    assert not result.ok
    assert result.code is INVALID, result.detail
    if token:
        assert token not in result.detail
        assert token[:32] not in result.detail


def test_no_single_principal() -> None:
    root = _biscuit.load_private_key(private_raw(ROOT))
    for source in ('right("*", "*");', 'principal("a"); principal("b"); right("*", "*");'):
        token = _biscuit.build_token(root, source, {}, ())
        assert _check(token, principal="a").code is INVALID


# --- identity --------------------------------------------------------------------------------


def test_token_of_another_principal() -> None:
    mallorys = ISSUER.issue(
        principal=MALLORY, rights=[Right.parse("*:*")], expires_at=EXPIRES, now=ISSUED
    )
    assert _check(mallorys).code is ReasonCode.IDENTITY_UNVERIFIED  # presented by Alice
    assert _check(TOKEN, principal=MALLORY).code is ReasonCode.IDENTITY_UNVERIFIED  # stolen


def test_block_claiming_another_principal() -> None:
    # Mallory holds Alice's token and appends principal(Mallory): block facts never reach
    # the authority block, so the token is still Alice's.
    hostile = _append_raw(TOKEN, f'principal("{MALLORY}");')
    assert _check(hostile, principal=MALLORY).code is ReasonCode.IDENTITY_UNVERIFIED
    assert _check(hostile).ok


# --- widening attempts -> CAPABILITY_INSUFFICIENT -------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        'right("shell.exec", "Cmd::rm");',
        'right("*", "*");',
        'action_match("*"); resource_match("*");',
        "right($a, $r) <- action($a), resource($r);",
        'right("shell.exec", "Cmd::rm"); check if true;',
        'resource_type("Cmd"); right("shell.exec", "Cmd::*");',
    ],
)
def test_block_cannot_widen(source: str) -> None:
    hostile = _append_raw(TOKEN, source)
    assert _check(hostile).ok  # still what the authority allowed
    result = _check(hostile, action="shell.exec", resource="Cmd::rm")
    assert result.code is INSUFFICIENT, result.detail


def test_attenuation_cannot_widen() -> None:
    child = attenuate(TOKEN, root_public_raw=ROOT_PUB, rights=[Right.parse("*:*")], now=ISSUED)
    assert _check(child, action="shell.exec", resource="Cmd::rm").code is INSUFFICIENT


def test_block_cannot_extend_expiry() -> None:
    # a fake time fact satisfies only the block's own checks, never the authority's expiry
    hostile = _append_raw(TOKEN, "time(2000-01-01T00:00:00Z);")
    assert _check(hostile, now=EXPIRES_EPOCH + 1).code is ReasonCode.CAPABILITY_EXPIRED
    assert _check(hostile).ok


def test_block_cannot_dodge_revocation() -> None:
    hostile = _append_raw(TOKEN, "check if true;")
    root_id = _biscuit.revocation_ids(_biscuit.parse_unverified(TOKEN))[0]
    result = _check(hostile, revoked=frozenset({root_id}))
    assert result.code is ReasonCode.CAPABILITY_REVOKED


def test_hand_written_expiry_is_enforced_and_not_memoised() -> None:
    # An expiry in a form this package does not write: Python cannot read it, so the token is
    # authorized on every call and Biscuit enforces it (as INSUFFICIENT).
    hostile = _append_raw(TOKEN, "check if time($t), $t < 2028-01-01T00:00:00Z;")
    verifier = CapabilityVerifier(ROOT_PUB)
    base = {"principal": ALICE, "action": "tool.call", "resource": "Tool::a", "parent": None}
    before = verifier.check(token=hostile, now=NOW, revoked=frozenset(), **base)  # type: ignore[arg-type]
    after = verifier.check(token=hostile, now=1_840_000_000, revoked=frozenset(), **base)  # type: ignore[arg-type]
    assert before.ok
    assert after.code is INSUFFICIENT


def test_hostile_datalog_is_bounded() -> None:
    # 60 x 60 derived facts exceed the authorizer's 1000-fact limit: a deny without a verdict
    facts = "".join(f"n({i});" for i in range(60))
    hostile = _append_raw(TOKEN, facts + "pair($a, $b) <- n($a), n($b); check if pair(1, 2);")
    result = _check(hostile)
    assert not result.ok
    assert result.code is INSUFFICIENT, result.detail
    assert "limits" in result.detail
    verifier = CapabilityVerifier(ROOT_PUB)
    for _ in range(2):  # a deny without a verdict is not memoised, and stays a deny
        again = verifier.check(
            token=hostile,
            principal=ALICE,
            action="tool.call",
            resource="Tool::a",
            parent=None,
            now=NOW,
            revoked=frozenset(),
        )
        assert again == result
    assert len(verifier._results) == 0


def test_quote_in_request_values_cannot_inject() -> None:
    # request values are Datalog parameters, never source text
    action = 'tool.call"), right("*", "*'
    resource = 'Tool::a") or true; ("'
    assert _check(TOKEN, action=action).code is INSUFFICIENT
    result = _check(TOKEN, resource=resource)
    assert result.code is INSUFFICIENT


# --- issued-at: a token from the future, or from before issued-at -> CAPABILITY_INVALID -------

A_YEAR = 365 * 24 * 3600
FUTURE = ISSUER.issue(
    principal=ALICE,
    rights=[Right.parse("tool.call:Tool::a")],
    expires_at=datetime.fromtimestamp(NOW + A_YEAR + 3600, UTC),
    now=datetime.fromtimestamp(NOW + A_YEAR, UTC),  # an issuer whose clock is a year ahead
)


def _hand_built(source: str) -> str:
    root = _biscuit.load_private_key(private_raw(ROOT))
    return _biscuit.build_token(root, source, {"p": ALICE, "exp": EXPIRES}, ())


@pytest.mark.parametrize(
    ("name", "token"),
    [
        ("issued a year ahead", lambda: FUTURE),
        (
            "backdated by a holder's block",  # block facts never reach the authority's issued-at
            lambda: _append_raw(FUTURE, "issued_at(2000-01-01T00:00:00Z);"),
        ),
        (
            "attenuated a year ahead",
            lambda: attenuate(
                TOKEN,
                root_public_raw=ROOT_PUB,
                parent="p",
                now=datetime.fromtimestamp(NOW + A_YEAR, UTC),
            ),
        ),
        (
            "no issued-at (issued before issued-at existed)",
            lambda: _hand_built(
                'principal({p}); right("tool.call", "Tool::a");'
                " check if time($time), $time <= {exp};"
            ),
        ),
        (
            "issued-at in a block only",
            lambda: _append_raw(
                _hand_built('principal({p}); right("tool.call", "Tool::a");'),
                "issued_at(2026-01-01T00:00:00Z);",
            ),
        ),
        (
            "issued-at as text",
            lambda: _hand_built(
                'principal({p}); right("tool.call", "Tool::a"); issued_at("2026-01-01T00:00:00Z");'
            ),
        ),
    ],
)
def test_issued_at(name: str, token: Callable[[], str]) -> None:
    tok = token()
    result = _check(tok, parent="p")
    assert result.code is INVALID, (name, result.detail)
    assert tok not in result.detail
    assert "issued in the future" in result.detail or "no issued-at" in result.detail


def test_a_future_token_is_valid_once_its_time_comes() -> None:
    assert _check(FUTURE, now=NOW + A_YEAR).ok
    assert _check(FUTURE, now=NOW + A_YEAR - 60).ok  # within MAX_CLOCK_SKEW
    assert _check(FUTURE, now=NOW + A_YEAR - 61).code is INVALID


# --- admin rights: the granting right must itself be an admin right ---------------------------


def _admin(token: str, operation: str = "kill-switch") -> CapabilityResult:
    return _check(
        token, action="admin", resource=f"Admin::{operation}", resource_type="Admin", explicit=True
    )


MIXED = ISSUER.issue(
    principal=ALICE,
    rights=[Right.parse("*:*"), Right.parse("admin:Admin::approval")],
    expires_at=EXPIRES,
    now=ISSUED,
)


@pytest.mark.parametrize(
    "source",
    [
        'right("admin", "Admin::kill-switch");',
        'right("admin", "Admin::*");',
        'action_match("*"); resource_match("*");',
        'resource_match("*");',
        'right("admin", $r) <- resource($r);',
    ],
)
def test_admin_right_cannot_be_assembled(source: str) -> None:
    # `*:*` covers the kill switch and `admin:Admin::approval` is an admin right: together they
    # must not make an admin of the kill switch, and neither may a holder's block
    assert _admin(MIXED, "approval").ok
    assert _admin(MIXED).code is INSUFFICIENT
    assert _admin(_append_raw(MIXED, source)).code is INSUFFICIENT
    narrowed = attenuate(
        MIXED, root_public_raw=ROOT_PUB, rights=[Right.parse("admin:Admin::*")], now=ISSUED
    )
    assert _admin(narrowed).code is INSUFFICIENT
