"""Request body limits: untrusted bodies are never read past a fixed size.

    app.add_middleware(BodyLimit, default=65536, paths={"/v1/x": None})

Two mechanisms, one rule (nothing unbounded is buffered):

* :class:`BodyLimit`, a small ASGI middleware, caps every request body by path: a declared
  ``Content-Length`` over the cap is answered 413 before anything is read, and a streamed body
  that grows past it stops being read (413). It refuses by default: a path not listed gets the
  default cap.
* The two endpoints that take an action request (``POST /v1/decisions``, ``POST /v1/executions``)
  are exempt from the middleware and read their body with :func:`read_capped`, because an
  oversized request must still be *recorded* as a deny: they read one byte more than the gate's
  64 KiB intake limit, hand that prefix to the gate (which records ``MALFORMED_REQUEST``,
  "request exceeds 64 KiB"), and answer 413.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "read_capped"]

#: an oversized action request is drained (and discarded) up to this many bytes, so the client
#: can read the 413; past it the connection is closed after the response
DRAIN_LIMIT = 1024 * 1024


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _too_large(limit: int) -> str:
    return f"request body exceeds {limit} bytes"


class BodyLimit:
    """Cap request bodies by path (exact match); ``None`` exempts a path (it reads its own body
    with :func:`read_capped`)."""

    def __init__(self, app: ASGIApp, *, default: int, paths: Mapping[str, int | None]) -> None:
        self.app = app
        self.default = default
        self.paths = dict(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.paths.get(scope.get("path", ""), self.default)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = JSONResponse({"detail": _too_large(limit)}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # raised inside the route: FastAPI re-raises HTTPExceptions from body
                    # reading, and the exception middleware answers 413
                    raise HTTPException(status_code=413, detail=_too_large(limit))
            return message

        await self.app(scope, limited, send)


async def read_capped(request: Request, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit + 1`` bytes of the body; return them and whether the body was
    larger than ``limit``. The rest of an oversized body is drained up to :data:`DRAIN_LIMIT`
    and discarded.

    Never raises for a large body (a client that disconnects raises Starlette's
    ``ClientDisconnect``).
    """
    buf = bytearray()
    total = 0
    async with contextlib.aclosing(request.stream()) as stream:
        async for chunk in stream:
            total += len(chunk)
            if len(buf) <= limit:
                buf += chunk[: limit + 1 - len(buf)]
            if total > DRAIN_LIMIT:
                break
    return bytes(buf), total > limit
