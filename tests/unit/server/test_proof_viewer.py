"""The Proof Viewer's shipped file and the headers it is served with (no browser needed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from interlock.server.routes import proof_viewer

ROOT = Path(__file__).resolve().parents[3]


def test_the_shipped_page_is_built_from_its_sources() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_proof_viewer.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_header_policy_is_the_pages_own_policy_and_allows_only_its_inline_blocks() -> None:
    html = proof_viewer.page()
    csp = proof_viewer.security_headers()["Content-Security-Policy"]
    meta = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert meta is not None
    assert csp == meta.group(1) + "; frame-ancestors 'none'"
    # exactly one inline script and one inline style, no handlers or style attributes
    assert html.count("<script") == 1
    assert html.count("<style") == 1
    assert not re.search(r"\son[a-z]+=", html)
    assert " style=" not in html
    assert "src=" not in html.replace("default-src", "").replace("script-src", "").replace(
        "style-src", ""
    )
