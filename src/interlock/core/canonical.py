"""Canonical bytes (RFC 8785, JSON Canonicalization Scheme) and digests.

Everything Interlock hashes or signs goes through :func:`canonical_bytes`.

    >>> canonical_bytes({"b": 1, "a": "x"})
    b'{"a":"x","b":1}'
    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'

Signed records carry no floats (DESIGN §5): :func:`canonical_bytes` refuses them unless told
otherwise, so a float can never make two implementations disagree about the bytes that were
signed.

Speed: the ``rfc8785`` package is pure Python and costs ~100 µs for a decision record, which
is most of a decision's CPU. For values made only of strings, integers within ±2^53, booleans,
null, lists and objects whose keys sort the same in UTF-16 and in code points, RFC 8785 output
*is* what ``orjson.dumps(value, option=OPT_SORT_KEYS)`` writes (and what the standard
``json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` writes, ~20x
slower): same escapes (``\\b \\f \\n \\r \\t``, other controls as lowercase ``\\u00xx``,
nothing else escaped), same integer digits, same key order (UTF-8 byte order is code-point
order, which is UTF-16 order below U+D800). So :func:`canonical_bytes` checks that a value is
in that subset (one cheap walk) and uses ``orjson``; anything else (floats, keys with
characters at or above U+D800) goes to ``rfc8785``. ``tests/vectors/test_rfc8785.py`` holds
every path to the RFC's examples and property tests hold them to each other. The walk itself
starts with :func:`_is_plain`, which vouches only for exact JSON types already in the subset
(one call per container, no stack of tuples) and otherwise leaves the answer, and the error
message, to :func:`_fast_path_ok` (``tests/property/test_canonical_props.py``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import rfc8785

from interlock.errors import Error

_MAX_DEPTH = 64
_I_JSON = 2**53 - 1
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
).encode


class CanonicalizationError(Error):
    """The value cannot be canonicalized (a float, a non-string key, a non-JSON type)."""

    reason_code = "MALFORMED_REQUEST"


def _fast_path_ok(value: Any, allow_floats: bool) -> bool:
    """True when ``json`` writes exactly RFC 8785 for ``value``; raises on what neither may
    write. Iterative, so hostile nesting cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    fast = True
    while stack:
        v, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise CanonicalizationError(f"value nested deeper than {_MAX_DEPTH} levels")
        t = type(v)
        if t is str:
            pass  # lone surrogates fail the UTF-8 encode below
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str:
                    raise CanonicalizationError("object keys must be strings")
                if fast and not k.isascii() and max(k) >= "\ud800":
                    fast = False  # UTF-16 and code-point order may differ: let rfc8785 sort
                stack.append((item, depth + 1))
        elif t is list or t is tuple:
            stack.extend((item, depth + 1) for item in v)
        elif t is int:
            if not -_I_JSON <= v <= _I_JSON:
                raise CanonicalizationError("integer outside the I-JSON range (±2^53-1)")
        elif t is bool or v is None:
            pass
        elif t is float:
            if not allow_floats:
                raise CanonicalizationError("floats are not allowed in signed or hashed records")
            fast = False
        else:
            raise CanonicalizationError(f"{t.__name__} is not a JSON type")
    return fast


def _is_plain(value: Any, depth: int = 0) -> bool:
    """True only when :func:`_fast_path_ok` would return True without raising: ``value`` is
    made of exact ``dict`` (string keys below U+D800), ``list``/``tuple``, ``str``, ``int``
    within ±2^53, ``bool`` and ``None``, nested at most 64 levels. False means "ask
    :func:`_fast_path_ok`", which then says why (or picks ``rfc8785``): so this walk never
    changes an answer, it only takes the common case without a stack of tuples. Recursive, but
    only for containers and never deeper than 65 frames (it gives up past the limit)."""
    t = type(value)
    if t is dict:
        for k in value:
            if type(k) is not str or not (k.isascii() or max(k) < "\ud800"):
                return False
        items: Any = value.values()
    elif t is list or t is tuple:
        items = value
    else:
        return t is str or value is None or t is bool or (t is int and -_I_JSON <= value <= _I_JSON)
    if depth >= _MAX_DEPTH and value:
        return False  # the children would be deeper than the limit: let the walk raise
    for item in items:
        ti = type(item)
        if ti is str or item is None or ti is bool:
            continue
        if ti is int:
            if -_I_JSON <= item <= _I_JSON:
                continue
            return False
        if (ti is dict or ti is list or ti is tuple) and _is_plain(item, depth + 1):
            continue
        return False
    return True


def canonical_bytes(value: Any, *, allow_floats: bool = False) -> bytes:
    """Return the RFC 8785 bytes of a JSON value.

    ``allow_floats=True`` is for values that are only ever stored by digest (an agent's tool
    arguments); records that are signed never contain floats.

    Raises:
        CanonicalizationError: on floats (unless allowed), non-string keys, non-JSON types,
            integers outside ±2^53, lone surrogates, or nesting deeper than 64.
    """
    try:
        if _is_plain(value) or _fast_path_ok(value, allow_floats):
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        return bytes(rfc8785.dumps(value))
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("strings must be valid Unicode (lone surrogate)") from exc
    except orjson.JSONEncodeError as exc:
        # orjson refuses a lone surrogate (str is not valid UTF-8) where json would encode
        raise CanonicalizationError("strings must be valid Unicode (lone surrogate)") from exc
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise CanonicalizationError(f"cannot canonicalize: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


#: the digest of ``{}`` (most requests' context, many requests' arguments)
_EMPTY_OBJECT_DIGEST = hashlib.sha256(b"{}").hexdigest()


def digest(value: Any, *, allow_floats: bool = False) -> str:
    """Hex SHA-256 of the canonical bytes of ``value``.

    Raises:
        CanonicalizationError: as :func:`canonical_bytes`.
    """
    if type(value) is dict and not value:
        return _EMPTY_OBJECT_DIGEST  # canonical_bytes({}) is b"{}"
    return hashlib.sha256(canonical_bytes(value, allow_floats=allow_floats)).hexdigest()
