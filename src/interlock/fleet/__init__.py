"""Distributed mode: a node of a fleet that shares one PostgreSQL log.

    >>> from interlock.fleet.lease import Lease
    >>> lease = Lease(2.0)
    >>> lease.stale(now=10.0) is not None          # a new node denies until it confirms
    True
    >>> lease.confirm(9.5)
    >>> lease.stale(now=10.0) is None
    True

* :mod:`interlock.fleet.lease` — the freshness lease a decision checks: one monotonic-clock
  comparison on the decision path (DESIGN I7).
* :mod:`interlock.fleet.node` — the node's follower thread: the doorbell (``LISTEN``), the pull
  from its watermark, the backstop poll every lease/3, the deferred start-up of a node that
  opened while PostgreSQL was down, and the heartbeat in the ``nodes`` table.
"""
