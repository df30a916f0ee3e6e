"""The HTTP API (DESIGN §9): ``interlock serve``, or ``create_app(gate)`` in your own server.

    >>> from interlock.gate import Gate
    >>> from interlock.server import serve
    >>> with Gate.open(".interlock") as gate:             # doctest: +SKIP
    ...     serve(gate, host="127.0.0.1", port=8750)

Endpoints: decisions, executions, lineage, the ledger (checkpoint, entries, proofs,
consistency), C2SP tlog-tiles under ``/tlog/``, admin (quarantine, revocation, kill switch,
approvals, policy upload), ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json``. See
docs/agents.md, "HTTP API".
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from interlock.server.app import create_app
from interlock.server.guards import is_loopback
from interlock.server.peers import PeerLimits, server_config

if TYPE_CHECKING:
    from interlock.gate import Gate
    from interlock.server.console.session import ConsoleConfig
    from interlock.server.enforce.envoy import ExtAuthzConfig

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "PeerLimits",
    "create_app",
    "is_loopback",
    "serve",
    "server_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750


def serve(
    gate: Gate,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
    allowed_hosts: Sequence[str] = (),
    execution_lease: float | None = None,
    console: ConsoleConfig | None = None,
    ext_authz: tuple[str, ExtAuthzConfig] | None = None,
) -> None:
    """Serve ``gate`` over HTTP until SIGINT or SIGTERM, then shut down gracefully and return
    (so the caller closes the gate: its last checkpoint and anchor are written). Does not close
    the gate. Executions started over HTTP and still running are terminated on the way out.

    A client must send a request's headers within 10 s and its body within 30 s more (else
    408), and may hold at most 64 connections at once (else 429):
    :mod:`interlock.server.peers`.

    The ``Host`` header must name ``host``, ``localhost``, ``127.0.0.1``, ``[::1]`` or one of
    ``allowed_hosts`` (see :func:`create_app`).

    With ``ext_authz`` (``(address, config)``), Envoy's external authorization is served on
    that address too (:mod:`interlock.server.enforce.envoy`), started before the HTTP API and
    stopped after it.

    Raises:
        ValueError: an allowed host (or ``host``) is not a valid host, or ``execution_lease``
            is not positive.
        SystemExit: if the address cannot be bound (uvicorn reports why).
        RuntimeError: the ext_authz address cannot be bound.
    """
    import uvicorn

    app = create_app(
        gate,
        allowed_hosts=[host, *allowed_hosts],
        execution_lease=execution_lease,
        console=console,
    )
    # slow and greedy clients: header and body read timeouts, connections per address
    config = server_config(app, host=host, port=port, log_level=log_level)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal so that the
    # process dies of it; a SIGTERM would then kill us before the gate is closed. Handlers that
    # raise _Stopped turn that re-raise into a normal return.
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    grpc_server = None
    try:
        if ext_authz is not None:
            from interlock.server.enforce.envoy import start_ext_authz

            grpc_server = start_ext_authz(
                gate, ext_authz[0], ext_authz[1], metrics=app.state.interlock.metrics
            )
        uvicorn.Server(config).run()
    except _Stopped:
        pass
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2).wait(5)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(Exception):
    """A stop signal arrived; serving has ended."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped
