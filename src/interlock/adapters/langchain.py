"""LangChain adapter: wrap a ``langchain-core`` tool so every invocation passes the gate.

    >>> from langchain_core.tools import tool
    >>> from interlock.adapters.langchain import govern
    >>> @tool
    ... def web_search(q: str) -> str:
    ...     '''Search the web.'''
    ...     return f"results for {q}"
    >>> researcher = gate.agent("spiffe://acme.test/agent/researcher", token)  # doctest: +SKIP
    >>> governed = govern(web_search, researcher)                             # doctest: +SKIP
    >>> governed.invoke({"q": "hello"})                                       # doctest: +SKIP
    'results for hello'

:func:`govern` returns a :class:`GovernedTool`: same name, description and argument schema
(the model sees the same tool), and each invocation is one governed call
(:class:`interlock.adapters.sdk.Governor`): the arguments after the tool's own schema
validation — coerced, defaults applied, exactly what the tool's function receives — are the
request's ``args`` (injected arguments such as ``InjectedToolCallId`` are left out), the
resource is ``Tool::<tool name>`` unless given, and the tool body runs inside
``gate.execution(...)`` only when allowed.

**A denial reaches the model as a tool error.** It is raised as :class:`InterlockToolError`
(a ``ToolException``) and handled by the wrapper's ``handle_tool_error``: the tool's result is
the text ``Interlock denied this call: <REASON_CODE>: <detail> (decision <hash>)`` and, when
invoked with a tool call, a ``ToolMessage`` with ``status="error"``. An execution stopped by a
revocation is reported the same way (``Interlock stopped this call: ...``). The detail of a
``CAPABILITY_INVALID``, ``IDENTITY_UNVERIFIED`` or ``INTERNAL_ERROR`` denial is not shown
(:data:`interlock.adapters.sdk.OPAQUE_CODES`, the same rule as the MCP proxy). Any other
``ToolException`` keeps the wrapped tool's own ``handle_tool_error`` behaviour.

**A synchronous tool under** ``ainvoke`` **is not stopped.** LangChain runs its ``_run`` in a
worker thread; when authorization ends only the await is cancelled: the model is told the call
was stopped and ``exec.terminated`` is recorded with ``"body_may_still_run": true``, but the
function runs on to its end (Python cannot stop a thread). Give such a tool an ``async``
implementation, have it call ``current_execution().check()``, or run the side effect under
``interlock exec`` when it must be stoppable. With ``invoke`` the tool runs in the caller's
thread and the same applies (only ``check()`` stops it).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, Tool, ToolException
from langchain_core.tools.base import ArgsSchema, ToolExceptionHandlerOutput
from pydantic import SkipValidation

from interlock.adapters.sdk import Agent, Governor, ResourceSpec, denial_text, tool_governor
from interlock.errors import Denied, Revoked, UsageError
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["GovernedTool", "InterlockToolError", "govern"]


class InterlockToolError(ToolException):
    """A governed tool call was denied (or stopped): ``reason_code`` is the DESIGN §3 code and
    ``error`` the :class:`interlock.Denied` or :class:`interlock.Revoked` behind it. Its message
    is what the model reads."""

    def __init__(self, error: Denied | Revoked) -> None:
        super().__init__(denial_text(error))
        self.error = error
        self.reason_code = error.reason_code


def _injected(
    fn: Callable[..., Any], config: RunnableConfig, run_manager: object | None
) -> dict[str, Any]:
    """The keyword arguments ``BaseTool.run`` gives a tool's ``_run`` / ``_arun`` besides the
    tool input: ``run_manager`` if the method takes one, and the run's config under the name
    of its ``RunnableConfig`` parameter, if it has one."""
    out: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    if run_manager is not None and "run_manager" in params:
        out["run_manager"] = run_manager
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no config parameter found
        hints = {}
    for name, hint in hints.items():
        if hint is RunnableConfig:
            out[name] = config
    return out


def _runs_in_thread(tool: BaseTool) -> bool:
    """Whether the tool's async path runs a synchronous ``_run`` in a worker thread: a tool
    without its own ``_arun``, or a ``StructuredTool`` / ``Tool`` without a ``coroutine``."""
    arun = type(tool)._arun
    if arun is BaseTool._arun:
        return True
    if arun in (StructuredTool._arun, Tool._arun):
        return getattr(tool, "coroutine", None) is None
    return False


def _error_handler(inner: BaseTool) -> Callable[[ToolException], ToolExceptionHandlerOutput]:
    """Our denials become the tool's output; any other ``ToolException`` is handled as the
    wrapped tool's own ``handle_tool_error`` says (re-raised when it is unset)."""

    def handle(exc: ToolException) -> ToolExceptionHandlerOutput:
        if isinstance(exc, InterlockToolError):
            return str(exc)
        flag = inner.handle_tool_error
        if not flag:
            raise exc
        if isinstance(flag, bool):
            return str(exc.args[0]) if exc.args else "Tool execution error"
        if isinstance(flag, str):
            return flag
        return flag(exc)

    return handle


class GovernedTool(BaseTool):
    """A LangChain tool whose every invocation is decided by Interlock first. Build it with
    :func:`govern`; ``inner`` is the wrapped tool, ``governor`` decides and records.
    """

    inner: BaseTool
    governor: Annotated[Governor, SkipValidation()]

    # -- what the model sees: the wrapped tool's schema ------------------------------------------

    @property
    def args(self) -> dict[str, Any]:
        return self.inner.args

    @property
    def tool_call_schema(self) -> ArgsSchema:
        return self.inner.tool_call_schema

    def _to_args_and_kwargs(
        self, tool_input: str | dict[str, Any], tool_call_id: str | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # the wrapped tool parses and validates its own input (and injects what it declares)
        return self.inner._to_args_and_kwargs(tool_input, tool_call_id)

    # -- running ---------------------------------------------------------------------------------

    def _governed_args(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any] | None, BaseException | None]:
        """The request's ``args``: the model's arguments, without injected ones; a positional
        (single string) input is named after the tool's argument."""
        try:
            out = dict(self.inner._filter_injected_args(dict(kwargs)))
            names = [n for n in self.inner.args if n not in out]
            for i, value in enumerate(args):
                out[names[i] if i < len(names) else f"arg{i}"] = value
        except Exception as exc:  # noqa: BLE001 - fail-closed: denied, the tool does not run
            return None, exc
        return out, None

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        """Decide, then run the wrapped tool's ``_run`` inside ``gate.execution``.

        Raises:
            InterlockToolError: denied or stopped (handled into the tool's output).
            Exception: whatever the wrapped tool raises.
        """
        governed_args, cause = self._governed_args(args, kwargs)
        inner = self.inner
        extra = _injected(inner._run, config, run_manager)
        try:
            return self.governor.call(
                lambda: inner._run(*args, **kwargs, **extra), governed_args, cause=cause
            )
        except (Denied, Revoked) as exc:
            raise InterlockToolError(exc) from exc

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        """Decide, then await the wrapped tool's ``_arun`` inside ``async with
        gate.execution`` (cancelled when authorization ends). A synchronous tool runs in a
        worker thread that the cancellation does not stop (``exec.terminated`` then records
        ``body_may_still_run``).

        Raises:
            InterlockToolError: denied or stopped (handled into the tool's output).
            Exception: whatever the wrapped tool raises.
        """
        governed_args, cause = self._governed_args(args, kwargs)
        inner = self.inner
        # as BaseTool.arun does: a tool without its own _arun runs _run in an executor, and
        # gets what its _run declares
        target = inner._run if type(inner)._arun is BaseTool._arun else inner._arun
        extra = _injected(target, config, run_manager)
        try:
            return await self.governor.acall(
                lambda: inner._arun(*args, **kwargs, **extra),
                governed_args,
                cause=cause,
                body_in_thread=_runs_in_thread(inner),
            )
        except (Denied, Revoked) as exc:
            raise InterlockToolError(exc) from exc


def govern(
    tool: BaseTool,
    gate: Gate | Agent,
    *,
    action: str = "tool.call",
    resource: ResourceSpec | None = None,
    context: Mapping[str, Any] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
) -> GovernedTool:
    """Wrap ``tool`` so every invocation (``invoke``, ``ainvoke``, ``run``, tool calls from a
    model) is decided by Interlock before the tool runs.

    Args:
        tool: any ``langchain_core`` ``BaseTool`` (``@tool``, ``StructuredTool``, ``Tool``,
            subclasses).
        gate: an :class:`~interlock.adapters.sdk.Agent` (its gate; its capability is presented),
            or a ``Gate`` (the agent acting in the caller's context at invocation time is used:
            ``with agent.acting(): ...``).
        action: the request's action.
        resource: a resource value, or a callable of the call's ``args``; default
            ``Tool::<tool.name>``.
        context: the request's ``context`` (JSON).
        interval: the re-verification interval of each call's execution, in seconds.

    Returns a new tool; ``tool`` itself is unchanged (and ungoverned: give the model only the
    governed one).

    Raises:
        UsageError: ``tool`` is not a ``BaseTool``, ``gate`` is neither a Gate nor an Agent, or
            ``resource``, ``action`` or ``interval`` is invalid.
    """
    if not isinstance(tool, BaseTool):
        raise UsageError(f"not a LangChain BaseTool: {type(tool).__name__}")
    governor = tool_governor(
        gate, tool.name, action=action, resource=resource, context=context, interval=interval
    )
    return GovernedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        verbose=tool.verbose,
        callbacks=tool.callbacks,
        tags=tool.tags,
        metadata=tool.metadata,
        handle_tool_error=_error_handler(tool),
        handle_validation_error=tool.handle_validation_error,
        response_format=tool.response_format,
        extras=tool.extras,
        inner=tool,
        governor=governor,
    )
