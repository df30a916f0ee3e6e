"""Capabilities: Biscuit tokens naming a principal, its rights and an expiry (DESIGN §7).

    >>> from datetime import UTC, datetime
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.trust.keys import private_raw, public_raw
    >>> root = Ed25519PrivateKey.generate()
    >>> token = CapabilityIssuer(private_raw(root)).issue(
    ...     principal="spiffe://acme.test/agent/researcher",
    ...     rights=[Right.parse("tool.call:Tool::*")],
    ...     expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    ...     now=datetime(2027, 1, 1, tzinfo=UTC),
    ... )
    >>> verifier = CapabilityVerifier(public_raw(root))
    >>> ok = verifier.check(token=token, principal="spiffe://acme.test/agent/researcher",
    ...     action="tool.call", resource="Tool::web_search", parent=None,
    ...     now=1_800_000_000, revoked=frozenset())
    >>> ok.ok, ok.code
    (True, None)
    >>> late = verifier.check(token=token, principal="spiffe://acme.test/agent/researcher",
    ...     action="tool.call", resource="Tool::web_search", parent=None,
    ...     now=1_900_000_000, revoked=frozenset())
    >>> late.code.value
    'CAPABILITY_EXPIRED'
    >>> early = verifier.check(token=token, principal="spiffe://acme.test/agent/researcher",
    ...     action="tool.call", resource="Tool::web_search", parent=None,
    ...     now=1_700_000_000, revoked=frozenset())
    >>> early.code.value, "issued in the future" in early.detail
    ('CAPABILITY_INVALID', True)

Issuing (:mod:`.issue`) and verifying (:mod:`.verify`) share only the rights model and the
fixed Datalog forms; only :mod:`._biscuit` imports ``biscuit_auth``.
"""

from __future__ import annotations

from interlock.capability.info import TokenInfo, inspect, revocation_ids
from interlock.capability.issue import CapabilityIssuer, attenuate
from interlock.capability.right import Right, resource_type_of
from interlock.capability.verify import CapabilityResult, CapabilityVerifier

__all__ = [
    "CapabilityIssuer",
    "CapabilityResult",
    "CapabilityVerifier",
    "Right",
    "TokenInfo",
    "attenuate",
    "inspect",
    "resource_type_of",
    "revocation_ids",
]
