"""What is in force, who the principals are, and what an operator does about them.

    GET  /console/api/overview                      kill switch, policy, quarantines, readiness
    GET  /console/api/principals                    every principal seen, with counts and state
    GET  /console/api/principals/detail?principal=  its capabilities in use, quarantine, limits
    POST /console/api/actions/revoke                {"index", "reason"}: that decision's token
    POST /console/api/actions/quarantine            {"principal", "reason"}
    POST /console/api/actions/release               {"principal", "reason"}
    POST /console/api/actions/kill-switch           {"on", "reason"}
    GET  /console/api/approvals                     decisions waiting for a human approval
    POST /console/api/approvals/{index}             {"approval"} or {"refuse": "reason"}

Everything shown is the state **in force** — the gate's current snapshot — not a configuration
file. Reads need a read session (or the public mode); every action needs the session's token to
hold that admin operation, the CSRF token and a same-origin request
(:func:`interlock.server.console.session.acting`), and is recorded on the ledger as the HTTP
API's admin actions are (the record's reason ends ``[by <operator> via the console]``).

Approvals are signed **in the browser** with the approver's own Ed25519 key (WebCrypto): the
private key never reaches this server. The server checks the signed approval against the
trusted approvers for that exact request digest and keeps it with the queue (in memory), for
the operator to hand to the agent, which resubmits the request with it; a refusal is kept the
same way. Neither changes what the gate allows: only a valid approval inside the request does.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from interlock.capability import inspect, revocation_ids
from interlock.core.model import is_spiffe_id
from interlock.errors import CapabilityError, Error, VerificationError
from interlock.server.console.api import feed_of
from interlock.server.console.feed import Filters
from interlock.server.console.session import Viewer, ViewerDep, acting
from interlock.server.routes.admin import attributed, recorded
from interlock.server.state import ServerState, StateDep
from interlock.trust.approval import verify_approval

__all__ = ["api"]

api = APIRouter(prefix="/console/api", tags=["console"])

VIA = "the console"
_DIGEST = re.compile(r"request digest ([0-9a-f]{64})")
_APPROVAL_FILTER = Filters(code="APPROVAL_REQUIRED")
_Reason = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"\S")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RevokeIn(_In):
    index: int = Field(ge=0, le=2**53)
    reason: _Reason


class PrincipalIn(_In):
    principal: str = Field(min_length=1, max_length=2048)
    reason: _Reason


class KillSwitchIn(_In):
    on: bool
    reason: _Reason


class ApprovalIn(_In):
    approval: str | None = Field(default=None, min_length=1, max_length=8192)
    refuse: str | None = Field(default=None, min_length=1, max_length=1000, pattern=r"\S")


@dataclass(slots=True)
class Answer:
    """What an operator answered to one waiting request."""

    outcome: str  # approved | refused
    by: str
    at: float
    approval: str | None
    reason: str | None


def _answers(request: Request) -> tuple[dict[str, Answer], threading.Lock]:
    app_state = request.app.state
    if not hasattr(app_state, "console_answers"):
        app_state.console_answers = ({}, threading.Lock())
    answers: tuple[dict[str, Answer], threading.Lock] = app_state.console_answers
    return answers


# -- what is in force ---------------------------------------------------------------------------


@api.get("/overview", summary="The governance state in force on this node")
def overview(request: Request, state: StateDep, viewer: ViewerDep) -> JSONResponse:
    """Kill switch, loaded policy, quarantined principals, revocation count, readiness."""
    gate = state.gate
    snap = gate.snapshot
    desc = snap.descriptor
    return JSONResponse(
        {
            "kill_switch": snap.kill_switch,
            "policy": {
                "version": desc.get("policy_version"),
                "digest": desc.get("policy_digest"),
                "problem": snap.policy_problem,
            },
            "quarantined": sorted(
                p for p in (viewer.principal_of(q) for q in snap.quarantined) if p
            ),
            "revocations": len(snap.revoked),
            "not_ready": state.not_ready(),
            "ledger_size": feed_of(request).size,
            "approvers": len(snap.approvers),
        },
        headers={"Cache-Control": "no-store"},
    )


# -- principals ---------------------------------------------------------------------------------


@api.get("/principals", summary="Principals seen on the ledger, with their state")
def principals(request: Request, state: StateDep, viewer: ViewerDep) -> JSONResponse:
    """Every principal among the indexed decisions: decisions, allows, denies, last seen,
    whether it is quarantined now. Quarantined principals never seen are listed too."""
    snap = state.gate.snapshot
    seen: dict[str, dict[str, Any]] = {}
    for row in feed_of(request).rows():
        if row.principal is None:
            continue
        entry = seen.get(row.principal)
        if entry is None:
            entry = seen[row.principal] = {"decisions": 0, "allows": 0, "denies": 0}
        entry["decisions"] += 1
        entry["allows" if row.effect == "allow" else "denies"] += 1
        entry["last_ts"] = row.ts
        entry["last_index"] = row.index
    for q in snap.quarantined:
        seen.setdefault(q, {"decisions": 0, "allows": 0, "denies": 0})
    out = []
    for principal, entry in sorted(seen.items()):
        entry["principal"] = viewer.principal_of(principal)
        entry["quarantined"] = principal in snap.quarantined
        entry["restricted"] = sorted(b for p, b in snap.restricted if p == principal)
        out.append(entry)
    return JSONResponse({"principals": out}, headers={"Cache-Control": "no-store"})


def _payload(state: ServerState, rec_id: str) -> dict[str, Any] | None:
    try:
        blob = state.gate.ledger.blob(f"req:{rec_id}")
    except Error:
        return None
    try:
        obj = json.loads(blob) if blob is not None else None
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _record(state: ServerState, index: int) -> dict[str, Any]:
    size = state.gate.ledger.size()
    if index >= size:
        raise HTTPException(404, f"no entry at index {index} (the log has {size})")
    rec = json.loads(state.gate.ledger.entry(index))
    if not isinstance(rec, dict) or rec.get("type") != "decision":
        raise HTTPException(404, f"entry {index} is not a decision")
    return rec


@api.get("/principals/detail", summary="One principal: capabilities in use and state")
def principal_detail(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    principal: Annotated[str, Query(min_length=1, max_length=2048)],
) -> JSONResponse:
    """The capabilities ``principal`` presented in its newest 500 indexed decisions (what each
    says, read without verifying; whether it is revoked now), its quarantine and restrictions.
    Not available for redacted principals in the public mode."""
    if "principal" in viewer.redact:
        raise HTTPException(403, "principals are redacted in this public view")
    snap = state.gate.snapshot
    rows = [r for r in feed_of(request).rows() if r.principal == principal][-500:]
    caps: dict[str, dict[str, Any]] = {}
    for row in reversed(rows):
        rec = _record(state, row.index)
        digest = (rec.get("request") or {}).get("capability_sha256")
        if not isinstance(digest, str) or digest in caps:
            if isinstance(digest, str):
                caps[digest]["uses"] += 1
            continue
        info: dict[str, Any] = {"sha256": digest, "uses": 1, "last_index": row.index}
        payload = _payload(state, row.id)
        token = payload.get("capability") if payload else None
        if isinstance(token, str):
            try:
                told = inspect(token).to_json()
                ids = told.get("revocation_ids", [])
                info.update(
                    rights=told["rights"],
                    expires_at=told["expires_at"],
                    delegated_to=told["delegated_to"],
                    revocation_ids=ids,
                    revoked=any(i in snap.revoked for i in ids),
                )
            except CapabilityError:
                info["unreadable"] = True
        caps[digest] = info
    return JSONResponse(
        {
            "principal": principal,
            "quarantined": principal in snap.quarantined,
            "restricted": sorted(b for p, b in snap.restricted if p == principal),
            "capabilities": list(caps.values()),
            "decisions": len(rows),
        },
        headers={"Cache-Control": "no-store"},
    )


# -- actions ------------------------------------------------------------------------------------


@api.post("/actions/revoke", summary="Revoke the capability a recorded decision presented")
def revoke(request: Request, state: StateDep, body: RevokeIn) -> JSONResponse:
    """Revokes every block of the token presented in the decision at ``index`` (so every token
    attenuated from it, too). The operator never needs to hold the agent's token."""
    who = acting(request, state, "revocation")
    rec = _record(state, body.index)
    payload = _payload(state, str(rec.get("id")))
    token = payload.get("capability") if payload else None
    if not isinstance(token, str) or not token:
        raise HTTPException(422, f"decision {body.index} presented no capability to revoke")
    try:
        ids = tuple(dict.fromkeys(revocation_ids(token)))
    except CapabilityError as exc:
        raise HTTPException(422, f"the presented token is unreadable: {exc.message}") from None
    reason = attributed(body.reason, who, VIA)
    return recorded(
        state, "revocation", "capability.revoked", lambda: state.gate.revoke(ids, reason=reason)
    )


def _set_quarantine(
    request: Request, state: ServerState, body: PrincipalIn, on: bool
) -> JSONResponse:
    who = acting(request, state, "quarantine")
    if not is_spiffe_id(body.principal):
        raise HTTPException(422, "principal is not a SPIFFE ID (spiffe://trust-domain/path)")
    reason = attributed(body.reason, who, VIA)
    return recorded(
        state,
        "quarantine",
        "principal.quarantined" if on else "principal.released",
        lambda: state.gate.quarantine(body.principal, reason, on=on),
    )


@api.post("/actions/quarantine", summary="Quarantine a principal")
def quarantine(request: Request, state: StateDep, body: PrincipalIn) -> JSONResponse:
    """Every request of the principal is then denied PRINCIPAL_QUARANTINED."""
    return _set_quarantine(request, state, body, on=True)


@api.post("/actions/release", summary="Release a quarantined principal")
def release(request: Request, state: StateDep, body: PrincipalIn) -> JSONResponse:
    return _set_quarantine(request, state, body, on=False)


@api.post("/actions/kill-switch", summary="Turn the kill switch on or off")
def kill_switch(request: Request, state: StateDep, body: KillSwitchIn) -> JSONResponse:
    """While on, every action is denied and every supervised run is terminated."""
    who = acting(request, state, "kill-switch")
    reason = attributed(body.reason, who, VIA)
    event = "kill_switch.on" if body.on else "kill_switch.off"
    return recorded(state, "kill-switch", event, lambda: state.gate.kill_switch(body.on, reason))


# -- approvals ----------------------------------------------------------------------------------


def _waiting(viewer: Viewer, state: ServerState, index: int, rec: dict[str, Any]) -> dict[str, Any]:
    detail = " ".join(str(r.get("detail", "")) for r in rec.get("reasons") or [])
    found = _DIGEST.search(detail)
    req = rec.get("request") or {}
    payload = _payload(state, str(rec.get("id"))) if viewer.shows_args else None
    return {
        "index": index,
        "ts": rec.get("ts"),
        "principal": viewer.principal_of(req.get("principal")),
        "action": req.get("action"),
        "resource": viewer.resource_of(req.get("resource")),
        "args": payload.get("args") if payload else None,
        "context": payload.get("context") if payload else None,
        "request_digest": found.group(1) if found else None,
        "policy": next(
            (r.get("policy") for r in rec.get("reasons") or [] if r.get("policy")), None
        ),
    }


@api.get("/approvals", summary="Requests waiting for a human approval")
def approvals(request: Request, state: StateDep, viewer: ViewerDep) -> JSONResponse:
    """The newest 200 decisions denied APPROVAL_REQUIRED, each with the exact action it asked
    for, the request digest an approval must bind to, and what an operator answered here."""
    rows, _ = feed_of(request).query(_APPROVAL_FILTER, limit=200)
    answers, lock = _answers(request)
    out = []
    for row in rows:
        item = _waiting(viewer, state, row.index, _record(state, row.index))
        with lock:
            answer = answers.get(str(item["request_digest"]))
        item["answer"] = None
        if answer is not None:
            item["answer"] = {
                "outcome": answer.outcome,
                "by": viewer.principal_of(answer.by),
                "at": answer.at,
                "approval": answer.approval if viewer.session is not None else None,
                "reason": answer.reason,
            }
        out.append(item)
    return JSONResponse(
        {"approvals": out, "approvers": len(state.gate.snapshot.approvers)},
        headers={"Cache-Control": "no-store"},
    )


@api.post("/approvals/{index}", summary="Approve (signed in the browser) or refuse a request")
def answer(
    request: Request,
    state: StateDep,
    viewer: ViewerDep,
    index: Annotated[int, Path(ge=0, le=2**53)],
    body: ApprovalIn,
) -> JSONResponse:
    """``{"approval": <wire form>}`` must verify now, against this node's trusted approvers,
    for exactly the request digest the denial at ``index`` names (422 otherwise: nothing is
    kept). ``{"refuse": <reason>}`` records the refusal with the queue."""
    who = acting(request, state, "approval")
    if (body.approval is None) == (body.refuse is None):
        raise HTTPException(422, "give exactly one of 'approval' and 'refuse'")
    rec = _record(state, index)
    item = _waiting(viewer, state, index, rec)
    wanted = item["request_digest"]
    if wanted is None:
        raise HTTPException(422, f"decision {index} is not waiting for an approval")
    if body.approval is not None:
        try:
            verify_approval(
                body.approval,
                digest=wanted,
                trusted=tuple(state.gate.snapshot.approvers),
                now=int(time.time()),
            )
        except VerificationError as exc:
            raise HTTPException(422, f"the approval does not verify: {exc.message}") from None
        entry = Answer("approved", who, time.time(), body.approval, None)
    else:
        entry = Answer("refused", who, time.time(), None, body.refuse)
    answers, lock = _answers(request)
    with lock:
        answers[wanted] = entry
        while len(answers) > 10_000:
            answers.pop(next(iter(answers)))
    state.metrics.admin.labels("approval", "done").inc()
    return JSONResponse({"request_digest": wanted, "outcome": entry.outcome})
