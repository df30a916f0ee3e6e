"""Who may use a proxy that listens (``interlock mcp-proxy --listen``): the holder of a bearer
token generated when the proxy starts.

    >>> token = ListenToken.generate()
    >>> token
    ListenToken(<redacted>)
    >>> token.is_presented(b"Bearer " + token.reveal().encode())
    True
    >>> token.is_presented(b"Bearer not-it"), token.is_presented(None)
    (False, False)

Whoever reaches the listening port acts with the agent's capability, so reaching it is not
enough: every HTTP request must carry ``Authorization: Bearer <token>``
(:func:`require_bearer`), or it is answered 401 before the MCP server sees it — nothing is
decided, recorded or forwarded. The token is 256 random bits (``secrets``), new at every start,
written only to a file created with mode 0600 (:meth:`ListenToken.write`), compared in constant
time (SHA-256 of both sides, ``hmac.compare_digest``), and never logged or recorded: its
``repr`` is redacted and the session's ledger records hold only the listen address.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: the realm named in ``WWW-Authenticate`` (RFC 6750 §3)
REALM = "interlock-mcp-proxy"

_UNAUTHORIZED = (
    b'{"error":"unauthorized","error_description":"this MCP proxy needs'
    b' Authorization: Bearer <the token written when it started>"}'
)


class ListenToken:
    """The bearer token of one listening proxy. Its value leaves only through
    :meth:`reveal` and :meth:`write`; ``repr`` and ``str`` are redacted."""

    __slots__ = ("_digest", "_value")

    def __init__(self, value: str) -> None:
        if len(value) < 32 or not value.isascii() or not value.isprintable() or " " in value:
            raise ValueError("a listen token is at least 32 printable ASCII characters")
        self._value = value
        self._digest = hashlib.sha256(value.encode("ascii")).digest()

    @classmethod
    def generate(cls) -> ListenToken:
        """A new token: 32 random bytes, base64url (43 characters)."""
        return cls(secrets.token_urlsafe(32))

    def __repr__(self) -> str:
        return "ListenToken(<redacted>)"

    __str__ = __repr__

    def reveal(self) -> str:
        """The token itself (for a client or a test): never log it."""
        return self._value

    def is_presented(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header value carries this token as a bearer
        credential (the scheme is case-insensitive, RFC 7235 §2.1). Constant time in the
        token. Never raises."""
        if authorization is None:
            return False
        scheme, _, credential = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = hashlib.sha256(credential.strip()).digest()
        return hmac.compare_digest(given, self._digest)

    def write(self, path: Path) -> None:
        """Write the token (and a newline) to ``path``, created with mode 0600 from its first
        byte: a file that exists is replaced (through a new file renamed over it, so no
        reader ever sees a partial or more open file); a missing parent is created 0700.

        Raises:
            OSError: the file cannot be written.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(self._value + "\n")
            os.replace(fresh, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fresh.unlink()
            raise

    def remove(self, path: Path) -> None:
        """Remove ``path`` if it still holds this token (another proxy may have replaced it).
        Never raises."""
        with contextlib.suppress(OSError, ValueError):
            if path.read_text(encoding="ascii").strip() == self._value:
                path.unlink()


def require_bearer(app: ASGIApp, token: ListenToken) -> ASGIApp:
    """``app`` behind a bearer-token check: an HTTP request without ``Authorization: Bearer
    <token>`` gets 401 (``WWW-Authenticate: Bearer realm="interlock-mcp-proxy"``, RFC 6750)
    and never reaches ``app``. Lifespan events pass through; any other scope (WebSocket) is
    refused."""

    async def guarded(scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            await app(scope, receive, send)
            return
        if scope["type"] == "http":
            headers = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
            # exactly one Authorization header: two are ambiguous, whichever one is right
            if len(headers) == 1 and token.is_presented(headers[0]):
                await app(scope, receive, send)
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", f'Bearer realm="{REALM}"'.encode()),
                        (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        # not HTTP (a WebSocket): close it without accepting
        await send({"type": "websocket.close", "code": 1008})

    return guarded
