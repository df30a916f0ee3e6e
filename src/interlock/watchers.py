"""The gate's checks and background watchers (DESIGN I4, I8): the ledger check at start-up and
on a timer, the checkpoint anchor kept outside the database, and runtime attestation.

Functions of a :class:`interlock.gate.Gate` (whose methods delegate here); they read and set the
gate's state, and never return allow.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from interlock import governance
from interlock.containment import describe
from interlock.containment.cgroup import execution_cgroup, find_root, kill_and_remove, sweep
from interlock.core.model import Reason, ReasonCode, RecordType
from interlock.errors import (
    Error,
    LedgerCorrupt,
    VerificationError,
    error_detail,
)
from interlock.home import CONFIG_NAME
from interlock.ledger.note import open_checkpoint
from interlock.ledger.projection import (
    STATE_CHECKED_EVENT,
    first_difference,
)
from interlock.ledger.statecheck import (
    CheckStopped,
    Unvouched,
    check_log,
    check_since_checkpoint,
    checkpoint_fields,
)
from interlock.process import process_alive, process_identity
from interlock.trust.attestation import measure

if TYPE_CHECKING:
    from interlock.engine import GateCore as Gate

_log = logging.getLogger("interlock")

#: the running ledger check sleeps this many times the CPU its pass used: at most 1 / (1 + ratio)
#: of a core for the check thread (6.7%; measured with the rest of the watch loop in S2)
CHECK_CPU_RATIO = 14


#: the running check sleeps this long after every 512 entries, so that deciding threads get the
#: GIL promptly while a pass runs (about 0.4 s more wall time per million entries)
CHECK_PAUSE_S = 0.0002


#: a full check that passed is vouched for by a state checkpoint (``state.checked``) once the
#: log has grown this much since the last one: start-up then checks only what came after it
STATE_CHECKPOINT_EVERY = 4096


def check_ledger(gate: Gate, *, background: bool = False, full: bool = False) -> None:
    """Check the ledger and the state the gate reads, as of one moment (DESIGN I8).

    At start-up (neither ``background`` nor ``full``) from the newest state checkpoint
    when one can vouch for the log (``check_since_checkpoint``:
    the entries after it and one read of the state tables); otherwise, and always on the
    running gate's watch, in full: every entry against its leaf hash and the signed
    checkpoints (the newest in the database and the anchor kept outside it), and every row
    of the governance-state tables against the projection rebuilt from the log. Updates the
    time floor.

    Raises:
        LedgerCorrupt: any difference, naming the entry or the row (and the entry it
            should come from).
        LedgerUnavailable: the ledger cannot be read.
    """
    started = time.monotonic()
    gate.ledger.self_check(gate.log_verifier)
    _check_anchor(gate)
    cps = gate.ledger.checkpoints()
    notes = [cps[-1].note] if cps else []
    anchor = _read_anchor(gate)
    if anchor is not None:
        notes.append(anchor)
    stale = False  # a checkpoint exists but cannot vouch: vouch anew after this check
    if not (background or full):
        try:
            quick = check_since_checkpoint(
                gate.ledger,
                gate.log_verifier.vkey,
                notes,
                node_public=gate._node_public,
                root_public=gate._root_public,
            )
        except Unvouched as why:
            _log.info("checking the whole ledger: the state checkpoint cannot vouch (%s)", why)
            stale = gate.ledger.settings().get("state_checked") is not None
        else:
            _checked(gate, started, quick.last_ts, "checkpoint")
            return
    try:
        result = check_log(
            gate.ledger,
            gate.log_verifier.vkey,
            notes,
            node_public=gate._node_public,
            root_public=gate._root_public,
            progress=functools.partial(_check_progress, gate) if background else None,
            pause=CHECK_PAUSE_S if background else 0.0,
            stop=gate._stop if background else None,
        )
    except VerificationError as exc:
        raise LedgerCorrupt(exc.message, **exc.evidence) from exc
    rebuilt = result.projection
    if rebuilt.size == 0:
        raise LedgerCorrupt(
            "the ledger is empty: an initialised home's ledger starts with its policy and"
            " trust records, so it was replaced; restore it from a backup"
        )
    diff = first_difference(result.stored, rebuilt.rows()) if result.stored is not None else None
    if diff is not None:
        raise LedgerCorrupt(diff.message, **diff.evidence)
    last = rebuilt.settings.get("last_ts")
    _checked(gate, started, None if last is None else int(last[0]), None if background else "full")
    vouched = rebuilt.settings.get("state_checked")
    grown = rebuilt.size - (int(vouched[0]) if vouched else 0)
    if grown >= STATE_CHECKPOINT_EVERY or (stale and grown > 0):
        gate._due_checkpoint = result


def _checked(gate: Gate, started: float, last_ts: int | None, kind: str | None) -> None:
    """Note a check that passed; ``kind`` names a start-up check ("full", "checkpoint")."""
    if last_ts is not None:
        gate._time_floor = max(gate._time_floor, last_ts)
    gate._check_s = time.monotonic() - started
    gate._checked_at = time.monotonic()
    gate._check_problem = None
    if kind is not None:
        gate.startup_check = kind


def _check_progress(gate: Gate, _done: int, _total: int) -> None:
    gate._check_progress_at = time.monotonic()


def write_state_checkpoint(gate: Gate) -> None:
    """Vouch for the last full check that passed with a node-signed ``state.checked``
    record, if one is due, and drop the undo rows it makes unneeded. An accelerator for the
    next start-up: failing to write one changes nothing else. Never raises."""
    full, gate._due_checkpoint = gate._due_checkpoint, None
    if full is None or gate._corrupt is not None:
        return
    size = full.projection.size
    try:
        newest = gate.ledger.settings().get("state_checked")
        if newest is not None and int(newest[0]) >= size:
            return  # another gate vouched for as much already
        governance._governance(gate, STATE_CHECKED_EVENT, checkpoint_fields(full))
        gate.ledger.forget_undo(size)
    except Exception as exc:  # noqa: BLE001 - an accelerator: the next start checks in full
        _log.warning("could not write a state checkpoint: %s", error_detail(exc))


def _attest(gate: Gate) -> None:
    """Measure the environment; compare it with the measurement taken at start and with
    the trusted set; record a node-signed ``node.attested`` governance record when the
    measurement or its verdict changed; apply it to the snapshot (ENVIRONMENT_UNTRUSTED
    while there is a problem). Never raises: a node that cannot measure is untrusted."""
    with gate._attest_lock:  # one measurement at a time: a stale one never wins
        _attest_locked(gate)


def _attest_locked(gate: Gate) -> None:
    with gate._lock:
        bundle = gate._bundle
    policy = bundle.digest if bundle is not None else None
    try:
        m = measure(
            gate.home.path / CONFIG_NAME, policy, containment=describe(gate.home.config.exec)
        )
    except Exception as exc:  # noqa: BLE001 - unmeasurable means untrusted (fail-closed)
        _set_env(gate, None, f"the environment could not be measured: {error_detail(exc)}")
        return
    if gate._attested is None:
        gate._attested = m
    drift = m.differences(gate._attested)
    trusted = m.platform in gate._trust.get("attestation.trusted", [])
    problem: str | None = None
    if drift:
        problem = (
            f"measured {', '.join(drift)} changed since this node attested (platform"
            f" {gate._attested.platform[:16]}… is now {m.platform[:16]}…); restore it, or"
            " restart Interlock to re-attest"
        )
    elif not trusted and gate._trust.get("attestation.enforce", True) is not False:
        problem = (
            f"platform {m.platform} is not in [attestation] trusted of interlock.toml; if"
            " this environment is intended, run `interlock attest trust`"
        )
    env = m.env(attested=trusted and not drift)
    key = f"{m.digest}:{int(env['attested'])}:{int(problem is not None)}"
    # the verdict applies even if it could not be read or recorded
    with contextlib.suppress(Exception):
        recorded = gate.ledger.settings().get("attestation")
        if gate._corrupt is None and (recorded is None or json.loads(recorded[0]) != key):
            governance._governance(
                gate,
                "node.attested",
                {
                    "measurement": m.to_json(),
                    "digest": m.digest,
                    "platform": m.platform,
                    "trusted": trusted,
                    "problem": problem,
                },
            )
    _set_env(gate, env, problem)


def _set_env(gate: Gate, env: dict[str, Any] | None, problem: str | None) -> None:
    with gate._lock:
        if env == gate._env and problem == gate._env_problem:
            return
        gate._env, gate._env_problem = env, problem
    gate._rebuild_snapshot(force_trust=True)


def _start_attestation_watch(gate: Gate) -> None:
    """Re-measure on a timer: a change since the start denies everything and, through
    the snapshot, terminates running executions within their verification interval."""
    interval = gate.home.config.attestation_interval_ms / 1000
    if interval <= 0:
        return

    def watch() -> None:
        while not gate._stop.wait(interval):
            _attest(gate)

    t = threading.Thread(target=watch, name="interlock-attest", daemon=True)
    t.start()
    gate._threads.append(t)


def _start_ledger_watch(gate: Gate) -> None:
    """DESIGN I4, I8: a long-running gate re-checks its whole ledger and the state it reads
    on a timer (:meth:`check_ledger`) and stops allowing (LEDGER_CORRUPT) the moment a check
    fails. Running supervisors re-verify through this gate, so their executions are
    terminated too. A check that cannot run (the ledger locked, unreadable) denies
    LEDGER_UNAVAILABLE until one completes again.

    The check is a whole pass over the log: to bound its CPU share, after a pass that used
    ``c`` seconds of this thread's CPU it sleeps at least ``CHECK_CPU_RATIO * c``."""
    interval = gate.home.config.ledger_check_interval_ms / 1000
    if interval <= 0 or gate._corrupt is not None:
        return

    def watch() -> None:
        # after a start-up check from a state checkpoint, the entries before it are read
        # again at once: the first full pass starts now, not one interval later
        wait = 0.0 if gate.startup_check == "checkpoint" else interval
        while True:
            # a fleet node's follower rings this when the store is back after a failed check
            gate._check_due.wait(wait)
            gate._check_due.clear()
            if gate._stop.is_set():
                return
            spent = time.thread_time()
            gate.reap_orphans()  # never raises
            try:
                check_ledger(gate, background=True)
                governance._load_trust(gate)
                write_state_checkpoint(gate)
            except CheckStopped:
                return  # the gate is closing
            except LedgerCorrupt as exc:
                gate._corrupt = exc.diagnostics()
                _log.error("ledger check failed, denying everything: %s", gate._corrupt)
                return
            except Exception as exc:  # noqa: BLE001 - a check that cannot run denies
                gate._check_problem = error_detail(exc)
                _log.error("ledger check could not run: %s", gate._check_problem)
            # this thread's CPU for the pass, then at least ratio times that asleep
            wait = max(interval, CHECK_CPU_RATIO * (time.thread_time() - spent))

    t = threading.Thread(target=watch, name="interlock-ledger-watch", daemon=True)
    t.start()
    gate._threads.append(t)


def ledger_check_problem(gate: Gate) -> str | None:
    """Why the ledger is not known to be checked now, or None: the last check could not
    run, or none completed for three intervals plus the allowance for a long pass (a
    check that hangs must not leave the gate allowing)."""
    if gate._startup_problem is not None:
        return f"this node has not completed its start-up check of the log: {gate._startup_problem}"
    if gate._check_problem is not None:
        return f"the ledger check could not run: {gate._check_problem}"
    interval = gate.home.config.ledger_check_interval_ms / 1000
    if interval <= 0:
        return None
    late = time.monotonic() - max(gate._checked_at, gate._check_progress_at)
    if late > 3 * interval + (CHECK_CPU_RATIO + 1) * gate._check_s + 1:
        return f"no ledger check completed for {late:.1f} s"
    return None


def _check_anchor(gate: Gate) -> None:
    """Hold the ledger to the newest checkpoint this home has seen, kept *outside* the
    database: deleting newer checkpoints and rewriting the tail they covered is caught.

    Raises:
        LedgerCorrupt: entries without any checkpoint (every writer's first commit signs
            one in the same transaction), a ledger shorter than the anchor, or a tree that
            no longer has the anchor's root.
    """
    size = gate.ledger.size()
    if size > 0 and gate.ledger.latest_checkpoint() is None:
        raise LedgerCorrupt("the ledger has entries but no signed checkpoint")
    note = _read_anchor(gate)
    if note is None:
        return
    try:
        anchor = open_checkpoint(note, gate.log_verifier)
    except Error as exc:
        raise LedgerCorrupt(f"the checkpoint anchor does not verify: {exc.message}") from exc
    if anchor.size > size:
        raise LedgerCorrupt(
            "the ledger is shorter than a checkpoint it signed: entries were removed",
            anchor=anchor.size,
            entries=size,
        )
    if gate.ledger.root_at(anchor.size) != anchor.root_hash:
        raise LedgerCorrupt(
            "the ledger no longer matches a checkpoint it signed", anchor=anchor.size
        )


def _read_anchor(gate: Gate) -> str | None:
    """The anchor's text, or None when there is none yet.

    Raises:
        LedgerCorrupt: it cannot be read safely (not a regular file, e.g. a FIFO that would
            block; a symlink; writable by others; not text).
    """
    try:
        return gate.home.read_anchor()
    except (Error, OSError) as exc:
        detail = exc.message if isinstance(exc, Error) else str(exc.strerror)
        raise LedgerCorrupt(f"cannot read the checkpoint anchor: {detail}") from exc


def _save_anchor(gate: Gate) -> None:
    cp = gate.ledger.latest_checkpoint()
    if cp is None or gate._corrupt is not None:
        return
    # a fresh name that cannot already exist: a FIFO or link planted at a fixed temporary
    # name would block this write or redirect it
    fd, tmp = tempfile.mkstemp(dir=gate.home.path, prefix=".checkpoint.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(cp.note)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, gate._anchor_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def reap_orphans(gate: Gate) -> list[str]:
    """Terminate, on the ledger, every ``running`` execution whose supervisor is gone: its
    ``exec.start`` names the supervising process (boot id, pid, start time) and that
    process no longer exists on this machine, or the machine rebooted. Such a run cannot
    be re-verified any more, so it must not stay a live parent (DESIGN I5, I6). Records
    ``exec.terminated`` (INTERNAL_ERROR, ``reaped: true``); returns the ids.

    Never raises: an execution whose start record cannot be read is left as it is.
    """
    me = process_identity()
    if me is None or gate._corrupt is not None:
        return []
    reaped: list[str] = []
    try:
        running = gate.ledger.running_executions()
    except Exception:  # noqa: BLE001 - reaping is housekeeping; deciding does not depend on it
        return []
    for exec_id, idx in running:
        try:
            rec = json.loads(gate.ledger.entry(idx + 1))
            proc = rec.get("process") if isinstance(rec, dict) else None
            if rec.get("type") != RecordType.EXEC_START.value or rec.get("id") != exec_id:
                continue
            if not isinstance(proc, dict) or process_alive(proc, me):
                continue
            killed = _kill_recorded_cgroup(rec)
            gate.record_execution(
                RecordType.EXEC_TERMINATED,
                exec_id,
                {
                    "reason": Reason(
                        code=ReasonCode.INTERNAL_ERROR,
                        detail=(
                            f"its supervisor (pid {proc.get('pid')}) is gone: nothing"
                            " re-verifies this execution any more"
                        ),
                    ).to_json(),
                    "signals_sent": ["SIGKILL"] if killed else [],
                    "reaped": True,
                    **({"cgroup_killed": True} if killed else {}),
                },
                status="terminated",
            )
            reaped.append(exec_id)
        except Exception:  # noqa: BLE001, S112 - the next pass tries again
            continue
    _sweep_cgroups(gate, me)
    return reaped


def _kill_recorded_cgroup(start: Mapping[str, Any]) -> bool:
    """Kill the cgroup an ``exec.start`` names (DESIGN I9: its supervisor is gone, so nothing
    of it may run on). The path is checked to be an execution cgroup first."""
    box = start.get("containment")
    recorded = box.get("cgroup") if isinstance(box, Mapping) else None
    path = execution_cgroup(recorded) if isinstance(recorded, str) else None
    if path is None or not path.exists():
        return False
    kill_and_remove(path)
    return True


def _sweep_cgroups(gate: Gate, me: Mapping[str, Any]) -> None:
    """Kill the execution cgroups on this machine whose supervisor is gone, whatever home they
    belong to (one that died before its exec.start was committed, or whose watchdog was
    killed). Never raises."""
    try:
        root = find_root(gate.home.config.exec.cgroup_root)
    except Exception:  # noqa: BLE001 - no cgroup v2 here: nothing to sweep
        return
    sweep(root, lambda pid, ticks: process_alive({**me, "pid": pid, "start": ticks}, me))
