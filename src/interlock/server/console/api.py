"""The Governance Console's data: sessions, the decision stream and history, a decision's
detail, principals, and the operator's actions.

    POST   /console/api/session            {"token": ...}  sign in (sets the session cookie)
    GET    /console/api/session            who is signed in, and the CSRF token
    DELETE /console/api/session            sign out
    GET    /console/api/decisions          history, newest first, filtered, paged by index
    GET    /console/api/stream             server-sent events: decisions as they are recorded
    GET    /console/api/decisions/{index}  one decision in full, with its proof and receipt

Reads need a read session or the public mode (:mod:`.session`); nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from interlock.audit import proof_bundle
from interlock.capability import inspect
from interlock.core.model import format_time
from interlock.errors import CapabilityError, Error
from interlock.server.auth import verify_admin
from interlock.server.console.feed import DecisionFeed, Filters
from interlock.server.console.session import (
    ACTIONS,
    COOKIE,
    MAX_LIFETIME_S,
    SessionStore,
    ViewerDep,
)
from interlock.server.state import ServerState, StateDep
from interlock.trust.receipt import encode_receipt, make_receipt

__all__ = ["api", "feed_of"]

api = APIRouter(prefix="/console/api", tags=["console"])

#: the stream sends at most this many decisions per event, and a keep-alive every 15 s
STREAM_BATCH = 500
KEEPALIVE_S = 15.0


class SessionIn(BaseModel):
    token: str = Field(min_length=1, max_length=16_384)


def feed_of(request: Request) -> DecisionFeed:
    feed: DecisionFeed = request.app.state.console_feed
    return feed


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def _rights(state: ServerState, token: str) -> list[str]:
    granted = []
    for op in ("read", *ACTIONS):
        try:
            verify_admin(state.gate, f"Bearer {token}", op)
        except HTTPException:
            continue
        granted.append(op)
    return granted


@api.post("/session", summary="Sign in to the console with a capability")
def sign_in(request: Request, state: StateDep, body: SessionIn) -> JSONResponse:
    """Exchange a capability granting ``admin:Admin::read`` (or more) for a session cookie."""
    principal = verify_admin(state.gate, f"Bearer {body.token}", "read")
    try:
        expires = inspect(body.token).expires_at
    except CapabilityError:
        expires = None
    session_id, session = _store(request).open(
        body.token, principal, expires.timestamp() if expires else None
    )
    out = {
        "principal": principal,
        "rights": _rights(state, body.token),
        "csrf": session.csrf,
        "public": request.app.state.console_config.public,
        "expires": format_time(datetime.fromtimestamp(session.expires, UTC)),
    }
    response = JSONResponse(out, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=MAX_LIFETIME_S,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@api.get("/session", summary="The console session")
def get_session(state: StateDep, viewer: ViewerDep) -> JSONResponse:
    """Who is reading (null when public and not signed in), their rights, the CSRF token."""
    out = viewer.to_json()
    out["rights"] = _rights(state, viewer.session.token) if viewer.session else []
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@api.delete("/session", summary="Sign out")
def sign_out(request: Request) -> JSONResponse:
    """End the session (no CSRF check: signing out is what an attacker cannot profit from)."""
    _store(request).close(request.cookies.get(COOKIE))
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE, path="/console")
    return response


_Text = Annotated[str | None, Query(max_length=512)]


def _filters(
    principal: str | None,
    action: str | None,
    effect: str | None,
    code: str | None,
    since: str | None,
    until: str | None,
    trace: str | None,
) -> Filters:
    def when(value: str | None, name: str) -> str | None:
        if not value:
            return None
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise HTTPException(422, f"{name} is not an RFC 3339 time: {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return format_time(dt)

    if effect not in (None, "", "allow", "deny"):
        raise HTTPException(422, "effect is allow or deny")
    return Filters(
        principal=principal or None,
        action=action or None,
        effect=effect or None,
        code=code or None,
        since=when(since, "since"),
        until=when(until, "until"),
        trace=trace or None,
    )


def _row_json(viewer: Any, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = row.to_json()
    out["principal"] = viewer.principal_of(row.principal)
    if row.resource is not None and "resource" in viewer.redact:
        out["resource"] = viewer.resource_of(row.resource)
    return out


@api.get("/decisions", summary="Recorded decisions, newest first")
def list_decisions(
    request: Request,
    viewer: ViewerDep,
    principal: _Text = None,
    action: _Text = None,
    effect: _Text = None,
    code: _Text = None,
    since: _Text = None,
    until: _Text = None,
    trace: _Text = None,
    before: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """A page of decisions matching the filters, below ledger index ``before``."""
    feed = feed_of(request)
    if viewer.public and "principal" in viewer.redact and principal:
        principal = None  # a pseudonym cannot be looked up; filter client-side on it instead
    filters = _filters(principal, action, effect, code, since, until, trace)
    rows, next_before = feed.query(filters, before=before, limit=limit)
    return JSONResponse(
        {
            "decisions": [_row_json(viewer, r) for r in rows],
            "next_before": next_before,
            "indexed": {
                "oldest": feed.oldest,
                "size": feed.size,
                "complete": feed.complete,
                "problem": feed.problem,
            },
        },
        headers={"Cache-Control": "no-store"},
    )


@api.get("/stream", summary="Decisions as they are recorded (server-sent events)")
async def stream(
    request: Request,
    viewer: ViewerDep,
    principal: _Text = None,
    action: _Text = None,
    effect: _Text = None,
    code: _Text = None,
    trace: _Text = None,
    after: Annotated[int | None, Query(ge=-1)] = None,
) -> StreamingResponse:
    """``event: decisions`` with a JSON list (oldest first), ``id:`` the last ledger index seen,
    so a reconnecting EventSource resumes from ``Last-Event-ID``. Without ``after`` the stream
    starts at the ledger's current end."""
    feed = feed_of(request)
    filters = _filters(principal, action, effect, code, None, None, trace)
    resume = request.headers.get("last-event-id")
    if resume is not None and resume.isdigit() and len(resume) < 20:
        cursor = int(resume)
    elif after is not None:
        cursor = after
    else:
        cursor = feed.size - 1

    async def events() -> AsyncIterator[bytes]:
        nonlocal cursor
        yield b"retry: 2000\n\n"
        last_sent = time.monotonic()
        while not await request.is_disconnected():
            rows, new_cursor = feed.after(cursor, filters, limit=STREAM_BATCH)
            if rows:
                body = json.dumps([_row_json(viewer, r) for r in rows], separators=(",", ":"))
                yield f"id: {new_cursor}\nevent: decisions\ndata: {body}\n\n".encode()
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent > KEEPALIVE_S:
                yield b": keep-alive\n\n"
                last_sent = time.monotonic()
            moved = new_cursor != cursor
            cursor = new_cursor
            if not moved:
                await asyncio.sleep(0.1)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _blob_json(state: ServerState, key: str) -> Any:
    try:
        blob = state.gate.ledger.blob(key)
    except Error:
        return None
    if blob is None:
        return None
    try:
        return json.loads(blob)
    except ValueError:
        return None


@api.get("/decisions/{index}", summary="One recorded decision, with its proof and receipt")
def get_decision(
    state: StateDep, viewer: ViewerDep, index: Annotated[int, Path(ge=0, le=2**53)]
) -> JSONResponse:
    """The record at ledger ``index`` as the log holds it, the request payload (arguments and
    context, unless redacted), the capability chain of the token it presented (unverified
    facts: who issued and attenuated it, its rights and expiry), the policy snapshot it was
    decided under, its lineage, a C2SP ``tlog-proof@v1`` with the entry's bytes and a DSSE
    receipt. Verify the proof in the Proof Viewer: nothing here asks you to trust this server.
    """
    gate = state.gate
    size = gate.ledger.size()
    if index >= size:
        raise HTTPException(404, f"no entry at index {index} (the log has {size})")
    data = gate.ledger.entry(index)
    record = json.loads(data)
    if not isinstance(record, dict) or record.get("type") != "decision":
        raise HTTPException(404, f"entry {index} is not a decision")
    shown = json.loads(data)
    req = shown.get("request") or {}
    if "principal" in req:
        req["principal"] = viewer.principal_of(req["principal"])
    if "resource" in req:
        req["resource"] = viewer.resource_of(req["resource"])
    payload = _blob_json(state, f"req:{record.get('id')}")
    chain = _chain(viewer, payload)
    if isinstance(payload, dict):
        payload.pop("capability", None)  # the token itself is a bearer secret: never shown
    if not viewer.shows_args:
        payload = None
    snapshot = record.get("snapshot")
    policy = _blob_json(state, f"snapshot:{snapshot}") if isinstance(snapshot, str) else None
    try:
        proof: str | None = proof_bundle(gate.ledger, index)
    except Error:
        proof = None
    try:
        receipt: str | None = encode_receipt(
            make_receipt(
                data,
                signer=gate.home.private_key("node"),
                ledger_index=index,
                log_origin=gate.home.config.origin,
            )
        )
    except Error:
        receipt = None
    return JSONResponse(
        {
            "index": index,
            "leaf_hash": gate.ledger.leaf_hash_at(index).hex(),
            "record": shown,
            "request": payload,
            "capability": chain,
            "policy": policy,
            "lineage": _lineage(state, record),
            "proof": proof,
            "receipt": receipt,
            "vkey": gate.vkey,
        },
        headers={"Cache-Control": "no-store"},
    )


def _chain(viewer: Any, payload: Any) -> dict[str, Any] | None:
    """What the presented token says (its blocks, rights, delegations, expiry, revocation
    ids), read without verifying: the gate verified it when it decided, and the record holds
    the token's digest. The token itself is never shown (a bearer secret)."""
    token = payload.get("capability") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        return None
    try:
        info = inspect(token).to_json()
    except CapabilityError:
        return {"unreadable": True}
    info["principal"] = viewer.principal_of(info.get("principal"))
    info["delegated_to"] = [viewer.principal_of(p) for p in info.get("delegated_to", [])]
    if not viewer.shows_args:
        info.pop("blocks", None)
    return info


def _lineage(state: ServerState, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The decision's ancestors, nearest first, from the execution table (at most 64)."""
    out: list[dict[str, Any]] = []
    parent = record.get("parent")
    seen: set[str] = set()
    while isinstance(parent, str) and parent not in seen and len(out) < 64:
        seen.add(parent)
        try:
            row = state.gate.ledger.execution(parent)
        except Error:
            break
        if row is None:
            out.append({"id": parent, "index": None, "status": "unknown"})
            break
        out.append({"id": parent, "index": row.idx, "status": row.status})
        parent = row.parent
    return out
