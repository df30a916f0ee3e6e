"""Canonical bytes (RFC 8785, JSON Canonicalization Scheme) and digests.

Everything Interlock hashes or signs goes through :func:`canonical_bytes`.

    >>> canonical_bytes({"b": 1, "a": "x"})
    b'{"a":"x","b":1}'
    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'

Signed records carry no floats (DESIGN §5): :func:`canonical_bytes` refuses them, so a
float can never make two implementations disagree about the bytes that were signed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from interlock.errors import Error


class CanonicalizationError(Error):
    """The value cannot be canonicalized (a float, a non-string key, a non-JSON type)."""

    reason_code = "MALFORMED_REQUEST"


def _reject_floats(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise CanonicalizationError("value nested deeper than 64 levels")
    if isinstance(value, float):
        raise CanonicalizationError("floats are not allowed in signed or hashed records")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CanonicalizationError("object keys must be strings")
            _reject_floats(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _reject_floats(v, depth + 1)


def canonical_bytes(value: Any, *, allow_floats: bool = False) -> bytes:
    """Return the RFC 8785 bytes of a JSON value.

    ``allow_floats=True`` is for values that are only ever stored by digest (an agent's tool
    arguments); records that are signed never contain floats.

    Raises:
        CanonicalizationError: on floats (unless allowed), non-string keys, non-JSON types,
            integers outside ±2^53, or nesting > 64.
    """
    if not allow_floats:
        _reject_floats(value)
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(f"cannot canonicalize: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest(value: Any, *, allow_floats: bool = False) -> str:
    """Hex SHA-256 of the canonical bytes of ``value``.

    Raises:
        CanonicalizationError: as :func:`canonical_bytes`.
    """
    return hashlib.sha256(canonical_bytes(value, allow_floats=allow_floats)).hexdigest()
