"""OpenAI Agents SDK adapter: wrap a ``FunctionTool`` so every invocation passes the gate.

    >>> from agents import Agent, Runner, function_tool
    >>> from interlock.adapters.openai_agents import govern
    >>> @function_tool
    ... def web_search(q: str) -> str:
    ...     '''Search the web.'''
    ...     return f"results for {q}"
    >>> researcher = gate.agent("spiffe://acme.test/agent/researcher", token)  # doctest: +SKIP
    >>> agent = Agent(name="researcher", tools=[govern(web_search, researcher)])  # doctest: +SKIP
    >>> Runner.run_sync(agent, "look up interlock")                          # doctest: +SKIP

:func:`govern` returns a copy of the tool (same name, description and JSON schema) whose
``on_invoke_tool`` is one governed call (:class:`interlock.adapters.sdk.Governor`): the request's
``args`` are the JSON object of arguments the model sent, with each top-level property the
model left out filled with its ``default`` from the tool's ``params_json_schema`` (what the
SDK's validation gives the function). The resource is ``Tool::<tool name>`` unless given, and
the tool — the SDK's argument validation and the function — runs inside
``async with gate.execution(...)`` only when allowed.

Differences that remain between ``args`` and what the function receives: a default the schema
does not carry (a ``default_factory``; strict schemas drop ``None`` defaults) and a ``null``
default (Cedar has no null; the attribute stays absent) are not filled in, and values are
recorded as the model sent them, before the SDK's validation may coerce them (``"5"`` → ``5``
for an ``int``). A policy that must see a value should not rely on a default.

**Failures are recorded as failures.** For a ``@function_tool``, the SDK's failure handling
(``failure_error_function``, which turns an exception into text for the model) runs *outside*
the governed execution: an exception in the function (or in the SDK's argument validation)
ends the execution with ``exec.end`` ``outcome: "error"`` and ``error_type``, and the model
then reads the handler's text as before. A hand-built ``FunctionTool`` whose ``on_invoke_tool``
returns error text itself is recorded by what it does: returning is ``ok``.

**A denial reaches the model as the tool's output**, the way the SDK reports tool errors to the
model: the text ``Interlock denied this call: <REASON_CODE>: <detail> (decision <hash>)`` (no
detail for :data:`interlock.adapters.sdk.OPAQUE_CODES`). An execution stopped by a revocation
is reported the same way (``Interlock stopped this call: ...``). Arguments that are not a JSON
object are denied ``MALFORMED_REQUEST`` (recorded).

**A synchronous function is not stopped.** The SDK runs a sync ``@function_tool`` in a worker
thread (``asyncio.to_thread``); when authorization ends only the await is cancelled: the model
is told the call was stopped and ``exec.terminated`` records ``"body_may_still_run": true``, but
the function runs on to its end (Python cannot stop a thread). Make a tool that must be
stoppable ``async``, or have it call ``current_execution().check()``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from agents import FunctionTool
from agents.tool_context import ToolContext

from interlock.adapters.sdk import Agent, ResourceSpec, denial_text, tool_governor
from interlock.errors import Denied, Revoked, UsageError
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["SUPPORTED", "govern"]

#: the openai-agents releases this adapter is tested with (``pyproject.toml`` pins the same
#: range): it keeps the SDK's ``@function_tool`` failure handler *outside* the governed
#: execution, which the SDK exposes only through a private class; a release that changes it
#: must fail here, loudly, not govern differently
SUPPORTED = (0, 24)


def _failure_invoker() -> type[Any]:
    """The SDK's private ``@function_tool`` invoker class, checked against :data:`SUPPORTED`.

    Raises:
        ImportError: an openai-agents release this adapter does not support.
    """
    found = version("openai-agents")
    if tuple(int(p) for p in found.split(".")[:2]) != SUPPORTED:
        raise ImportError(
            f"interlock.adapters.openai_agents supports openai-agents"
            f" {'.'.join(map(str, SUPPORTED))}.x; {found} is installed: install"
            f" 'openai-agents>={SUPPORTED[0]}.{SUPPORTED[1]},<{SUPPORTED[0]}.{SUPPORTED[1] + 1}'"
        )
    from agents import tool as tool_module

    cls = getattr(tool_module, "_FailureHandlingFunctionToolInvoker", None)
    params = getattr(getattr(cls, "__init__", None), "__code__", None)
    if cls is None or params is None or params.co_argcount != 3:
        raise ImportError(
            f"openai-agents {found} no longer has the @function_tool invoker this adapter"
            " wraps (agents.tool._FailureHandlingFunctionToolInvoker(impl, on_handled_error))"
        )
    invoker: type[Any] = cls
    return invoker


_FailureHandlingFunctionToolInvoker = _failure_invoker()


class _NotAnObject(ValueError):
    """The model's arguments are not a JSON object."""


#: attributes of the SDK's ``@function_tool`` invoker implementation that its runner reads
#: (prepared arguments for approvals, the wrapped callable): carried over to the governed one
_IMPL_ATTRS = ("__agents_prepare_arguments__", "__agents_function_tool_wrapped_callable__")
#: set on the invoker of a ``@function_tool`` whose function is synchronous (run in a thread)
_SYNC_MARKER = "__agents_sync_function_tool__"

_Invoke = Callable[[ToolContext[Any], str], Awaitable[Any]]


def _schema_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``default`` of each top-level property of a tool's JSON schema that has one."""
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(props, Mapping):
        return {}
    # a null default is left out: Cedar has no null (a policy sees an absent attribute, which
    # is also what strict schemas, which drop null defaults, give)
    return {
        name: prop["default"]
        for name, prop in props.items()
        if isinstance(name, str) and isinstance(prop, Mapping) and prop.get("default") is not None
    }


def _parse_arguments(
    text: str, defaults: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any] | None, BaseException | None]:
    """The model's argument text as the request's ``args`` (an empty text is ``{}``), with
    ``defaults`` filled in for the keys it leaves out, or the reason it cannot be (then the call
    is denied)."""
    try:
        value = json.loads(text) if text and text.strip() else {}
    except (ValueError, RecursionError) as exc:
        return None, exc
    if not isinstance(value, dict):
        return None, _NotAnObject(f"tool arguments are a JSON {type(value).__name__}")
    for name, default in (defaults or {}).items():
        if name not in value:
            value[name] = copy.deepcopy(default)
    return value, None


def govern(
    tool: FunctionTool,
    gate: Gate | Agent,
    *,
    action: str = "tool.call",
    resource: ResourceSpec | None = None,
    context: Mapping[str, Any] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
) -> FunctionTool:
    """Wrap ``tool`` so every invocation (``Runner`` tool calls, ``on_invoke_tool``) is decided
    by Interlock before the tool runs.

    Args:
        tool: an OpenAI Agents SDK ``FunctionTool`` (``@function_tool`` or built by hand).
        gate: an :class:`~interlock.adapters.sdk.Agent` (its gate; its capability is presented),
            or a ``Gate`` (the agent acting in the caller's context at invocation time is used:
            ``with agent.acting(): await Runner.run(...)``).
        action: the request's action.
        resource: a resource value, or a callable of the call's ``args``; default
            ``Tool::<tool.name>``.
        context: the request's ``context`` (JSON).
        interval: the re-verification interval of each call's execution, in seconds.

    Returns a new ``FunctionTool``; ``tool`` itself is unchanged (and ungoverned: give the
    agent only the governed one). The new tool's ``on_invoke_tool`` returns the denial text
    instead of running the tool when Interlock denies, and otherwise returns or raises what the
    original does. For a ``@function_tool``, the SDK's failure handler runs outside the
    governed execution, so a failing function is recorded ``outcome: "error"``; a sync function
    runs in a worker thread that a revocation does not stop (see the module doc).

    Raises:
        UsageError: ``tool`` is not a ``FunctionTool``, ``gate`` is neither a Gate nor an
            Agent, or ``resource``, ``action`` or ``interval`` is invalid.
    """
    if not isinstance(tool, FunctionTool):
        raise UsageError(f"not an OpenAI Agents FunctionTool: {type(tool).__name__}")
    governor = tool_governor(
        gate, tool.name, action=action, resource=resource, context=context, interval=interval
    )
    original = tool.on_invoke_tool
    defaults = _schema_defaults(tool.params_json_schema)
    in_thread = bool(getattr(original, _SYNC_MARKER, False))

    def governing(invoke: _Invoke) -> _Invoke:
        async def governed_invoke(ctx: ToolContext[Any], input: str) -> Any:
            args, cause = _parse_arguments(input, defaults)
            try:
                return await governor.acall(
                    lambda: invoke(ctx, input), args, cause=cause, body_in_thread=in_thread
                )
            except (Denied, Revoked) as exc:
                return denial_text(exc)

        return governed_invoke

    invoker: Any
    if isinstance(original, _FailureHandlingFunctionToolInvoker):
        # a @function_tool: govern the implementation, and keep the SDK's failure handler
        # outside, so an exception ends the execution as an error before it becomes text
        if not all(hasattr(original, a) for a in ("_invoke_tool_impl", "_on_handled_error")):
            raise UsageError(
                "this openai-agents release's @function_tool invoker has changed shape; install"
                f" openai-agents {'.'.join(map(str, SUPPORTED))}.x"
            )
        impl = original._invoke_tool_impl
        governed_impl = governing(impl)
        for attr in _IMPL_ATTRS:
            if hasattr(impl, attr):
                setattr(governed_impl, attr, getattr(impl, attr))
        invoker = _FailureHandlingFunctionToolInvoker(governed_impl, original._on_handled_error)
        if in_thread:
            setattr(invoker, _SYNC_MARKER, True)
    else:
        invoker = governing(original)

    governed = copy.copy(tool)
    governed.on_invoke_tool = invoker
    bind = getattr(invoker, "__agents_bind_function_tool__", None)
    if callable(bind):  # the failure handler resolves its policy against the tool it serves
        governed.on_invoke_tool = bind(governed)
    return governed
