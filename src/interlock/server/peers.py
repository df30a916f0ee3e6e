"""Limits against slow and greedy HTTP peers, enforced where connections are read (uvicorn's
protocol), before any request reaches the app.

    config = server_config(app, host="127.0.0.1", port=8750, log_level="info",
                           limits=PeerLimits(header_timeout=10, body_timeout=30))
    uvicorn.Server(config).run()

uvicorn closes a keep-alive connection that stays idle between requests, but nothing bounds the
time a client takes to *send* a request: a slowloris client that opens connections and drips
header bytes (or sends nothing at all, or a body one byte a minute) holds each connection, and
its memory, for as long as it likes. :func:`guarded_protocol` wraps uvicorn's HTTP protocol
class (httptools, or h11) with three limits:

* **header read timeout**: from a connection's first byte of a request (or from the connection
  itself, for the first request) to the end of its headers: ``header_timeout`` seconds, else
  the client gets ``408 Request Timeout`` and the connection is closed;
* **body read timeout**: from the end of the headers to the end of the body:
  ``body_timeout`` seconds, else 408 (when no response has started) and closed. The app's
  size limits (:mod:`interlock.server.limits`) bound how much; this bounds how slowly;
* **connections per client address**: at most ``max_connections_per_client`` open at once
  from one IP address; one more is answered ``429 Too Many Requests`` and closed at once.
  (Loopback clients all share one address: the default leaves room for a browser console and
  many agents; put a proxy that knows real client addresses in front of a shared server.)

Nothing here records anything: a request cut off was never complete, so it never reached the
gate. The counts live on the server's event loop (one protocol instance per connection, all
on that loop): no lock is needed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

__all__ = ["PeerLimits", "guarded_protocol", "server_config"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLimits:
    """How long a client may take to send a request, and how many connections it may hold.

    Raises:
        ValueError: a timeout that is not positive, or a connection cap below 1.
    """

    #: seconds from the start of a request (or of the connection) to the end of its headers
    header_timeout: float = 10.0
    #: seconds from the end of the headers to the end of the body
    body_timeout: float = 30.0
    #: open connections at once from one client IP address
    max_connections_per_client: int = 64

    def __post_init__(self) -> None:
        if not (self.header_timeout > 0 and self.body_timeout > 0):
            raise ValueError("the read timeouts must be positive")
        if isinstance(self.max_connections_per_client, bool) or self.max_connections_per_client < 1:
            raise ValueError("the connection cap per client must be at least 1")


def _response(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_HEADER_TIMEOUT = _response("408 Request Timeout", "the request headers were not received in time")
_BODY_TIMEOUT = _response("408 Request Timeout", "the request body was not received in time")
_TOO_MANY = _response("429 Too Many Requests", "too many connections from this address")


def guarded_protocol(
    limits: PeerLimits, base: type[asyncio.Protocol] | None = None
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` (default: uvicorn's ``auto`` choice,
    httptools when installed, else h11) that enforces ``limits`` (see the module). Give it to
    ``uvicorn.Config(http=...)``; each call makes a class with its own connection counts.

    Raises nothing.
    """
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    counts: dict[str, int] = {}
    # uvicorn's protocols are untyped for our purpose: the attributes used are ``transport``,
    # ``client`` (set by connection_made), ``cycle`` (a new one per request once its headers
    # are parsed; ``more_body`` false once its body is) and ``on_response_complete``
    parent: Any = base

    class GuardedProtocol(parent):  # type: ignore[misc]
        _address: str | None = None
        _timer: asyncio.TimerHandle | None = None
        _reading = False
        _phase = "header"
        _before: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            client = self.client[0] if self.client else None
            if client is not None:
                if counts.get(client, 0) >= limits.max_connections_per_client:
                    transport.write(_TOO_MANY)
                    transport.close()
                    return
                counts[client] = counts.get(client, 0) + 1
                self._address = client
            # a connection that never sends a byte is as slow as one that drips them
            self._start_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            if self._address is not None:
                left = counts.get(self._address, 1) - 1
                if left > 0:
                    counts[self._address] = left
                else:
                    counts.pop(self._address, None)
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._reading:
                self._start_reading()
            super().data_received(data)

        def on_response_complete(self) -> None:
            cycle = self.cycle
            # a response sent before the body was read (413, 415, ...): the body's deadline
            # still runs, or a client dripping the rest would hold the connection forever
            if cycle is None or not cycle.more_body:
                self._stop_timer()
                self._reading = False
            super().on_response_complete()

        def _start_reading(self) -> None:
            self._reading = True
            self._phase = "header"
            self._before = self.cycle
            self._arm(limits.header_timeout)

        def _arm(self, seconds: float) -> None:
            self._stop_timer()
            self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

        def _stop_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is self._before:
                self._cut(_HEADER_TIMEOUT, None)  # its headers never ended
            elif cycle.more_body:
                if self._phase == "header":
                    self._phase = "body"
                    self._arm(limits.body_timeout)
                else:
                    self._cut(_BODY_TIMEOUT, cycle)
            # else the request was read in time: on_response_complete ends this reading

        def _cut(self, answer: bytes, cycle: Any) -> None:
            if cycle is None or not cycle.response_started:
                self.transport.write(answer)
            self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def server_config(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    log_level: str,
    limits: PeerLimits | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration of ``interlock serve``: no WebSockets, no trusted
    ``X-Forwarded-*``, no ``Server`` header, at most 1024 connections and tasks (503 past it),
    idle keep-alive connections closed after 5 s, and ``limits`` (default :class:`PeerLimits`)
    on slow and greedy clients.

    Raises nothing.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws="none",  # no WebSocket endpoints
        proxy_headers=False,  # X-Forwarded-* is not trusted
        server_header=False,
        limit_concurrency=1024,  # past this many connections: 503, not unbounded memory
        timeout_keep_alive=5,
        http=guarded_protocol(limits or PeerLimits()),
    )
