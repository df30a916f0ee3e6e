"""The decision point: the fail-closed pipeline, and the only place that returns allow.

    >>> import interlock
    >>> gate = interlock.open(".interlock")                       # doctest: +SKIP
    >>> d = gate.decide({"principal": "spiffe://acme.test/agent/researcher",
    ...                  "action": "tool.call", "resource": {"type": "Tool", "id": "web_search"},
    ...                  "capability": token})                     # doctest: +SKIP
    >>> d.effect, d.codes, d.ledger_index                          # doctest: +SKIP
    (<Effect.ALLOW: 'allow'>, (), 7)

Two parts:

* :func:`decide` is PURE (DESIGN I3): ``decide(request, snapshot, lineage) -> Verdict``. No
  clock, no randomness, no I/O. Validators run in the fixed order of DESIGN §2; the first
  denial wins. Allow is its last line and nowhere else.
* :class:`Gate` does the I/O around it: intake (reads the clock once), the lineage lookup,
  the deadline, the durable ledger append. An allow is returned only after its record is
  committed (I1). Every exception becomes a deny (I2): ``Gate.decide`` never raises and never
  allows on an error path.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from interlock import governance, records, snapshots, watchers
from interlock.core.model import (
    ActionRequest,
    Decision,
    Effect,
    Reason,
    ReasonCode,
    Stage,
    format_time_us,
)
from interlock.errors import (
    Error,
    LedgerError,
    MalformedRequest,
    error_detail,
)
from interlock.fleet import follow
from interlock.fleet.lease import Lease
from interlock.fleet.node import Node
from interlock.home import Home, default_home
from interlock.intake import new_request_id, parse_request
from interlock.ledger.note import NoteSigner, NoteVerifier
from interlock.ledger.projection import (
    KILL_SWITCH_EVENTS,
    QUARANTINE_EVENTS,
    RESTRICT_EVENTS,
)
from interlock.ledger.protocols import Fleet, Store
from interlock.ledger.statecheck import (
    FullCheck,
)
from interlock.ledger.storage import open_store
from interlock.pipeline import Lineage, Snapshot, Verdict, _deny, decide
from interlock.policy.bundle import PolicyBundle
from interlock.policy.engine import PolicyEngine
from interlock.trust import keys
from interlock.trust.attestation import Measurement

__all__ = [
    "KILL_SWITCH_EVENTS",
    "QUARANTINE_EVENTS",
    "RESTRICT_EVENTS",
    "GateCore",
    "Lineage",
    "Snapshot",
    "Verdict",
    "decide",
]


_log = logging.getLogger("interlock")


#: the lineage of a request without a parent: a frozen value, so one instance serves all
_NO_LINEAGE = Lineage()


class GateCore:
    """An open governance home: the snapshot, the ledger, and :meth:`decide`.

    Use :meth:`Gate.open` (or ``interlock.open``). Thread-safe: many threads may decide at
    once; their ledger appends share fsyncs (group commit).
    """

    def __init__(
        self,
        home: Home,
        ledger: Store,
        verifier: NoteVerifier,
        *,
        clock_ns: Any = time.time_ns,
    ) -> None:
        self.home = home
        self.ledger = ledger
        self.log_verifier = verifier
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._stored_snapshots: set[str] = set()
        self._corrupt: str | None = None
        self._root_public = keys.public_raw(home.private_key("biscuit-root"))
        self._node_public = keys.public_raw(home.private_key("node"))
        #: the highest timestamp on the log (µs): a clock behind it is not trusted (DESIGN I8)
        self._time_floor = 0
        #: why the last ledger check could not run (decisions deny LEDGER_UNAVAILABLE), and
        #: when the last one completed (monotonic): a check that stops completing denies too
        self._check_problem: str | None = None
        self._checked_at = time.monotonic()
        self._check_s = 0.0
        #: when a running full pass last made progress (a long pass is not a hung one)
        self._check_progress_at = 0.0
        #: a full check that passed and is due a state checkpoint (written by open/the watch)
        self._due_checkpoint: FullCheck | None = None
        #: how the start-up check was made: "full" or "checkpoint" (from a state checkpoint)
        self.startup_check = "full"
        #: the trust settings on the log, and why the config disagrees with them (if it does)
        self._trust: dict[str, Any] = {}
        self._trust_problem: str | None = None
        self._bundle: PolicyBundle | None = None
        self._engine: PolicyEngine | None = None
        self._policy_problem: str | None = None
        self._trust_checked = 0.0
        self._snapshot: Snapshot | None = None
        cfg = home.config
        self._approvers: frozenset[bytes] = frozenset()
        self._break_glass_keys: frozenset[bytes] = frozenset()
        #: the measurement taken when this gate started: the one it attests to
        self._attested: Measurement | None = None
        self._env: dict[str, Any] | None = None
        self._env_problem: str | None = "the environment has not been measured yet"
        self._threads: list[threading.Thread] = []
        self._attest_lock = threading.Lock()
        self._stop = threading.Event()
        #: wakes the ledger watch before its interval (set with ``_stop`` at close)
        self._check_due = threading.Event()
        self.deadline_ns = cfg.deadline_ms * 1_000_000
        self.ledger_timeout_s = cfg.ledger_timeout_ms / 1000
        #: on a shared store (a fleet): the freshness lease every decision checks, the
        #: follower that confirms it, why the start-up check has not completed yet (the node
        #: opened while the store was unreachable), and the trust state's mark last folded
        self._lease: Lease | None = None
        self.node: Node | None = None
        self._startup_problem: str | None = None
        self._trust_mark: str | None = None
        self._watching = False

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def open(cls, home: str | Path | None = None, *, clock_ns: Any = time.time_ns) -> Self:
        """Open a governance home: verify the ledger's tail, load the signed policy bundle.

        A gate whose ledger or policy is broken still opens, and denies everything with the
        reason (LEDGER_CORRUPT, POLICY_UNAVAILABLE): fail-closed, and visible.

        Raises:
            ConfigError: if there is no home at ``home`` (nothing can be decided or recorded).
            KeyFileError: if a key file is missing or has unsafe permissions.
        """
        h = Home.load(default_home(home))
        log_key = h.private_key("log")
        signer = NoteSigner(h.config.origin, log_key)
        verifier = NoteVerifier.from_vkey(signer.vkey)
        ledger = open_store(
            h.ledger_location,
            signer=signer,
            durability=h.config.durability,
            busy_timeout_ms=h.config.ledger_timeout_ms,
            # a node on a shared store starts even while it is unreachable, and denies
            lazy=h.config.store is not None,
        )
        gate = cls(h, ledger, verifier, clock_ns=clock_ns)
        if isinstance(ledger, Fleet):
            gate._open_node(ledger)
            return gate
        try:
            # DESIGN I8: no allow before the log and its projection have been checked
            gate.check_ledger()
        except LedgerError as exc:
            gate._corrupt = exc.diagnostics()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run must not allow
            gate._check_problem = error_detail(exc)
        gate._load_trust()
        gate.reload_policy()
        gate._attest()
        gate.reap_orphans()
        gate.write_state_checkpoint()
        gate._start_ledger_watch()
        gate._start_attestation_watch()
        return gate

    # -- a node of a fleet (DESIGN I7) ----------------------------------------------------------

    _open_node = follow.open_node

    _start_up = follow.start_up

    _fold_head = follow.fold_head

    _adopt_log_policy = follow.adopt_log_policy

    @property
    def lease(self) -> Lease | None:
        """The freshness lease (a node on a shared store), or None (a SQLite home)."""
        return self._lease

    def fail_closed_state(self) -> str | None:
        """Why every decision of this node is denied now — ``"<DESIGN §3 code>: <detail>"``
        — or None. Never raises."""
        if self._corrupt is not None:
            return f"LEDGER_CORRUPT: {self._corrupt}"
        unchecked = self.ledger_check_problem()
        if unchecked is not None:
            return f"LEDGER_UNAVAILABLE: {unchecked}"
        lease = self._lease
        if lease is not None:
            stale = lease.stale(time.monotonic())
            if stale is not None:
                return f"POLICY_STALE: {stale}"
        return None

    def _stale(self) -> str | None:
        """The lease check of the decision path: None while fresh (or not a fleet node)."""
        lease = self._lease
        if lease is None:
            return None
        stale = lease.stale(time.monotonic())
        if stale is not None:
            lease.stale_denials += 1
        return stale

    # -- checking the log and its projection (DESIGN I4, I8) ----------------------------------

    check_ledger = watchers.check_ledger

    _checked = watchers._checked

    _check_progress = watchers._check_progress

    write_state_checkpoint = watchers.write_state_checkpoint

    _load_trust = governance._load_trust

    def record_trust(self, changes: Mapping[str, Any]) -> list[int]:
        """Change trust settings on the log (root-signed), then in ``interlock.toml``."""
        return governance.gate_record_trust(self, changes)

    adopt_trust = governance.adopt_trust

    trusted_policy_keys = governance.trusted_policy_keys

    # -- runtime attestation (DESIGN §7, issue 3 §4) -------------------------------------------

    _attest = watchers._attest

    _attest_locked = watchers._attest_locked

    _set_env = watchers._set_env

    _start_attestation_watch = watchers._start_attestation_watch

    def attestation(self) -> tuple[Measurement | None, dict[str, Any] | None, str | None]:
        """``(measurement at start, current context.env, current problem or None)``."""
        with self._lock:
            return self._attested, self._env, self._env_problem

    _start_ledger_watch = watchers._start_ledger_watch

    ledger_check_problem = watchers.ledger_check_problem

    @property
    def _anchor_path(self) -> Path:
        return self.home.anchor_path

    _check_anchor = watchers._check_anchor

    _read_anchor = watchers._read_anchor

    _save_anchor = watchers._save_anchor

    def close(self) -> None:
        self._stop.set()
        self._check_due.set()
        if self.node is not None:
            self.node.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        try:
            if self._corrupt is None:
                self.ledger.checkpoint()  # cover the tail, then remember it outside the database
                self._save_anchor()
        except (Error, OSError):
            pass  # the anchor is defence in depth; closing must not fail because of it
        finally:
            self.ledger.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vkey(self) -> str:
        """The log's C2SP verifier key."""
        return NoteSigner(self.home.config.origin, self.home.private_key("log")).vkey

    @property
    def corrupt(self) -> str | None:
        """Why this node stopped allowing because of its ledger, or None."""
        return self._corrupt

    # -- governance state (:mod:`interlock.snapshots`) -------------------------------------------

    reload_policy = snapshots.reload_policy

    _rebuild_snapshot = snapshots.rebuild_snapshot

    snapshot = property(snapshots.current_snapshot)

    _check_clock = staticmethod(snapshots.check_clock)

    revoke = governance.revoke

    _governance = governance._governance

    quarantine = governance.quarantine

    release_restriction = governance.release_restriction

    _enforce_boundary = governance._enforce_boundary

    kill_switch = governance.kill_switch

    # -- deciding ----------------------------------------------------------------------------

    def decide(
        self,
        request: Mapping[str, Any] | bytes | str,
        *,
        _keep: list[ActionRequest] | None = None,
        _start: Mapping[str, Any] | None = None,
        _refusal: Reason | None = None,
    ) -> Decision:
        """Decide one action request and record the decision before answering.

        Never raises. Returns allow only when every validator passed and the record is durably
        committed; otherwise a deny with a DESIGN §3 reason code, including MALFORMED_REQUEST,
        DEADLINE_EXCEEDED, LEDGER_UNAVAILABLE, LEDGER_CORRUPT and INTERNAL_ERROR.
        """
        started = time.perf_counter_ns()
        try:
            return self._decide(request, started, _keep, _start, _refusal)
        except Exception as exc:  # noqa: BLE001 - I2: the one place an exception becomes a deny
            try:
                return self._error_decision(exc)
            except Exception:  # noqa: BLE001 - even building the error decision failed
                return records.LAST_RESORT
        except BaseException as exc:
            # a Rust panic in a binding (pyo3's PanicException) derives from BaseException;
            # interpreter exits and interrupts still propagate (no allow is returned either way)
            if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
                raise
            return records.LAST_RESORT

    def _now(self) -> tuple[str, str]:
        ns = self._clock_ns()
        when = format_time_us(ns // 1000)
        return new_request_id(ns), when

    decide_many = records.decide_many

    def _decide(
        self,
        raw: Mapping[str, Any] | bytes | str,
        started: int,
        keep: list[ActionRequest] | None = None,
        start: Mapping[str, Any] | None = None,
        refusal: Reason | None = None,
    ) -> Decision:
        decided = self._verdict(raw, started, keep, refusal)
        if isinstance(decided, Decision):
            return decided
        if isinstance(decided, records.MalformedPrepared):
            return records._append_and_finish(self, decided)
        request, verdict, snapshot, lineage, stage = decided
        decision = records._commit(self, request, verdict, snapshot, lineage, stage, start=start)
        if verdict.boundary is not None and decision.ledger_index is not None:
            self._enforce_boundary(request, verdict)
        return decision

    def _verdict(
        self,
        raw: Mapping[str, Any] | bytes | str,
        started: int,
        keep: list[ActionRequest] | None,
        refusal: Reason | None,
    ) -> (
        Decision
        | records.MalformedPrepared
        | tuple[ActionRequest, Verdict, Snapshot, Lineage, Stage]
    ):
        """Everything :meth:`decide` does before the record is appended: a Decision when the
        request ends early (unrecorded denials), a malformed request's deny record, else what
        to record."""
        floor = self._time_floor  # before the clock: see snapshots.clock_problem
        ns = self._clock_ns()
        request_id = new_request_id(ns)
        when = format_time_us(ns // 1000)
        if self._corrupt is not None:
            return records._unrecorded(
                self,
                request_id,
                ReasonCode.LEDGER_CORRUPT,
                f"ledger failed verification: {self._corrupt}",
            )
        unchecked = self.ledger_check_problem()
        if unchecked is not None:
            return records._unrecorded(self, request_id, ReasonCode.LEDGER_UNAVAILABLE, unchecked)
        stale = self._stale()
        if stale is not None:
            # DESIGN I7: not recorded; the store is usually what cannot be reached
            return records._unrecorded(self, request_id, ReasonCode.POLICY_STALE, stale)
        snapshot = self.snapshot
        behind = snapshots.clock_problem(ns, floor)
        if behind is not None:
            # not recorded: its timestamp would go backwards on the log
            return records._unrecorded(self, request_id, ReasonCode.ENVIRONMENT_UNTRUSTED, behind)
        try:
            request = parse_request(raw, request_id=request_id, time=when)
        except MalformedRequest as exc:
            return records._prepare_malformed(raw, exc, request_id, when, snapshot.id)
        if keep is not None:
            keep.append(request)

        lineage: Lineage | None = None
        try:
            lineage = self._lineage(request)
            if refusal is not None:
                # an adapter's refusal (see refuse): a deny whatever the pipeline would say
                verdict = Verdict(effect=Effect.DENY, reasons=(refusal,))
                stage = Stage.GATE
            else:
                verdict = decide(request, snapshot, lineage)
                stage = Stage.PIPELINE if verdict.reproducible else Stage.GATE
        except Exception as exc:  # noqa: BLE001 - I2: could not decide, so deny (and record it)
            if lineage is None:  # the parent lookup itself failed
                lineage = Lineage(parent=request.parent, status="unknown")
            verdict = _deny(ReasonCode.INTERNAL_ERROR, error_detail(exc))
            stage = Stage.GATE
        elapsed = time.perf_counter_ns() - started
        if elapsed > self.deadline_ns:
            verdict = _deny(
                ReasonCode.DEADLINE_EXCEEDED,
                f"decision took {elapsed / 1e6:.1f} ms, over the {self.deadline_ns / 1e6:.0f} ms"
                " deadline",
            )
            stage = Stage.GATE
        return request, verdict, snapshot, lineage, stage

    # -- governed executions -----------------------------------------------------------------

    def admit(
        self,
        request: Mapping[str, Any] | bytes | str,
        *,
        start: Mapping[str, Any] | None = None,
        refuse: Reason | None = None,
    ) -> tuple[Decision, ActionRequest | None]:
        """:meth:`decide`, also returning the validated request (``None`` when intake refused
        it), which a supervisor needs to re-verify the execution while it runs.

        With ``start`` (the fields of an ``exec.start`` record), an allow also commits
        ``exec.start`` — status ``running`` — in the *same* transaction as the decision: one
        durable commit instead of two before the action may begin. If that commit fails the
        answer is a deny (LEDGER_UNAVAILABLE) and neither record exists.

        With ``refuse`` (the caller found it cannot carry the action out safely, e.g.
        CONTAINMENT_UNAVAILABLE) the request is recorded as a deny with that reason, as
        :meth:`refuse` does: the pipeline is not run.

        Never raises; same answers as :meth:`decide`.
        """
        box: list[ActionRequest] = []
        decision = self.decide(request, _keep=box, _start=start, _refusal=refuse)
        return decision, (box[0] if box else None)

    def refuse(self, request: Mapping[str, Any], code: ReasonCode, detail: str) -> Decision:
        """Record a deny of ``request`` for a reason an adapter established before any decision
        (e.g. the MCP proxy: a ``tools/call`` naming a tool the upstream did not list, or
        arguments that do not meet the tool's ``inputSchema``). The request goes through intake
        and is recorded like any decision — principal, action, resource, argument digest,
        parent — with ``code`` and ``detail`` as its only reason and stage ``gate``: it depends
        on what the adapter saw, not on the snapshot, so replay reports it apart. The pipeline
        is not run; nothing here can allow.

        Never raises; always a deny (``code``, or MALFORMED_REQUEST from intake, or the ledger
        and clock codes of :meth:`decide`).
        """
        return self.decide(request, _refusal=Reason(code=code, detail=detail[:500]))

    def reverify(self, request: ActionRequest) -> Verdict:
        """Re-decide a running execution *now*: the same request at the gate's current time,
        with the current snapshot and its parent's current status (a terminated or ended
        parent breaks the lineage). Pure apart from reading the clock, the snapshot and the
        parent's row; records nothing.

        Never raises: any error is a deny (INTERNAL_ERROR), so a broken gate terminates runs.
        """
        try:
            if self._corrupt is not None:
                return _deny(
                    ReasonCode.LEDGER_CORRUPT, f"ledger failed verification: {self._corrupt}"
                )
            unchecked = self.ledger_check_problem()
            if unchecked is not None:
                return _deny(ReasonCode.LEDGER_UNAVAILABLE, unchecked)
            stale = self._stale()
            if stale is not None:
                return _deny(ReasonCode.POLICY_STALE, stale)
            snapshot = self.snapshot
            floor = self._time_floor
            ns = self._clock_ns()
            behind = snapshots.clock_problem(ns, floor)
            if behind is not None:
                return _deny(ReasonCode.ENVIRONMENT_UNTRUSTED, behind)
            when = format_time_us(ns // 1000)
            current = dataclasses.replace(request, time=when)
            verdict = decide(current, snapshot, self._lineage(current))
            if verdict.boundary is not None:
                self._enforce_boundary(current, verdict)
            return verdict
        except Exception as exc:  # noqa: BLE001 - could not re-establish authorization: deny
            return _deny(ReasonCode.INTERNAL_ERROR, error_detail(exc))

    record_execution = records.record_execution

    reap_orphans = watchers.reap_orphans

    def _lineage(self, request: ActionRequest) -> Lineage:
        if request.parent is None:
            return _NO_LINEAGE
        row = self.ledger.execution(request.parent)
        if row is None:
            return Lineage(parent=request.parent, status="unknown", depth=0)
        status = row.status if row.effect == Effect.ALLOW.value else "denied"
        return Lineage(
            parent=request.parent,
            status=status,
            depth=row.depth + 1,
            parent_leaf=row.leaf_hash.hex(),
            principal=row.principal,
        )

    def _error_decision(self, exc: BaseException) -> Decision:
        code = ReasonCode.of(exc)
        detail = error_detail(exc)
        try:
            request_id, _ = self._now()
        except Exception:  # noqa: BLE001 - even the clock failing must end in a deny
            request_id = "00000000-0000-7000-8000-000000000000"
        return records._unrecorded(self, request_id, code, detail[:500])
