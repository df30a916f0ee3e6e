"""Policy versions, their diff, and the impact of a candidate on recorded decisions.

    GET  /console/api/policies                   the loaded version and every version loaded
    GET  /console/api/policies/{digest}          one version's files (as recorded with it)
    GET  /console/api/policies/diff?a=&b=        a unified diff, file by file
    POST /console/api/policies/impact            which recorded decisions would flip

Every ``policy.loaded`` record on the ledger stores the exact bundle beside it
(``bundle:<digest>``), so any version ever enforced can be shown and compared. A version's files
are re-verified against the home's trusted policy keys when shown (``verified``); one signed by
a key no longer trusted is still shown, marked unverified.

**Impact** re-evaluates the newest recorded pipeline decisions (at most 5,000; their stored
arguments and context) under the base bundle (the loaded one unless named) and under a
candidate: a recorded version, or the base with files edited in the page. It lists the requests
whose policy answer (effect or reason code) differs. The candidate is evaluated, never loaded:
nothing is enforced from here, so it needs no signature; installing a bundle is
``PUT /v1/admin/policy`` with a signed one. Impact runs one at a time (429 while one runs).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import re
import threading
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from interlock.core.model import rfc3339_to_epoch
from interlock.errors import Error, PolicyError
from interlock.policy.bundle import PolicyBundle
from interlock.policy.engine import unsigned_engine
from interlock.policy.testing import diff_engines
from interlock.server.console.api import feed_of
from interlock.server.console.session import ViewerDep
from interlock.server.state import ServerState, StateDep

__all__ = ["api"]

api = APIRouter(prefix="/console/api/policies", tags=["console"])

MAX_IMPACT = 5_000
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_impact_lock = threading.Lock()


class ImpactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    candidate: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    #: path -> new text, applied over the candidate (or the base): the edited files
    files: dict[str, str] | None = Field(default=None, max_length=64)
    limit: int = Field(default=1_000, ge=1, le=MAX_IMPACT)


def _files_of(state: ServerState, digest: str) -> tuple[dict[str, bytes], int | None, bool]:
    """The files of the bundle recorded as ``digest``, its version, and whether it verifies."""
    if not _HEX64.match(digest):
        raise HTTPException(422, "a policy digest is 64 lowercase hex characters")
    try:
        blob = state.gate.ledger.blob(f"bundle:{digest}")
    except Error as exc:
        raise HTTPException(503, f"the ledger cannot be read: {exc.message}") from None
    if blob is None:
        raise HTTPException(404, f"no bundle {digest[:12]}… is recorded on this ledger")
    try:
        bundle = PolicyBundle.from_blob(blob, state.gate.home.trusted_policy_keys())
        return dict(bundle.files), bundle.version, True
    except PolicyError:
        pass
    try:
        obj = json.loads(blob)
        files = {str(p): base64.b64decode(b, validate=True) for p, b in obj["files"].items()}
        version = obj.get("manifest", {}).get("version")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise HTTPException(422, f"bundle {digest[:12]}… is not readable") from None
    return files, version if isinstance(version, int) else None, False


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes, not UTF-8 text>"


def _loaded_digest(state: ServerState) -> str:
    digest = state.gate.snapshot.descriptor.get("policy_digest")
    if not isinstance(digest, str):
        raise HTTPException(503, "no policy bundle is loaded (POLICY_UNAVAILABLE)")
    return digest


@api.get("", summary="Policy versions: the loaded one and every one loaded before")
def versions(request: Request, state: StateDep, viewer: ViewerDep) -> JSONResponse:
    del viewer
    desc = state.gate.snapshot.descriptor
    loaded = feed_of(request).governance("policy.loaded")
    out = [
        {
            "index": index,
            "ts": rec.get("ts"),
            "version": rec.get("policy_version"),
            "digest": rec.get("policy_digest"),
        }
        for index, rec in reversed(loaded)
    ]
    return JSONResponse(
        {
            "loaded": {"version": desc.get("policy_version"), "digest": desc.get("policy_digest")},
            "versions": out,
        },
        headers={"Cache-Control": "no-store"},
    )


@api.get("/diff", summary="What changed between two recorded versions")
def diff(
    state: StateDep,
    viewer: ViewerDep,
    a: Annotated[str, Query(min_length=64, max_length=64)],
    b: Annotated[str, Query(min_length=64, max_length=64)],
) -> JSONResponse:
    """A unified diff of every file that differs between bundles ``a`` and ``b``."""
    del viewer
    old, old_version, _ = _files_of(state, a)
    new, new_version, _ = _files_of(state, b)
    changes = []
    for path in sorted(set(old) | set(new)):
        before = _text(old[path]) if path in old else ""
        after = _text(new[path]) if path in new else ""
        if path in old and path in new and old[path] == new[path]:
            continue
        status = "added" if path not in old else "removed" if path not in new else "changed"
        lines = difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"v{old_version}/{path}",
            tofile=f"v{new_version}/{path}",
        )
        changes.append({"path": path, "status": status, "diff": "".join(lines)})
    return JSONResponse({"a": a, "b": b, "files": changes})


@api.get("/{digest}", summary="One recorded version's files")
def files(state: StateDep, viewer: ViewerDep, digest: str) -> JSONResponse:
    del viewer
    content, version, verified = _files_of(state, digest)
    return JSONResponse(
        {
            "digest": digest,
            "version": version,
            "verified": verified,
            "files": {p: _text(d) for p, d in sorted(content.items())},
        }
    )


def _recorded_requests(
    request: Request, state: ServerState, limit: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(index, recorded effect, request) of the newest ``limit`` pipeline decisions whose
    payload is still stored."""
    out: list[tuple[int, str, dict[str, Any]]] = []
    ledger = state.gate.ledger
    for row in reversed(feed_of(request).rows()):
        if len(out) >= limit:
            break
        if row.stage != "pipeline":
            continue
        try:
            rec = json.loads(ledger.entry(row.index))
            raw = ledger.blob(f"req:{rec['id']}")
        except (Error, ValueError, KeyError):
            continue
        if raw is None:
            continue
        payload = json.loads(raw)
        r = rec["request"]
        out.append(
            (
                row.index,
                row.effect,
                {
                    "principal": r["principal"],
                    "action": r["action"],
                    "resource": r["resource"],
                    "args": payload["args"],
                    "context": payload["context"],
                    "time": rfc3339_to_epoch(rec["ts"]),
                },
            )
        )
    return out


@api.post("/impact", summary="Which recorded decisions a candidate bundle would flip")
def impact(request: Request, state: StateDep, viewer: ViewerDep, body: ImpactIn) -> JSONResponse:
    """Evaluate recorded requests under the base and the candidate (see the module doc)."""
    base_digest = body.base or _loaded_digest(state)
    base, base_version, _ = _files_of(state, base_digest)
    if body.candidate is not None:
        candidate, _, _ = _files_of(state, body.candidate)
    else:
        candidate = dict(base)
    for path, text in (body.files or {}).items():
        if path not in candidate:
            raise HTTPException(422, f"the bundle has no file {path!r} to edit")
        if len(text) > 1 << 20:
            raise HTTPException(413, f"{path} is larger than 1 MiB")
        candidate[path] = text.encode("utf-8")
    if candidate == base:
        raise HTTPException(422, "the candidate is the base bundle: edit a file or pick another")
    if not _impact_lock.acquire(blocking=False):
        raise HTTPException(429, "an impact analysis is running: try again when it ends")
    try:
        try:
            before, after = unsigned_engine(base), unsigned_engine(candidate)
        except PolicyError as exc:
            raise HTTPException(422, f"the candidate does not load: {exc.message}") from None
        recorded = _recorded_requests(request, state, body.limit)
        try:
            rows = diff_engines(before, after, [r for _, _, r in recorded])
        except PolicyError as exc:
            raise HTTPException(422, exc.message) from None
    finally:
        _impact_lock.release()
    changed = []
    for row in rows:
        index, effect, req = recorded[row.index]
        changed.append(
            {
                "index": index,
                "recorded": effect,
                "principal": viewer.principal_of(req["principal"]),
                "action": req["action"],
                "resource": viewer.resource_of(req["resource"]),
                "before": row.before.to_json(),
                "after": row.after.to_json(),
            }
        )
    return JSONResponse(
        {
            "base": {"digest": base_digest, "version": base_version},
            "requests": len(recorded),
            "changed": changed,
        }
    )
