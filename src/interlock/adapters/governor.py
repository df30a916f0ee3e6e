"""The engine under the SDK: a :class:`Governor` decides one call of one kind of action,
runs it inside a governed execution when allowed, and turns a denial into what the caller
sees."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from opentelemetry import trace

from interlock.capability.right import resource_type_of
from interlock.core.model import (
    Decision,
    Effect,
    Reason,
    ReasonCode,
    Resource,
    Stage,
    is_spiffe_id,
)
from interlock.errors import Denied, Error, Revoked, UsageError
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    from interlock.gate import Gate


class Identity:
    """Who a governed call acts as: a principal (a SPIFFE ID), the capability it presents and
    the gate it goes through. :class:`interlock.adapters.sdk.Agent` is the one to use (this
    base keeps the engine free of the SDK's handle). The token never appears in ``repr``.

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


R = TypeVar("R")


#: a resource: ``{"type": "Tool", "id": "web_search"}``, a :class:`~interlock.Resource`, or the
#: uid text ``"Tool::web_search"``
ResourceValue: TypeAlias = Mapping[str, Any] | Resource | str


#: a resource value, or a callable that gets the call's ``args`` (a dict) and returns one
ResourceSpec: TypeAlias = ResourceValue | Callable[[dict[str, Any]], ResourceValue]


#: the agent acting in the current context (``agent.acting()``, or an agent-bound call's body)
_AGENT: ContextVar[Identity | None] = ContextVar("interlock_current_agent", default=None)


#: the request id of a denial the SDK made without reaching the gate (it has no request)
_NO_REQUEST_ID = "00000000-0000-7000-8000-000000000000"


#: the reason codes whose detail the agent (the model) never reads, in any adapter (SDK
#: adapters, MCP proxy): only the code; the operator reads the detail on the ledger. Their
#: details describe the credential or the gate's internals (why a token does not verify, a
#: path, an exception), which would help an agent probe them.
OPAQUE_CODES: frozenset[str] = frozenset(
    {ReasonCode.CAPABILITY_INVALID, ReasonCode.IDENTITY_UNVERIFIED, ReasonCode.INTERNAL_ERROR}
)


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
    if agent is not None and not isinstance(agent, Identity):
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
        agent: Identity | None = None,
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
