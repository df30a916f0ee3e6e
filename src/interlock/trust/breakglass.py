"""Break-glass: a signed, scoped, short-lived override of *policy* denials (issue 3 §5).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.trust import keys
    >>> k = Ed25519PrivateKey.generate()
    >>> text = make_break_glass("shell.exec:Host::db-1", "incident 42", k,
    ...                         issued_at=1_800_000_000, expires_at=1_800_000_900)
    >>> verify_break_glass(text, action="shell.exec", resource_type="Host", resource_id="db-1",
    ...                    trusted=[keys.public_raw(k)], now=1_800_000_000)["reason"]
    'incident 42'

The artifact is the compact JSON object::

    {"v": 1, "type": "interlock.break_glass", "scope": "ACTION:TYPE::ID", "reason": <text>,
     "signer": <hex raw Ed25519 public key>, "issued": <RFC 3339 UTC>,
     "expires": <RFC 3339 UTC>, "sig": <base64>}

The validity window (``expires - issued``) is at most 24 hours and is checked when the override
is *used*, not only when it is signed: a trusted key cannot mint a standing exception.

on the wire as base64url (see :mod:`interlock.trust.sealed`). ``scope`` uses the capability
right syntax: ``ACTION`` or ``*``, ``TYPE::ID``, ``TYPE::*`` or ``*``. The gate honours it only
for POLICY_NO_PERMIT, POLICY_FORBID (not the kill switch) and APPROVAL_REQUIRED: it never
overrides a bad capability, a quarantine, a boundary, an untrusted environment, broken lineage,
a policy that cannot be loaded or evaluated, or a ledger failure. Every use is recorded in the
decision (``break_glass``) and printed as a warning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.model import rfc3339_to_epoch
from interlock.errors import VerificationError
from interlock.trust.sealed import format_expiry, open_sealed, seal

__all__ = ["BREAK_GLASS_TYPE", "make_break_glass", "parse_scope", "verify_break_glass"]

BREAK_GLASS_TYPE = "interlock.break_glass"
#: the longest override `interlock break-glass` signs: break-glass is for an incident, not a
#: standing exception (write a policy for that)
MAX_TTL_S = 24 * 3600
_FIELDS = frozenset({"v", "type", "scope", "reason", "signer", "issued", "expires", "sig"})
#: how far ``issued`` may lie in the future of the request time (clock skew between machines)
MAX_SKEW_S = 300


def parse_scope(scope: str) -> tuple[str, str, str]:
    """``ACTION:TYPE::ID`` → ``(action, type, id)``; ``*`` for action, type or id is a wildcard
    (``*`` alone for the resource is ``*::*``).

    Raises:
        ValueError: not of that form.
    """
    action, sep, resource = scope.partition(":")
    if not sep or not action or not resource:
        raise ValueError(f"scope {scope!r} is not ACTION:TYPE::ID")
    if resource == "*":
        return action, "*", "*"
    rtype, sep, rid = resource.partition("::")
    if not sep or not rtype or not rid:
        raise ValueError(f"scope {scope!r} is not ACTION:TYPE::ID")
    return action, rtype, rid


def make_break_glass(
    scope: str, reason: str, key: Ed25519PrivateKey, *, issued_at: int, expires_at: int
) -> str:
    """Sign an override of policy denials within ``scope``, valid from ``issued_at`` until
    ``expires_at`` (epoch seconds, exclusive; at most 24 h). ``reason`` is required: it is
    recorded with every use.

    Raises:
        ValueError: a malformed scope, an empty reason, or a window that is empty or longer
            than 24 hours.
    """
    parse_scope(scope)
    if not reason.strip():
        raise ValueError("break-glass needs a reason (it is recorded with every use)")
    if not 0 < expires_at - issued_at <= MAX_TTL_S:
        raise ValueError("a break-glass override is valid for more than 0 s and at most 24 h")
    body = {
        "v": 1,
        "type": BREAK_GLASS_TYPE,
        "scope": scope,
        "reason": reason[:500],
        "issued": format_expiry(issued_at),
        "expires": format_expiry(expires_at),
    }
    return seal(body, key, signer_field="signer")


def verify_break_glass(
    text: str,
    *,
    action: str,
    resource_type: str,
    resource_id: str,
    trusted: Sequence[bytes],
    now: int,
) -> dict[str, Any]:
    """Check that ``text`` overrides a policy denial of ``action`` on ``resource`` at ``now``.
    Returns what the decision records: ``sha256``, ``signer``, ``reason``, ``scope``,
    ``expires``.

    Raises:
        VerificationError: malformed, untrusted signer, bad signature, expired, or out of scope.
    """
    doc = open_sealed(
        text,
        what="break-glass override",
        type_=BREAK_GLASS_TYPE,
        fields=_FIELDS,
        signer_field="signer",
        role="break-glass key",
        trusted=trusted,
        now=now,
    )
    try:
        issued = rfc3339_to_epoch(str(doc["issued"]))
        expires = rfc3339_to_epoch(str(doc["expires"]))
    except ValueError as exc:
        raise VerificationError("break-glass override times are not RFC 3339") from exc
    if expires - issued > MAX_TTL_S:
        raise VerificationError("break-glass override is valid for more than 24 hours")
    if issued > now + MAX_SKEW_S:
        raise VerificationError("break-glass override is not valid yet (issued in the future)")
    try:
        s_action, s_type, s_id = parse_scope(str(doc["scope"]))
    except ValueError as exc:
        raise VerificationError("break-glass override has a malformed scope") from exc
    if not (
        s_action in ("*", action) and s_type in ("*", resource_type) and s_id in ("*", resource_id)
    ):
        raise VerificationError(
            f"break-glass override is scoped to {doc['scope']}, not {action}:"
            f"{resource_type}::{resource_id}"
        )
    return {
        "sha256": hashlib.sha256(text.encode("ascii")).hexdigest(),
        "signer": doc["signer"],
        "reason": doc["reason"],
        "scope": doc["scope"],
        "expires": doc["expires"],
    }
