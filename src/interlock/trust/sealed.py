"""Small Ed25519-signed JSON artifacts (approvals, break-glass overrides): the RFC 8785 bytes of
the object without ``sig`` are signed; the wire form is base64url (no padding) of the compact
JSON, one shell- and JSON-safe token. Pure: no I/O, no clock."""

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

__all__ = ["MAX_SEALED_BYTES", "format_expiry", "open_sealed", "seal"]

#: the largest artifact intake accepts (a real one is about 400-700 bytes)
MAX_SEALED_BYTES = 8 * 1024
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_\-]+={0,2}\Z")


def format_expiry(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seal(body: dict[str, Any], key: Ed25519PrivateKey, *, signer_field: str) -> str:
    """Sign ``body`` (``signer_field`` is set to the key's hex public key) and return the wire
    form."""
    doc = dict(body)
    doc[signer_field] = keys.public_raw(key).hex()
    doc["sig"] = base64.b64encode(key.sign(canonical_bytes(doc))).decode("ascii")
    compact = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode("ascii")
    return base64.urlsafe_b64encode(compact).rstrip(b"=").decode("ascii")


def open_sealed(
    text: str,
    *,
    what: str,
    type_: str,
    fields: frozenset[str],
    signer_field: str,
    role: str,
    trusted: Sequence[bytes],
    now: int,
) -> dict[str, Any]:
    """Decode and check an artifact: exactly ``fields``, version 1 and ``type_``, signed by one
    of the ``trusted`` raw keys (a trusted ``role``), and unexpired at ``now`` (valid while
    ``now < expires``).
    Returns its fields (without ``sig``).

    Raises:
        VerificationError: naming ``what`` and which check failed.
    """
    if not isinstance(text, str) or len(text) > MAX_SEALED_BYTES or not _B64URL_RE.match(text):
        raise VerificationError(f"{what} is not a base64url token of at most 8 KiB")
    stripped = text.rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
        doc = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} is not base64url JSON") from exc
    if not isinstance(doc, dict) or set(doc) != fields:
        raise VerificationError(f"{what} does not have exactly the {what} fields")
    if type(doc["v"]) is not int or doc["v"] != 1 or doc["type"] != type_:
        raise VerificationError(f"{what} has an unknown version or type")
    if not all(isinstance(v, str) for k, v in doc.items() if k != "v"):
        raise VerificationError(f"{what} fields other than 'v' must be strings")
    signer = doc[signer_field]
    if not isinstance(signer, str) or not HEX64_RE.match(signer):
        raise VerificationError(f"{what} field {signer_field!r} is not 64 lowercase hex characters")
    if not isinstance(doc["expires"], str) or not isinstance(doc["sig"], str):
        raise VerificationError(f"{what} fields 'expires' and 'sig' must be strings")
    public_raw = bytes.fromhex(signer)
    # an empty trusted list trusts nobody: it must never mean "any key"
    if public_raw not in set(trusted):
        raise VerificationError(f"{what} is signed by a key that is not a trusted {role}")
    try:
        sig = base64.b64decode(doc["sig"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"{what} signature is not base64") from exc
    body = {k: v for k, v in doc.items() if k != "sig"}
    try:
        signed = canonical_bytes(body)
    except Exception as exc:  # lone surrogates and the like: not an artifact we signed
        raise VerificationError(f"{what} cannot be canonicalized") from exc
    try:
        public = keys.public_from_raw(public_raw)
    except (KeyFileError, ValueError) as exc:
        raise VerificationError(f"{what} names an invalid key") from exc
    try:
        keys.verify_signature(public, sig, signed)
    except VerificationError as exc:
        raise VerificationError(f"{what} signature does not verify") from exc
    # checked after the signature, so a forged field cannot steer which error is reported
    try:
        expires = rfc3339_to_epoch(doc["expires"])
    except ValueError as exc:
        raise VerificationError(f"{what} expiry is not an RFC 3339 time") from exc
    if now >= expires:
        raise VerificationError(f"{what} has expired", expires=doc["expires"])
    return body
