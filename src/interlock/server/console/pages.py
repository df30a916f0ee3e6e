"""The console's pages and their static files, served from the package with a strict CSP.

    GET /console            Governance Console
    GET /console/health     Infrastructure Health Dashboard
    GET /console/lineage    Execution Lineage Explorer
    GET /console/demo       Runtime Governance Demo
    GET /console/static/<tool>.{js,css}

The pages are built from ``web/<tool>/`` by ``make web`` (esbuild, npm lockfile) into
``interlock/console/static/`` and ship in the wheel: serving them needs no Node and contacts no
CDN. A page holds no inline script or style, so the policy is simply ``'self'``:
``default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'
data:`` with no framing, no ``<base>``, forms only to this origin. A page needs no credential
(it holds no data); the data it fetches from ``/console/api`` does (:mod:`.session`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

__all__ = ["CSP", "api", "security_headers"]

api = APIRouter(tags=["console"])

#: tool name -> its page's path
PAGES = {
    "console": "/console",
    "health": "/console/health",
    "lineage": "/console/lineage",
    "demo": "/console/demo",
}
_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def security_headers(cache_control: str = "no-cache") -> dict[str, str]:
    """Headers of every console page and static file."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": cache_control,
    }


@cache
def _static(name: str) -> bytes | None:
    resource = resources.files("interlock").joinpath(f"console/static/{name}")
    try:
        return resource.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _page(tool: str) -> HTMLResponse:
    body = _static(f"{tool}.html")
    if body is None:
        raise HTTPException(status_code=404, detail=f"the {tool} page is not built: make web")
    return HTMLResponse(body, headers=security_headers())


@api.get("/console", response_class=HTMLResponse, summary="Governance Console")
def console_page() -> HTMLResponse:
    """The Governance Console (its data needs a read credential, or the public mode)."""
    return _page("console")


@api.get("/console/", include_in_schema=False)
def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@api.get("/console/health", response_class=HTMLResponse, summary="Health Dashboard")
def health_page() -> HTMLResponse:
    """The Infrastructure Health Dashboard."""
    return _page("health")


@api.get("/console/lineage", response_class=HTMLResponse, summary="Lineage Explorer")
def lineage_page() -> HTMLResponse:
    """The Execution Lineage Explorer."""
    return _page("lineage")


@api.get("/console/demo", response_class=HTMLResponse, summary="Runtime Governance Demo")
def demo_page() -> HTMLResponse:
    """The Runtime Governance Demo (no credential: it runs in its own throwaway home)."""
    return _page("demo")


@api.get("/console/static/{name}", include_in_schema=False)
def static_file(name: str) -> Response:
    """A built script or stylesheet of one of the tools (names are fixed: no paths)."""
    tool, dot, ext = name.partition(".")
    if not dot or tool not in PAGES or ext not in _TYPES:
        raise HTTPException(status_code=404, detail="no such file")
    body = _static(name)
    if body is None:
        raise HTTPException(status_code=404, detail="no such file")
    return Response(body, media_type=_TYPES[ext], headers=security_headers())
