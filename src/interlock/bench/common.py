"""What every benchmark module shares: a figure beside its in-run baseline, timing, percentiles
and deterministic indices."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from interlock.home import Home

__all__ = ["Lcg", "Paired", "Result", "figure", "paired", "pct", "set_deadline", "timed"]

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


class Paired:
    """A figure and its baseline measured in alternating rounds: pooled samples of each, and
    the median of the per-round ratios of the p50s. On a noisy machine a slow spell lands on
    both sides of a round instead of on one figure, so the ratio moves far less from run to run
    than one long measurement after the other."""

    def __init__(self, ours: list[float], base: list[float], ratios: list[float]) -> None:
        self.ours = ours
        self.base = base
        self.ratios = ratios

    @property
    def ratio(self) -> float:
        """The median per-round ratio (ours p50 / baseline p50)."""
        s = sorted(self.ratios)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def paired(
    ours: Callable[[], object],
    base: Callable[[], object],
    n: int,
    n_base: int,
    *,
    rounds: int = 5,
) -> Paired:
    """Time ``ours`` ``n`` times and ``base`` ``n_base`` times, split into ``rounds``
    alternating rounds (ours first, then the baseline)."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    all_ours: list[float] = []
    all_base: list[float] = []
    ratios: list[float] = []
    per, per_base = max(1, n // rounds), max(1, n_base // rounds)
    for _ in range(rounds):
        o = timed(ours, per)
        b = timed(base, per_base)
        all_ours += o
        all_base += b
        ratios.append(pct(o, 0.5) / pct(b, 0.5))
    return Paired(all_ours, all_base, ratios)


def _rounded(x: float) -> float:
    return round(x, 3) if abs(x) >= 1 else float(f"{x:.4g}")


def figure(
    value: float,
    unit: str,
    baseline: float,
    what: str,
    goal: str,
    met: bool,
    *,
    paired_with: Paired | None = None,
    **extra: Any,
) -> Result:
    # three decimals, or four significant digits below 1 (a baseline of 0.0147 % must not
    # round to 0.015 or 0); the ratio is that of the numbers as reported
    value, baseline = _rounded(value), _rounded(baseline)
    ratio = value / baseline if baseline else 0.0  # the ratio of the numbers as reported
    if paired_with is not None:  # measured in alternating rounds: the median per-round ratio
        extra["ratio_of_p50s"] = round(ratio, 4)
        extra["round_ratios"] = [round(r, 4) for r in paired_with.ratios]
        ratio = paired_with.ratio
    return {
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_what": what,
        "ratio": round(ratio, 4),
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


#: a figure's measurements printed under its value (all of them are in the JSON): the line's
#: template and the key it shows
DETAILS = (
    ("p99 {}", "p99"),
    ("{} µs CPU a decision", "cpu_us_per_decision"),
    ("{} decisions a fsync", "decisions_per_fsync"),
    ("added p50 {} ms", "added_p50_ms"),
    ("added p99 {} ms", "added_p99_ms"),
    ("SQLite commit {} µs", "sqlite_commit_p50_us"),
    ("SQLite commit/fsync {}", "sqlite_commit_vs_fsync"),
    ("callers: {}", "callers"),
    ("a sequencer per process: {}/s", "own_sequencers"),
)


def number(x: float) -> str:
    """``x`` for a reader: thousands grouped from 1,000, else four significant digits."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def details(fig: Result) -> str:
    """The :data:`DETAILS` ``fig`` has, one per line."""
    out = []
    for template, key in DETAILS:
        v = fig.get(key)
        if v is not None:
            out.append(template.format(number(v) if isinstance(v, float | int) else v))
    return "\n".join(out)


def results_table(results: dict[str, Result]) -> Table:
    """The figures as a Rich table: each value with what it cost (:data:`DETAILS`: CPU per
    decision, decisions per fsync, tails) beside its in-run baseline, the ratio and the goal."""
    t = Table(
        title="Interlock benchmarks — ratio = value / baseline measured in the same run",
        show_lines=True,
    )
    t.add_column("figure", no_wrap=True)
    t.add_column("measured", min_width=24)
    t.add_column("baseline (same run)", min_width=22)
    t.add_column("ratio", justify="right")
    t.add_column("goal")
    t.add_column("met")
    for k, v in results.items():
        if k.startswith("_"):
            continue
        measured = f"[bold]{number(v['value'])}[/] {v['unit']}"
        more = details(v)
        t.add_row(
            k,
            f"{measured}\n{more}" if more else measured,
            f"{number(v['baseline'])}: {v['baseline_what']}",
            f"{v['ratio']:.3g}",
            v["goal"],
            "[green]yes[/]" if v["met"] else "[red]no[/]",
        )
    return t
