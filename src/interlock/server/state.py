"""What every route of one app shares: the gate, the metrics, and the locks that serialise
check-then-append sequences.

    >>> state = ServerState.for_gate(gate)          # doctest: +SKIP
    >>> state.not_ready()                           # doctest: +SKIP
    []
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from interlock.errors import Error
from interlock.server.metrics import Metrics

if TYPE_CHECKING:
    from interlock.gate import Gate

__all__ = ["ServerState"]


@dataclass(slots=True)
class ServerState:
    gate: Gate
    metrics: Metrics
    #: serialises "is this execution running? then append exec.end"
    exec_lock: threading.Lock = field(default_factory=threading.Lock)
    #: serialises policy uploads (write the folder, swap it in, reload)
    policy_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_gate(cls, gate: Gate) -> ServerState:
        holder: list[ServerState] = []
        metrics = Metrics(gate, ready=lambda: not holder[0].not_ready())
        state = cls(gate=gate, metrics=metrics)
        holder.append(state)
        return state

    def not_ready(self) -> list[str]:
        """Why this node cannot allow right now (empty when it can), each reason starting with
        the DESIGN §3 code a decision would carry. Never raises."""
        gate = self.gate
        reasons: list[str] = []
        corrupt = gate.corrupt
        if corrupt is not None:
            reasons.append(f"LEDGER_CORRUPT: {corrupt}")
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
