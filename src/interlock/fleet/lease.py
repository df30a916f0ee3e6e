"""The freshness lease of a node on a shared log (DESIGN I7).

    >>> lease = Lease(2.0)
    >>> lease.stale(now=5.0)
    "this node has not yet confirmed the log's head since it started"
    >>> lease.confirm(4.0)
    >>> lease.stale(now=5.0) is None
    True
    >>> lease.stale(now=6.5)
    "this node last confirmed the log's head 2.500 s ago (lease 2.000 s)"

A node may allow only while it holds a confirmation younger than the lease: a round trip that
read the log's head size, after which it folded everything up to that size into its
governance state. ``confirm(t)`` takes the monotonic time at which that round trip *started*
(the head it read is at least as new as ``t``), so a change committed at T reaches every node's
decisions by T + lease, or the node denies. The check on the decision path is
:meth:`Lease.stale`: two attribute reads and one float comparison (its cost is measured by
``interlock bench``: see ``bench_lease_check``).

Times come from ``time.monotonic`` (passed in: only the gate reads the clock).
"""

from __future__ import annotations

__all__ = ["Lease"]


class Lease:
    """A node's freshness lease: stale until :meth:`confirm`, stale again ``lease_s``
    seconds after the last confirmation, and stale at once while :attr:`behind` says why.

    Thread-safe without a lock: one writer (the follower), readers that see either the old or
    the new float (a reader that sees the old one denies a little early, never late).
    """

    __slots__ = ("behind", "confirmed_at", "lease_s", "stale_denials")

    def __init__(self, lease_s: float) -> None:
        if not lease_s > 0:
            raise ValueError("the lease must be positive")
        self.lease_s = lease_s
        #: monotonic time of the last confirmation, or None: never confirmed
        self.confirmed_at: float | None = None
        #: set while the node knows it is behind the head (e.g. it cannot load the log's
        #: policy): stale whatever the clock says
        self.behind: str | None = None
        #: decisions denied POLICY_STALE (for the metrics)
        self.stale_denials = 0

    def confirm(self, at: float, behind: str | None = None) -> None:
        """The node read the head in a round trip that started at ``at`` and folded it;
        ``behind``: why it must still deny (set before the time moves, so that no reader sees
        a fresh confirmation without it)."""
        self.behind = behind
        if self.confirmed_at is None or at > self.confirmed_at:
            self.confirmed_at = at

    def age(self, now: float) -> float | None:
        """Seconds since the last confirmation, or None: never confirmed."""
        at = self.confirmed_at
        return None if at is None else max(0.0, now - at)

    def stale(self, now: float) -> str | None:
        """Why a decision at ``now`` must deny POLICY_STALE, or None. Never raises."""
        at = self.confirmed_at
        behind = self.behind
        if behind is None and at is not None and now - at <= self.lease_s:
            return None  # the decision path: one comparison
        if behind is not None:
            return behind
        if at is None:
            return "this node has not yet confirmed the log's head since it started"
        return (
            f"this node last confirmed the log's head {now - at:.3f} s ago"
            f" (lease {self.lease_s:.3f} s)"
        )
