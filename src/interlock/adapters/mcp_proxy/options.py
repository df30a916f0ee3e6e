"""The MCP proxy's options, limits and upstream description."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import mcp.types as types
from pydantic import BaseModel, TypeAdapter

from interlock.adapters.mcp_proxy.upstream import DEFAULT_MAX_ANSWER_BYTES
from interlock.errors import Error, UsageError
from interlock.runtime.supervisor import DEFAULT_INTERVAL_S

if TYPE_CHECKING:
    pass


SESSION_ACTION = "mcp.session"


TOOL_ACTION = "mcp.tools/call"


RESOURCE_ACTION = "mcp.resources/read"


PROMPT_ACTION = "mcp.prompts/get"


DEFAULT_TIMEOUT_S = 30.0


#: how long the upstream may take to start and answer ``initialize`` (``npx`` may download)
DEFAULT_STARTUP_TIMEOUT_S = 60.0


#: JSON-RPC error code of a denied ``resources/read`` or ``prompts/get`` (implementation-defined
#: server error range, JSON-RPC 2.0 §5.1; the SDK uses -32000, -32001 and -32020..-32042)
DENIED_ERROR_CODE = -32003


#: the environment variable that carries the agent's capability: never passed to the upstream
#: every ``INTERLOCK_*`` variable (capability, home, principal, execution id, ...) is removed
#: from the spawned upstream's environment
INTERLOCK_ENV_PREFIX = "INTERLOCK_"


#: the longest line (one JSON-RPC message, newline included) the stdio client may send: a
#: longer one ends the session (:class:`ClientLineTooLong`) instead of growing memory unbounded
MAX_LINE_BYTES = 4 * 1024 * 1024


# a server name becomes part of resource ids (``<server>/<tool>``) and of capability rights
# (fullmatch: ``$`` would also match before a trailing newline)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


_URL_RE = re.compile(r"https?://[^\s]+")


# what ``gate.reverify`` needs besides the request: its id and time are never recorded
_PROBE_ID = "00000000-0000-7000-8000-000000000000"


_PROBE_TIME = "1970-01-01T00:00:00.000000Z"


_UPSTREAM_GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)


_CallResult = types.CallToolResult | types.InputRequiredResult


_ReadResult = types.ReadResourceResult | types.InputRequiredResult


_PromptResult = types.GetPromptResult | types.InputRequiredResult


_CALL: TypeAdapter[_CallResult] = TypeAdapter(_CallResult)


_READ: TypeAdapter[_ReadResult] = TypeAdapter(_ReadResult)


_PROMPT: TypeAdapter[_PromptResult] = TypeAdapter(_PromptResult)


R = TypeVar("R", bound=BaseModel)


class UpstreamError(Error):
    """The upstream MCP server could not be started, reached or initialized."""


class ClientLineTooLong(Error):
    """The stdio client sent a line longer than :data:`MAX_LINE_BYTES`: the session was ended
    (``exec.end`` with ``outcome: "error"``, ``error_type: "ClientLineTooLong"``)."""


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """The upstream MCP server: a ``command`` to spawn and speak to over stdio, or the ``url``
    of a streamable-HTTP server.

    ``env`` is the spawned server's environment (default: the proxy's own) without any
    ``INTERLOCK_*`` variable — the upstream never sees the agent's token, the home, the
    principal or the execution id; ``errlog`` receives its stderr (default: the proxy's stderr).
    It runs as the proxy's OS user: it could still read the files that user can read, the
    home's key files included (see SECURITY.md).

    Raises:
        UsageError: neither or both of ``command`` and ``url``, or a ``url`` that is not http(s).
    """

    command: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    errlog: TextIO | None = None

    def __post_init__(self) -> None:
        if bool(self.command) == (self.url is not None):
            raise UsageError("give the upstream as a command or as a URL (exactly one)")
        if self.url is not None and not _URL_RE.fullmatch(self.url):
            raise UsageError(f"not an http(s) URL: {self.url!r}")

    def describe(self) -> dict[str, Any]:
        """The session request's ``args``: how the upstream is reached."""
        if self.url is not None:
            return {"transport": "streamable-http", "url": self.url}
        return {"transport": "stdio", "command": list(self.command)}

    def child_env(self) -> dict[str, str]:
        """The spawned upstream's environment: ``env`` (or the proxy's), without any
        ``INTERLOCK_*`` variable."""
        source = os.environ if self.env is None else self.env
        return {k: v for k, v in source.items() if not k.startswith(INTERLOCK_ENV_PREFIX)}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyOptions:
    """Who the proxy acts for and how.

    ``principal`` and ``capability`` are presented on every request; ``name`` pins the server
    name (else the upstream's ``serverInfo.name``); ``parent`` is the session's parent execution
    (e.g. the ``interlock exec`` that runs the agent); ``timeout`` bounds every upstream request
    and ``startup_timeout`` the upstream's start and ``initialize`` (seconds); ``interval`` is
    the re-verification interval of the session and of each request; ``hide_denied`` filters
    ``tools/list``; ``listen`` (``host:port``) is recorded in the session request when serving
    HTTP. ``max_answer_bytes`` caps one message from a stdio upstream (default 4 MiB): a
    larger answer ends its request with the JSON-RPC error ``ANSWER_TOO_LARGE_CODE`` (-32004)
    and the session goes on (:mod:`interlock.adapters.mcp_proxy.upstream`).

    Raises:
        UsageError: a non-positive timeout or ``interval``, a ``max_answer_bytes`` below 1 KiB,
            or a ``name`` that is not ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters).
    """

    principal: str
    capability: str
    name: str | None = None
    parent: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S
    interval: float = DEFAULT_INTERVAL_S
    hide_denied: bool = False
    listen: str | None = None
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.startup_timeout > 0):
            raise UsageError("the upstream timeouts must be positive")
        if isinstance(self.max_answer_bytes, bool) or not self.max_answer_bytes >= 1024:
            raise UsageError("the largest upstream answer must be at least 1 KiB")
        if not self.interval > 0:
            raise UsageError("the verification interval must be positive")
        if self.name is not None:
            check_server_name(self.name)


def check_server_name(name: str) -> str:
    """Return ``name`` if it can name an MCP server in resource ids and rights.

    Raises:
        UsageError: it is not ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 128 characters).
    """
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name[:80]!r} cannot name an MCP server (letters, digits, '_', '.', '-';"
            " at most 128): give --name"
        )
    return name
