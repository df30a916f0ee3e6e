"""Human approvals: an Ed25519-signed artifact bound to one exact request digest. Pure: no I/O,
no clock (``now`` and ``expires_at`` are arguments).

    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from interlock.trust import keys
    >>> approver = Ed25519PrivateKey.generate()
    >>> text = make_approval("ab" * 32, approver, expires_at=1_800_000_600)
    >>> verify_approval(text, digest="ab" * 32, trusted=[keys.public_raw(approver)],
    ...                 now=1_800_000_000)

An approval is the compact JSON object::

    {"v": 1, "type": "interlock.approval", "request_digest": <hex SHA-256>,
     "approver": <hex raw 32-byte Ed25519 public key>, "expires": <RFC 3339 UTC, seconds>,
     "sig": <base64 Ed25519 signature>}

``sig`` signs the RFC 8785 bytes of the object without ``sig``. On the wire (the request's
``approval`` field, the output of ``interlock approve``) it travels as base64url, without
padding, of those compact JSON bytes: one token with no quoting problems in a shell or a JSON
string. ``request_digest`` is :func:`interlock.gate.request_digest`: principal, action,
resource, args and context, so an approval for other arguments does not match.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.core.canonical import canonical_bytes
from interlock.core.model import rfc3339_to_epoch
from interlock.errors import KeyFileError, VerificationError
from interlock.trust import keys

__all__ = ["APPROVAL_TYPE", "MAX_APPROVAL_BYTES", "make_approval", "verify_approval"]

APPROVAL_TYPE = "interlock.approval"
#: the largest approval intake accepts (a real one is about 400 bytes)
MAX_APPROVAL_BYTES = 8 * 1024
_FIELDS = frozenset({"v", "type", "request_digest", "approver", "expires", "sig"})
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_\-]+={0,2}$")


def _format_expiry(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_approval(request_digest: str, key: Ed25519PrivateKey, *, expires_at: int) -> str:
    """Sign an approval of the request whose digest is ``request_digest`` (hex), valid until
    ``expires_at`` (epoch seconds, exclusive). Returns the wire form (base64url, no padding).

    Raises:
        ValueError: ``request_digest`` is not 64 lowercase hex characters.
    """
    if not _HEX64_RE.match(request_digest):
        raise ValueError("request digest must be 64 lowercase hex characters")
    body: dict[str, Any] = {
        "v": 1,
        "type": APPROVAL_TYPE,
        "request_digest": request_digest,
        "approver": keys.public_raw(key).hex(),
        "expires": _format_expiry(expires_at),
    }
    body["sig"] = base64.b64encode(key.sign(canonical_bytes(body))).decode("ascii")
    compact = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("ascii")
    return base64.urlsafe_b64encode(compact).rstrip(b"=").decode("ascii")


def _decode(text: str) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_APPROVAL_BYTES or not _B64URL_RE.match(text):
        raise VerificationError("approval is not a base64url token of at most 8 KiB")
    stripped = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
        doc = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("approval is not base64url JSON") from exc
    if not isinstance(doc, dict) or set(doc) != _FIELDS:
        raise VerificationError("approval does not have exactly the approval fields")
    if doc["v"] != 1 or doc["type"] != APPROVAL_TYPE:
        raise VerificationError("approval has an unknown version or type")
    for name in ("request_digest", "approver"):
        if not isinstance(doc[name], str) or not _HEX64_RE.match(doc[name]):
            raise VerificationError(f"approval field {name!r} is not 64 lowercase hex characters")
    if not isinstance(doc["expires"], str) or not isinstance(doc["sig"], str):
        raise VerificationError("approval fields 'expires' and 'sig' must be strings")
    return doc


def verify_approval(text: str, *, digest: str, trusted: Sequence[bytes], now: int) -> None:
    """Check that ``text`` approves the request with digest ``digest`` at ``now`` (epoch
    seconds): well-formed, signed by one of the ``trusted`` raw public keys, for this exact
    digest, and not expired (valid while ``now < expires``).

    Raises:
        VerificationError: the approval is malformed, names an untrusted approver, does not
            verify, is for another request digest, or has expired. The message says which.
    """
    doc = _decode(text)
    approver = bytes.fromhex(doc["approver"])
    # an empty trusted list trusts nobody: it must never mean "any key"
    if approver not in set(trusted):
        raise VerificationError("approval is signed by a key that is not a trusted approver")
    try:
        sig = base64.b64decode(doc["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("approval signature is not base64") from exc
    body = {k: v for k, v in doc.items() if k != "sig"}
    try:
        public = keys.public_from_raw(approver)
    except (KeyFileError, ValueError) as exc:
        raise VerificationError("approval names an invalid approver key") from exc
    try:
        keys.verify_signature(public, sig, canonical_bytes(body))
    except VerificationError as exc:
        raise VerificationError("approval signature does not verify") from exc
    # checked after the signature, so a forged field cannot steer which error is reported
    if doc["request_digest"] != digest:
        raise VerificationError(
            "approval is for another request (its arguments, resource or principal differ)",
            approved=doc["request_digest"][:16],
        )
    try:
        expires = rfc3339_to_epoch(doc["expires"])
    except ValueError as exc:
        raise VerificationError("approval expiry is not an RFC 3339 time") from exc
    if now >= expires:
        raise VerificationError("approval has expired", expires=doc["expires"])
