"""Build the Proof Viewer into one self-contained HTML file shipped in the package.

    python scripts/build_proof_viewer.py           # writes src/interlock/console/static/...
    python scripts/build_proof_viewer.py --check   # exit 1 if the shipped file is stale

The sources are web/proof-viewer/{index.html,viewer.css,viewer.js}: the stylesheet and the ES
module are inlined into the page, and the page's own Content-Security-Policy (a <meta>, so it
also holds when the file is opened offline from disk) allows exactly those two inline blocks by
their SHA-256 hashes and nothing else. `interlock serve` sends the same policy as a header
(interlock.server.routes.proof_viewer computes it from the shipped file). No Node is needed.
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "web" / "proof-viewer"
OUT = ROOT / "src" / "interlock" / "console" / "static" / "proof-viewer.html"


def _hash_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def build() -> str:
    """The page's text."""
    page = (SRC / "index.html").read_text(encoding="utf-8")
    style = (SRC / "viewer.css").read_text(encoding="utf-8")
    script = (SRC / "viewer.js").read_text(encoding="utf-8")
    # an inlined block must not close its own element early
    if "</script" in script.lower() or "</style" in style.lower():
        raise SystemExit("viewer.js or viewer.css contains a closing tag")
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hash_source(script)}",
            f"style-src {_hash_source(style)}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )
    for name in ("{{CSP}}", "{{STYLE}}", "{{SCRIPT}}"):
        if page.count(name) != 1:
            raise SystemExit(f"index.html must hold {name} exactly once")
    # CSP first: the style and script are inserted verbatim and must not be searched again
    head, _, rest = page.partition("{{CSP}}")
    page = head + csp + rest
    head, _, rest = page.partition("{{STYLE}}")
    page = head + style + rest
    head, _, rest = page.partition("{{SCRIPT}}")
    return head + script + rest


def main(argv: list[str]) -> int:
    text = build()
    if "--check" in argv:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run python scripts/build_proof_viewer.py")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
