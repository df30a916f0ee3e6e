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
``on_invoke_tool`` is one governed call (:class:`interlock.adapters.sdk.Governor`): the JSON
object of arguments the model sent is the request's ``args``, the resource is
``Tool::<tool name>`` unless given, and the original invoker (the SDK's argument validation,
the function, its failure handling) runs inside ``async with gate.execution(...)`` only when
allowed.

**A denial reaches the model as the tool's output**, the way the SDK reports tool errors to the
model: the text ``Interlock denied this call: <REASON_CODE>: <detail> (decision <hash>)``. An
execution stopped by a revocation is reported the same way (``Interlock stopped this call:
...``). Arguments that are not a JSON object are denied ``MALFORMED_REQUEST`` (recorded).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from agents import FunctionTool
from agents.tool_context import ToolContext

from interlock.adapters.sdk import Agent, Governor, ResourceSpec, denial_text
from interlock.errors import Denied, Revoked, UsageError
from interlock.gate import Gate
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

__all__ = ["govern"]


class _NotAnObject(ValueError):
    """The model's arguments are not a JSON object."""


def _parse_arguments(text: str) -> tuple[dict[str, Any] | None, BaseException | None]:
    """The model's argument text as the request's ``args`` (an empty text is ``{}``), or the
    reason it cannot be (then the call is denied)."""
    try:
        value = json.loads(text) if text and text.strip() else {}
    except (ValueError, RecursionError) as exc:
        return None, exc
    if not isinstance(value, dict):
        return None, _NotAnObject(f"tool arguments are a JSON {type(value).__name__}")
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
    instead of running the tool when Interlock denies, and raises what the original raises.

    Raises:
        UsageError: ``tool`` is not a ``FunctionTool``, ``gate`` is neither a Gate nor an
            Agent, or ``resource``, ``action`` or ``interval`` is invalid.
    """
    if not isinstance(tool, FunctionTool):
        raise UsageError(f"not an OpenAI Agents FunctionTool: {type(tool).__name__}")
    if isinstance(gate, Agent):
        the_gate, agent = gate.gate, gate
    elif isinstance(gate, Gate):
        the_gate, agent = gate, None
    else:
        raise UsageError("gate must be an interlock Gate or Agent")
    governor = Governor(
        the_gate,
        action=action,
        resource=resource if resource is not None else {"type": "Tool", "id": tool.name},
        agent=agent,
        context=context,
        interval=interval,
    )
    original = tool.on_invoke_tool

    async def on_invoke_tool(ctx: ToolContext[Any], input: str) -> Any:
        args, cause = _parse_arguments(input)
        try:
            return await governor.acall(lambda: original(ctx, input), args, cause=cause)
        except (Denied, Revoked) as exc:
            return denial_text(exc)

    governed = copy.copy(tool)
    governed.on_invoke_tool = on_invoke_tool
    return governed
