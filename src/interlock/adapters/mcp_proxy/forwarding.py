"""The MCP proxy server: every tools/call, resources/read and prompts/get is decided before
it is forwarded upstream."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp.types as types
from mcp.client.session import ClientSession, _clamp_inbound_ttl, _later_revision_fields
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import methods as _methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from interlock.adapters.sdk import disclosed_detail
from interlock.core.model import MAX_REQUEST_BYTES, Effect, ReasonCode
from interlock.errors import MalformedRequest
from interlock.intake import parse_request
from interlock.runtime.supervisor import POLL_S, Watch

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from interlock.gate import Gate
    from interlock.runtime.execution import Execution
from interlock.adapters.mcp_proxy.catalogue import ToolCatalogue
from interlock.adapters.mcp_proxy.ending import EndRecorder
from interlock.adapters.mcp_proxy.governance import (
    _Begun,
    _Failure,
    _fields,
    _Outcome,
    _tool_error,
    continuation_context,
    denial_text,
)
from interlock.adapters.mcp_proxy.options import (
    _CALL,
    _PROBE_ID,
    _PROBE_TIME,
    _PROMPT,
    _READ,
    _UPSTREAM_GONE,
    DENIED_ERROR_CODE,
    PROMPT_ACTION,
    RESOURCE_ACTION,
    TOOL_ACTION,
    ProxyOptions,
    R,
    _CallResult,
)
from interlock.adapters.mcp_proxy.upstream import ANSWER_TOO_LARGE_CODE, DirectRequests

T = TypeVar("T")


def _checked_call_result(raw: dict[str, Any], version: str) -> _CallResult:
    """A ``tools/call`` result object, checked as ``ClientSession.send_request`` checks it for
    ``version`` (the SDK's own steps, pinned ``mcp<3``): a negative ``ttlMs`` floored, the
    version's result surface validated, a later revision's fields dropped, then the model.

    Raises:
        ValidationError: the result is not a valid ``tools/call`` result.
    """
    _clamp_inbound_ttl(raw)
    with contextlib.suppress(KeyError):  # a version without a row: the model checks it
        _methods.validate_server_result("tools/call", version, raw)
    foreign = _later_revision_fields("tools/call", version)
    if not foreign.isdisjoint(raw):
        raw = {key: value for key, value in raw.items() if key not in foreign}
    return _CALL.validate_python(raw, by_name=False)


def _step_all(watched: list[tuple[Watch, anyio.CancelScope]]) -> list[anyio.CancelScope]:
    """Step each watch; the scopes of those whose authorization ended (``step`` never
    raises: a failure to re-verify is itself a deny)."""
    return [scope for watch, scope in watched if watch.step() is not None]


class McpProxy:
    """One proxy session: the gate, the upstream :class:`ClientSession`, the session execution.

    Use :func:`open_proxy`. :attr:`server` is the low-level MCP server to serve to the agent's
    client (any transport; :func:`serve_stdio` and :func:`serve_http` are the usual ones).
    """

    def __init__(
        self,
        gate: Gate,
        upstream: ClientSession,
        session: Execution,
        *,
        server_name: str,
        options: ProxyOptions,
        tools: ToolCatalogue | None = None,
        ends: EndRecorder | None = None,
        direct: DirectRequests | None = None,
    ) -> None:
        self.gate = gate
        self.upstream = upstream
        self.session = session
        self.server_name = server_name
        self.options = options
        #: the tools the upstream listed: a tools/call must name one exactly
        self.tools = tools if tools is not None else ToolCatalogue()
        #: why the upstream is known to be unusable (then nothing more is forwarded), or None
        self.upstream_down: str | None = None
        #: commits the end records of governed requests off the critical path (closed by
        #: :func:`open_proxy` before the session ends)
        self.ends = ends if ends is not None else EndRecorder(gate)
        #: governed requests admitted or being admitted and not yet answered
        self._inflight = 0
        self._server: Server[Any] | None = None
        #: ``tools/call`` written to a stdio upstream without the SDK client session (see
        #: :class:`DirectRequests`), or None (HTTP upstreams)
        self.direct = direct
        #: forwarded requests being re-verified by the shared watcher (:meth:`watching`)
        self._watched: dict[int, tuple[Watch, anyio.CancelScope]] = {}
        self._watcher = False

    @property
    def session_id(self) -> str:
        """The session's execution id: every governed request's ``parent``."""
        return self.session.id

    # -- requests -------------------------------------------------------------------------------

    def _request(
        self,
        action: str,
        rtype: str,
        rid: str,
        args: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "principal": self.options.principal,
            "action": action,
            "resource": {"type": rtype, "id": rid},
            "args": dict(args),
            "capability": self.options.capability,
            "parent": self.session_id,
        }
        if context is not None:
            raw["context"] = dict(context)
        return raw

    def _begin(self, raw: dict[str, Any]) -> _Begun:
        """Admit the request and commit ``exec.start`` (blocking: runs in a worker thread)."""
        # I1: the allow and exec.start are committed together, before anything is forwarded
        decision, req = self.gate.admit(
            raw,
            start={
                "supervisor": "mcp-proxy",
                "server": self.server_name,
                "interval_ms": round(self.options.interval * 1000),
                "timeout_ms": round(self.options.timeout * 1000),
            },
        )
        if not decision.allowed or req is None:
            return _Begun(decision=decision)
        try:
            if not self._watcher:
                raise RuntimeError("no watcher runs (McpProxy.watching)")
            watch = Watch(
                self.gate, req, interval=self.options.interval, snapshot=decision.snapshot
            )
        except Exception as exc:  # noqa: BLE001 - cannot supervise it, so do not run it
            why = f"not run: cannot supervise the request ({type(exc).__name__})"
            self.ends.submit(req, None, {"duration_ms": 0, "outcome": "error", "error": "internal"})
            return _Begun(decision=decision, request=req, problem=why)
        return _Begun(decision=decision, request=req, watch=watch)

    async def _on_gate(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking gate call: in the event loop itself when no other governed request
        is in flight (the usual one-call-at-a-time agent: no thread hand-off), else in a worker
        thread, so that concurrent admissions can share one ledger commit."""
        if self._inflight == 0:
            self._inflight += 1
            try:
                return fn(*args)
            finally:
                self._inflight -= 1
        self._inflight += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self._inflight -= 1

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """Re-verify every forwarded request from one task while the block runs.

        Every :data:`POLL_S` the watcher steps the watch of each request in flight (in a
        worker thread) and cancels the forwarding of each whose authorization ended, as a
        per-request watch task would, without a task, a task group and a cancellation for
        every call. Outside the block nothing is forwarded: an allowed request is recorded as
        not run ("cannot supervise the request").
        """
        try:
            async with anyio.create_task_group() as tg:
                self._watcher = True
                tg.start_soon(self._watch_all)
                try:
                    yield
                finally:
                    self._watcher = False
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # the block's own exception, wrapped by the task group: pass it on as it was raised
            # (the session records its type)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _watch_all(self) -> None:
        while True:
            await anyio.sleep(POLL_S)
            if not self._watched:
                continue
            watched = list(self._watched.values())
            ended = await anyio.to_thread.run_sync(_step_all, watched)
            for scope in ended:
                scope.cancel()

    async def _attempt(
        self, forward: Callable[[], Awaitable[R]]
    ) -> tuple[R | None, _Failure | None]:
        if self.upstream_down is not None:
            return None, _Failure(
                "upstream_unavailable",
                types.CONNECTION_CLOSED,
                f"upstream unavailable: {self.upstream_down}; not forwarded",
            )
        try:
            return await forward(), None
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                self.upstream_down = "the connection to the upstream server closed"
                return None, _Failure(
                    "upstream_unavailable",
                    types.CONNECTION_CLOSED,
                    "upstream unavailable: the connection to the upstream server closed"
                    " before it answered",
                )
            if exc.code == types.REQUEST_TIMEOUT:
                return None, _Failure(
                    "timeout",
                    types.REQUEST_TIMEOUT,
                    f"upstream timeout: no answer within {self.options.timeout:g} s",
                )
            if exc.code == ANSWER_TOO_LARGE_CODE:
                # made by our reader (upstream.py), not the upstream: its message is ours
                return None, _Failure("answer_too_large", exc.code, exc.message[:500], exc)
            return None, _Failure("upstream_error", exc.code, exc.message[:500], exc)
        except _UPSTREAM_GONE:
            self.upstream_down = "the connection to the upstream server closed"
            return None, _Failure(
                "upstream_unavailable",
                types.CONNECTION_CLOSED,
                "upstream unavailable: the connection to the upstream server closed",
            )
        except ValidationError:
            return None, _Failure(
                "upstream_error",
                types.INTERNAL_ERROR,
                "upstream error: its answer is not a valid MCP result",
            )
        except Exception as exc:  # noqa: BLE001 - any other failure is an error answer
            return None, _Failure(
                "internal", types.INTERNAL_ERROR, f"proxy error: {type(exc).__name__} forwarding"
            )

    async def governed(
        self,
        action: str,
        rtype: str,
        rid: str,
        args: Mapping[str, Any],
        forward: Callable[[], Awaitable[R]],
        context: Mapping[str, Any] | None = None,
    ) -> _Outcome[R]:
        """Decide ``action`` on ``rtype::rid`` with ``args`` (and the request ``context``);
        forward it only when allowed and recorded.

        Never raises except on cancellation (after recording the end).
        """
        raw = self._request(action, rtype, rid, args, context)
        begun = await self._on_gate(self._begin, raw)
        # the ledger is idle while this request is upstream: the ends waiting are written now
        self.ends.nudge()
        d = begun.decision
        ident = {"decision_hash": d.decision_hash, "request_id": d.request_id}
        if begun.request is None or not d.allowed:
            return _Outcome(
                message=denial_text(d),
                code=DENIED_ERROR_CODE,
                data={"reason_codes": list(d.codes), **ident},
            )
        req, watch = begun.request, begun.watch
        if watch is None:
            return _Outcome(
                message=f"{begun.problem} (request {req.id})",
                code=DENIED_ERROR_CODE,
                data={"reason_codes": [ReasonCode.LEDGER_UNAVAILABLE.value], **ident},
            )

        started = time.monotonic()
        result: R | None = None
        failure: _Failure | None = None
        self._inflight += 1
        key = id(watch)
        try:
            with anyio.CancelScope() as scope:
                self._watched[key] = (watch, scope)
                result, failure = await self._attempt(forward)
        except BaseException:
            # cancelled from outside (the client cancelled, the proxy is stopping): record it
            fields = _fields(started, None, _Failure("cancelled", 0, "cancelled"))
            self.ends.submit(req, watch.denied, fields)
            raise
        finally:
            self._watched.pop(key, None)
            self._inflight -= 1

        # the end record follows off the critical path (EndRecorder), always after the start's
        # commit: the answer does not wait for it
        reason = watch.denied
        self.ends.submit(req, reason, _fields(started, result, failure))
        if reason is not None:
            # the agent reads the detail only of codes outside OPAQUE_CODES (as for denials)
            shown = disclosed_detail(reason.code, reason.detail)
            return _Outcome(
                message=(
                    f"terminated by Interlock: {reason.code.value}"
                    f"{': ' + shown if shown else ''} (execution {req.id})"
                ),
                code=DENIED_ERROR_CODE,
                data={"reason_codes": [reason.code.value], **ident},
            )
        if failure is not None:
            return _Outcome(
                message=f"{failure.message} (execution {req.id})",
                code=failure.code,
                data={"execution": req.id},
                passthrough=failure.passthrough,
            )
        return _Outcome(result=result)

    # -- handlers -------------------------------------------------------------------------------

    def _check_session(self) -> None:
        reason = self.session.reason
        if reason is not None:
            raise MCPError(
                code=DENIED_ERROR_CODE,
                message=f"the proxy session was terminated: {reason.code.value}"
                f" (execution {self.session_id})",
            )
        if self.upstream_down is not None:
            raise MCPError(
                code=types.CONNECTION_CLOSED, message=f"upstream unavailable: {self.upstream_down}"
            )

    async def _listed(self, request: Any, result_type: type[R]) -> R:
        self._check_session()
        result, failure = await self._attempt(
            lambda: self.upstream.send_request(
                request, result_type, request_read_timeout_seconds=self.options.timeout
            )
        )
        if failure is not None:
            raise failure.passthrough or MCPError(code=failure.code, message=failure.message)
        if result is None:  # pragma: no cover - _attempt returns one or the other
            raise MCPError(code=types.INTERNAL_ERROR, message="no answer")
        return result

    @staticmethod
    def _page(params: types.PaginatedRequestParams | None) -> types.PaginatedRequestParams | None:
        return None if params is None else types.PaginatedRequestParams(cursor=params.cursor)

    async def fetch_tools(self, cursor: str | None) -> types.ListToolsResult:
        """One page of the upstream's ``tools/list``.

        Raises:
            MCPError: the session was terminated, or the upstream failed or is gone.
        """
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        return await self._listed(types.ListToolsRequest(params=params), types.ListToolsResult)

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        """Every tool the upstream lists (all its pages, listed again now), in one page: what
        the client sees is what it may call (:class:`ToolCatalogue`)."""
        self._check_session()
        if params is not None and params.cursor:
            raise MCPError(
                code=types.INVALID_PARAMS,
                message="invalid cursor: the proxy answers tools/list in one page",
            )
        await self.tools.refresh(self.fetch_tools)
        if self.tools.problem is not None:
            self._check_session()
            raise MCPError(code=types.INTERNAL_ERROR, message=self.tools.problem)
        tools = self.tools.tools()
        if self.options.hide_denied:
            tools = await anyio.to_thread.run_sync(self._could_allow, tools)
        return types.ListToolsResult(tools=tools)

    def _could_allow(self, tools: list[types.Tool]) -> list[types.Tool]:
        """The tools a call with empty arguments could be allowed for, by ``gate.reverify``:
        a pure decision, nothing recorded. A policy error (a policy that reads an argument
        without ``has``) counts as "could allow"."""
        kept = []
        for tool in tools:
            raw = self._request(TOOL_ACTION, "McpTool", f"{self.server_name}/{tool.name}", {})
            try:
                req = parse_request(raw, request_id=_PROBE_ID, time=_PROBE_TIME)
            except MalformedRequest:
                continue
            verdict = self.gate.reverify(req)
            if verdict.effect is Effect.ALLOW or any(
                r.code is ReasonCode.POLICY_ERROR for r in verdict.reasons
            ):
                kept.append(tool)
        return kept

    async def _refusal(self, params: types.CallToolRequestParams) -> str | None:
        """Why a ``tools/call`` is malformed before any decision: a name the upstream did not
        list (exactly), or arguments that are too large or fail the tool's ``inputSchema``.
        ``None`` when it may be decided."""
        listed = await self.tools.resolve(params.name, self.fetch_tools)
        if isinstance(listed, str):
            return listed
        arguments = params.arguments or {}
        try:
            size = len(json.dumps(arguments, separators=(",", ":"), ensure_ascii=False))
        except (TypeError, ValueError, RecursionError):
            return "the arguments are not JSON"
        if size > MAX_REQUEST_BYTES:
            return f"the arguments are larger than {MAX_REQUEST_BYTES} bytes"
        if listed.check is None:  # pragma: no cover - lookup returns only callable tools
            return "the tool cannot be called"
        problem = listed.check(arguments)
        if problem is not None:
            return f"the arguments do not match the tool's inputSchema: {problem}"
        return None

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        refusal = await self._refusal(params)
        if refusal is not None:
            # recorded like any denial; nothing is forwarded
            raw = self._request(
                TOOL_ACTION,
                "McpTool",
                f"{self.server_name}/{params.name}",
                params.arguments or {},
                continuation_context(params),
            )
            decision = await self._on_gate(
                self.gate.refuse, raw, ReasonCode.MALFORMED_REQUEST, refusal
            )
            return _tool_error(denial_text(decision))
        forwarded = types.CallToolRequest(
            params=types.CallToolRequestParams(
                name=params.name,
                arguments=params.arguments,
                input_responses=params.input_responses,
                request_state=params.request_state,
            )
        )
        out = await self.governed(
            TOOL_ACTION,
            "McpTool",
            f"{self.server_name}/{params.name}",
            params.arguments or {},
            lambda: self._send_call(forwarded),
            continuation_context(forwarded.params),
        )
        if out.result is not None:
            return out.result
        if out.passthrough is not None:
            raise out.passthrough
        return _tool_error(out.message)

    async def _send_call(self, forwarded: types.CallToolRequest) -> _CallResult:
        """Send a governed ``tools/call`` upstream: directly on a stdio upstream that speaks a
        handshake-era protocol version (:class:`DirectRequests`), else through the SDK client
        session. Either way the result is checked as the SDK checks it."""
        version = self.upstream.protocol_version
        direct = self.direct
        if direct is None or version is None or version in MODERN_PROTOCOL_VERSIONS:
            return await self.upstream.send_request(
                forwarded, _CALL, request_read_timeout_seconds=self.options.timeout
            )
        raw = await direct.request(
            "tools/call",
            forwarded.params.model_dump(by_alias=True, mode="json", exclude_none=True),
            self.options.timeout,
        )
        return _checked_call_result(raw, version)

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return await self._listed(
            types.ListResourcesRequest(params=self._page(params)), types.ListResourcesResult
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return await self._listed(
            types.ListResourceTemplatesRequest(params=self._page(params)),
            types.ListResourceTemplatesResult,
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        forwarded = types.ReadResourceRequest(
            params=types.ReadResourceRequestParams(
                uri=params.uri,
                input_responses=params.input_responses,
                request_state=params.request_state,
            )
        )
        out = await self.governed(
            RESOURCE_ACTION,
            "McpResource",
            f"{self.server_name}/{params.uri}",
            {"uri": params.uri},
            lambda: self.upstream.send_request(
                forwarded, _READ, request_read_timeout_seconds=self.options.timeout
            ),
            continuation_context(forwarded.params),
        )
        if out.result is not None:
            return out.result
        raise out.as_error()

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return await self._listed(
            types.ListPromptsRequest(params=self._page(params)), types.ListPromptsResult
        )

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        forwarded = types.GetPromptRequest(
            params=types.GetPromptRequestParams(
                name=params.name,
                arguments=params.arguments,
                input_responses=params.input_responses,
                request_state=params.request_state,
            )
        )
        out = await self.governed(
            PROMPT_ACTION,
            "McpPrompt",
            f"{self.server_name}/{params.name}",
            params.arguments or {},
            lambda: self.upstream.send_request(
                forwarded, _PROMPT, request_read_timeout_seconds=self.options.timeout
            ),
            continuation_context(forwarded.params),
        )
        if out.result is not None:
            return out.result
        raise out.as_error()

    # -- the server ----------------------------------------------------------------------------

    @property
    def server(self) -> Server[Any]:
        """The MCP server the agent's client talks to. It offers what the upstream offers
        (tools, resources, prompts), under the upstream's name and instructions."""
        if self._server is not None:
            return self._server
        caps = self.upstream.server_capabilities or types.ServerCapabilities()
        info = self.upstream.server_info
        handlers: dict[str, Any] = {}
        if caps.tools is not None:
            handlers.update(on_list_tools=self.list_tools, on_call_tool=self.call_tool)
        if caps.resources is not None:
            handlers.update(
                on_list_resources=self.list_resources,
                on_list_resource_templates=self.list_resource_templates,
                on_read_resource=self.read_resource,
            )
        if caps.prompts is not None:
            handlers.update(on_list_prompts=self.list_prompts, on_get_prompt=self.get_prompt)
        self._server = Server(
            self.server_name,
            version=info.version if info is not None else "",
            instructions=self.upstream.instructions,
            **handlers,
        )
        return self._server
