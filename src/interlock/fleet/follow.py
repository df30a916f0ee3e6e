"""A gate as a node of a fleet (DESIGN I7): its start on a shared log, and the follower's fold
of the log's head into its governance state.

Functions of :class:`interlock.engine.GateCore`, bound there as its methods (as
:mod:`interlock.watchers`' are): ``self`` is the gate. The follower thread itself is
:class:`interlock.fleet.node.Node`; the lease, :class:`interlock.fleet.lease.Lease`.

    gate._open_node(store)      # GateCore.open does this on a shared store
    gate._fold_head(head)       # Node.pull does this
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from interlock.errors import Error, LedgerCorrupt, LedgerUnavailable, PolicyError, error_detail
from interlock.fleet.lease import Lease
from interlock.fleet.node import Node
from interlock.ledger.protocols import Fleet, Head
from interlock.policy.bundle import PolicyBundle
from interlock.policy.engine import PolicyEngine

if TYPE_CHECKING:
    from interlock.engine import GateCore

__all__ = ["adopt_log_policy", "fold_head", "open_node", "start_up"]

_log = logging.getLogger("interlock")


def open_node(self: GateCore, store: Fleet) -> None:
    """Start as a node of a shared log: try the start-up check now (a store that cannot be
    reached leaves it to the follower, and the node denies LEDGER_UNAVAILABLE meanwhile),
    then start the follower, which confirms the lease. No decision allows before the
    first confirmation (the lease starts stale)."""
    self._lease = Lease(self.home.config.lease_ms / 1000)
    self.node = Node(self, store, self._lease)
    self._startup_problem = "the node is starting"
    try:
        self._start_up()
    except Exception as exc:  # noqa: BLE001 - a node that cannot check yet denies, retries
        self._startup_problem = error_detail(exc)
        _log.warning("node starts fail-closed: %s", self._startup_problem)
    else:
        try:
            # the first confirmation before returning: a gate opened for one decision
            # (the CLI, a short script) may allow at once when the store answers
            self.node.pull()
        except Exception as exc:  # noqa: BLE001 - the follower retries; the lease denies
            _log.warning("node starts stale: %s", error_detail(exc))
    self.node.start()


def start_up(self: GateCore) -> None:
    """The start-up of a node: check the log and its projection, take the trust settings
    and the policy, attest, then start the watchers (once).

    Raises:
        LedgerUnavailable: the store cannot be read (the follower tries again).
    """
    try:
        # DESIGN I8: no allow before the log and its projection have been checked
        self.check_ledger()
    except LedgerCorrupt as exc:
        self._corrupt = exc.diagnostics()
    self._load_trust()
    problem = self._trust_problem
    if problem is not None and problem.startswith("trust settings unreadable"):
        raise LedgerUnavailable(problem)
    self.reload_policy()
    self._attest()
    self.reap_orphans()
    self.write_state_checkpoint()
    if not self._watching:
        self._watching = True
        self._start_ledger_watch()
        self._start_attestation_watch()
    self._startup_problem = None


def fold_head(self: GateCore, head: Head) -> None:
    """Bring the governance state up to ``head`` (the follower's pull): finish a deferred
    start-up, raise the time floor, re-read the trust state if it changed, adopt the
    policy the log activated. Returns only when everything up to ``head.size`` is folded
    (then the follower confirms the lease).

    Raises:
        LedgerUnavailable: the store failed. PolicyError: the log's policy cannot be
            loaded (the lease says the node is behind: POLICY_STALE at once).
    """
    if self._startup_problem is not None:
        self._start_up()
    if head.last_ts > self._time_floor:
        self._time_floor = head.last_ts
    if head.trust_mark != self._trust_mark or self._snapshot is None:
        self._trust_mark = None
        self._load_trust()
        problem = self._trust_problem
        if problem is not None and problem.startswith("trust settings unreadable"):
            raise LedgerUnavailable(problem)
        self._rebuild_snapshot(force_trust=True)
        self._trust_mark = head.trust_mark
    with self._lock:
        current = self._bundle
    if head.policy_digest is not None and (current is None or current.digest != head.policy_digest):
        try:
            self._adopt_log_policy(head)
        except (PolicyError, ValueError) as exc:
            why = exc.message if isinstance(exc, Error) else str(exc)
            if self._lease is not None:
                self._lease.behind = (
                    f"the log activated policy version {head.policy_version}, which this"
                    f" node cannot load: {why}"
                )
            raise
    if self._check_problem is not None:
        self._check_due.set()  # the store answers again: check now, not an interval later


def adopt_log_policy(self: GateCore, head: Head) -> None:
    """Load the bundle the log activated last (its blob is on the log, signed by a trusted
    policy key): a policy activated through one node governs every node.

    Raises:
        PolicyError: no blob, a signature or version that does not hold.
        LedgerUnavailable: the blob cannot be read.
    """
    digest = head.policy_digest
    blob = self.ledger.blob(f"bundle:{digest}")
    if blob is None:
        raise PolicyError(f"its bundle {str(digest)[:16]}… is not on the log")
    bundle = PolicyBundle.from_blob(blob, self.trusted_policy_keys())
    if bundle.digest != digest or bundle.version != head.policy_version:
        raise PolicyError(
            f"the bundle on the log is version {bundle.version} ({bundle.digest[:16]}…),"
            f" not the activated version {head.policy_version}"
        )
    engine = PolicyEngine.from_bundle(bundle)
    with self._lock:
        self._bundle, self._engine, self._policy_problem = bundle, engine, None
    self._rebuild_snapshot(force_trust=True)
    _log.info("adopted policy version %s from the log", bundle.version)
    if self._attested is not None:
        self._attest()  # the measurement names the active bundle
