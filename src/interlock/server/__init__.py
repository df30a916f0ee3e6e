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

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from interlock.server.app import create_app
from interlock.server.guards import is_loopback
from interlock.server.peers import PeerLimits, server_config

if TYPE_CHECKING:
    import uvicorn

    from interlock.gate import Gate
    from interlock.server.console.session import ConsoleConfig
    from interlock.server.enforce.admission import AdmissionListener
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
    admission: AdmissionListener | None = None,
    sockets: Sequence[socket.socket] | None = None,
    workers: int = 1,
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

    With ``admission``, the Kubernetes admission webhook is served over HTTPS on its address
    (:mod:`interlock.server.enforce.admission`) by a second uvicorn server on the same event
    loop. A stop signal stops both; if either stops (or cannot start), the other is stopped
    too, and only then does this return (or raise).

    With ``sockets`` (listening sockets, already bound), the API is served on those instead
    of binding ``host:port`` (``host`` is still the Host check's). ``workers`` is the number of
    processes serving the same home and address (see :mod:`interlock.server.workers`, which
    runs them, and :func:`create_app` for what is refused when it is more than 1).

    Raises:
        ValueError: an allowed host (or ``host``) is not a valid host, or ``execution_lease``
            is not positive, or ``workers`` < 1.
        SystemExit: if an address cannot be bound (uvicorn reports why).
        RuntimeError: the ext_authz address cannot be bound.
        OSError: the webhook's certificate or key cannot be loaded (``ssl.SSLError``).
    """
    app = create_app(
        gate,
        allowed_hosts=[host, *allowed_hosts],
        execution_lease=execution_lease,
        console=console,
        workers=workers,
    )
    # slow and greedy clients: header and body read timeouts, connections per address
    config = server_config(app, host=host, port=port, log_level=log_level)
    servers = [_Server(config, sockets)]
    if admission is not None:
        from interlock.server.enforce.admission import admission_server_config

        servers.append(
            _Server(
                admission_server_config(
                    gate, admission, state=app.state.interlock, log_level=log_level
                )
            )
        )
    grpc_server = None
    with _signals_stop(servers):
        try:
            if ext_authz is not None:
                from interlock.server.enforce.envoy import start_ext_authz

                grpc_server = start_ext_authz(
                    gate, ext_authz[0], ext_authz[1], metrics=app.state.interlock.metrics
                )
            factory = getattr(config, "get_loop_factory", lambda: None)()
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(_serve_all(servers))
        finally:
            if grpc_server is not None:
                grpc_server.stop(grace=2).wait(5)


class _Server:
    """A uvicorn server that leaves SIGINT/SIGTERM to :func:`serve`: uvicorn's own handling
    (one server's handlers, then re-raising the signal so the process dies of it) would stop
    one server of two, and kill the process before the caller closes the gate."""

    def __init__(
        self, config: uvicorn.Config, sockets: Sequence[socket.socket] | None = None
    ) -> None:
        import uvicorn

        self.sockets = list(sockets) if sockets is not None else None

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Server(config)

    def stop(self, signum: int, frame: FrameType | None) -> None:
        """Shut down gracefully (a second SIGINT: at once), as uvicorn's handler does."""
        self.server.handle_exit(signum, frame)


@contextlib.contextmanager
def _signals_stop(servers: Sequence[_Server]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM stop every server (main thread only: elsewhere signals
    cannot be handled, as with uvicorn); the previous handlers come back after."""
    previous: dict[int, Any] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        for s in servers:
            s.stop(signum, frame)

    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve_all(servers: Sequence[_Server]) -> None:
    """Run every server until one ends, then stop the others; raise the first failure (a
    ``SystemExit`` from a bind error, an ``ssl.SSLError``) once all have stopped."""

    async def one(s: _Server) -> BaseException | None:
        try:
            await s.server.serve(sockets=s.sockets)
        # not handled here: serve() re-raises it once the other servers have stopped
        except (SystemExit, Exception) as exc:  # noqa: BLE001
            return exc
        return None

    tasks = [asyncio.create_task(one(s)) for s in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.server.should_exit = True
    for failure in await asyncio.gather(*tasks):
        if failure is not None:
            raise failure
