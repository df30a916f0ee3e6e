"""``interlock ledger replay``: re-decide every recorded request from the ledger alone and
demand byte-identical records (DESIGN I3); and the recorded requests a policy diff replays."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from interlock.audit import Progress
from interlock.core.boundary import parse_boundaries
from interlock.core.canonical import canonical_bytes, digest
from interlock.core.model import ActionRequest, Resource, Stage
from interlock.errors import (
    ConfigError,
    KeyFileError,
    LedgerError,
    PolicyError,
    VerificationError,
)
from interlock.ledger import merkle
from interlock.ledger.projection import (
    KILL_SWITCH_EVENTS,
    QUARANTINE_EVENTS,
    RESTRICT_EVENTS,
)
from interlock.ledger.protocols import Log
from interlock.pipeline import Lineage, Snapshot, decide
from interlock.policy.bundle import PolicyBundle
from interlock.records import decision_record, verify_governance

__all__ = [
    "REPLAY_RETRIES",
    "ReplayReport",
    "recorded_request",
    "recorded_requests",
    "replay",
]


#: how often replay re-decides a request whose re-decision hit the authorizer's limits
REPLAY_RETRIES = 5


@dataclass(slots=True)
class ReplayReport:
    decisions: int = 0
    replayed: int = 0
    matched: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    skipped_stage: int = 0
    unverifiable: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.unverifiable

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "decisions": self.decisions,
            "replayed": self.replayed,
            "matched": self.matched,
            "mismatches": self.mismatches,
            "not_replayable_stage": self.skipped_stage,
            "unverifiable": self.unverifiable,
        }


def _records(ledger: Log) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    for idx, _lh, data in ledger.iter_entries():
        try:
            rec = json.loads(data)
        except ValueError as exc:
            raise VerificationError("entry is not JSON", index=idx) from exc
        yield idx, data, rec


def replay(
    ledger: Log,
    trusted_policy_keys: Sequence[Any],
    *,
    node_public: bytes | None = None,
    progress: Progress | None = None,
) -> ReplayReport:
    """Re-decide every recorded pipeline decision with its pinned snapshot and compare the
    re-made record with the recorded bytes (DESIGN I3). Intake and gate-stage denials
    (malformed input, deadline, storage) depend on the gate's environment and are counted
    apart. A decision whose payload was purged or whose lineage facts disagree with the
    ledger before it is *unverifiable*, which also fails the replay.

    Quarantines and the kill switch are re-derived from their governance records in ledger
    order, like revocations; each such record must carry a valid signature by ``node_public``
    (the home's node key). An unsigned or badly signed one is unverifiable, and so is every
    decision whose snapshot depends on it.
    """
    report = ReplayReport()
    trust: list[_TrustEvent] = []
    seen_revoked: set[str] = set()
    # id -> (effect, leaf hash hex, principal)
    decisions: dict[str, tuple[str, str, str | None]] = {}
    snapshots: dict[tuple[str, int], Snapshot] = {}
    bundles: dict[str, PolicyBundle] = {}
    total = ledger.size()
    trusted = list(trusted_policy_keys)
    for idx, data, rec in _records(ledger):
        if progress is not None and (idx & 0x3FF) == 0:
            progress(idx, total)
        if rec.get("type") == "governance" and rec.get("event") == "capability.revoked":
            verified = _governance_ok(idx, rec, node_public, report)
            for rid in rec.get("revocation_ids", []):
                if rid not in seen_revoked:
                    seen_revoked.add(rid)
                    trust.append(_TrustEvent(index=idx, revoked=rid, verified=verified))
            continue
        if rec.get("type") == "governance" and (
            rec.get("event") in QUARANTINE_EVENTS
            or rec.get("event") in KILL_SWITCH_EVENTS
            or rec.get("event") in RESTRICT_EVENTS
        ):
            trust.append(_trust_event(idx, rec, node_public, report))
            continue
        if rec.get("type") != "decision":
            continue
        report.decisions += 1
        req = rec.get("request")
        decisions[rec["id"]] = (
            rec["effect"],
            merkle.leaf_hash(data).hex(),
            req.get("principal") if isinstance(req, dict) else None,
        )
        if rec.get("stage") != Stage.PIPELINE.value:
            report.skipped_stage += 1
            continue
        try:
            snap = _snapshot_for(ledger, rec["snapshot"], snapshots, bundles, trust, trusted)
            request = recorded_request(ledger, rec)
            lineage = _lineage_for(rec, decisions)
        except (
            LedgerError,
            VerificationError,
            PolicyError,
            ConfigError,
            KeyError,
            ValueError,
            TypeError,
        ) as exc:
            msg = (
                exc.message
                if isinstance(exc, LedgerError | VerificationError | PolicyError | ConfigError)
                else str(exc)
            )
            report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": msg})
            continue
        report.replayed += 1
        try:
            verdict = decide(request, snap, lineage)
            for _ in range(REPLAY_RETRIES):
                if verdict.reproducible:
                    break
                # the authorizer stopped on its execution limits (a loaded machine): that says
                # nothing about the recorded answer, so decide again before calling it a mismatch
                verdict = decide(request, snap, lineage)
        except Exception as exc:  # noqa: BLE001 - the gate recorded an answer; replay has none
            report.mismatches.append(
                {"index": idx, "id": rec["id"], "replay_error": f"{type(exc).__name__}: {exc}"}
            )
            continue
        again = canonical_bytes(
            decision_record(
                request, verdict, snapshot_id=snap.id, lineage=lineage, stage=Stage.PIPELINE
            )
        )
        if again == data:
            report.matched += 1
        else:
            report.mismatches.append(
                {
                    "index": idx,
                    "id": rec["id"],
                    "recorded": {"effect": rec["effect"], "reasons": rec["reasons"]},
                    "replayed": {
                        "effect": verdict.effect.value,
                        "reasons": [r.to_json() for r in verdict.reasons],
                    },
                }
            )
    if progress is not None:
        progress(total, total)
    return report


@dataclass(frozen=True, slots=True, kw_only=True)
class _TrustEvent:
    """One step of the trust version: a new revocation id, a quarantine or release of
    ``principal``, or (neither set) the kill switch turned ``on``/off."""

    index: int
    revoked: str | None = None
    principal: str | None = None
    on: bool = False
    verified: bool = True
    #: set for a boundary restriction (``principal`` restricted under ``boundary``) or release
    boundary: str | None = None


def _governance_ok(
    idx: int, rec: dict[str, Any], node_public: bytes | None, report: ReplayReport
) -> bool:
    """Whether a governance record carries the node's signature (else it is reported)."""
    try:
        if node_public is None:
            raise VerificationError("no node key given to check governance signatures")
        verify_governance(rec, node_public)
    except (VerificationError, KeyFileError) as exc:
        report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": exc.message})
        return False
    return True


def _trust_event(
    idx: int, rec: dict[str, Any], node_public: bytes | None, report: ReplayReport
) -> _TrustEvent:
    """A quarantine or kill-switch record as a trust step, its node signature checked."""
    event = str(rec.get("event"))
    principal = (
        rec.get("principal") if event in QUARANTINE_EVENTS or event in RESTRICT_EVENTS else None
    )
    boundary = rec.get("boundary") if event in RESTRICT_EVENTS else None
    on = QUARANTINE_EVENTS.get(
        event, KILL_SWITCH_EVENTS.get(event, RESTRICT_EVENTS.get(event, False))
    )
    try:
        if node_public is None:
            raise VerificationError("no node key given to check governance signatures")
        verify_governance(rec, node_public)
        if event in QUARANTINE_EVENTS and not isinstance(principal, str):
            raise VerificationError("quarantine record names no principal")
        if event in RESTRICT_EVENTS and not (
            isinstance(principal, str) and isinstance(boundary, str)
        ):
            raise VerificationError("restriction record names no principal or boundary")
    except (VerificationError, KeyFileError) as exc:
        report.unverifiable.append({"index": idx, "id": rec.get("id"), "why": exc.message})
        return _TrustEvent(index=idx, principal=None, on=on, verified=False)
    return _TrustEvent(index=idx, principal=principal, on=on, boundary=boundary)


def _snapshot_for(
    ledger: Log,
    snapshot_id: str,
    cache: dict[tuple[str, int], Snapshot],
    bundles: dict[str, PolicyBundle],
    trust: list[_TrustEvent],
    trusted: list[Any],
) -> Snapshot:
    raw = ledger.blob(f"snapshot:{snapshot_id}")
    if raw is None:
        raise LedgerError(f"snapshot {snapshot_id[:12]} descriptor is missing")
    desc = json.loads(raw)
    if digest(desc) != snapshot_id:
        raise VerificationError("snapshot descriptor does not match its id")
    tv = int(desc["trust_version"])
    key = (snapshot_id, tv)
    if key in cache:
        return cache[key]
    if tv > len(trust):
        raise VerificationError("snapshot names trust records not on the ledger before it")
    revoked: set[str] = set()
    quarantined: set[str] = set()
    restricted: set[tuple[str, str]] = set()
    kill_switch = False
    for ev in trust[:tv]:
        if not ev.verified:
            raise VerificationError(
                f"snapshot depends on the unverifiable governance record at index {ev.index}"
            )
        if ev.revoked is not None:
            revoked.add(ev.revoked)
        elif ev.boundary is not None and ev.principal is not None:
            pair = (ev.principal, ev.boundary)
            (restricted.add if ev.on else restricted.discard)(pair)
        elif ev.principal is not None:
            (quarantined.add if ev.on else quarantined.discard)(ev.principal)
        else:
            kill_switch = ev.on
    bundle = None
    pd = desc.get("policy_digest")
    if pd is not None:
        if pd not in bundles:
            blob = ledger.blob(f"bundle:{pd}")
            if blob is None:
                raise LedgerError(f"policy bundle {pd[:12]} is missing")
            bundles[pd] = PolicyBundle.from_blob(blob, trusted)
        bundle = bundles[pd]
    snap = Snapshot.build(
        root_public=bytes.fromhex(desc["capability_root"]),
        bundle=bundle,
        policy_problem=desc.get("policy_problem"),
        revoked=frozenset(revoked),
        trust_version=tv,
        max_depth=int(desc["max_depth"]),
        quarantined=frozenset(quarantined),
        kill_switch=kill_switch,
        approvers=frozenset(bytes.fromhex(k) for k in desc.get("approvers", [])),
        break_glass_keys=frozenset(bytes.fromhex(k) for k in desc.get("break_glass_keys", [])),
        env=desc.get("env"),
        env_problem=desc.get("env_problem"),
        boundaries=parse_boundaries(desc.get("boundaries", []), source="snapshot"),
        restricted=frozenset(restricted),
    )
    if snap.id != snapshot_id:
        raise VerificationError("rebuilt snapshot does not match the recorded id")
    cache[key] = snap
    return snap


def recorded_request(ledger: Log, rec: dict[str, Any]) -> ActionRequest:
    """The request a decision record was made for, rebuilt from the record and its stored
    payload (arguments, context, token, approval, break-glass), digests checked.

    Raises:
        LedgerError: the payload was purged or is missing.
        VerificationError: the stored arguments or context do not match the record's digests.
    """
    raw = ledger.blob(f"req:{rec['id']}")
    if raw is None:
        raise LedgerError("request payload was purged or is missing")
    payload = json.loads(raw)
    r = rec["request"]
    req = ActionRequest(
        id=rec["id"],
        time=rec["ts"],
        principal=r["principal"],
        action=r["action"],
        resource=Resource(type=r["resource"]["type"], id=r["resource"]["id"]),
        args=payload["args"],
        context=payload["context"],
        capability=payload["capability"],
        parent=rec.get("parent"),
        traceparent=r.get("traceparent"),
        approval=payload.get("approval"),
        break_glass=payload.get("break_glass"),
    )
    if digest(req.args, allow_floats=True) != r["args_sha256"]:
        raise VerificationError("stored arguments do not match the recorded digest")
    if digest(req.context, allow_floats=True) != r["context_sha256"]:
        raise VerificationError("stored context does not match the recorded digest")
    return req


def _lineage_for(rec: dict[str, Any], decisions: dict[str, tuple[str, str, str | None]]) -> Lineage:
    parent = rec.get("parent")
    if parent is None:
        return Lineage()
    lin = rec.get("lineage") or {}
    status = str(lin.get("status", "unknown"))
    known = decisions.get(parent)
    if status in ("allowed", "running"):
        if known is None or known[0] != "allow" or known[1] != rec.get("parent_leaf"):
            raise VerificationError("recorded lineage claims an allowed parent the ledger lacks")
    elif status == "denied" and (known is None or known[0] != "deny"):
        raise VerificationError("recorded lineage claims a denied parent the ledger lacks")
    return Lineage(
        parent=parent,
        status=status,
        depth=int(lin.get("depth", 0)),
        parent_leaf=rec.get("parent_leaf"),
        principal=known[2] if known is not None else None,
    )


def recorded_requests(ledger: Log) -> list[dict[str, Any]]:
    """The recorded pipeline requests (with their stored arguments) in the form
    ``interlock policy diff`` takes; requests whose payload was purged are left out."""
    from interlock.core.model import rfc3339_to_epoch

    out: list[dict[str, Any]] = []
    for _idx, _data, rec in _records(ledger):
        if rec.get("type") != "decision" or rec.get("stage") != Stage.PIPELINE.value:
            continue
        raw = ledger.blob(f"req:{rec['id']}")
        if raw is None:
            continue
        payload = json.loads(raw)
        r = rec["request"]
        out.append(
            {
                "principal": r["principal"],
                "action": r["action"],
                "resource": r["resource"],
                "args": payload["args"],
                "context": payload["context"],
                "time": rfc3339_to_epoch(rec["ts"]),
            }
        )
    return out
