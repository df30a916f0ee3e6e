"""The Runtime Governance Demo's routes: no credential, and never the node's home.

    GET    /console/api/demo/scenarios                 scenarios, switches and stages
    POST   /console/api/demo/sessions        {}        a throwaway home → {"id": ...}
    POST   /console/api/demo/sessions/{id}/runs        {"scenario": ..., "switches": {...}}
    POST   /console/api/demo/sessions/{id}/reset {}    a new throwaway home under the same id
    DELETE /console/api/demo/sessions/{id}             remove it

A session is a :class:`~interlock.server.console.sandbox.Sandbox` — a real home with its own
keys, signed policy and ledger in a private temporary folder — named by an unguessable id.
A run answers the stage-by-stage trace of one request through a real gate on it
(:meth:`Sandbox.run`). Nothing here reads ``request.app.state.interlock``: the serving node's
gate, home and ledger are out of reach.

Bounds, because anyone may call these: at most :data:`MAX_HOMES` homes per server (a new one
evicts the least recently used home idle for :data:`EVICT_IDLE_S`, else 429), each removed
after :data:`IDLE_S` idle, :data:`CREATE_BURST` new homes at once then one per
:data:`CREATE_EVERY_S` per server, :data:`RUN_BURST` requests at once then one per
:data:`RUN_EVERY_S` per session (429 past them), one run at a time per session (409), bodies
validated with unknown fields refused (422). :func:`close_all` removes every home when the app
stops.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, StrictBool

from interlock.errors import Error, error_detail
from interlock.server.console.sandbox import SCENARIOS, STAGES, SWITCHES, Sandbox, Switches

__all__ = ["api", "close_all"]

_log = logging.getLogger("interlock.server")

api = APIRouter(prefix="/console/api/demo", tags=["console"])

#: at most this many throwaway homes per server
MAX_HOMES = 4
#: a home idle this long is removed
IDLE_S = 600.0
#: a new home may evict the least recently used one only once it has been idle this long
EVICT_IDLE_S = 60.0
#: new homes (and resets) per server: a burst, then one per interval
CREATE_BURST = 8
CREATE_EVERY_S = 10.0
#: requests per session: a burst, then one per interval
RUN_BURST = 10
RUN_EVERY_S = 2.0
#: how often idle homes are looked for
SWEEP_S = 15.0

_ID_PATTERN = r"^[A-Za-z0-9_-]{32}$"
SessionId = Annotated[str, Path(min_length=32, max_length=32, pattern=_ID_PATTERN)]
ScenarioId = Literal[
    "allowed", "sub-agent", "forbidden", "no-permit", "denied-parent", "expired", "malformed"
]


class EmptyIn(BaseModel):
    """The body of a create or reset: ``{}`` (a JSON body, so a cross-site form cannot post)."""

    model_config = ConfigDict(extra="forbid")


class SwitchesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    revoke: StrictBool = False
    stale_policy: StrictBool = False
    locked_ledger: StrictBool = False
    changed_config: StrictBool = False


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: ScenarioId
    switches: SwitchesIn = SwitchesIn()


@dataclass
class _Bucket:
    """A token bucket: ``burst`` at once, then one per ``every`` seconds."""

    burst: int
    every: float
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is due."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.every)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) * self.every


@dataclass
class _Session:
    sandbox: Sandbox
    last_used: float
    bucket: _Bucket = field(default_factory=lambda: _Bucket(RUN_BURST, RUN_EVERY_S))
    busy: threading.Lock = field(default_factory=threading.Lock)


class DemoHomes:
    """The server's throwaway homes by id, with their bounds. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._create = _Bucket(CREATE_BURST, CREATE_EVERY_S)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self) -> tuple[str, Sandbox]:
        """A new throwaway home and its id.

        Raises:
            HTTPException: 429 (too many homes, or made too fast), 503 (it could not be made).
        """
        now = time.monotonic()
        evicted: _Session | None = None
        with self._lock:
            self._take_create(now)
            if len(self._sessions) >= MAX_HOMES:
                evicted = self._evict(now)
        if evicted is not None:
            evicted.sandbox.remove()
        try:
            sandbox = Sandbox.create()
        except Exception as exc:  # a server handler boundary: a JSON answer, no traceback
            _log.warning("demo: a home could not be made: %s", error_detail(exc))
            raise HTTPException(
                503, f"the demo could not make a throwaway home: {error_detail(exc)}"
            ) from exc
        sid = secrets.token_urlsafe(24)
        with self._lock:
            if len(self._sessions) >= MAX_HOMES or self._stop.is_set():
                sandbox.remove()  # another request took the last place meanwhile
                raise HTTPException(429, self._full_message())
            self._sessions[sid] = _Session(sandbox, time.monotonic())
            self._start_sweeper()
        return sid, sandbox

    def take_create(self) -> None:
        """Count a new home against the server's creation rate.

        Raises:
            HTTPException: 429, too fast.
        """
        with self._lock:
            self._take_create(time.monotonic())

    def _take_create(self, now: float) -> None:
        wait = self._create.take(now)
        if wait:
            raise HTTPException(
                429,
                f"demo homes are being made too fast on this server; try again in {wait:.0f} s",
                headers={"Retry-After": str(max(1, round(wait)))},
            )

    def _evict(self, now: float) -> _Session:
        """Remove and return the least recently used home idle for EVICT_IDLE_S (under the
        lock). Raises HTTPException 429 when there is none."""
        idle = [
            (s.last_used, sid)
            for sid, s in self._sessions.items()
            if now - s.last_used >= EVICT_IDLE_S and not s.busy.locked()
        ]
        if not idle:
            raise HTTPException(429, self._full_message(), headers={"Retry-After": "60"})
        _, sid = min(idle)
        return self._sessions.pop(sid)

    def _full_message(self) -> str:
        return (
            f"the demo is busy: this server keeps at most {MAX_HOMES} throwaway homes and all are"
            f" in use; one is freed after {EVICT_IDLE_S:.0f} s without use. Try again shortly."
        )

    def use(self, sid: str) -> _Session:
        """The session ``sid``, marked used, if its rate allows.

        Raises:
            HTTPException: 404 (unknown or expired), 429 (too many requests).
        """
        now = time.monotonic()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                raise HTTPException(
                    404,
                    "no such demo session: it expired (10 minutes without use), was removed or"
                    " never existed; create a new one",
                )
            wait = session.bucket.take(now)
            if wait:
                raise HTTPException(
                    429,
                    f"too many demo requests for this session; try again in {wait:.0f} s",
                    headers={"Retry-After": str(max(1, round(wait)))},
                )
            session.last_used = now
            return session

    def delete(self, sid: str) -> bool:
        """Remove ``sid``'s home; False if there was none. A running request finishes first."""
        with self._lock:
            session = self._sessions.pop(sid, None)
        if session is None:
            return False
        with session.busy:
            session.sandbox.remove()
        return True

    def discard(self, sid: str) -> None:
        """Forget ``sid`` without waiting for it (its home is already removed)."""
        with self._lock:
            self._sessions.pop(sid, None)

    def sweep(self, now: float | None = None) -> list[str]:
        """Remove every home idle for IDLE_S; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [
                sid
                for sid, s in self._sessions.items()
                if now - s.last_used >= IDLE_S and not s.busy.locked()
            ]
            gone = [self._sessions.pop(sid) for sid in stale]
        for session in gone:
            session.sandbox.remove()
        return stale

    def _start_sweeper(self) -> None:
        if self._sweeper is not None:
            return

        def sweep() -> None:
            while not self._stop.wait(SWEEP_S):
                try:
                    self.sweep()
                except Exception as exc:  # noqa: BLE001 - a watcher boundary: log, go on
                    _log.warning("demo: sweeping idle homes failed: %s", error_detail(exc))

        self._sweeper = threading.Thread(target=sweep, name="interlock-demo-sweep", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper and remove every home (waiting for a running request)."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            with session.busy:
                session.sandbox.remove()


_registry_lock = threading.Lock()


def homes_of(app: FastAPI) -> DemoHomes:
    """The app's demo homes (made on first use)."""
    with _registry_lock:
        homes: DemoHomes | None = getattr(app.state, "console_demo", None)
        if homes is None:
            homes = DemoHomes()
            app.state.console_demo = homes
        return homes


def close_all(app: FastAPI) -> None:
    """Remove every demo home this app made (called when the app stops). Never raises."""
    homes: DemoHomes | None = getattr(app.state, "console_demo", None)
    if homes is not None:
        homes.close()


def _homes(request: Request) -> DemoHomes:
    return homes_of(request.app)


@api.get("/scenarios", summary="The demo's scenarios, switches and pipeline stages")
def scenarios() -> dict[str, Any]:
    """What the page offers: no credential needed, nothing is made."""
    return {
        "scenarios": [s.to_json() for s in SCENARIOS.values()],
        "switches": [{"id": i, "label": label, "description": d} for i, label, d in SWITCHES],
        "stages": [{"id": i, "label": label, "checks": c} for i, label, c in STAGES],
    }


@api.post("/sessions", status_code=201, summary="Make a throwaway demo home")
def create_session(request: Request, body: EmptyIn) -> dict[str, Any]:
    """A new throwaway home (own keys, signed policy, tokens) and its unguessable id."""
    del body
    sid, _ = _homes(request).create()
    return {"id": sid, "idle_timeout_s": IDLE_S}


@api.post("/sessions/{sid}/runs", summary="Run a scenario in a demo home")
def run(request: Request, sid: SessionId, body: RunIn) -> dict[str, Any]:
    """Send the scenario's request through a real gate on the session's home with the
    switches flipped; answer the stage-by-stage trace (see :meth:`Sandbox.run`)."""
    session = _homes(request).use(sid)
    if not session.busy.acquire(blocking=False):
        raise HTTPException(409, "a run is already in progress in this demo session")
    try:
        switches = Switches(**body.switches.model_dump())
        return session.sandbox.run(body.scenario, switches)
    except (Error, OSError) as exc:
        _log.warning("demo: a run failed: %s", error_detail(exc))
        raise HTTPException(503, f"the demo run failed: {error_detail(exc)}") from exc
    except Exception as exc:  # a server handler boundary: a JSON answer, no traceback
        _log.error("demo: a run failed unexpectedly: %s", error_detail(exc))
        raise HTTPException(500, "the demo run failed: internal error") from exc
    finally:
        session.busy.release()


@api.post("/sessions/{sid}/reset", summary="Start a demo home over")
def reset(request: Request, sid: SessionId, body: EmptyIn) -> dict[str, Any]:
    """Replace the session's home with a new one (new keys, an empty ledger)."""
    del body
    homes = _homes(request)
    session = homes.use(sid)
    homes.take_create()
    if not session.busy.acquire(blocking=False):
        raise HTTPException(409, "a run is in progress in this demo session")
    try:
        session.sandbox.reset()
    except (Error, OSError) as exc:
        homes.discard(sid)  # its folder is already gone (Sandbox.reset)
        raise HTTPException(
            503, f"the demo could not make a throwaway home: {error_detail(exc)}"
        ) from exc
    finally:
        session.busy.release()
    return {"id": sid, "idle_timeout_s": IDLE_S}


@api.delete("/sessions/{sid}", status_code=204, summary="Remove a demo home")
def delete_session(request: Request, sid: SessionId) -> Response:
    """Remove the session's home now."""
    if not _homes(request).delete(sid):
        raise HTTPException(404, "no such demo session")
    return Response(status_code=204)
