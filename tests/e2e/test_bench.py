"""`interlock bench --quick --json`: every DESIGN §10 figure is measured beside a baseline.

This checks the benchmark harness runs and reports honestly shaped figures; it asserts no
performance (budgets are reported by `make bench`, never tested)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_reports_every_figure_with_a_baseline() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "bench", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    figures = (
        *("P1", "P2", "P3", "P3b_batch", "P3p", "P3pb", "P4", "P5", "P5s", "P6", "P7"),
        *("S1", "S1f", "S2"),
    )
    assert set(results) >= set(figures)
    for name in figures:
        fig = results[name]
        assert fig["value"] > 0 and fig["baseline"] > 0, name
        direct = fig.get("ratio_of_p50s", fig["ratio"])
        assert abs(direct - fig["value"] / fig["baseline"]) < 0.01 * direct + 1e-3, name
        assert ("round_ratios" in fig) == (name in ("P1", "P2", "P4", "P6")), name
        if "round_ratios" in fig:  # measured in alternating rounds: the median round's ratio
            rounds = sorted(fig["round_ratios"])
            assert len(rounds) == 5, name
            assert fig["ratio"] == rounds[2], name
        assert fig["unit"] and fig["baseline_what"] and fig["goal"]
        assert isinstance(fig["met"], bool)
    # issue 14: throughput figures say what they cost and how many decisions share an fsync
    for name in ("P3", "P3b_batch", "P3p", "P3pb"):
        assert results[name]["cpu_us_per_decision"] > 0, name
        assert results[name]["decisions_per_fsync"] >= 1, name
    assert results["P3pb"]["decisions_per_fsync"] > results["P3p"]["decisions_per_fsync"]
    # P3p and P3pb: one sequencer process for both, beside a sequencer in each process
    for name in ("P3p", "P3pb"):
        assert results[name]["own_sequencers"] > 0, name
        assert results[name]["own_sequencers_per_fsync"] >= 1, name
        assert "one sequencer process" in results[name]["callers"], name
    # P4 shows its floor: a bare SQLite commit, against the same fsync
    p4 = results["P4"]
    assert p4["sqlite_commit_p50_us"] > 0 and p4["sqlite_commit_vs_fsync"] > 0
    assert results["_meta"]["quick"] is True
