"""One MCP proxy session: the upstream client session, connected and governed for one agent."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp.types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from interlock.errors import UsageError

if TYPE_CHECKING:
    from interlock.gate import Gate
    from interlock.runtime.execution import Execution
from interlock.adapters.mcp_proxy.catalogue import ToolCatalogue
from interlock.adapters.mcp_proxy.forwarding import McpProxy
from interlock.adapters.mcp_proxy.options import (
    _UPSTREAM_GONE,
    SESSION_ACTION,
    ProxyOptions,
    Upstream,
    UpstreamError,
    check_server_name,
)
from interlock.adapters.mcp_proxy.upstream import DirectRequests, bounded_stdio_client

# -- opening a session -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _session(
    gate: Gate, request: dict[str, Any], interval: float
) -> AsyncIterator[Execution]:
    """Admit the session and commit ``exec.start``; commit its end on the way out (even when
    cancelled). Entered from a worker thread, so a revocation terminates the session (its
    requests are then denied) without cancelling the task that serves the client."""
    run = gate.execution(request, interval=interval)
    await anyio.to_thread.run_sync(run.__enter__)  # raises Denied
    try:
        yield run
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(run.__exit__, type(exc), exc, exc.__traceback__)
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(run.__exit__, None, None, None)


@contextlib.asynccontextmanager
async def _connect(
    upstream: Upstream, startup: float, tools: ToolCatalogue, max_answer: int
) -> AsyncIterator[tuple[ClientSession, DirectRequests | None]]:
    from interlock._version import __version__

    async with contextlib.AsyncExitStack() as stack:
        direct: DirectRequests | None = None
        try:
            if upstream.url is not None:
                streams = await stack.enter_async_context(streamable_http_client(upstream.url))
            else:
                params = StdioServerParameters(
                    command=upstream.command[0],
                    args=list(upstream.command[1:]),
                    env=upstream.child_env(),
                    cwd=upstream.cwd,
                )
                direct = DirectRequests()
                streams = await stack.enter_async_context(
                    bounded_stdio_client(
                        params,
                        errlog=upstream.errlog or sys.stderr,
                        max_bytes=max_answer,
                        direct=direct,
                    )
                )
        except OSError as exc:
            raise UpstreamError(
                f"cannot start the upstream server: {exc.strerror or exc}",
                command=" ".join(upstream.command)[:200],
            ) from exc
        client = await stack.enter_async_context(
            ClientSession(
                streams[0],
                streams[1],
                message_handler=tools.on_message,
                client_info=types.Implementation(name="interlock-mcp-proxy", version=__version__),
            )
        )
        try:
            with anyio.fail_after(startup):
                await client.initialize()
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream server did not initialize within {startup:g} s"
            ) from exc
        except MCPError as exc:
            raise UpstreamError(f"the upstream server did not initialize: {exc.message}") from exc
        except (OSError, RuntimeError, ValidationError, *_UPSTREAM_GONE) as exc:
            raise UpstreamError(
                f"the upstream server did not initialize: {type(exc).__name__}"
            ) from exc
        yield client, direct


async def _close_ends(proxy: McpProxy) -> None:
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(proxy.ends.close)


@contextlib.asynccontextmanager
async def open_proxy(
    gate: Gate, upstream: Upstream, options: ProxyOptions
) -> AsyncIterator[McpProxy]:
    """Start a proxy session: admit it (``mcp.session``), connect to the upstream, initialize
    it and list its tools (:class:`ToolCatalogue`). With ``options.name`` the session is
    admitted before the upstream is started; without, the upstream is started first to learn
    its name. Leaving ends the session (``exec.end``) and stops the upstream.

    Raises:
        Denied: the session was denied (or its ``exec.start`` not recorded): nothing is served.
        UpstreamError: the upstream could not be started, reached or initialized in time.
        UsageError: the upstream's name cannot name a server (give ``options.name``).
    """
    try:
        async with _proxy_session(gate, upstream, options) as proxy:
            yield proxy
    except BaseExceptionGroup as group:
        # the SDK's transports are task groups: what crosses them arrives wrapped
        sole = _sole(group)
        if sole is group:
            raise
        raise sole from None


def _sole(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member exception groups, else ``exc``."""
    inner = exc
    while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
        inner = inner.exceptions[0]
    return inner


@contextlib.asynccontextmanager
async def _proxy_session(
    gate: Gate, upstream: Upstream, options: ProxyOptions
) -> AsyncIterator[McpProxy]:
    async with contextlib.AsyncExitStack() as stack:

        def request(name: str) -> dict[str, Any]:
            args = upstream.describe()
            if options.listen is not None:
                args["listen"] = options.listen
            req: dict[str, Any] = {
                "principal": options.principal,
                "action": SESSION_ACTION,
                "resource": {"type": "McpServer", "id": name},
                "args": args,
                "capability": options.capability,
            }
            if options.parent:
                req["parent"] = options.parent
            return req

        run: Execution | None = None
        if options.name is not None:
            run = await stack.enter_async_context(
                _session(gate, request(options.name), options.interval)
            )
        tools = ToolCatalogue()
        client, direct = await stack.enter_async_context(
            _connect(upstream, options.startup_timeout, tools, options.max_answer_bytes)
        )
        name = options.name
        if run is None:
            info = client.server_info
            name = check_server_name(info.name if info is not None else "")
            run = await stack.enter_async_context(_session(gate, request(name), options.interval))
        if name is None:  # pragma: no cover - set on both paths above
            raise UsageError("no server name")
        proxy = McpProxy(
            gate, client, run, server_name=name, options=options, tools=tools, direct=direct
        )
        # left before the session ends: every request's end record is committed (or reported)
        # before the session's own exec.end
        stack.push_async_callback(_close_ends, proxy)
        # one task re-verifies every forwarded request (stopped before the ends are drained)
        await stack.enter_async_context(proxy.watching())
        caps = client.server_capabilities
        if caps is not None and caps.tools is not None:
            # list at once: a client that calls before it lists is judged against this listing
            # (a failure leaves nothing callable; the next call or tools/list tries again)
            await tools.refresh(proxy.fetch_tools)
        yield proxy
