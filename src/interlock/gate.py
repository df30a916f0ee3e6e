"""The decision point: the fail-closed pipeline, and the only place that returns allow.

    >>> import interlock
    >>> gate = interlock.open(".interlock")                       # doctest: +SKIP
    >>> d = gate.decide({"principal": "spiffe://acme.test/agent/researcher",
    ...                  "action": "tool.call", "resource": {"type": "Tool", "id": "web_search"},
    ...                  "capability": token})                     # doctest: +SKIP
    >>> d.effect, d.codes, d.ledger_index                          # doctest: +SKIP
    (<Effect.ALLOW: 'allow'>, (), 7)

Two parts:

* :func:`decide` is PURE (DESIGN I3): ``decide(request, snapshot, lineage) -> Verdict``. No
  clock, no randomness, no I/O. Validators run in the fixed order of DESIGN §2; the first
  denial wins. Allow is its last line and nowhere else.
* :class:`Gate` does the I/O around it: intake (reads the clock once), the lineage lookup,
  the deadline, the durable ledger append. An allow is returned only after its record is
  committed (I1). Every exception becomes a deny (I2): ``Gate.decide`` never raises and never
  allows on an error path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interlock.capability import CapabilityVerifier
from interlock.core.boundary import Boundary
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
    format_time,
    is_spiffe_id,
    is_under,
)
from interlock.errors import (
    ClockBehind,
    Error,
    LedgerCorrupt,
    LedgerError,
    MalformedRequest,
    PolicyError,
    UsageError,
    VerificationError,
    error_detail,
)
from interlock.governance import adopt_changes, log_settings, mismatches, record_trust
from interlock.home import CONFIG_NAME, Home, default_home
from interlock.intake import new_request_id, parse_request
from interlock.ledger.note import NoteSigner, NoteVerifier, open_checkpoint
from interlock.ledger.projection import (
    KILL_SWITCH_EVENTS,
    QUARANTINE_EVENTS,
    RESTRICT_EVENTS,
    STATE_CHECKED_EVENT,
    delta_of,
    first_difference,
    status_set_by,
)
from interlock.ledger.protocols import Append, Store
from interlock.ledger.statecheck import (
    CheckStopped,
    FullCheck,
    Unvouched,
    check_log,
    check_since_checkpoint,
    checkpoint_fields,
)
from interlock.ledger.storage import open_store
from interlock.policy.bundle import PolicyBundle, load_bundle
from interlock.policy.engine import PolicyEngine
from interlock.trust import keys
from interlock.trust.approval import verify_approval
from interlock.trust.attestation import Measurement, measure
from interlock.trust.breakglass import verify_break_glass

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from interlock.adapters.sdk import Agent, F, ResourceSpec
    from interlock.runtime.execution import Execution

__all__ = [
    "KILL_SWITCH_EVENTS",
    "QUARANTINE_EVENTS",
    "RESTRICT_EVENTS",
    "Gate",
    "Lineage",
    "Snapshot",
    "Verdict",
    "decide",
]

_log = logging.getLogger("interlock")

#: obligations this version knows how to enforce; any other obligation denies (fail-closed)
KNOWN_OBLIGATIONS = frozenset({"approval"})
#: execution statuses under which an execution may have children: decided-and-allowed, or
#: started and still running. ``ended``, ``terminated`` and ``denied`` may not.
LIVE_STATUSES = frozenset({"allowed", "running"})
TRUST_REFRESH_S = 0.1
#: the running ledger check sleeps this many times the CPU its pass used: at most 1 / (1 + ratio)
#: of a core for the check thread (6.7%; measured with the rest of the watch loop in S2)
CHECK_CPU_RATIO = 14
#: the running check sleeps this long after every 512 entries, so that deciding threads get the
#: GIL promptly while a pass runs (about 0.4 s more wall time per million entries)
CHECK_PAUSE_S = 0.0002
#: a full check that passed is vouched for by a state checkpoint (``state.checked``) once the
#: log has grown this much since the last one: start-up then checks only what came after it
STATE_CHECKPOINT_EVERY = 4096
#: the policy name and detail of the deny every decision gets while the kill switch is on
KILL_SWITCH_POLICY = "kill-switch"
KILL_SWITCH_DETAIL = "the kill switch is on: every action is denied"
#: governance events that change the trust state besides revocations, each signed by the
#: node key (see :func:`sign_governance`): QUARANTINE_EVENTS, KILL_SWITCH_EVENTS and
#: RESTRICT_EVENTS, defined with the projection that folds them
#: policy denials a break-glass override may lift (never integrity failures, see
#: :mod:`interlock.trust.breakglass`)
BREAK_GLASS_OVERRIDES = frozenset(
    {ReasonCode.POLICY_NO_PERMIT, ReasonCode.POLICY_FORBID, ReasonCode.APPROVAL_REQUIRED}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lineage:
    """What the gate found about the request's parent, an *input* of :func:`decide`.

    ``status`` is ``none`` (no parent), ``allowed``, ``denied``, ``terminated`` or ``unknown``.
    """

    parent: str | None = None
    status: str = "none"
    depth: int = 0
    parent_leaf: str | None = None
    #: the parent's principal: a parent must be the requester's own execution or that of a
    #: principal it descends from (DESIGN I5)
    principal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "depth": self.depth}


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Immutable governance state a decision reads. ``id`` names it in every record."""

    id: str
    descriptor: Mapping[str, Any]
    capabilities: CapabilityVerifier
    engine: PolicyEngine | None
    policy_problem: str | None
    revoked: frozenset[str]
    trust_version: int
    max_depth: int
    quarantined: frozenset[str] = frozenset()
    #: the node's kill switch: while on, every action is denied
    kill_switch: bool = False
    #: raw Ed25519 public keys of the trusted approvers (``[approvals] keys``)
    approvers: frozenset[bytes] = frozenset()
    #: raw Ed25519 public keys trusted to sign break-glass overrides (``[break_glass] keys``)
    break_glass_keys: frozenset[bytes] = frozenset()
    #: the node's attestation as policies read it (``context.env``), or None (not measured)
    env: Mapping[str, Any] | None = None
    #: why the environment is untrusted (ENVIRONMENT_UNTRUSTED), or None
    env_problem: str | None = None
    boundaries: tuple[Boundary, ...] = ()
    #: ``(principal, boundary name)`` pairs restricted after a violation
    restricted: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def build(
        cls,
        *,
        root_public: bytes,
        bundle: PolicyBundle | None,
        policy_problem: str | None,
        revoked: frozenset[str],
        trust_version: int,
        max_depth: int,
        engine: PolicyEngine | None = None,
        quarantined: frozenset[str] = frozenset(),
        kill_switch: bool = False,
        approvers: frozenset[bytes] = frozenset(),
        break_glass_keys: frozenset[bytes] = frozenset(),
        env: Mapping[str, Any] | None = None,
        env_problem: str | None = None,
        boundaries: tuple[Boundary, ...] = (),
        restricted: frozenset[tuple[str, str]] = frozenset(),
    ) -> Snapshot:
        descriptor: dict[str, Any] = {
            "v": 1,
            "capability_root": root_public.hex(),
            "policy_digest": bundle.digest if bundle else None,
            "policy_version": bundle.version if bundle else None,
            "policy_problem": policy_problem,
            "trust_version": trust_version,
            "max_depth": max_depth,
        }
        # present only when set, so the ids of snapshots recorded before quarantines and the
        # kill switch existed are unchanged (replay rebuilds them from the same fields)
        if quarantined:
            descriptor["quarantined"] = sorted(quarantined)
        if kill_switch:
            descriptor["kill_switch"] = True
        if approvers:
            descriptor["approvers"] = sorted(k.hex() for k in approvers)
        if break_glass_keys:
            descriptor["break_glass_keys"] = sorted(k.hex() for k in break_glass_keys)
        if env is not None:
            descriptor["env"] = dict(env)
        if env_problem is not None:
            descriptor["env_problem"] = env_problem
        if boundaries:
            descriptor["boundaries"] = [b.to_json() for b in boundaries]
        if restricted:
            descriptor["restricted"] = sorted(list(pair) for pair in restricted)
        if engine is None and bundle is not None:
            engine = PolicyEngine.from_bundle(bundle)
        return cls(
            id=digest(descriptor),
            descriptor=descriptor,
            capabilities=CapabilityVerifier(root_public),
            engine=engine,
            policy_problem=policy_problem,
            revoked=revoked,
            trust_version=trust_version,
            max_depth=max_depth,
            quarantined=quarantined,
            kill_switch=kill_switch,
            approvers=approvers,
            break_glass_keys=break_glass_keys,
            env=env,
            env_problem=env_problem,
            boundaries=boundaries,
            restricted=restricted,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    effect: Effect
    reasons: tuple[Reason, ...] = ()
    obligations: tuple[str, ...] = ()
    #: False for a deny that depended on resource limits rather than on the inputs alone;
    #: the gate records it at stage ``gate`` so replay does not expect to reproduce it
    reproducible: bool = True
    #: a BOUNDARY_VIOLATION's boundary, which the gate then enforces (restrict/isolate/...)
    boundary: Boundary | None = None
    #: an allow that a break-glass override made: what the decision records about it
    break_glass: Mapping[str, Any] | None = None


def _deny(code: ReasonCode, detail: str, policy: str | None = None) -> Verdict:
    return Verdict(effect=Effect.DENY, reasons=(Reason(code=code, detail=detail, policy=policy),))


def _cedar_value(value: Any) -> Any:
    """Cedar has no floats and no null: floats reach policies as decimal strings (use
    ``decimal(...)``), and an object attribute whose value is null is absent (``has`` is false —
    a Python ``None`` default, an optional JSON field). A null inside a list stays and makes
    the policy error (POLICY_ERROR)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _cedar_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_cedar_value(v) for v in value]
    return value


def _needs_mapping(value: Any) -> bool:
    """Whether :func:`_cedar_value` would change ``value`` (a float, or a null attribute)."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(v is None or _needs_mapping(v) for v in value.values())
    if isinstance(value, list):
        return any(_needs_mapping(v) for v in value)
    return False


def request_digest(request: ActionRequest) -> str:
    """Digest of what an approval binds to: who, what, on what, with which arguments."""
    return digest(
        {
            "principal": request.principal,
            "action": request.action,
            "resource": request.resource.to_json(),
            "args": request.args,
            "context": request.context,
        },
        allow_floats=True,
    )


def decide(request: ActionRequest, snapshot: Snapshot, lineage: Lineage) -> Verdict:
    """The pure pipeline (DESIGN §2). Same inputs, same verdict.

    Returns a deny with one of: POLICY_FORBID (policy ``kill-switch``: the kill switch is on),
    IDENTITY_UNVERIFIED, CAPABILITY_INVALID, CAPABILITY_EXPIRED,
    CAPABILITY_REVOKED, CAPABILITY_INSUFFICIENT, PRINCIPAL_QUARANTINED, LINEAGE_BROKEN,
    POLICY_UNAVAILABLE, POLICY_NO_PERMIT, POLICY_FORBID, POLICY_ERROR, APPROVAL_REQUIRED (an
    ``approval`` obligation without an approval that verifies against ``snapshot.approvers``
    for :func:`request_digest` at the request's time).
    Raises only on programmer error; the gate turns that into INTERNAL_ERROR.
    """
    now = request.epoch

    # identity & capability: signature, principal binding, expiry, revocation, coverage
    if not request.capability:
        return _deny(
            ReasonCode.IDENTITY_UNVERIFIED,
            "no capability presented: the principal's identity cannot be established",
        )
    cap = snapshot.capabilities.check(
        token=request.capability,
        principal=request.principal,
        action=request.action,
        resource=request.resource.uid,
        parent=request.parent,
        now=now,
        revoked=snapshot.revoked,
        args=request.args,
        resource_type=request.resource.type,
    )
    if not cap.ok:
        denied = _deny(cap.code or ReasonCode.CAPABILITY_INVALID, cap.detail)
        if not cap.reproducible:
            return Verdict(effect=Effect.DENY, reasons=denied.reasons, reproducible=False)
        return denied

    # the kill switch denies every action, even one with a valid capability. DESIGN §3's codes
    # are closed: this is a forbid by the operator, recorded as POLICY_FORBID, policy
    # ``kill-switch``
    if snapshot.kill_switch:
        return _deny(ReasonCode.POLICY_FORBID, KILL_SWITCH_DETAIL, KILL_SWITCH_POLICY)

    # a quarantine covers the principal and every sub-agent under its SPIFFE path: delegation
    # needs no key, so a quarantined holder could otherwise re-delegate to itself/x and go on
    if snapshot.quarantined and any(is_under(request.principal, q) for q in snapshot.quarantined):
        return _deny(ReasonCode.PRINCIPAL_QUARANTINED, "principal is quarantined")

    # environment integrity before boundaries (DESIGN §2 lists it after): an untrusted node is
    # a node-wide integrity failure, and must not be charged to agents as boundary violations
    if snapshot.env_problem is not None:
        return _deny(ReasonCode.ENVIRONMENT_UNTRUSTED, snapshot.env_problem)
    attested = bool(snapshot.env is not None and snapshot.env.get("attested") is True)

    # trust boundaries: every boundary covering the principal must hold
    for boundary in snapshot.boundaries:
        if not boundary.covers(request.principal):
            continue
        # a restriction, like a quarantine, covers the sub-agents of the restricted principal
        restricted = any(
            b == boundary.name and is_under(request.principal, p) for p, b in snapshot.restricted
        )
        why = boundary.violation(
            request.action,
            request.resource.type,
            request.resource.id,
            attested=attested,
            restricted=restricted,
        )
        if why is not None:
            return Verdict(
                effect=Effect.DENY,
                reasons=(
                    Reason(
                        code=ReasonCode.BOUNDARY_VIOLATION,
                        detail=f"boundary {boundary.name!r}: {why}",
                        policy=f"boundary:{boundary.name}",
                    ),
                ),
                # a principal already restricted is not restricted again
                boundary=None if restricted else boundary,
            )

    # lineage (DESIGN I5)
    if request.parent is not None:
        if lineage.parent != request.parent:
            return _deny(ReasonCode.LINEAGE_BROKEN, "lineage facts do not name this parent")
        if lineage.status not in LIVE_STATUSES:
            return _deny(
                ReasonCode.LINEAGE_BROKEN,
                f"parent {request.parent} is {lineage.status}: only a recorded, allowed, "
                "not-terminated execution can have children",
            )
        # a parent must be an execution of the requester itself, of a principal it descends
        # from (a sub-agent's SPIFFE path is under its delegator's), or of the principal whose
        # capability the requester holds by delegation: never a stranger's execution
        owner = lineage.principal
        if owner is None or not (is_under(request.principal, owner) or owner == cap.principal):
            return _deny(
                ReasonCode.LINEAGE_BROKEN,
                f"parent {request.parent} is an execution of another principal: a parent must"
                " be the requester's own execution or its delegator's",
            )
        if lineage.depth > snapshot.max_depth:
            return _deny(
                ReasonCode.LINEAGE_BROKEN,
                f"lineage depth {lineage.depth} exceeds the limit {snapshot.max_depth}",
            )

    # policy availability and evaluation
    engine = snapshot.engine
    if engine is None:
        return _deny(
            ReasonCode.POLICY_UNAVAILABLE,
            snapshot.policy_problem or "no valid signed policy bundle is loaded",
        )
    args = request.args
    context = request.context
    if _needs_mapping(args) or _needs_mapping(context):
        args, context = _cedar_value(args), _cedar_value(context)
    result = engine.evaluate(
        principal=request.principal,
        action=request.action,
        resource_type=request.resource.type,
        resource_id=request.resource.id,
        args=args,
        context=context,
        now=now,
        env=snapshot.env,
    )
    if not result.permitted:
        policies = ",".join(result.policies) or None
        denied = _deny(result.code or ReasonCode.POLICY_ERROR, result.detail, policies)
        return _break_glass(request, snapshot, denied)

    # obligations: deny what we don't know — before anything a break-glass override could lift
    for ob in result.obligations:
        if ob not in KNOWN_OBLIGATIONS:
            return _deny(ReasonCode.POLICY_ERROR, f"unknown obligation {ob!r} on a permit policy")
    for ob in result.obligations:
        if ob == "approval":
            wanted = request_digest(request)
            required = f"a signed human approval is required for request digest {wanted}"
            if request.approval is None:
                return _break_glass(
                    request,
                    snapshot,
                    _deny(
                        ReasonCode.APPROVAL_REQUIRED, required, ",".join(result.policies) or None
                    ),
                    obligations=result.obligations,
                )
            try:
                verify_approval(
                    request.approval, digest=wanted, trusted=tuple(snapshot.approvers), now=now
                )
            except VerificationError as exc:
                return _break_glass(
                    request,
                    snapshot,
                    _deny(
                        ReasonCode.APPROVAL_REQUIRED,
                        f"{required}; the approval presented was refused: {exc.message}",
                        ",".join(result.policies) or None,
                    ),
                    obligations=result.obligations,
                )

    return Verdict(effect=Effect.ALLOW, obligations=result.obligations)


def _break_glass(
    request: ActionRequest,
    snapshot: Snapshot,
    denied: Verdict,
    *,
    obligations: tuple[str, ...] = (),
) -> Verdict:
    """``denied``, unless the request carries a break-glass override that lifts it: a policy
    denial (BREAK_GLASS_OVERRIDES, not the kill switch) within the override's scope, signed by
    a trusted break-glass key, unexpired at the request's time. A refused override is named in
    the denial's detail."""
    if request.break_glass is None:
        return denied
    (reason,) = denied.reasons
    if reason.code not in BREAK_GLASS_OVERRIDES or reason.policy == KILL_SWITCH_POLICY:
        return denied
    try:
        used = verify_break_glass(
            request.break_glass,
            action=request.action,
            resource_type=request.resource.type,
            resource_id=request.resource.id,
            trusted=tuple(snapshot.break_glass_keys),
            now=request.epoch,
        )
    except VerificationError as exc:
        return _deny(
            reason.code,
            f"{reason.detail}; the break-glass override was refused: {exc.message}"[:1000],
            reason.policy,
        )
    return Verdict(
        effect=Effect.ALLOW,
        obligations=tuple(o for o in obligations if o != "approval"),
        break_glass={**used, "overrode": reason.to_json()},
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
        "type": RecordType.DECISION.value,
        "id": request.id,
        "ts": request.time,
        "stage": stage.value,
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
        "effect": verdict.effect.value,
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
    return json.dumps(
        payload,
        ensure_ascii=False,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode("utf-8", "surrogatepass")


class Gate:
    """An open governance home: the snapshot, the ledger, and :meth:`decide`.

    Use :meth:`Gate.open` (or ``interlock.open``). Thread-safe: many threads may decide at
    once; their ledger appends share fsyncs (group commit).
    """

    def __init__(
        self,
        home: Home,
        ledger: Store,
        verifier: NoteVerifier,
        *,
        clock_ns: Any = time.time_ns,
    ) -> None:
        self.home = home
        self.ledger = ledger
        self.log_verifier = verifier
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._stored_snapshots: set[str] = set()
        self._corrupt: str | None = None
        self._root_public = keys.public_raw(home.private_key("biscuit-root"))
        self._node_public = keys.public_raw(home.private_key("node"))
        #: the highest timestamp on the log (µs): a clock behind it is not trusted (DESIGN I8)
        self._time_floor = 0
        #: why the last ledger check could not run (decisions deny LEDGER_UNAVAILABLE), and
        #: when the last one completed (monotonic): a check that stops completing denies too
        self._check_problem: str | None = None
        self._checked_at = time.monotonic()
        self._check_s = 0.0
        #: when a running full pass last made progress (a long pass is not a hung one)
        self._check_progress_at = 0.0
        #: a full check that passed and is due a state checkpoint (written by open/the watch)
        self._due_checkpoint: FullCheck | None = None
        #: how the last check was made: "full" or "checkpoint" (from a state checkpoint)
        self.check_kind = "full"
        #: the trust settings on the log, and why the config disagrees with them (if it does)
        self._trust: dict[str, Any] = {}
        self._trust_problem: str | None = None
        self._bundle: PolicyBundle | None = None
        self._engine: PolicyEngine | None = None
        self._policy_problem: str | None = None
        self._trust_checked = 0.0
        self._snapshot: Snapshot | None = None
        cfg = home.config
        self._approvers: frozenset[bytes] = frozenset()
        self._break_glass_keys: frozenset[bytes] = frozenset()
        #: the measurement taken when this gate started: the one it attests to
        self._attested: Measurement | None = None
        self._env: dict[str, Any] | None = None
        self._env_problem: str | None = "the environment has not been measured yet"
        self._threads: list[threading.Thread] = []
        self._attest_lock = threading.Lock()
        self._stop = threading.Event()
        self.deadline_ns = cfg.deadline_ms * 1_000_000
        self.ledger_timeout_s = cfg.ledger_timeout_ms / 1000

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(cls, home: str | Path | None = None, *, clock_ns: Any = time.time_ns) -> Gate:
        """Open a governance home: verify the ledger's tail, load the signed policy bundle.

        A gate whose ledger or policy is broken still opens, and denies everything with the
        reason (LEDGER_CORRUPT, POLICY_UNAVAILABLE): fail-closed, and visible.

        Raises:
            ConfigError: if there is no home at ``home`` (nothing can be decided or recorded).
            KeyFileError: if a key file is missing or has unsafe permissions.
        """
        h = Home.load(default_home(home))
        log_key = h.private_key("log")
        signer = NoteSigner(h.config.origin, log_key)
        verifier = NoteVerifier.from_vkey(signer.vkey)
        ledger = open_store(
            h.ledger_path,
            signer=signer,
            durability=h.config.durability,
            busy_timeout_ms=h.config.ledger_timeout_ms,
        )
        gate = cls(h, ledger, verifier, clock_ns=clock_ns)
        try:
            # DESIGN I8: no allow before the log and its projection have been checked
            gate.check_ledger()
        except LedgerError as exc:
            gate._corrupt = exc.diagnostics()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run must not allow
            gate._check_problem = error_detail(exc)
        gate._load_trust()
        gate.reload_policy()
        gate._attest()
        gate.reap_orphans()
        gate.write_state_checkpoint()
        gate._start_ledger_watch()
        gate._start_attestation_watch()
        return gate

    # -- checking the log and its projection (DESIGN I4, I8) ----------------------------------

    def check_ledger(self, *, background: bool = False, full: bool = False) -> None:
        """Check the ledger and the state the gate reads, as of one moment (DESIGN I8).

        At start-up (neither ``background`` nor ``full``) from the newest state checkpoint
        when one can vouch for the log (``check_since_checkpoint``:
        the entries after it and one read of the state tables); otherwise, and always on the
        running gate's watch, in full: every entry against its leaf hash and the signed
        checkpoints (the newest in the database and the anchor kept outside it), and every row
        of the governance-state tables against the projection rebuilt from the log. Updates the
        time floor.

        Raises:
            LedgerCorrupt: any difference, naming the entry or the row (and the entry it
                should come from).
            LedgerUnavailable: the ledger cannot be read.
        """
        started = time.monotonic()
        self.ledger.self_check(self.log_verifier)
        self._check_anchor()
        cps = self.ledger.checkpoints()
        notes = [cps[-1].note] if cps else []
        anchor = self._read_anchor()
        if anchor is not None:
            notes.append(anchor)
        stale = False  # a checkpoint exists but cannot vouch: vouch anew after this check
        if not (background or full):
            try:
                quick = check_since_checkpoint(
                    self.ledger,
                    self.log_verifier.vkey,
                    notes,
                    node_public=self._node_public,
                    root_public=self._root_public,
                )
            except Unvouched as why:
                _log.info("checking the whole ledger: the state checkpoint cannot vouch (%s)", why)
                stale = self.ledger.settings().get("state_checked") is not None
            else:
                self._checked(started, quick.last_ts, "checkpoint")
                return
        try:
            result = check_log(
                self.ledger,
                self.log_verifier.vkey,
                notes,
                node_public=self._node_public,
                root_public=self._root_public,
                progress=self._check_progress if background else None,
                pause=CHECK_PAUSE_S if background else 0.0,
                stop=self._stop if background else None,
            )
        except VerificationError as exc:
            raise LedgerCorrupt(exc.message, **exc.evidence) from exc
        rebuilt = result.projection
        if rebuilt.size == 0:
            raise LedgerCorrupt(
                "the ledger is empty: an initialised home's ledger starts with its policy and"
                " trust records, so it was replaced; restore it from a backup"
            )
        diff = (
            first_difference(result.stored, rebuilt.rows()) if result.stored is not None else None
        )
        if diff is not None:
            raise LedgerCorrupt(diff.message, **diff.evidence)
        last = rebuilt.settings.get("last_ts")
        self._checked(started, None if last is None else int(last[0]), "full")
        vouched = rebuilt.settings.get("state_checked")
        grown = rebuilt.size - (int(vouched[0]) if vouched else 0)
        if grown >= STATE_CHECKPOINT_EVERY or (stale and grown > 0):
            self._due_checkpoint = result

    def _checked(self, started: float, last_ts: int | None, kind: str) -> None:
        if last_ts is not None:
            self._time_floor = max(self._time_floor, last_ts)
        self._check_s = time.monotonic() - started
        self._checked_at = time.monotonic()
        self._check_problem = None
        self.check_kind = kind

    def _check_progress(self, _done: int, _total: int) -> None:
        self._check_progress_at = time.monotonic()

    def write_state_checkpoint(self) -> None:
        """Vouch for the last full check that passed with a node-signed ``state.checked``
        record, if one is due, and drop the undo rows it makes unneeded. An accelerator for the
        next start-up: failing to write one changes nothing else. Never raises."""
        full, self._due_checkpoint = self._due_checkpoint, None
        if full is None or self._corrupt is not None:
            return
        size = full.projection.size
        try:
            newest = self.ledger.settings().get("state_checked")
            if newest is not None and int(newest[0]) >= size:
                return  # another gate vouched for as much already
            self._governance(STATE_CHECKED_EVENT, checkpoint_fields(full))
            self.ledger.forget_undo(size)
        except Exception as exc:  # noqa: BLE001 - an accelerator: the next start checks in full
            _log.warning("could not write a state checkpoint: %s", error_detail(exc))

    def _load_trust(self) -> None:
        """Take the trust settings from the log; note where ``interlock.toml`` disagrees
        (ENVIRONMENT_UNTRUSTED until it agrees again). Never raises."""
        try:
            on_log = log_settings(self.ledger.settings())
            problems = mismatches(self.home.config, on_log)
        except Exception as exc:  # noqa: BLE001 - unreadable trust settings: trust nothing
            on_log, problems = {}, [f"trust settings unreadable: {error_detail(exc)}"]
        problem = "; ".join(problems) if problems else None
        with self._lock:
            if on_log == self._trust and problem == self._trust_problem:
                return
            self._trust = on_log
            self._trust_problem = problem
            self._approvers = frozenset(bytes.fromhex(k) for k in on_log.get("approvals.keys", []))
            self._break_glass_keys = frozenset(
                bytes.fromhex(k) for k in on_log.get("break_glass.keys", [])
            )
        self._rebuild_snapshot(force_trust=True)

    def record_trust(self, changes: Mapping[str, Any]) -> list[int]:
        """Change trust settings (:func:`interlock.governance.record_trust`): on the log,
        signed with the root key, then in ``interlock.toml``. Effective for this gate at once;
        returns the records' indices.

        Raises: as :func:`interlock.governance.record_trust`.
        """
        try:
            return record_trust(self.ledger, self.home, changes, ns=self._clock_ns())
        finally:
            self.home = Home.load(self.home.path)
            self._load_trust()

    def adopt_trust(self) -> dict[str, Any]:
        """Record every trust setting where ``interlock.toml`` (re-read now) differs from the
        log: the operator's deliberate act after an intended edit (``interlock trust adopt``).
        Returns what was recorded.

        Raises: as :func:`interlock.governance.record_trust`.
        """
        changes = adopt_changes(self.ledger, self.home)
        if changes:
            self.record_trust(changes)
        return changes

    def trusted_policy_keys(self) -> list[Any]:
        """The policy keys trusted by the log's ``policy.trusted_keys``."""
        with self._lock:
            found = list(self._trust.get("policy.trusted_keys", []))
        return [keys.public_from_raw(bytes.fromhex(k)) for k in found]

    # -- runtime attestation (DESIGN §7, issue 3 §4) -------------------------------------------

    def _attest(self) -> None:
        """Measure the environment; compare it with the measurement taken at start and with
        the trusted set; record a node-signed ``node.attested`` governance record when the
        measurement or its verdict changed; apply it to the snapshot (ENVIRONMENT_UNTRUSTED
        while there is a problem). Never raises: a node that cannot measure is untrusted."""
        with self._attest_lock:  # one measurement at a time: a stale one never wins
            self._attest_locked()

    def _attest_locked(self) -> None:
        with self._lock:
            bundle = self._bundle
        policy = bundle.digest if bundle is not None else None
        try:
            m = measure(self.home.path / CONFIG_NAME, policy)
        except Exception as exc:  # noqa: BLE001 - unmeasurable means untrusted (fail-closed)
            self._set_env(None, f"the environment could not be measured: {error_detail(exc)}")
            return
        if self._attested is None:
            self._attested = m
        drift = m.differences(self._attested)
        trusted = m.platform in self._trust.get("attestation.trusted", [])
        problem: str | None = None
        if drift:
            problem = (
                f"measured {', '.join(drift)} changed since this node attested (platform"
                f" {self._attested.platform[:16]}… is now {m.platform[:16]}…); restore it, or"
                " restart Interlock to re-attest"
            )
        elif not trusted and self._trust.get("attestation.enforce", True) is not False:
            problem = (
                f"platform {m.platform} is not in [attestation] trusted of interlock.toml; if"
                " this environment is intended, run `interlock attest trust`"
            )
        env = m.env(attested=trusted and not drift)
        key = f"{m.digest}:{int(env['attested'])}:{int(problem is not None)}"
        # the verdict applies even if it could not be read or recorded
        with contextlib.suppress(Exception):
            recorded = self.ledger.settings().get("attestation")
            if self._corrupt is None and (recorded is None or json.loads(recorded[0]) != key):
                self._governance(
                    "node.attested",
                    {
                        "measurement": m.to_json(),
                        "digest": m.digest,
                        "platform": m.platform,
                        "trusted": trusted,
                        "problem": problem,
                    },
                )
        self._set_env(env, problem)

    def _set_env(self, env: dict[str, Any] | None, problem: str | None) -> None:
        with self._lock:
            if env == self._env and problem == self._env_problem:
                return
            self._env, self._env_problem = env, problem
        self._rebuild_snapshot(force_trust=True)

    def _start_attestation_watch(self) -> None:
        """Re-measure on a timer: a change since the start denies everything and, through
        the snapshot, terminates running executions within their verification interval."""
        interval = self.home.config.attestation_interval_ms / 1000
        if interval <= 0:
            return

        def watch() -> None:
            while not self._stop.wait(interval):
                self._attest()

        t = threading.Thread(target=watch, name="interlock-attest", daemon=True)
        t.start()
        self._threads.append(t)

    def attestation(self) -> tuple[Measurement | None, dict[str, Any] | None, str | None]:
        """``(measurement at start, current context.env, current problem or None)``."""
        with self._lock:
            return self._attested, self._env, self._env_problem

    def _start_ledger_watch(self) -> None:
        """DESIGN I4, I8: a long-running gate re-checks its whole ledger and the state it reads
        on a timer (:meth:`check_ledger`) and stops allowing (LEDGER_CORRUPT) the moment a check
        fails. Running supervisors re-verify through this gate, so their executions are
        terminated too. A check that cannot run (the ledger locked, unreadable) denies
        LEDGER_UNAVAILABLE until one completes again.

        The check is a whole pass over the log: to bound its CPU share, after a pass that used
        ``c`` seconds of this thread's CPU it sleeps at least ``CHECK_CPU_RATIO * c``."""
        interval = self.home.config.ledger_check_interval_ms / 1000
        if interval <= 0 or self._corrupt is not None:
            return

        def watch() -> None:
            # after a start-up check from a state checkpoint, the entries before it are read
            # again at once: the first full pass starts now, not one interval later
            wait = 0.0 if self.check_kind == "checkpoint" else interval
            while not self._stop.wait(wait):
                spent = time.thread_time()
                self.reap_orphans()  # never raises
                try:
                    self.check_ledger(background=True)
                    self._load_trust()
                    self.write_state_checkpoint()
                except CheckStopped:
                    return  # the gate is closing
                except LedgerCorrupt as exc:
                    self._corrupt = exc.diagnostics()
                    _log.error("ledger check failed, denying everything: %s", self._corrupt)
                    return
                except Exception as exc:  # noqa: BLE001 - a check that cannot run denies
                    self._check_problem = error_detail(exc)
                    _log.error("ledger check could not run: %s", self._check_problem)
                # this thread's CPU for the pass, then at least ratio times that asleep
                wait = max(interval, CHECK_CPU_RATIO * (time.thread_time() - spent))

        t = threading.Thread(target=watch, name="interlock-ledger-watch", daemon=True)
        t.start()
        self._threads.append(t)

    def ledger_check_problem(self) -> str | None:
        """Why the ledger is not known to be checked now, or None: the last check could not
        run, or none completed for three intervals plus the allowance for a long pass (a
        check that hangs must not leave the gate allowing)."""
        if self._check_problem is not None:
            return f"the ledger check could not run: {self._check_problem}"
        interval = self.home.config.ledger_check_interval_ms / 1000
        if interval <= 0:
            return None
        late = time.monotonic() - max(self._checked_at, self._check_progress_at)
        if late > 3 * interval + (CHECK_CPU_RATIO + 1) * self._check_s + 1:
            return f"no ledger check completed for {late:.1f} s"
        return None

    @property
    def _anchor_path(self) -> Path:
        return self.home.anchor_path

    def _check_anchor(self) -> None:
        """Hold the ledger to the newest checkpoint this home has seen, kept *outside* the
        database: deleting newer checkpoints and rewriting the tail they covered is caught.

        Raises:
            LedgerCorrupt: entries without any checkpoint (every writer's first commit signs
                one in the same transaction), a ledger shorter than the anchor, or a tree that
                no longer has the anchor's root.
        """
        size = self.ledger.size()
        if size > 0 and self.ledger.latest_checkpoint() is None:
            raise LedgerCorrupt("the ledger has entries but no signed checkpoint")
        note = self._read_anchor()
        if note is None:
            return
        try:
            anchor = open_checkpoint(note, self.log_verifier)
        except Error as exc:
            raise LedgerCorrupt(f"the checkpoint anchor does not verify: {exc.message}") from exc
        if anchor.size > size:
            raise LedgerCorrupt(
                "the ledger is shorter than a checkpoint it signed: entries were removed",
                anchor=anchor.size,
                entries=size,
            )
        if self.ledger.root_at(anchor.size) != anchor.root_hash:
            raise LedgerCorrupt(
                "the ledger no longer matches a checkpoint it signed", anchor=anchor.size
            )

    def _read_anchor(self) -> str | None:
        """The anchor's text, or None when there is none yet.

        Raises:
            LedgerCorrupt: it cannot be read safely (not a regular file, e.g. a FIFO that would
                block; a symlink; writable by others; not text).
        """
        try:
            return self.home.read_anchor()
        except (Error, OSError) as exc:
            detail = exc.message if isinstance(exc, Error) else str(exc.strerror)
            raise LedgerCorrupt(f"cannot read the checkpoint anchor: {detail}") from exc

    def _save_anchor(self) -> None:
        cp = self.ledger.latest_checkpoint()
        if cp is None or self._corrupt is not None:
            return
        # a fresh name that cannot already exist: a FIFO or link planted at a fixed temporary
        # name would block this write or redirect it
        fd, tmp = tempfile.mkstemp(dir=self.home.path, prefix=".checkpoint.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(cp.note)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._anchor_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        try:
            if self._corrupt is None:
                self.ledger.checkpoint()  # cover the tail, then remember it outside the database
                self._save_anchor()
        except (Error, OSError):
            pass  # the anchor is defence in depth; closing must not fail because of it
        finally:
            self.ledger.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vkey(self) -> str:
        """The log's C2SP verifier key."""
        return NoteSigner(self.home.config.origin, self.home.private_key("log")).vkey

    @property
    def corrupt(self) -> str | None:
        """Why this node stopped allowing because of its ledger, or None."""
        return self._corrupt

    # -- governance state -------------------------------------------------------------------------

    def reload_policy(self) -> None:
        """Load ``<home>/policy`` if its signature verifies and its version does not go back;
        record the load on the ledger. On failure the previous bundle stays active only if it
        is still the recorded one; with none, every decision is POLICY_UNAVAILABLE."""
        state = self.ledger.settings()
        # DESIGN I8: the floor is the highest version ever activated on the log
        last_version = int(state["policy_version"][0]) if "policy_version" in state else 0
        last_digest = json.loads(state["policy_digest"][0]) if "policy_digest" in state else None
        try:
            bundle = load_bundle(
                self.home.policy_dir, self.trusted_policy_keys(), min_version=last_version
            )
            if bundle.version == last_version and last_digest and bundle.digest != last_digest:
                raise PolicyError(
                    f"bundle version {bundle.version} was already loaded with different content;"
                    " sign changes with a higher version (interlock policy sign)"
                )
        except (PolicyError, OSError, ValueError) as exc:
            message = exc.diagnostics() if isinstance(exc, Error) else str(exc)
            with self._lock:
                self._policy_problem = f"policy bundle rejected: {message}"
                if self._bundle is None:
                    self._engine = None
            self._rebuild_snapshot(force_trust=True)
            return
        engine = PolicyEngine.from_bundle(bundle)
        if bundle.digest != last_digest and self._corrupt is None:
            now = format_time(datetime.fromtimestamp(self._clock_ns() / 1e9, UTC))
            rec = {
                "v": RECORD_VERSION,
                "type": RecordType.GOVERNANCE.value,
                "event": "policy.loaded",
                "id": new_request_id(self._clock_ns()),
                "ts": now,
                "policy_version": bundle.version,
                "policy_digest": bundle.digest,
            }
            self.ledger.append(
                [
                    Append(
                        record=canonical_bytes(rec),
                        blobs={f"bundle:{bundle.digest}": bundle.to_blob()},
                        state=delta_of(rec, node_public=None, root_public=None),
                    )
                ],
                timeout=self.ledger_timeout_s,
            )
        with self._lock:
            self._bundle, self._engine, self._policy_problem = bundle, engine, None
        self._rebuild_snapshot(force_trust=True)
        if self._attested is not None:
            self._attest()  # the measurement names the active bundle

    def _rebuild_snapshot(self, *, force_trust: bool = False) -> Snapshot:
        with self._lock:
            # read under the lock: a refresh that read an older trust state must never
            # replace a newer snapshot (a revocation would be undone until the next refresh)
            version, revoked, quarantined, kill_switch, restricted = self.ledger.trust_state()
            snap = self._snapshot
            if snap is not None and version < snap.trust_version:
                return snap
            if not force_trust and snap is not None and snap.trust_version == version:
                return snap
            snap = Snapshot.build(
                root_public=self._root_public,
                bundle=self._bundle,
                policy_problem=self._policy_problem,
                revoked=revoked,
                trust_version=version,
                max_depth=self.home.config.max_lineage_depth,
                engine=self._engine,
                quarantined=quarantined,
                kill_switch=kill_switch,
                approvers=self._approvers,
                break_glass_keys=self._break_glass_keys,
                env=self._env,
                # trust settings that disagree with the log make the node untrusted (DESIGN I8)
                env_problem=self._trust_problem or self._env_problem,
                boundaries=self.home.config.boundaries,
                restricted=restricted,
            )
            self._snapshot = snap
            return snap

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot; revocations, quarantines and kill-switch changes committed by
        other processes are picked up within 100 ms."""
        snap = self._snapshot
        now = time.monotonic()
        if snap is None or now - self._trust_checked > TRUST_REFRESH_S:
            self._trust_checked = now
            snap = self._rebuild_snapshot()
            self._refresh_floor()
        return snap

    def revoke(self, revocation_ids: tuple[str, ...], *, reason: str = "") -> int:
        """Revoke capability revocation ids; effective for this gate at once. Recorded as a
        node-signed ``capability.revoked`` governance record; returns its index.

        Raises:
            KeyFileError: the node key is missing or unsafe.
            LedgerUnavailable: if the governance record could not be committed.
        """
        return self._governance(
            "capability.revoked",
            {"revocation_ids": list(revocation_ids), "reason": reason},
        )

    def _governance(self, event: str, fields: Mapping[str, Any]) -> int:
        """Sign a governance record with the node key and commit it with the state change it
        makes (:func:`interlock.ledger.projection.delta_of`, one transaction); effective for
        this gate at once.

        Raises:
            LedgerUnavailable: not committed. ClockBehind: the clock is behind the log."""
        floor = self._time_floor
        ns = self._clock_ns()
        rec = {
            "v": RECORD_VERSION,
            "type": RecordType.GOVERNANCE.value,
            "event": event,
            "id": new_request_id(ns),
            "ts": format_time(datetime.fromtimestamp(ns / 1e9, UTC)),
            **dict(fields),
        }
        self._check_clock(ns, floor)
        signed = sign_governance(rec, self.home.private_key("node"))
        (res,) = self.ledger.append(
            [
                Append(
                    record=canonical_bytes(signed),
                    state=delta_of(signed, node_public=self._node_public, root_public=None),
                )
            ],
            timeout=self.ledger_timeout_s,
        )
        self._rebuild_snapshot(force_trust=True)
        return res.index

    def quarantine(self, principal: str, reason: str, *, on: bool) -> int:
        """Quarantine (``on=True``) or release a principal: while quarantined, its decisions
        and its running executions are denied PRINCIPAL_QUARANTINED. Recorded as a node-signed
        ``principal.quarantined`` / ``principal.released`` governance record; returns its index.

        Raises:
            UsageError: ``principal`` is not a SPIFFE ID.
            KeyFileError: the node key is missing or unsafe.
            LedgerUnavailable: the record could not be committed (nothing changed).
        """
        if not is_spiffe_id(principal):
            raise UsageError(f"not a SPIFFE ID: {principal!r}")
        event = "principal.quarantined" if on else "principal.released"
        return self._governance(
            event,
            {"principal": principal, "reason": reason},
        )

    def release_restriction(self, principal: str, boundary: str, reason: str) -> int:
        """Lift a boundary restriction (``boundary.released``, node-signed); returns its index.

        Raises:
            UsageError: ``principal`` is not a SPIFFE ID.
            LedgerUnavailable: the record could not be committed (nothing changed).
        """
        if not is_spiffe_id(principal):
            raise UsageError(f"not a SPIFFE ID: {principal!r}")
        return self._governance(
            "boundary.released",
            {"principal": principal, "boundary": boundary, "reason": reason},
        )

    def _enforce_boundary(self, request: ActionRequest, verdict: Verdict) -> None:
        """Carry out a boundary's ``on_violation`` after its BOUNDARY_VIOLATION deny was
        recorded: restrict the principal, quarantine it (isolate), or record the violation
        (terminate: the offending execution is denied or terminated by its supervisor).
        Never raises: the deny stands whatever happens here."""
        boundary = verdict.boundary
        if boundary is None:
            return
        principal = request.principal
        fields: dict[str, Any] = {
            "principal": principal,
            "boundary": boundary.name,
            "on_violation": boundary.on_violation,
            "request": request.id,
            "reason": f"boundary {boundary.name!r} violated by request {request.id}",
        }
        try:
            if boundary.on_violation == "restrict":
                if any(
                    b == boundary.name and is_under(principal, p)
                    for p, b in self.snapshot.restricted
                ):
                    return
                fields["restricted_actions"] = list(boundary.restricted_actions)
                self._governance(
                    "boundary.restricted",
                    fields,
                )
            elif boundary.on_violation == "isolate":
                if any(is_under(principal, q) for q in self.snapshot.quarantined):
                    return
                self._governance(
                    "principal.quarantined",
                    fields,
                )
            else:
                self._governance("boundary.violated", fields)
        except Exception as exc:  # noqa: BLE001 - the request is denied either way
            _log.error(
                "boundary %r: %s of %s could not be recorded (%s); the request stays denied",
                boundary.name,
                boundary.on_violation,
                principal,
                error_detail(exc),
            )

    def kill_switch(self, on: bool, reason: str) -> int:
        """Turn the kill switch on (every action denied, every supervised run terminated) or
        off. Recorded as a node-signed ``kill_switch.on`` / ``kill_switch.off`` governance
        record; returns its index.

        Raises:
            KeyFileError: the node key is missing or unsafe.
            LedgerUnavailable: the record could not be committed (nothing changed).
        """
        event = "kill_switch.on" if on else "kill_switch.off"
        return self._governance(event, {"reason": reason})

    # -- deciding ----------------------------------------------------------------------------

    def decide(
        self,
        request: Mapping[str, Any] | bytes | str,
        *,
        _keep: list[ActionRequest] | None = None,
        _start: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide one action request and record the decision before answering.

        Never raises. Returns allow only when every validator passed and the record is durably
        committed; otherwise a deny with a DESIGN §3 reason code, including MALFORMED_REQUEST,
        DEADLINE_EXCEEDED, LEDGER_UNAVAILABLE, LEDGER_CORRUPT and INTERNAL_ERROR.
        """
        started = time.perf_counter_ns()
        try:
            return self._decide(request, started, _keep, _start)
        except Exception as exc:  # noqa: BLE001 - I2: the one place an exception becomes a deny
            try:
                return self._error_decision(exc)
            except Exception:  # noqa: BLE001 - even building the error decision failed
                return _LAST_RESORT
        except BaseException as exc:
            # a Rust panic in a binding (pyo3's PanicException) derives from BaseException;
            # interpreter exits and interrupts still propagate (no allow is returned either way)
            if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
            return _LAST_RESORT

    def _now(self) -> tuple[str, str]:
        ns = self._clock_ns()
        when = format_time(datetime.fromtimestamp(ns // 1000 / 1e6, UTC))
        return new_request_id(ns), when

    def _clock_problem(self, ns: int, floor: int) -> str | None:
        """Why the clock reading ``ns`` cannot be used, or None: it is behind ``floor``, the
        highest timestamp on the log, read *before* the clock (DESIGN I8: the log's last time
        is a floor, so setting the clock back cannot revive an expired token). Read in that
        order, a concurrent caller's later commit never makes an honest clock look behind."""
        if ns // 1000 >= floor:
            return None
        behind = floor - ns // 1000
        return (
            f"the node's clock is {behind / 1e6:.3f} s behind the last timestamp on the log"
            f" ({format_time(datetime.fromtimestamp(floor / 1e6, UTC))}): fix the clock; a"
            " clock set back cannot be trusted to judge expiry"
        )

    def _check_clock(self, ns: int, floor: int) -> None:
        """Raises ClockBehind when ``ns`` is behind the log's time floor ``floor``."""
        problem = self._clock_problem(ns, floor)
        if problem is not None:
            raise ClockBehind(problem)

    def _refresh_floor(self) -> None:
        """Raise the time floor to the log's latest timestamp (other processes append too)."""
        last = self.ledger.settings().get("last_ts")
        if last is not None and int(last[0]) > self._time_floor:
            self._time_floor = int(last[0])

    def _decide(
        self,
        raw: Mapping[str, Any] | bytes | str,
        started: int,
        keep: list[ActionRequest] | None = None,
        start: Mapping[str, Any] | None = None,
    ) -> Decision:
        floor = self._time_floor  # before the clock: see _clock_problem
        ns = self._clock_ns()
        request_id = new_request_id(ns)
        when = format_time(datetime.fromtimestamp(ns // 1000 / 1e6, UTC))
        if self._corrupt is not None:
            return self._unrecorded(
                request_id,
                ReasonCode.LEDGER_CORRUPT,
                f"ledger failed verification: {self._corrupt}",
            )
        unchecked = self.ledger_check_problem()
        if unchecked is not None:
            return self._unrecorded(request_id, ReasonCode.LEDGER_UNAVAILABLE, unchecked)
        snapshot = self.snapshot
        behind = self._clock_problem(ns, floor)
        if behind is not None:
            # not recorded: its timestamp would go backwards on the log
            return self._unrecorded(request_id, ReasonCode.ENVIRONMENT_UNTRUSTED, behind)
        try:
            request = parse_request(raw, request_id=request_id, time=when)
        except MalformedRequest as exc:
            return self._record_malformed(raw, exc, request_id, when, snapshot.id)
        if keep is not None:
            keep.append(request)

        lineage = Lineage(parent=request.parent, status="unknown")
        try:
            lineage = self._lineage(request)
            verdict = decide(request, snapshot, lineage)
            stage = Stage.PIPELINE if verdict.reproducible else Stage.GATE
        except Exception as exc:  # noqa: BLE001 - I2: could not decide, so deny (and record it)
            verdict = _deny(ReasonCode.INTERNAL_ERROR, error_detail(exc))
            stage = Stage.GATE
        elapsed = time.perf_counter_ns() - started
        if elapsed > self.deadline_ns:
            verdict = _deny(
                ReasonCode.DEADLINE_EXCEEDED,
                f"decision took {elapsed / 1e6:.1f} ms, over the {self.deadline_ns / 1e6:.0f} ms"
                " deadline",
            )
            stage = Stage.GATE
        decision = self._commit(request, verdict, snapshot, lineage, stage, start=start)
        if verdict.boundary is not None and decision.ledger_index is not None:
            self._enforce_boundary(request, verdict)
        return decision

    # -- governed executions -----------------------------------------------------------------

    def admit(
        self,
        request: Mapping[str, Any] | bytes | str,
        *,
        start: Mapping[str, Any] | None = None,
    ) -> tuple[Decision, ActionRequest | None]:
        """:meth:`decide`, also returning the validated request (``None`` when intake refused
        it), which a supervisor needs to re-verify the execution while it runs.

        With ``start`` (the fields of an ``exec.start`` record), an allow also commits
        ``exec.start`` — status ``running`` — in the *same* transaction as the decision: one
        durable commit instead of two before the action may begin. If that commit fails the
        answer is a deny (LEDGER_UNAVAILABLE) and neither record exists.

        Never raises; same answers as :meth:`decide`.
        """
        box: list[ActionRequest] = []
        decision = self.decide(request, _keep=box, _start=start)
        return decision, (box[0] if box else None)

    def reverify(self, request: ActionRequest) -> Verdict:
        """Re-decide a running execution *now*: the same request at the gate's current time,
        with the current snapshot and its parent's current status (a terminated or ended
        parent breaks the lineage). Pure apart from reading the clock, the snapshot and the
        parent's row; records nothing.

        Never raises: any error is a deny (INTERNAL_ERROR), so a broken gate terminates runs.
        """
        try:
            if self._corrupt is not None:
                return _deny(
                    ReasonCode.LEDGER_CORRUPT, f"ledger failed verification: {self._corrupt}"
                )
            unchecked = self.ledger_check_problem()
            if unchecked is not None:
                return _deny(ReasonCode.LEDGER_UNAVAILABLE, unchecked)
            snapshot = self.snapshot
            floor = self._time_floor
            ns = self._clock_ns()
            behind = self._clock_problem(ns, floor)
            if behind is not None:
                return _deny(ReasonCode.ENVIRONMENT_UNTRUSTED, behind)
            when = format_time(datetime.fromtimestamp(ns // 1000 / 1e6, UTC))
            current = dataclasses.replace(request, time=when)
            verdict = decide(current, snapshot, self._lineage(current))
            if verdict.boundary is not None:
                self._enforce_boundary(current, verdict)
            return verdict
        except Exception as exc:  # noqa: BLE001 - could not re-establish authorization: deny
            return _deny(ReasonCode.INTERNAL_ERROR, error_detail(exc))

    def execution(
        self, request: Mapping[str, Any] | bytes | str, *, interval: float = 1.0
    ) -> Execution:
        """A governed in-process execution: ``with gate.execution(request) as run: ...``.

        Entering admits the request and commits ``exec.start``; ``run.check()`` raises
        ``interlock.Revoked`` once authorization no longer holds (re-verified every
        ``interval`` seconds and on governance changes); leaving commits ``exec.end`` or
        ``exec.terminated``. See :mod:`interlock.runtime.execution`.

        Raises:
            ValueError: if ``interval`` is not positive. (Entering raises ``interlock.Denied``.)
        """
        from interlock.runtime.execution import Execution

        return Execution(self, request, interval=interval)

    def governed(
        self,
        action: str = "tool.call",
        *,
        resource: ResourceSpec | None = None,
        agent: Agent | None = None,
        context: Mapping[str, Any] | None = None,
        interval: float = 1.0,
        exclude: Collection[str] = (),
    ) -> Callable[[F], F]:
        """Decorator: ``@gate.governed(action="tool.call", resource=...)`` governs every call of
        a sync or async function (see :func:`interlock.adapters.sdk.governed`): a deny raises
        ``interlock.Denied`` and the body does not run; an allow runs it inside
        :meth:`execution`."""
        from interlock.adapters.sdk import governed  # the SDK layer sits above the gate

        return governed(
            self,
            action=action,
            resource=resource,
            agent=agent,
            context=context,
            interval=interval,
            exclude=exclude,
        )

    def agent(self, principal: str, capability: str) -> Agent:
        """A handle whose governed calls present ``capability`` as ``principal`` (see
        :class:`interlock.adapters.sdk.Agent`).

        Raises:
            UsageError: ``principal`` is not a SPIFFE ID or ``capability`` is empty.
        """
        from interlock.adapters.sdk import Agent

        return Agent(self, principal, capability)

    def record_execution(
        self,
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
        if kind not in _EXEC_RECORDS:
            raise ValueError(f"not an execution record type: {kind}")
        row = self.ledger.execution(request_id)
        rec: dict[str, Any] = {
            "v": RECORD_VERSION,
            "type": kind.value,
            "id": request_id,
            "ts": self._now()[1],
            "parent": row.parent if row is not None else None,
            "decision_leaf": row.leaf_hash.hex() if row is not None else None,
            **dict(fields),
        }
        if status is not None and status_set_by(rec) != status:
            raise ValueError(f"{kind.value} does not set status {status!r}")
        (res,) = self.ledger.append(
            [
                Append(
                    record=canonical_bytes(rec),
                    state=delta_of(rec, node_public=None, root_public=None),
                )
            ],
            timeout=self.ledger_timeout_s,
        )
        return res.index

    def reap_orphans(self) -> list[str]:
        """Terminate, on the ledger, every ``running`` execution whose supervisor is gone: its
        ``exec.start`` names the supervising process (boot id, pid, start time) and that
        process no longer exists on this machine, or the machine rebooted. Such a run cannot
        be re-verified any more, so it must not stay a live parent (DESIGN I5, I6). Records
        ``exec.terminated`` (INTERNAL_ERROR, ``reaped: true``); returns the ids.

        Never raises: an execution whose start record cannot be read is left as it is.
        """
        me = _process_identity()
        if me is None or self._corrupt is not None:
            return []
        reaped: list[str] = []
        try:
            running = self.ledger.running_executions()
        except Exception:  # noqa: BLE001 - reaping is housekeeping; deciding does not depend on it
            return []
        for exec_id, idx in running:
            try:
                rec = json.loads(self.ledger.entry(idx + 1))
                proc = rec.get("process") if isinstance(rec, dict) else None
                if rec.get("type") != RecordType.EXEC_START.value or rec.get("id") != exec_id:
                    continue
                if not isinstance(proc, dict) or _process_alive(proc, me):
                    continue
                self.record_execution(
                    RecordType.EXEC_TERMINATED,
                    exec_id,
                    {
                        "reason": Reason(
                            code=ReasonCode.INTERNAL_ERROR,
                            detail=(
                                f"its supervisor (pid {proc.get('pid')}) is gone: nothing"
                                " re-verifies this execution any more"
                            ),
                        ).to_json(),
                        "signals_sent": [],
                        "reaped": True,
                    },
                    status="terminated",
                )
                reaped.append(exec_id)
            except Exception:  # noqa: BLE001, S112 - the next pass tries again
                continue
        return reaped

    def _start_append(
        self, request: ActionRequest, decision_data: bytes, start: Mapping[str, Any] | None
    ) -> tuple[Append, ...]:
        """The ``exec.start`` append that rides with an allow (see :meth:`admit`)."""
        if start is None:
            return ()
        rec: dict[str, Any] = {
            **dict(start),  # first: the caller's fields never replace the record's own
            "v": RECORD_VERSION,
            "type": RecordType.EXEC_START.value,
            "id": request.id,
            "ts": self._now()[1],
            "parent": request.parent,
            "decision_leaf": hashlib.sha256(b"\x00" + decision_data).hexdigest(),
        }
        me = _process_identity()
        if me is not None:  # who supervises it: see reap_orphans
            rec["process"] = me
        return (
            Append(
                record=canonical_bytes(rec),
                state=delta_of(rec, node_public=None, root_public=None),
            ),
        )

    def _lineage(self, request: ActionRequest) -> Lineage:
        if request.parent is None:
            return Lineage()
        row = self.ledger.execution(request.parent)
        if row is None:
            return Lineage(parent=request.parent, status="unknown", depth=0)
        status = row.status if row.effect == Effect.ALLOW.value else "denied"
        return Lineage(
            parent=request.parent,
            status=status,
            depth=row.depth + 1,
            parent_leaf=row.leaf_hash.hex(),
            principal=row.principal,
        )

    def _commit(
        self,
        request: ActionRequest,
        verdict: Verdict,
        snapshot: Snapshot,
        lineage: Lineage,
        stage: Stage,
        *,
        start: Mapping[str, Any] | None = None,
    ) -> Decision:
        record = decision_record(
            request, verdict, snapshot_id=snapshot.id, lineage=lineage, stage=stage
        )
        data = canonical_bytes(record)
        decision_hash = hashlib.sha256(data).hexdigest()
        blobs = {f"req:{request.id}": _payload_blob(request)}
        if snapshot.id not in self._stored_snapshots:
            blobs[f"snapshot:{snapshot.id}"] = canonical_bytes(dict(snapshot.descriptor))
        allowed = verdict.effect is Effect.ALLOW
        change = delta_of(record, node_public=None, root_public=None)
        try:
            res, *_ = self.ledger.append(
                [
                    Append(
                        record=data,
                        blobs=blobs,
                        state=change,
                    ),
                    *self._start_append(request, data, start if allowed else None),
                ],
                timeout=self.ledger_timeout_s,
            )
        except LedgerError as exc:
            if isinstance(exc, LedgerCorrupt):
                self._corrupt = exc.diagnostics()
            code = (
                ReasonCode.LEDGER_CORRUPT
                if isinstance(exc, LedgerCorrupt)
                else ReasonCode.LEDGER_UNAVAILABLE
            )
            return Decision(
                request_id=request.id,
                effect=Effect.DENY,
                reasons=(
                    *((r for r in verdict.reasons) if not allowed else ()),
                    Reason(code=code, detail=f"decision not recorded: {exc.message}"),
                ),
                snapshot=snapshot.id,
                decision_hash=decision_hash,
                ledger_index=None,
                stage=Stage.GATE,
            )
        self._stored_snapshots.add(snapshot.id)
        if change.ts is not None and change.ts > self._time_floor:
            self._time_floor = change.ts
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
            decision_hash=decision_hash,
            ledger_index=res.index,
            stage=stage,
            break_glass=verdict.break_glass,
        )

    def _record_malformed(
        self,
        raw: Mapping[str, Any] | bytes | str,
        exc: MalformedRequest,
        request_id: str,
        when: str,
        snapshot_id: str,
    ) -> Decision:
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
        decision_hash = hashlib.sha256(data).hexdigest()
        blobs = {f"raw:{raw_digest}": raw_bytes} if len(raw_bytes) <= 1 << 20 else {}
        index: int | None
        reasons: tuple[Reason, ...] = (reason,)
        try:
            (res,) = self.ledger.append(
                [
                    Append(
                        record=data,
                        blobs=blobs,
                        state=delta_of(record, node_public=None, root_public=None),
                    )
                ],
                timeout=self.ledger_timeout_s,
            )
            index = res.index
        except LedgerError as exc:
            index = None
            code = (
                ReasonCode.LEDGER_CORRUPT
                if isinstance(exc, LedgerCorrupt)
                else ReasonCode.LEDGER_UNAVAILABLE
            )
            reasons = (reason, Reason(code=code, detail=f"decision not recorded: {exc.message}"))
        return Decision(
            request_id=request_id,
            effect=Effect.DENY,
            reasons=reasons,
            snapshot=snapshot_id,
            decision_hash=decision_hash,
            ledger_index=index,
            stage=Stage.INTAKE,
        )

    def _unrecorded(self, request_id: str, code: ReasonCode, detail: str) -> Decision:
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

    def _error_decision(self, exc: BaseException) -> Decision:
        code = ReasonCode.of(exc)
        detail = error_detail(exc)
        try:
            request_id, _ = self._now()
        except Exception:  # noqa: BLE001 - even the clock failing must end in a deny
            request_id = "00000000-0000-7000-8000-000000000000"
        return self._unrecorded(request_id, code, detail[:500])


#: what ``Gate.decide`` returns when even reporting an error failed: a constant, built at import
_LAST_RESORT = Decision(
    request_id="00000000-0000-7000-8000-000000000000",
    effect=Effect.DENY,
    reasons=(Reason(code=ReasonCode.INTERNAL_ERROR, detail="could not decide or report why"),),
    snapshot="",
    decision_hash=hashlib.sha256(b"interlock:last-resort-deny").hexdigest(),
    ledger_index=None,
    stage=Stage.GATE,
)


_EXEC_RECORDS = frozenset(
    {RecordType.EXEC_START, RecordType.EXEC_VERIFY, RecordType.EXEC_END, RecordType.EXEC_TERMINATED}
)


_IDENTITY: dict[int, dict[str, Any] | None] = {}


def _process_identity() -> dict[str, Any] | None:
    """This process as ``{"boot_id", "pid", "start"}`` (Linux: the kernel's boot id and the
    process start time in clock ticks since boot, so a reused pid is not mistaken for it);
    None where /proc does not say. Read once per process (keyed by pid: a fork is another)."""
    pid = os.getpid()
    if pid not in _IDENTITY:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
            _IDENTITY[pid] = {"boot_id": boot, "pid": pid, "start": _start_ticks(pid)}
        except (OSError, ValueError, IndexError):
            _IDENTITY[pid] = None
    found = _IDENTITY[pid]
    return None if found is None else dict(found)


def _start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat (after the parenthesised command name).

    Raises:
        OSError: no such process. ValueError/IndexError: an unreadable stat line.
    """
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat[stat.rfind(b")") + 2 :].split()[19])


def _process_alive(proc: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Whether the process ``proc`` (from an exec.start) still runs: same boot, pid present,
    same start time, not a zombie."""
    if proc.get("boot_id") != me["boot_id"]:
        return False
    pid = proc.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True  # not ours to judge: leave it
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return fields[0] != b"Z" and int(fields[19]) == proc.get("start")
    except (ValueError, IndexError):
        return True
