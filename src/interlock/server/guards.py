"""Browser-borne attacks on a loopback API: DNS rebinding and cross-site POSTs.

    >>> allowed_hosts("127.0.0.1", ["api.example.test", "::1"])
    ['localhost', '127.0.0.1', '[::1]', 'api.example.test']
    >>> normalize_host("[::1]"), normalize_host("*.Example.test")
    ('[::1]', '*.example.test')

A web page can make a browser send requests to ``127.0.0.1:8750``. Two guards stop that:

* **Host check** (Starlette's ``TrustedHostMiddleware``): a request whose ``Host`` header does
  not name this server is answered 400 before any route runs. Rebinding ``evil.example`` to
  127.0.0.1 does not help the page: its requests still say ``Host: evil.example``. Allowed by
  default: ``localhost``, ``127.0.0.1``, ``[::1]`` and the address the server is bound to, with
  any port; more with ``interlock serve --allowed-host`` (``*.example.com`` for a domain's
  subdomains, ``*`` for any host — only behind a proxy that checks it).
* **JSON only** (:class:`JsonBodyOnly`): a ``POST``, ``PUT`` or ``PATCH`` whose ``Content-Type``
  is not ``application/json`` is answered 415 before its body is read. A page can send
  ``text/plain``, form and multipart bodies cross-site without a CORS preflight, but not
  ``application/json``; with no CORS headers served, such a request never leaves the browser.
  A *malformed* JSON body is a different matter: it passes this check and the gate records it
  as a ``MALFORMED_REQUEST`` deny as always.

A third guard is about URLs, not browsers: :class:`PlainPathOnly` answers 404 to a path holding
whitespace or a control character. Starlette matches routes with ``^…$`` patterns, and ``$``
also matches before a final newline: without it ``/healthz%0A`` would be ``/healthz`` and
``/v1/ledger/entries/7%0A`` entry 7 (integer parameters are parsed leniently too). No route of
this API has such a character in a valid path.

None of the guards records anything: a refused request never reached the gate.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from interlock.core.net import is_loopback

__all__ = [
    "LOOPBACK_HOSTS",
    "JsonBodyOnly",
    "PlainPathOnly",
    "SingleProcessOnly",
    "allowed_hosts",
    "is_loopback",
    "normalize_host",
]

#: always allowed in the Host header
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
#: methods whose body must be JSON
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: whitespace (Unicode too) and C0/C1 control characters: never in a valid path here
_ODD_PATH_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_NOT_JSON = "the request body must be JSON: send 'Content-Type: application/json'"
_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def normalize_host(value: str) -> str:
    """An allowed-host entry in the form the Host check compares: lowercase, an IPv6 address in
    brackets, ``*`` or ``*.domain`` kept. No port: any port is allowed.

    Raises:
        ValueError: ``value`` is not a host name, an IP address, ``*`` or ``*.domain``.
    """
    host = value.strip().lower()
    if host == "*":
        return host
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    bare = name.removeprefix("[").removesuffix("]")
    if not wildcard:
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            pass
        else:
            return f"[{address.compressed}]" if address.version == 6 else address.compressed
    if name != bare or not _HOSTNAME_RE.fullmatch(name) or len(name) > 253:
        raise ValueError(
            f"not a host name, an IP address, '*' or '*.domain' (without a port): {value!r}"
        )
    return f"*.{name}" if wildcard else name


def allowed_hosts(bound: str | None, extra: Iterable[str] = ()) -> list[str]:
    """The Host check's list: the loopback names, the bound address (if any) and ``extra``,
    normalized, without duplicates.

    Raises:
        ValueError: an entry is not a valid host (see :func:`normalize_host`).
    """
    hosts = list(LOOPBACK_HOSTS)
    for value in ([bound] if bound else []) + list(extra):
        host = normalize_host(value)
        if host not in hosts:
            hosts.append(host)
    return hosts


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    try:
        media = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return False
    return media == "application/json"


class JsonBodyOnly:
    """ASGI middleware: ``POST``/``PUT``/``PATCH`` must say ``Content-Type: application/json``
    (parameters such as ``charset`` allowed), else 415 before the body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in BODY_METHODS:
            content_type = None
            for name, value in scope.get("headers", ()):
                if name == b"content-type":
                    content_type = value
                    break
            if not _is_json(content_type):
                response = JSONResponse({"detail": _NOT_JSON}, status_code=415)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class PlainPathOnly:
    """ASGI middleware: a path (after percent-decoding) holding whitespace or a control
    character is 404 before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _ODD_PATH_RE.search(scope.get("path", "")):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


#: what :class:`SingleProcessOnly` refuses: (method, exact path or path prefix ending in "/")
_SINGLE_PROCESS = (
    ("POST", "/v1/executions", 503),
    ("PUT", "/v1/admin/policy", 409),
)
_CONSOLE_OPEN = ("/console/proof", "/console/proof/")


class SingleProcessOnly:
    """ASGI middleware of a server run as several worker processes: refuses, before routing,
    what keeps its state in one process's memory — starting an HTTP-supervised execution
    (503), uploading a policy (409), and the browser console but its static Proof Viewer
    (503) — with ``reason`` as the detail. Nothing is recorded."""

    def __init__(self, app: ASGIApp, *, reason: str) -> None:
        self.app = app
        self.reason = reason

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope.get("path", ""), scope.get("method")
            status = None
            for m, p, code in _SINGLE_PROCESS:
                if method == m and path == p:
                    status = code
            console = path == "/console" or path.startswith("/console/")
            if status is None and console and path not in _CONSOLE_OPEN:
                status = 503
            if status is not None:
                await JSONResponse({"detail": self.reason}, status_code=status)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)
