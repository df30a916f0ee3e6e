"""A node's follower: keeps the gate's governance state at the shared log's head, or lets its
lease run out (DESIGN I7).

    node = Node(gate, store, lease)
    node.start()

One thread per gate (``interlock-fleet``):

1. **Doorbell.** A dedicated ``LISTEN interlock_log`` connection
   (:meth:`interlock.ledger.protocols.Fleet.doorbell`). Every append transaction notifies the
   log's new size at COMMIT; a notification announcing more than the node's watermark wakes the
   thread at once.
2. **Pull.** One round trip reads the head (:meth:`~interlock.ledger.protocols.Fleet.head`: the
   committed size and the versions of the projection at that size); the gate folds what
   changed — the trust state (revocations, quarantines, restrictions, kill switch, trust
   settings) and the policy the log activated — then the watermark moves to that size and the
   lease is confirmed as of the moment the round trip started.
3. **Backstop.** Notifications are lost while the listener is disconnected (and a writer may
   die between COMMIT and delivery), so the thread also pulls every lease/3 whatever it heard:
   a node that hears nothing still confirms three times per lease.
4. **Recovery.** Any failure closes the listener and retries after a short pause; a gate that
   opened while PostgreSQL was down completes its start-up check here, then confirms. Until
   then, and whenever the lease runs out, the gate denies (LEDGER_UNAVAILABLE / POLICY_STALE).
5. **Heartbeat.** Every lease/3 the node upserts its row in ``nodes`` (``interlock nodes``).
6. **Witnesses** (``[witness]`` in ``interlock.toml``). Each new signed checkpoint of the log
   goes to the witnesses (:func:`interlock.witness.client.confirm_head`); the node stays stale
   until a quorum has cosigned a first checkpoint, and goes stale again when the log's newest
   checkpoint has been without a quorum for longer than the lease. A split view therefore
   lasts at most one lease past the checkpoint that would show it.

Never raises out of the thread: every error is a reason the lease is not confirmed.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from interlock.errors import Error, error_detail
from interlock.fleet.lease import Lease
from interlock.ledger.protocols import Doorbell, Fleet, Head, NodeRow
from interlock.witness.client import witnesses_from

if TYPE_CHECKING:
    from interlock.engine import GateCore

__all__ = ["Node"]

_log = logging.getLogger("interlock.fleet")

#: the longest single wait on the doorbell, so that closing is prompt
_WAIT_SLICE_S = 0.25


class Node:
    """The follower of one gate on a shared store. ``start()`` once, ``stop()`` at close."""

    def __init__(self, gate: GateCore, store: Fleet, lease: Lease) -> None:
        self.gate = gate
        self.store = store
        self.lease = lease
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.host = socket.gethostname()
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        #: the log size folded into the gate's state at the last confirmation
        self.watermark = -1
        #: why the last attempt to confirm failed (None after a success)
        self.problem: str | None = None
        #: pulls, and pulls a notification caused (for tests and metrics)
        self.pulls = 0
        self.rung = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bell: Doorbell | None = None
        self._beat_at = 0.0
        cfg = gate.home.config
        #: the witnesses a new tree head needs a quorum of (empty: none configured)
        self._witnesses = (
            witnesses_from(cfg.witness_urls, cfg.witness_keys) if cfg.witness_urls else []
        )
        self._witness_sizes: dict[str, int] = {}
        #: the size of the newest checkpoint a quorum cosigned (-1: none yet)
        self.witnessed_size = -1
        #: since when (monotonic) the log's newest checkpoint has lacked a quorum
        self._unwitnessed_since: float | None = None

    @property
    def poll_s(self) -> float:
        """The backstop: a pull at least this often (a third of the lease)."""
        return self.lease.lease_s / 3

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="interlock-fleet", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 5.0) -> None:
        """Stop following and leave the fleet's list (a node that crashes stays there, its
        heartbeat ageing: ``interlock nodes`` shows it silent)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=wait)
        self._close_bell()
        try:
            self.store.forget_node(self.node_id)
        except Exception as exc:  # noqa: BLE001 - best effort: the row only ages
            _log.info("node row not removed: %s", error_detail(exc))

    def wake(self) -> None:
        """Pull now (used after this node itself appended a governance change)."""
        # the next wait on the doorbell returns at once: the poll deadline is now
        self._due = True

    _due = False

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._bell is None:
                    # notifications sent before LISTEN are lost: the pull below covers them
                    self._bell = self.store.doorbell()
                self.pull()
                self._heartbeat()
                self._wait()
            except Exception as exc:  # noqa: BLE001 - the thread must survive: deny, retry
                if not isinstance(exc, Error):
                    _log.debug("follower error", exc_info=True)
                self._failed(error_detail(exc))
                self._close_bell()
                self._stop.wait(min(self.poll_s, 0.5))

    def _wait(self) -> None:
        """Until a notification announces entries past the watermark, or lease/3 passed."""
        bell = self._bell
        deadline = time.monotonic() + self.poll_s
        while not self._stop.is_set() and bell is not None:
            if self._due:
                self._due = False
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            got = bell.wait(min(left, _WAIT_SLICE_S))
            if got is not None and (got < 0 or got > self.watermark):
                self.rung += 1
                return

    def pull(self) -> Head:
        """Read the head, fold it into the gate, confirm the lease.

        Raises:
            LedgerUnavailable: the head cannot be read. Any error of the fold (then the
                lease is not confirmed, and the gate says why it is behind).
        """
        started = time.monotonic()
        head = self.store.head()
        self.gate._fold_head(head)
        self.pulls += 1
        self.watermark = max(self.watermark, head.size)
        self.problem = None
        self.lease.confirm(started, self._unwitnessed(started) if self._witnesses else None)
        return head

    def _unwitnessed(self, now: float) -> str | None:
        """Why the log's head is not trusted for want of witnesses, or None (see step 6)."""
        from interlock.witness.client import confirm_head

        cfg = self.gate.home.config
        why: str | None = None
        try:
            stored = self.store.latest_checkpoint()  # type: ignore[attr-defined]
            if stored is not None and stored.size <= self.witnessed_size:
                self._unwitnessed_since = None
                return None
            cosigned = confirm_head(
                self.store,  # type: ignore[arg-type]
                self._witnesses,
                cfg.witness_quorum,
                known_sizes=self._witness_sizes,
                timeout=cfg.witness_timeout_ms / 1000,
            )
            self.witnessed_size = max(self.witnessed_size, cosigned.checkpoint.size)
            self._unwitnessed_since = None
            return None
        except Exception as exc:  # noqa: BLE001 - no quorum, for whatever reason: not trusted
            why = error_detail(exc)
        if self._unwitnessed_since is None:
            self._unwitnessed_since = now
        if self.witnessed_size < 0 or now - self._unwitnessed_since > self.lease.lease_s:
            return f"the log's newest checkpoint has no quorum of witness cosignatures: {why}"
        return None

    def _failed(self, why: str) -> None:
        if why != self.problem:
            _log.warning("node %s cannot confirm the log's head: %s", self.node_id, why)
        self.problem = why

    def _heartbeat(self) -> None:
        """Upsert this node's row, every lease/3 at most. Never raises: the registry is a
        view for operators, not part of any decision."""
        now = time.monotonic()
        if now - self._beat_at < self.poll_s:
            return
        self._beat_at = now
        try:
            self.store.heartbeat(self.row(now))
        except Exception as exc:  # noqa: BLE001 - a view for operators; deciding does not need it
            _log.info("heartbeat not written: %s", error_detail(exc))

    def row(self, now: float | None = None) -> NodeRow:
        """This node as ``interlock nodes`` shows it."""
        gate = self.gate
        age = self.lease.age(time.monotonic() if now is None else now)
        state = gate.fail_closed_state()
        version: int | None = None
        try:
            version = gate.snapshot.descriptor.get("policy_version")
        except Exception:  # noqa: BLE001 - shown as unknown
            version = None
        attested, _env, _problem = gate.attestation()
        return NodeRow(
            node_id=self.node_id,
            host=self.host,
            pid=os.getpid(),
            started=self.started,
            heartbeat="",
            lease_age_s=age,
            policy_version=version,
            log_size=self.watermark if self.watermark >= 0 else None,
            attestation=attested.digest if attested is not None else None,
            state="ok" if state is None else state,
        )

    def _close_bell(self) -> None:
        bell, self._bell = self._bell, None
        if bell is not None:
            bell.close()
