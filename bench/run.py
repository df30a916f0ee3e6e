"""`make bench`: run DESIGN §10 benchmarks and print each figure beside its in-run baseline.

Writes the JSON to bench/.out/latest.json so BENCHMARKS.md can be updated from a real run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from interlock.bench import run_benchmarks


def main() -> int:
    quick = "--quick" in sys.argv
    console = Console(stderr=True)
    results = run_benchmarks(quick=quick, console=console)
    out = Path(__file__).parent / ".out"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    t = Table(title="Interlock benchmarks — ratio = value / baseline measured in the same run")
    for col in ("figure", "value", "unit", "baseline", "baseline is", "ratio", "goal", "met"):
        t.add_column(col)
    for k, v in results.items():
        if k.startswith("_"):
            continue
        t.add_row(
            k,
            f"{v['value']:.4g}",
            v["unit"],
            f"{v['baseline']:.4g}",
            v["baseline_what"],
            f"{v['ratio']:.3g}",
            v["goal"],
            "yes" if v["met"] else "no",
        )
    Console().print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
