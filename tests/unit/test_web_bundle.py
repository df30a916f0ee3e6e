"""The built browser tools in the package are exactly what web/ builds (no stale bundle)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"


def test_the_shipped_pages_are_what_the_sources_build() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("no Node.js here: the shipped bundles cannot be rebuilt to compare (make web)")
    if not (WEB / "node_modules" / "esbuild").is_dir():
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(
        [node, "build.mjs", "--check"], cwd=WEB, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
