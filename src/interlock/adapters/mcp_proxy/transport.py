"""Serving the MCP proxy to an agent's client: stdio, or streamable HTTP on loopback behind a
bearer token (:mod:`interlock.adapters.mcp_proxy.auth`)."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server import stdio as sdk_stdio
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings

from interlock.core.net import is_loopback
from interlock.errors import UsageError

if TYPE_CHECKING:
    from interlock.gate import Gate
from interlock.adapters.mcp_proxy.auth import ListenToken, require_bearer
from interlock.adapters.mcp_proxy.forwarding import McpProxy
from interlock.adapters.mcp_proxy.options import (
    MAX_LINE_BYTES,
    ClientLineTooLong,
    ProxyOptions,
    Upstream,
)
from interlock.adapters.mcp_proxy.relay import ToolCallRelay
from interlock.adapters.mcp_proxy.session import _sole, open_proxy

# -- serving ---------------------------------------------------------------------------------------


def _pollable(fd: int) -> bool:
    """Whether ``fd`` is a pipe or a socket (which the event loop can wait on)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _NonBlocking:
    """``O_NONBLOCK`` set on a descriptor, and its previous flags put back by :meth:`restore`
    (the open file description is shared with the process at the other end's parent)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, self.flags | os.O_NONBLOCK)

    def restore(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self.flags)


class _StdinLines:
    """The lines of file descriptor ``fd`` (stdin).

    A pipe or a socket is read without blocking, in the event loop itself (no thread hand-off
    per message). Anything else (a file, a terminal) is read by a daemon thread with
    ``os.read``: the SDK reads stdin in an anyio worker thread, and a thread blocked in
    ``read()`` can be neither interrupted nor abandoned at exit, so SIGTERM would wait for the
    client's next byte before the session could end; a daemon thread is left behind instead. It
    reads the descriptor directly, holding no lock of ``sys.stdin`` that interpreter shutdown
    would need.

    A line (newline included) longer than ``limit`` bytes is not buffered to its end: reading
    stops, the lines end there (as at end of input; the partial line is dropped) and
    :attr:`overflow` is set.
    """

    def __init__(self, fd: int, limit: int = MAX_LINE_BYTES) -> None:
        #: set (before the lines end) when a line exceeded ``limit``
        self.overflow = False
        self.limit = limit
        self.fd = fd
        self._pending = bytearray()
        self._scan = 0  # what is pending before this holds no newline
        self._done = False
        self._nonblocking: _NonBlocking | None = None
        self._send: MemoryObjectSendStream[bytes] | None = None
        self._receive: MemoryObjectReceiveStream[bytes] | None = None
        if _pollable(fd):
            with contextlib.suppress(OSError):
                self._nonblocking = _NonBlocking(fd)
        if self._nonblocking is None:
            self._start_thread()

    def _start_thread(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)
        token = anyio.lowlevel.current_token()
        send, fd, limit = self._send, self.fd, self.limit

        def pump() -> None:
            pending = bytearray()
            try:
                while chunk := os.read(fd, 1 << 16):
                    scan = len(pending)  # what is already pending holds no newline
                    pending += chunk
                    while (end := pending.find(b"\n", scan)) >= 0:
                        if end + 1 > limit:
                            self.overflow = True
                            return
                        line = bytes(pending[: end + 1])
                        del pending[: end + 1]
                        scan = 0
                        anyio.from_thread.run(send.send, line, token=token)
                    if len(pending) > limit:
                        self.overflow = True
                        return
                if pending:
                    anyio.from_thread.run(send.send, bytes(pending), token=token)
            except Exception:  # noqa: BLE001, S110 - the loop is gone or closed the stream
                pass
            finally:
                with contextlib.suppress(Exception):
                    anyio.from_thread.run_sync(send.close, token=token)

        threading.Thread(target=pump, name="interlock-mcp-stdin", daemon=True).start()

    def __aiter__(self) -> _StdinLines:
        return self

    async def __anext__(self) -> str:
        if self._receive is not None:
            try:
                line = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise StopAsyncIteration from None
            return line.decode("utf-8", "replace")
        return (await self._read_line()).decode("utf-8", "replace")

    async def _read_line(self) -> bytes:
        pending = self._pending
        while not self._done:
            end = pending.find(b"\n", self._scan)
            if end >= 0:
                if end + 1 > self.limit:
                    break
                line = bytes(pending[: end + 1])
                del pending[: end + 1]
                self._scan = 0
                return line
            if len(pending) > self.limit:
                break
            self._scan = len(pending)
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                await anyio.wait_readable(self.fd)
                continue
            except OSError:
                chunk = b""
            if not chunk:  # end of input: what is pending is the last line
                self._done = True
                if pending:
                    line = bytes(pending)
                    pending.clear()
                    return line
            pending += chunk
        else:
            raise StopAsyncIteration
        self.overflow = self._done = True
        pending.clear()
        raise StopAsyncIteration

    def close(self) -> None:
        self._done = True
        if self._receive is not None and self._send is not None:
            self._receive.close()
            self._send.close()
        if self._nonblocking is not None:
            self._nonblocking.restore()


class _StdoutWire:
    """Writes to the client on a pipe or socket without blocking, in the event loop itself
    (the SDK's stdio transport hands every write and flush to a worker thread). Duck-types
    the ``anyio.AsyncFile`` that ``stdio_server`` writes to."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._nonblocking = _NonBlocking(fd)

    async def write(self, text: str) -> None:
        self._buf += text.encode("utf-8")

    async def flush(self) -> None:
        buf = self._buf
        while buf:
            try:
                n = os.write(self.fd, buf)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            del buf[:n]

    def restore(self) -> None:
        self._nonblocking.restore()


@contextlib.contextmanager
def _client_stdout() -> Iterator[_StdoutWire | None]:
    """The client's stdout as a :class:`_StdoutWire`, claimed as the SDK's ``stdio_server``
    claims it (fd 1 diverted to stderr while serving, the wire on a private duplicate), or
    None when fd 1 is not a pipe or socket (then ``stdio_server`` claims it itself)."""
    if not _pollable(1):
        yield None
        return
    buffer, release = sdk_stdio._claim_fd(1, sys.stdout, "wb", sdk_stdio._open_stdout_diversion)
    wire: _StdoutWire | None = None
    try:
        if release is not None:  # claimed: the wire is on a private descriptor
            with contextlib.suppress(OSError, ValueError):
                wire = _StdoutWire(buffer.fileno())
        yield wire
    finally:
        if wire is not None:
            wire.restore()
        if release is not None:
            release()


async def serve_stdio(
    proxy: McpProxy, stop: anyio.Event | None = None, *, max_line: int = MAX_LINE_BYTES
) -> None:
    """Serve the proxy on this process's stdin/stdout until the client closes stdin (or
    ``stop`` is set). While serving, fd 1 is diverted to stderr: stray prints cannot corrupt
    the MCP channel.

    Raises:
        ClientLineTooLong: the client sent a line longer than ``max_line`` bytes (default
            :data:`MAX_LINE_BYTES`, 4 MiB): serving stopped there, as at end of input.
    """
    lines = _StdinLines(sys.stdin.fileno(), max_line)
    try:
        with _client_stdout() as wire:
            await _serve_stdio(proxy, lines, wire, stop)
    finally:
        lines.close()
    if lines.overflow:
        raise ClientLineTooLong(
            f"the client sent a line longer than {max_line} bytes"
            f" ({max_line / 1048576:g} MiB): the session is ended",
            limit=max_line,
        )


async def _serve_stdio(
    proxy: McpProxy, lines: _StdinLines, wire: _StdoutWire | None, stop: anyio.Event | None
) -> None:
    # the stop task's group encloses the transport: cancelling it stops all of it
    async with anyio.create_task_group() as tg:
        if stop is not None:

            async def _stop() -> None:
                await stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(_stop)
        async with stdio_server(
            stdin=cast("anyio.AsyncFile[str]", lines),
            stdout=cast("anyio.AsyncFile[str] | None", wire),
        ) as (read, write):
            # tools/call is relayed to the proxy directly; the rest goes to the SDK server
            await ToolCallRelay(proxy, write).serve(proxy.server, read)
        tg.cancel_scope.cancel()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        UsageError: ``host`` is not a loopback address (the proxy presents the agent's
            capability for whoever connects: it is for local clients only).
        OSError: the address cannot be bound.
    """
    if not is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host}: whoever connects acts with the agent's capability;"
            " listen on 127.0.0.1, ::1 or localhost"
        )
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def transport_security(host: str, port: int) -> TransportSecuritySettings:
    """DNS-rebinding protection for a proxy listening on ``host:port``: the ``Host`` header must
    name this port on ``host`` (as given or in its canonical spelling), ``localhost``,
    ``127.0.0.1`` or ``[::1]``, and an ``Origin``, when sent, must be ``http://`` one of those.
    A web page that had a name of its own resolve to the proxy's address still sends its own
    name in ``Host``, and is refused (421). Never raises.

    Always passed explicitly: the SDK enables its protection by itself only for the exact hosts
    ``127.0.0.1``, ``localhost`` and ``::1``, not for other loopback spellings (``127.0.0.2``,
    ``0:0:0:0:0:0:0:1``) that :func:`bind` accepts.
    """
    bare = host.strip("[]")
    names = {bare, "localhost", "127.0.0.1", "::1"}
    with contextlib.suppress(ValueError):
        names.add(str(ipaddress.ip_address(bare)))
    hosts: list[str] = []
    for name in sorted(names):
        literal = f"[{name}]" if ":" in name else name
        hosts.append(f"{literal}:{port}")
        if port == 80:  # the default port may be left out of Host
            hosts.append(literal)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )


async def serve_http(
    proxy: McpProxy,
    sock: socket.socket,
    host: str,
    stop: anyio.Event | None = None,
    *,
    token: ListenToken,
) -> None:
    """Serve the proxy as streamable HTTP (``/mcp``) on a bound socket (see :func:`bind`) until
    ``stop`` is set. Every HTTP request must carry ``Authorization: Bearer <token>``, else it
    is answered 401 before the MCP server sees it (:func:`require_bearer`). DNS-rebinding
    protection is always on too (:func:`transport_security`): a request whose ``Host`` or
    ``Origin`` names anything but this address is refused."""
    import uvicorn

    class _Uvicorn(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the caller owns signals (see run_proxy)
            yield

    port = int(sock.getsockname()[1])
    app = proxy.server.streamable_http_app(
        host=host.strip("[]"), transport_security=transport_security(host, port)
    )
    # no access log: nothing about a request (its headers least of all) is logged
    config = uvicorn.Config(
        require_bearer(app, token), log_level="warning", access_log=False, lifespan="on"
    )
    server = _Uvicorn(config)
    async with anyio.create_task_group() as tg:
        if stop is not None:

            async def _stop() -> None:
                await stop.wait()
                server.should_exit = True

            tg.start_soon(_stop)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def run_proxy(
    gate: Gate,
    upstream: Upstream,
    options: ProxyOptions,
    *,
    listen: tuple[str, int] | None = None,
    token: ListenToken | None = None,
    on_ready: Callable[[McpProxy, str | None], None] | None = None,
) -> None:
    """Run one proxy session to completion: on stdio (until the client closes stdin), or as
    streamable HTTP on ``listen`` (until SIGINT/SIGTERM) for the clients that present
    ``token`` (required with ``listen``). SIGINT and SIGTERM end the session
    cleanly (``exec.end`` is recorded) when called from the main thread. ``on_ready(proxy,
    url)`` is called once the session is admitted and the upstream initialized (``url`` is
    None on stdio).

    Raises:
        Denied: the session was denied.
        UpstreamError: the upstream could not be started, reached or initialized.
        UsageError: a bad listen address or server name, or ``listen`` without ``token``.
        OSError: the listen address cannot be bound.
    """
    if listen is not None and token is None:
        raise UsageError("listening needs a token its clients must present (ListenToken)")
    sock = bind(*listen) if listen is not None else None

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if threading.current_thread() is threading.main_thread():
                tg.start_soon(_signals, stop)
            try:
                async with open_proxy(gate, upstream, options) as proxy:
                    if sock is not None and listen is not None and token is not None:
                        port = sock.getsockname()[1]
                        host = listen[0] if ":" not in listen[0] else f"[{listen[0].strip('[]')}]"
                        if on_ready is not None:
                            on_ready(proxy, f"http://{host}:{port}/mcp")
                        await serve_http(proxy, sock, listen[0], stop, token=token)
                    else:
                        if on_ready is not None:
                            on_ready(proxy, None)
                        await serve_stdio(proxy, stop)
            finally:
                tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except BaseExceptionGroup as group:
        sole = _sole(group)
        if sole is group:
            raise
        raise sole from None
    finally:
        if sock is not None:
            sock.close()


async def _signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            stop.set()
            return
