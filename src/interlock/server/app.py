"""The FastAPI app: ``create_app(gate)`` wires the routes of DESIGN §9 around one open gate.

    >>> from interlock.gate import Gate
    >>> gate = Gate.open(".interlock")                    # doctest: +SKIP
    >>> app = create_app(gate)                            # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8750)       # doctest: +SKIP

The app never closes the gate: whoever opened it does (``interlock serve`` does, on shutdown).

Errors never leak as tracebacks. Interlock errors that escape a route are mapped once, here:
a ledger that is unavailable or corrupt is 503 (the server's problem); a missing ledger item is
404; a usage error 422. Anything else is a 500 with a fixed message (the cause goes to the
server log). Hostile input is answered 4xx: parameters are bounded before they reach storage.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from interlock.core.model import MAX_REQUEST_BYTES
from interlock.errors import Error, LedgerCorrupt, LedgerError, LedgerUnavailable, UsageError
from interlock.server.limits import BodyLimit
from interlock.server.routes import admin, decisions, health, ledger
from interlock.server.state import ServerState

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["create_app"]

_log = logging.getLogger("interlock.server")


def _error_status(exc: Error) -> int:
    if isinstance(exc, LedgerUnavailable | LedgerCorrupt):
        return 503
    if isinstance(exc, LedgerError):
        return 404
    if isinstance(exc, UsageError):
        return 422
    return 500


def create_app(gate: Gate, *, max_body_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """A FastAPI app serving ``gate`` (DESIGN §9).

    ``max_body_bytes`` caps every request body except the action requests of
    ``POST /v1/decisions`` and ``POST /v1/executions`` (capped at the gate's 64 KiB intake
    limit, and recorded when over it) and policy uploads (4 MiB).

    Never raises.
    """
    from interlock import __version__

    state = ServerState.for_gate(gate)
    app = FastAPI(
        title="Interlock",
        version=__version__,
        summary="Fail-closed execution governance for AI agents.",
        description=(
            "Every action passes one gate; deny unless authorization is established; every "
            "decision is recorded on a Merkle ledger before the answer. Clients MUST treat "
            "anything but a decision with effect 'allow' as deny."
        ),
        docs_url=None,  # no third-party JavaScript from a governance node
        redoc_url=None,
    )
    app.state.interlock = state
    for module in (decisions, ledger, admin, health):
        app.include_router(module.router(state))

    app.add_middleware(
        BodyLimit,
        default=max_body_bytes,
        paths={
            "/v1/decisions": None,  # read by the route itself, and recorded when too large
            "/v1/executions": None,
            "/v1/admin/policy": admin.MAX_POLICY_BYTES,
        },
    )

    @app.exception_handler(Error)
    async def _interlock_error(request: Request, exc: Error) -> JSONResponse:
        status = _error_status(exc)
        if status == 500:
            _log.error("unexpected error on %s: %s", request.url.path, exc.diagnostics())
            return JSONResponse({"detail": "internal error"}, status_code=500)
        return JSONResponse({"detail": exc.message}, status_code=status)

    return app
