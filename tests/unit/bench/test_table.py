"""The printed benchmark table carries what each figure cost beside it (issue 14: CPU per
decision and decisions per fsync at each load are printed, not only written to the JSON)."""

from __future__ import annotations

from rich.console import Console

from interlock.bench.common import details, figure, results_table


def test_a_figure_s_costs_are_printed_beside_it() -> None:
    p3 = figure(
        2682.0,
        "decisions/s",
        4219.0,
        "SQLite WAL, one fsync'ed commit per record (records/s)",
        ">= 20,000/s",
        False,
        cpu_us_per_decision=306.7,
        decisions_per_fsync=4.35,
        callers="8 threads in one process, gate.decide",
    )
    assert details(p3) == (
        "306.7 µs CPU a decision\n"
        "4.35 decisions a fsync\n"
        "callers: 8 threads in one process, gate.decide"
    )
    p3p = figure(
        2306.0,
        "decisions/s",
        4219.0,
        "SQLite WAL, one fsync'ed commit per record (records/s)",
        ">= 20,000/s",
        False,
        callers="2 processes x 4 callers, gate.decide, one sequencer process",
        own_sequencers=1303.4,
    )
    assert details(p3p) == (
        "callers: 2 processes x 4 callers, gate.decide, one sequencer process\n"
        "a sequencer per process: 1,303/s"
    )
    p4 = figure(527.0, "us", 125.0, "raw write+fsync", "<= 1.5x", False, sqlite_commit_p50_us=316.0)
    assert details(p4) == "SQLite commit 316 µs"
    console = Console(width=400, record=True)
    console.print(results_table({"P3": p3, "P4": p4, "_meta": {"quick": True}}))
    text = console.export_text()
    assert "306.7 µs CPU a decision" in text and "SQLite commit 316 µs" in text
    assert "2,682 decisions/s" in text and "4,219: SQLite WAL" in text
    assert "_meta" not in text
