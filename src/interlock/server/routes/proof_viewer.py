"""The Governance Proof Viewer at ``/console/proof``: one static page, no credential.

    >>> # open http://127.0.0.1:8750/console/proof, drop a .tlog-proof, paste the vkey

The page (``interlock/console/static/proof-viewer.html``, built by
``scripts/build_proof_viewer.py``) verifies evidence in the browser with WebCrypto; it never
asks this server for a verdict, so serving it needs no credential and reveals nothing. It is
one file with its stylesheet and ES module inlined, so the same file also works saved to disk
and opened offline.

The response carries a strict Content-Security-Policy: ``default-src 'none'``, the inline
script and style allowed only by their SHA-256 hashes (computed here from the file that is
served, so the header always matches it), ``connect-src`` unset (so ``'none'``: the page can
fetch nothing, not even from this origin), no framing, no form targets.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

__all__ = ["api", "page", "security_headers"]

api = APIRouter(tags=["console"])

_SCRIPT = re.compile(r"<script type=\"module\">(.*?)</script>", re.DOTALL)
_STYLE = re.compile(r"<style>(.*?)</style>", re.DOTALL)


def _hash_sources(pattern: re.Pattern[str], html: str) -> str:
    blocks = pattern.findall(html)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode('utf-8')).digest()).decode()}'"
        for b in blocks
    )


@cache
def page() -> str:
    """The viewer's HTML, read once from the package.

    Raises:
        OSError: if the package was installed without its static files.
    """
    resource = resources.files("interlock").joinpath("console/static/proof-viewer.html")
    return resource.read_text(encoding="utf-8")


@cache
def security_headers() -> dict[str, str]:
    """The response headers of the page: its CSP (hashes of the served file) and friends.

    Raises:
        OSError: as :func:`page`.
    """
    html = page()
    scripts = _hash_sources(_SCRIPT, html) or "'none'"
    styles = _hash_sources(_STYLE, html) or "'none'"
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


@api.get("/console/proof", response_class=HTMLResponse, summary="Governance Proof Viewer")
def proof_viewer() -> HTMLResponse:
    """The Proof Viewer page: verifies a tlog-proof and receipt in the browser. No credential."""
    return HTMLResponse(page(), headers=security_headers())


@api.get("/console/proof/", include_in_schema=False)
def proof_viewer_slash() -> RedirectResponse:
    """``/console/proof/`` → ``/console/proof``."""
    return RedirectResponse("/console/proof", status_code=308)
