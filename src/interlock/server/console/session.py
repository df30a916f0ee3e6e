"""Who may look at the console and who may act from it: sessions, CSRF and the public mode.

    # the operator signs in with a capability (pasted once into the page):
    #   interlock token issue --principal spiffe://acme.test/human/ops --right 'admin:Admin::read'
    # POST /console/api/session {"token": "..."} sets an HttpOnly, SameSite=Strict cookie

**Reading** the Governance Console, the Health Dashboard and the Lineage Explorer needs a
capability granting ``admin:Admin::read`` (a read-only credential) or more (``admin:Admin::*``),
checked exactly as the HTTP API's admin endpoints check theirs
(:func:`interlock.server.auth.verify_admin`): signature, holder, expiry, revocation, quarantine.
The token is exchanged once for a session: an opaque 256-bit id in a cookie scoped to
``/console``; the server keeps only its SHA-256 beside the token, and **re-verifies the token on
every request**, so a revoked or expired credential, or a quarantined holder, loses the console
at once, not when the session ends. Sessions last at most 8 hours and end after 1 hour idle.

**Acting** (revoke, quarantine, release, kill switch, approvals) needs the session's token to hold
the admin right of that operation *and* two CSRF defences: the request carries the session's
CSRF token in ``X-Interlock-CSRF`` (a random value the page learns from the session answer, never
from a cookie), and its ``Origin`` (or, without one, ``Referer``) names this server. The cookie is
SameSite=Strict besides, and state-changing routes take only ``application/json`` bodies
(:mod:`interlock.server.guards`), which a cross-site form cannot send.

**Publishing read-only** (``interlock serve --console-public``) is the operator's explicit choice:
the read views then need no credential, and the fields named by ``--console-redact`` are redacted
in every answer (``principal`` becomes a stable pseudonym ``principal:<8 hex>`` keyed by a
per-process secret, so one principal's decisions still group together without being named;
``resource`` likewise; ``args`` withholds request payloads). Acting still needs an admin session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request

from interlock.server.auth import verify_admin
from interlock.server.state import StateDep

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "REDACTABLE",
    "ConsoleConfig",
    "Session",
    "SessionStore",
    "Viewer",
    "ViewerDep",
    "acting",
    "viewer",
]

COOKIE = "interlock_console"
CSRF_HEADER = "X-Interlock-CSRF"
#: what ``--console-redact`` may name
REDACTABLE = frozenset({"principal", "resource", "args"})
MAX_LIFETIME_S = 8 * 3600
IDLE_S = 3600
MAX_SESSIONS = 1000
#: admin operations a session may carry out besides reading
ACTIONS = ("quarantine", "revocation", "kill-switch", "approval", "policy")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """How the read views are published: behind a credential (the default) or public."""

    public: bool = False
    redact: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = set(self.redact) - REDACTABLE
        if unknown:
            raise ValueError(
                f"cannot redact {sorted(unknown)}: choose from {', '.join(sorted(REDACTABLE))}"
            )


@dataclass(slots=True)
class Session:
    token: str
    principal: str
    csrf: str
    created: float
    expires: float
    seen: float


@dataclass(slots=True)
class SessionStore:
    """The console's sessions, in this process's memory (a restart signs everyone out)."""

    sessions: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: keys the pseudonyms of redacted principals and resources
    pseudonym_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def open(self, token: str, principal: str, expires_at: float | None) -> tuple[str, Session]:
        """A new session for a verified ``token``; returns the cookie value and the session."""
        now = time.time()
        limit = now + MAX_LIFETIME_S
        session_id = secrets.token_urlsafe(32)
        session = Session(
            token=token,
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            created=now,
            expires=min(limit, expires_at) if expires_at else limit,
            seen=now,
        )
        with self.lock:
            self.sessions[self._key(session_id)] = session
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value, or None (unknown, expired or idle too long)."""
        if not session_id or len(session_id) > 128:
            return None
        key = self._key(session_id)
        now = time.time()
        with self.lock:
            session = self.sessions.get(key)
            if session is None:
                return None
            if now >= session.expires or now - session.seen > IDLE_S:
                del self.sessions[key]
                return None
            session.seen = now
            self.sessions.move_to_end(key)
            return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            with self.lock:
                self.sessions.pop(self._key(session_id), None)

    def pseudonym(self, kind: str, value: str) -> str:
        mac = hmac.new(self.pseudonym_key, f"{kind}\0{value}".encode(), hashlib.sha256)
        return f"{kind}:{mac.hexdigest()[:8]}"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is reading: a signed-in principal, or anyone when the views are public."""

    principal: str | None
    public: bool
    redact: frozenset[str]
    store: SessionStore
    session: Session | None = None

    def principal_of(self, value: str | None) -> str | None:
        if value is None or "principal" not in self.redact:
            return value
        return self.store.pseudonym("principal", value)

    def resource_of(self, value: Any) -> Any:
        if value is None or "resource" not in self.redact:
            return value
        if isinstance(value, dict):
            rtype = value.get("type")
            return {"type": rtype, "id": self.store.pseudonym("resource", str(value.get("id")))}
        return self.store.pseudonym("resource", str(value))

    @property
    def shows_args(self) -> bool:
        return "args" not in self.redact

    def to_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "public": self.public,
            "redact": sorted(self.redact),
            "csrf": self.session.csrf if self.session is not None else None,
        }


def _console(request: Request) -> tuple[ConsoleConfig, SessionStore]:
    config: ConsoleConfig = request.app.state.console_config
    store: SessionStore = request.app.state.console_sessions
    return config, store


def _session_reads(gate: Gate, session: Session) -> None:
    """Re-verify a session's token for reading, on every request (HTTPException if not)."""
    verify_admin(gate, f"Bearer {session.token}", "read")


def viewer(request: Request, state: StateDep) -> Viewer:
    """The reader of a console view: 401 without a session (unless public), 403 when the
    session's credential no longer verifies (revoked, expired, holder quarantined)."""
    config, store = _console(request)
    session = store.get(request.cookies.get(COOKIE))
    if session is not None:
        try:
            _session_reads(state.gate, session)
        except HTTPException:
            store.close(request.cookies.get(COOKIE))
            if not config.public:
                raise
            session = None
    if session is not None:
        # a signed-in operator sees what their credential allows: redaction is for the public
        return Viewer(session.principal, config.public, frozenset(), store, session)
    if config.public:
        return Viewer(None, True, config.redact, store)
    raise HTTPException(
        status_code=401,
        detail="sign in to the console with a capability granting admin:Admin::read",
    )


ViewerDep = Annotated[Viewer, Depends(viewer)]


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc == host


def acting(request: Request, state: StateDep, operation: str) -> str:
    """Check that ``request`` may carry out admin ``operation`` from the console; return the
    admin principal. 401 without a session; 403 on a missing or wrong CSRF token, a foreign
    origin, or a credential without that admin right (or revoked, expired, quarantined)."""
    _, store = _console(request)
    session = store.get(request.cookies.get(COOKIE))
    if session is None:
        raise HTTPException(status_code=401, detail="sign in to the console with an admin token")
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
    if not _same_origin(request):
        raise HTTPException(status_code=403, detail="cross-origin request refused")
    return verify_admin(state.gate, f"Bearer {session.token}", operation)
