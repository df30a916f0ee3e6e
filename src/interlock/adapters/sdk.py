"""The Python SDK: governed functions, per-agent capabilities, delegation, automatic lineage.

    >>> import interlock
    >>> gate = interlock.open(".interlock")                                   # doctest: +SKIP
    >>> researcher = gate.agent("spiffe://acme.test/agent/researcher", token)  # doctest: +SKIP
    >>> @gate.governed(resource={"type": "Tool", "id": "web_search"})         # doctest: +SKIP
    ... def web_search(q: str, limit: int = 5) -> list[str]:
    ...     return search_engine(q)[:limit]
    >>> with researcher.acting():                                             # doctest: +SKIP
    ...     web_search("hello")      # decided with args {"q": "hello", "limit": 5}, recorded,
    ...                              # and run inside gate.execution (exec.start / exec.end)

Every call of a governed function is one request: the bound arguments (defaults applied) are
its ``args``, ``resource`` is a value or a callable of those arguments, and the principal and
capability come from the agent the function is bound to (``agent.governed(...)``), or else from
the agent acting in the current context (``with agent.acting():``; a governed call made by an
agent-bound function also acts as that agent). A deny raises :class:`interlock.Denied` and the
function does not run; an allow runs it inside ``gate.execution(...)``.

Lineage needs no plumbing: a governed call made while another governed execution of the same
gate runs (in this thread or task, see :func:`interlock.runtime.execution.current_execution`)
names it as ``parent``; the current OpenTelemetry span context travels as ``traceparent``.

Fail-closed: arguments that are not JSON, a resource callable that raises, or any error before
the gate admitted the call deny it — the function never runs. Denials the gate decided are on
the ledger (a request that cannot be formed is recorded as ``MALFORMED_REQUEST``); only an
error that kept the SDK from reaching the gate gives an unrecorded ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from interlock.capability import Right, attenuate
from interlock.core.model import (
    is_spiffe_id,
    is_under,
)
from interlock.errors import UsageError
from interlock.runtime.execution import current_execution
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from interlock.gate import Gate
from interlock.adapters.governor import (
    _AGENT,
    OPAQUE_CODES,
    Governor,
    Identity,
    ResourceSpec,
    _bind_args,
    _check_options,
    _static_resource,
    current_traceparent,
    denial_text,
    disclosed_detail,
)

__all__ = [
    "OPAQUE_CODES",
    "Agent",
    "Governor",
    "ResourceSpec",
    "current_agent",
    "current_execution",
    "current_traceparent",
    "denial_text",
    "disclosed_detail",
    "governed",
]

F = TypeVar("F", bound=Callable[..., Any])


def current_agent() -> Agent | None:
    """The agent acting in the current context, or ``None``.

    Never raises.
    """
    agent = _AGENT.get()
    # only an Agent ever acts (``Agent.acting``, an agent-bound call): Identity is its base
    return agent if isinstance(agent, Agent) else None


def tool_governor(
    gate: Gate | Agent,
    tool_name: str,
    *,
    action: str = "tool.call",
    resource: ResourceSpec | None = None,
    context: Mapping[str, Any] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
) -> Governor:
    """The :class:`Governor` a framework adapter wraps one tool with: the gate (or an agent's
    gate, presenting its capability), and ``Tool::"<tool_name>"`` unless ``resource`` is given.

    Raises:
        UsageError: ``gate`` is neither a Gate nor an Agent, or an option is invalid.
    """
    if isinstance(gate, Agent):
        the_gate, agent = gate.gate, gate
    elif callable(getattr(gate, "admit", None)) and callable(getattr(gate, "reverify", None)):
        # recognised by its shape: the SDK does not import the gate it serves
        the_gate, agent = gate, None
    else:
        raise UsageError("gate must be an interlock Gate or Agent")
    return Governor(
        the_gate,
        action=action,
        resource=resource if resource is not None else {"type": "Tool", "id": tool_name},
        agent=agent,
        context=context,
        interval=interval,
    )


def governed(
    gate: Gate,
    *,
    action: str = "tool.call",
    resource: ResourceSpec | None = None,
    agent: Agent | None = None,
    context: Mapping[str, Any] | None = None,
    interval: float = DEFAULT_INTERVAL_S,
    exclude: Collection[str] = (),
) -> Callable[[F], F]:
    """Decorator (``@gate.governed(...)``): every call of the sync or async function is decided
    by ``gate`` first and, if allowed, runs inside ``gate.execution(...)``.

    Args:
        gate: the gate.
        action: the request's action.
        resource: a resource value (``{"type": "Tool", "id": "web_search"}``,
            ``"Tool::web_search"``, a :class:`~interlock.Resource`), or a callable that gets the
            call's ``args`` dict and returns one. Default: ``Tool::<function name>``.
        agent: the agent whose principal and capability every call presents; default: the
            agent acting in the caller's context (:meth:`Agent.acting`).
        context: the request's ``context`` (JSON).
        interval: each execution's re-verification interval, in seconds.
        exclude: parameter names left out of ``args`` (e.g. ``("self",)`` for a method).

    The arguments are bound to the function's signature with defaults applied; values must be
    JSON (``dict`` with string keys, ``list``, ``str``, ``int``, ``float``, ``bool``,
    ``None``) — anything else is denied ``MALFORMED_REQUEST``, recorded, and the function does
    not run. Inside the function, ``current_execution()`` is its execution (``.id``,
    ``.check()``).

    Raises:
        UsageError: (when decorating) a generator function, a function without a signature,
            or an invalid static resource, action or interval.

    The decorated function raises what :meth:`Governor.call` (sync) or
    :meth:`Governor.acall` (async) raise: :class:`interlock.Denied` on a deny (with
    ``reason_code``, ``detail`` and ``decision.decision_hash``), :class:`interlock.Revoked`,
    ``LedgerUnavailable``, and its own exceptions.
    """

    # refuse bad options now, not at the first call
    _check_options(action, agent, interval)
    if resource is not None and not callable(resource):
        _static_resource(resource)

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise UsageError(
                "a generator cannot be governed: its execution would end before it runs"
            )
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"cannot read the signature of {fn!r}") from exc
        name = getattr(fn, "__name__", None)
        if resource is None and not (isinstance(name, str) and name):
            raise UsageError("give resource=...: the function has no name to use as Tool id")
        gov = Governor(
            gate,
            action=action,
            resource=resource if resource is not None else {"type": "Tool", "id": name},
            agent=agent,
            context=context,
            interval=interval,
        )
        skip = frozenset(exclude)

        def bind(a: tuple[Any, ...], kw: dict[str, Any]) -> tuple[Any, BaseException | None]:
            try:
                return _bind_args(sig, skip, a, kw), None
            except TypeError as exc:  # the call does not fit the signature: denied, not run
                return None, exc

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def agoverned(*a: Any, **kw: Any) -> Any:
                args, cause = bind(a, kw)
                return await gov.acall(lambda: fn(*a, **kw), args, cause=cause)

            return cast(F, agoverned)

        @functools.wraps(fn)
        def sgoverned(*a: Any, **kw: Any) -> Any:
            args, cause = bind(a, kw)
            return gov.call(lambda: fn(*a, **kw), args, cause=cause)

        return cast(F, sgoverned)

    return decorate


# -- agents -------------------------------------------------------------------------------------


def _ttl_seconds(ttl: timedelta | float) -> float:
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise UsageError("ttl must be a timedelta or a number of seconds")
    if not seconds > 0:
        raise UsageError("ttl must be positive")
    return seconds


class Agent(Identity):
    """An agent's handle: its principal (a SPIFFE ID) and the capability it presents.

    Use ``gate.agent(principal, capability)``. Its governed calls present its capability
    (:meth:`governed`, :meth:`acting`); :meth:`delegate` attenuates the capability for a
    sub-agent. The token never appears in ``repr``.

    Raises:
        UsageError: (on construction) ``principal`` is not a SPIFFE ID, or ``capability`` is
            not a non-empty string.
    """

    __slots__ = ()

    def governed(
        self,
        action: str = "tool.call",
        *,
        resource: ResourceSpec | None = None,
        context: Mapping[str, Any] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        exclude: Collection[str] = (),
    ) -> Callable[[F], F]:
        """:func:`governed`, with every call presenting this agent's capability (and nested
        governed calls in its body acting as this agent unless bound to another).

        Raises:
            UsageError: as :func:`governed`.
        """
        return governed(
            self.gate,
            action=action,
            resource=resource,
            agent=self,
            context=context,
            interval=interval,
            exclude=exclude,
        )

    @contextlib.contextmanager
    def acting(self) -> Iterator[Agent]:
        """``with agent.acting():`` governed calls in the block that are not bound to an agent
        present this agent's capability (a context variable: asyncio tasks created in the block
        inherit it).

        Never raises.
        """
        token = _AGENT.set(self)
        try:
            yield self
        finally:
            _AGENT.reset(token)

    def delegate(
        self,
        rights: Iterable[str | Right] | str | Right,
        ttl: timedelta | float | None = None,
        *,
        name: str | None = None,
        parent: str | None = None,
        now: datetime | None = None,
    ) -> Agent:
        """A sub-agent: principal ``<this principal>/<name>`` (or ``name`` itself when it is a
        SPIFFE ID under this agent's path; without ``name``, this agent's own principal, for a
        sub-agent that acts under the same identity with fewer rights), holding this agent's
        token attenuated to ``rights``
        (``"tool.call:Tool::web_search"`` or :class:`~interlock.capability.Right`), expiring
        ``ttl`` from ``now`` (default: the current time, also written as the attenuation's
        issued-at), and — with ``parent`` — valid only for
        requests naming that parent execution. Like ``interlock token attenuate --delegate-to``:
        no private key is used, and a token can only be narrowed (a right the holder lacks stays
        denied, CAPABILITY_INSUFFICIENT).

        Raises:
            UsageError: ``name`` does not give a SPIFFE ID strictly under this agent's path,
                ``ttl`` is not positive, or ``now`` is naive.
            CapabilityError: a right does not parse, ``rights`` is empty, or this agent's token
                does not verify against the gate's capability root.
        """
        if name is None:
            sub = self.principal
        else:
            sub = name if name.startswith("spiffe://") else f"{self.principal}/{name}"
            if not is_spiffe_id(sub) or sub == self.principal or not is_under(sub, self.principal):
                raise UsageError(
                    f"a sub-agent's principal must be a SPIFFE ID under {self.principal}/",
                    name=name[:80],
                )
        if isinstance(rights, str | Right):
            rights = [rights]
        parsed = [r if isinstance(r, Right) else Right.parse(r) for r in rights]
        expires: datetime | None = None
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            raise UsageError("now must be timezone-aware")
        if ttl is not None:
            expires = now + timedelta(seconds=_ttl_seconds(ttl))
        root = bytes.fromhex(str(self.gate.snapshot.descriptor["capability_root"]))
        token = attenuate(
            self._capability,
            root_public_raw=root,
            rights=parsed,
            expires_at=expires,
            parent=parent,
            delegate_to=None if name is None else sub,
            now=now,
        )
        return Agent(self.gate, sub, token)
