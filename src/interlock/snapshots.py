"""The snapshot a gate decides under (DESIGN §2): the signed policy bundle it loads — and
records on the log when it changes — the trust state folded from the log, and the log's time
floor, which a clock set back cannot pass (DESIGN I8).

The functions take the gate as their first argument; :class:`interlock.engine.GateCore`
binds them as its methods (``gate.reload_policy()``, ``gate.snapshot``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from interlock.core.canonical import canonical_bytes
from interlock.core.model import RECORD_VERSION, RecordType, format_time
from interlock.errors import ClockBehind, Error, LedgerUnavailable, PolicyError
from interlock.intake import new_request_id
from interlock.ledger.projection import delta_of
from interlock.ledger.protocols import Append
from interlock.pipeline import Snapshot
from interlock.policy.bundle import load_bundle
from interlock.policy.engine import PolicyEngine

if TYPE_CHECKING:
    from interlock.engine import GateCore as Gate

#: how old the trust state (revocations, quarantines, kill switch) may be before a snapshot
#: read refreshes it from the log: below the supervisors' POLL_S, so each poll refreshes
TRUST_REFRESH_S = 0.04


def reload_policy(gate: Gate) -> None:
    """Load ``<home>/policy`` if its signature verifies and its version does not go back;
    record the load on the ledger. On failure the previous bundle stays active only if it
    is still the recorded one; with none, every decision is POLICY_UNAVAILABLE."""
    state = gate.ledger.settings()
    # DESIGN I8: the floor is the highest version ever activated on the log
    last_version = int(state["policy_version"][0]) if "policy_version" in state else 0
    last_digest = json.loads(state["policy_digest"][0]) if "policy_digest" in state else None
    try:
        bundle = load_bundle(
            gate.home.policy_dir, gate.trusted_policy_keys(), min_version=last_version
        )
        if bundle.version == last_version and last_digest and bundle.digest != last_digest:
            raise PolicyError(
                f"bundle version {bundle.version} was already loaded with different content;"
                " sign changes with a higher version (interlock policy sign)"
            )
    except (PolicyError, OSError, ValueError) as exc:
        message = exc.diagnostics() if isinstance(exc, Error) else str(exc)
        with gate._lock:
            gate._policy_problem = f"policy bundle rejected: {message}"
            if gate._bundle is None:
                gate._engine = None
        rebuild_snapshot(gate, force_trust=True)
        return
    engine = PolicyEngine.from_bundle(bundle)
    if bundle.digest != last_digest and gate._corrupt is None:
        now = format_time(datetime.fromtimestamp(gate._clock_ns() / 1e9, UTC))
        rec = {
            "v": RECORD_VERSION,
            "type": RecordType.GOVERNANCE.value,
            "event": "policy.loaded",
            "id": new_request_id(gate._clock_ns()),
            "ts": now,
            "policy_version": bundle.version,
            "policy_digest": bundle.digest,
        }
        gate.ledger.append(
            [
                Append(
                    record=canonical_bytes(rec),
                    blobs={f"bundle:{bundle.digest}": bundle.to_blob()},
                    state=delta_of(rec, node_public=None, root_public=None),
                )
            ],
            timeout=gate.ledger_timeout_s,
        )
    with gate._lock:
        gate._bundle, gate._engine, gate._policy_problem = bundle, engine, None
    rebuild_snapshot(gate, force_trust=True)
    if gate._attested is not None:
        gate._attest()  # the measurement names the active bundle


def rebuild_snapshot(gate: Gate, *, force_trust: bool = False) -> Snapshot:
    """A new snapshot if the trust state on the log moved (or ``force_trust``), else the
    current one; never one older than the current."""
    with gate._lock:
        # read under the lock: a refresh that read an older trust state must never
        # replace a newer snapshot (a revocation would be undone until the next refresh)
        version, revoked, quarantined, kill_switch, restricted = gate.ledger.trust_state()
        snap = gate._snapshot
        if snap is not None and version < snap.trust_version:
            return snap
        if not force_trust and snap is not None and snap.trust_version == version:
            return snap
        snap = Snapshot.build(
            root_public=gate._root_public,
            bundle=gate._bundle,
            policy_problem=gate._policy_problem,
            revoked=revoked,
            trust_version=version,
            max_depth=gate.home.config.max_lineage_depth,
            engine=gate._engine,
            quarantined=quarantined,
            kill_switch=kill_switch,
            approvers=gate._approvers,
            break_glass_keys=gate._break_glass_keys,
            env=gate._env,
            # trust settings that disagree with the log make the node untrusted (DESIGN I8)
            env_problem=gate._trust_problem or gate._env_problem,
            boundaries=gate.home.config.boundaries,
            restricted=restricted,
        )
        gate._snapshot = snap
        return snap


def current_snapshot(gate: Gate) -> Snapshot:
    """The current snapshot; revocations, quarantines and kill-switch changes committed by
    other processes are picked up within 40 ms (TRUST_REFRESH_S) on a SQLite home, and
    by the follower's pull on a fleet node (:mod:`interlock.fleet.node`).

    Raises:
        LedgerUnavailable: a fleet node that has not read any governance state yet.
    """
    snap = gate._snapshot
    if gate._lease is not None:
        # a fleet node: the follower keeps it current; no store round trip here
        if snap is None:
            raise LedgerUnavailable("this node has not read the log's governance state yet")
        return snap
    now = time.monotonic()
    if snap is None or now - gate._trust_checked > TRUST_REFRESH_S:
        gate._trust_checked = now
        snap = rebuild_snapshot(gate)
        refresh_floor(gate)
    return snap


def clock_problem(ns: int, floor: int) -> str | None:
    """Why the clock reading ``ns`` cannot be used, or None: it is behind ``floor``, the
    highest timestamp on the log, read *before* the clock (DESIGN I8: the log's last time
    is a floor, so setting the clock back cannot revive an expired token). Read in that
    order, a concurrent caller's later commit never makes an honest clock look behind."""
    if ns // 1000 >= floor:
        return None
    behind = floor - ns // 1000
    return (
        f"the node's clock is {behind / 1e6:.3f} s behind the last timestamp on the log"
        f" ({format_time(datetime.fromtimestamp(floor / 1e6, UTC))}): fix the clock; a"
        " clock set back cannot be trusted to judge expiry"
    )


def check_clock(ns: int, floor: int) -> None:
    """Raises ClockBehind when ``ns`` is behind the log's time floor ``floor``."""
    problem = clock_problem(ns, floor)
    if problem is not None:
        raise ClockBehind(problem)


def refresh_floor(gate: Gate) -> None:
    """Raise the time floor to the log's latest timestamp (other processes append too)."""
    last = gate.ledger.settings().get("last_ts")
    if last is not None and int(last[0]) > gate._time_floor:
        gate._time_floor = int(last[0])
