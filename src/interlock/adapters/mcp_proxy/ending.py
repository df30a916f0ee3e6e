"""The end records of governed MCP requests, committed off the critical path.

    ends = EndRecorder(gate)
    ends.submit(request, None, {"duration_ms": 3, "outcome": "ok", ...})  # returns at once
    ends.close()        # at shutdown: every submitted end committed, or reported

A governed request costs one durable commit before it is forwarded: the allow and its
``exec.start`` (``gate.admit(..., start=...)``). Its ``exec.end`` (or ``exec.terminated``) is
handed to one background thread and committed after the answer has gone back to the agent —
always after the start's commit (admission returns only once that is durable).

When: the proxy calls :meth:`EndRecorder.nudge` as soon as the next request's admission is
committed, and the recorder commits the ends waiting then, while that request is upstream and
the ledger has nothing else to write; with no next request, after ``linger`` seconds. An end
committed at once instead would usually still be in its fsync when the agent's next call is
admitted, and that admission would wait for it: two commits on the critical path, not one.

If an end record cannot be committed, it is tried again at :meth:`EndRecorder.close`; one that
still fails is reported on ``errlog``. Either way the run is accounted for: its ``exec.start``
is durable, with status ``running`` and the proxy's process identity, so once the proxy has
exited ``reap_orphans`` (run by every ``Gate.open`` and by ``interlock serve``'s watchers)
records ``exec.terminated`` for it (INTERNAL_ERROR, ``reaped: true``). The same holds when the
proxy is killed between an answer and its end record.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from interlock.core.model import RecordType
from interlock.errors import Error

if TYPE_CHECKING:
    from interlock.core.model import ActionRequest, Reason
    from interlock.gate import Gate

__all__ = ["DEFAULT_LINGER_S", "EndRecorder"]

#: how long an end record waits for the next admission before it is committed on its own
DEFAULT_LINGER_S = 0.05


@dataclass(slots=True)
class _End:
    request: ActionRequest
    reason: Reason | None
    fields: dict[str, Any]
    problem: str | None = field(default=None)


def record_end(
    gate: Gate, request: ActionRequest, reason: Reason | None, fields: Mapping[str, Any]
) -> str | None:
    """Commit ``exec.end``, or ``exec.terminated`` with ``reason`` when there is one; return why
    it failed, or None. Never raises."""
    out = dict(fields)
    try:
        if reason is not None:
            out["reason"] = reason.to_json()
            gate.record_execution(RecordType.EXEC_TERMINATED, request.id, out, status="terminated")
        else:
            gate.record_execution(RecordType.EXEC_END, request.id, out, status="ended")
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return exc.diagnostics() if isinstance(exc, Error) else type(exc).__name__
    return None


class EndRecorder:
    """One background thread that commits end records in the order they were submitted.

    :meth:`submit` never blocks and never raises. :meth:`close` (idempotent) stops taking new
    records, waits for the queue to drain, tries the failed ones once more and reports what
    still failed on ``errlog`` (each such run stays ``running`` until ``reap_orphans`` accounts
    for it). After :meth:`close`, :meth:`submit` commits in the caller's thread.
    """

    def __init__(
        self, gate: Gate, *, errlog: TextIO | None = None, linger: float | None = None
    ) -> None:
        self.gate = gate
        self.errlog = errlog
        #: the longest an end waits for a :meth:`nudge` before it is committed anyway
        self.linger = DEFAULT_LINGER_S if linger is None else linger
        self._nudged = threading.Event()
        #: end records that could not be committed (kept for one more try at close)
        self.failed: list[_End] = []
        self._queue: queue.SimpleQueue[_End | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name="interlock-mcp-end", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """End records submitted but not yet committed or failed."""
        with self._lock:
            return self._pending

    def submit(self, request: ActionRequest, reason: Reason | None, fields: dict[str, Any]) -> None:
        """Queue the end of ``request``: ``exec.terminated`` with ``reason``, else ``exec.end``
        with ``fields``. Returns at once (after :meth:`close`: once committed or failed)."""
        end = _End(request, reason, fields)
        with self._lock:
            if not self._closed:
                self._pending += 1
                self._queue.put(end)
                return
        self._commit(end)

    def nudge(self) -> None:
        """Say that the ledger is idle for a while (an admission was just committed and its
        request is upstream): the ends waiting are committed now. Never blocks."""
        self._nudged.set()

    def _commit(self, end: _End) -> None:
        end.problem = record_end(self.gate, end.request, end.reason, end.fields)
        if end.problem is not None:
            with self._lock:
                self.failed.append(end)

    def _run(self) -> None:
        stop = False
        while not stop and (end := self._queue.get()) is not None:
            # a nudge from before this end was taken is stale: wait for the next one, then
            # commit every end waiting by then
            self._nudged.clear()
            if not self._closed:
                self._nudged.wait(self.linger)
            batch = [end]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            for one in batch:
                try:
                    self._commit(one)
                finally:
                    with self._lock:
                        self._pending -= 1
                        self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Commit what waits at once, and wait until every submitted record is committed or
        failed; False on timeout."""
        self._nudged.set()
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> list[str]:
        """Drain the queue, retry the failures once, report those that remain; return their
        execution ids. Blocking (call it from a worker thread in async code). Never raises."""
        with self._lock:
            if self._closed:
                return [e.request.id for e in self.failed]
            self._closed = True
        self._queue.put(None)
        self._nudged.set()  # what waits is committed now
        self._thread.join()
        retry, self.failed = self.failed, []
        for end in retry:
            self._commit(end)
        errlog = self.errlog if self.errlog is not None else sys.stderr
        for end in self.failed:
            with contextlib.suppress(OSError, ValueError):  # the log is gone
                print(
                    f"interlock mcp-proxy: exec.end of execution {end.request.id} not recorded"
                    f" ({end.problem}); it stays running on the ledger until reap_orphans"
                    " terminates it (INTERNAL_ERROR, reaped)",
                    file=errlog,
                    flush=True,
                )
        return [e.request.id for e in self.failed]
