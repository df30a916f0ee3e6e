"""Request intake: untrusted input in, a validated :class:`ActionRequest` out.

    >>> req = parse_request(
    ...     b'{"principal": "spiffe://acme.test/agent/a", "action": "tool.call",'
    ...     b' "resource": {"type": "Tool", "id": "web_search"}}',
    ...     request_id="0190b3f6-7a1c-7000-8000-000000000000", time="2026-01-01T00:00:00.000000Z")
    >>> req.resource.uid
    'Tool::web_search'

Everything an agent sends is untrusted. Intake is strict: a size limit (64 KiB request,
64 KiB token), exact fields (unknown fields are refused), exact types, no control characters in
identifiers, resource ids that follow the grammar of :mod:`interlock.core.ids` (NFC, no
invisible or bidi characters, no edge whitespace, no ``.``/``..`` segments), bounded nesting,
integers within the I-JSON range. Any violation raises
:class:`MalformedRequest`, which the gate records as a deny with ``MALFORMED_REQUEST`` (the raw
input by digest), never a traceback.

The id (UUIDv7) and time come from the gate, which reads its clock once; clients cannot set them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from interlock.core.command import check_argv
from interlock.core.ids import id_problem
from interlock.core.model import (
    MAX_REQUEST_BYTES,
    MAX_TOKEN_BYTES,
    ActionRequest,
    Resource,
    is_spiffe_id,
)
from interlock.errors import MalformedRequest

__all__ = ["REQUEST_FIELDS", "new_request_id", "parse_request"]

REQUEST_FIELDS = frozenset(
    {
        "principal",
        "action",
        "resource",
        "args",
        "context",
        "capability",
        "parent",
        "traceparent",
        "approval",
        "break_glass",
    }
)
_REQUIRED = ("principal", "action", "resource")  # parse_request also tests these by name
SHELL_EXEC = "shell.exec"
_MAX_DEPTH = 32
_MAX_ID = 1024
#: an approval (``interlock.trust.approval``) is about 400 bytes
MAX_APPROVAL_BYTES = 8 * 1024
_I_JSON = 2**53 - 1
_isfinite = math.isfinite

#: lowercase ASCII words joined by single '.' or '/': no empty, '.' or '..' segment
_ACTION_RE = re.compile(r"^(?=.{1,128}\Z)[a-z][a-z0-9_\-]*(?:[./][a-z0-9_\-]+)*\Z")
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z0-9_]{0,63}\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_\-]+={0,2}\Z")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z")


#: random bytes for request ids, 10 per id, drawn from the OS 4,000 at a time: one getrandom
#: call per 400 ids instead of one per id. ``list.pop`` hands each chunk out once (it is atomic,
#: with or without the GIL); a refill races only with another refill, and both add fresh bytes.
#: A forked child starts with an empty pool, so parent and child never share an id's bytes.
_RANDOM_POOL: list[bytes] = []
_POOL_BYTES = 4000
os.register_at_fork(after_in_child=_RANDOM_POOL.clear)


def _random10() -> bytes:
    try:
        return _RANDOM_POOL.pop()
    except IndexError:
        fresh = os.urandom(_POOL_BYTES)
        _RANDOM_POOL.extend(fresh[i : i + 10] for i in range(10, _POOL_BYTES, 10))
        return fresh[:10]


def new_request_id(unix_ns: int) -> str:
    """A UUIDv7 (RFC 9562 §5.7) for the given time: 48-bit ms timestamp, random rest."""
    rand = int.from_bytes(_random10(), "big")
    value = (
        ((unix_ns // 1_000_000) & 0xFFFF_FFFF_FFFF) << 80  # unix_ts_ms (48 bits)
        | 0x7 << 76  # version 7
        | ((rand >> 62) & 0xFFF) << 64  # rand_a (12 bits)
        | 0b10 << 62  # variant
        | rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b (62 bits)
    )
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) writes, without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fail(message: str, **evidence: Any) -> MalformedRequest:
    return MalformedRequest(message, **evidence)


def _check_json_value(value: Any, where: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise _fail(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_unicode(value, where)
        return
    if isinstance(value, int):
        if not -_I_JSON <= value <= _I_JSON:
            raise _fail(f"{where}: integer outside the I-JSON range (±2^53-1)")
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(f"{where}: NaN and infinity are not JSON")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_json_value(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _fail(f"{where}: object keys must be strings")
            _check_unicode(k, where)
            _check_json_value(v, f"{where}.{k}", depth + 1)
        return
    raise _fail(f"{where}: {type(value).__name__} is not a JSON type")


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_json_ok(value: Any, depth: int = 0) -> bool:
    """True only when ``_check_json_value(value, where, depth)`` would return without raising:
    exact ``dict`` (string keys), ``list``, ``str`` (no lone surrogate), ``int`` within the I-JSON
    range, finite ``float``, ``bool`` and ``None``, nested at most 32 levels. False means "run
    :func:`_check_json_value`", which then raises with the path of what is wrong (or accepts
    what this walk does not vouch for, such as a subclass of a JSON type). So the common case
    builds no path strings and makes one call per container, and no answer changes."""
    t = type(value)
    if t is dict:
        for k in value:
            if type(k) is not str or not (k.isascii() or _utf8_ok(k)):
                return False
        items: Any = value.values()
    elif t is list:
        items = value
    elif t is str:
        return value.isascii() or _utf8_ok(value)
    elif t is float:
        return _isfinite(value)
    else:
        return value is None or t is bool or (t is int and -_I_JSON <= value <= _I_JSON)
    if depth >= _MAX_DEPTH and value:
        return False  # the children would be deeper than the limit
    for item in items:
        ti = type(item)
        if ti is str:
            if item.isascii() or _utf8_ok(item):
                continue
            return False
        if item is None or ti is bool:
            continue
        if ti is int:
            if -_I_JSON <= item <= _I_JSON:
                continue
            return False
        if ti is float:
            if _isfinite(item):
                continue
            return False
        if (ti is dict or ti is list) and _is_json_ok(item, depth + 1):
            continue
        return False
    return True


def _ident(value: Any, name: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(f"'{name}' must be a string")
    if not value:
        raise _fail(f"'{name}' must not be empty")
    if len(value) > _MAX_ID:
        raise _fail(f"'{name}' is longer than {_MAX_ID} characters")
    if _CONTROL_RE.search(value):
        raise _fail(f"'{name}' contains control characters")
    if pattern is not None and not pattern.match(value):
        raise _fail(f"'{name}' is not well-formed", value=value[:80])
    _check_unicode(value, name)
    return value


def _resource_id(value: Any) -> str:
    """A resource id that follows the grammar of :mod:`interlock.core.ids` (NFC, NFKC-stable,
    no invisible characters, no edge whitespace, no dot segments)."""
    ident = _ident(value, "resource.id")
    problem = id_problem(ident)
    if problem is not None:
        raise _fail(f"'resource.id' {problem}", value=ident[:80].encode("unicode_escape").decode())
    return ident


def _check_unicode(value: str, where: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _fail(f"{where}: not valid Unicode (lone surrogate)") from exc


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _fail(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise _fail(f"{name} is not valid JSON")


def parse_request(
    raw: bytes | str | Mapping[str, Any], *, request_id: str, time: str
) -> ActionRequest:
    """Validate untrusted input and build an :class:`ActionRequest`.

    Args:
        raw: JSON bytes or text, or an already-decoded mapping (from the Python API).
        request_id: the UUIDv7 the gate assigned.
        time: the RFC 3339 time the gate read.

    Raises:
        MalformedRequest: on any violation; the message says what is wrong.
    """
    checked = False
    if isinstance(raw, bytes | str):
        data_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if len(data_bytes) > MAX_REQUEST_BYTES:
            raise _fail("request exceeds 64 KiB", size=len(data_bytes))
        try:
            text = data_bytes.decode("utf-8")
            doc = json.loads(
                text,
                object_pairs_hook=_reject_duplicate_keys,
                parse_constant=_reject_constant,
            )
        except MalformedRequest:
            raise
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, …
            raise _fail(f"request is not valid UTF-8 JSON: {exc}") from exc
    elif type(raw) is dict or isinstance(raw, Mapping):
        # From the Python API. Validate strictly (string keys, JSON types only), then take a
        # plain-JSON copy: subclasses with odd __eq__ or later mutation by the caller cannot
        # reach the pipeline, and the size checked is the size of what is decided on.
        # one copy, walked and then encoded: what is checked is what is decided on
        copy = dict(raw)
        if not _is_json_ok(copy):
            _check_json_value(copy, "request")
        try:
            encoded = _to_json(copy)
        except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
            raise _fail(f"request is not JSON-serialisable: {exc}") from exc
        if len(encoded) > MAX_REQUEST_BYTES:
            raise _fail("request exceeds 64 KiB", size=len(encoded))
        doc = _from_json(encoded)
        checked = True  # the walk above covered args and context
    else:
        raise _fail(f"request must be a JSON object, not {type(raw).__name__}")

    if not isinstance(doc, dict):
        raise _fail("request must be a JSON object")
    if not REQUEST_FIELDS.issuperset(doc):
        unknown = set(doc) - REQUEST_FIELDS
        raise _fail(f"unknown field(s): {', '.join(sorted(unknown))}")
    if "principal" not in doc or "action" not in doc or "resource" not in doc:
        missing = [f for f in _REQUIRED if f not in doc]
        raise _fail(f"missing field(s): {', '.join(missing)}")

    principal = _ident(doc["principal"], "principal")
    if not is_spiffe_id(principal):
        raise _fail(
            "'principal' is not well-formed: a SPIFFE ID like spiffe://example.org/agent/a"
            " (segments of A-Z a-z 0-9 . _ -, no '.' or '..')",
            value=principal[:80],
        )
    action = _ident(doc["action"], "action", _ACTION_RE)

    res = doc["resource"]
    # (a dict's keys are distinct: two keys, both named, is exactly {"type", "id"})
    if not isinstance(res, dict) or len(res) != 2 or "type" not in res or "id" not in res:
        raise _fail("'resource' must be an object with exactly 'type' and 'id'")
    resource = Resource(
        type=_ident(res["type"], "resource.type", _TYPE_RE), id=_resource_id(res["id"])
    )

    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise _fail("'args' must be an object")
    if not checked and not _is_json_ok(args):
        _check_json_value(args, "args")
    if action == SHELL_EXEC:
        _check_shell_args(args)
    context = doc.get("context", {})
    if not isinstance(context, dict):
        raise _fail("'context' must be an object")
    if not checked and not _is_json_ok(context):
        _check_json_value(context, "context")

    capability = doc.get("capability")
    if capability is not None:
        if not isinstance(capability, str):
            raise _fail("'capability' must be a string")
        if len(capability) > MAX_TOKEN_BYTES:
            raise _fail("capability exceeds 64 KiB", size=len(capability))
        if not _B64URL_RE.match(capability):
            raise _fail("'capability' is not base64url")

    parent = doc.get("parent")
    if parent is not None:
        parent = _ident(parent, "parent", _UUID_RE)
    traceparent = doc.get("traceparent")
    if traceparent is not None:
        traceparent = _ident(traceparent, "traceparent", _TRACEPARENT_RE)

    approval = _sealed(doc, "approval")
    break_glass = _sealed(doc, "break_glass")

    return ActionRequest(
        id=request_id,
        time=time,
        principal=principal,
        action=action,
        resource=resource,
        args=args,
        context=context,
        capability=capability,
        parent=parent,
        traceparent=traceparent,
        approval=approval,
        break_glass=break_glass,
    )


def _check_shell_args(args: Mapping[str, Any]) -> None:
    """``shell.exec``: ``argv`` is a non-empty list of strings (Cedar sees it only as a set and
    as the canonical ``command`` the policy engine derives from it, so its shape is checked
    here), ``executable`` an absolute path if given, and ``command`` absent: it is Interlock's
    to derive, never the caller's to state."""
    if "command" in args:
        raise _fail("shell.exec: 'args.command' is derived by Interlock and cannot be sent")
    check_argv(args.get("argv"), args.get("executable"))


def _sealed(doc: Mapping[str, Any], name: str) -> str | None:
    """A signed artifact field (approval, break_glass): a base64url string of at most 8 KiB.
    Its signature is checked by the pipeline, which records why it was refused."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(f"{name!r} must be a string")
    if len(value) > MAX_APPROVAL_BYTES:
        raise _fail(f"{name} exceeds 8 KiB", size=len(value))
    if not _B64URL_RE.match(value):
        raise _fail(f"{name!r} is not base64url")
    return value


def _plain(obj: Any) -> Any:
    """A subclass of a JSON type as that type's plain value (a ``str`` subclass claiming to
    equal anything is copied to the string it holds), for msgspec; anything else is refused."""
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        return int.__int__(obj)
    if isinstance(obj, float):
        return float.__float__(obj)
    if isinstance(obj, list):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not a JSON type")


#: a plain-JSON copy of a checked mapping (compact, as sent over HTTP): msgspec, ~10x json
_to_json = msgspec.json.Encoder(enc_hook=_plain).encode
_from_json = msgspec.json.Decoder().decode
