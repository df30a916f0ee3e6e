"""The pure decision (DESIGN I3): ``decide(request, snapshot, lineage) -> Verdict``.

No clock, no randomness, no I/O. Validators run in the fixed order of DESIGN §2 (capability,
quarantine, boundaries, environment, lineage, policy, obligations); the first denial wins.
Allow is its last line and nowhere else. :class:`interlock.gate.Gate` does the I/O around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.capability import CapabilityVerifier
from interlock.core.boundary import Boundary
from interlock.core.canonical import digest
from interlock.core.model import (
    ActionRequest,
    Effect,
    Reason,
    ReasonCode,
    is_under,
)
from interlock.errors import (
    VerificationError,
)
from interlock.policy.bundle import PolicyBundle
from interlock.policy.engine import PolicyEngine
from interlock.trust.approval import verify_approval
from interlock.trust.breakglass import verify_break_glass

if TYPE_CHECKING:
    pass


#: obligations this version knows how to enforce; any other obligation denies (fail-closed)
KNOWN_OBLIGATIONS = frozenset({"approval"})


#: execution statuses under which an execution may have children: decided-and-allowed, or
#: started and still running. ``ended``, ``terminated`` and ``denied`` may not.
LIVE_STATUSES = frozenset({"allowed", "running"})


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
    """Whether :func:`_cedar_value` would change ``value`` (a float, or a null attribute).
    Loops rather than ``any()`` over a generator, and no call for an exact ``str``, ``int`` or
    ``bool`` (never a float, dict or list): the same answer, without a frame per value."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        for v in value.values():
            t = type(v)
            if t is str or t is int or t is bool:
                continue
            if v is None or _needs_mapping(v):
                return True
        return False
    if isinstance(value, list):
        for v in value:
            t = type(v)
            if t is str or t is int or t is bool:
                continue
            if _needs_mapping(v):
                return True
        return False
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
    MALFORMED_REQUEST (args that do not fit the bundle schema's declared types, or a resource
    id that differs from one the bundle names only by case or slashes), IDENTITY_UNVERIFIED,
    CAPABILITY_INVALID, CAPABILITY_EXPIRED,
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
    # request shape against this bundle: args of the declared types, no near-duplicate of a
    # named resource id (checked on what Cedar would see; a break-glass cannot lift it)
    problem = engine.request_problem(
        action=request.action,
        resource_type=request.resource.type,
        resource_id=request.resource.id,
        args=args,
    )
    if problem is not None:
        return _deny(ReasonCode.MALFORMED_REQUEST, problem)
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
