"""``make bench`` / ``interlock bench``: every DESIGN §10 figure beside a baseline measured in
the same run (:func:`run_benchmarks`), and the table that prints them.

One package: :mod:`.common` (figures, timing, percentiles), :mod:`.core` (the decision path, the
ledger, start-up and the running check), :mod:`.baselines` (the storage floors P3 and P4 are
measured beside), :mod:`.runtime` (supervised executions), :mod:`.http`
(the HTTP API), :mod:`.mcp` (the MCP proxy) and :mod:`.agt` (Microsoft's Agent Governance
Toolkit 5.0 measured beside them, when installed).
"""

from interlock.bench.common import Result, figure, results_table
from interlock.bench.core import run_benchmarks

__all__ = ["Result", "figure", "results_table", "run_benchmarks"]
