"""Liveness, readiness and metrics: ``/healthz``, ``/readyz``, ``/metrics``.

    >>> # curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8750/readyz
    >>> # 503 while the node cannot allow, with the reasons in the body

``/healthz`` is 200 while the process serves (``worker``: its process id, which tells the
workers of ``interlock serve --workers`` apart); it says whether the node is fail-closed
(``fail_closed``: ``ok`` or the code every decision is denied with) and, on a fleet node, its
freshness lease (age of its last confirmation of the log's head, lease, watermark).
``/readyz`` is 200 only when this node can *allow*: the ledger is readable and passed its
checks, its lease is fresh, a valid signed policy is loaded, and the kill switch is off;
otherwise 503 with every reason (each starting with the DESIGN §3 code a decision would
carry). A load balancer that routes on ``/readyz`` sends traffic only to nodes that can say
yes — though a node that is not ready still answers, and every answer is a deny.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from interlock.errors import Error
from interlock.server.metrics import CONTENT_TYPE
from interlock.server.schemas import HealthOut, ReadyOut
from interlock.server.state import ServerState, StateDep

__all__ = ["api", "summary"]

api = APIRouter(tags=["health"])


def summary(state: ServerState) -> dict[str, Any]:
    """What ``/healthz`` says about this node (also what the Health Dashboard shows): ledger
    size, durability, policy version and digest, fail-closed state, and on a fleet node its
    lease. Never raises: what cannot be read is None."""
    gate = state.gate
    try:
        size: int | None = gate.ledger.size()
    except Error:
        size = None
    descriptor: Any = {}
    # liveness must answer whatever the state; /readyz says what is wrong
    with contextlib.suppress(Exception):
        descriptor = gate.snapshot.descriptor
    state_now = gate.fail_closed_state()
    body: dict[str, Any] = {
        "status": "ok",
        "ledger_size": size,
        "durability": gate.home.config.durability,
        "policy_version": descriptor.get("policy_version"),
        "policy_digest": descriptor.get("policy_digest"),
        "fail_closed": "ok" if state_now is None else state_now,
    }
    lease, node = gate.lease, gate.node
    if lease is not None and node is not None:
        now = time.monotonic()
        age = lease.age(now)
        body["lease"] = {
            "lease_s": lease.lease_s,
            "age_s": None if age is None else round(age, 3),
            "stale": lease.stale(now) is not None,
            "node_id": node.node_id,
            "watermark": node.watermark,
            "problem": node.problem,
        }
    return body


@api.get("/healthz", summary="Liveness", response_model=HealthOut)
def healthz(state: StateDep) -> JSONResponse:
    """200 while the process serves; a summary of the node (:func:`summary`)."""
    body = {**summary(state), "worker": os.getpid()}
    sequencer = getattr(state.gate.ledger, "sequencer_pid", None)
    if sequencer is not None:
        body["sequencer"] = sequencer
    return JSONResponse(body)


@api.get(
    "/readyz",
    summary="Readiness: can this node allow?",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "fail-closed: every answer is deny"}},
)
def readyz(state: StateDep) -> JSONResponse:
    """200 when this node can allow; 503 with the reasons when it is fail-closed."""
    reasons = state.not_ready()
    return JSONResponse(
        {"ready": not reasons, "reasons": reasons}, status_code=503 if reasons else 200
    )


@api.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "text exposition"}},
)
def metrics(state: StateDep) -> Response:
    """Decisions by endpoint, effect and reason code; decision latency; execution events;
    admin requests; ledger size; readiness."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
