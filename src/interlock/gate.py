"""The gate as its users hold it: :class:`GateCore` (the decision point, the checks and the
governance actions: :mod:`interlock.engine`) plus the entry points that build the objects of the
layers above it — governed in-process executions (:mod:`interlock.runtime.execution`) and the
SDK's agents and decorator (:mod:`interlock.adapters.sdk`).

    >>> import interlock
    >>> gate = interlock.open(".interlock")                       # doctest: +SKIP
    >>> with gate.execution(request) as run:                       # doctest: +SKIP
    ...     run.check()
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from interlock.adapters.sdk import Agent, F, ResourceSpec, governed
from interlock.engine import GateCore
from interlock.runtime.execution import Execution

__all__ = ["Gate", "GateCore"]


class Gate(GateCore):
    """A governance home's decision point (:class:`interlock.engine.GateCore`), with its entry
    points: :meth:`execution`, :meth:`governed` and :meth:`agent`. ``Gate.open(home)``."""

    def execution(
        self, request: Mapping[str, Any] | bytes | str, *, interval: float = 1.0
    ) -> Execution:
        """A governed in-process execution: ``with gate.execution(request) as run: ...``.

        Entering admits the request and commits ``exec.start``; ``run.check()`` raises
        ``interlock.Revoked`` once authorization no longer holds (re-verified every
        ``interval`` seconds and on governance changes); leaving commits ``exec.end`` or
        ``exec.terminated``. See :mod:`interlock.runtime.execution`.

        Raises:
            ValueError: if ``interval`` is not positive. (Entering raises ``interlock.Denied``.)
        """
        return Execution(self, request, interval=interval)

    def governed(
        self,
        action: str = "tool.call",
        *,
        resource: ResourceSpec | None = None,
        agent: Agent | None = None,
        context: Mapping[str, Any] | None = None,
        interval: float = 1.0,
        exclude: Collection[str] = (),
    ) -> Callable[[F], F]:
        """Decorator: ``@gate.governed(action="tool.call", resource=...)`` governs every call of
        a sync or async function (see :func:`interlock.adapters.sdk.governed`): a deny raises
        ``interlock.Denied`` and the body does not run; an allow runs it inside
        :meth:`execution`."""
        return governed(
            self,
            action=action,
            resource=resource,
            agent=agent,
            context=context,
            interval=interval,
            exclude=exclude,
        )

    def agent(self, principal: str, capability: str) -> Agent:
        """A handle whose governed calls present ``capability`` as ``principal`` (see
        :class:`interlock.adapters.sdk.Agent`).

        Raises:
            UsageError: ``principal`` is not a SPIFFE ID or ``capability`` is empty.
        """
        return Agent(self, principal, capability)
