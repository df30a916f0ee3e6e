"""`make bench`: run DESIGN §10 benchmarks and print each figure beside its in-run baseline.

Writes the JSON to bench/.out/latest.json so BENCHMARKS.md can be updated from a real run.
``--quick`` uses small sizes (a smoke run, not the figures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from interlock.bench import results_table, run_benchmarks


def main() -> int:
    results = run_benchmarks(quick="--quick" in sys.argv, console=Console(stderr=True))
    out = Path(__file__).parent / ".out"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    Console().print(results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
