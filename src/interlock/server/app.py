"""The FastAPI app: ``create_app(gate)`` wires the routes of DESIGN §9 around one open gate.

    >>> from interlock.gate import Gate
    >>> gate = Gate.open(".interlock")                    # doctest: +SKIP
    >>> app = create_app(gate)                            # doctest: +SKIP
    >>> import uvicorn; uvicorn.run(app, port=8750)       # doctest: +SKIP

The app never closes the gate: whoever opened it does (``interlock serve`` does, on shutdown).

The app's lifespan runs the execution verifier (:mod:`interlock.server.verifier`): executions
started over HTTP are re-verified while the app serves, and terminated when it stops. Requests
pass two guards first (:mod:`interlock.server.guards`): a ``Host`` header that does not name
this server is 400, a ``POST``/``PUT``/``PATCH`` body that is not ``application/json`` is 415,
and a path holding whitespace or a control character is 404.

``GET /console/proof`` is the Proof Viewer (:mod:`interlock.server.routes.proof_viewer`): a
static page, no credential, its own strict Content-Security-Policy.

Errors never leak as tracebacks. Interlock errors that escape a route are mapped once, here:
a ledger that is unavailable or corrupt is 503 (the server's problem); a missing ledger item is
404; a usage error 422. Anything else is a 500 with a fixed message (the cause goes to the
server log). Hostile input is answered 4xx: parameters are bounded before they reach storage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from interlock.core.model import MAX_REQUEST_BYTES
from interlock.errors import Error, LedgerCorrupt, LedgerError, LedgerUnavailable, UsageError
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S
from interlock.server import guards
from interlock.server.console import api as console_api
from interlock.server.console import demo as console_demo
from interlock.server.console import governance as console_governance
from interlock.server.console import health as console_health
from interlock.server.console import lineage as console_lineage
from interlock.server.console import pages as console_pages
from interlock.server.console import policies as console_policies
from interlock.server.console.feed import DEFAULT_CAPACITY, DecisionFeed
from interlock.server.console.session import ConsoleConfig, SessionStore
from interlock.server.fastpath import DecisionPath
from interlock.server.guards import SingleProcessOnly
from interlock.server.limits import BodyLimit
from interlock.server.routes import admin, decisions, health, ledger, proof_viewer
from interlock.server.state import ServerState
from interlock.server.verifier import DEFAULT_MAX_EXECUTIONS

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


def _allowed(extra: Sequence[str]) -> list[str]:
    """The Host check's list (see :mod:`interlock.server.guards`)."""
    if isinstance(extra, str):
        raise ValueError("allowed_hosts is a sequence of host names, not one string")
    return guards.allowed_hosts(None, extra)


def create_app(
    gate: Gate,
    *,
    max_body_bytes: int = MAX_REQUEST_BYTES,
    allowed_hosts: Sequence[str] = (),
    verify_interval: float = DEFAULT_INTERVAL_S,
    execution_lease: float | None = None,
    max_executions: int = DEFAULT_MAX_EXECUTIONS,
    console: ConsoleConfig | None = None,
    console_capacity: int = DEFAULT_CAPACITY,
    workers: int = 1,
) -> FastAPI:
    """A FastAPI app serving ``gate`` (DESIGN §9).

    ``max_body_bytes`` caps every request body except the action requests of
    ``POST /v1/decisions`` and ``POST /v1/executions`` (capped at the gate's 64 KiB intake
    limit, and recorded when over it) and policy uploads (4 MiB).

    ``allowed_hosts`` are accepted in the ``Host`` header besides ``localhost``, ``127.0.0.1``
    and ``[::1]`` (any port): host names, IP addresses, ``*.domain``, or ``*`` for any host.
    ``interlock serve`` adds the address it binds.

    Executions started over HTTP are re-verified every ``verify_interval`` seconds and on every
    governance change while the app's lifespan runs (at most ``max_executions`` at a time);
    with ``execution_lease``, one whose runner does not report for that many seconds is
    terminated.

    The browser tools under ``/console`` read through ``console`` (who may read, what is
    redacted: :class:`~interlock.server.console.session.ConsoleConfig`, by default behind a
    read credential) and an index of the newest ``console_capacity`` decisions.

    ``workers`` says how many processes serve this home and address (``interlock serve
    --workers``). With more than one, what keeps its state in one process's memory is refused:
    ``POST /v1/executions`` (503: its re-verification and lease live in the process that
    admitted it), ``PUT /v1/admin/policy`` (409: the other workers would keep the old bundle)
    and the browser console under ``/console`` except the Proof Viewer (503: sign-ins and demo
    sessions live in one process). Nothing is recorded for a refused request.

    ``POST /v1/decisions`` is answered before routing (:mod:`interlock.server.fastpath`), with
    the same answers.

    Raises:
        ValueError: an allowed host is not a host name, an IP address, ``*`` or ``*.domain``;
            ``verify_interval`` or ``execution_lease`` is not positive; ``max_executions`` < 1;
            ``console_capacity`` < 1; ``workers`` < 1.
    """
    from interlock._version import __version__

    hosts = _allowed(allowed_hosts)
    state = ServerState.for_gate(
        gate,
        verify_interval=verify_interval,
        execution_lease=execution_lease,
        max_executions=max_executions,
        workers=workers,
    )

    # no gate: an app made only for its OpenAPI document (nothing to index)
    # (nor with several workers: the console is refused there, see SingleProcessOnly)
    feed = (
        DecisionFeed(gate.ledger, capacity=console_capacity)
        if gate is not None and workers == 1
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.verifier.start()
        if feed is not None:
            feed.start()
        console_health.start(_app)
        try:
            yield
        finally:
            if feed is not None:
                await asyncio.to_thread(feed.stop)
            await asyncio.to_thread(console_health.close, _app)
            await asyncio.to_thread(console_demo.close_all, _app)
            # terminates what is still running (durable appends): not on the event loop
            await asyncio.to_thread(state.verifier.stop)
            # the requests already queued are decided (and answered) before the gate closes
            await asyncio.to_thread(state.dispatcher.stop)

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
        lifespan=lifespan,
    )
    app.state.interlock = state
    app.state.console_config = console if console is not None else ConsoleConfig()
    app.state.console_sessions = SessionStore()
    app.state.console_feed = feed
    for routes in (
        decisions.api,
        ledger.api,
        admin.api,
        health.api,
        proof_viewer.api,
        console_pages.api,
        console_api.api,
        console_governance.api,
        console_policies.api,
        console_health.api,
        console_lineage.api,
        console_demo.api,
    ):
        app.include_router(routes)

    app.add_middleware(
        BodyLimit,
        default=max_body_bytes,
        paths={
            "/v1/decisions": None,  # read by the route itself, and recorded when too large
            "/v1/decisions:batch": None,  # read by the route itself (4 MiB)
            "/v1/executions": None,
            "/v1/admin/policy": admin.MAX_POLICY_BYTES,
        },
    )
    if workers > 1:
        app.add_middleware(SingleProcessOnly, reason=state.single_process_only() or "")
    # the last added runs first: the Host check, the path, the media type, the body limits
    app.add_middleware(guards.JsonBodyOnly)
    app.add_middleware(guards.PlainPathOnly)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    # before all of them: the well-formed POST /v1/decisions (anything else passes through)
    app.add_middleware(DecisionPath, state=state, hosts=hosts, dispatcher=state.dispatcher)

    @app.exception_handler(Error)
    async def _interlock_error(request: Request, exc: Error) -> JSONResponse:
        status = _error_status(exc)
        if status == 500:
            _log.error("unexpected error on %s: %s", request.url.path, exc.diagnostics())
            return JSONResponse({"detail": "internal error"}, status_code=500)
        return JSONResponse({"detail": exc.message}, status_code=status)

    return app
