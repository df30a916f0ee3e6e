"""The supervisor: start a command only under a recorded allow, re-verify it while it runs, and
terminate its process group the moment its authorization stops holding (DESIGN I1, I5, I6).

    >>> from interlock.runtime.supervisor import run_command
    >>> outcome = run_command(gate, {"principal": "spiffe://acme.test/agent/researcher",
    ...                              "action": "shell.exec",
    ...                              "resource": {"type": "Host", "id": "localhost"},
    ...                              "capability": token}, ["sleep", "1"])   # doctest: +SKIP
    >>> outcome.status, outcome.exit_code                                    # doctest: +SKIP
    ('ended', 0)

Lifecycle of one execution (its id is the request id):

1. ``gate.admit`` decides and records the request. Denied: nothing starts (exit 126).
2. ``exec.start`` is committed with status ``running`` *before* the process is spawned (I1); if
   that append fails the command never starts (``LEDGER_UNAVAILABLE``).
3. The command runs in its own session and process group with ``INTERLOCK_EXECUTION_ID`` in its
   environment. Its stdout/stderr are passed through and hashed.
4. :class:`Watch` re-decides it on a timer and at once on a governance change (snapshot id,
   policy files on disk, the parent's status). A deny first commits ``exec.verify`` with status
   ``terminated`` (so children see ``LINEAGE_BROKEN`` before anything is signalled), then sends
   SIGTERM to the process group, SIGKILL after the grace period, and commits ``exec.terminated``
   with the reason. Any error in the loop is a deny.
5. Otherwise, when the command exits, ``exec.end`` records its exit status, duration and output
   digests. Anything the command left behind in its process group is killed: it would otherwise
   run unsupervised.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from interlock.containment import Box, Settings, prepare
from interlock.core.model import Decision, Effect, Reason, ReasonCode, RecordType
from interlock.errors import ContainmentUnavailable, Error
from interlock.process import process_identity
from interlock.runtime.nested import NESTED_ENV, Relay
from interlock.runtime.watchdog import Watchdog, start_watchdog

if TYPE_CHECKING:
    from interlock.core.model import ActionRequest
    from interlock.gate import Gate
from interlock.runtime.child import (
    EXIT_CANNOT_EXECUTE,
    _Child,
    _Pump,
    _signal_group,
    _signal_name,
)

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_INTERVAL_S",
    "EXECUTION_ENV",
    "EXIT_CANNOT_EXECUTE",
    "EXIT_NOT_FOUND",
    "Outcome",
    "Watch",
    "environment_digest",
    "run_command",
]


DEFAULT_INTERVAL_S = 1.0


DEFAULT_GRACE_S = 2.0


#: how often a supervisor looks for governance changes between timed re-decisions: the gate
#: refreshes its trust state when it is older than TRUST_REFRESH_S (40 ms), so every poll sees
#: a revocation committed by another process — within 50 ms (DESIGN §10 P10: p99 ≤ 100 ms
#: from revocation to termination; one refresh costs ≈ 80 µs of CPU)
POLL_S = 0.05


#: the environment variable naming the execution a supervised command runs under; a nested
#: ``interlock exec`` uses it as its parent
EXECUTION_ENV = "INTERLOCK_EXECUTION_ID"


EXIT_NOT_FOUND = 127


_PUMP_JOIN_S = 2.0

#: terminations without a grace period (DESIGN I9): the execution's cgroup is frozen, then
#: killed, so that a quarantined (isolated) or boundary-violating principal's processes do
#: nothing more — not even a SIGTERM handler
_NO_GRACE = frozenset({ReasonCode.PRINCIPAL_QUARANTINED, ReasonCode.BOUNDARY_VIOLATION})


def reason_from_exception(exc: BaseException, what: str) -> Reason:
    """A deny reason for an error in the supervisor. Interlock errors carry their code and
    diagnostics; a foreign exception is named by type only (its message may hold inputs)."""
    if isinstance(exc, Error):
        return Reason(code=ReasonCode.of(exc), detail=f"{what}: {exc.diagnostics()}"[:500])
    return Reason(
        code=ReasonCode.INTERNAL_ERROR,
        detail=f"{what}: {type(exc).__name__}: authorization can no longer be established",
    )


def environment_digest(environ: Mapping[bytes, bytes] | None = None) -> str:
    """SHA-256 over the environment (``NAME=value`` pairs, sorted by name, NUL-terminated): what
    a ``shell.exec`` request records instead of the environment itself, which may hold secrets.

    Never raises.
    """
    env = os.environb if environ is None else environ
    h = hashlib.sha256()
    for name in sorted(env):
        h.update(name + b"=" + env[name] + b"\0")
    return h.hexdigest()


class Watch:
    """Continuous verification of one running execution (DESIGN I6): the part shared by
    ``interlock exec`` and ``gate.execution``.

    :meth:`step` is called often (every :data:`POLL_S`); it re-decides the execution with
    ``gate.reverify`` when ``interval`` has passed since the last re-decision, or at once when
    governance changed: the gate's snapshot id (revocations, policy), the signed policy files on
    disk (then it calls ``gate.reload_policy()``: a gate has no other reload trigger), or the
    parent's status (a terminated parent breaks the lineage). ``exec.verify`` is recorded only
    when the verdict or the snapshot changed; a deny is recorded with status ``terminated`` in
    the same transaction, so the execution's children are denied from that moment on.

    Thread-safe: ``step`` may be called from several threads.
    """

    def __init__(
        self,
        gate: Gate,
        request: ActionRequest,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        snapshot: str = "",
        watch_policy_files: bool = True,
    ) -> None:
        """``watch_policy_files=False``: the caller watches ``<home>/policy`` itself and calls
        ``gate.reload_policy()`` (one reload for many watches, e.g. the HTTP verifier)."""
        if not interval > 0:
            raise ValueError("the verification interval must be positive")
        self.watch_policy_files = watch_policy_files
        self.gate = gate
        self.request = request
        self.interval = interval
        self._lock = threading.Lock()
        self._snapshot = snapshot
        self._effect = Effect.ALLOW.value
        self._manifest = gate.home.policy_dir
        self._policy_key = self._policy_stat()
        self._parent_status = self._read_parent_status()
        self.verified_at = time.monotonic()
        self._due = self.verified_at + interval
        #: the deny that ended authorization, once one was found (then ``step`` returns it)
        self.denied: Reason | None = None
        #: whether the deny was committed as ``exec.verify`` with status ``terminated``
        self.deny_recorded = False

    def _policy_stat(self) -> tuple[tuple[int, int, int], ...]:
        if not self.watch_policy_files:
            return ()
        out: list[tuple[int, int, int]] = []
        for name in ("manifest.json", "manifest.sig"):
            try:
                st = (self._manifest / name).stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append((0, -1, 0))
        return tuple(out)

    def _read_parent_status(self) -> str | None:
        parent = self.request.parent
        if parent is None:
            return None
        row = self.gate.ledger.execution(parent)
        return None if row is None else f"{row.effect}/{row.status}"

    def step(self, *, force: bool = False) -> Reason | None:
        """Re-verify if due (or ``force``) or if governance changed.

        Returns None while authorization holds, else the deny reason (and keeps returning it).
        Never raises: an error — in the gate, the ledger, the policy reload — is a deny.
        """
        with self._lock:
            if self.denied is not None:
                return self.denied
            try:
                reason = self._step(force)
            except Exception as exc:  # noqa: BLE001 - I6: could not re-establish authorization
                reason = reason_from_exception(exc, "continuous verification failed")
                self._record_deny(reason)
            if reason is not None:
                self.denied = reason
            return reason

    def _step(self, force: bool) -> Reason | None:
        now = time.monotonic()
        changed = force or now >= self._due
        key = self._policy_stat()
        if key != self._policy_key:
            # a newly signed bundle (or a tampered one): reload; a rejected bundle changes the
            # snapshot's policy_problem, and a forbidding one changes the verdict
            self._policy_key = key
            self.gate.reload_policy()
            changed = True
        snapshot = self.gate.snapshot.id
        if snapshot != self._snapshot:
            changed = True
        if self.request.parent is not None:
            parent_status = self._read_parent_status()
            if parent_status != self._parent_status:
                self._parent_status = parent_status
                changed = True
        if not changed:
            return None
        verdict = self.gate.reverify(self.request)
        self.verified_at = time.monotonic()
        self._due = self.verified_at + self.interval
        if verdict.effect is not Effect.ALLOW:
            reason = (
                verdict.reasons[0]
                if verdict.reasons
                else Reason(code=ReasonCode.INTERNAL_ERROR, detail="deny without a reason")
            )
            self._record_deny(reason, snapshot=snapshot)
            return reason
        if snapshot != self._snapshot or self._effect != Effect.ALLOW.value:
            self.gate.record_execution(
                RecordType.EXEC_VERIFY,
                self.request.id,
                {"effect": Effect.ALLOW.value, "reasons": [], "snapshot": snapshot},
            )
        self._snapshot, self._effect = snapshot, Effect.ALLOW.value
        return None

    def _record_deny(self, reason: Reason, *, snapshot: str | None = None) -> None:
        """Commit the deny as ``exec.verify`` with status ``terminated`` before anything is
        signalled: from this commit on, the execution's children are ``LINEAGE_BROKEN``. A
        failed append does not stop the termination (the caller terminates regardless)."""
        try:
            self.gate.record_execution(
                RecordType.EXEC_VERIFY,
                self.request.id,
                {
                    "effect": Effect.DENY.value,
                    "reasons": [reason.to_json()],
                    "snapshot": snapshot if snapshot is not None else self._snapshot,
                },
                status="terminated",
            )
            self.deny_recorded = True
        except Exception:  # noqa: BLE001 - terminating anyway; exec.terminated is tried again
            self.deny_recorded = False
        self._effect = Effect.DENY.value


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What became of one supervised command.

    ``status``: ``denied`` (never started; also when the allow and its ``exec.start`` could not
    be committed), ``not_started`` (allowed and started on the ledger, but the command could
    not be spawned), ``ended`` or ``terminated``.
    ``exit_code`` is what ``interlock exec`` exits with: 126 when denied or not started, 127
    when the command was not found, else the command's own (128+N for signal N, as a shell).
    """

    status: str
    exit_code: int
    decision: Decision
    reason: Reason | None = None
    request_id: str | None = None
    signals: tuple[str, ...] = ()
    duration_ms: int = 0
    stdout_sha256: str | None = None
    stderr_sha256: str | None = None
    #: set when the closing record (exec.end / exec.terminated) could not be committed
    record_error: str | None = None


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def run_command(
    gate: Gate,
    request: Mapping[str, Any],
    argv: Sequence[str],
    *,
    interval: float = DEFAULT_INTERVAL_S,
    grace: float = DEFAULT_GRACE_S,
    stdout: IO[bytes] | None = None,
    stderr: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    handle_signals: bool = True,
    on_start: Callable[[int], None] | None = None,
    containment: Settings | None = None,
    run_as: str | None = None,
    stdin: int | None = None,
    cancel: threading.Event | None = None,
) -> Outcome:
    """Decide ``request`` and, if allowed, run ``argv`` contained and under supervision until
    it ends or its authorization stops holding.

    Containment (DESIGN I9, :mod:`interlock.containment`): ``containment`` (default: the home's
    ``[exec]``), with ``run_as`` replacing its user. It is prepared before the decision; when it
    cannot be, what would be an allow is recorded as a deny (CONTAINMENT_UNAVAILABLE) and
    nothing runs. A watchdog outside the command's reach kills the execution's cgroup if this
    supervisor dies.

    ``stdout``/``stderr`` receive the command's output as it comes (``None``: drained and
    hashed only). ``env`` is the command's environment (default: this process's), to which
    ``INTERLOCK_EXECUTION_ID`` is added. ``handle_signals`` (main thread only) forwards SIGINT,
    SIGTERM and SIGHUP sent to the supervisor to the command's process group and re-verifies at
    once — a nested supervisor killed by its parent's termination records ``LINEAGE_BROKEN``;
    escalation to SIGKILL then comes after half the grace period, so that a nested supervisor
    finishes within its own supervisor's grace. ``on_start`` is called with the command's pid.

    Never raises for a denial or a command failure: returns an :class:`Outcome` with the reason
    (a deny code, ``LEDGER_UNAVAILABLE`` when ``exec.start`` was not committed, or the
    re-decision's code when terminated).

    Raises:
        ValueError: if ``interval`` or ``grace`` is not positive, or ``argv`` is empty.
    """
    if not argv:
        raise ValueError("no command to run")
    if not interval > 0 or grace < 0:
        raise ValueError("interval must be positive and grace not negative")
    settings = containment if containment is not None else gate.home.config.exec
    if run_as is not None:
        settings = dataclasses.replace(settings, run_as=run_as)
    me = process_identity()
    box: Box | None = None
    refuse: Reason | None = None
    try:
        box = prepare(
            settings,
            home=gate.home.path,
            cwd=Path(cwd if cwd is not None else os.getcwd()),
            start_ticks=me["start"] if me is not None else 0,
        )
    except ContainmentUnavailable as exc:
        refuse = Reason(code=ReasonCode.CONTAINMENT_UNAVAILABLE, detail=exc.diagnostics()[:500])
    except Exception as exc:  # noqa: BLE001 - no boundary could be prepared: deny, on record
        refuse = reason_from_exception(exc, "containment could not be prepared")
        refuse = Reason(code=ReasonCode.CONTAINMENT_UNAVAILABLE, detail=refuse.detail)
    # I1: the allow and exec.start are committed together before anything runs; if that
    # commit fails the answer is a deny (LEDGER_UNAVAILABLE) and nothing starts. I9: without
    # the boundary the answer is CONTAINMENT_UNAVAILABLE, recorded like any deny.
    start: dict[str, Any] = {
        "supervisor": "process",
        "interval_ms": round(interval * 1000),
        "grace_ms": round(grace * 1000),
    }
    if box is not None:
        start["containment"] = box.record()
    decision, req = gate.admit(request, start=start, refuse=refuse)
    if not decision.allowed or req is None:
        if box is not None:
            box.release()
        reason = decision.reasons[0] if decision.reasons else None
        return Outcome(
            status="denied",
            exit_code=EXIT_CANNOT_EXECUTE,
            decision=decision,
            reason=reason,
            request_id=decision.request_id,
        )
    if box is None:  # pragma: no cover - refuse is set whenever box is None
        raise RuntimeError("allowed without containment")

    child_env = dict(os.environ if env is None else env)
    child_env.pop(NESTED_ENV, None)
    child_env[EXECUTION_ENV] = req.id
    started = time.monotonic_ns()
    dog: Watchdog | None = None
    relay: Relay | None = None
    try:
        watch = Watch(gate, req, interval=interval, snapshot=decision.snapshot)
        if box.cgroup is not None:
            dog = start_watchdog(box.cgroup.path, gate.home.path)
            # a nested `interlock exec` is decided and run here, contained inside this cgroup
            relay = Relay(
                req.id,
                functools.partial(
                    run_command,
                    gate,
                    interval=interval,
                    grace=grace,
                    handle_signals=False,
                    containment=dataclasses.replace(settings, cgroup_root=box.cgroup.path),
                ),
            )
            child_env.update(relay.env())
        decided_exe = req.args.get("executable")  # shell.exec: the resolved path decided on
        proc = subprocess.Popen(  # the argv (and executable) are exactly what was decided
            list(argv),
            executable=decided_exe if isinstance(decided_exe, str) else None,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            pass_fds=relay.child_fds() if relay is not None else (),
            preexec_fn=box.enter,
        )
    except Exception as exc:  # noqa: BLE001 - the command did not start; say why, on record
        code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
        detail = (
            f"could not start the command: {exc.strerror or type(exc).__name__}"
            if isinstance(exc, OSError)
            else f"could not start the command: {type(exc).__name__}"
        )
        record_error = _close_record(
            gate,
            RecordType.EXEC_END,
            req.id,
            {"exit_status": code, "signal": None, "duration_ms": 0, "error": detail},
            "ended",
        )
        box.release()
        if relay is not None:
            relay.close()
        if dog is not None:
            dog.done()
        return Outcome(
            status="not_started",
            exit_code=code,
            decision=decision,
            reason=Reason(code=ReasonCode.INTERNAL_ERROR, detail=detail),
            request_id=req.id,
            record_error=record_error,
        )

    if relay is not None:
        relay.start()
    try:
        return _supervise(
            gate,
            req,
            decision,
            watch,
            proc,
            box,
            started=started,
            grace=grace,
            stdout=stdout,
            stderr=stderr,
            handle_signals=handle_signals,
            on_start=on_start,
            cancel=cancel,
        )
    finally:
        if relay is not None:
            relay.close()
        box.release()
        if dog is not None:
            dog.done()


def _supervise(
    gate: Gate,
    req: ActionRequest,
    decision: Decision,
    watch: Watch,
    proc: subprocess.Popen[bytes],
    box: Box,
    *,
    started: int,
    grace: float,
    stdout: IO[bytes] | None,
    stderr: IO[bytes] | None,
    handle_signals: bool,
    on_start: Callable[[int], None] | None,
    cancel: threading.Event | None,
) -> Outcome:
    if proc.stdout is None or proc.stderr is None:  # pragma: no cover - PIPE always sets them
        raise ValueError("pipes missing")
    child = _Child(proc, box.cgroup)
    pumps = (_Pump(proc.stdout.fileno(), stdout), _Pump(proc.stderr.fileno(), stderr))
    for p in pumps:
        p.start()
    received: list[int] = []

    def _forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        _signal_group(child.pid, signum)

    previous: dict[int, Any] = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, _forward)

    reason: Reason | None = None
    signals: tuple[str, ...] = ()
    try:
        if on_start is not None:
            with contextlib.suppress(Exception):
                on_start(child.pid)
        seen = 0
        leader_gone = False
        while True:
            # an exit is seen at once, a governance change within POLL_S, a signal to the
            # supervisor (its handler runs during the wait) within 50 ms. With a cgroup, the
            # execution lasts while anything in it runs (populated 1), watched all along.
            if leader_gone:
                time.sleep(0.05 if received else POLL_S)
            else:
                child.exited.wait(0.05 if received else POLL_S)
            forced = len(received) > seen
            seen = len(received)
            leader_gone = child.exited.is_set()
            if leader_gone and (child.cgroup is None or not child.alive()):
                if received or child.killed_by is not None:
                    # the supervisor was signalled, or the command killed: because
                    # authorization ended (e.g. the parent execution was terminated and
                    # its cgroup killed)? then this run was terminated
                    reason = watch.step(force=True)
                if received:
                    signals = tuple(signal.Signals(s).name for s in dict.fromkeys(received))
                break
            if cancel is not None and cancel.is_set():
                reason = watch.step(force=True) or Reason(
                    code=ReasonCode.INTERNAL_ERROR,
                    detail="the nested `interlock exec` that asked for this execution is gone",
                )
                signals = child.terminate(grace)
                break
            reason = watch.step(force=forced)
            if reason is not None:
                # a supervisor that was itself signalled has less time: its own supervisor
                # SIGKILLs it after the same grace; a suspect principal gets none
                signals = child.terminate(
                    grace / 2 if received else grace, freeze=reason.code in _NO_GRACE
                )
                break
    except Exception as exc:  # noqa: BLE001 - fail-closed: a broken loop stops the command
        reason = reason_from_exception(exc, "supervisor failed")
        signals = child.terminate(grace / 2)
    except BaseException:
        child.terminate(0)
        child.reap(0)
        raise
    finally:
        for signum, handler in previous.items():
            with contextlib.suppress(Exception):
                signal.signal(signum, handler)
    return _finish(gate, req, decision, child, pumps, started, reason, signals, grace)


def _finish(
    gate: Gate,
    req: ActionRequest,
    decision: Decision,
    child: _Child,
    pumps: tuple[_Pump, _Pump],
    started: int,
    reason: Reason | None,
    signals: tuple[str, ...],
    grace: float,
) -> Outcome:
    returncode = child.reap(grace)
    duration_ms = (time.monotonic_ns() - started) // 1_000_000
    complete = True
    for p in pumps:
        p.join(_PUMP_JOIN_S)
        complete = complete and not p.is_alive()
    for f in (child.proc.stdout, child.proc.stderr):
        if f is not None and complete:
            f.close()
    out_sha, err_sha = pumps[0].sha.hexdigest(), pumps[1].sha.hexdigest()
    fields: dict[str, Any] = {
        "pid": child.pid,
        "exit_status": _exit_code(returncode),
        "signal": _signal_name(returncode),
        "duration_ms": duration_ms,
        "stdout_sha256": out_sha,
        "stderr_sha256": err_sha,
        "stdout_bytes": pumps[0].size,
        "stderr_bytes": pumps[1].size,
        "output_complete": complete,
    }
    if reason is not None:
        fields["reason"] = reason.to_json()
        fields["signals_sent"] = list(signals)
        record_error = _close_record(gate, RecordType.EXEC_TERMINATED, req.id, fields, "terminated")
        status = "terminated"
    else:
        if signals:
            fields["signals_received"] = list(signals)
        record_error = _close_record(gate, RecordType.EXEC_END, req.id, fields, "ended")
        status = "ended"
    return Outcome(
        status=status,
        exit_code=_exit_code(returncode),
        decision=decision,
        reason=reason,
        request_id=req.id,
        signals=signals,
        duration_ms=duration_ms,
        stdout_sha256=out_sha,
        stderr_sha256=err_sha,
        record_error=record_error,
    )


def _close_record(
    gate: Gate, kind: RecordType, exec_id: str, fields: Mapping[str, Any], status: str
) -> str | None:
    """Commit the closing record; returns why it failed, or None."""
    try:
        gate.record_execution(kind, exec_id, fields, status=status)
    except Exception as exc:  # noqa: BLE001 - reported in the outcome; the process is gone
        return reason_from_exception(exc, f"{kind.value} not recorded").detail
    return None
