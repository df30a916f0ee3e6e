"""In-process governed execution: ``with gate.execution(request) as run:``.

    with gate.execution(request, interval=1.0) as run:
        for chunk in work:
            run.check()        # raises interlock.Revoked once authorization is gone
            process(chunk)

Entering admits the request (``interlock.Denied`` on a deny) and commits ``exec.start`` before
the body runs (I1). A background thread re-verifies on the timer and at once on governance
changes (see :class:`~interlock.runtime.supervisor.Watch`); :meth:`Execution.check` is cheap — it
re-verifies inline only when the last verification is older than ``interval``. Leaving records
``exec.end``, or ``exec.terminated`` with the reason when authorization was found gone.

**In-process code can only be stopped cooperatively**: Python offers no safe way to stop a
thread from outside. Synchronous code must call ``run.check()``; with ``async with``, the task
that entered the block is cancelled when authorization ends (best effort: a task that shields
itself or never awaits runs on), and the ``CancelledError`` surfaces as ``Revoked``. A
synchronous callable the task awaits in a worker thread (``asyncio.to_thread``, an executor)
is *not* stopped: only the await is cancelled, the thread runs the callable to its end. Set
:attr:`Execution.body_in_thread` for such a body and a closing record caused by that
cancellation says ``"body_may_still_run": true``. The hard boundary is ``interlock exec``: a
separate process whose process group is killed.

**A task cancelled while it is being admitted** (``async with``; the admission runs in a worker
thread and cannot be interrupted) waits for the admission to finish; if it started the
execution, ``exec.end`` is recorded at once with ``outcome: "cancelled"`` and the watch stops,
then the ``CancelledError`` propagates. The body never runs.

**Lineage without plumbing**: while a run is inside its ``with`` / ``async with`` block it is
the *current execution* of that context (a :mod:`contextvars` variable, so asyncio tasks created
inside the block inherit it; a plain ``threading.Thread`` does not — run thread targets with
``contextvars.copy_context().run``). A ``gate.execution(request)`` entered while another
execution of the same gate is current gets that execution as its ``parent`` when ``request`` is
a mapping without a ``parent`` key (an explicit ``parent``, even ``None``, is kept).
:func:`current_execution` returns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from interlock.core.model import Reason, RecordType
from interlock.errors import Denied, Error, Revoked
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S, POLL_S, Watch

if TYPE_CHECKING:
    from interlock.core.model import ActionRequest, Decision
    from interlock.gate import Gate

__all__ = ["Execution", "current_execution"]

#: the execution whose block the current context is in (set on enter, reset on exit)
_CURRENT: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "interlock_current_execution", default=None
)


def current_execution() -> Execution | None:
    """The governed execution whose ``with`` / ``async with`` block this context is in, or
    ``None``. Nested governed work names it as ``parent``; a governed function can call
    ``current_execution().check()``.

    Never raises.
    """
    return _CURRENT.get()


class Execution:
    """One governed in-process execution. Use ``gate.execution(request)``; enter it with
    ``with`` or ``async with``. Its id is the request id (pass it as ``parent`` to children).

    ``body_in_thread`` (default ``False``): set it when the ``async with`` body awaits a
    synchronous callable running in a worker thread. Cancelling the await (a revocation, or
    the caller) does not stop that thread, and a closing record caused by the cancellation then
    carries ``"body_may_still_run": true``.
    """

    def __init__(
        self,
        gate: Gate,
        request: Mapping[str, Any] | bytes | str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        if not interval > 0:
            raise ValueError("the verification interval must be positive")
        self.gate = gate
        self.interval = interval
        self._raw = request
        self.decision: Decision | None = None
        self.request: ActionRequest | None = None
        self._watch: Watch | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancelled = False
        self._token: contextvars.Token[Execution | None] | None = None
        #: set by the caller when the body is a synchronous callable that the task awaits in a
        #: worker thread: cancelling the await does not stop it, so a close caused by a
        #: cancellation records ``body_may_still_run: true``
        self.body_in_thread = False

    @property
    def id(self) -> str:
        """The execution id (= request id).

        Raises:
            RuntimeError: before the execution was entered.
        """
        if self.request is None:
            raise RuntimeError("the execution has not started")
        return self.request.id

    @property
    def reason(self) -> Reason | None:
        """Why authorization ended, or None while it holds. Never raises."""
        return None if self._watch is None else self._watch.denied

    # -- start / stop --------------------------------------------------------------------------

    def _inherit_parent(self) -> None:
        """Name the current execution of the same gate as ``parent`` (see the module doc)."""
        outer = _CURRENT.get()
        raw = self._raw
        if outer is None or outer.gate is not self.gate or outer.request is None:
            return
        if not isinstance(raw, Mapping):
            return  # bytes or text: sent as given (the caller wrote the JSON, parent included)
        try:
            if "parent" in raw:
                return
            self._raw = {**raw, "parent": outer.request.id}
        except Exception:  # noqa: BLE001 - a mapping we cannot read is left for intake to refuse
            return

    def _enter_current(self) -> None:
        self._token = _CURRENT.set(self)

    def _leave_current(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        # a block left in another context than it was entered in (the token belongs to that
        # one): nothing to restore here
        with contextlib.suppress(ValueError):
            _CURRENT.reset(token)

    def _start(self) -> None:
        # I1: the allow and exec.start are committed together, before the body runs; if that
        # commit fails the answer is a deny (LEDGER_UNAVAILABLE) and neither record exists
        decision, req = self.gate.admit(
            self._raw,
            start={"supervisor": "in-process", "interval_ms": round(self.interval * 1000)},
        )
        self.decision = decision
        if not decision.allowed or req is None:
            raise Denied(decision)
        self.request = req
        self._watch = Watch(self.gate, req, interval=self.interval, snapshot=decision.snapshot)
        self._started = time.monotonic_ns()
        self._thread = threading.Thread(
            target=self._run, name=f"interlock-watch-{req.id}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        watch = self._watch
        if watch is None:  # pragma: no cover - started only after the watch exists
            return
        while not self._stop.wait(min(POLL_S, self.interval)):
            if watch.step() is not None:
                self._cancel_task()
                return

    def _cancel_task(self) -> None:
        task, loop = self._task, self._loop
        if task is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing left to cancel
            loop.call_soon_threadsafe(self._cancel_in_loop)

    def _cancel_in_loop(self) -> None:
        # runs in the event loop: the body may have left the block since the thread asked
        task = self._task
        if task is not None and not task.done():
            self._cancelled = True
            task.cancel()

    def _close(self, exc: BaseException | None, *, outcome: str | None = None) -> None:
        """Stop watching and commit ``exec.end`` or ``exec.terminated``. ``outcome`` overrides
        the one derived from ``exc`` (``ok`` / ``error``).

        Raises:
            LedgerUnavailable: the closing record was not committed.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        req = self.request
        if req is None:
            return
        fields: dict[str, Any] = {
            "duration_ms": (time.monotonic_ns() - self._started) // 1_000_000,
            "outcome": outcome or ("ok" if exc is None else "error"),
        }
        if exc is not None:
            fields["error_type"] = type(exc).__name__
        if self.body_in_thread and isinstance(exc, asyncio.CancelledError):
            # only the await was cancelled: the worker thread runs the callable on
            fields["body_may_still_run"] = True
        reason = self.reason
        if reason is not None:
            fields["reason"] = reason.to_json()
            self.gate.record_execution(
                RecordType.EXEC_TERMINATED, req.id, fields, status="terminated"
            )
        else:
            self.gate.record_execution(RecordType.EXEC_END, req.id, fields, status="ended")

    # -- the body's side ---------------------------------------------------------------------

    def check(self) -> None:
        """Return if authorization still holds.

        Re-verifies inline only if the last verification is older than ``interval`` (the
        background thread usually keeps it fresh).

        Raises:
            Revoked: with the reason code once authorization no longer holds (and on every
                later call).
            RuntimeError: before the execution was entered.
        """
        watch = self._watch
        if watch is None:
            raise RuntimeError("the execution has not started")
        reason = watch.denied
        if reason is None and time.monotonic() - watch.verified_at >= self.interval:
            reason = watch.step(force=True)
        if reason is not None:
            raise Revoked(reason.code.value, reason.detail, execution_id=self.id)

    # -- context managers --------------------------------------------------------------------

    def __enter__(self) -> Execution:
        """Admit and start.

        Raises:
            Denied: the request was denied, or ``exec.start`` could not be committed.
        """
        self._inherit_parent()
        self._start()
        self._enter_current()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the end (or the termination).

        Raises:
            LedgerUnavailable: the closing record was not committed (only when the body raised
                nothing; otherwise the body's exception propagates).
        """
        self._leave_current()
        try:
            self._close(exc)
        except Error:
            if exc is None:
                raise

    async def __aenter__(self) -> Execution:
        """Admit and start; the current task is cancelled if authorization ends.

        A cancellation that arrives while the admission runs waits for it; an execution it
        started is ended at once (``exec.end``, ``outcome: "cancelled"``) before the
        ``CancelledError`` propagates.

        Raises:
            Denied: the request was denied, or ``exec.start`` could not be committed.
            asyncio.CancelledError: the task was cancelled during the admission.
        """
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._inherit_parent()
        # the admission thread cannot be interrupted: shielded, so a cancellation of this task
        # cannot leave an execution started (exec.start, a watch) that nobody will end
        starting = asyncio.ensure_future(asyncio.to_thread(self._start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            await self._abandon_start(starting)
            raise
        self._enter_current()  # here, in the task's own context (to_thread ran in a copy)
        return self

    async def _abandon_start(self, starting: asyncio.Future[None]) -> None:
        """The entering task was cancelled while the admission ran: wait for it to finish and,
        if it started the execution, end it (``exec.end``, ``outcome: "cancelled"``; the watch
        stops). Further cancellations are absorbed until then; the caller re-raises."""
        self._task = None  # the task is leaving: the watch must not cancel it (or a later await)
        await _finish(starting)
        if starting.cancelled() or starting.exception() is not None:
            return  # denied, or the admission failed: nothing was started
        closing = asyncio.ensure_future(asyncio.to_thread(self._close, None, outcome="cancelled"))
        await _finish(closing)
        if not closing.cancelled():
            # a closing record that could not be committed leaves the execution 'running' on
            # the ledger; the body never ran, and the cancellation is what the caller must see
            closing.exception()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record the end or termination; a cancellation caused by a revocation becomes
        :class:`Revoked`.

        Raises:
            Revoked: the task was cancelled because authorization ended.
            LedgerUnavailable: the closing record was not committed (body raised nothing).
        """
        self._task = None  # no cancellation after this point
        self._leave_current()
        try:
            await asyncio.to_thread(self._close, exc)
        except Error:
            if exc is None:
                raise
        reason = self.reason
        if self._cancelled and isinstance(exc, asyncio.CancelledError) and reason is not None:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            raise Revoked(reason.code.value, reason.detail, execution_id=self.id) from exc


async def _finish(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, whatever cancellations arrive meanwhile (its outcome is
    left for the caller to read)."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((future,))
