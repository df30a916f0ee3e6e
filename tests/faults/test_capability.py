"""Fault matrix, capabilities: expired, not yet valid, revoked, forged, presented by the wrong
principal, oversized — each a real Biscuit token (or bytes in place of one) presented to
`interlock decide` and `interlock exec`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import CapabilityIssuer, Right, revocation_ids
from interlock.core.model import MAX_TOKEN_BYTES
from interlock.gate import Gate
from interlock.home import Home
from interlock.trust import keys
from tests.conftest import RESEARCHER, SUMMARIZER, tool_request
from tests.faults.harness import decide_cli, exec_cli, on_ledger, record

RIGHTS = [Right.parse("tool.call:Tool::*"), Right.parse("shell.exec:Host::*")]


def _issuer(home: Path) -> CapabilityIssuer:
    return CapabilityIssuer(keys.private_raw(Home.load(home).private_key("biscuit-root")))


def _row(
    fault: str, injected: str, expected: tuple[str, ...], home: Path, tok: str, tmp: Path
) -> None:
    attempts = [decide_cli(home, tool_request(tok)), exec_cli(home, tok, tmp / "ran")]
    record(
        fault,
        "capability",
        injected,
        expected,
        attempts,
        recorded=on_ledger(home, attempts),
        must_record=True,
    )


def test_expired(home: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    tok = _issuer(home).issue(
        principal=RESEARCHER,
        rights=RIGHTS,
        expires_at=now - timedelta(minutes=1),
        now=now - timedelta(minutes=10),
    )
    _row(
        "capability.expired",
        "a token signed by the home's root key that expired a minute ago",
        ("CAPABILITY_EXPIRED",),
        home,
        tok,
        tmp_path,
    )


def test_not_yet_valid(home: Path, tmp_path: Path) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    tok = _issuer(home).issue(
        principal=RESEARCHER, rights=RIGHTS, expires_at=later + timedelta(hours=1), now=later
    )
    _row(
        "capability.not-yet-valid",
        "a token issued an hour in the future (past the 60 s allowed skew)",
        ("CAPABILITY_INVALID",),
        home,
        tok,
        tmp_path,
    )


def test_revoked(home: Path, token: str, tmp_path: Path) -> None:
    with Gate.open(home) as gate:
        assert gate.decide(tool_request(token)).allowed
        gate.revoke(tuple(revocation_ids(token)), reason="fault matrix")
    _row(
        "capability.revoked",
        "a valid token whose revocation id was revoked on the log",
        ("CAPABILITY_REVOKED",),
        home,
        token,
        tmp_path,
    )


def test_forged(home: Path, tmp_path: Path) -> None:
    other_root = keys.private_raw(Ed25519PrivateKey.generate())
    tok = CapabilityIssuer(other_root).issue(
        principal=RESEARCHER, rights=RIGHTS, expires_at=datetime.now(UTC) + timedelta(minutes=5)
    )
    _row(
        "capability.forged",
        "a well-formed token signed by another root key",
        ("CAPABILITY_INVALID",),
        home,
        tok,
        tmp_path,
    )


def test_wrong_principal(home: Path, issue: Callable[..., str], tmp_path: Path) -> None:
    tok = issue(SUMMARIZER, "tool.call:Tool::*", "shell.exec:Host::*")
    _row(
        "capability.wrong-principal",
        "the summarizer's valid token presented by the lead researcher",
        ("IDENTITY_UNVERIFIED",),
        home,
        tok,
        tmp_path,
    )


def test_oversized(home: Path, token: str, tmp_path: Path) -> None:
    # a real token padded past the limit with base64 characters
    tok = token + "A" * (MAX_TOKEN_BYTES + 1 - len(token))
    _row(
        "capability.oversized",
        f"a real token padded to {MAX_TOKEN_BYTES + 1} bytes (limit {MAX_TOKEN_BYTES})",
        ("MALFORMED_REQUEST", "CAPABILITY_INVALID"),
        home,
        tok,
        tmp_path,
    )
