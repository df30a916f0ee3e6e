"""Continuous verification of the executions started over HTTP (DESIGN I5, I6).

    verifier = ExecutionVerifier(gate, exec_lock, policy_lock)
    verifier.start()                     # the app's lifespan does this

``POST /v1/executions`` admits a request and commits ``exec.start``; the action then runs
somewhere else, but its status on the ledger is this server's to keep. Each execution started
here is tracked with a :class:`~interlock.runtime.supervisor.Watch` and re-decided by one
background thread: every ``interval`` (1 s by default) and within ~100 ms of a governance change
(the gate's snapshot id: revocation, quarantine, kill switch, policy; the signed policy files on
disk; a parent's status). An admin change made through this server wakes the thread at once.

When authorization ends, the :class:`Watch` commits ``exec.verify`` (``effect: deny``, the
reasons, the snapshot) with status ``terminated`` — from that commit on the execution's children
are denied ``LINEAGE_BROKEN`` and ``PATCH`` answers 409 — and this module then closes it with
``exec.terminated`` (``reason``, ``supervisor: "http"``). The remote runner learns it from
``GET /v1/executions/{id}`` (``status: terminated``, ``reason``): the server cannot stop a
process it does not run.

The same happens, without ``exec.verify``, when

* an optional **lease** runs out: the runner did not report (``GET`` with its capability as
  Bearer token, or the ``PATCH`` end) within ``lease`` seconds — ``DEADLINE_EXCEEDED``;
* the server stops: nothing would re-verify the execution any more — ``INTERNAL_ERROR``.

Fail-closed: any error in the loop ends the affected authorizations; a termination that cannot
be committed is retried every pass; executions are refused (503, nothing recorded) while the
verifier is not running or already tracks ``capacity`` executions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from interlock.core.model import Reason, ReasonCode, RecordType
from interlock.errors import Error
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S, POLL_S, Watch, reason_from_exception
from interlock.server.metrics import Metrics

if TYPE_CHECKING:
    from interlock.core.model import ActionRequest
    from interlock.gate import Gate

__all__ = ["DEFAULT_MAX_EXECUTIONS", "ExecutionVerifier"]

#: executions one server tracks at most; past it ``POST /v1/executions`` is 503
DEFAULT_MAX_EXECUTIONS = 1024
#: terminations remembered for ``GET /v1/executions/{id}`` (their reasons)
_KEPT = 4096
_STOP_JOIN_S = 30.0

_log = logging.getLogger("interlock.server")


@dataclass(slots=True)
class _Tracked:
    request: ActionRequest
    watch: Watch | None
    started: float
    lease_until: float | None
    #: why authorization ended, once known; the execution is then closed (retried until done)
    reason: Reason | None = None


class ExecutionVerifier:
    """Re-verifies the running executions started through this server's
    ``POST /v1/executions`` and terminates those whose authorization ended.

    ``exec_lock`` is the lock under which the routes change an execution's status (``PATCH``
    end); every check-then-record here holds it too, so an end report and a termination never
    interleave. ``policy_lock`` serialises policy reloads with policy uploads.

    Thread-safe. :meth:`start` and :meth:`stop` are called by the app's lifespan.
    """

    def __init__(
        self,
        gate: Gate,
        exec_lock: threading.Lock,
        policy_lock: threading.Lock,
        *,
        metrics: Metrics | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        lease: float | None = None,
        capacity: int = DEFAULT_MAX_EXECUTIONS,
    ) -> None:
        if not interval > 0:
            raise ValueError("the verification interval must be positive")
        if lease is not None and not lease > 0:
            raise ValueError("the execution lease must be positive")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.gate = gate
        self.exec_lock = exec_lock
        self.policy_lock = policy_lock
        self.metrics = metrics
        self.interval = interval
        self.lease = lease
        self.capacity = capacity
        self._mu = threading.Lock()  # guards the tables below (held briefly, never across I/O)
        self._tracked: dict[str, _Tracked] = {}
        self._reserved = 0
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot: str | None = None
        self._policy_key: tuple[tuple[int, int, int], ...] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the verification thread runs (executions are admitted only then)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopping.is_set()

    def start(self) -> None:
        """Start the verification thread (once)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._policy_key = self._policy_files()
        self._thread = threading.Thread(
            target=self._run, name="interlock-http-verifier", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then terminate every execution still tracked: nothing re-verifies
        it any more (``INTERNAL_ERROR``). Blocks until done (the records are durable)."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_STOP_JOIN_S)
        reason = Reason(
            code=ReasonCode.INTERNAL_ERROR,
            detail="the server re-verifying this execution stopped: its authorization can no "
            "longer be established",
        )
        for eid in self._ids():
            with self.exec_lock:
                tracked = self._get(eid)
                if tracked is not None:
                    if tracked.reason is None:
                        tracked.reason = reason
                    self._close(eid, tracked)

    def poke(self) -> None:
        """Re-verify now (after a governance change made through this server). Never raises."""
        self._wake.set()

    # -- the routes' side ------------------------------------------------------------------

    def reserve(self) -> bool:
        """Claim a slot before admitting an execution; False when none is free or the verifier
        is not running (then admit nothing). Pair with :meth:`track` or :meth:`release`."""
        with self._mu:
            if not self.running or len(self._tracked) + self._reserved >= self.capacity:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a slot claimed by :meth:`reserve` that :meth:`track` did not use."""
        with self._mu:
            self._reserved = max(0, self._reserved - 1)

    def track(self, request: ActionRequest, snapshot: str) -> Reason | None:
        """Start re-verifying an admitted execution (its ``exec.start`` is committed); uses the
        slot claimed by :meth:`reserve`. Returns None, or — when it cannot be watched — the
        reason it was terminated at once (the caller must tell the client not to run it).
        Never raises."""
        now = time.monotonic()
        lease_until = None if self.lease is None else now + self.lease
        try:
            # the verifier checks <home>/policy once per pass and reloads once per change;
            # each Watch would otherwise reload the bundle itself, once per execution
            watch: Watch | None = Watch(
                self.gate,
                request,
                interval=self.interval,
                snapshot=snapshot,
                watch_policy_files=False,
            )
            failed = None
        except Exception as exc:  # noqa: BLE001 - an execution nobody watches must not run
            watch = None
            failed = reason_from_exception(exc, "continuous verification could not start")
        tracked = _Tracked(
            request=request, watch=watch, started=now, lease_until=lease_until, reason=failed
        )
        with self._mu:
            self._reserved = max(0, self._reserved - 1)
            self._tracked[request.id] = tracked
        if failed is not None:
            with self.exec_lock:
                self._close(request.id, tracked)
            self.poke()  # retried by the thread if that did not commit
        return failed

    def forget(self, execution_id: str) -> None:
        """Stop tracking an execution that ended (call under ``exec_lock``, after ``exec.end``
        was committed). Never raises."""
        with self._mu:
            self._tracked.pop(execution_id, None)

    def denied(self, execution_id: str) -> Reason | None:
        """The reason a tracked execution's authorization ended, while its termination is not
        committed yet; else None. Never raises."""
        with self._mu:
            tracked = self._tracked.get(execution_id)
        return None if tracked is None else tracked.reason

    def renew(self, execution_id: str) -> None:
        """The execution's runner reported: extend its lease (if leases are on). Never raises."""
        if self.lease is None:
            return
        with self._mu:
            tracked = self._tracked.get(execution_id)
            if tracked is not None and tracked.reason is None:
                tracked.lease_until = time.monotonic() + self.lease

    def termination(self, execution_id: str) -> dict[str, Any] | None:
        """``{"reason": {...}, "index": N}`` for an execution this server terminated (the most
        recent ones are remembered), else None. Never raises."""
        with self._mu:
            ended = self._ended.get(execution_id)
        return None if ended is None else dict(ended)

    def tracked(self) -> int:
        """How many executions are being re-verified. Never raises."""
        with self._mu:
            return len(self._tracked)

    # -- the thread ------------------------------------------------------------------------

    def _ids(self) -> list[str]:
        with self._mu:
            return list(self._tracked)

    def _get(self, execution_id: str) -> _Tracked | None:
        with self._mu:
            return self._tracked.get(execution_id)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop must go on; each entry is fail-closed
                _log.exception("execution verification pass failed")

    def _policy_files(self) -> tuple[tuple[int, int, int], ...]:
        out: list[tuple[int, int, int]] = []
        folder = self.gate.home.policy_dir
        for name in ("manifest.json", "manifest.sig"):
            try:
                st = (folder / name).stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((0, -1, 0))
        return tuple(out)

    def run_once(self) -> None:
        """One pass: reload the policy if its signed files changed, then re-decide every
        tracked execution that is due, whose snapshot changed or that has a parent, and close
        those whose authorization ended. Never raises for one execution's sake."""
        failure: Reason | None = None
        snapshot: str | None = None
        try:
            if self._policy_files() != self._policy_key:
                with self.policy_lock:  # not in the middle of an upload's swap
                    self._policy_key = self._policy_files()
                    self.gate.reload_policy()
            snapshot = self.gate.snapshot.id
        except Exception as exc:  # noqa: BLE001 - I6: authorization cannot be re-established
            failure = reason_from_exception(exc, "continuous verification failed")
        changed = snapshot != self._snapshot
        self._snapshot = snapshot
        for eid in self._ids():
            if self._stopping.is_set():
                return
            with self.exec_lock:
                tracked = self._get(eid)
                if tracked is None:
                    continue  # ended meanwhile
                if tracked.reason is None:
                    tracked.reason = self._verify(tracked, failure, changed)
                if tracked.reason is not None:
                    self._close(eid, tracked)

    def _verify(self, tracked: _Tracked, failure: Reason | None, changed: bool) -> Reason | None:
        if failure is not None:
            return failure
        now = time.monotonic()
        lease_until = tracked.lease_until
        if lease_until is not None and now >= lease_until:
            return Reason(
                code=ReasonCode.DEADLINE_EXCEEDED,
                detail=f"execution lease expired: its runner did not report within "
                f"{self.lease:g} s",
            )
        watch = tracked.watch
        if watch is None:  # pragma: no cover - tracked without a watch only with a reason
            return Reason(code=ReasonCode.INTERNAL_ERROR, detail="no verification for it")
        due = now >= watch.verified_at + watch.interval
        if changed or due or tracked.request.parent is not None:
            return watch.step()  # never raises; records exec.verify itself
        return None

    def _close(self, execution_id: str, tracked: _Tracked) -> None:
        """Commit ``exec.terminated`` (status ``terminated``) and stop tracking; on failure,
        keep it for the next pass. Call under ``exec_lock``."""
        reason = tracked.reason
        if reason is None:  # pragma: no cover - only closed with a reason
            return
        watch = tracked.watch
        fields: dict[str, Any] = {
            "reason": reason.to_json(),
            "supervisor": "http",
            "duration_ms": int((time.monotonic() - tracked.started) * 1000),
        }
        if watch is not None and watch.denied is not None:
            fields["verify_recorded"] = watch.deny_recorded
        try:
            index = self.gate.record_execution(
                RecordType.EXEC_TERMINATED, execution_id, fields, status="terminated"
            )
        except Exception as exc:  # noqa: BLE001 - retried on the next pass
            detail = exc.diagnostics() if isinstance(exc, Error) else type(exc).__name__
            _log.error("exec.terminated for %s not recorded (retrying): %s", execution_id, detail)
            return
        with self._mu:
            self._tracked.pop(execution_id, None)
            self._ended[execution_id] = {"reason": reason.to_json(), "index": index}
            while len(self._ended) > _KEPT:
                self._ended.popitem(last=False)
        if self.metrics is not None:
            self.metrics.executions.labels("terminated").inc()
