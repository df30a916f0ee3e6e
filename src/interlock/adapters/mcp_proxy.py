"""The MCP governance proxy behind ``interlock mcp-proxy``: an MCP server to the agent's client,
an MCP client to the upstream server, and the gate in between.

    >>> gate = interlock.open(".interlock")                                    # doctest: +SKIP
    >>> upstream = Upstream(command=("python", "-m", "mcp_server_time"))       # doctest: +SKIP
    >>> options = ProxyOptions(principal="spiffe://acme.test/agent/researcher",
    ...                        capability=token)                               # doctest: +SKIP
    >>> run_proxy(gate, upstream, options)     # MCP on stdin/stdout until EOF  # doctest: +SKIP

What is governed (DESIGN §1: an MCP request is an action like any other):

==================  ======================  ==================================  ===============
MCP request         action                  resource                            args
==================  ======================  ==================================  ===============
the proxy session   ``mcp.session``         ``McpServer::"<server>"``           ``transport``,
                                                                                ``command`` or
                                                                                ``url``
``tools/call``      ``mcp.tools/call``      ``McpTool::"<server>/<tool>"``      the arguments
``resources/read``  ``mcp.resources/read``  ``McpResource::"<server>/<uri>"``   ``{uri}``
``prompts/get``     ``mcp.prompts/get``     ``McpPrompt::"<server>/<prompt>"``  the arguments
==================  ======================  ==================================  ===============

``<server>`` is ``--name`` or else the upstream's ``serverInfo.name`` (a name the upstream
chooses for itself: pin it with ``--name`` when policies rely on it).

* **The session is an execution.** It is admitted (decision, ``exec.start``) before anything is
  served — before the upstream is even started when the name is given — and re-verified while
  it runs (:class:`~interlock.runtime.execution.Execution`); it ends with ``exec.end`` (or
  ``exec.terminated``). Every governed request names it as ``parent``: once the session is
  terminated (its capability revoked, its principal quarantined, ...), every request in it is
  denied (``LINEAGE_BROKEN``, unless an earlier validator already denies it) and listing is
  refused.
* **Each governed request is an execution too** (I1): the allow decision and ``exec.start``
  are committed before the request is forwarded; ``exec.end`` carries ``result_sha256`` (the
  SHA-256 of the RFC 8785 bytes of the upstream's result, in its JSON form) or the failure.
  The request is re-verified while it waits for the upstream and cancelled (and recorded as
  ``exec.terminated``) when its authorization stops holding. If ``exec.end`` cannot be
  committed, the result is withheld from the agent.
* **A denial is never forwarded.** ``tools/call`` answers a tool error (``isError``);
  ``resources/read`` and ``prompts/get`` answer the JSON-RPC error :data:`DENIED_ERROR_CODE`.
  The text names the reason codes and the decision hash, e.g. ``denied by Interlock:
  POLICY_NO_PERMIT: ... (decision <sha256>, request <id>)``. The details of capability
  failures stay on the ledger (STYLE: the agent learns only the code).
* **Upstream failures are answered, never retried**: an upstream that does not answer within
  ``timeout`` (``REQUEST_TIMEOUT``), or that died (``CONNECTION_CLOSED``: every later request
  is answered at once, not forwarded, and still decided and recorded), or that answered
  something that is not MCP. An upstream JSON-RPC error is passed through unchanged.
* Listing (``tools/list``, ``resources/list``, ``resources/templates/list``, ``prompts/list``)
  reads metadata and is not an action: it is forwarded without a decision while the session is
  authorized. With ``hide_denied``, ``tools/list`` keeps only the tools the capability and
  policy could allow, probed with empty arguments through ``gate.reverify`` (pure: nothing is
  recorded, so listing does not fill the ledger). A tool that policy allows only for some
  arguments is therefore hidden; a hidden tool that is called anyway is decided like any other.
* Not proxied: completions, subscriptions, logging, and requests from the upstream to the client
  (sampling, elicitation, roots).
* A continued request (``inputResponses`` / ``requestState``, answering an upstream's
  ``InputRequiredResult``) is decided with their RFC 8785 digests as the request's ``context``
  (:func:`continuation_context`): what is forwarded is what was decided and recorded.
* Containment: the spawned upstream gets the proxy's environment without any ``INTERLOCK_*``
  variable, but it runs as the same OS user (it could read the home's files: run untrusted
  upstreams as another user). ``--listen`` always enables DNS-rebinding protection
  (:func:`transport_security`). A stdio client line longer than :data:`MAX_LINE_BYTES` ends
  the session (:class:`ClientLineTooLong`).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TextIO, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp.types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, TypeAdapter, ValidationError

from interlock.adapters.sdk import disclosed_detail
from interlock.core.canonical import digest
from interlock.core.model import Effect, ReasonCode, RecordType
from interlock.core.net import is_loopback
from interlock.errors import Error, MalformedRequest, UsageError
from interlock.intake import parse_request
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S, POLL_S, Watch

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from interlock.core.model import ActionRequest, Decision
    from interlock.gate import Gate
    from interlock.runtime.execution import Execution

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "DENIED_ERROR_CODE",
    "MAX_LINE_BYTES",
    "PROMPT_ACTION",
    "RESOURCE_ACTION",
    "SESSION_ACTION",
    "TOOL_ACTION",
    "ClientLineTooLong",
    "McpProxy",
    "ProxyOptions",
    "Upstream",
    "UpstreamError",
    "continuation_context",
    "denial_text",
    "open_proxy",
    "result_digest",
    "run_proxy",
    "serve_http",
    "serve_stdio",
    "transport_security",
]

SESSION_ACTION = "mcp.session"
TOOL_ACTION = "mcp.tools/call"
RESOURCE_ACTION = "mcp.resources/read"
PROMPT_ACTION = "mcp.prompts/get"
DEFAULT_TIMEOUT_S = 30.0
#: how long the upstream may take to start and answer ``initialize`` (``npx`` may download)
DEFAULT_STARTUP_TIMEOUT_S = 60.0
#: JSON-RPC error code of a denied ``resources/read`` or ``prompts/get`` (implementation-defined
#: server error range, JSON-RPC 2.0 §5.1; the SDK uses -32000, -32001 and -32020..-32042)
DENIED_ERROR_CODE = -32003
#: the environment variable that carries the agent's capability: never passed to the upstream
#: every ``INTERLOCK_*`` variable (capability, home, principal, execution id, ...) is removed
#: from the spawned upstream's environment
INTERLOCK_ENV_PREFIX = "INTERLOCK_"
#: the longest line (one JSON-RPC message, newline included) the stdio client may send: a
#: longer one ends the session (:class:`ClientLineTooLong`) instead of growing memory unbounded
MAX_LINE_BYTES = 4 * 1024 * 1024

# a server name becomes part of resource ids (``<server>/<tool>``) and of capability rights
# (fullmatch: ``$`` would also match before a trailing newline)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_URL_RE = re.compile(r"https?://[^\s]+")
# what ``gate.reverify`` needs besides the request: its id and time are never recorded
_PROBE_ID = "00000000-0000-7000-8000-000000000000"
_PROBE_TIME = "1970-01-01T00:00:00.000000Z"
_UPSTREAM_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)

_CallResult = types.CallToolResult | types.InputRequiredResult
_ReadResult = types.ReadResourceResult | types.InputRequiredResult
_PromptResult = types.GetPromptResult | types.InputRequiredResult
_CALL: TypeAdapter[_CallResult] = TypeAdapter(_CallResult)
_READ: TypeAdapter[_ReadResult] = TypeAdapter(_ReadResult)
_PROMPT: TypeAdapter[_PromptResult] = TypeAdapter(_PromptResult)

R = TypeVar("R", bound=BaseModel)


class UpstreamError(Error):
    """The upstream MCP server could not be started, reached or initialized."""


class ClientLineTooLong(Error):
    """The stdio client sent a line longer than :data:`MAX_LINE_BYTES`: the session was ended
    (``exec.end`` with ``outcome: "error"``, ``error_type: "ClientLineTooLong"``)."""


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """The upstream MCP server: a ``command`` to spawn and speak to over stdio, or the ``url``
    of a streamable-HTTP server.

    ``env`` is the spawned server's environment (default: the proxy's own) without any
    ``INTERLOCK_*`` variable — the upstream never sees the agent's token, the home, the
    principal or the execution id; ``errlog`` receives its stderr (default: the proxy's stderr).
    It runs as the proxy's OS user: it could still read the files that user can read, the
    home's key files included (see SECURITY.md).

    Raises:
        UsageError: neither or both of ``command`` and ``url``, or a ``url`` that is not http(s).
    """

    command: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    errlog: TextIO | None = None

    def __post_init__(self) -> None:
        if bool(self.command) == (self.url is not None):
            raise UsageError("give the upstream as a command or as a URL (exactly one)")
        if self.url is not None and not _URL_RE.fullmatch(self.url):
            raise UsageError(f"not an http(s) URL: {self.url!r}")

    def describe(self) -> dict[str, Any]:
        """The session request's ``args``: how the upstream is reached."""
        if self.url is not None:
            return {"transport": "streamable-http", "url": self.url}
        return {"transport": "stdio", "command": list(self.command)}

    def child_env(self) -> dict[str, str]:
        """The spawned upstream's environment: ``env`` (or the proxy's), without any
        ``INTERLOCK_*`` variable."""
        source = os.environ if self.env is None else self.env
        return {k: v for k, v in source.items() if not k.startswith(INTERLOCK_ENV_PREFIX)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyOptions:
    """Who the proxy acts for and how.

    ``principal`` and ``capability`` are presented on every request; ``name`` pins the server
    name (else the upstream's ``serverInfo.name``); ``parent`` is the session's parent execution
    (e.g. the ``interlock exec`` that runs the agent); ``timeout`` bounds every upstream request
    and ``startup_timeout`` the upstream's start and ``initialize`` (seconds); ``interval`` is
    the re-verification interval of the session and of each request; ``hide_denied`` filters
    ``tools/list``; ``listen`` (``host:port``) is recorded in the session request when serving
    HTTP.

    Raises:
        UsageError: a non-positive timeout or ``interval``, or a ``name`` that is not
            ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters).
    """

    principal: str
    capability: str
    name: str | None = None
    parent: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S
    interval: float = DEFAULT_INTERVAL_S
    hide_denied: bool = False
    listen: str | None = None

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.startup_timeout > 0):
            raise UsageError("the upstream timeouts must be positive")
        if not self.interval > 0:
            raise UsageError("the verification interval must be positive")
        if self.name is not None:
            check_server_name(self.name)


def check_server_name(name: str) -> str:
    """Return ``name`` if it can name an MCP server in resource ids and rights.

    Raises:
        UsageError: it is not ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters).
    """
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name[:80]!r} cannot name an MCP server (letters, digits, '_', '.', '-';"
            " at most 128): give --name"
        )
    return name


# -- texts and digests ---------------------------------------------------------------------------


def denial_text(decision: Decision) -> str:
    """What the agent reads for a deny: the reason codes, the first shareable detail, the
    decision hash and the request id. Never raises."""
    codes = ", ".join(decision.codes) or ReasonCode.INTERNAL_ERROR.value
    # the detail of an opaque code (interlock.adapters.sdk.OPAQUE_CODES) stays on the ledger
    details = (disclosed_detail(r.code, r.detail) for r in decision.reasons)
    detail = next((d for d in details if d), "")
    shown = f": {detail}" if detail else ""
    return (
        f"denied by Interlock: {codes}{shown}"
        f" (decision {decision.decision_hash}, request {decision.request_id})"
    )


def _json_digest(value: Any) -> str:
    """SHA-256 (hex) of the RFC 8785 bytes of a JSON value; a value RFC 8785 cannot take here
    (nested too deep) is digested as its compact JSON text, prefixed ``json:``. Never raises on
    JSON values."""
    try:
        return digest(value, allow_floats=True)
    except Error:
        raw = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return "json:" + hashlib.sha256(raw.encode("utf-8", "replace")).hexdigest()


def continuation_context(
    params: types.CallToolRequestParams
    | types.ReadResourceRequestParams
    | types.GetPromptRequestParams,
) -> dict[str, Any] | None:
    """The request's ``context`` for a request that continues an earlier one: the digests of
    the ``inputResponses`` and ``requestState`` the client sent (and the proxy forwards), as
    ``{"mcp": {"input_responses_sha256": …, "request_state_sha256": …}}`` — so the decision
    and the ledger commit to them and a policy can see that they are present. ``None`` when
    there are neither. Never raises."""
    sent = params.model_dump(
        mode="json", by_alias=True, exclude_none=True, include={"input_responses", "request_state"}
    )
    out: dict[str, str] = {}
    if "inputResponses" in sent:
        out["input_responses_sha256"] = _json_digest(sent["inputResponses"])
    if "requestState" in sent:
        out["request_state_sha256"] = _json_digest(sent["requestState"])
    return {"mcp": out} if out else None


def result_digest(result: BaseModel) -> str:
    """SHA-256 (hex) of the RFC 8785 bytes of ``result``'s JSON form (by alias, ``None`` fields
    left out). A result JSON cannot canonicalize (nested deeper than RFC 8785 allows here) is
    digested as its compact JSON text, prefixed ``json:``. Never raises."""
    data = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        return digest(data, allow_floats=True)
    except Error:
        raw = result.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8", "replace")
        return "json:" + hashlib.sha256(raw).hexdigest()


# -- the governed request ------------------------------------------------------------------------


@dataclass(slots=True)
class _Begun:
    """What admission produced: a deny, an allow that could not start, or a running request."""

    decision: Decision
    request: ActionRequest | None = None
    watch: Watch | None = None
    problem: str | None = None


@dataclass(slots=True)
class _Failure:
    kind: str  # timeout | upstream_unavailable | upstream_error | internal
    code: int
    message: str
    passthrough: MCPError | None = None


@dataclass(slots=True)
class _Outcome(Generic[R]):
    """A governed request's answer: ``result``, or an error (``message`` and JSON-RPC ``code``),
    or an upstream error to pass through unchanged."""

    result: R | None = None
    message: str = ""
    code: int = types.INTERNAL_ERROR
    data: dict[str, Any] | None = None
    passthrough: MCPError | None = None

    def as_error(self) -> MCPError:
        if self.passthrough is not None:
            return self.passthrough
        return MCPError(code=self.code, message=self.message, data=self.data)


def _tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(is_error=True, content=[types.TextContent(type="text", text=text)])


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
    ) -> None:
        self.gate = gate
        self.upstream = upstream
        self.session = session
        self.server_name = server_name
        self.options = options
        #: why the upstream is known to be unusable (then nothing more is forwarded), or None
        self.upstream_down: str | None = None
        self._server: Server[Any] | None = None

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
            watch = Watch(
                self.gate, req, interval=self.options.interval, snapshot=decision.snapshot
            )
        except Exception as exc:  # noqa: BLE001 - cannot supervise it, so do not run it
            why = f"not run: cannot supervise the request ({type(exc).__name__})"
            self._record_close(
                req, None, {"duration_ms": 0, "outcome": "error", "error": "internal"}
            )
            return _Begun(decision=decision, request=req, problem=why)
        return _Begun(decision=decision, request=req, watch=watch)

    def _record_close(
        self, req: ActionRequest, watch: Watch | None, fields: dict[str, Any]
    ) -> str | None:
        """Commit ``exec.end`` or ``exec.terminated``; return why it failed, or None."""
        reason = watch.denied if watch is not None else None
        try:
            if reason is not None:
                fields["reason"] = reason.to_json()
                self.gate.record_execution(
                    RecordType.EXEC_TERMINATED, req.id, fields, status="terminated"
                )
            else:
                self.gate.record_execution(RecordType.EXEC_END, req.id, fields, status="ended")
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who withholds the result
            return exc.diagnostics() if isinstance(exc, Error) else type(exc).__name__
        return None

    async def _watch(self, watch: Watch, scope: anyio.CancelScope) -> None:
        """Re-verify a forwarded request while it waits; cancel it when authorization ends."""
        while True:
            await anyio.sleep(POLL_S)
            if await anyio.to_thread.run_sync(watch.step) is not None:
                scope.cancel()
                return

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
        begun = await anyio.to_thread.run_sync(self._begin, raw)
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
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, watch, tg.cancel_scope)
                try:
                    result, failure = await self._attempt(forward)
                finally:
                    tg.cancel_scope.cancel()
        except BaseException:
            # cancelled from outside (the client cancelled, the proxy is stopping): record it
            fields = _fields(started, None, _Failure("cancelled", 0, "cancelled"))
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._record_close, req, watch, fields)
            raise

        fields = _fields(started, result, failure)
        problem = await anyio.to_thread.run_sync(self._record_close, req, watch, fields)
        reason = watch.denied
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
        if problem is not None:
            return _Outcome(
                message=(
                    f"result withheld: LEDGER_UNAVAILABLE: exec.end not recorded: {problem}"
                    f" (execution {req.id})"
                )[:1000],
                code=DENIED_ERROR_CODE,
                data={"reason_codes": [ReasonCode.LEDGER_UNAVAILABLE.value], **ident},
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

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        result = await self._listed(
            types.ListToolsRequest(params=self._page(params)), types.ListToolsResult
        )
        if self.options.hide_denied:
            kept = await anyio.to_thread.run_sync(self._could_allow, result.tools)
            result = result.model_copy(update={"tools": kept})
        return result

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

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
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
            lambda: self.upstream.send_request(
                forwarded, _CALL, request_read_timeout_seconds=self.options.timeout
            ),
            continuation_context(forwarded.params),
        )
        if out.result is not None:
            return out.result
        if out.passthrough is not None:
            raise out.passthrough
        return _tool_error(out.message)

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


def _fields(started: float, result: BaseModel | None, failure: _Failure | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"duration_ms": round((time.monotonic() - started) * 1000)}
    if failure is not None:
        fields.update(outcome="error", error=failure.kind)
        if failure.kind == "upstream_error":
            fields["upstream_code"] = failure.code
    elif result is not None:
        fields.update(outcome="ok", result_sha256=result_digest(result))
        if isinstance(result, types.CallToolResult) and result.is_error:
            fields["tool_error"] = True
    else:
        fields.update(outcome="error", error="terminated")
    return fields


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
async def _connect(upstream: Upstream, startup: float) -> AsyncIterator[ClientSession]:
    from interlock import __version__

    async with contextlib.AsyncExitStack() as stack:
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
                streams = await stack.enter_async_context(
                    stdio_client(params, errlog=upstream.errlog or sys.stderr)
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
        yield client


@contextlib.asynccontextmanager
async def open_proxy(
    gate: Gate, upstream: Upstream, options: ProxyOptions
) -> AsyncIterator[McpProxy]:
    """Start a proxy session: admit it (``mcp.session``), connect to the upstream and
    initialize it. With ``options.name`` the session is admitted before the upstream is
    started; without, the upstream is started first to learn its name. Leaving ends the
    session (``exec.end``) and stops the upstream.

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
        client = await stack.enter_async_context(_connect(upstream, options.startup_timeout))
        name = options.name
        if run is None:
            info = client.server_info
            name = check_server_name(info.name if info is not None else "")
            run = await stack.enter_async_context(_session(gate, request(name), options.interval))
        if name is None:  # pragma: no cover - set on both paths above
            raise UsageError("no server name")
        yield McpProxy(gate, client, run, server_name=name, options=options)


# -- serving ---------------------------------------------------------------------------------------


class _StdinLines:
    """The lines of file descriptor ``fd`` (stdin), read by a daemon thread with ``os.read``.

    The SDK reads stdin in an anyio worker thread, and a thread blocked in ``read()`` can be
    neither interrupted nor abandoned at exit: SIGTERM would then wait for the client's next
    byte before the session could end. A daemon thread is left behind instead; it reads the
    descriptor directly, holding no lock of ``sys.stdin`` that interpreter shutdown would need.

    A line (newline included) longer than ``limit`` bytes is not buffered to its end: reading
    stops, the lines end there (as at end of input; the partial line is dropped) and
    :attr:`overflow` is set.
    """

    def __init__(self, fd: int, limit: int = MAX_LINE_BYTES) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)
        #: set (before the lines end) when a line exceeded ``limit``
        self.overflow = False
        self.limit = limit
        token = anyio.lowlevel.current_token()
        send = self._send

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
        try:
            line = await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        return line.decode("utf-8", "replace")

    def close(self) -> None:
        self._receive.close()
        self._send.close()


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
    server = proxy.server
    lines = _StdinLines(sys.stdin.fileno(), max_line)
    try:
        # the stop task's group encloses the transport: cancelling it stops all of it
        async with anyio.create_task_group() as tg:
            if stop is not None:

                async def _stop() -> None:
                    await stop.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(_stop)
            async with stdio_server(stdin=cast("anyio.AsyncFile[str]", lines)) as (read, write):
                await server.run(read, write, server.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        lines.close()
    if lines.overflow:
        raise ClientLineTooLong(
            f"the client sent a line longer than {max_line} bytes"
            f" ({max_line / 1048576:g} MiB): the session is ended",
            limit=max_line,
        )


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
    proxy: McpProxy, sock: socket.socket, host: str, stop: anyio.Event | None = None
) -> None:
    """Serve the proxy as streamable HTTP (``/mcp``) on a bound socket (see :func:`bind`) until
    ``stop`` is set. DNS-rebinding protection is always on (:func:`transport_security`): a
    request whose ``Host`` or ``Origin`` names anything but this address is refused."""
    import uvicorn

    class _Uvicorn(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the caller owns signals (see run_proxy)
            yield

    port = int(sock.getsockname()[1])
    app = proxy.server.streamable_http_app(
        host=host.strip("[]"), transport_security=transport_security(host, port)
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
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
    on_ready: Callable[[McpProxy, str | None], None] | None = None,
) -> None:
    """Run one proxy session to completion: on stdio (until the client closes stdin), or as
    streamable HTTP on ``listen`` (until SIGINT/SIGTERM). SIGINT and SIGTERM end the session
    cleanly (``exec.end`` is recorded) when called from the main thread. ``on_ready(proxy,
    url)`` is called once the session is admitted and the upstream initialized (``url`` is
    None on stdio).

    Raises:
        Denied: the session was denied.
        UpstreamError: the upstream could not be started, reached or initialized.
        UsageError: a bad listen address or server name.
        OSError: the listen address cannot be bound.
    """
    sock = bind(*listen) if listen is not None else None

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if threading.current_thread() is threading.main_thread():
                tg.start_soon(_signals, stop)
            try:
                async with open_proxy(gate, upstream, options) as proxy:
                    if sock is not None and listen is not None:
                        port = sock.getsockname()[1]
                        host = listen[0] if ":" not in listen[0] else f"[{listen[0].strip('[]')}]"
                        if on_ready is not None:
                            on_ready(proxy, f"http://{host}:{port}/mcp")
                        await serve_http(proxy, sock, listen[0], stop)
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
