"""Prometheus metrics of one app, in its own registry (two apps in a process never mix).

    m = Metrics(gate)
    m.observe_decision(decision, seconds=0.0012)
    m.render()[:6]
    # b'# HELP'

Label values are bounded: ``effect`` is allow/deny, ``code`` a DESIGN §3 reason code (or
``none``), ``endpoint``, ``event`` and ``operation`` come from fixed sets in the routes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from interlock.core.model import Decision
    from interlock.fleet.lease import Lease
    from interlock.gate import Gate

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: decision latency buckets, seconds: the pipeline is tens of µs, a durable append ~1 ms
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _safe(fn: Callable[[], float]) -> Callable[[], float]:
    """A gauge callback that never raises: a scrape must not fail because the ledger does."""

    def read() -> float:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - reported as NaN, the scrape still succeeds
            return math.nan

    return read


def _age(age: float | None) -> float:
    return math.nan if age is None else age


class _StaleDenials(Collector):
    """``interlock_stale_denials_total``: decisions this node denied POLICY_STALE, over every
    adapter of the process (counted by the gate, not per endpoint)."""

    def __init__(self, lease: Lease) -> None:
        self._lease = lease

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "interlock_stale_denials",
            "Decisions denied POLICY_STALE because the freshness lease had run out.",
            value=self._lease.stale_denials,
        )


class Metrics:
    """The app's counters, histogram and gauges."""

    def __init__(self, gate: Gate, ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "interlock_decisions",
            "Decisions answered over HTTP, by effect and first reason code.",
            ["endpoint", "effect", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "interlock_decision_seconds",
            "Time to decide and durably record one decision (gate.decide), seconds.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.executions = Counter(
            "interlock_execution_events",
            "Execution lifecycle events recorded over HTTP (started, ended, terminated).",
            ["event"],
            registry=self.registry,
        )
        self.admin = Counter(
            "interlock_admin_requests",
            "Admin requests by operation and outcome (done, refused, failed).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        entries = Gauge(
            "interlock_ledger_entries", "Entries in the ledger.", registry=self.registry
        )
        entries.set_function(_safe(lambda: float(gate.ledger.size())))
        up = Gauge(
            "interlock_ready",
            "1 when this node can allow (see /readyz), else 0.",
            registry=self.registry,
        )
        up.set_function(_safe(lambda: 1.0 if ready() else 0.0))
        # getattr: the OpenAPI document is built from an app made without a gate
        lease = getattr(gate, "lease", None)
        if lease is not None:
            age = Gauge(
                "interlock_lease_age_seconds",
                "Seconds since this node last confirmed the shared log's head (NaN: never).",
                registry=self.registry,
            )
            age.set_function(_safe(lambda: _age(lease.age(time.monotonic()))))
            length = Gauge(
                "interlock_lease_seconds",
                "The freshness lease: past it without a confirmation, every decision denies.",
                registry=self.registry,
            )
            length.set(lease.lease_s)
            self.registry.register(_StaleDenials(lease))

    def observe_decision(self, endpoint: str, decision: Decision, seconds: float) -> None:
        """Count one decision and its latency. Never raises."""
        code = decision.reasons[0].code.value if decision.reasons else "none"
        self.decisions.labels(endpoint, decision.effect.value, code).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
