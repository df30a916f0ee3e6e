"""Decisions, executions and lineage: ``/v1/decisions``, ``/v1/executions``, ``/v1/lineage``.

    >>> # curl -s -X POST http://127.0.0.1:8750/v1/decisions -d @req.json

The action request is read as raw bytes (at most 64 KiB + 1) and handed to the gate, whose
intake validates it, so every request — malformed or oversized too — is recorded:

* a decision the pipeline made (allow or deny) is **200** with the decision;
* a request refused at intake is **422** (or **413** when larger than 64 KiB) with the
  recorded ``MALFORMED_REQUEST`` deny in ``decision``.

An execution started here (``POST /v1/executions``) is re-verified by the app's
:class:`~interlock.server.verifier.ExecutionVerifier` until its runner reports the end
(``PATCH``); when its authorization ends it is terminated, and ``GET`` shows why.

``gate.decide`` is CPU-bound and waits for the durable commit (fsync): it never runs on the
event loop. ``POST /v1/decisions`` is answered before routing by
:mod:`interlock.server.fastpath`, whose dispatcher threads decide waiting requests together
(the same answers); the other routes run the gate in the thread pool.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from interlock.core.model import (
    MAX_REQUEST_BYTES,
    ActionRequest,
    Decision,
    Effect,
    Reason,
    ReasonCode,
    RecordType,
)
from interlock.errors import Error, LedgerError
from interlock.ledger.projection import Execution as ExecutionRow
from interlock.replay import recorded_request
from interlock.server.fastpath import refused_answer
from interlock.server.limits import read_capped
from interlock.server.schemas import (
    ACTION_REQUEST_SCHEMA,
    UUID_PATTERN,
    DecisionOut,
    ExecutionEndIn,
    ExecutionOut,
    ExecutionStarted,
    LineageOut,
    Problem,
    RejectedRequest,
)
from interlock.server.state import ServerState, StateDep

__all__ = ["api"]

_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ACTION_REQUEST_SCHEMA}},
    }
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    413: {"model": RejectedRequest, "description": "larger than 64 KiB (recorded as a deny)"},
    415: {"model": Problem, "description": "not 'Content-Type: application/json' (not recorded)"},
    422: {"model": RejectedRequest, "description": "malformed (recorded as a deny)"},
}
#: a lineage walk stops here whatever the data says (the gate denies deeper chains anyway)
_MAX_CHAIN = 2048

ExecutionId = Annotated[str, Path(pattern=UUID_PATTERN, max_length=36)]
_bearer = HTTPBearer(auto_error=False, description="the capability the execution was admitted with")


def _json(status: int, content: Any) -> JSONResponse:
    return JSONResponse(content=content, status_code=status)


def _refused(decision: Decision, too_large: bool) -> JSONResponse | None:
    """413/422 for a request refused at intake, else None."""
    status, content = refused_answer(decision, too_large)
    return _json(status, content) if status != 200 else None


def _holder_matches(rec: dict[str, Any], token: str) -> bool:
    """Whether ``token`` is the capability the execution was admitted with (by SHA-256)."""
    recorded = (rec.get("request") or {}).get("capability_sha256")
    presented = hashlib.sha256(token.encode()).hexdigest()
    return isinstance(recorded, str) and hmac.compare_digest(recorded, presented)


def _execution_json(row: ExecutionRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "effect": row.effect,
        "status": row.status,
        "parent": row.parent,
        "depth": row.depth,
        "decision_index": row.idx,
        "decision_leaf": row.leaf_hash.hex(),
    }


def _decision_record(state: ServerState, row: ExecutionRow) -> dict[str, Any]:
    rec = json.loads(state.gate.ledger.entry(row.idx))
    if not isinstance(rec, dict) or rec.get("id") != row.id:
        raise LedgerError("the execution's decision record does not name it", index=row.idx)
    return rec


def _request_of(state: ServerState, row: ExecutionRow) -> ActionRequest:
    """Rebuild the admitted request from its decision record and stored payload, digests
    checked (see :func:`interlock.replay.recorded_request`).

    Raises:
        LedgerError: the payload was purged; VerificationError: it does not match the record.
    """
    return recorded_request(state.gate.ledger, _decision_record(state, row))


def _authorization(state: ServerState, row: ExecutionRow) -> dict[str, Any]:
    """Re-decide a live execution now (nothing recorded). Never raises: failing to re-establish
    authorization is a deny."""
    request: ActionRequest | None
    try:
        request = _request_of(state, row)
    except (Error, ValueError, KeyError, TypeError):
        request = None
    if request is None:
        reason = Reason(
            code=ReasonCode.INTERNAL_ERROR,
            detail="the admitted request cannot be rebuilt (payload purged or unreadable)",
        )
        return {"holds": False, "reasons": [reason.to_json()]}
    verdict = state.gate.reverify(request)
    return {
        "holds": verdict.effect is Effect.ALLOW,
        "reasons": [r.to_json() for r in verdict.reasons],
    }


async def action_body(request: Request) -> tuple[bytes, bool]:
    """The action request's body, read up to the gate's intake limit plus one byte (the limit,
    as a dependency): ``(bytes, too_large)``; an oversized request is still decided, so that
    its deny is recorded. A client that disconnects mid-body gets 400.

    Raises:
        HTTPException: 400 when the client went away before the body was read.
    """
    try:
        return await read_capped(request, MAX_REQUEST_BYTES)
    except ClientDisconnect:
        raise HTTPException(status_code=400, detail="the client disconnected") from None


#: a route parameter that receives the capped action-request body
ActionBody = Annotated[tuple[bytes, bool], Depends(action_body)]


api = APIRouter()


def _admit(
    state: ServerState, body: bytes, start: dict[str, Any]
) -> tuple[Decision, ActionRequest | None]:
    gate = state.gate
    metrics = state.metrics
    t0 = time.perf_counter()
    decision, request = gate.admit(body, start=start)
    metrics.observe_decision("executions", decision, time.perf_counter() - t0)
    return decision, request


@api.post(
    "/v1/decisions",
    tags=["decisions"],
    summary="Decide one action request and record the decision",
    response_model=DecisionOut,
    responses=_REFUSED,
    openapi_extra=_REQUEST_BODY,
)
async def post_decision(state: StateDep, capped: ActionBody) -> Response:
    """Decide and durably record one action request; the answer comes after the commit.

    200 with the decision (allow *or* deny: treat anything but ``effect == "allow"`` as
    deny); 422/413 with the recorded ``MALFORMED_REQUEST`` deny for a malformed or oversized
    request."""
    # normally answered by interlock.server.fastpath before routing (the same answer)
    body, too_large = capped
    decision = await state.dispatcher.submit(body)
    status, content = refused_answer(decision, too_large)
    return _json(status, content)


#: a batch holds at most this many requests, in a body of at most MAX_BATCH_BYTES
MAX_BATCH = 256
MAX_BATCH_BYTES = 4 * 1024 * 1024


class _BatchIn(msgspec.Struct, forbid_unknown_fields=True):
    # each request's own bytes, as sent: intake validates them as it does a single request's
    requests: list[msgspec.Raw]


def _decide_batch(state: ServerState, bodies: list[bytes]) -> list[Decision]:
    metrics = state.metrics
    t0 = time.perf_counter()
    decisions = state.gate.decide_many(bodies)  # never raises
    per = (time.perf_counter() - t0) / max(1, len(decisions))
    for decision in decisions:
        metrics.observe_decision("decisions:batch", decision, per)
    return decisions


@api.post(
    "/v1/decisions:batch",
    tags=["decisions"],
    summary="Decide up to 256 action requests and record them in one durable commit",
)
async def post_decisions_batch(request: Request, state: StateDep) -> Response:
    """``{"requests": [<action request>, ...]}`` (1 to 256, at most 4 MiB in all): each is
    decided as ``POST /v1/decisions`` would decide it, and all are recorded in one commit
    before the answer ``{"decisions": [...]}`` (in order; 200 whatever the effects: treat
    anything but ``effect == "allow"`` as deny). A malformed request in the batch is denied
    MALFORMED_REQUEST on its own; a body that is not such an object is 422 and nothing is
    decided."""
    try:
        body, too_large = await read_capped(request, MAX_BATCH_BYTES)
    except ClientDisconnect:
        raise HTTPException(status_code=400, detail="the client disconnected") from None
    if too_large:
        raise HTTPException(status_code=413, detail=f"a batch is at most {MAX_BATCH_BYTES} bytes")
    try:
        batch = msgspec.json.decode(body, type=_BatchIn)
    except msgspec.DecodeError as exc:
        raise HTTPException(
            status_code=422, detail=f'the body must be {{"requests": [...]}}: {exc}'
        ) from None
    if not 1 <= len(batch.requests) <= MAX_BATCH:
        raise HTTPException(status_code=422, detail=f"a batch holds 1 to {MAX_BATCH} requests")
    bodies = [bytes(raw) for raw in batch.requests]
    decisions = await run_in_threadpool(_decide_batch, state, bodies)
    return _json(200, {"decisions": [d.to_json() for d in decisions]})


def _start_fields(state: ServerState) -> dict[str, Any]:
    """What ``exec.start`` records of this server's supervision."""
    verifier = state.verifier
    fields: dict[str, Any] = {
        "supervisor": "http",
        "interval_ms": round(verifier.interval * 1000),
    }
    if verifier.lease is not None:
        fields["lease_ms"] = round(verifier.lease * 1000)
    return fields


def _start(state: ServerState, body: bytes, too_large: bool) -> JSONResponse:
    # an execution nobody re-verifies must not start (I6): claim a verifier slot first
    metrics = state.metrics
    verifier = state.verifier
    if not verifier.reserve():
        detail = (
            f"this server already re-verifies {verifier.capacity} running executions; "
            "nothing was recorded: retry later"
            if verifier.running
            else "continuous verification is not running (the app's lifespan did not "
            "start); nothing was recorded"
        )
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})
    tracked = False
    try:
        # the allow and its exec.start are one durable commit (I1): either both are on the
        # ledger, or the answer is a LEDGER_UNAVAILABLE deny and neither is
        decision, admitted = _admit(state, body, start=_start_fields(state))
        refused = _refused(decision, too_large)
        if refused is not None:
            return refused
        if not decision.allowed or admitted is None or decision.ledger_index is None:
            first = decision.reasons[0] if decision.reasons else None
            detail = f"denied: {first.code.value}: {first.detail}" if first else "denied"
            status = 403 if decision.ledger_index is not None else 503
            return _json(status, {"detail": detail, "decision": decision.to_json()})
        tracked = True
        failed = verifier.track(admitted, decision.snapshot)
    finally:
        if not tracked:
            verifier.release()
    metrics.executions.labels("started").inc()
    if failed is not None:
        detail = f"started, but terminated at once: {failed.code.value}: {failed.detail}"
        return _json(503, {"detail": detail + "; do not run", "decision": decision.to_json()})
    out: dict[str, Any] = {
        "execution_id": admitted.id,
        "status": "running",
        "decision": decision.to_json(),
        # appended right after the decision, in the same transaction
        "start_index": decision.ledger_index + 1,
    }
    if verifier.lease is not None:
        out["lease_ms"] = round(verifier.lease * 1000)
    return _json(201, out)


@api.post(
    "/v1/executions",
    tags=["executions"],
    summary="Admit an action request and record exec.start",
    status_code=201,
    response_model=ExecutionStarted,
    responses={
        **_REFUSED,
        403: {"model": RejectedRequest, "description": "denied (the deny is recorded)"},
        503: {"model": RejectedRequest, "description": "not started (do not run)"},
    },
    openapi_extra=_REQUEST_BODY,
)
async def post_execution(state: StateDep, capped: ActionBody) -> Response:
    """Decide the request; if allowed, commit the decision and ``exec.start`` (status
    ``running``) in one transaction before answering 201. Run the action only after a 201.
    The server then re-verifies it and terminates it when its authorization ends (poll
    ``GET``); report its end with ``PATCH``."""
    body, too_large = capped
    return await run_in_threadpool(_start, state, body, too_large)


def _row(state: ServerState, execution_id: str) -> ExecutionRow:
    gate = state.gate
    row = gate.ledger.execution(execution_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"no execution {execution_id}")
    return row


@api.get(
    "/v1/executions/{execution_id}",
    tags=["executions"],
    summary="Read an execution's status",
    response_model=ExecutionOut,
    responses={404: {"model": Problem}},
)
def get_execution(
    state: StateDep,
    execution_id: ExecutionId,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> JSONResponse:
    """The execution's recorded status (``allowed``, ``running``, ``ended``, ``terminated``,
    ``denied``). For a live one, ``authorization`` says whether it would still be allowed
    *now*; one this server terminated has the ``reason`` and ``terminated_index``. A remote
    runner polls this and stops the action when ``status`` is ``terminated`` or
    ``authorization.holds`` is false. Polling with the execution's capability as Bearer
    token renews its lease (403 with another token)."""
    verifier = state.verifier
    row = _row(state, execution_id)
    if credentials is not None:
        if not _holder_matches(_decision_record(state, row), credentials.credentials):
            raise HTTPException(
                status_code=403, detail="not the capability this execution was admitted with"
            )
        verifier.renew(execution_id)
    out = _execution_json(row)
    if row.effect == Effect.ALLOW.value and row.status in ("allowed", "running"):
        out["authorization"] = _authorization(state, row)
    if row.status == "terminated":
        ended = verifier.termination(execution_id)
        denied = verifier.denied(execution_id)
        if ended is not None:
            out["reason"] = ended["reason"]
            out["terminated_index"] = ended["index"]
        elif denied is not None:  # exec.verify committed, exec.terminated on its way
            out["reason"] = denied.to_json()
    return _json(200, out)


@api.patch(
    "/v1/executions/{execution_id}",
    tags=["executions"],
    summary="Report the end of a running execution (exec.end)",
    response_model=ExecutionOut,
    responses={
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem},
        415: {"model": Problem},
        503: {"model": Problem},
    },
)
def patch_execution(
    state: StateDep,
    execution_id: ExecutionId,
    end: ExecutionEndIn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> JSONResponse:
    """Commit ``exec.end`` with the reported exit status and digests; only for a running
    execution (409 otherwise), and only by a caller presenting, as a Bearer token, the
    capability the execution was admitted with."""
    gate = state.gate
    metrics = state.metrics
    verifier = state.verifier
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="present the execution's capability as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    row = _row(state, execution_id)
    if not _holder_matches(_decision_record(state, row), credentials.credentials):
        raise HTTPException(
            status_code=403, detail="not the capability this execution was admitted with"
        )
    fields: dict[str, Any] = {**end.model_dump(exclude_none=True), "reported_via": "http"}
    with state.exec_lock:
        row = _row(state, execution_id)
        if row.status != "running":
            raise HTTPException(
                status_code=409,
                detail=f"execution is {row.status}: only a running execution can be ended",
            )
        denied = verifier.denied(execution_id)
        if denied is not None:  # found; its termination is not committed yet
            raise HTTPException(
                status_code=409,
                detail=f"execution is being terminated: {denied.code.value}: {denied.detail}",
            )
        try:
            index = gate.record_execution(RecordType.EXEC_END, execution_id, fields, status="ended")
        except LedgerError as exc:
            raise HTTPException(
                status_code=503, detail=f"exec.end not recorded: {exc.message}"
            ) from None
        verifier.forget(execution_id)
    metrics.executions.labels("ended").inc()
    out = _execution_json(_row(state, execution_id))
    out["end_index"] = index
    return _json(200, out)


@api.get(
    "/v1/lineage/{execution_id}",
    tags=["executions"],
    summary="The chain of parents from an execution to its root",
    response_model=LineageOut,
    responses={404: {"model": Problem}},
)
def get_lineage(state: StateDep, execution_id: ExecutionId) -> JSONResponse:
    """The execution, its parent, its parent's parent, … to the root. Each hop's decision
    is on the ledger at ``decision_index`` (prove it with ``/v1/ledger/proof/{index}``)."""
    gate = state.gate
    row = _row(state, execution_id)
    chain = [row]
    seen = {row.id}
    complete = True
    while row.parent is not None and len(chain) < _MAX_CHAIN:
        parent = gate.ledger.execution(row.parent)
        if parent is None or parent.id in seen:
            complete = False
            break
        chain.append(parent)
        seen.add(parent.id)
        row = parent
    if row.parent is not None and len(chain) >= _MAX_CHAIN:
        complete = False
    return _json(
        200,
        {
            "id": execution_id,
            "chain": [_execution_json(r) for r in chain],
            "complete": complete,
        },
    )
