"""Microsoft's Agent Governance Toolkit 5.0 beside Interlock (issue 14), in the shape of
:mod:`interlock.bench`.

    figures = bench_agt(quick=True)
    figures["AGT_1"]["unit"]
    # 'actions/s'

AGT's full governed action is ``agentmesh.client.AgentMeshClient.execute_with_governance``
(agent-governance-toolkit-core 5.0.0): its unified client's one call for "the full governance
pipeline" — ``PolicyEngine.evaluate`` on a YAML policy, ``AuditLog.log`` into an in-memory hash
chain under a Merkle tree, and a trust-score update. Nothing is written to disk and no token
is verified, so it is the work of Interlock's decision path without durability or capability
cryptography. The policy is Interlock's bench policy (one allow rule for a tool call by one
agent); every action must be allowed and the audit log must verify afterwards.

``AGT_1`` is one caller, beside AGT's policy decision alone; ``AGT_8`` is eight threads sharing
one client (AGT's audit log takes no lock, so they take one around the action), beside
``AGT_1``. Each carries AGT's CPU per action. The actions/s are the median of the rounds; the
rounds are in ``rounds``.

AGT runs in a fresh interpreter (:mod:`.agt_worker`, by path): the one that can import it, this
one or ``.venv-agt``'s (``make bench-agt``). It is kept out of ``.venv`` because it pins
``cryptography<50`` and ``python-dateutil<3``, which pip would satisfy by downgrading ours.
When neither has it, the result is one ``AGT`` entry saying how to install it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from interlock.bench.common import Result, figure

__all__ = ["MISSING", "bench_agt"]

MISSING = (
    "AGT 5.0 not installed: pip install agent-governance-toolkit-core==5.0.0 (optional dev"
    " dependency; `make bench-agt` puts it in .venv-agt, apart from .venv's cryptography)"
)
_WORKER = Path(__file__).with_name("agt_worker.py")


def _venv_pythons() -> list[Path]:
    """Where ``make bench-agt`` puts AGT's interpreter, from the working directory or the
    source tree."""
    bases = (Path.cwd(), Path(__file__).resolve().parents[3])
    return [base / ".venv-agt" / "bin" / "python" for base in bases]


def _agt_python() -> str | None:
    """An interpreter that has AGT: this one if it can import ``agentmesh``, else
    ``.venv-agt``'s, else ``None``."""
    if importlib.util.find_spec("agentmesh") is not None:
        return sys.executable
    for python in _venv_pythons():
        if python.exists():
            return str(python)
    return None


def _missing(why: str = MISSING) -> dict[str, Result]:
    # a figure's shape, so that the table prints it; 0 is "not measured", never a result
    return {
        "AGT": figure(
            0.0,
            "actions/s",
            0.0,
            why,
            "comparison only (issue 14): measured when AGT 5.0 is installed",
            True,
            skipped=why,
        )
    }


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def _run_worker(python: str, n: int, rounds: int) -> dict[str, Any]:
    """The worker's JSON.

    Raises:
        RuntimeError: the worker failed (its standard error is in the message).
    """
    done = subprocess.run(
        [python, "-I", str(_WORKER), str(n), str(rounds)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the AGT benchmark failed:\n{done.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def bench_agt(*, quick: bool = False) -> dict[str, Result]:
    """AGT 5.0's governed action with one caller and with eight (``AGT_1``, ``AGT_8``), or one
    ``AGT`` entry saying it is not installed. ``quick`` uses one small round (a smoke run).

    Raises:
        RuntimeError: AGT is installed but its benchmark failed (a denied action, an audit log
            that does not verify, an API that moved).
    """
    python = _agt_python()
    if python is None:
        return _missing()
    n, rounds = (2_000, 1) if quick else (20_000, 3)
    out = _run_worker(python, n, rounds)
    if "missing" in out:
        return _missing(f"{MISSING}; {out['missing']}")
    version = out["version"]
    decision = _median([r["rate"] for r in out["decision"]])
    one = _median([r["rate"] for r in out["one"]])
    eight = _median([r["rate"] for r in out["eight"]])
    common: dict[str, Any] = {
        "agt_version": version,
        "actions_per_run": n,
        "durability": "none (in-memory audit log)",
    }
    return {
        "AGT_1": figure(
            one,
            "actions/s",
            decision,
            f"AGT {version}: PolicyEngine.evaluate alone, one caller (decisions/s)",
            "comparison only (issue 14): beside P3b_batch's baseline (gate.decide, one caller)",
            True,
            cpu_us_per_action=round(_median([r["cpu_us"] for r in out["one"]]), 1),
            rounds=[round(r["rate"]) for r in out["one"]],
            callers="1, AgentMeshClient.execute_with_governance",
            **common,
        ),
        "AGT_8": figure(
            eight,
            "actions/s",
            one,
            f"AGT_1: AGT {version}'s governed action, one caller (actions/s)",
            "comparison only (issue 14): beside P3 and P3p, 8 callers",
            True,
            cpu_us_per_action=round(_median([r["cpu_us"] for r in out["eight"]]), 1),
            rounds=[round(r["rate"]) for r in out["eight"]],
            callers="8 threads, one AgentMeshClient, a lock around each action",
            **common,
        ),
    }


if __name__ == "__main__":  # make bench-agt: the comparison alone
    from rich.console import Console

    from interlock.bench.common import results_table

    Console().print(results_table(bench_agt(quick="--quick" in sys.argv)))
