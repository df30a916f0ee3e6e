"""The HTTP API's wire shapes: pydantic models at the edge (STYLE: pydantic only at the HTTP and
config edges), and the documented JSON Schema of an action request.

    >>> DecisionOut.model_validate({"request_id": "r", "effect": "deny", "reasons": [],
    ...     "obligations": [], "snapshot": "", "decision_hash": "00", "ledger_index": None,
    ...     "stage": "gate"}).effect
    'deny'

Action requests are *not* parsed by pydantic: ``POST /v1/decisions`` and ``POST /v1/executions``
hand the raw body bytes to the gate, whose intake is the validator, so that a malformed request
is recorded as a ``MALFORMED_REQUEST`` deny like any other. :data:`ACTION_REQUEST_SCHEMA` only
documents that contract in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from interlock.core.model import MAX_REQUEST_BYTES

__all__ = [
    "ACTION_REQUEST_SCHEMA",
    "ApprovalCheckIn",
    "ApprovalCheckOut",
    "CheckpointOut",
    "ConsistencyOut",
    "DecisionOut",
    "EntryOut",
    "ExecutionEndIn",
    "ExecutionOut",
    "ExecutionStarted",
    "GovernanceOut",
    "HealthOut",
    "InclusionOut",
    "KillSwitchIn",
    "LineageOut",
    "PolicyInstalled",
    "Problem",
    "QuarantineIn",
    "ReadyOut",
    "RejectedRequest",
    "RevocationIn",
]

_HEX64 = r"^[0-9a-f]{64}$"
#: execution ids are the request ids intake assigns: UUIDv7, lowercase
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: a reason the operator gives: required, recorded on the ledger
_REASON = Field(min_length=1, max_length=1000, pattern=r"\S")

_STR = {"type": "string", "maxLength": 1024}
_NULLABLE_STR = {"anyOf": [{"type": "string"}, {"type": "null"}]}

#: the documented shape of an action request (DESIGN §1); the gate's intake enforces it, with
#: more checks than a JSON Schema can say (SPIFFE IDs, base64url, nesting, I-JSON integers)
ACTION_REQUEST_SCHEMA: dict[str, Any] = {
    "title": "ActionRequest",
    "type": "object",
    "description": (
        "What an agent wants to do. Validated by the gate's intake: a request that does not "
        f"conform (or is larger than {MAX_REQUEST_BYTES} bytes) is still recorded, as a deny "
        "with reason MALFORMED_REQUEST."
    ),
    "required": ["principal", "action", "resource"],
    "additionalProperties": False,
    "properties": {
        "principal": {**_STR, "description": "SPIFFE ID, e.g. spiffe://acme.test/agent/a"},
        "action": {**_STR, "description": "e.g. tool.call, shell.exec, http.request"},
        "resource": {
            "type": "object",
            "required": ["type", "id"],
            "additionalProperties": False,
            "properties": {
                "type": {**_STR, "description": "Cedar entity type, e.g. Tool"},
                "id": {**_STR, "description": "e.g. web_search"},
            },
        },
        "args": {"type": "object", "description": "the action's arguments (JSON)"},
        "context": {"type": "object", "description": "extra context for policies (JSON)"},
        "capability": {**_NULLABLE_STR, "description": "Biscuit token, base64url"},
        "parent": {**_NULLABLE_STR, "description": "parent execution id (UUIDv7) or null"},
        "traceparent": {**_NULLABLE_STR, "description": "W3C traceparent"},
        "approval": {**_NULLABLE_STR, "description": "signed human approval, base64url"},
        "break_glass": {**_NULLABLE_STR, "description": "signed break-glass override, base64url"},
    },
}


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    # untrusted input: unknown fields are refused (422), not ignored
    model_config = ConfigDict(extra="forbid", str_max_length=64 * 1024)


class Problem(_Out):
    """An error: ``detail`` says what is wrong and what to do about it."""

    detail: str


class ReasonOut(_Out):
    code: str
    detail: str
    policy: str | None = None


class DecisionOut(_Out):
    """``Decision.to_json()``: clients MUST treat anything but ``effect == "allow"`` as deny."""

    request_id: str
    effect: Literal["allow", "deny"]
    reasons: list[ReasonOut]
    obligations: list[str]
    snapshot: str
    decision_hash: str
    ledger_index: int | None
    stage: Literal["intake", "pipeline", "gate"]


class RejectedRequest(_Out):
    """A request the gate refused at intake (413, 422) or denied (403 on executions): the
    recorded deny decision is in ``decision``."""

    detail: str
    decision: DecisionOut


class ExecutionStarted(_Out):
    execution_id: str
    status: Literal["running"]
    decision: DecisionOut
    start_index: int = Field(description="ledger index of the exec.start record")
    lease_ms: int | None = Field(
        default=None,
        description="with a lease: report (GET with the capability, or PATCH) within this",
    )


class ExecutionEndIn(_In):
    """What a remote runner reports when the action ended (all optional; none are floats)."""

    exit_status: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    signal: str | None = Field(default=None, max_length=32, pattern=r"^[A-Z0-9]+$")
    duration_ms: int | None = Field(default=None, ge=0, le=2**53 - 1)
    outcome: Literal["ok", "error"] | None = None
    stdout_sha256: str | None = Field(default=None, pattern=_HEX64)
    stderr_sha256: str | None = Field(default=None, pattern=_HEX64)
    result_sha256: str | None = Field(default=None, pattern=_HEX64)


class AuthorizationOut(_Out):
    """Whether a running execution's authorization still holds *now* (re-decided with the
    current snapshot; nothing recorded). A remote runner polls this and stops when it is false."""

    holds: bool
    reasons: list[ReasonOut]


class ExecutionOut(_Out):
    id: str
    effect: Literal["allow", "deny"] | str
    status: str
    parent: str | None
    depth: int
    decision_index: int
    decision_leaf: str
    authorization: AuthorizationOut | None = None
    end_index: int | None = None
    reason: ReasonOut | None = Field(
        default=None, description="why this server terminated it (status 'terminated')"
    )
    terminated_index: int | None = Field(
        default=None, description="ledger index of its exec.terminated record"
    )


class LineageOut(_Out):
    id: str
    chain: list[ExecutionOut] = Field(description="the execution first, its root last")
    complete: bool = Field(description="false if a parent named on the way is not recorded")


class CheckpointOut(_Out):
    size: int
    root_hash: str
    note: str = Field(description="the C2SP signed note (tlog-checkpoint)")
    created: str


class EntryOut(_Out):
    index: int
    leaf_hash: str = Field(description="hex RFC 6962 leaf hash: SHA-256(0x00 || data)")
    data: str = Field(description="the exact entry bytes, base64")
    record: dict[str, Any] | None = Field(description="the entry parsed as JSON")


class InclusionOut(_Out):
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str] = Field(description="RFC 9162 §2.1.3 inclusion proof, hex")
    checkpoint: str | None = Field(description="the signed checkpoint of tree_size, if any")


class ConsistencyOut(_Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_size: int = Field(alias="from")
    to: int
    from_root: str
    to_root: str
    hashes: list[str] = Field(description="RFC 9162 §2.1.4 consistency proof, hex")


class HealthOut(_Out):
    status: Literal["ok"]
    ledger_size: int | None
    durability: str
    policy_version: int | None
    policy_digest: str | None
    #: ``ok``, or the DESIGN §3 code every decision is denied with now, then why
    fail_closed: str
    #: a fleet node's freshness lease (absent on a SQLite home)
    lease: LeaseOut | None = None
    #: the process id of the worker that answered (``interlock serve --workers``)
    worker: int | None = None
    #: the process whose sequencer commits this worker's records (``interlock serve
    #: --workers`` on a SQLite home: the server's parent); absent when it commits its own
    sequencer: int | None = None


class LeaseOut(_Out):
    lease_s: float
    #: seconds since the node last confirmed the log's head (None: never)
    age_s: float | None
    stale: bool
    node_id: str
    watermark: int
    problem: str | None


class ReadyOut(_Out):
    ready: bool
    reasons: list[str]


class QuarantineIn(_In):
    principal: str = Field(min_length=1, max_length=2048)
    reason: str = _REASON


class KillSwitchIn(_In):
    on: bool
    reason: str = _REASON


class RevocationIn(_In):
    """Revoke a token (all its blocks' revocation ids) or explicit revocation ids."""

    token: str | None = Field(default=None, min_length=1, max_length=64 * 1024)
    revocation_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=256, description="hex revocation ids"
    )
    reason: str = _REASON


class ApprovalCheckIn(_In):
    approval: str = Field(min_length=1, max_length=8 * 1024)
    request_digest: str = Field(pattern=_HEX64)


class ApprovalCheckOut(_Out):
    valid: bool
    detail: str


class GovernanceOut(_Out):
    ledger_index: int
    event: str


class PolicyInstalled(_Out):
    version: int
    digest: str
    changed: bool
