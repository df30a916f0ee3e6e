"""What every route of one app shares: the gate, the metrics, the execution verifier, and the
locks that serialise check-then-append sequences.

    state = ServerState.for_gate(gate)
    state.not_ready()
    # []
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from interlock.errors import Error
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S
from interlock.server.fastpath import Dispatcher
from interlock.server.metrics import Metrics
from interlock.server.verifier import DEFAULT_MAX_EXECUTIONS, ExecutionVerifier

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["ServerState", "StateDep", "current_state"]


@dataclass(slots=True)
class ServerState:
    gate: Gate
    metrics: Metrics
    #: serialises "is this execution running? then append exec.end / exec.terminated"
    exec_lock: threading.Lock
    #: serialises policy uploads (write the folder, swap it in, reload) and policy reloads
    policy_lock: threading.Lock
    #: re-verifies the executions started over HTTP (started and stopped by the app's lifespan)
    verifier: ExecutionVerifier
    #: worker processes serving this home and address (``interlock serve --workers``); with
    #: more than one, what keeps state in one process's memory is refused (docs/agents.md)
    workers: int = 1
    #: decides ``POST /v1/decisions`` requests in batches (:mod:`interlock.server.fastpath`)
    dispatcher: Dispatcher = field(init=False)

    @classmethod
    def for_gate(
        cls,
        gate: Gate,
        *,
        verify_interval: float = DEFAULT_INTERVAL_S,
        execution_lease: float | None = None,
        max_executions: int = DEFAULT_MAX_EXECUTIONS,
        workers: int = 1,
    ) -> ServerState:
        """The shared state of an app serving ``gate``, one of ``workers`` processes.

        Raises:
            ValueError: ``verify_interval`` or ``execution_lease`` is not positive, or
                ``max_executions`` or ``workers`` is below 1.
        """
        if isinstance(workers, bool) or workers < 1:
            raise ValueError("workers must be at least 1")
        holder: list[ServerState] = []
        metrics = Metrics(gate, ready=lambda: not holder[0].not_ready())
        exec_lock, policy_lock = threading.Lock(), threading.Lock()
        verifier = ExecutionVerifier(
            gate,
            exec_lock,
            policy_lock,
            metrics=metrics,
            interval=verify_interval,
            lease=execution_lease,
            capacity=max_executions,
        )
        state = cls(
            gate=gate,
            metrics=metrics,
            exec_lock=exec_lock,
            policy_lock=policy_lock,
            verifier=verifier,
            workers=workers,
        )
        state.dispatcher = Dispatcher(state)
        holder.append(state)
        return state

    def single_process_only(self) -> str | None:
        """Why a feature that keeps its state in this process's memory is refused here (None:
        it is served). Never raises."""
        if self.workers == 1:
            return None
        return (
            f"this server runs {self.workers} worker processes, and this feature keeps its "
            "state in one process: serve it with --workers 1 (docs/agents.md, 'Worker "
            "processes')"
        )

    def not_ready(self) -> list[str]:
        """Why this node cannot allow right now (empty when it can), each reason starting with
        the DESIGN §3 code a decision would carry. Never raises."""
        gate = self.gate
        reasons: list[str] = []
        corrupt = gate.corrupt
        if corrupt is not None:
            reasons.append(f"LEDGER_CORRUPT: {corrupt}")
        unchecked = gate.ledger_check_problem()
        if unchecked is not None:
            reasons.append(f"LEDGER_UNAVAILABLE: {unchecked}")
        lease = gate.lease
        stale = lease.stale(time.monotonic()) if lease is not None else None
        if stale is not None:
            reasons.append(f"POLICY_STALE: {stale}")
        try:
            gate.ledger.size()
        except Error as exc:
            reasons.append(f"LEDGER_UNAVAILABLE: {exc.message}")
        try:
            snapshot = gate.snapshot
        except Exception as exc:  # noqa: BLE001 - not knowing the snapshot is not being ready
            detail = exc.message if isinstance(exc, Error) else type(exc).__name__
            reasons.append(f"INTERNAL_ERROR: the governance snapshot cannot be read: {detail}")
            return reasons
        if snapshot.engine is None:
            problem = snapshot.policy_problem or "no valid signed policy bundle is loaded"
            reasons.append(f"POLICY_UNAVAILABLE: {problem}")
        env_problem = getattr(snapshot, "env_problem", None)  # runtime attestation, when present
        if env_problem is not None:
            reasons.append(f"ENVIRONMENT_UNTRUSTED: {env_problem}")
        if snapshot.kill_switch:
            reasons.append("POLICY_FORBID: the kill switch is on: every action is denied")
        return reasons


def current_state(request: Request) -> ServerState:
    """The state of the app serving ``request``: what every route takes through ``Depends``
    (set once by :func:`interlock.server.app.create_app`)."""
    state: ServerState = request.app.state.interlock
    return state


#: a route parameter ``state: StateDep`` receives the app's :class:`ServerState`
StateDep = Annotated[ServerState, Depends(current_state)]
