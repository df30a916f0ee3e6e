"""Admin endpoints: quarantine, revocation, kill switch, approval checks, policy upload.

    >>> # curl -s -H "Authorization: Bearer $ADMIN" -X POST .../v1/admin/kill-switch \\
    >>> #      -d '{"on": true, "reason": "incident 42"}'

Each requires an admin capability for its operation (:mod:`interlock.server.auth`): 401 without
one, 403 with one that does not hold — and then nothing changes. What an admin changes is
recorded by the gate as a node-signed governance record (``principal.quarantined``,
``capability.revoked``, ``kill_switch.on``, ``policy.loaded``, …); the record's ``reason`` ends
with the admin principal that asked, so the ledger says who did it.

A policy upload is the bundle blob (``PolicyBundle.to_blob()``: manifest, signature and files,
base64). It is verified against the home's trusted policy keys *before* anything is written;
only then is it written to a sibling folder, verified again from disk, swapped in for
``<home>/policy`` in one atomic exchange (file by file, manifest last, where the platform has no
atomic exchange: see :mod:`interlock.server.swap`) and loaded (the gate records
``policy.loaded``). A bundle that does not verify, or whose version does not increase, changes
nothing (422/409); one that cannot be loaded is swapped back out (503).

Every change that can end an authorization wakes the execution verifier
(:mod:`interlock.server.verifier`), so HTTP-started executions it ends are terminated at once.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from interlock.capability import revocation_ids
from interlock.core.canonical import canonical_bytes
from interlock.core.model import is_spiffe_id
from interlock.errors import CapabilityError, Error, LedgerError, PolicyError, VerificationError
from interlock.policy.bundle import MANIFEST_FILE, SIGNATURE_FILE, PolicyBundle, load_bundle
from interlock.server import swap
from interlock.server.auth import verify_admin
from interlock.server.problems import unprocessable
from interlock.server.schemas import (
    ApprovalCheckIn,
    ApprovalCheckOut,
    GovernanceOut,
    KillSwitchIn,
    PolicyInstalled,
    Problem,
    QuarantineIn,
    RevocationIn,
)
from interlock.server.state import ServerState, StateDep
from interlock.trust.approval import verify_approval

__all__ = ["api", "attributed", "recorded"]

_log = logging.getLogger("interlock.server")

#: a policy upload (bundle blob, files base64) may be this large; see app.py's BodyLimit
MAX_POLICY_BYTES = 4 * 1024 * 1024
_HEX_RE_CHARS = frozenset("0123456789abcdef")

_bearer = HTTPBearer(auto_error=False, description="a capability with an 'admin' right")
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no Bearer capability"},
    403: {"model": Problem, "description": "the capability is not an admin one for this"},
    503: {"model": Problem, "description": "the change could not be recorded (nothing changed)"},
}


class PolicyBlobIn(BaseModel):
    """A signed bundle as ``PolicyBundle.to_blob()`` writes it."""

    model_config = ConfigDict(extra="forbid")

    v: int
    manifest: dict[str, Any]
    signature: dict[str, str]
    files: dict[str, str]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _is_spiffe_id(value: str) -> bool:
    # is_spiffe_id's pattern ends with "$", which also matches before a final newline
    return is_spiffe_id(value) and not value.endswith("\n")


def _header(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else f"{credentials.scheme} {credentials.credentials}"


def attributed(reason: str, principal: str, via: str = "the HTTP API") -> str:
    """The recorded reason of an admin change: the operator's words, then who, and how."""
    return f"{reason} [by {principal} via {via}]"


def _write_file(path: Path, data: bytes) -> None:
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())  # on disk before it is renamed into the live folder


def _write_folder(directory: Path, bundle: PolicyBundle) -> None:
    directory.mkdir(mode=0o700)
    for rel, data in bundle.files.items():
        path = directory.joinpath(*rel.split("/"))  # paths were checked by Manifest
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_file(path, data)
    _write_file(directory / MANIFEST_FILE, bundle.manifest.to_bytes())
    sig = {"key": bundle.signer, "sig": base64.b64encode(bundle.signature).decode("ascii")}
    _write_file(directory / SIGNATURE_FILE, canonical_bytes(sig))


def _swap_in(staged: Path, live: Path, backup: Path) -> Callable[[bool], None]:
    """Put the verified folder ``staged`` in place of ``live`` so that a reader never finds the
    policy folder missing or half-written (see :mod:`interlock.server.swap`); return ``done``:
    ``done(True)`` puts the previous folder back, ``done(False)`` discards it.

    Raises:
        HTTPException: 503 when nothing could be swapped in (``live`` is unchanged).
    """

    def failed(exc: OSError) -> HTTPException:
        return HTTPException(status_code=503, detail=f"bundle not installed: {exc.strerror}")

    if not live.exists():  # no folder yet: one rename creates it whole
        try:
            os.rename(staged, live)
        except OSError as exc:
            swap.remove(staged)
            raise failed(exc) from None
        return lambda undo: swap.remove(live) if undo else None
    try:
        swap.exchange(staged, live)  # one step; the previous folder is now at `staged`
    except OSError:
        pass
    else:

        def done_exchanged(undo: bool) -> None:
            if undo:
                try:
                    swap.exchange(staged, live)
                except OSError:
                    _log.error("could not put the previous policy folder back from %s", staged)
                    return
            swap.remove(staged)

        return done_exchanged
    # no atomic exchange here: replace file by file, the signed manifest last (a reader may see
    # a mix for a moment, which the loader refuses; never a half-written bundle as valid)
    try:
        shutil.copytree(live, backup, symlinks=True)
    except OSError as exc:
        swap.remove(backup)
        swap.remove(staged)
        raise failed(exc) from None
    try:
        swap.replace_contents(staged, live)
    except OSError as exc:
        _restore(backup, live)
        swap.remove(staged)
        raise failed(exc) from None
    swap.remove(staged)

    def done_replaced(undo: bool) -> None:
        if undo:
            _restore(backup, live)
        swap.remove(backup)

    return done_replaced


def _restore(backup: Path, live: Path) -> None:
    """Put the copy ``backup`` back into ``live`` file by file (the copy is kept)."""
    scratch = backup.with_name(backup.name + "-restore")
    try:
        shutil.copytree(backup, scratch, symlinks=True)
        swap.replace_contents(scratch, live)
    except OSError:
        _log.error("could not restore the previous policy folder from %s", backup)
    finally:
        swap.remove(scratch)


api = APIRouter(tags=["admin"])


def _admin(
    state: ServerState, credentials: HTTPAuthorizationCredentials | None, operation: str
) -> str:
    gate = state.gate
    metrics = state.metrics
    try:
        return verify_admin(gate, _header(credentials), operation)
    except HTTPException:
        metrics.admin.labels(operation, "refused").inc()
        raise


def recorded(
    state: ServerState, operation: str, event: str, change: Callable[[], int]
) -> JSONResponse:
    """Carry out an admin ``change`` (it returns the ledger index of its record), count it,
    and wake the execution verifier; 503 if it could not be recorded (then nothing changed)."""
    metrics = state.metrics
    try:
        index = change()
    except LedgerError as exc:
        metrics.admin.labels(operation, "failed").inc()
        raise HTTPException(
            status_code=503, detail=f"not recorded, nothing changed: {exc.message}"
        ) from None
    metrics.admin.labels(operation, "done").inc()
    state.verifier.poke()  # re-verify the running executions now
    return JSONResponse({"ledger_index": index, "event": event})


@api.post(
    "/v1/admin/quarantine",
    summary="Quarantine a principal",
    response_model=GovernanceOut,
    responses=_AUTH,
)
def quarantine(state: StateDep, body: QuarantineIn, credentials: Credentials) -> JSONResponse:
    """Every request of ``principal`` is then denied PRINCIPAL_QUARANTINED, and its
    supervised runs are terminated."""
    gate = state.gate
    who = _admin(state, credentials, "quarantine")
    if not _is_spiffe_id(body.principal):
        raise unprocessable(("body", "principal"), "not a SPIFFE ID")
    return recorded(
        state,
        "quarantine",
        "principal.quarantined",
        lambda: gate.quarantine(body.principal, attributed(body.reason, who), on=True),
    )


@api.delete(
    "/v1/admin/quarantine",
    summary="Release a quarantined principal",
    response_model=GovernanceOut,
    responses=_AUTH,
)
def release(
    state: StateDep,
    principal: Annotated[str, Query(min_length=1, max_length=2048)],
    reason: Annotated[str, Query(min_length=1, max_length=1000, pattern=r"\S")],
    credentials: Credentials,
) -> JSONResponse:
    """Release ``principal`` (a SPIFFE ID, URL-encoded in the query)."""
    gate = state.gate
    who = _admin(state, credentials, "quarantine")
    if not _is_spiffe_id(principal):
        raise unprocessable(("query", "principal"), "not a SPIFFE ID")
    return recorded(
        state,
        "quarantine",
        "principal.released",
        lambda: gate.quarantine(principal, attributed(reason, who), on=False),
    )


@api.post(
    "/v1/admin/revocations",
    summary="Revoke a capability token (and every token attenuated from it)",
    response_model=GovernanceOut,
    responses=_AUTH,
)
def revoke(state: StateDep, body: RevocationIn, credentials: Credentials) -> JSONResponse:
    """Give the ``token`` (all its blocks' revocation ids are revoked) or explicit hex
    ``revocation_ids``. Effective on this node at once, on others within 100 ms."""
    gate = state.gate
    who = _admin(state, credentials, "revocation")
    ids: list[str] = []
    if body.token is not None:
        try:
            ids.extend(revocation_ids(body.token))
        except CapabilityError as exc:
            raise unprocessable(("body", "token"), exc.message) from None
    for rid in body.revocation_ids or ():
        if not rid or len(rid) > 256 or not set(rid) <= _HEX_RE_CHARS:
            raise unprocessable(("body", "revocation_ids"), "not a lowercase hex string")
        ids.append(rid)
    if not ids:
        raise unprocessable(("body",), "give 'token' or 'revocation_ids'")
    unique = tuple(dict.fromkeys(ids))
    return recorded(
        state,
        "revocation",
        "capability.revoked",
        lambda: gate.revoke(unique, reason=attributed(body.reason, who)),
    )


@api.post(
    "/v1/admin/kill-switch",
    summary="Turn the kill switch on or off",
    response_model=GovernanceOut,
    responses=_AUTH,
)
def kill_switch(state: StateDep, body: KillSwitchIn, credentials: Credentials) -> JSONResponse:
    """While on, every action is denied (POLICY_FORBID, policy ``kill-switch``), every
    supervised run is terminated, and ``/readyz`` is 503."""
    gate = state.gate
    who = _admin(state, credentials, "kill-switch")
    event = "kill_switch.on" if body.on else "kill_switch.off"
    return recorded(
        state, "kill-switch", event, lambda: gate.kill_switch(body.on, attributed(body.reason, who))
    )


@api.post(
    "/v1/admin/approvals",
    summary="Check a signed human approval against this node's trusted approvers",
    response_model=ApprovalCheckOut,
    responses=_AUTH,
)
def check_approval(
    state: StateDep, body: ApprovalCheckIn, credentials: Credentials
) -> JSONResponse:
    """Whether ``approval`` approves the request with ``request_digest`` *now*: signed by a
    trusted approver key, for that exact digest, unexpired. Changes nothing: the approval
    itself travels in the request's ``approval`` field."""
    gate = state.gate
    metrics = state.metrics
    _admin(state, credentials, "approval")
    try:
        verify_approval(
            body.approval,
            digest=body.request_digest,
            trusted=tuple(gate.snapshot.approvers),
            now=int(time.time()),
        )
    except VerificationError as exc:
        metrics.admin.labels("approval", "done").inc()
        return JSONResponse({"valid": False, "detail": exc.message})
    metrics.admin.labels("approval", "done").inc()
    return JSONResponse({"valid": True, "detail": "the approval verifies for this request"})


def _install(state: ServerState, blob: bytes) -> dict[str, Any]:
    gate = state.gate
    home = gate.home
    trusted = home.trusted_policy_keys()
    loaded = gate.snapshot.descriptor
    current_version = int(loaded.get("policy_version") or 0)
    current_digest = loaded.get("policy_digest")
    try:
        bundle = PolicyBundle.from_blob(blob, trusted)
    except PolicyError as exc:
        raise unprocessable(("body",), exc.message) from None
    if bundle.digest == current_digest:
        return {"version": bundle.version, "digest": bundle.digest, "changed": False}
    if bundle.version <= current_version:
        raise HTTPException(
            status_code=409,
            detail=f"bundle version {bundle.version} does not increase on the loaded "
            f"version {current_version} (policy versions never go backwards)",
        )
    tag = secrets.token_hex(6)
    staged = home.path / f".policy-upload-{tag}"
    live = home.policy_dir
    try:
        _write_folder(staged, bundle)
        # verified again as the gate will read it: from the folder
        on_disk = load_bundle(staged, trusted, min_version=current_version)
        if on_disk.digest != bundle.digest:
            raise PolicyError("the written bundle does not read back identically")
    except (OSError, PolicyError) as exc:
        swap.remove(staged)
        why = exc.message if isinstance(exc, Error) else str(exc)
        raise HTTPException(status_code=503, detail=f"bundle not installed: {why}") from None
    undo = _swap_in(staged, live, home.path / f".policy-previous-{tag}")
    try:
        gate.reload_policy()
        installed = gate.snapshot.descriptor.get("policy_digest") == bundle.digest
    except Error:
        installed = False
    if not installed:
        # put the previous folder back; the gate still holds the previous bundle
        undo(True)
        raise HTTPException(
            status_code=503,
            detail="the bundle verified but could not be loaded and recorded; nothing changed",
        )
    undo(False)
    return {"version": bundle.version, "digest": bundle.digest, "changed": True}


@api.put(
    "/v1/admin/policy",
    summary="Upload and load a signed policy bundle",
    response_model=PolicyInstalled,
    responses={**_AUTH, 409: {"model": Problem}},
)
def put_policy(state: StateDep, body: PolicyBlobIn, credentials: Credentials) -> JSONResponse:
    """The bundle must be signed by a trusted policy key and have a higher version than the
    loaded one (the same bundle again is 200 with ``changed: false``). Produce the body
    with ``interlock.policy.bundle.load_bundle(folder, keys).to_blob()``."""
    metrics = state.metrics
    _admin(state, credentials, "policy")
    blob = json.dumps(body.model_dump(), separators=(",", ":")).encode("utf-8")
    with state.policy_lock:
        try:
            result = _install(state, blob)
        except RequestValidationError:
            metrics.admin.labels("policy", "refused").inc()
            raise
        except HTTPException as exc:
            outcome = "failed" if exc.status_code >= 500 else "refused"
            metrics.admin.labels("policy", outcome).inc()
            raise
    metrics.admin.labels("policy", "done").inc()
    state.verifier.poke()
    return JSONResponse(result)
