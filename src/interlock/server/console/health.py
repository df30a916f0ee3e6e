"""The Infrastructure Health Dashboard's data: every node's state, and decisions, denials and
decision latency over time.

    GET /console/api/health/nodes    this node, live, and on a fleet every node's heartbeat
    GET /console/api/health/series   decision and denial rates by reason code, and latency
                                     percentiles, in buckets over a recent window

    # the page polls both every 2 s:
    #   curl -s -b "interlock_console=$SESSION" .../console/api/health/nodes
    #   {"role": "embedded", "nodes": [{"this": true, "state": "ready", ...}], ...}

Reads need a read session or the public mode (:mod:`.session`); nothing here decides or
changes anything. Where each figure comes from:

- **This node** is computed at each request by the functions behind ``/healthz`` and
  ``/readyz`` (:func:`interlock.server.routes.health.summary`,
  :meth:`~interlock.server.state.ServerState.not_ready`): it is *fail-closed* when
  ``not_ready()`` gives any reason — every answer of the node is then a deny, with the DESIGN
  §3 code the reason starts with. Checkpoint age is the age of the log's newest signed
  checkpoint; attestation is the gate's own (:meth:`~interlock.engine.GateCore.attestation`).
- **Other fleet nodes** are what they last wrote in the shared log's node registry
  (:meth:`interlock.ledger.protocols.Fleet.nodes`, as ``interlock nodes`` shows them): their
  state *as recorded* at their last heartbeat, and how long ago that was. A node silent for
  more than :data:`SILENT_S` is flagged: what it recorded may no longer be true.
- **Rates** are counted from the ledger itself, through the console's decision index
  (:class:`~interlock.server.console.feed.DecisionFeed`): every recorded decision, by its
  timestamp and first reason code — on a fleet, the decisions of every node on the shared log.
  Counts are kept per :data:`BASE_S` bucket for :data:`MAX_WINDOW_S` and updated
  incrementally from the index at each request (only new rows are read).
- **Latency** is *this node's* decision latency over HTTP: the Prometheus histogram
  ``interlock_decision_seconds`` (the one ``/metrics`` exports), sampled every :data:`BASE_S`
  by a :class:`~.health_sampler.Sampler` thread; a bucket's percentiles are estimated from the
  difference of two samples as Prometheus's ``histogram_quantile`` does (linear within a
  histogram bucket, so no finer than the histogram's bounds). The same sampler records the
  ledger size, for growth.

The sampler starts with the app (:func:`start`, :func:`close` from the app's lifespan) or, at
the latest, at the first request here.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from interlock.core.model import ReasonCode, format_time, rfc3339_to_epoch
from interlock.errors import Error, error_detail
from interlock.ledger.protocols import Fleet, NodeRow
from interlock.server.console.feed import DecisionFeed, Filters, Row
from interlock.server.console.health_sampler import BASE_S, MAX_WINDOW_S, PERCENTILES, Sampler
from interlock.server.console.session import ViewerDep
from interlock.server.routes.health import summary
from interlock.server.state import ServerState, StateDep

__all__ = [
    "SILENT_S",
    "Rates",
    "api",
    "close",
    "start",
]

api = APIRouter(prefix="/console/api/health", tags=["console"])

#: a fleet node whose heartbeat is older than this is flagged silent (as ``interlock nodes``)
SILENT_S = 10.0
#: rows read from the decision index per call while catching up
_CHUNK = 5_000
_CODES = frozenset(c.value for c in ReasonCode)
#: what a recorded code outside DESIGN §3 is counted as (the index bounds what it keeps)
OTHER = "OTHER"
_ALL = Filters()


# -- rates: counted from the decision index --------------------------------------------------


def _key(row: Row) -> str:
    """What a row is counted as: ``allow``, or the code of its denial."""
    if row.effect == "allow":
        return "allow"
    code = row.code or "none"
    return code if code in _CODES or code == "none" else OTHER


class Rates:
    """Decisions per :data:`BASE_S` bucket and outcome (``allow`` or the reason code of the
    denial), over the last ``horizon_s`` seconds of a :class:`DecisionFeed`.

    :meth:`update` reads only what it has not counted: new rows above the highest index it
    counted, and, while the index is still backfilling history, older rows below the lowest,
    back to the horizon. Records carry the node's clock, which the log keeps from going
    backwards (DESIGN I8), so reading newest-first can stop at the first row older than the
    horizon.
    """

    def __init__(self, horizon_s: int = MAX_WINDOW_S) -> None:
        self.horizon_s = horizon_s
        self._counts: dict[int, dict[str, int]] = {}
        self._hi: int | None = None
        self._lo = 0
        self._lo_done = False
        self._lock = threading.Lock()

    def _add(self, row: Row, horizon: float) -> bool:
        """Count ``row``; False when it is older than ``horizon`` (and not counted)."""
        try:
            t = rfc3339_to_epoch(row.ts)
        except ValueError:
            return True  # unparsable: the ledger's verification judges it, not this view
        if t < horizon:
            return False
        bucket = self._counts.setdefault(t - t % BASE_S, {})
        key = _key(row)
        bucket[key] = bucket.get(key, 0) + 1
        return True

    def update(self, feed: DecisionFeed, now: float) -> None:
        """Count what ``feed`` indexed since the last call. Raises nothing of its own."""
        horizon = now - self.horizon_s
        with self._lock:
            if self._hi is None:
                newest, _ = feed.query(_ALL, before=None, limit=1)
                if not newest:
                    return
                self._hi = newest[0].index
                self._lo = self._hi + 1
            while True:
                rows, cursor = feed.after(self._hi, _ALL, limit=_CHUNK)
                for row in rows:
                    self._add(row, horizon)
                moved = cursor > self._hi
                self._hi = max(self._hi, cursor)
                if not rows or not moved:
                    break
            while not self._lo_done:
                rows, more = feed.query(_ALL, before=self._lo, limit=_CHUNK)
                for row in rows:  # newest first
                    if not self._add(row, horizon):
                        self._lo_done = True
                        break
                    self._lo = row.index
                if self._lo_done:
                    break
                if more is None:
                    # the bottom of the index: all of history, or the backfill is not there yet
                    self._lo_done = feed.complete
                    break
            floor = horizon - horizon % BASE_S
            for t in [t for t in self._counts if t < floor]:
                del self._counts[t]

    def counts(self, start: int, end: int) -> dict[str, int]:
        """Decisions counted in ``[start, end)`` (epoch seconds), by outcome."""
        out: dict[str, int] = {}
        with self._lock:
            for t, bucket in self._counts.items():
                if start <= t < end:
                    for key, n in bucket.items():
                        out[key] = out.get(key, 0) + n
        return out


def series(
    rates: Rates, sampler: Sampler, *, now: float, window_s: int, bucket_s: int
) -> dict[str, Any]:
    """The charts' data: ``len = window_s // bucket_s`` buckets ending with the one holding
    ``now``. Rates are decisions per second: a bucket's count over ``bucket_s``, or over the
    seconds elapsed so far for the current one (at least 1)."""
    last = int(now) - int(now) % bucket_s
    n = max(1, window_s // bucket_s)
    starts = [last - (n - 1 - k) * bucket_s for k in range(n)]
    per_bucket = [rates.counts(s, s + bucket_s) for s in starts]
    spans = [max(1.0, min(float(bucket_s), now - s)) for s in starts]

    def rate(count: int, span: float) -> float:
        return round(count / span, 4)

    allows = [rate(c.get("allow", 0), d) for c, d in zip(per_bucket, spans, strict=True)]
    denials = [
        rate(sum(v for k, v in c.items() if k != "allow"), d)
        for c, d in zip(per_bucket, spans, strict=True)
    ]
    totals: dict[str, int] = {}
    for c in per_bucket:
        for k, v in c.items():
            if k != "allow":
                totals[k] = totals.get(k, 0) + v
    codes = sorted(totals, key=lambda k: (-totals[k], k))
    by_code = {
        code: [rate(c.get(code, 0), d) for c, d in zip(per_bucket, spans, strict=True)]
        for code in codes
    }
    percentiles, observed = sampler.latency(starts, bucket_s, now)
    return {
        "now": format_time(datetime.fromtimestamp(now, UTC)),
        "bucket_s": bucket_s,
        "window_s": n * bucket_s,
        "t": starts,
        "decisions": [round(a + d, 4) for a, d in zip(allows, denials, strict=True)],
        "allows": allows,
        "denials": denials,
        "denials_by_code": by_code,
        "denial_totals": {code: totals[code] for code in codes},
        "latency_ms": {
            f"p{round(q * 100)}": s for q, s in zip(PERCENTILES, percentiles, strict=True)
        },
        "latency_count": observed,
    }


# -- the per-app state: created at start (or at the first request), stopped with the app ------


class _Health:
    def __init__(self, state: ServerState) -> None:
        self.sampler = Sampler(state)
        self.rates = Rates()


_create = threading.Lock()


def _health(app: FastAPI) -> _Health:
    with _create:
        health: _Health | None = getattr(app.state, "console_health", None)
        if health is None:
            health = _Health(app.state.interlock)
            app.state.console_health = health
            health.sampler.start()
        return health


def start(app: FastAPI) -> None:
    """Start the dashboard's sampler (from the app's lifespan, so latency is sampled from the
    start; otherwise it starts at the first request)."""
    _health(app)


def close(app: FastAPI) -> None:
    """Stop the dashboard's sampler (when the app stops)."""
    with _create:
        health: _Health | None = getattr(app.state, "console_health", None)
        app.state.console_health = None
    if health is not None:
        health.sampler.stop()


# -- nodes ---------------------------------------------------------------------------------


def _reason(text: str) -> dict[str, str | None]:
    """``"CODE: detail"`` as ``{"code", "detail"}`` (code None when it is not a §3 code)."""
    code, sep, detail = text.partition(": ")
    if sep and code in _CODES:
        return {"code": code, "detail": detail}
    return {"code": None, "detail": text}


def _epoch(ts: str) -> float | None:
    try:
        return float(rfc3339_to_epoch(ts))
    except ValueError:
        return None


def _attestation(state: ServerState) -> dict[str, Any]:
    measured, _env, problem = state.gate.attestation()
    if problem is not None:
        status = "untrusted" if measured is not None else "not measured"
    else:
        status = "trusted" if measured is not None else "not measured"
    return {
        "state": status,
        "digest": measured.digest if measured is not None else None,
        "problem": problem,
    }


def _checkpoint(state: ServerState, now: float) -> dict[str, Any]:
    try:
        cp = state.gate.ledger.latest_checkpoint()
    except Error as exc:
        return {"size": None, "created": None, "age_s": None, "problem": exc.message}
    if cp is None:
        return {"size": None, "created": None, "age_s": None, "problem": None}
    created = _epoch(cp.created)
    return {
        "size": cp.size,
        "created": cp.created,
        "age_s": None if created is None else round(max(0.0, now - created), 1),
        "problem": None,
    }


def this_node(state: ServerState, sampler: Sampler, now: float) -> dict[str, Any]:
    """This node, live: what ``/healthz`` and ``/readyz`` say, and the checkpoint, growth and
    attestation. ``ready`` is False exactly when ``/readyz`` is 503. Never raises."""
    gate = state.gate
    body = summary(state)
    reasons = state.not_ready()
    lease = body.get("lease")
    node = gate.node
    size = body.get("ledger_size")
    return {
        "this": True,
        "node_id": node.node_id if node is not None else f"{socket.gethostname()}-{os.getpid()}",
        "host": node.host if node is not None else socket.gethostname(),
        "pid": os.getpid(),
        "role": "fleet" if node is not None else "embedded",
        "origin": gate.home.config.origin,
        "state": "fail-closed" if reasons else "ready",
        "reasons": [_reason(r) for r in reasons],
        "lease": lease,
        "policy_version": body.get("policy_version"),
        "policy_digest": body.get("policy_digest"),
        "checkpoint": _checkpoint(state, now),
        "log_size": size,
        "growth_per_s": sampler.growth(size if isinstance(size, int) else None, now),
        "durability": body.get("durability"),
        "attestation": _attestation(state),
        "heartbeat_age_s": None,
        "silent": False,
    }


#: what every node that follows the shared log denies with while its kill switch is on
SHARED_KILL_SWITCH = (
    "POLICY_FORBID: the kill switch is on, on the shared log: every node that follows it"
    " denies every action"
)


def fleet_node(row: NodeRow, *, kill_switch: bool = False) -> dict[str, Any]:
    """Another node of the fleet as its last heartbeat recorded it.

    A heartbeat's ``state`` covers the node's ledger and lease only, so two reasons are added
    from what is known otherwise: the kill switch, when it is on on the shared log
    (``kill_switch``: as this node folded it; a node that has not folded it yet is stale
    within a lease, and fail-closed anyway), and no policy version in the heartbeat (no valid
    bundle loaded). A node silent for more than :data:`SILENT_S` is ``silent``: what it
    recorded may no longer be true."""
    reasons = [] if row.state == "ok" else [_reason(row.state)]
    if row.policy_version is None:
        reasons.append(_reason("POLICY_UNAVAILABLE: its last heartbeat names no policy version"))
    if kill_switch:
        reasons.append(_reason(SHARED_KILL_SWITCH))
    silent = row.silent_s > SILENT_S
    return {
        "this": False,
        "node_id": row.node_id,
        "host": row.host,
        "pid": row.pid,
        "role": "fleet",
        "started": row.started,
        "state": "silent" if silent else ("fail-closed" if reasons else "ready"),
        "reasons": reasons,
        "lease": {"age_s": row.lease_age_s},
        "policy_version": row.policy_version,
        "log_size": row.log_size,
        "attestation": {"digest": row.attestation},
        "heartbeat_age_s": round(row.silent_s, 1),
        "silent": silent,
    }


def _kill_switch(state: ServerState) -> bool:
    try:
        return bool(state.gate.snapshot.kill_switch)
    except Exception:  # noqa: BLE001 - unknown here; this node's own card says why
        return False


def nodes_of(state: ServerState, sampler: Sampler, now: float) -> dict[str, Any]:
    """Every node the dashboard shows: this one first, then the fleet's other nodes."""
    me = this_node(state, sampler, now)
    out: list[dict[str, Any]] = [me]
    fleet_problem: str | None = None
    ledger = state.gate.ledger
    if isinstance(ledger, Fleet):
        try:
            rows = ledger.nodes()
        except Exception as exc:  # noqa: BLE001 - the registry is a view; this node still shows
            fleet_problem = error_detail(exc)
            rows = []
        kill_switch = _kill_switch(state)
        for row in rows:
            if row.node_id == me["node_id"]:
                me["heartbeat_age_s"] = round(row.silent_s, 1)
                continue
            out.append(fleet_node(row, kill_switch=kill_switch))
    return {
        "now": format_time(datetime.fromtimestamp(now, UTC)),
        "role": me["role"],
        "nodes": out,
        "fleet_problem": fleet_problem,
        "silent_after_s": SILENT_S,
    }


_NO_STORE = {"Cache-Control": "no-store"}


@api.get("/nodes", summary="Every node: state, lease, policy, checkpoint, log, attestation")
def nodes(request: Request, state: StateDep, viewer: ViewerDep) -> JSONResponse:
    """This node, live, and on a fleet every other node as its last heartbeat recorded it."""
    del viewer  # reading needs a session (or the public mode); nothing here is redacted
    health = _health(request.app)
    return JSONResponse(nodes_of(state, health.sampler, time.time()), headers=_NO_STORE)


@api.get("/series", summary="Decision and denial rates by reason code; latency percentiles")
def get_series(
    request: Request,
    viewer: ViewerDep,
    window: Annotated[int, Query(ge=60, le=MAX_WINDOW_S, description="seconds")] = 900,
    bucket: Annotated[int, Query(ge=BASE_S, le=600, description="seconds")] = BASE_S,
) -> JSONResponse:
    """Rates per second in ``bucket``-second buckets over the last ``window`` seconds, from
    the ledger; this node's latency percentiles from its histogram."""
    del viewer
    if bucket % BASE_S:
        raise HTTPException(422, f"bucket is a multiple of {BASE_S} s")
    if window // bucket > MAX_WINDOW_S // BASE_S:
        raise HTTPException(422, f"at most {MAX_WINDOW_S // BASE_S} buckets")
    health = _health(request.app)
    feed: DecisionFeed = request.app.state.console_feed
    now = time.time()
    health.rates.update(feed, now)
    out = series(health.rates, health.sampler, now=now, window_s=window, bucket_s=bucket)
    out["index_problem"] = feed.problem
    return JSONResponse(out, headers=_NO_STORE)
