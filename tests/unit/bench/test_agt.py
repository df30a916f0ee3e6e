"""The AGT 5.0 comparison (issue 14) without AGT: the bench says how to install it instead of
failing. Nothing here times anything."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from interlock.bench import agt


def test_the_module_imports_and_its_worker_needs_only_the_stdlib_and_agt() -> None:
    assert callable(agt.bench_agt)
    # the worker runs in AGT's own environment, where Interlock is not installed
    tree = ast.parse(agt._WORKER.read_text(encoding="utf-8"))
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - sys.stdlib_module_names == {"agentmesh"}


def test_a_failing_import_returns_the_explanation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "agentmesh", None)  # `import agentmesh` now fails
    monkeypatch.setattr(agt, "_venv_pythons", lambda: [tmp_path / "no-such-python"])
    out = agt.bench_agt(quick=True)
    assert list(out) == ["AGT"]
    entry = out["AGT"]
    assert entry["skipped"] == agt.MISSING
    assert entry["skipped"].startswith(
        "AGT 5.0 not installed: pip install agent-governance-toolkit-core==5.0.0"
    )
    # the figure's shape, so the results table prints it
    assert {"value", "unit", "baseline", "baseline_what", "ratio", "goal", "met"} <= set(entry)
    assert entry["value"] == 0 and entry["baseline_what"] == agt.MISSING


def test_a_worker_that_cannot_import_agt_returns_the_explanation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the worker's own ImportError path: run by this interpreter with agentmesh blocked
    wrapper = tmp_path / "blocked.py"
    wrapper.write_text(
        "import runpy, sys\n"
        "sys.modules['agentmesh'] = None\n"
        f"sys.argv[0] = {str(agt._WORKER)!r}\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(agt, "_agt_python", lambda: sys.executable)
    monkeypatch.setattr(agt, "_WORKER", wrapper)
    out = agt.bench_agt(quick=True)
    assert list(out) == ["AGT"]
    assert out["AGT"]["skipped"].startswith(agt.MISSING + "; ")
    assert "agentmesh" in out["AGT"]["skipped"]
