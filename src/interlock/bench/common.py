"""What every benchmark module shares: a figure beside its in-run baseline, timing, percentiles
and deterministic indices."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interlock.home import Home

__all__ = ["Lcg", "Result", "figure", "pct", "set_deadline", "timed"]

Result = dict[str, Any]


class Lcg:
    """Deterministic pseudo-random indices for benchmarks (``random`` is banned in src/)."""

    def __init__(self, seed: int = 12345) -> None:
        self.state = seed

    def below(self, n: int) -> int:
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return (self.state >> 33) % n


def pct(samples: list[float], q: float) -> float:
    """The ``q`` quantile of ``samples`` (nearest rank, the same rule for every figure)."""
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        fn()
        out.append((clock() - t0) / 1000)
    return out


def _rounded(x: float) -> float:
    return round(x, 3) if abs(x) >= 1 else float(f"{x:.4g}")


def figure(
    value: float, unit: str, baseline: float, what: str, goal: str, met: bool, **extra: Any
) -> Result:
    # three decimals, or four significant digits below 1 (a baseline of 0.0147 % must not
    # round to 0.015 or 0); the ratio is that of the numbers as reported
    value, baseline = _rounded(value), _rounded(baseline)
    return {
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_what": what,
        "ratio": round(value / baseline, 4) if baseline else 0.0,
        "goal": goal,
        "met": met,
        **extra,
    }


def set_deadline(home: Home, ms: int) -> None:
    """Set ``[gate] deadline_ms`` and trust the result, as an operator would (`interlock attest
    trust`, `interlock trust adopt`)."""
    from interlock.audit import open_for_audit
    from interlock.governance import adopt_changes, record_trust
    from interlock.trust.attestation import trust_current

    cfg = home.path / "interlock.toml"
    cfg.write_text(cfg.read_text().replace("deadline_ms = 50", f"deadline_ms = {ms}"))
    trust_current(cfg)
    with open_for_audit(home.path, sign=True) as view:
        changes = adopt_changes(view.ledger, view.home)
        record_trust(view.ledger, view.home, changes, ns=time.time_ns())
