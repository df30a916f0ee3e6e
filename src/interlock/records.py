"""The records a gate writes: decisions (RFC 8785 canonical JSON, as they go on the log) and
node-signed governance records."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from interlock.core.canonical import canonical_bytes, digest
from interlock.core.model import (
    RECORD_VERSION,
    ActionRequest,
    Decision,
    Effect,
    Reason,
    ReasonCode,
    RecordType,
    Stage,
)
from interlock.errors import LedgerCorrupt, LedgerError, MalformedRequest, VerificationError
from interlock.ledger.projection import delta_of, status_set_by
from interlock.ledger.protocols import Append, AppendResult
from interlock.pipeline import Lineage, Snapshot, Verdict
from interlock.process import process_identity
from interlock.trust import keys

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.engine import GateCore as Gate

_log = logging.getLogger("interlock")

#: the record types of a governed execution's life (``Gate.record_execution`` writes them)
EXEC_RECORDS = frozenset(
    {RecordType.EXEC_START, RecordType.EXEC_VERIFY, RecordType.EXEC_END, RecordType.EXEC_TERMINATED}
)


_DECISION = RecordType.DECISION.value

#: what ``Gate.decide`` returns when even reporting an error failed: a constant, built at import
LAST_RESORT = Decision(
    request_id="00000000-0000-7000-8000-000000000000",
    effect=Effect.DENY,
    reasons=(Reason(code=ReasonCode.INTERNAL_ERROR, detail="could not decide or report why"),),
    snapshot="",
    decision_hash=hashlib.sha256(b"interlock:last-resort-deny").hexdigest(),
    ledger_index=None,
    stage=Stage.GATE,
)


def decision_record(
    request: ActionRequest,
    verdict: Verdict,
    *,
    snapshot_id: str | None,
    lineage: Lineage,
    stage: Stage,
) -> dict[str, Any]:
    """The ledger record of a decision. Its RFC 8785 bytes are the leaf data; their SHA-256
    is the decision hash. Arguments, context and token are recorded by digest."""
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "type": _DECISION,
        "id": request.id,
        "ts": request.time,
        "stage": stage._value_,  # .value is a descriptor call per read; _value_ is what it reads
        "request": {
            "principal": request.principal,
            "action": request.action,
            "resource": request.resource.to_json(),
            "args_sha256": digest(request.args, allow_floats=True),
            "context_sha256": digest(request.context, allow_floats=True),
            "capability_sha256": (
                hashlib.sha256(request.capability.encode()).hexdigest()
                if request.capability
                else None
            ),
            "traceparent": request.traceparent,
        },
        "parent": request.parent,
        "parent_leaf": lineage.parent_leaf,
        "snapshot": snapshot_id,
        "effect": verdict.effect._value_,
        "reasons": [r.to_json() for r in verdict.reasons],
        "obligations": list(verdict.obligations),
    }
    if request.approval is not None:
        # present only with an approval, so records made before approvals existed replay
        # byte-identical; the approval itself is in the request payload blob
        rec["request"]["approval_sha256"] = hashlib.sha256(
            request.approval.encode("ascii")
        ).hexdigest()
    if request.break_glass is not None:
        rec["request"]["break_glass_sha256"] = hashlib.sha256(
            request.break_glass.encode("ascii")
        ).hexdigest()
    if verdict.break_glass is not None:
        # the loud flag: this allow exists only because a human broke the glass
        rec["break_glass"] = dict(verdict.break_glass)
    if request.parent is not None:
        rec["lineage"] = lineage.to_json()
    return rec


def sign_governance(record: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """``record`` with ``signer`` (the hex public key) and ``sig``: the hex Ed25519 signature
    over the RFC 8785 bytes of the record with ``signer`` and without ``sig``."""
    rec = {k: v for k, v in record.items() if k != "sig"}
    rec["signer"] = keys.public_raw(key).hex()
    rec["sig"] = key.sign(canonical_bytes(rec)).hex()
    return rec


def verify_governance(record: Mapping[str, Any], public: bytes) -> None:
    """Check a governance record's node signature (see :func:`sign_governance`).

    Raises:
        VerificationError: the record is unsigned, names another signer than ``public``, or its
            signature does not verify over the record's other fields.
    """
    sig, signer = record.get("sig"), record.get("signer")
    if not isinstance(sig, str) or not isinstance(signer, str):
        raise VerificationError("governance record is not signed by the node key")
    if signer != public.hex():
        raise VerificationError("governance record is signed by a key that is not the node's")
    try:
        raw = bytes.fromhex(sig)
    except ValueError as exc:
        raise VerificationError("governance record signature is not hex") from exc
    body = {k: v for k, v in record.items() if k != "sig"}
    keys.verify_signature(keys.public_from_raw(public), raw, canonical_bytes(body))


def _payload_blob(request: ActionRequest) -> bytes:
    """The request's arguments, context and token, for replay. Plain JSON, not RFC 8785: the
    record holds their digests, and replay needs the exact Python values back (canonical
    bytes would turn the float ``2.0`` into ``2``, which Cedar sees differently)."""
    payload: dict[str, Any] = {
        "args": request.args,
        "context": request.context,
        "capability": request.capability,
    }
    if request.approval is not None:
        payload["approval"] = request.approval
    if request.break_glass is not None:
        payload["break_glass"] = request.break_glass
    try:
        # floats round-trip through orjson as through json (shortest repr), ~10x faster
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        pass  # a lone surrogate (orjson writes only valid UTF-8): json keeps it
    return json.dumps(
        payload,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8", "surrogatepass")


def record_execution(
    gate: Gate,
    kind: RecordType,
    request_id: str,
    fields: Mapping[str, Any],
    *,
    status: str | None = None,
) -> int:
    """Append an ``exec.start``, ``exec.verify``, ``exec.end`` or ``exec.terminated`` record
    for execution ``request_id`` (its id is the request id); in the same transaction the
    execution's status becomes what the record type sets (``running``, ``ended``,
    ``terminated``; statuses only move forward). ``status``, when given, must be that one.

    Raises:
        LedgerUnavailable: the record was not committed (a supervisor then must not start,
            or must stop, the action).
    """
    if kind not in EXEC_RECORDS:
        raise ValueError(f"not an execution record type: {kind}")
    row = gate.ledger.execution(request_id)
    rec: dict[str, Any] = {
        "v": RECORD_VERSION,
        "type": kind.value,
        "id": request_id,
        "ts": gate._now()[1],
        "parent": row.parent if row is not None else None,
        "decision_leaf": row.leaf_hash.hex() if row is not None else None,
        **dict(fields),
    }
    if status is not None and status_set_by(rec) != status:
        raise ValueError(f"{kind.value} does not set status {status!r}")
    (res,) = gate.ledger.append(
        [
            Append(
                record=canonical_bytes(rec),
                state=delta_of(rec, node_public=None, root_public=None),
            )
        ],
        timeout=gate.ledger_timeout_s,
    )
    return res.index


def _start_append(
    gate: Gate, request: ActionRequest, decision_data: bytes, start: Mapping[str, Any] | None
) -> tuple[Append, ...]:
    """The ``exec.start`` append that rides with an allow (see :meth:`admit`)."""
    if start is None:
        return ()
    rec: dict[str, Any] = {
        **dict(start),  # first: the caller's fields never replace the record's own
        "v": RECORD_VERSION,
        "type": RecordType.EXEC_START.value,
        "id": request.id,
        "ts": gate._now()[1],
        "parent": request.parent,
        "decision_leaf": hashlib.sha256(b"\x00" + decision_data).hexdigest(),
    }
    me = process_identity()
    if me is not None:  # who supervises it: see reap_orphans
        rec["process"] = me
    return (
        Append(
            record=canonical_bytes(rec),
            state=delta_of(rec, node_public=None, root_public=None),
        ),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A decided request whose record is built but not yet appended (:func:`_prepare`)."""

    request: ActionRequest
    verdict: Verdict
    snapshot: Snapshot
    stage: Stage
    items: tuple[Append, ...]
    decision_hash: str
    ts: int | None


def _prepare(
    gate: Gate,
    request: ActionRequest,
    verdict: Verdict,
    snapshot: Snapshot,
    lineage: Lineage,
    stage: Stage,
    *,
    start: Mapping[str, Any] | None = None,
) -> Prepared:
    """The decision record of ``verdict`` (and, for an allow with ``start``, its
    ``exec.start``), ready to append."""
    record = decision_record(
        request, verdict, snapshot_id=snapshot.id, lineage=lineage, stage=stage
    )
    data = canonical_bytes(record)
    blobs = {f"req:{request.id}": _payload_blob(request)}
    if snapshot.id not in gate._stored_snapshots:
        blobs[f"snapshot:{snapshot.id}"] = canonical_bytes(dict(snapshot.descriptor))
    allowed = verdict.effect is Effect.ALLOW
    change = delta_of(record, node_public=None, root_public=None)
    items = (
        Append(record=data, blobs=blobs, state=change),
        *_start_append(gate, request, data, start if allowed else None),
    )
    return Prepared(
        request=request,
        verdict=verdict,
        snapshot=snapshot,
        stage=stage,
        items=items,
        decision_hash=hashlib.sha256(data).hexdigest(),
        ts=change.ts,
    )


def _finish(
    gate: Gate, prepared: Prepared | MalformedPrepared, outcome: AppendResult | LedgerError
) -> Decision:
    """The answer for ``prepared`` once its append returned ``outcome`` (its decision record's
    result, or the ledger's error): I1 — the only allow is here, after the durable commit."""
    if isinstance(prepared, MalformedPrepared):
        return _finish_malformed(prepared, outcome)
    request, verdict, snapshot = prepared.request, prepared.verdict, prepared.snapshot
    allowed = verdict.effect is Effect.ALLOW
    if isinstance(outcome, LedgerError):
        if isinstance(outcome, LedgerCorrupt):
            gate._corrupt = outcome.diagnostics()
        code = (
            ReasonCode.LEDGER_CORRUPT
            if isinstance(outcome, LedgerCorrupt)
            else ReasonCode.LEDGER_UNAVAILABLE
        )
        return Decision(
            request_id=request.id,
            effect=Effect.DENY,
            reasons=(
                *((r for r in verdict.reasons) if not allowed else ()),
                Reason(code=code, detail=f"decision not recorded: {outcome.message}"),
            ),
            snapshot=snapshot.id,
            decision_hash=prepared.decision_hash,
            ledger_index=None,
            stage=Stage.GATE,
        )
    res = outcome
    gate._stored_snapshots.add(snapshot.id)
    if prepared.ts is not None and prepared.ts > gate._time_floor:
        gate._time_floor = prepared.ts
    if verdict.break_glass is not None:
        _log.warning(
            "BREAK-GLASS: %s on %s by %s allowed by an override (scope %s, reason %r); it"
            " overrode %s — recorded at ledger index %d",
            request.action,
            request.resource.uid,
            request.principal,
            verdict.break_glass.get("scope"),
            verdict.break_glass.get("reason"),
            verdict.break_glass.get("overrode", {}).get("code"),
            res.index,
        )
    # I1: this is the only allow in Interlock, and it is after the durable commit.
    return Decision(
        request_id=request.id,
        effect=verdict.effect,
        reasons=verdict.reasons,
        obligations=verdict.obligations,
        snapshot=snapshot.id,
        decision_hash=prepared.decision_hash,
        ledger_index=res.index,
        stage=prepared.stage,
        break_glass=verdict.break_glass,
    )


def _append_and_finish(gate: Gate, prepared: Prepared | MalformedPrepared) -> Decision:
    """Append ``prepared``'s records in a commit of their own and answer it."""
    try:
        res, *_ = gate.ledger.append(list(prepared.items), timeout=gate.ledger_timeout_s)
    except LedgerError as exc:
        return _finish(gate, prepared, exc)
    return _finish(gate, prepared, res)


def _commit(
    gate: Gate,
    request: ActionRequest,
    verdict: Verdict,
    snapshot: Snapshot,
    lineage: Lineage,
    stage: Stage,
    *,
    start: Mapping[str, Any] | None = None,
) -> Decision:
    prepared = _prepare(gate, request, verdict, snapshot, lineage, stage, start=start)
    return _append_and_finish(gate, prepared)


@dataclass(frozen=True, slots=True)
class MalformedPrepared:
    """A malformed request's deny record, built but not yet appended
    (:func:`_prepare_malformed`); :func:`_finish_malformed` answers it once appended."""

    request_id: str
    snapshot_id: str
    reason: Reason
    items: tuple[Append, ...]
    decision_hash: str


def _prepare_malformed(
    raw: Mapping[str, Any] | bytes | str,
    exc: MalformedRequest,
    request_id: str,
    when: str,
    snapshot_id: str,
) -> MalformedPrepared:
    """The deny record of a request intake refused: its raw bytes' digest and size (the bytes
    themselves as a blob, up to 1 MiB), never its fields."""
    if isinstance(raw, bytes | str):
        raw_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    else:
        try:
            raw_bytes = repr(dict(raw)).encode("utf-8", "surrogatepass")[: 1 << 20]
        except Exception:  # noqa: BLE001 - an unprintable object is still a malformed request
            raw_bytes = b"<unrepresentable>"
    raw_digest = hashlib.sha256(raw_bytes).hexdigest()
    reason = Reason(code=ReasonCode.MALFORMED_REQUEST, detail=exc.message[:500])
    record = {
        "v": RECORD_VERSION,
        "type": RecordType.DECISION.value,
        "id": request_id,
        "ts": when,
        "stage": Stage.INTAKE.value,
        "request": {"raw_sha256": raw_digest, "raw_size": len(raw_bytes)},
        "parent": None,
        "parent_leaf": None,
        "snapshot": snapshot_id,
        "effect": Effect.DENY.value,
        "reasons": [reason.to_json()],
        "obligations": [],
    }
    data = canonical_bytes(record)
    blobs = {f"raw:{raw_digest}": raw_bytes} if len(raw_bytes) <= 1 << 20 else {}
    item = Append(
        record=data, blobs=blobs, state=delta_of(record, node_public=None, root_public=None)
    )
    return MalformedPrepared(
        request_id=request_id,
        snapshot_id=snapshot_id,
        reason=reason,
        items=(item,),
        decision_hash=hashlib.sha256(data).hexdigest(),
    )


def _finish_malformed(prepared: MalformedPrepared, outcome: AppendResult | LedgerError) -> Decision:
    """The deny for ``prepared`` once its append returned ``outcome`` (recorded at its index,
    or not recorded, with the ledger's reason added)."""
    reasons: tuple[Reason, ...] = (prepared.reason,)
    index: int | None = None
    if isinstance(outcome, LedgerError):
        code = (
            ReasonCode.LEDGER_CORRUPT
            if isinstance(outcome, LedgerCorrupt)
            else ReasonCode.LEDGER_UNAVAILABLE
        )
        reasons = (
            prepared.reason,
            Reason(code=code, detail=f"decision not recorded: {outcome.message}"),
        )
    else:
        index = outcome.index
    return Decision(
        request_id=prepared.request_id,
        effect=Effect.DENY,
        reasons=reasons,
        snapshot=prepared.snapshot_id,
        decision_hash=prepared.decision_hash,
        ledger_index=index,
        stage=Stage.INTAKE,
    )


def _unrecorded(gate: Gate, request_id: str, code: ReasonCode, detail: str) -> Decision:
    """A deny that could not be recorded. Its hash is over plain JSON (not the canonical
    encoder, which may be what failed): it identifies the answer, it proves nothing."""
    reason = Reason(code=code, detail=detail)
    blob = json.dumps([request_id, code.value, detail], sort_keys=True).encode()
    return Decision(
        request_id=request_id,
        effect=Effect.DENY,
        reasons=(reason,),
        snapshot="",
        decision_hash=hashlib.sha256(blob).hexdigest(),
        ledger_index=None,
        stage=Stage.GATE,
    )


def decide_many(gate: Gate, requests: Sequence[Mapping[str, Any] | bytes | str]) -> list[Decision]:
    """Decide several action requests and record them in **one** durable commit: the
    answers, in order, are those :meth:`decide` would give each, and every allow among
    them is returned only after that commit. For callers holding many requests at once
    (an agent fanning out, a batch API); each request is decided on its own (its own
    deadline; requests of one batch cannot be each other's parents: a child's parent must
    be committed before the child is decided).

    Never raises; if the commit fails every request of it is denied
    (LEDGER_UNAVAILABLE / LEDGER_CORRUPT), as :meth:`decide` would deny one.
    """
    out: list[Decision | None] = [None] * len(requests)
    prepared: list[tuple[int, Prepared | MalformedPrepared]] = []
    for i, raw in enumerate(requests):
        try:
            decided = gate._verdict(raw, time.perf_counter_ns(), None, None)
            if isinstance(decided, Decision):
                out[i] = decided
                continue
            if isinstance(decided, MalformedPrepared):
                # recorded in the batch's one commit, not in a commit of its own
                prepared.append((i, decided))
                continue
            request, verdict, snapshot, lineage, stage = decided
            prepared.append((i, _prepare(gate, request, verdict, snapshot, lineage, stage)))
        except Exception as exc:  # noqa: BLE001 - I2: one request's failure denies it alone
            out[i] = gate._error_decision(exc)
    if prepared:
        items = [item for _, p in prepared for item in p.items]
        try:
            results = gate.ledger.append(items, timeout=gate.ledger_timeout_s)
        except LedgerError as exc:
            for i, p in prepared:
                out[i] = _finish(gate, p, exc)
        except Exception as exc:  # noqa: BLE001 - I2: nothing is allowed unrecorded
            for i, _p in prepared:
                out[i] = gate._error_decision(exc)
        else:
            at = 0
            for i, p in prepared:
                out[i] = _finish(gate, p, results[at])
                at += len(p.items)
                if isinstance(p, Prepared) and p.verdict.boundary is not None:
                    gate._enforce_boundary(p.request, p.verdict)
    return [d if d is not None else LAST_RESORT for d in out]
