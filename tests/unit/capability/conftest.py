"""Shared fixtures: real Ed25519 root keys (no mocks) and a standard issued token."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.capability import CapabilityIssuer, CapabilityVerifier, Right
from interlock.trust.keys import private_raw, public_raw

ALICE = "spiffe://acme.test/agent/alice"
BOB = "spiffe://acme.test/agent/bob"
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
EXPIRES_EPOCH = 1_893_456_000
NOW = 1_800_000_000  # 2027-01-15, before EXPIRES
#: every token in these tests is issued (and attenuated) at this fixed time, before NOW: the
#: tests never depend on the clock of the machine that runs them
ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED_EPOCH = 1_767_225_600


@pytest.fixture(scope="session")
def root() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def root_pub(root: Ed25519PrivateKey) -> bytes:
    return public_raw(root)


@pytest.fixture(scope="session")
def issuer(root: Ed25519PrivateKey) -> CapabilityIssuer:
    return CapabilityIssuer(private_raw(root))


@pytest.fixture
def verifier(root_pub: bytes) -> CapabilityVerifier:
    return CapabilityVerifier(root_pub)


@pytest.fixture(scope="session")
def token(issuer: CapabilityIssuer) -> str:
    """Alice may call any Tool and read one file, issued at ISSUED, until EXPIRES."""
    return issuer.issue(
        principal=ALICE,
        rights=[Right.parse("tool.call:Tool::*"), Right.parse("file.read:File::/srv/data")],
        expires_at=EXPIRES,
        now=ISSUED,
    )
