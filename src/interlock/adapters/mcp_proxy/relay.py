"""The stdio fast path for ``tools/call``: governed and answered without the SDK server stack.

    async with stdio_server(...) as (read, write):
        await ToolCallRelay(proxy, write).serve(proxy.server, read)

Every message from the client passes through :meth:`ToolCallRelay.serve`. Once the client has
completed the handshake (``initialize`` answered by the SDK server, then
``notifications/initialized``) on a handshake-era protocol version, a ``tools/call`` request is
handled here: its params are checked as the SDK server checks them (the per-version request
surface, then :class:`mcp.types.CallToolRequestParams`; INVALID_PARAMS otherwise), passed to
:meth:`McpProxy.call_tool` — the same governance as on the SDK path: the listed-tool and
``inputSchema`` checks, the decision, ``exec.start`` before forwarding, the answer-size cap —
and its result is shaped for the wire by the SDK's per-version result sieve. A
``notifications/cancelled`` naming such a request cancels it (its end is recorded, no answer is
sent). Everything else (the handshake, listing, resources, prompts, pings, any message before
the handshake completes, and every message of the 2026-07-28 protocol, which has no handshake)
goes to the SDK server unchanged.

What this saves per call is the SDK server's dispatch (request classification, context,
middleware, per-request task and its streams): about a millisecond on a loaded two-core machine.
OpenTelemetry spans of the SDK server are not produced for the calls relayed here.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import mcp.types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.server.lowlevel import Server

    from interlock.adapters.mcp_proxy.forwarding import McpProxy

__all__ = ["ToolCallRelay"]

_INVALID = types.ErrorData(code=types.INVALID_PARAMS, message="Invalid request parameters", data="")


class ToolCallRelay:
    """Route a client's messages: ``tools/call`` to the proxy directly, the rest to the SDK
    server (:attr:`inbox`, :attr:`outbox`). See the module."""

    def __init__(self, proxy: McpProxy, write: Any) -> None:
        self.proxy = proxy
        self._write = write
        self._in_send: MemoryObjectSendStream[SessionMessage | Exception]
        self.inbox: MemoryObjectReceiveStream[SessionMessage | Exception]
        self._in_send, self.inbox = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        self.outbox: MemoryObjectSendStream[SessionMessage]
        self._out_recv: MemoryObjectReceiveStream[SessionMessage]
        self.outbox, self._out_recv = anyio.create_memory_object_stream[SessionMessage](0)
        caps = proxy.upstream.server_capabilities
        self._tools = caps is not None and caps.tools is not None
        self._init_id: types.RequestId | None = None
        #: the protocol version the SDK server answered ``initialize`` with, or None
        self.version: str | None = None
        #: whether ``tools/call`` is relayed here (handshake completed, handshake-era version)
        self.active = False
        self._calls: dict[types.RequestId, anyio.CancelScope] = {}
        #: how many ``tools/call`` requests were answered here (not by the SDK server)
        self.relayed = 0

    # -- routing -------------------------------------------------------------------------------

    async def serve(self, server: Server[Any], read: Any) -> None:
        """Serve the client's messages from ``read`` (the transport's incoming stream) until it
        ends: ``tools/call`` here, the rest by ``server``. At the end of input the SDK server's
        input ends too, and the calls still in flight here are cancelled (their end recorded),
        as the SDK server cancels its own."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._forward_out)
            tg.start_soon(self._run_server, server)
            try:
                async with self._in_send:
                    async for item in read:
                        if isinstance(item, SessionMessage) and self._take(item.message, tg):
                            continue
                        await self._in_send.send(item)
            finally:
                for scope in list(self._calls.values()):
                    scope.cancel()
        # as the SDK server closes its write stream: the transport's writer ends
        self._write.close()

    async def _run_server(self, server: Server[Any]) -> None:
        try:
            await server.run(self.inbox, self.outbox, server.create_initialization_options())
        finally:
            self.outbox.close()  # ends _forward_out

    def _take(self, message: Any, tg: anyio.abc.TaskGroup) -> bool:
        """Handle ``message`` here (True) or leave it to the SDK server (False)."""
        if isinstance(message, types.JSONRPCRequest):
            if message.method == "initialize":
                self._init_id, self.version, self.active = message.id, None, False
                return False
            if self.active and message.method == "tools/call" and message.id not in self._calls:
                scope = anyio.CancelScope()
                self._calls[message.id] = scope
                tg.start_soon(self._call, message, scope)
                return True
            return False
        if isinstance(message, types.JSONRPCNotification):
            if message.method == "notifications/initialized":
                self.active = (
                    self._tools
                    and self.version is not None
                    and self.version not in MODERN_PROTOCOL_VERSIONS
                )
                return False
            if message.method == "notifications/cancelled" and isinstance(message.params, dict):
                running = self._calls.get(message.params.get("requestId"))  # type: ignore[arg-type]
                if running is not None:
                    running.cancel()
                    return True
        return False

    async def _forward_out(self) -> None:
        """The SDK server's messages to the client; notes the version ``initialize`` chose."""
        async with self._out_recv:
            async for item in self._out_recv:
                msg = item.message
                if (
                    isinstance(msg, types.JSONRPCResponse)
                    and self._init_id is not None
                    and msg.id == self._init_id
                ):
                    version = msg.result.get("protocolVersion")
                    self.version = version if isinstance(version, str) else None
                    self._init_id = None
                await self._write.send(item)

    # -- one call ------------------------------------------------------------------------------

    async def _call(self, request: types.JSONRPCRequest, scope: anyio.CancelScope) -> None:
        answer: types.JSONRPCResponse | types.JSONRPCError | None = None
        try:
            with scope:
                answer = await self._answer(request)
        finally:
            self._calls.pop(request.id, None)
        if answer is None:  # cancelled by the client: never answered (as the SDK server does)
            return
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._write.send(SessionMessage(answer))

    async def _answer(
        self, request: types.JSONRPCRequest
    ) -> types.JSONRPCResponse | types.JSONRPCError:
        version = self.version or ""

        def error(data: types.ErrorData) -> types.JSONRPCError:
            return types.JSONRPCError(jsonrpc="2.0", id=request.id, error=data)

        try:
            _methods.validate_client_request("tools/call", version, request.params)
            params = types.CallToolRequestParams.model_validate(
                {} if request.params is None else request.params, by_name=False
            )
        except (ValidationError, KeyError):
            return error(_INVALID)
        try:
            result = await self.proxy.call_tool(None, params)  # type: ignore[arg-type]
        except MCPError as exc:
            return error(exc.error)
        except Exception as exc:  # noqa: BLE001 - answered, as the SDK server would
            return error(
                types.ErrorData(
                    code=types.INTERNAL_ERROR, message=f"proxy error: {type(exc).__name__}"
                )
            )
        try:
            dumped = _methods.serialize_server_result(
                "tools/call",
                version,
                result.model_dump(by_alias=True, mode="json", exclude_none=True),
            )
        except ValidationError:
            return error(
                types.ErrorData(
                    code=types.INTERNAL_ERROR, message="Handler returned an invalid result"
                )
            )
        self.relayed += 1
        return types.JSONRPCResponse(jsonrpc="2.0", id=request.id, result=dumped)
