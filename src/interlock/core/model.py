"""Requests, decisions, reason codes and ledger records: frozen values, no behaviour that
does I/O.

    >>> r = Reason(code=ReasonCode.POLICY_FORBID, detail="forbidden by policy", policy="no-rm")
    >>> r.to_json()
    {'code': 'POLICY_FORBID', 'detail': 'forbidden by policy', 'policy': 'no-rm'}

A ``Decision`` is a value: a denial never raises. ``decision_hash`` is the SHA-256 of the
RFC 8785 bytes of the decision record, which are exactly the bytes appended to the ledger.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from interlock.errors import reason_code_of

#: the ledger record schema version
RECORD_VERSION = 1

#: intake limits (DESIGN §6, issue #2)
MAX_REQUEST_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 64 * 1024
MAX_RECORD_BYTES = 64 * 1024 - 1  # an entry bundle (C2SP tlog-tiles) holds at most 65,535 bytes


class ReasonCode(StrEnum):
    """Denial reason codes (DESIGN §3). Stable and machine-readable: never rename one."""

    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    IDENTITY_UNVERIFIED = "IDENTITY_UNVERIFIED"
    CAPABILITY_INVALID = "CAPABILITY_INVALID"
    CAPABILITY_EXPIRED = "CAPABILITY_EXPIRED"
    CAPABILITY_REVOKED = "CAPABILITY_REVOKED"
    CAPABILITY_INSUFFICIENT = "CAPABILITY_INSUFFICIENT"
    PRINCIPAL_QUARANTINED = "PRINCIPAL_QUARANTINED"
    BOUNDARY_VIOLATION = "BOUNDARY_VIOLATION"
    ENVIRONMENT_UNTRUSTED = "ENVIRONMENT_UNTRUSTED"
    LINEAGE_BROKEN = "LINEAGE_BROKEN"
    POLICY_UNAVAILABLE = "POLICY_UNAVAILABLE"
    POLICY_STALE = "POLICY_STALE"
    POLICY_NO_PERMIT = "POLICY_NO_PERMIT"
    POLICY_FORBID = "POLICY_FORBID"
    POLICY_ERROR = "POLICY_ERROR"
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"
    LEDGER_CORRUPT = "LEDGER_CORRUPT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CONTAINMENT_UNAVAILABLE = "CONTAINMENT_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @classmethod
    def of(cls, exc: BaseException) -> ReasonCode:
        """The code ``exc`` denies with (:func:`interlock.errors.reason_code_of`), as the enum;
        never raises."""
        try:
            return cls(reason_code_of(exc))
        except ValueError:
            return cls.INTERNAL_ERROR


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class RecordType(StrEnum):
    DECISION = "decision"
    EXEC_START = "exec.start"
    EXEC_VERIFY = "exec.verify"
    EXEC_END = "exec.end"
    EXEC_TERMINATED = "exec.terminated"
    GOVERNANCE = "governance"


class Stage(StrEnum):
    """Where a decision was made. Only ``pipeline`` decisions are re-decided by replay: the
    others depend on the gate's clock, storage or input bytes, which replay reports apart."""

    INTAKE = "intake"
    PIPELINE = "pipeline"
    GATE = "gate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    code: ReasonCode
    detail: str
    policy: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"code": self.code.value, "detail": self.detail}
        if self.policy is not None:
            out["policy"] = self.policy
        return out


_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*\Z")

# SPIFFE ID (SPIFFE-ID spec §2): trust domain [a-z0-9._-], path segments [A-Za-z0-9._-], no
# empty, "." or ".." segment — so "under a principal's path" means what it says.
_SPIFFE_RE = re.compile(r"^spiffe://[a-z0-9._-]{1,255}(/[A-Za-z0-9._-]+)*\Z")
_DOT_SEGMENT_RE = re.compile(r"/\.{1,2}(/|$)")


def is_spiffe_id(value: str) -> bool:
    """Whether ``value`` is a well-formed SPIFFE ID without dot segments (max 2048 chars)."""
    return (
        isinstance(value, str)
        and len(value) <= 2048
        and bool(_SPIFFE_RE.match(value))
        and not _DOT_SEGMENT_RE.search(value)
    )


def is_under(child: str, parent: str) -> bool:
    """Whether SPIFFE ID ``child`` is ``parent`` or below it in the same trust domain."""
    return child == parent or child.startswith(parent.rstrip("/") + "/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A resource: a Cedar entity type (``Tool``, ``File``, ``McpTool``) and an id."""

    type: str
    id: str

    @property
    def uid(self) -> str:
        """``Type::id``, the form used in capability rights."""
        return f"{self.type}::{self.id}"

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}

    @staticmethod
    def is_valid_type(value: str) -> bool:
        return bool(_TYPE_RE.match(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequest:
    """A validated request. Built only by intake (``interlock.intake``), which assigns ``id``
    (UUIDv7) and ``time`` (RFC 3339 UTC, read once from the gate's clock)."""

    id: str
    time: str
    principal: str
    action: str
    resource: Resource
    args: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    capability: str | None = None
    parent: str | None = None
    traceparent: str | None = None
    #: a signed human approval (``interlock.trust.approval``, base64url) or None
    approval: str | None = None
    #: a signed break-glass override (``interlock.trust.breakglass``, base64url) or None
    break_glass: str | None = None

    @property
    def epoch(self) -> int:
        """``time`` as integer epoch seconds (pure: parses the recorded string)."""
        return rfc3339_to_epoch(self.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The answer of the pipeline. ``ledger_index`` is where its record was committed (None
    when the record could not be committed: then ``effect`` is always deny)."""

    request_id: str
    effect: Effect
    reasons: tuple[Reason, ...]
    snapshot: str
    decision_hash: str
    obligations: tuple[str, ...] = ()
    ledger_index: int | None = None
    stage: Stage = Stage.PIPELINE
    #: set when a break-glass override turned a policy denial into this allow: scope, reason,
    #: signer, the denial it overrode. Loud on purpose: print it, alert on it.
    break_glass: Mapping[str, Any] | None = None

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code.value for r in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "effect": self.effect.value,
            "reasons": [r.to_json() for r in self.reasons],
            "obligations": list(self.obligations),
            "snapshot": self.snapshot,
            "decision_hash": self.decision_hash,
            "ledger_index": self.ledger_index,
            "stage": self.stage.value,
            **({"break_glass": dict(self.break_glass)} if self.break_glass is not None else {}),
        }


def format_time(dt: datetime) -> str:
    """RFC 3339, UTC, microsecond precision, ``Z`` suffix."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SECOND_TEXT: list[tuple[int, str]] = [(-1, "")]


def format_time_us(us: int) -> str:
    """:func:`format_time` of the instant ``us`` microseconds after the epoch, exactly, without
    building a datetime: the text of the second is kept from the previous call."""
    seconds, frac = divmod(us, 1_000_000)
    last = _SECOND_TEXT[0]
    if last[0] != seconds:
        last = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
        _SECOND_TEXT[0] = last
    return f"{last[1]}.{frac:06d}Z"


def rfc3339_to_epoch(value: str) -> int:
    """Parse an RFC 3339 timestamp to integer epoch seconds (floor).

    Raises:
        ValueError: if ``value`` is not RFC 3339 with an offset.
    """
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without offset: {value!r}")
    return int(dt.timestamp() // 1)
