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
string. ``request_digest`` is :func:`interlock.pipeline.request_digest`: principal, action,
resource, args and context, so an approval for other arguments does not match.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.errors import VerificationError
from interlock.trust.sealed import HEX64_RE, MAX_SEALED_BYTES, format_expiry, open_sealed, seal

__all__ = ["APPROVAL_TYPE", "MAX_APPROVAL_BYTES", "make_approval", "verify_approval"]

APPROVAL_TYPE = "interlock.approval"
#: the largest approval intake accepts (a real one is about 400 bytes)
MAX_APPROVAL_BYTES = MAX_SEALED_BYTES
_FIELDS = frozenset({"v", "type", "request_digest", "approver", "expires", "sig"})


def make_approval(request_digest: str, key: Ed25519PrivateKey, *, expires_at: int) -> str:
    """Sign an approval of the request whose digest is ``request_digest`` (hex), valid until
    ``expires_at`` (epoch seconds, exclusive). Returns the wire form (base64url, no padding).

    Raises:
        ValueError: ``request_digest`` is not 64 lowercase hex characters.
    """
    if not HEX64_RE.match(request_digest):
        raise ValueError("request digest must be 64 lowercase hex characters")
    body = {
        "v": 1,
        "type": APPROVAL_TYPE,
        "request_digest": request_digest,
        "expires": format_expiry(expires_at),
    }
    return seal(body, key, signer_field="approver")


def verify_approval(text: str, *, digest: str, trusted: Sequence[bytes], now: int) -> None:
    """Check that ``text`` approves the request with digest ``digest`` at ``now`` (epoch
    seconds): well-formed, signed by one of the ``trusted`` raw public keys, for this exact
    digest, and not expired (valid while ``now < expires``).

    Raises:
        VerificationError: the approval is malformed, names an untrusted approver, does not
            verify, is for another request digest, or has expired. The message says which.
    """
    doc = open_sealed(
        text,
        what="approval",
        type_=APPROVAL_TYPE,
        fields=_FIELDS,
        signer_field="approver",
        role="approver",
        trusted=trusted,
        now=now,
    )
    if doc["request_digest"] != digest:
        raise VerificationError(
            "approval is for another request (its arguments, resource or principal differ)",
            approved=str(doc["request_digest"])[:16],
        )
