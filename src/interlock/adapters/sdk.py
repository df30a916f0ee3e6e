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
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from opentelemetry import trace

from interlock.capability import Right, attenuate
from interlock.capability.right import resource_type_of
from interlock.core.model import (
    Decision,
    Effect,
    Reason,
    ReasonCode,
    Resource,
    Stage,
    is_spiffe_id,
    is_under,
)
from interlock.errors import Denied, Error, Revoked, UsageError
from interlock.runtime.execution import current_execution
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from interlock.gate import Gate

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
R = TypeVar("R")

#: a resource: ``{"type": "Tool", "id": "web_search"}``, a :class:`~interlock.Resource`, or the
#: uid text ``"Tool::web_search"``
ResourceValue: TypeAlias = Mapping[str, Any] | Resource | str
#: a resource value, or a callable that gets the call's ``args`` (a dict) and returns one
ResourceSpec: TypeAlias = ResourceValue | Callable[[dict[str, Any]], ResourceValue]

#: the agent acting in the current context (``agent.acting()``, or an agent-bound call's body)
_AGENT: ContextVar[Agent | None] = ContextVar("interlock_current_agent", default=None)
#: the request id of a denial the SDK made without reaching the gate (it has no request)
_NO_REQUEST_ID = "00000000-0000-7000-8000-000000000000"
#: the reason codes whose detail the agent (the model) never reads, in any adapter (SDK
#: adapters, MCP proxy): only the code; the operator reads the detail on the ledger. Their
#: details describe the credential or the gate's internals (why a token does not verify, a
#: path, an exception), which would help an agent probe them.
OPAQUE_CODES: frozenset[str] = frozenset(
    {ReasonCode.CAPABILITY_INVALID, ReasonCode.IDENTITY_UNVERIFIED, ReasonCode.INTERNAL_ERROR}
)


def current_agent() -> Agent | None:
    """The agent acting in the current context, or ``None``.

    Never raises.
    """
    return _AGENT.get()


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current OpenTelemetry span context, or ``None`` when there
    is no valid one (no span, or only ``opentelemetry-api`` without an active context).

    Never raises on a well-behaved OpenTelemetry API; the SDK's callers deny on any error.
    """
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    # W3C Trace Context §3.2: version 00, 16-byte trace id, 8-byte parent id, 1-byte flags
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


def disclosed_detail(code: str, detail: str) -> str:
    """``detail`` if the agent may read the detail of a ``code`` denial, else ``""``: the one
    rule every adapter applies to model-facing text (see :data:`OPAQUE_CODES`).

    Never raises.
    """
    return "" if code in OPAQUE_CODES else detail


def denial_text(exc: Denied | Revoked) -> str:
    """The text a framework adapter hands the model for a denial or a stopped execution: the
    reason code first, then the detail (none for :data:`OPAQUE_CODES`) and the decision hash
    (or execution id).

    Never raises.
    """
    detail = disclosed_detail(exc.reason_code, exc.detail)
    shown = f": {detail}" if detail else ""
    if isinstance(exc, Denied):
        decision_hash = getattr(exc.decision, "decision_hash", "") or "unknown"
        return f"Interlock denied this call: {exc.reason_code}{shown} (decision {decision_hash})"
    return f"Interlock stopped this call: {exc.reason_code}{shown} (execution {exc.execution_id})"


def _sdk_denial(exc: BaseException) -> Decision:
    """A deny for an error that kept the SDK from getting a decision from the gate. It is not
    recorded (the gate never saw a request); its hash identifies the answer, it proves nothing."""
    code = ReasonCode.INTERNAL_ERROR
    if isinstance(exc, Error):
        with contextlib.suppress(ValueError):
            code = ReasonCode(exc.reason_code)
    if isinstance(exc, Error) and code not in OPAQUE_CODES:
        detail = f"could not admit the call: {exc.diagnostics()}"[:500]
    else:
        # a foreign exception is named by type only: its message may hold the call's inputs;
        # an opaque code's evidence (paths, token details) is not carried either
        detail = f"{type(exc).__name__} while admitting the call: it was not made"
    blob = json.dumps([_NO_REQUEST_ID, code.value, detail], sort_keys=True).encode()
    return Decision(
        request_id=_NO_REQUEST_ID,
        effect=Effect.DENY,
        reasons=(Reason(code=code, detail=detail),),
        snapshot="",
        decision_hash=hashlib.sha256(blob).hexdigest(),
        ledger_index=None,
        stage=Stage.GATE,
    )


def _normalize_resource(value: Any) -> Any:
    """A resource value as the request's ``{type, id}``; anything else is passed on as it is,
    for intake to refuse (and record)."""
    if isinstance(value, Resource):
        return value.to_json()
    if isinstance(value, str):
        rtype = resource_type_of(value)
        if rtype is None:
            return value
        return {"type": rtype, "id": value[len(rtype) + 2 :]}
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _static_resource(spec: ResourceValue) -> dict[str, Any]:
    value = _normalize_resource(spec)
    if (
        not isinstance(value, dict)
        or set(value) != {"type", "id"}
        or not all(isinstance(v, str) and v for v in value.values())
    ):
        raise UsageError(
            "resource must be {'type': ..., 'id': ...}, a Resource, 'Type::id', or a callable "
            "of the call's args",
            resource=repr(spec)[:80],
        )
    return value


def _check_options(action: object, agent: object, interval: object) -> None:
    if not isinstance(action, str) or not action:
        raise UsageError("action must be a non-empty string, e.g. 'tool.call'")
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise UsageError("interval must be a positive number of seconds")
    if agent is not None and not isinstance(agent, Agent):
        raise UsageError("agent must be an interlock Agent (gate.agent(...))")


class Governor:
    """Governs calls of one kind of action; the engine under :func:`governed`, :class:`Agent`
    and the framework adapters.

    Args:
        gate: the gate that decides and records.
        action: the request's ``action`` (e.g. ``tool.call``).
        resource: a resource value, or a callable of the call's ``args`` returning one.
        agent: the identity every call presents; ``None`` uses :func:`current_agent` at call
            time (no agent at all: the gate denies ``MALFORMED_REQUEST``, no principal).
        context: the request's free-form ``context`` (JSON).
        interval: the re-verification interval of each call's execution, in seconds.

    Raises:
        UsageError: (on construction) a static resource that is not ``{type, id}``, an action
            that is not a string, or an interval that is not positive.
    """

    def __init__(
        self,
        gate: Gate,
        *,
        action: str = "tool.call",
        resource: ResourceSpec,
        agent: Agent | None = None,
        context: Mapping[str, Any] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        _check_options(action, agent, interval)
        self.gate = gate
        self.action = action
        self.agent = agent
        self.context = context
        self.interval = float(interval)
        self._resource_fn: Callable[[dict[str, Any]], ResourceValue] | None = None
        self._resource: dict[str, Any] | None = None
        if callable(resource):
            self._resource_fn = resource
        else:
            self._resource = _static_resource(resource)

    # -- building the request ------------------------------------------------------------------

    def _build(self, args: Mapping[str, Any] | None) -> tuple[dict[str, Any], BaseException | None]:
        """The request for a call with ``args`` (``None``: the arguments could not be bound),
        and the exception that made a field unusable, if any."""
        problem: BaseException | None = None
        resource: Any = self._resource
        if self._resource_fn is not None:
            resource = None  # stays None (intake refuses it) unless the callable succeeds
            if args is not None:
                try:
                    resource = _normalize_resource(self._resource_fn(dict(args)))
                except Exception as exc:  # noqa: BLE001 - fail-closed: no resource, denied below
                    problem = exc
        request: dict[str, Any] = {
            "action": self.action,
            "resource": resource,
            # None makes intake refuse the request: "'args' must be an object"
            "args": dict(args) if args is not None else None,
        }
        agent = self.agent if self.agent is not None else _AGENT.get()
        if agent is not None:
            request["principal"] = agent.principal
            request["capability"] = agent.capability
        if self.context is not None:
            request["context"] = self.context
        traceparent = current_traceparent()
        if traceparent is not None:
            request["traceparent"] = traceparent
        return request, problem

    def _prepare(
        self, args: Mapping[str, Any] | None, cause: BaseException | None
    ) -> tuple[dict[str, Any], BaseException | None]:
        try:
            request, problem = self._build(args)
        except Exception as exc:  # could not even form the request: deny
            raise Denied(_sdk_denial(exc)) from exc
        return request, problem if problem is not None else cause

    @contextlib.contextmanager
    def _acting(self) -> Iterator[None]:
        if self.agent is None:
            yield
            return
        token = _AGENT.set(self.agent)
        try:
            yield
        finally:
            _AGENT.reset(token)

    # -- running -------------------------------------------------------------------------------

    def call(
        self,
        fn: Callable[[], R],
        args: Mapping[str, Any] | None,
        *,
        cause: BaseException | None = None,
    ) -> R:
        """Decide a call with ``args`` and, only if allowed and ``exec.start`` is committed, run
        ``fn()`` inside ``gate.execution(...)``; return what it returns.

        ``args=None`` with ``cause`` says the arguments could not be bound: the call is denied.

        Raises:
            Denied: the gate denied the call (the decision is on the ledger unless the ledger
                itself failed), the request could not be formed (``MALFORMED_REQUEST``,
                recorded; chained from the cause), or an error kept the SDK from the gate
                (``INTERNAL_ERROR``, unrecorded). ``fn`` did not run.
            Revoked: ``fn`` called ``current_execution().check()`` after its authorization
                ended.
            LedgerUnavailable: ``fn`` returned but ``exec.end`` could not be committed.
            Exception: whatever ``fn`` raises (recorded as ``exec.end`` outcome ``error``).
        """
        request, problem = self._prepare(args, cause)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.gate.execution(request, interval=self.interval))
            except Denied as exc:
                if problem is not None:
                    raise exc from problem
                raise
            except Exception as exc:  # I2: not admitted, so deny; fn never runs
                raise Denied(_sdk_denial(exc)) from exc
            if problem is not None:  # intake refuses such a request; never run it regardless
                raise Denied(_sdk_denial(problem)) from problem
            with self._acting():
                return fn()
        raise AssertionError("unreachable")  # pragma: no cover - mypy: the with always returns

    async def acall(
        self,
        fn: Callable[[], Awaitable[R]],
        args: Mapping[str, Any] | None,
        *,
        cause: BaseException | None = None,
        body_in_thread: bool = False,
    ) -> R:
        """:meth:`call` for coroutines: admits with ``async with gate.execution(...)`` (the
        task is cancelled when authorization ends, surfacing as :class:`Revoked`), then awaits
        ``fn()``.

        ``body_in_thread=True`` says ``fn()`` awaits a synchronous callable running in a worker
        thread (a sync framework tool under an async runner). Cancelling the await does not stop
        that thread — the callable runs to its end after the execution is recorded as
        terminated — so the closing record then carries ``"body_may_still_run": true``.

        Raises:
            Denied: as :meth:`call`; ``fn`` was not called.
            Revoked: authorization ended while ``fn`` ran (the task was cancelled).
            LedgerUnavailable: ``fn`` returned but ``exec.end`` could not be committed.
            Exception: whatever ``fn()`` raises.
        """
        request, problem = self._prepare(args, cause)
        async with contextlib.AsyncExitStack() as stack:
            try:
                run = await stack.enter_async_context(
                    self.gate.execution(request, interval=self.interval)
                )
            except Denied as exc:
                if problem is not None:
                    raise exc from problem
                raise
            except Exception as exc:  # I2: not admitted, so deny; fn never runs
                raise Denied(_sdk_denial(exc)) from exc
            if problem is not None:  # intake refuses such a request; never run it regardless
                raise Denied(_sdk_denial(problem)) from problem
            run.body_in_thread = body_in_thread
            with self._acting():
                return await fn()
        raise AssertionError("unreachable")  # pragma: no cover - mypy: the with always returns


# -- @gate.governed -----------------------------------------------------------------------------


def _bind_args(
    sig: inspect.Signature, exclude: Collection[str], a: tuple[Any, ...], kw: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults applied; ``*args`` as a list and
    ``**kwargs`` as an object under their own names.

    Raises:
        TypeError: the arguments do not fit the signature.
    """
    bound = sig.bind(*a, **kw)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in exclude:
            continue
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out[name] = dict(value)
        else:
            out[name] = value
    return out


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
    elif type(gate).__name__ == "Gate" and callable(getattr(gate, "admit", None)):
        # the gate sits below this layer: recognised by its shape, not imported at run time
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


class Agent:
    """An agent's handle: its principal (a SPIFFE ID) and the capability it presents.

    Use ``gate.agent(principal, capability)``. Its governed calls present its capability
    (:meth:`governed`, :meth:`acting`); :meth:`delegate` attenuates the capability for a
    sub-agent. The token never appears in ``repr``.

    Raises:
        UsageError: (on construction) ``principal`` is not a SPIFFE ID, or ``capability`` is
            not a non-empty string.
    """

    __slots__ = ("_capability", "gate", "principal")

    def __init__(self, gate: Gate, principal: str, capability: str) -> None:
        if not isinstance(principal, str) or not is_spiffe_id(principal):
            raise UsageError(f"not a SPIFFE ID: {principal!r}")
        if not isinstance(capability, str) or not capability:
            raise UsageError("capability must be a token (a non-empty string)")
        self.gate = gate
        self.principal = principal
        self._capability = capability

    @property
    def capability(self) -> str:
        """The capability token this agent presents."""
        return self._capability

    def __repr__(self) -> str:
        return f"Agent({self.principal!r})"

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
